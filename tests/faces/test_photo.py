"""The photo's own form and the write-back: bit-exact outside the edit, colour-managed inside, depth/grey/alpha kept.

Colour-managed comparisons use LittleCMS through Pillow's ImageCms with Debian's colord-data profiles (Adobe RGB,
ProPhoto RGB; installed by .ci/run) and the built-in sRGB profile.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from pipeline.faces.decode import DecodeLimits, decode_upload
from pipeline.faces.photo import (
    ALPHA_BACKGROUND_RGB,
    SourcePhoto,
    encode_png,
    model_view,
    orient_array,
    oriented_size,
    read_png,
    write_back,
)
from tests.photos import colord_profile

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC


def noise(height: int = 120, width: int = 100, channels: int = 3, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    top = 65535 if dtype == np.uint16 else 255
    rng = np.random.default_rng(seed)
    return rng.integers(0, top + 1, size=(height, width, channels)).astype(dtype)


def png(pixels: np.ndarray, icc: bytes | None = None) -> bytes:
    return encode_png(SourcePhoto(pixels, icc))


def edit_box(view: np.ndarray, value: tuple[int, int, int] = (200, 150, 120)) -> tuple[np.ndarray, np.ndarray]:
    """A model-side edit: a coloured box in the lower middle (the 'neck'); returns (after, region)."""
    after = view.copy()
    region = np.zeros(view.shape[:2], bool)
    region[70:100, 30:70] = True
    after[region] = value
    return after, region


def to_srgb(photo: SourcePhoto) -> np.ndarray:
    """Colour-managed view of a photo's colour (no alpha) through its embedded profile, as a browser shows it."""
    return model_view(SourcePhoto(photo.pixels[:, :, : photo.colour_channels], photo.icc_profile, photo.grey))


# --- colour profiles -------------------------------------------------------------------------------------------------


# Largest colour-managed error inside the edit, in sRGB levels: the residual write_back keeps (≤ 2 levels of the
# photo's space) plus 8-bit quantisation of that space, coarse for ProPhoto's wide gamut and 1.8 gamma.
SHOWN_TOLERANCE = {"AdobeRGB1998.icc": 3, "ProPhotoRGB.icc": 6}


@pytest.mark.parametrize("profile_name", sorted(SHOWN_TOLERANCE))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_profile_is_kept_and_only_the_edit_changes(profile_name: str, fmt: str) -> None:
    icc = colord_profile(profile_name)
    pixels = noise()
    pixels[:10] = (0, 255, 0)  # saturated wide-gamut green: outside sRGB, must not be clipped
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, icc_profile=icc, **({"quality": 95} if fmt == "JPEG" else {}))
    decoded = decode_upload(buffer.getvalue())
    assert decoded.photo.icc_profile == icc
    # The models see sRGB converted by LittleCMS, not the raw values.
    expected_view = np.asarray(
        ImageCms.profileToProfile(
            Image.fromarray(decoded.photo.pixels), ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB,
            renderingIntent=INTENT,
        )
    )  # fmt: skip
    np.testing.assert_array_equal(decoded.image, expected_view)
    after, region = edit_box(decoded.image)
    result = write_back(decoded.photo, decoded.image, after)
    np.testing.assert_array_equal(result.pixels[~region], decoded.photo.pixels[~region])  # bit-exact outside
    np.testing.assert_array_equal(result.pixels[:10], decoded.photo.pixels[:10])  # wide-gamut green kept
    assert result.icc_profile == icc
    shown = to_srgb(result)  # what a colour-managed viewer shows
    assert np.abs(shown[region].astype(int) - after[region]).max() <= SHOWN_TOLERANCE[profile_name]
    # The written PNG carries the profile and the same pixels, nothing else.
    written = Image.open(io.BytesIO(encode_png(result)))
    assert written.format == "PNG" and written.info.get("icc_profile") == icc
    assert set(written.info) <= {"icc_profile"}
    np.testing.assert_array_equal(np.asarray(written), result.pixels)


def test_without_a_profile_values_are_srgb_and_the_edit_is_exact() -> None:
    pixels = noise()
    decoded = decode_upload(png(pixels))
    assert decoded.photo.icc_profile is None
    np.testing.assert_array_equal(decoded.image, pixels)
    after, _region = edit_box(decoded.image)
    result = write_back(decoded.photo, decoded.image, after)
    np.testing.assert_array_equal(result.pixels[:, :, :3], after)
    np.testing.assert_array_equal(decoded.photo.pixels, pixels)  # a new array: the decoded photo is left as it was
    assert not np.shares_memory(result.pixels, decoded.photo.pixels)


def test_a_box_holding_the_edit_gives_the_same_write_back() -> None:
    decoded = decode_upload(png(noise(channels=4, dtype=np.uint16), colord_profile("AdobeRGB1998.icc")))
    after, region = edit_box(decoded.image)
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    within = (slice(rows[0] - 3, rows[-1] + 5), slice(cols[0] - 2, cols[-1] + 4))
    whole = write_back(decoded.photo, decoded.image, after)
    boxed = write_back(decoded.photo, decoded.image, after, within)
    np.testing.assert_array_equal(boxed.pixels, whole.pixels)
    assert boxed.icc_profile == whole.icc_profile
    nothing = (slice(0, 0), slice(0, 0))
    assert write_back(decoded.photo, decoded.image, decoded.image.copy(), nothing) is decoded.photo


@pytest.mark.filterwarnings("error")  # no division by a zero opacity
def test_nearly_transparent_16bit_pixels_keep_their_values() -> None:
    pixels = noise(channels=4, dtype=np.uint16)
    pixels[:, :, 3] = 65535
    pixels[80:90, 40:60, 3] = 100  # inside the edit: opaque enough for 16 bits, 0 at the models' 8 bits
    decoded = decode_upload(png(pixels))
    after, region = edit_box(decoded.image)
    result = write_back(decoded.photo, decoded.image, after)
    np.testing.assert_array_equal(result.pixels[80:90, 40:60], pixels[80:90, 40:60])
    edited = region.copy()
    edited[80:90, 40:60] = False
    assert np.all(np.any(result.pixels[edited] != pixels[edited], axis=1))


def test_no_change_returns_the_photo_itself() -> None:
    decoded = decode_upload(png(noise(channels=4, dtype=np.uint16), colord_profile("AdobeRGB1998.icc")))
    assert write_back(decoded.photo, decoded.image, decoded.image.copy()) is decoded.photo


def test_exif_and_text_metadata_stay_stripped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N"}  # GPS IFD
    buffer = io.BytesIO()
    Image.fromarray(noise()).save(buffer, format="JPEG", exif=exif, icc_profile=colord_profile("AdobeRGB1998.icc"))
    decoded = decode_upload(buffer.getvalue())
    written = encode_png(decoded.photo)
    assert b"eXIf" not in written and b"tEXt" not in written and b"PhoneMaker" not in written
    assert b"iCCP" in written


def test_unusable_profile_is_dropped_with_a_note() -> None:
    buffer = io.BytesIO()
    Image.fromarray(noise()).save(buffer, format="PNG", icc_profile=b"not a profile" * 20)
    decoded = decode_upload(buffer.getvalue())
    assert decoded.photo.icc_profile is None
    assert any("colour profile could not be used" in note for note in decoded.notes)


# --- grey ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_in_grey_out(dtype: type) -> None:
    pixels = noise(channels=1, dtype=dtype)
    decoded = decode_upload(png(pixels))
    assert decoded.photo.pixels.shape[2] == 1 and decoded.photo.pixels.dtype == dtype
    np.testing.assert_array_equal(decoded.photo.pixels, pixels)
    after, region = edit_box(decoded.image, (200, 150, 120))  # a coloured edit
    result = write_back(decoded.photo, decoded.image, after)
    assert result.pixels.shape == pixels.shape and result.pixels.dtype == dtype
    np.testing.assert_array_equal(result.pixels[~region], pixels[~region])
    luma = round(200 * 0.299 + 150 * 0.587 + 120 * 0.114)  # ITU-R BT.601, Pillow's "L"
    scale = 257 if dtype == np.uint16 else 1
    assert np.abs(result.pixels[region].astype(int) - luma * scale).max() <= scale
    back = read_png(encode_png(result))
    assert back.pixels.dtype == dtype and back.pixels.shape == pixels.shape
    np.testing.assert_array_equal(back.pixels, result.pixels)


def test_rgb_photo_with_equal_channels_stays_grey() -> None:
    grey = noise(channels=1)
    decoded = decode_upload(png(np.repeat(grey, 3, axis=2), colord_profile("AdobeRGB1998.icc")))
    assert decoded.photo.grey and decoded.photo.pixels.shape[2] == 3
    after, region = edit_box(decoded.image, (220, 120, 90))
    result = write_back(decoded.photo, decoded.image, after)
    assert np.array_equal(result.pixels[..., 0], result.pixels[..., 1])
    assert np.array_equal(result.pixels[..., 1], result.pixels[..., 2])
    assert not np.array_equal(result.pixels[region], decoded.photo.pixels[region])
    np.testing.assert_array_equal(result.pixels[~region], decoded.photo.pixels[~region])


# --- 16 bits ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_round_trip(channels: int) -> None:
    icc = colord_profile("AdobeRGB1998.icc")
    pixels = noise(channels=channels, dtype=np.uint16)
    if channels == 4:
        pixels[..., 3] = np.maximum(pixels[..., 3], 1)
        pixels[70:100, 30:70, 3] = 65535  # the neck is opaque
    data = png(pixels, icc)
    assert Image.open(io.BytesIO(data)).info.get("icc_profile") == icc  # OpenCV wrote the iCCP chunk
    decoded = decode_upload(data)
    np.testing.assert_array_equal(decoded.photo.pixels, pixels)  # 16-bit values, not Pillow's 8-bit reduction
    assert decoded.photo.bit_depth == 16 and decoded.photo.icc_profile == icc
    after, region = edit_box(decoded.image)
    result = write_back(decoded.photo, decoded.image, after)
    np.testing.assert_array_equal(result.pixels[~region], pixels[~region])
    if channels == 4:
        np.testing.assert_array_equal(result.pixels[..., 3], pixels[..., 3])  # alpha untouched everywhere
    assert np.abs(to_srgb(result)[region].astype(int) - after[region]).max() <= 3
    back = read_png(encode_png(result))
    np.testing.assert_array_equal(back.pixels, result.pixels)
    assert back.icc_profile == icc


@pytest.mark.parametrize("orientation", range(1, 9))
def test_array_orientation_matches_pillow(orientation: int) -> None:
    """16-bit colour pixels (read by OpenCV) are oriented like Pillow's exif_transpose orients the 8-bit image."""
    image = Image.fromarray(noise(height=9, width=13, seed=orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = io.BytesIO()
    image.save(tagged, format="PNG", exif=exif)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(tagged)))
    np.testing.assert_array_equal(orient_array(np.asarray(image), orientation), shown)


# --- alpha -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "channels"), [("RGBA", 4), ("LA", 2)])
def test_alpha_is_kept_and_the_models_see_it_on_the_background(mode: str, channels: int) -> None:
    pixels = noise(channels=channels)
    pixels[:20, :, -1] = 0  # fully transparent band
    pixels[70:100, 30:70, -1] = 255
    decoded = decode_upload(png(pixels))
    np.testing.assert_array_equal(decoded.photo.pixels, pixels)
    assert np.all(decoded.image[:20] == ALPHA_BACKGROUND_RGB)
    after, region = edit_box(decoded.image)
    result = write_back(decoded.photo, decoded.image, after)
    np.testing.assert_array_equal(result.pixels[..., -1], pixels[..., -1])
    np.testing.assert_array_equal(result.pixels[~region], pixels[~region])
    written = Image.open(io.BytesIO(encode_png(result)))
    assert written.mode == mode
    np.testing.assert_array_equal(np.asarray(written).reshape(pixels.shape), result.pixels)


@pytest.mark.parametrize(("mode", "transparent", "expected"), [("L", 7, "LA"), ("RGB", (7, 7, 7), "RGBA")])
def test_a_transparent_colour_becomes_alpha(mode: str, transparent: object, expected: str) -> None:
    image = Image.fromarray(noise(channels=3)).convert(mode)
    image.putpixel((0, 0), transparent)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=transparent)
    decoded = decode_upload(buffer.getvalue())
    assert decoded.photo.pixels.shape[2] == len(expected)
    assert decoded.photo.pixels[0, 0, -1] == 0 and tuple(decoded.image[0, 0]) == ALPHA_BACKGROUND_RGB
    written = Image.open(io.BytesIO(encode_png(decoded.photo)))
    assert written.mode == expected


# --- formats ---------------------------------------------------------------------------------------------------------


def test_mpo_is_a_photo_not_an_animation() -> None:
    first, second = Image.fromarray(noise(seed=1)), Image.fromarray(noise(seed=2))
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[second], quality=95)
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    decoded = decode_upload(buffer.getvalue())
    assert decoded.source_format == "MPO" and not decoded.is_animated
    assert not any("animated" in note for note in decoded.notes)


def test_heic_decodes_with_its_profile_and_behind_the_size_limits() -> None:
    icc = colord_profile("AdobeRGB1998.icc")
    buffer = io.BytesIO()
    Image.fromarray(noise(height=128, width=96)).save(buffer, format="HEIF", quality=90, icc_profile=icc)
    decoded = decode_upload(buffer.getvalue())
    assert decoded.source_format == "HEIF" and decoded.image.shape == (128, 96, 3)
    assert decoded.photo.icc_profile == icc
    with pytest.raises(Exception, match="too large"):
        decode_upload(buffer.getvalue(), DecodeLimits(max_pixels=100 * 100))


def test_cmyk_comes_back_as_rgb_with_a_note() -> None:
    buffer = io.BytesIO()
    Image.fromarray(noise()).convert("CMYK").save(buffer, format="JPEG", quality=95)
    decoded = decode_upload(buffer.getvalue())
    assert decoded.photo.pixels.shape[2] == 3
    assert any("CMYK" in note for note in decoded.notes)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_oriented_size_is_the_size_orient_array_gives(orientation: int) -> None:
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)  # 3 wide, 2 high
    height, width = orient_array(pixels, orientation).shape[:2]
    assert oriented_size((3, 2), orientation) == (width, height)
