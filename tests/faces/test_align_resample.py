"""The banded (threaded) oriented resampling of the alignment gives the recipe's single call's pixels.

Up to the rounding of sampling positions (the sub-quads' coefficients are computed from rounded corners): at most
1 grey level, on at most a few values per million.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.config import EXAMPLES_DIR
from pipeline.faces.align import quad_resample

ROUNDING_FLIPS_PER_MILLION = 5  # measured: 3 values of 3.1 M differ by 1 in the axis-aligned case, none otherwise


def rotated_square(centre: tuple[float, float], half: float, angle: float) -> np.ndarray:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [1.0, -1.0]]) * half  # UL, LL, LR, UR
    return np.asarray(centre) + corners @ rotation.T


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return Image.open(EXAMPLES_DIR / "00016.png").convert("RGB")


@pytest.mark.parametrize(
    ("quad", "transform_size", "size", "bands"),
    [
        (rotated_square((512.3, 498.7), 400.2, 0.0), 4096, 1024, 2),  # the recipe's sizes
        (rotated_square((480.0, 530.5), 350.7, 0.31), 1024, 256, 2),
        (rotated_square((300.0, 700.0), 420.0, -0.52), 1024, 256, 4),  # reaches outside the source (black)
        (rotated_square((512.0, 512.0), 200.0, 1.1), 1024, 256, 8),
    ],
)
def test_bands_give_the_same_pixels(source: Image.Image, quad, transform_size, size, bands) -> None:
    single = quad_resample(source, quad, transform_size, size, bands=1)
    banded = quad_resample(source, quad, transform_size, size, bands=bands)
    assert banded.shape == single.shape == (size, size, 3) and banded.dtype == np.uint8
    difference = np.abs(banded.astype(np.int16) - single.astype(np.int16))
    assert difference.max() <= 1 and np.count_nonzero(difference) <= ROUNDING_FLIPS_PER_MILLION * difference.size / 1e6


def test_single_call_is_the_recipe(source: Image.Image) -> None:
    quad = rotated_square((500.0, 520.0), 380.0, 0.2)
    big = source.transform((1024, 1024), Image.Transform.QUAD, tuple((quad + 0.5).ravel()), Image.Resampling.BILINEAR)
    expected = np.asarray(big.resize((256, 256), Image.Resampling.LANCZOS))
    assert np.array_equal(quad_resample(source, quad, 1024, 256, bands=1), expected)
    assert np.array_equal(quad_resample(source, quad, 1024, 256, bands=3), expected)  # 3 does not divide: one call


def test_the_bands_are_not_a_plain_copy(source: Image.Image) -> None:
    """A control: a different quad gives different pixels, so the comparisons above can fail."""
    one = quad_resample(source, rotated_square((500.0, 520.0), 380.0, 0.2), 1024, 256, bands=2)
    other = quad_resample(source, rotated_square((500.0, 520.0), 380.0, 0.21), 1024, 256, bands=2)
    assert np.abs(one.astype(np.int16) - other).max() > 10
