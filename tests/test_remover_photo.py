"""The remover returns the photo in its own form: strength 0 identity, turned photos, profile/16-bit/alpha/grey.

Stand-in weights (random networks in the real formats): the numbers are not a real edit, but which pixels may change
and what the output file carries do not depend on the weights.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from pipeline.faces.decode import decode_upload
from pipeline.faces.photo import SourcePhoto, encode_png, model_view, read_png
from pipeline.faces.upright import turn_clockwise
from pipeline.remover import STRENGTH_ZERO_NOTE, DoubleChinRemover, RemovalResult
from pipeline.settings import RemovalSettings
from tests.photos import colord_profile, make_photo


@pytest.fixture(scope="module")
def upright() -> np.ndarray:
    """00016 at 420² on a 560×500 canvas (small: every test runs the whole remover)."""
    return make_photo((560, 500), [("00016", 420, (80, 30))])


@pytest.fixture(scope="module")
def upright_result(remover: DoubleChinRemover, upright: np.ndarray) -> RemovalResult:
    return remover(png_bytes(SourcePhoto(upright)), RemovalSettings(method="warp"))


def png_bytes(photo: SourcePhoto) -> bytes:
    return encode_png(photo)


def changed(result: RemovalResult) -> np.ndarray:
    return np.any(result.image != result.original, axis=2)


def test_strength_zero_returns_the_upload_bit_for_bit(remover: DoubleChinRemover, upright: np.ndarray) -> None:
    data = png_bytes(SourcePhoto(np.dstack([upright, np.full(upright.shape[:2], 200, np.uint8)])))
    result = remover(data, RemovalSettings(method="warp", strength=0.0))
    decoded = decode_upload(data)
    np.testing.assert_array_equal(result.image, result.original)
    assert result.photo is not None
    np.testing.assert_array_equal(result.photo.pixels, decoded.photo.pixels)
    assert encode_png(result.photo) == encode_png(decoded.photo)
    assert STRENGTH_ZERO_NOTE in result.notes
    assert not result.edits[0].neck_mask.any() and not result.edits[0].blend_mask.any()


def test_the_upright_edit_changes_only_a_small_region(upright_result: RemovalResult) -> None:
    region = changed(upright_result)
    assert region.any() and region.mean() < 0.2
    assert upright_result.turn_degrees == 0 and upright_result.photo is not None
    np.testing.assert_array_equal(upright_result.photo.pixels, upright_result.image)  # sRGB 8-bit in, same out


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_turned_photo_is_edited_and_turned_back(
    remover: DoubleChinRemover, upright: np.ndarray, upright_result: RemovalResult, degrees: int
) -> None:
    shown = turn_clockwise(upright, -degrees)  # stored sideways / upside down, no EXIF orientation
    result = remover(png_bytes(SourcePhoto(shown)), RemovalSettings(method="warp"))
    assert result.turn_degrees == degrees
    assert any(f"turning the photo {degrees}° clockwise" in note for note in result.notes)
    assert result.image.shape == shown.shape  # the photo keeps its orientation
    # The edit is the upright edit, turned: the same pixels, bit for bit.
    np.testing.assert_array_equal(turn_clockwise(result.image, degrees), upright_result.image)
    region = changed(result)
    assert result.photo is not None
    np.testing.assert_array_equal(result.photo.pixels[~region], shown[~region])


def adobe_rgb_16bit_rgba(upright: np.ndarray) -> tuple[SourcePhoto, bytes]:
    icc = colord_profile("AdobeRGB1998.icc")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    adobe = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    colour = np.asarray(ImageCms.profileToProfile(Image.fromarray(upright), srgb, adobe)).astype(np.uint16) * 257
    colour += np.random.default_rng(0).integers(0, 200, colour.shape, dtype=np.uint16)  # 16-bit detail
    alpha = np.full(upright.shape[:2], 65535, np.uint16)
    alpha[:40, :60] = 0  # a transparent corner
    alpha[40:80, :60] = 30000
    return SourcePhoto(np.dstack([colour, alpha]), icc), icc


def test_profile_depth_and_alpha_come_back(remover: DoubleChinRemover, upright: np.ndarray) -> None:
    photo, icc = adobe_rgb_16bit_rgba(upright)
    result = remover(png_bytes(photo), RemovalSettings(method="warp"))
    out = result.photo
    assert out is not None and out.icc_profile == icc
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == photo.pixels.shape
    region = changed(result)
    assert region.any()
    np.testing.assert_array_equal(out.pixels[~region], photo.pixels[~region])  # bit-exact outside the edit
    np.testing.assert_array_equal(out.pixels[..., 3], photo.pixels[..., 3])  # the same alpha everywhere
    shown = model_view(out)  # colour-managed (LittleCMS) view of what was written
    error = np.abs(shown.astype(int) - result.image)[region]
    # The stand-in renders hold saturated colours at the edge of sRGB (e.g. (0, 251, 0)), where one 8-bit step of
    # Adobe RGB moves sRGB by up to 12 levels: compare with what that quantisation alone costs.
    srgb, adobe = ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(icc))
    in_adobe = ImageCms.profileToProfile(Image.fromarray(result.image), srgb, adobe, renderingIntent=1)
    quantised = np.asarray(ImageCms.profileToProfile(in_adobe, adobe, srgb, renderingIntent=1))
    floor = np.abs(quantised.astype(int) - result.image)[region]
    excess = error - floor
    assert np.percentile(excess, 99) <= 1 and excess.mean() < 0.2, (np.percentile(excess, 99), excess.mean())
    back = read_png(encode_png(out))  # the file keeps it all
    np.testing.assert_array_equal(back.pixels, out.pixels)
    assert back.icc_profile == icc


def test_grey_photo_comes_back_grey(remover: DoubleChinRemover, upright: np.ndarray) -> None:
    grey = np.asarray(Image.fromarray(upright).convert("L"))[:, :, None]
    result = remover(png_bytes(SourcePhoto(grey)), RemovalSettings(method="warp"))
    assert result.photo is not None and result.photo.pixels.shape == grey.shape
    region = changed(result)
    assert region.any()
    np.testing.assert_array_equal(result.photo.pixels[~region], grey[~region])
    assert Image.open(io.BytesIO(encode_png(result.photo))).mode == "L"
