"""Decode-level bad inputs of RELIABILITY.md ("Bad inputs to try") and the §2.3 mode/orientation policy.

Every fixture is generated here with Pillow, numpy or raw bytes.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import subprocess
import time
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps, features

from pipeline.errors import InputImageError
from pipeline.faces import decode as decode_module
from pipeline.faces.decode import DecodeLimits, check_dimensions, decode_image, decode_upload

RNG_SEED = 1234
EXIF_ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_image(width: int = 160, height: int = 120, seed: int = RNG_SEED) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int, *, idat: bytes = b"") -> bytes:
    """A PNG with a real IHDR (8-bit greyscale) and optional IDAT payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr)
    if idat:
        body += png_chunk(b"IDAT", idat)
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def zero_rows_idat(width: int, height: int) -> bytes:
    """Deflated rows of zeros (filter byte 0), streamed so the test never holds the raw pixels."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    return b"".join(parts)


def assert_rejected(source: object, *fragments: str) -> str:
    with pytest.raises(InputImageError) as info:
        decode_image(source)  # type: ignore[arg-type]
    message = str(info.value)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    assert "Traceback" not in message
    return message


# --- unreadable files ------------------------------------------------------------------------------------------------


def test_none_asks_for_a_photo() -> None:
    assert_rejected(None, "please upload a photo")


def test_empty_bytes_and_zero_byte_file(tmp_path) -> None:
    assert_rejected(b"", "empty")
    path = tmp_path / "a.jpg"
    path.write_bytes(b"")
    message = assert_rejected(path, "empty")
    assert str(tmp_path) not in message


def test_text_renamed_jpg_is_not_a_photo(tmp_path) -> None:
    path = tmp_path / "page.jpg"
    path.write_bytes(b"<!doctype html><html><body>not an image</body></html>")
    message = assert_rejected(path, "could not be read as a photo", "JPEG")
    assert "page.jpg" not in message and str(tmp_path) not in message
    assert_rejected(b"just some text, renamed to .jpg\n" * 4, "could not be read as a photo")


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n", "PDF"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(56), None),
    ],
)
def test_pdf_and_executable_bytes_rejected(payload: bytes, named: str | None) -> None:
    message = assert_rejected(payload, "not supported" if named else "could not be read as a photo")
    if named:
        assert named in message


def test_zip_bytes_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.png", encode(noise_image(), "PNG"))
    assert_rejected(buffer.getvalue(), "ZIP", "not supported")


@pytest.mark.parametrize(("fmt", "named"), [("TIFF", "TIFF"), ("BMP", "BMP"), ("TGA", None), ("PPM", None)])
def test_formats_outside_the_allow_list_are_rejected(fmt: str, named: str | None) -> None:
    data = encode(noise_image(), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would decode it
    message = assert_rejected(data)
    if named:
        assert named in message and "not supported" in message


def test_psd_signature_rejected_without_parsing() -> None:
    assert_rejected(b"8BPS\x00\x01" + bytes(60), "Photoshop", "not supported")


def test_eps_rejected_and_ghostscript_never_invoked(monkeypatch) -> None:
    data = encode(noise_image(), "EPS")  # Pillow writes EPS without Ghostscript; reading it would need gs
    calls: list[object] = []

    def forbidden(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise AssertionError("a subprocess was started")

    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, forbidden)
    assert_rejected(data, "PostScript/EPS", "not supported")
    assert_rejected(b"\xc5\xd0\xd3\xc6" + bytes(60), "PostScript/EPS")
    assert calls == []


def test_heic_is_named_when_not_allowed() -> None:
    assert "HEIF" in decode_module.DEFAULT_ALLOWED_FORMATS  # pillow-heif is a requirement: HEIC decodes
    data = struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic" + bytes(40)
    with pytest.raises(InputImageError, match="This HEIC/HEIF file is not supported"):
        decode_image(data, DecodeLimits(allowed_formats=decode_module.BASE_ALLOWED_FORMATS))


# --- damaged files ---------------------------------------------------------------------------------------------------


def test_truncated_jpeg_is_damaged() -> None:
    data = encode(noise_image(400, 300), "JPEG", quality=90)
    assert_rejected(data[: len(data) // 2], "damaged")


def test_truncated_png_is_damaged() -> None:
    data = encode(noise_image(400, 300), "PNG")
    idat = data.index(b"IDAT")
    assert_rejected(data[: idat + (len(data) - idat) // 2], "damaged")
    assert_rejected(data[: idat + 40], "damaged")


def test_png_with_broken_idat_crc_or_data_is_damaged() -> None:
    data = bytearray(encode(noise_image(200, 150), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 30] = bytes(20)  # corrupt the deflate stream
    assert_rejected(bytes(data), "damaged")


def test_truncated_images_stay_rejected_by_default() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # we never switch Pillow into "decode what you can" mode


# --- size limits -----------------------------------------------------------------------------------------------------


def test_header_claiming_20000_squared_rejected_fast_without_decoding(monkeypatch) -> None:
    data = png_header_only(20000, 20000)
    assert len(data) < 100
    monkeypatch.setattr(ImageFile.ImageFile, "load", _forbidden_load)
    start = time.perf_counter()
    assert_rejected(data, "too large")
    assert time.perf_counter() - start < 0.1


def test_pixel_flood_png_rejected_without_decoding(monkeypatch) -> None:
    data = png_header_only(12000, 12000, idat=zero_rows_idat(12000, 12000))
    assert len(data) < 200_000  # the RELIABILITY.md "140 KB PNG" that decodes to 144 MB
    monkeypatch.setattr(ImageFile.ImageFile, "load", _forbidden_load)
    start = time.perf_counter()
    assert_rejected(data, "too large")
    assert time.perf_counter() - start < 0.1


def test_pillow_bomb_warning_is_an_error_even_with_a_generous_budget(monkeypatch) -> None:
    # 144 MP is above Pillow's own warning threshold (89.5 MP) but below this budget: only the warning stops it.
    data = png_header_only(12000, 12000, idat=zero_rows_idat(12000, 12000))
    monkeypatch.setattr(ImageFile.ImageFile, "load", _forbidden_load)
    with pytest.raises(InputImageError, match="too large"):
        decode_image(data, DecodeLimits(max_pixels=10**9))


def test_image_above_our_budget_but_below_pillows_rejected_with_size() -> None:
    message = assert_rejected(png_header_only(8000, 6000), "too large", "8000×6000", "40 megapixels")
    assert "48.0" in message


def _forbidden_load(self: ImageFile.ImageFile) -> None:
    raise AssertionError("pixel data was decoded")


def test_tiny_image_rejected() -> None:
    assert_rejected(encode(noise_image(32, 32), "PNG"), "too small", "32×32", "80 pixels")


@pytest.mark.parametrize(("width", "height"), [(1, 10000), (10000, 1), (900, 200)])
def test_extreme_aspect_ratio_rejected(width: int, height: int) -> None:
    assert_rejected(Image.new("L", (width, height), 128), "unusual shape", "4:1")


def test_limits_are_frozen_with_documented_defaults() -> None:
    limits = DecodeLimits()
    assert limits.max_pixels == 40_000_000 and limits.max_aspect_ratio == 4.0 and limits.min_side == 80
    assert {"JPEG", "PNG", "WEBP"} <= set(limits.allowed_formats)
    assert not {"TIFF", "EPS", "PDF", "PSD", "BMP"} & set(limits.allowed_formats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_pixels = 1  # type: ignore[misc]
    check_dimensions(4000, 1000)  # exactly 4:1 passes
    with pytest.raises(InputImageError):
        check_dimensions(100, 100, DecodeLimits(max_pixels=9_999))


def test_global_pillow_and_warning_state_untouched() -> None:
    filters_before = list(warnings.filters)
    pixels_before = Image.MAX_IMAGE_PIXELS
    decode_image(encode(noise_image(), "PNG"))
    with pytest.raises(InputImageError):
        decode_image(png_header_only(20000, 20000))
    assert warnings.filters == filters_before
    assert pixels_before == Image.MAX_IMAGE_PIXELS


# --- pixel formats ---------------------------------------------------------------------------------------------------


def test_rgb_png_round_trips_exactly(tmp_path) -> None:
    image = noise_image()
    expected = np.asarray(image)
    path = tmp_path / "photo.png"
    image.save(path)
    for source in (encode(image, "PNG"), path, str(path)):
        decoded = decode_image(source)
        assert decoded.dtype == np.uint8 and decoded.shape == (120, 160, 3)
        np.testing.assert_array_equal(decoded, expected)
    decoded.flags.writeable = True  # owns its memory
    assert decoded.flags.c_contiguous


def test_grayscale_jpeg_becomes_rgb() -> None:
    gray = np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (120, 1))
    result = decode_upload(encode(Image.fromarray(gray), "JPEG", quality=95))
    assert result.source_mode == "L" and result.image.shape == (120, 160, 3)
    assert np.array_equal(result.image[..., 0], result.image[..., 2])
    assert np.abs(result.image[..., 0].astype(int) - gray).max() <= 4


def test_one_bit_png_becomes_black_and_white_rgb() -> None:
    bits = (np.indices((100, 120)).sum(axis=0) // 10) % 2 == 0
    decoded = decode_image(encode(Image.fromarray(bits), "PNG"))
    np.testing.assert_array_equal(decoded[..., 1], np.where(bits, 255, 0))


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    levels = np.array([0, 0x0101 * 17, 0x8000, 0xFFFF], dtype=np.uint16)
    values = np.repeat(np.repeat(levels[None, :], 100, axis=0), 30, axis=1)  # (100, 120)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    result = decode_upload(encode(image, "PNG"))
    assert result.source_mode == "I;16"
    np.testing.assert_array_equal(result.image[0, ::30, 0], [0, 17, 128, 255])
    assert result.image.mean() < 120  # a plain convert("RGB") clips everything above 255 to white


def test_sixteen_bit_big_endian_and_array_sources_scaled() -> None:
    values = np.full((90, 100), 0x4000, dtype=np.uint16)
    big_endian = Image.fromarray(values.astype(">u2"))
    assert big_endian.mode == "I;16B"
    assert np.all(decode_image(big_endian) == 64)
    assert np.all(decode_image(values) == 64)
    int32 = Image.fromarray(values.astype(np.int32))  # mode "I"
    assert int32.mode == "I" and np.all(decode_image(int32) == 64)


def test_rgba_transparency_composited_on_white() -> None:
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)  # transparent black
    rgba[:50, :, :] = (200, 10, 20, 255)  # opaque red top half
    rgba[50:, :50, :] = (0, 0, 255, 128)  # half-transparent blue
    decoded = decode_image(encode(Image.fromarray(rgba), "PNG"))
    assert decoded.shape == (100, 100, 3)
    np.testing.assert_array_equal(decoded[10, 10], (200, 10, 20))
    np.testing.assert_array_equal(decoded[90, 90], (255, 255, 255))
    np.testing.assert_array_equal(decoded[90, 10], (127, 127, 255))
    np.testing.assert_array_equal(decode_image(rgba), decoded)  # same policy for arrays


def test_la_png_composited() -> None:
    la = np.zeros((100, 100, 2), dtype=np.uint8)
    la[:, :50] = (40, 255)
    image = Image.fromarray(la, mode="LA")
    decoded = decode_image(encode(image, "PNG"))
    np.testing.assert_array_equal(decoded[5, 5], (40, 40, 40))
    np.testing.assert_array_equal(decoded[5, 95], (255, 255, 255))


def test_palette_png_with_transparency_composited_without_warnings() -> None:
    indices = np.zeros((100, 100), dtype=np.uint8)
    indices[:, 50:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([10, 20, 30, 250, 0, 0] + [0] * 762)
    data = encode(image, "PNG", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = decode_upload(data)
    assert result.source_mode == "P"
    np.testing.assert_array_equal(result.image[5, 5], (255, 255, 255))
    np.testing.assert_array_equal(result.image[5, 95], (250, 0, 0))


def test_cmyk_jpeg_colours() -> None:
    # Pillow writes CMYK JPEGs Adobe-style (inverted, APP14 "Adobe" marker), like Photoshop does.
    cmyk = Image.new("CMYK", (120, 100), (0, 255, 255, 0))  # red
    cmyk.paste((255, 0, 255, 0), (60, 0, 120, 100))  # green
    data = encode(cmyk, "JPEG", quality=95)
    assert b"Adobe" in data
    result = decode_upload(data)
    assert result.source_mode == "CMYK"
    assert np.abs(result.image[50, 20].astype(int) - (255, 0, 0)).max() <= 6
    assert np.abs(result.image[50, 100].astype(int) - (0, 255, 0)).max() <= 6


def test_webp_decodes() -> None:
    image = noise_image()
    np.testing.assert_array_equal(decode_image(encode(image, "WEBP", lossless=True)), np.asarray(image))


def test_avif_decodes_when_pillow_supports_it() -> None:
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    flat = Image.new("RGB", (120, 100), (30, 160, 90))
    decoded = decode_image(encode(flat, "AVIF", quality=90))
    assert np.abs(decoded.astype(int) - (30, 160, 90)).max() <= 8


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_use_the_first_frame(fmt: str) -> None:
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    frames = [Image.new("RGB", (100, 90), colour) for colour in colours]
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    result = decode_upload(data)
    assert result.is_animated
    assert any("first frame" in note for note in result.notes)
    assert np.abs(result.image.astype(int) - colours[0]).max() <= 2


def test_static_gif_is_rgb_not_palette_indices() -> None:
    image = Image.new("RGB", (100, 90), (12, 200, 40)).convert("P")  # web palette: nearest entry
    decoded = decode_image(encode(image, "GIF"))
    assert decoded.shape == (90, 100, 3)
    np.testing.assert_array_equal(decoded, np.asarray(image.convert("RGB")))


# --- EXIF orientation ------------------------------------------------------------------------------------------------


def upright_pattern() -> np.ndarray:
    """(120, 200, 3) image with four distinct flat quadrants and a marker, so every flip/rotation differs."""
    image = np.zeros((120, 200, 3), dtype=np.uint8)
    image[:60, :100] = (250, 0, 0)
    image[:60, 100:] = (0, 250, 0)
    image[60:, :100] = (0, 0, 250)
    image[60:, 100:] = (250, 250, 0)
    image[10:30, 10:60] = (255, 255, 255)
    return image


# How a viewer turns the stored pixels into the upright picture, per EXIF 2.32 §4.6.4 "Orientation" (numpy only).
DISPLAY_FROM_STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}
STORED_FROM_DISPLAY = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=1),
    7: lambda a: np.rot90(a.transpose(1, 0, 2), k=-2),
    8: lambda a: np.rot90(a, k=-1),
}


def with_orientation(stored: np.ndarray, orientation: int, fmt: str = "JPEG") -> bytes:
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    options = {"quality": 95} if fmt == "JPEG" else {}
    return encode(image, fmt, exif=exif.tobytes(), **options)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_stored_from_display_inverts_display_from_stored(orientation: int) -> None:
    upright = upright_pattern()
    stored = STORED_FROM_DISPLAY[orientation](upright)
    np.testing.assert_array_equal(DISPLAY_FROM_STORED[orientation](stored), upright)


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_applied_exactly_once(orientation: int, fmt: str) -> None:
    upright = upright_pattern()
    data = with_orientation(STORED_FROM_DISPLAY[orientation](upright), orientation, fmt)
    result = decode_upload(data)
    assert result.exif_orientation == orientation
    assert result.image.shape == upright.shape
    if fmt == "PNG":
        np.testing.assert_array_equal(result.image, upright)
    else:  # JPEG: small coding error; any other orientation of this pattern is off by > 60 on average
        assert np.abs(result.image.astype(int) - upright).mean() < 3
    # The same file handed over as a PIL image (tag still present), or already transposed by someone else
    # (Gradio's preprocess does this; the tag is then removed), is not rotated a second time.
    opened = Image.open(io.BytesIO(data))
    np.testing.assert_array_equal(decode_image(opened), result.image)
    np.testing.assert_array_equal(decode_image(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))), result.image)
    np.testing.assert_array_equal(decode_image(result.image), result.image)


def _tiff_ifd(entries: list[tuple[int, int, int, bytes]], tail: bytes = b"") -> bytes:
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack("<HHI", tag, kind, count) + value
    return b"II*\x00\x08\x00\x00\x00" + body + b"\x00\x00\x00\x00" + tail


ROTATE_90_CW = (EXIF_ORIENTATION, 3, 1, struct.pack("<HH", 6, 0))
CORRUPT_EXIF_BLOCKS = {
    # Pillow#8348: a duplicated "Exif\0\0" header from a client upload.
    "duplicated header": b"Exif\x00\x00Exif\x00\x00" + _tiff_ifd([ROTATE_90_CW]),
    # Pillow#8605: XResolution with a zero denominator.
    "zero denominator": b"Exif\x00\x00" + _tiff_ifd([ROTATE_90_CW, (0x011A, 5, 1, struct.pack("<I", 38))], bytes(8)),
    # Exif sub-IFD pointer far beyond the block, and an IFD entry of an unknown type.
    "dangling offset": b"Exif\x00\x00" + _tiff_ifd([ROTATE_90_CW, (0x8769, 4, 1, struct.pack("<I", 0xFFFFFFF0))]),
    "unknown type": b"Exif\x00\x00" + _tiff_ifd([ROTATE_90_CW, (0x0131, 99, 5, bytes(4))]),
    "garbage": b"Exif\x00\x00this is not a TIFF structure at all",
}


@pytest.mark.parametrize("block", CORRUPT_EXIF_BLOCKS)
def test_corrupt_exif_is_tolerated(block: str) -> None:
    upright = upright_pattern()
    data = encode(Image.fromarray(upright), "JPEG", quality=95, exif=CORRUPT_EXIF_BLOCKS[block])
    result = decode_upload(data)
    assert result.image.dtype == np.uint8 and result.image.ndim == 3
    assert result.image.shape in ((120, 200, 3), (200, 120, 3))


def test_exif_that_crashes_transpose_keeps_stored_orientation(monkeypatch) -> None:
    upright = upright_pattern()
    data = with_orientation(np.rot90(upright, k=1), 6)

    def crashing_transpose(image: Image.Image, **kwargs: object) -> Image.Image:
        raise ZeroDivisionError("division by zero")  # what Pillow 11.0 raised for Pillow#8605's file

    monkeypatch.setattr(ImageOps, "exif_transpose", crashing_transpose)
    result = decode_upload(data)
    assert result.image.shape == (200, 120, 3)  # as stored
    assert result.exif_orientation == 1
    assert any("rotation information could not be read" in note for note in result.notes)


# --- array and PIL sources -------------------------------------------------------------------------------------------


def test_array_source_is_copied_not_mutated() -> None:
    array = np.asarray(noise_image()).copy()
    before = array.copy()
    decoded = decode_image(array)
    assert decoded is not array and not np.shares_memory(decoded, array)
    decoded[:] = 0
    np.testing.assert_array_equal(array, before)


def test_array_sources_of_other_layouts() -> None:
    gray = np.full((90, 100), 77, dtype=np.uint8)
    assert np.all(decode_image(gray) == 77)
    assert np.all(decode_image(gray[:, :, None]) == 77)
    assert np.all(decode_image(np.ones((90, 100), dtype=bool)) == 255)
    with pytest.raises(InputImageError, match="unsupported pixel type"):
        decode_image(np.zeros((90, 100, 3), dtype=np.float32))
    with pytest.raises(InputImageError, match="unsupported layout"):
        decode_image(np.zeros((90, 100, 5), dtype=np.uint8))
    with pytest.raises(InputImageError, match="too small"):
        decode_image(np.zeros((40, 40, 3), dtype=np.uint8))


def test_pil_source_in_a_rejected_format_is_refused() -> None:
    tiff = Image.open(io.BytesIO(encode(noise_image(), "TIFF")))
    assert_rejected(tiff, "TIFF", "not supported")


def test_pil_source_keeps_its_frame_and_is_not_closed() -> None:
    frames = [Image.new("RGB", (100, 90), colour) for colour in ((200, 0, 0), (0, 200, 0))]
    gif = Image.open(io.BytesIO(encode(frames[0], "GIF", save_all=True, append_images=frames[1:])))
    gif.seek(1)
    decoded = decode_image(gif)
    assert gif.tell() == 1
    assert np.abs(decoded[0, 0].astype(int) - (0, 200, 0)).max() <= 8


def test_missing_file_message_has_no_path(tmp_path) -> None:
    message = assert_rejected(tmp_path / "secret_dir" / "photo.jpg", "could not be opened")
    assert "secret_dir" not in message


# --- property: any generated file decodes to RGB uint8 within limits or raises InputImageError -----------------------

MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]
FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"]


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(FORMATS),
    width=st.integers(1, 320),
    height=st.integers(60, 320),
    orientation=st.integers(0, 9),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_decoder_is_total(mode: str, fmt: str, width: int, height: int, orientation: int, cut: float | None) -> None:
    rng = np.random.default_rng(width * 1000 + height)
    base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    try:
        image = base.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(base)[..., 0].astype("<u2") * 257)
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        data = encode(image, fmt, exif=exif.tobytes()) if fmt in ("PNG", "JPEG", "WEBP") else encode(image, fmt)
    except (OSError, ValueError, KeyError):
        return  # this Pillow cannot write that mode in that format; nothing to decode
    if cut is not None:
        data = data[: int(len(data) * cut)]
    try:
        decoded = decode_image(data)
    except InputImageError:
        return
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    assert decoded.shape[0] * decoded.shape[1] <= DecodeLimits().max_pixels
    assert min(decoded.shape[:2]) >= DecodeLimits().min_side
