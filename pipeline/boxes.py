"""The bounding box of a 2-D mask as a pair of slices: where an edit's pixel work can be confined (ours, issue 16)."""

from __future__ import annotations

import numpy as np

__all__ = ["mask_box"]


def mask_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """(rows, columns) slices of the smallest box holding every non-zero element of a 2-D ``mask``.

    Args:
        mask: (H, W) array of any dtype (bool, int, float); non-zero = set.

    Returns:
        ``(slice(top, bottom), slice(left, right))`` with exclusive ends, or None when nothing is set.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)
