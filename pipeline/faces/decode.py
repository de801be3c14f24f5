"""Safe decoding of an uploaded photo into an RGB uint8 array: the single decode path of the app.

Every upload (file path, raw bytes, an already opened PIL image or a numpy array from the UI) goes through
:func:`decode_upload`, which

1. opens the file with Pillow restricted to an allow-list of formats (Pillow security handbook S-1/E-2; RELIABILITY.md
   §2.3), so rare parsers (TIFF, PSD, FITS, PDF, EPS with its Ghostscript call, ...) never run;
2. checks width, height, pixel count and aspect ratio from the header *before* decoding (decompression bombs and pixel
   floods are rejected without allocating the image; Pillow's own ``DecompressionBombWarning`` is turned into an error
   for the duration of the call only);
3. decodes only the first frame of animated files;
4. applies the EXIF orientation exactly once (``ImageOps.exif_transpose``, guarded: broken EXIF keeps the stored
   orientation and adds a note);
5. keeps the photo in its own form (:class:`pipeline.faces.photo.SourcePhoto`: 8/16-bit, grey/RGB, alpha, ICC
   profile; 16-bit colour PNGs, which Pillow reduces to 8 bits, are read with OpenCV) and derives the 8-bit sRGB view
   the models see (:func:`pipeline.faces.photo.model_view`: profile → sRGB with LittleCMS, 16-bit rounded, alpha
   composited on white, grey repeated into RGB).

The decoded photo keeps its full resolution: the edited face is pasted back into the model view at full size and
written back into the photo's own form (:func:`pipeline.faces.photo.write_back`), so any downscaling for speed (face
detection) happens later on a copy.

Policy and hazards: RELIABILITY.md §2.3 (hazard table) and §2.4 (decode contract); Pillow security handbook
(``docs/handbook/security.rst``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features
from pillow_heif import register_heif_opener

from pipeline.errors import InputImageError
from pipeline.faces.photo import (
    PNG_HEAD_BYTES,
    SourcePhoto,
    decode_16bit_colour_png,
    is_16bit_colour_png,
    model_view,
    orient_array,
    photo_from_array,
    source_photo_from_pil,
)

logger = logging.getLogger(__name__)

ImageSource = bytes | bytearray | memoryview | str | Path | Image.Image | np.ndarray

# Formats whose decoders we accept. MPO is the JPEG variant written by multi-lens phones and stereo cameras (Pillow
# opens such JPEGs as "MPO"); GIF is accepted because browsers and Gradio offer it, and only its first frame is read.
BASE_ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF")
# Multi-frame formats whose extra frames are not an animation: an MPO's second image is the other lens or a preview.
STILL_MULTI_FRAME_FORMATS = ("MPO",)

Image.init()  # registers every plugin's opener (MPO, WEBP, AVIF are not preloaded); only allowed ones are ever tried
register_heif_opener()  # pillow-heif: HEIC/HEIF (iPhone photos), opened lazily like every Pillow plugin


def _optional_formats() -> tuple[str, ...]:
    """AVIF (in Pillow wheels since 11.3) and HEIF (only if pillow-heif registered its opener), when available."""
    found = []
    if features.check("avif") and "AVIF" in Image.OPEN:
        found.append("AVIF")
    if "HEIF" in Image.OPEN:
        found.append("HEIF")
    return tuple(found)


DEFAULT_ALLOWED_FORMATS = BASE_ALLOWED_FORMATS + _optional_formats()

UINT8_MAX = 255
EXIF_ORIENTATION_TAG = 0x0112  # EXIF 2.32 "Orientation"; values 2..8 need a transpose
FIRST_TRANSPOSING_ORIENTATION, LAST_TRANSPOSING_ORIENTATION = 2, 8
MEGAPIXEL = 1_000_000

# Leading bytes of formats people upload by mistake; used only to word the error message, never to decode.
_KNOWN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "PostScript/EPS"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"BM", "BMP"),
    (b"PK\x03\x04", "ZIP"),
)
_HEIC_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1")


@dataclass(frozen=True)
class DecodeLimits:
    """What an upload may look like before we spend memory or time on it.

    All checks use the size stored in the file header, so they run before the pixels are decoded.
    """

    # Pillow plugin names we let parse the file (RELIABILITY.md §2.3 "Dangerous/rare formats"; §2.4 ALLOWED).
    allowed_formats: tuple[str, ...] = DEFAULT_ALLOWED_FORMATS
    # Pixel budget: RELIABILITY.md §0 item 7 / §1.3 (``MAX_IMAGE_PIXELS = 40_000_000``); a 40 MP RGB photo is 120 MB.
    max_pixels: int = 40 * MEGAPIXEL
    # Shortest side: dlib's HOG detector scans an 80×80 px window (davisking/dlib#401; RELIABILITY.md §2.3 "Tiny
    # image"), so a smaller image cannot hold a face we can detect without upsampling it into mush.
    min_side: int = 80
    # Longest/shortest side: RELIABILITY.md §2.3 "Extreme aspect ratio" (reject if > 4:1 after EXIF orientation).
    max_aspect_ratio: float = 4.0


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class DecodedImage:
    """A decoded upload and what was done to it on the way: the model view and the photo in its own form."""

    image: np.ndarray  # (H, W, 3) uint8 sRGB model view, full resolution, upright (never modified in place)
    source_format: str | None  # Pillow format name ("JPEG", "PNG", ...) or None for arrays / in-memory images
    source_mode: str  # Pillow mode before conversion ("RGB", "I;16", "P", "CMYK", ...); arrays report "array"
    exif_orientation: int  # EXIF orientation that was applied (1 = none)
    is_animated: bool  # the file has more than one frame; only the first (or the given PIL frame) was used
    notes: tuple[str, ...]  # user-facing remarks about silent fixes (animation, unreadable EXIF, unusable profile)
    photo: SourcePhoto  # the photo's own pixels (depth, channels, alpha) and ICC profile, upright: what comes back


def decode_image(source: ImageSource, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an upload into an upright RGB uint8 array.

    Args:
        source: encoded file contents (bytes), a file path, a PIL image (its current frame is used), or a numpy array
            (H, W) / (H, W, 1|2|3|4) of dtype uint8, uint16 or bool (RGB(A) channel order).
        limits: size, shape and format limits.

    Returns:
        np.ndarray (H, W, 3) uint8 RGB at the photo's full resolution, EXIF orientation applied once.

    Raises:
        InputImageError: unreadable, damaged, unsupported, too small, too large or oddly shaped input.
    """
    return decode_upload(source, limits).image


def decode_upload(source: ImageSource | None, limits: DecodeLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Like :func:`decode_image`, but also report the source format, animation and orientation.

    Args:
        source: see :func:`decode_image`.
        limits: size, shape and format limits.

    Returns:
        DecodedImage with ``.image`` (H, W, 3) uint8 RGB.

    Raises:
        InputImageError: unreadable, damaged, unsupported, too small, too large or oddly shaped input.
    """
    if source is None:
        raise InputImageError("Please upload a photo.")
    if isinstance(source, np.ndarray):
        return _decode_array(source, limits)
    if isinstance(source, Image.Image):
        return _decode_pil(source, limits, owned=False)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise InputImageError(f"The uploaded file is empty. Please upload a photo ({_formats_phrase(limits)}).")
        with _open_allowed(io.BytesIO(data), data[:64], limits) as image:
            return _decode_pil(image, limits, owned=True, read_bytes=lambda: data, head=data[:64])
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            head = _read_head(path)
        except OSError as err:
            logger.info("could not read upload file: %s", type(err).__name__)
            raise InputImageError("The photo file could not be opened. Please upload it again.") from err
        if not head:
            raise InputImageError(f"The uploaded file is empty. Please upload a photo ({_formats_phrase(limits)}).")
        with _open_allowed(path, head, limits) as image:
            return _decode_pil(image, limits, owned=True, read_bytes=path.read_bytes, head=head)
    raise InputImageError(f"Please upload a photo ({_formats_phrase(limits)}).")


def _read_head(path: Path) -> bytes:
    """The first bytes of a file (to recognise wrong formats and empty files)."""
    with path.open("rb") as handle:
        return handle.read(64)


def _formats_phrase(limits: DecodeLimits) -> str:
    names = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "AVIF": "AVIF", "HEIF": "HEIC"}
    shown = [names[fmt] for fmt in limits.allowed_formats if fmt in names]
    return ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else "".join(shown)


def _unreadable_message(head: bytes, limits: DecodeLimits) -> str:
    """Explain an unidentified file, naming its real format when the leading bytes reveal it."""
    kind = next((name for magic, name in _KNOWN_SIGNATURES if head.startswith(magic)), None)
    if kind is None and head[4:8] == b"ftyp" and head[8:12] in _HEIC_BRANDS:
        if "HEIF" in limits.allowed_formats:  # a HEIC that pillow-heif cannot parse is damaged, not unsupported
            return _damaged_message()
        kind = "HEIC/HEIF"
    if kind is None and head.lstrip()[:5].lower() in (b"<svg ", b"<?xml"):
        kind = "SVG"
    supported = _formats_phrase(limits)
    if kind is not None:
        return f"This {kind} file is not supported. Please save the photo as {supported}."
    return f"This file could not be read as a photo. Please upload a {supported} image."


@contextlib.contextmanager
def _open_allowed(fp: io.BytesIO | Path, head: bytes, limits: DecodeLimits) -> Iterator[Image.Image]:
    """``Image.open`` with the allow-list and bomb warnings as errors; every failure becomes an InputImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            formats = [fmt for fmt in limits.allowed_formats if fmt in Image.OPEN]
            image = Image.open(fp, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputImageError(_too_large_message(None, limits)) from err
    except UnidentifiedImageError as err:
        raise InputImageError(_unreadable_message(head, limits)) from err
    except Exception as err:  # any parser failure on untrusted bytes is a bad upload, never a crash
        logger.info("image header could not be parsed: %s", type(err).__name__)
        raise InputImageError(_damaged_message()) from err
    try:
        yield image
    finally:
        image.close()


def _too_large_message(size: tuple[int, int] | None, limits: DecodeLimits) -> str:
    budget = f"{limits.max_pixels / MEGAPIXEL:g} megapixels"
    if size is None:
        return f"This image is too large (the limit is {budget}). Please upload a smaller version of the photo."
    width, height = size
    return (
        f"This image is too large ({width}×{height} pixels = {width * height / MEGAPIXEL:.1f} megapixels; the limit "
        f"is {budget}). Please upload a smaller version of the photo."
    )


def _damaged_message() -> str:
    return (
        "This photo file appears to be damaged or incomplete (for example, the upload was cut off). "
        "Please upload it again or export a fresh copy."
    )


def check_dimensions(width: int, height: int, limits: DecodeLimits = DEFAULT_LIMITS) -> None:
    """Reject sizes outside the limits (called with header sizes, before decoding).

    Args:
        width: image width in pixels.
        height: image height in pixels.
        limits: the limits to apply.

    Raises:
        InputImageError: too many pixels, aspect ratio above the limit, or a side shorter than ``min_side`` (checked
            in this order, so a 1×10000 strip is reported as oddly shaped rather than small).
    """
    if width * height > limits.max_pixels:
        raise InputImageError(_too_large_message((width, height), limits))
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        ratio = max(width, height) / max(min(width, height), 1)
        raise InputImageError(
            f"This image has an unusual shape ({width}×{height} pixels, {ratio:.1f}:1). Please crop it to a "
            f"portrait or landscape photo no more than {limits.max_aspect_ratio:g}:1 around the face."
        )
    if min(width, height) < limits.min_side:
        raise InputImageError(
            f"This image is too small ({width}×{height} pixels). Please upload a photo that is at least "
            f"{limits.min_side} pixels on each side; a larger photo of the face works best."
        )


def _is_animated(image: Image.Image) -> bool:
    """Whether the image has more frames; probing a broken later frame counts as animated (we never decode it)."""
    try:
        return bool(getattr(image, "is_animated", False))
    except Exception as err:  # later frames of untrusted files may be malformed or bombs; frame 0 is all we read
        logger.info("could not probe later frames: %s", type(err).__name__)
        return True


def _decode_pil(
    image: Image.Image,
    limits: DecodeLimits,
    *,
    owned: bool,
    read_bytes: Callable[[], bytes] | None = None,
    head: bytes = b"",
) -> DecodedImage:
    """Check, load (first frame), orient and convert a PIL image.

    ``owned`` is True for images we opened ourselves (we may seek to frame 0); a caller's image is left on its
    current frame and is copied before anything else touches its pixels. ``read_bytes`` gives the file's bytes when
    ``head`` shows a 16-bit colour PNG (decoded again by OpenCV at full depth, after the size checks).
    """
    if image.format is not None and image.format not in limits.allowed_formats:
        raise InputImageError(
            f"This {image.format} file is not supported. Please save the photo as {_formats_phrase(limits)}."
        )
    check_dimensions(image.width, image.height, limits)
    notes: list[str] = []
    animated = image.format not in STILL_MULTI_FRAME_FORMATS and _is_animated(image)
    if animated:
        notes.append(
            "This is an animated image; only its first frame was used." if owned else "Animated image: one frame used."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if owned:
                if animated:
                    image.seek(0)
                image.load()  # a truncated or corrupt stream fails here
                frame = image
                pixels16 = None
                if read_bytes is not None and is_16bit_colour_png(head[:PNG_HEAD_BYTES]):
                    pixels16 = decode_16bit_colour_png(read_bytes())
            else:
                pixels16 = None
                frame = image.copy()  # loads the caller's current frame without touching the caller's object
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as err:
        raise InputImageError(_too_large_message(image.size, limits)) from err
    except Exception as err:  # OSError "truncated", zlib errors, SyntaxError from broken chunks, ...
        logger.info("image data could not be decoded: %s", type(err).__name__)
        raise InputImageError(_damaged_message()) from err
    source_mode = frame.mode
    frame, orientation, exif_note = _apply_exif_orientation(frame)
    if exif_note:
        notes.append(exif_note)
    if pixels16 is not None:
        pixels16 = orient_array(pixels16, orientation)
    photo = _source_photo(frame, pixels16)
    return DecodedImage(
        image=model_view(photo),
        source_format=image.format,
        source_mode=source_mode,
        exif_orientation=orientation,
        is_animated=animated,
        notes=tuple(notes) + photo.notes,
        photo=photo,
    )


def _source_photo(image: Image.Image, pixels16: np.ndarray | None = None) -> SourcePhoto:
    """:func:`pipeline.faces.photo.source_photo_from_pil`, with an unsupported pixel format worded for the user."""
    try:
        return source_photo_from_pil(image, pixels16)
    except (ValueError, OSError) as err:
        raise InputImageError(
            f"This image uses a pixel format ({image.mode}) that cannot be shown as a colour photo. "
            "Please save it as an 8-bit RGB JPEG or PNG."
        ) from err


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of ``image`` when it asks for a transpose (2–8), else 1 (absent or invalid).

    Raises:
        Exception: whatever Pillow raises for broken EXIF (ZeroDivisionError, IndexError, SyntaxError, … seen in the
            wild: Pillow#8605, #4215); :func:`decode_upload` treats that as "shown as stored", with a note.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow's "Corrupt EXIF data" warnings: handled by callers
        orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    valid = (
        isinstance(orientation, int) and FIRST_TRANSPOSING_ORIENTATION <= orientation <= LAST_TRANSPOSING_ORIENTATION
    )
    return orientation if valid else 1


def _apply_exif_orientation(frame: Image.Image) -> tuple[Image.Image, int, str | None]:
    """Transpose ``frame`` by its EXIF orientation once; broken EXIF keeps the stored orientation and adds a note."""
    try:
        orientation = exif_orientation(frame)
        if orientation == 1:
            return frame, 1, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return ImageOps.exif_transpose(frame), orientation, None
    except Exception as err:  # ZeroDivisionError / IndexError / SyntaxError seen in the wild (Pillow#8605, #4215)
        logger.info("EXIF orientation could not be read: %s", type(err).__name__)
        return frame, 1, "The photo's rotation information could not be read; it is shown as stored."


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any single-frame PIL image to the models' view: (H, W, 3) uint8 sRGB, alpha composited.

    Args:
        image: a loaded PIL image in any mode Pillow decodes from the allowed formats.

    Returns:
        np.ndarray (H, W, 3) uint8 sRGB (see :func:`pipeline.faces.photo.model_view`).

    Raises:
        InputImageError: for pixel formats that have no faithful RGB meaning (e.g. floating point "F").
    """
    return np.array(model_view(_source_photo(image)), dtype=np.uint8, copy=True)


def _decode_array(array: np.ndarray, limits: DecodeLimits) -> DecodedImage:
    """Validate and normalise an in-memory array (e.g. from ``gr.Image(type="numpy")``)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise InputImageError(
            "The image data has an unsupported layout; expected height × width with 1, 3 or 4 colour channels."
        )
    height, width = array.shape[:2]
    check_dimensions(width, height, limits)
    if not (array.dtype == np.bool_ or (array.dtype.kind == "u" and array.dtype.itemsize <= 2)):
        raise InputImageError(
            f"The image data has an unsupported pixel type ({array.dtype}); expected 8-bit or 16-bit integers."
        )
    photo = photo_from_array(array)
    return DecodedImage(
        image=model_view(photo),
        source_format=None,
        source_mode="array",
        exif_orientation=1,
        is_animated=False,
        notes=photo.notes,
        photo=photo,
    )
