"""Which part of the edited render the refinement reads: the window the remover renders at full resolution.

The edited render is used only where the feathered neck mask blends it in, and (for the warp) in the jaw band whose
contours the parser finds in it. Rendering the StyleGAN2 levels from 128² up on that window alone
(:meth:`pipeline.networks.stylegan2.Generator.synthesis_window`) saves most of a render (issue 16). The window is the
bounding box of what the caller says it reads (masks and points, e.g. the neck region and the jaw-line landmarks),
grown by a margin for the feathering and the warp's displacements; this module knows nothing of their rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.boxes import mask_box
from pipeline.networks.stylegan2 import Window

__all__ = ["bounding_window", "paste_window"]


def bounding_window(
    masks: Sequence[np.ndarray], points: np.ndarray | None, *, margin: int, size: int
) -> Window | None:
    """The smallest window holding every set pixel of ``masks`` and every point, grown by ``margin`` on each side.

    Args:
        masks: (size, size) bool masks (empty ones are ignored).
        points: (K, 2) float (x, y) pixel coordinates, or None.
        margin: pixels added on every side (before clipping to the image).
        size: side of the square image.

    Returns:
        The window clipped to the image, or None when there is nothing to cover.

    Raises:
        ValueError: if a mask is not (size, size) or ``margin`` is negative.
    """
    if margin < 0:
        raise ValueError(f"margin must be ≥ 0, got {margin}")
    rows: list[int] = []
    columns: list[int] = []
    for mask in masks:
        if mask.shape != (size, size):
            raise ValueError(f"masks must be ({size}, {size}), got {mask.shape}")
        box = mask_box(mask)
        if box is not None:
            rows += [box[0].start, box[0].stop]
            columns += [box[1].start, box[1].stop]
    if points is not None and len(points):
        finite = points[np.all(np.isfinite(points), axis=1)]
        if len(finite):
            rows += [int(np.floor(finite[:, 1].min())), int(np.ceil(finite[:, 1].max())) + 1]
            columns += [int(np.floor(finite[:, 0].min())), int(np.ceil(finite[:, 0].max())) + 1]
    if not rows:
        return None
    top, bottom = max(0, min(rows) - margin), min(size, max(rows) + margin)
    left, right = max(0, min(columns) - margin), min(size, max(columns) + margin)
    if top >= bottom or left >= right:
        return None
    return Window(top, left, bottom, right)


def paste_window(background: np.ndarray, window_pixels: np.ndarray, window: Window) -> np.ndarray:
    """A copy of ``background`` (H, W, C) with ``window_pixels`` (window.height, window.width, C) put at ``window``."""
    out = background.copy()
    out[window.top : window.bottom, window.left : window.right] = window_pixels
    return out
