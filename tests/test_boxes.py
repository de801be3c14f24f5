"""The bounding box of a mask as slices: the set part, exclusive ends, any dtype, None when empty."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.boxes import mask_box


@pytest.mark.parametrize("dtype", [bool, np.int32, np.float32])
def test_the_box_holds_exactly_the_set_elements(dtype: type) -> None:
    mask = np.zeros((7, 9), dtype=dtype)
    mask[2, 3] = 1
    mask[4, 6] = 1
    rows, columns = mask_box(mask)
    assert (rows, columns) == (slice(2, 5), slice(3, 7))
    assert mask[rows, columns].sum() == mask.sum()


def test_an_empty_mask_has_no_box() -> None:
    assert mask_box(np.zeros((4, 4), dtype=bool)) is None
