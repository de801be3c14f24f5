"""The photo as the user gave it, next to the 8-bit sRGB view the models see, and the write-back of an edit.

A decoded upload has two forms:

- :class:`SourcePhoto`: the photo's own pixels (8- or 16-bit; grey, grey + alpha, RGB or RGBA), upright (EXIF
  orientation applied once), with its embedded ICC profile. This is what the user gets back.
- the *model view* (:func:`model_view`): (H, W, 3) uint8 sRGB, converted from the photo's profile with LittleCMS
  (Pillow ``ImageCms``), 16-bit values rounded to 8 bits, transparency composited on a neutral background. Every
  network, the face detector and the paste-back work on this view.

After an edit, :func:`write_back` compares the edited model view with the unedited one. Pixels the edit did not touch
keep the photo's own values bit for bit; in the touched ones the *change* of the sRGB view is converted into the
photo's colour space (LittleCMS, relative colorimetric) and added to the photo's own values, so a 16-bit photo keeps
its fine steps, a wide-gamut colour is never clipped to sRGB, a grey photo stays grey and the alpha channel is kept.
:func:`encode_png` writes the result as a lossless PNG that carries the ICC profile and no other metadata.

Colour-management policy: RELIABILITY.md §2.4 (decode contract) and docs/reliability.md ("What comes back").
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageCms

from pipeline.boxes import mask_box

logger = logging.getLogger(__name__)

UINT8_MAX = 255
UINT16_MAX = 65535
EIGHT_TO_SIXTEEN = 257  # v·257 maps 0..255 exactly onto 0..65535 (PNG spec §12.5, "sample depth scaling")
# Transparent pixels are shown to the models on white, the background a light-theme browser draws behind a PNG (ours).
ALPHA_BACKGROUND_RGB = (255, 255, 255)
# ICC colour-space signatures (ICC.1:2022 table 19) a profile must have to describe our pixels.
ICC_RGB, ICC_GRAY = "RGB ", "GRAY"
# Relative colorimetric: matrix/TRC profiles (every camera and phone profile) have no perceptual table, and in-gamut
# colours then survive the photo → sRGB → photo round trip up to rounding (ICC.1:2022 §6.2.2; ours).
RENDERING_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC
# Largest difference (in 8-bit levels) between a photo's own value and its sRGB view converted back that write_back
# keeps in an edited pixel: rounding to 8 bits (0.5) plus LittleCMS's 8-bit transforms (about 1) (ours, measured on
# the colord-data profiles).
RESIDUAL_LIMIT = 2.0
GREY_SAMPLE_STEP = 16  # every 16th row and column: 1/256 of the pixels decides most colour photos at once (ours)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # PNG spec §5.2
PNG_HEAD_BYTES = 26  # signature, IHDR length and type, width, height, bit depth, colour type (PNG spec §11.2.2)
PNG_SIXTEEN_BITS = 16
PNG_COLOUR_TYPES_PILLOW_REDUCES = (2, 4, 6)  # RGB, grey + alpha, RGBA: Pillow opens them at 8 bits
# zlib level of the lossless outputs: ~4× faster than Pillow's default 6 for ~9 % larger files (measured for app.py's
# result PNGs; ours).
PNG_COMPRESS_LEVEL = 3


@dataclass(frozen=True, eq=False)
class SourcePhoto:
    """A photo in its own form: what the user uploaded, minus metadata, upright.

    Attributes:
        pixels: (H, W, C) uint8 or uint16, C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); straight (not
            premultiplied) alpha. Never modified in place.
        icc_profile: the embedded ICC profile (bytes, as stored in the file), or None (the values are sRGB).
        grey: the colour values are grey (C ≤ 2, or an RGB photo whose three channels are equal everywhere); an edit
            keeps them grey.
        notes: user-facing remarks about what could not be kept (e.g. an unreadable profile).
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    grey: bool = False
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3 or self.pixels.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"pixels must be (H, W, 1|2|3|4), got {self.pixels.shape}")
        if self.pixels.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"pixels must be uint8 or uint16, got {self.pixels.dtype}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def bit_depth(self) -> int:
        """8 or 16 bits per channel."""
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def colour_channels(self) -> int:
        """1 (grey) or 3 (RGB)."""
        return 1 if self.pixels.shape[2] <= 2 else 3

    @property
    def has_alpha(self) -> bool:
        """Whether the last channel is alpha."""
        return self.pixels.shape[2] in (2, 4)

    def describe(self) -> dict[str, object]:
        """JSON-ready description (no pixels): size, depth, channels, profile name."""
        layout = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}[self.pixels.shape[2]]
        return {
            "size": list(self.size),
            "bit_depth": self.bit_depth,
            "channels": layout,
            "grey": self.grey,
            "icc_profile": profile_description(self.icc_profile),
        }


def source_photo_from_pil(image: Image.Image, pixels16: np.ndarray | None = None) -> SourcePhoto:
    """The photo's own form of a loaded, upright PIL image.

    Args:
        image: a loaded single-frame PIL image (any mode Pillow decodes from the allowed formats).
        pixels16: (H, W, 3|4) uint16 RGB(A) pixels of the same image, when the file holds 16-bit colour that Pillow
            reduces to 8 bits (16-bit RGB/RGBA and grey + alpha PNGs; decoded with OpenCV by the caller).

    Returns:
        SourcePhoto with the image's ICC profile (``image.info["icc_profile"]``).

    Raises:
        ValueError: for pixel formats with no faithful photo meaning (floating point "F"); the decoder words it.
    """
    profile = image.info.get("icc_profile") or None
    mode = image.mode
    if pixels16 is not None:
        if mode in ("LA", "La", "PA"):  # OpenCV expands grey + alpha to four channels: keep grey and alpha
            pixels = np.ascontiguousarray(pixels16[:, :, [0, 3]])
        else:
            pixels = np.ascontiguousarray(pixels16)
    elif mode.startswith("I;16") or mode == "I":
        pixels = np.clip(np.asarray(image).astype(np.int64), 0, UINT16_MAX).astype(np.uint16)[:, :, None]
    elif mode == "F":
        raise ValueError("floating-point pixels")
    elif mode in ("L", "1") and "transparency" in image.info:  # grey with a tRNS colour: grey + alpha
        pixels = np.array(image.convert("LA"), dtype=np.uint8)
    elif mode == "RGB" and "transparency" in image.info:
        pixels = np.array(image.convert("RGBA"), dtype=np.uint8)
    elif mode in ("L", "LA", "RGB", "RGBA"):
        pixels = np.array(image, dtype=np.uint8)
    elif mode in ("1",):
        pixels = np.array(image.convert("L"), dtype=np.uint8)
    elif mode == "La":
        pixels = np.array(image.convert("LA"), dtype=np.uint8)
    elif mode == "CMYK":  # PNG cannot hold CMYK: the photo is returned as sRGB (README, "What comes back")
        return _cmyk_as_srgb(image, profile)
    elif "transparency" in image.info or mode in ("PA", "RGBa"):
        pixels = np.array(image.convert("RGBA"), dtype=np.uint8)
    else:  # P, YCbCr, LAB, HSV, RGBX: their RGB values
        pixels = np.array(image.convert("RGB"), dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return checked_photo(np.ascontiguousarray(pixels), profile)


def checked_photo(pixels: np.ndarray, icc_profile: bytes | None) -> SourcePhoto:
    """A SourcePhoto whose profile is usable: an unreadable or mismatched profile is dropped with a note.

    Args:
        pixels: (H, W, C) uint8/uint16 as in :class:`SourcePhoto`.
        icc_profile: embedded profile bytes or None.
    """
    notes: tuple[str, ...] = ()
    if icc_profile is not None:
        expected = ICC_GRAY if pixels.shape[2] <= 2 else ICC_RGB
        found = _profile_space(icc_profile)
        if found != expected:
            logger.info("ignoring an ICC profile of colour space %r for %d-channel pixels", found, pixels.shape[2])
            notes = ("The photo's colour profile could not be used; its colours were read as sRGB.",)
            icc_profile = None
    grey = pixels.shape[2] <= 2 or _channels_equal(pixels)
    return SourcePhoto(pixels, icc_profile, grey, notes)


def _channels_equal(pixels: np.ndarray) -> bool:
    """Whether R = G = B everywhere; a sparse sample answers "no" for colour photos without reading every pixel."""
    for view in (pixels[::GREY_SAMPLE_STEP, ::GREY_SAMPLE_STEP], pixels):
        red, green, blue = view[:, :, 0], view[:, :, 1], view[:, :, 2]
        if not (np.array_equal(red, green) and np.array_equal(green, blue)):
            return False
    return True


def _cmyk_as_srgb(image: Image.Image, profile: bytes | None) -> SourcePhoto:
    rgb = None
    if profile is not None and _profile_space(profile) == "CMYK":
        rgb = ImageCms.profileToProfile(image, _profile(profile), _srgb(), renderingIntent=RENDERING_INTENT)
    if rgb is None:
        rgb = image.convert("RGB")
    note = "This CMYK photo was converted to RGB (sRGB); the result is an RGB PNG."
    return SourcePhoto(np.array(rgb, dtype=np.uint8), None, False, (note,))


def photo_from_array(array: np.ndarray) -> SourcePhoto:
    """The photo form of an in-memory array (no profile: its values are sRGB).

    Args:
        array: (H, W) or (H, W, 1|2|3|4) uint8/uint16/bool, RGB(A) channel order.
    """
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * UINT8_MAX
    elif array.dtype.kind == "u" and array.dtype.itemsize == 2:
        array = array.astype(np.uint16)
    if array.ndim == 2:
        array = array[:, :, None]
    return checked_photo(np.array(array, order="C", copy=True), None)


# -- profiles ---------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=8)
def _profile(data: bytes) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(data))


def _profile_space(data: bytes) -> str | None:
    """The profile's colour-space signature ("RGB ", "GRAY", "CMYK", ...), or None when LittleCMS cannot read it."""
    try:
        return _profile(data).profile.xcolor_space
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError) as err:
        logger.info("unreadable ICC profile: %s", type(err).__name__)
        return None


def profile_description(data: bytes | None) -> str | None:
    """The profile's description ("Adobe RGB (1998)", ...), "sRGB (assumed)" without one, None if unreadable."""
    if data is None:
        return "sRGB (assumed)"
    try:
        return ImageCms.getProfileDescription(_profile(data)).strip() or "embedded profile"
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None


@lru_cache(maxsize=8)
def _transform(data: bytes, to_photo: bool, grey: bool) -> ImageCms.ImageCmsTransform:
    """Cached LittleCMS transform sRGB ↔ the photo's profile (8-bit RGB on the sRGB side, "L" for grey profiles)."""
    photo_mode = "L" if grey else "RGB"
    if to_photo:
        return ImageCms.buildTransform(_srgb(), _profile(data), "RGB", photo_mode, RENDERING_INTENT)
    return ImageCms.buildTransform(_profile(data), _srgb(), photo_mode, "RGB", RENDERING_INTENT)


# -- the model view --------------------------------------------------------------------------------------------------


def to_8bit(values: np.ndarray) -> np.ndarray:
    """uint16 → uint8 by rounding v·255/65535 (the exact inverse of v·257); uint8 passes through."""
    if values.dtype == np.uint8:
        return values
    wide = values.astype(np.uint32)
    return ((wide * UINT8_MAX + UINT16_MAX // 2) // UINT16_MAX).astype(np.uint8)


def model_view(photo: SourcePhoto) -> np.ndarray:
    """The (H, W, 3) uint8 sRGB image the models see.

    Colour values are rounded to 8 bits, converted from the photo's ICC profile to sRGB with LittleCMS (no profile:
    taken as sRGB), grey is repeated into R = G = B, and transparency is composited on ``ALPHA_BACKGROUND_RGB``.
    An 8-bit RGB photo without a profile is returned as its own pixel array (not copied).

    Args:
        photo: the source photo.

    Returns:
        np.ndarray (H, W, 3) uint8 sRGB.
    """
    colour = to_8bit(photo.pixels[:, :, : photo.colour_channels])
    rgb = _colour_to_srgb(colour, photo.icc_profile)
    if not photo.has_alpha:
        return rgb
    return composite_on_background(rgb, to_8bit(photo.pixels[:, :, -1]))


def _colour_to_srgb(colour: np.ndarray, profile: bytes | None) -> np.ndarray:
    grey = colour.shape[2] == 1
    if profile is None:
        return np.repeat(colour, 3, axis=2) if grey else colour
    image = Image.fromarray(colour[:, :, 0] if grey else colour, "L" if grey else "RGB")
    return np.asarray(ImageCms.applyTransform(image, _transform(profile, False, grey)), dtype=np.uint8)


def composite_on_background(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-composite (H, W, 3) uint8 over ``ALPHA_BACKGROUND_RGB`` with (H, W) uint8 alpha; exact at 0 and 255."""
    colour = rgb.astype(np.uint32)
    weight = alpha[:, :, None].astype(np.uint32)
    background = np.asarray(ALPHA_BACKGROUND_RGB, dtype=np.uint32)
    mixed = (colour * weight + background * (UINT8_MAX - weight) + UINT8_MAX // 2) // UINT8_MAX
    return mixed.astype(np.uint8)


# -- the write-back --------------------------------------------------------------------------------------------------


def changed_region(before: np.ndarray, after: np.ndarray, within: tuple[slice, slice] | None = None) -> np.ndarray:
    """(H, W) bool: pixels where two (H, W, 3) model views differ (the region an edit touched).

    ``within``: (rows, columns) known to hold every difference; only they are compared (a large photo's edit is a
    small part of it), the rest is False.
    """
    if before.shape != after.shape:
        raise ValueError(f"the edited view has shape {after.shape}, the photo's view {before.shape}")
    region = np.zeros(before.shape[:2], dtype=bool)
    if after is before:
        return region
    box = (slice(None), slice(None)) if within is None else within
    part, edited = before[box], after[box]
    found = part[:, :, 0] != edited[:, :, 0]  # channel by channel: ~3× faster than any(axis=2)
    for channel in range(1, before.shape[2]):
        found |= part[:, :, channel] != edited[:, :, channel]
    region[box] = found
    return region


def write_back(
    photo: SourcePhoto, before: np.ndarray, after: np.ndarray, within: tuple[slice, slice] | None = None
) -> SourcePhoto:
    """Put an edit of the model view into the photo's own colour space, depth and channels.

    Outside the pixels where ``after`` differs from ``before`` the result equals ``photo.pixels`` bit for bit (and
    when nothing differs, ``photo`` itself is returned). In the touched pixels the edited sRGB colour is converted into
    the photo's colour space with LittleCMS and the photo's own residual is added back:

        ``out = f(after) + clip(photo − f(before), ±RESIDUAL_LIMIT)``,  f = sRGB → photo colour space (8-bit units)

    The residual is what the 8-bit sRGB view rounded away (a 16-bit photo's fine steps, LittleCMS's 8-bit rounding), so
    a barely touched pixel at the edge of the neck keeps its value to within the edit's change; larger residuals come
    from colours outside sRGB, which the edited neck replaces. Grey photos get the luma of the edit (ITU-R BT.601,
    Pillow's "L") and stay grey. With alpha, the models saw the photo composited on ``ALPHA_BACKGROUND_RGB``; both
    views are un-composited by the pixel's opacity first, fully transparent pixels and the alpha channel are kept.

    Args:
        photo: the source photo.
        before: (H, W, 3) uint8 sRGB, ``model_view(photo)`` (in the photo's orientation).
        after: (H, W, 3) uint8 sRGB, the edited view.
        within: (rows, columns) known to hold every pixel where ``after`` differs from ``before`` (e.g. the union of
            :meth:`pipeline.faces.align.AlignedFace.paste_box`); None compares the whole view.

    Returns:
        SourcePhoto with the same size, dtype, channels, profile and notes.

    Raises:
        ValueError: ``before`` and ``after`` differ in shape or do not match the photo's size.
    """
    region = changed_region(before, after, within)
    if region.shape != photo.pixels.shape[:2]:
        raise ValueError(f"the edited view is {region.shape[::-1]}, the photo {photo.size}")
    if photo.has_alpha:  # a pixel the models saw as fully transparent (8-bit opacity 0) shows nothing of an edit
        region &= to_8bit(photo.pixels[:, :, -1]) > 0  # (a 16-bit alpha below 129 is 0 there: it stays as it was)
    box = mask_box(region)  # the edit's bounding box
    if box is None:
        return photo
    region = region[box]
    pixels = photo.pixels.copy()
    if _is_srgb_rgb8(photo):  # f is the identity and the residual 0: the photo takes the edited view's values
        np.copyto(pixels[box], after[box], where=region[:, :, None])
        return SourcePhoto(pixels, photo.icc_profile, photo.grey, photo.notes)
    touched = pixels[box][region]  # (N, channels)
    channels = photo.colour_channels
    edited, original = after[box][region], before[box][region]
    if photo.has_alpha:
        opacity = to_8bit(touched[:, -1])
        edited, original = uncomposite(edited, opacity), uncomposite(original, opacity)
    scale = EIGHT_TO_SIXTEEN if photo.bit_depth == 16 else 1
    top = UINT16_MAX if photo.bit_depth == 16 else UINT8_MAX
    own = touched[:, :channels].astype(np.float64) / scale  # the photo's values in 8-bit units
    residual = np.clip(own - _native_colour(original, photo), -RESIDUAL_LIMIT, RESIDUAL_LIMIT)
    updated = (_native_colour(edited, photo) + residual) * scale
    if photo.grey and channels == 3:  # an RGB photo with equal channels: keep them equal
        updated = np.repeat(updated.mean(axis=1, keepdims=True), 3, axis=1)
    touched[:, :channels] = np.clip(np.rint(updated), 0, top).astype(pixels.dtype)
    pixels[box][region] = touched
    return SourcePhoto(pixels, photo.icc_profile, photo.grey, photo.notes)


def _is_srgb_rgb8(photo: SourcePhoto) -> bool:
    """Whether the photo is its own model view: 8-bit RGB, no alpha, no ICC profile (taken as sRGB), not grey."""
    return photo.bit_depth == 8 and photo.pixels.shape[2] == 3 and photo.icc_profile is None and not photo.grey


def uncomposite(composited: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """Straight colour x from ``c = x·a + background·(1 − a)``: (N, 3) uint8 composite, (N,) uint8 opacity > 0.

    Returns:
        (N, 3) uint8, rounded and clipped to 0…255.
    """
    weight = opacity.astype(np.float64)[:, None] / UINT8_MAX
    background = np.asarray(ALPHA_BACKGROUND_RGB, dtype=np.float64)
    straight = (composited.astype(np.float64) - background * (1.0 - weight)) / weight
    return np.clip(np.rint(straight), 0, UINT8_MAX).astype(np.uint8)


def _native_colour(srgb: np.ndarray, photo: SourcePhoto) -> np.ndarray:
    """(N, 3) uint8 sRGB → (N, C) float64 in the photo's colour space, 8-bit units (C = its colour channels)."""
    strip = Image.fromarray(np.ascontiguousarray(srgb[None]), "RGB")  # a 1×N image for Pillow / LittleCMS
    if photo.grey:
        strip = strip.convert("L")  # BT.601 luma, the inverse of the decoder's grey → R = G = B
        if photo.colour_channels == 3:
            strip = strip.convert("RGB")
    profile = photo.icc_profile
    if profile is not None:
        grey_profile = photo.colour_channels == 1
        strip = ImageCms.applyTransform(strip.convert("RGB"), _transform(profile, True, grey_profile))
    values = np.asarray(strip, dtype=np.float64)[0]
    return values[:, None] if values.ndim == 1 else values


# -- output -----------------------------------------------------------------------------------------------------------


def encode_png(photo: SourcePhoto) -> bytes:
    """The photo as a lossless PNG with its ICC profile and no other metadata (no EXIF, XMP or text chunks).

    8-bit photos and 16-bit grey are written by Pillow; 16-bit RGB(A) by OpenCV (Pillow has no 16-bit colour
    mode), with the profile in an ``iCCP`` chunk. 16-bit grey + alpha, which neither library writes, becomes 16-bit
    RGBA with equal colour channels (same values, same look).

    Args:
        photo: the photo to write.

    Returns:
        The PNG file's bytes.

    Raises:
        OSError: the encoder failed.
    """
    pixels = photo.pixels
    if photo.bit_depth == 16 and pixels.shape[2] > 1:
        if pixels.shape[2] == 2:
            pixels = np.concatenate([np.repeat(pixels[:, :, :1], 3, axis=2), pixels[:, :, 1:]], axis=2)
        order = [2, 1, 0, 3][: pixels.shape[2]]  # OpenCV stores BGR(A)
        bgr = np.ascontiguousarray(pixels[:, :, order])
        params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL]
        if photo.icc_profile is None:
            ok, buffer = cv2.imencode(".png", bgr, params)
        else:
            icc = np.frombuffer(photo.icc_profile, dtype=np.uint8)
            ok, buffer = cv2.imencodeWithMetadata(".png", bgr, [cv2.IMAGE_METADATA_ICCP], [icc], params)
        if not ok:
            raise OSError("the PNG encoder failed")
        return buffer.tobytes()
    if photo.bit_depth == 16:
        image = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0], dtype="<u2"))  # mode "I;16"
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
        image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode)
    buffer = io.BytesIO()
    extra = {"icc_profile": photo.icc_profile} if photo.icc_profile is not None else {}
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL, **extra)
    return buffer.getvalue()


def read_png(data: bytes) -> SourcePhoto:
    """Read a PNG written by :func:`encode_png` back into a SourcePhoto (tests and round trips).

    Args:
        data: PNG bytes.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return source_photo_from_pil(image, decode_16bit_colour_png(data))


def decode_16bit_colour_png(data: bytes) -> np.ndarray | None:
    """(H, W, 3|4) uint16 RGB(A) when ``data`` is a 16-bit colour or grey + alpha PNG, else None.

    Args:
        data: the file's bytes (the caller has already checked its size from the header).

    Raises:
        OSError: the pixel data is damaged.
    """
    if not is_16bit_colour_png(data[:PNG_HEAD_BYTES]):
        return None
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3:
        raise OSError("the 16-bit PNG could not be decoded")
    order = [2, 1, 0, 3][: decoded.shape[2]]  # OpenCV gives BGR(A)
    return np.ascontiguousarray(decoded[:, :, order])


def is_16bit_colour_png(head: bytes) -> bool:
    """Whether a file's first 26 bytes are a PNG signature and an IHDR of a 16-bit RGB, RGBA or grey + alpha image.

    IHDR layout: PNG spec §11.2.2 (bit depth at byte 24, colour type at byte 25 of the file; types 2, 6 and 4).
    """
    return (
        len(head) >= PNG_HEAD_BYTES
        and head[:8] == PNG_SIGNATURE
        and head[12:16] == b"IHDR"
        and head[24] == PNG_SIXTEEN_BITS
        and head[25] in PNG_COLOUR_TYPES_PILLOW_REDUCES
    )


# -- orientation -----------------------------------------------------------------------------------------------------

# EXIF orientation → the numpy form of Pillow's transpose (ImageOps.exif_transpose), for pixels Pillow cannot hold.
_ORIENTATION_OPS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # the entries above that swap width and height (EXIF 2.32, tag 0x0112)


def oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) of a ``size`` (width, height) image after EXIF orientation ``orientation`` (1–8)."""
    return (size[1], size[0]) if orientation in TRANSPOSING_ORIENTATIONS else (size[0], size[1])


def orient_array(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation ``orientation`` (1–8) to an (H, W, …) array, as ``ImageOps.exif_transpose`` does."""
    op = _ORIENTATION_OPS.get(orientation)
    return pixels if op is None else np.ascontiguousarray(op(pixels))
