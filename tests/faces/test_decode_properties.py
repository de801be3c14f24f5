"""Property-based tests of :func:`pipeline.faces.decode.decode_upload` (design/RELIABILITY.md §6.1 "Property-based").

The contract, after Pillow's own fuzzing tests (``Tests/test_fuzzers.py``): whatever the file — any mode, size, format,
EXIF orientation, frame count, size limits, and random damage to its bytes — decoding either returns an (H, W, 3) uint8
RGB image within the limits or raises :class:`pipeline.errors.InputImageError`; nothing else escapes. Where the answer
is known exactly (lossless RGB), it is checked pixel for pixel. These extend the single property and the hand-made
cases of tests/faces/test_decode.py.
"""

from __future__ import annotations

import io
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.errors import InputImageError
from pipeline.faces.decode import DEFAULT_LIMITS, DecodeLimits, decode_upload

EXIF_ORIENTATION = 0x0112
MODES = ["RGB", "RGBA", "L", "LA", "P", "PA", "1", "I;16", "I", "CMYK", "YCbCr", "F"]
ALLOWED_FORMATS = ["PNG", "JPEG", "WEBP", "GIF"]
OTHER_FORMATS = ["TIFF", "BMP", "PPM", "ICO", "TGA"]  # Pillow reads them, the allow-list does not
ANIMATED_FORMATS = ("PNG", "GIF", "WEBP")  # Pillow writes several frames in these (APNG, GIF, animated WebP)
EXIF_FORMATS = ("PNG", "JPEG", "WEBP")
SIDE = st.integers(1, 240)
HEADER_SIDE = st.integers(1, 200_000)
FAST_REFUSAL_S = 1.0  # a refusal from the header alone takes milliseconds; this leaves room for a loaded machine
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def limits_strategy() -> st.SearchStrategy[DecodeLimits]:
    """Size limits around the sizes generated here, so that every check is exercised on both sides."""
    return st.builds(
        DecodeLimits,
        max_pixels=st.integers(1_000, 80_000),
        min_side=st.integers(1, 48),
        max_aspect_ratio=st.floats(1.0, 12.0),
    )


def noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def in_mode(image: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.asarray(image)[..., 0].astype("<u2") * 257)
    if mode in ("I", "F"):
        return image.convert("L").convert(mode)
    return image.convert(mode)


def encode_frames(frames: list[Image.Image], fmt: str, orientation: int) -> bytes:
    """Encode ``frames`` (several only for animated formats) with an EXIF orientation where the format has EXIF."""
    options: dict[str, object] = {}
    if fmt in EXIF_FORMATS:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        options["exif"] = exif.tobytes()
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=50, loop=0)
    if fmt == "WEBP" or fmt == "JPEG":
        options["quality"] = 90
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, **options)
    return buffer.getvalue()


def assert_within(image: np.ndarray, limits: DecodeLimits) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    height, width = image.shape[:2]
    assert width * height <= limits.max_pixels
    assert min(width, height) >= limits.min_side
    assert max(width, height) <= limits.max_aspect_ratio * min(width, height)


def decode_or_refuse(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray | None:
    """The decoded image, or None when refused with our error; any other exception fails the test."""
    try:
        decoded = decode_upload(data, limits)
    except InputImageError as err:
        message = str(err)
        assert message and "Traceback" not in message and "\n" not in message
        event(f"refused: {message.split('(')[0].split('.')[0]}")
        return None
    assert_within(decoded.image, limits)
    event("decoded")
    return decoded.image


ORIENTATION_TRANSPOSE = {  # EXIF 2.32 orientation → the transpose that displays the stored pixels upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.filterwarnings("ignore:Saving I mode images as PNG is deprecated")  # old files still exist
@PROPERTY_SETTINGS
@given(
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(ALLOWED_FORMATS * 3 + OTHER_FORMATS),  # mostly formats that decode
    width=st.integers(8, 240),
    height=st.integers(8, 240),
    orientation=st.integers(0, 10),
    frames=st.integers(1, 4),
    limits=st.one_of(st.just(DecodeLimits(min_side=8)), limits_strategy()),
    seed=st.integers(0, 2**16),
)
def test_any_file_decodes_to_rgb_within_the_limits_or_is_refused(
    mode: str, fmt: str, width: int, height: int, orientation: int, frames: int, limits: DecodeLimits, seed: int
) -> None:
    frames = frames if fmt in ANIMATED_FORMATS else 1
    pictures = [in_mode(noise(width, height, seed + index), mode) for index in range(frames)]
    try:
        data = encode_frames(pictures, fmt, orientation)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # this Pillow cannot write that mode in that format: nothing to decode
    decoded = decode_or_refuse(data, limits)
    if decoded is None:
        return
    assert fmt not in OTHER_FORMATS, f"{fmt} is outside the allow-list but was decoded"
    with Image.open(io.BytesIO(data)) as stored:
        applied = orientation if fmt in EXIF_FORMATS and 2 <= orientation <= 8 else 1
        upright = (stored.height, stored.width) if applied in (5, 6, 7, 8) else (stored.width, stored.height)
        assert decoded.shape[:2] == (upright[1], upright[0]), "EXIF orientation applied exactly once"
        if fmt == "PNG" and mode == "RGB":  # lossless: the exact pixels of frame 0, turned upright
            expected = pictures[0] if applied == 1 else pictures[0].transpose(ORIENTATION_TRANSPOSE[applied])
            np.testing.assert_array_equal(decoded, np.asarray(expected))


@PROPERTY_SETTINGS
@given(fmt=st.sampled_from(["PNG", "GIF", "JPEG", "WEBP"]), width=HEADER_SIDE, height=HEADER_SIDE)
def test_sizes_beyond_the_caps_are_refused_from_the_header_without_decoding(fmt: str, width: int, height: int) -> None:
    """Only the header is real: a file claiming any size is refused fast, and for the right reason."""
    data, width, height = claimed_size_file(fmt, width, height)
    limits = DEFAULT_LIMITS
    if width * height > limits.max_pixels:
        reason = "This image is too large"
    elif max(width, height) > limits.max_aspect_ratio * min(width, height):
        reason = "This image has an unusual shape"
    elif min(width, height) < limits.min_side:
        reason = "This image is too small"
    else:  # a plausible size without the pixels to go with it: refused as damaged, or decoded within the limits
        decode_or_refuse(data)
        return
    start = time.perf_counter()
    with pytest.raises(InputImageError, match=f"^{reason}"):
        decode_upload(data)
    assert time.perf_counter() - start < FAST_REFUSAL_S


def claimed_size_file(fmt: str, width: int, height: int) -> tuple[bytes, int, int]:
    """A tiny file whose header claims ``width`` × ``height`` (clipped to what the format can store).

    Returns:
        The file and the width and height its header now claims.
    """
    buffer = io.BytesIO()
    noise(8, 8, 0).save(buffer, fmt)
    data = bytearray(buffer.getvalue())
    if fmt == "PNG":  # IHDR: width and height are its first 8 bytes (big-endian 32-bit), followed by its CRC
        ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes(data[24:29])
        chunk = b"IHDR" + ihdr
        header = bytes(data[:8]) + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
        end = b"IEND"
        return header + bytes(4) + end + zlib.crc32(end).to_bytes(4, "big"), width, height
    if fmt == "GIF":
        width, height = min(width, 65535), min(height, 65535)
        size = width.to_bytes(2, "little") + height.to_bytes(2, "little")
        data[6:10] = size  # logical screen
        flags = data[10]
        position = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
        while data[position] == 0x21:  # extension blocks: introducer, label, then sub-blocks up to a 0 length
            position += 2
            while data[position]:
                position += data[position] + 1
            position += 1
        assert data[position] == 0x2C, "image descriptor"
        data[position + 5 : position + 9] = size
        return bytes(data), width, height
    if fmt == "JPEG":
        width, height = min(width, 65535), min(height, 65535)
        position = 2  # after SOI: segments of marker (2 bytes) + length (2 bytes, includes itself)
        while data[position + 1] != 0xC0:  # SOF0 (Pillow writes baseline JPEGs)
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        data[position + 5 : position + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
        return bytes(data), width, height
    # WEBP (lossy VP8): 14-bit width and height follow the frame start code 9d 01 2a
    width, height = min(width, 16383), min(height, 16383)
    start = data.index(b"\x9d\x01\x2a") + 3
    data[start : start + 4] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return bytes(data), width, height


@PROPERTY_SETTINGS
@given(
    fmt=st.sampled_from(["PNG", "JPEG", "WEBP", "GIF"]),
    edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
    insert=st.one_of(st.none(), st.tuples(st.floats(0.0, 1.0), st.binary(min_size=1, max_size=16))),
)
def test_damaged_bytes_are_refused_or_decoded_never_crash(
    fmt: str, edits: list[tuple[float, int]], cut: float | None, insert: tuple[float, bytes] | None
) -> None:
    """Random byte changes, cuts and insertions in a valid file (the shape of a fuzzer's mutations)."""
    buffer = io.BytesIO()
    noise(120, 100, 7).save(buffer, fmt)
    data = bytearray(buffer.getvalue())
    for where, value in edits:
        data[min(int(where * len(data)), len(data) - 1)] = value
    if insert is not None:
        where = int(insert[0] * len(data))
        data[where:where] = insert[1]
    if cut is not None:
        del data[int(cut * len(data)) :]
    decode_or_refuse(bytes(data))


@PROPERTY_SETTINGS
@given(
    dtype=st.sampled_from(["uint8", "uint16", "bool", "int8", "int32", "float32", "float64"]),
    shape=st.one_of(
        st.tuples(SIDE, SIDE),
        st.tuples(SIDE, SIDE, st.integers(1, 5)),
        st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    ),
    limits=limits_strategy(),
)
def test_any_array_is_normalised_or_refused_and_never_mutated(
    dtype: str, shape: tuple[int, ...], limits: DecodeLimits
) -> None:
    rng = np.random.default_rng(len(shape) * 1000 + shape[0])
    array = rng.integers(0, 300, shape).astype(dtype)
    original = array.copy()
    try:
        decoded = decode_upload(array, limits).image
    except InputImageError:
        decoded = None
    np.testing.assert_array_equal(array, original, err_msg="the caller's array was changed")
    if decoded is None:
        return
    assert_within(decoded, limits)
    assert dtype in ("uint8", "uint16", "bool"), f"{dtype} pixels were accepted"
    assert not np.shares_memory(decoded, array)
    if dtype == "uint8" and array.ndim == 3 and array.shape[2] == 3:
        np.testing.assert_array_equal(decoded, array)
