"""Photo ↔ tensor conversions and the area downsampling shared by both optimisation loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.networks.pixels import downsample, to_model_range, to_uint8


def test_downsample_is_an_area_average() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    small = downsample(x, 2)
    assert small.shape == (2, 3, 2, 2)
    torch.testing.assert_close(small[1, 2, 1, 0], x[1, 2, 4:, :4].mean())
    assert downsample(x, 8) is x  # already that size: no copy
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        downsample(x[0], 2)


def test_uint8_round_trip_through_the_model_range_is_exact() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tensor = to_model_range(image, torch.device("cpu"))
    assert tensor.shape == (1, 3, 5, 7) and tensor.dtype == torch.float32
    assert float(tensor.min()) >= -1.0 and float(tensor.max()) <= 1.0
    np.testing.assert_array_equal(to_uint8(tensor), image)


def test_generator_output_beyond_the_range_is_clipped() -> None:
    raw = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    np.testing.assert_array_equal(to_uint8(raw)[0, :, 0], [0, 0, 128, 255, 255])
