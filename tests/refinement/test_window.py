"""The window of the edited render that the refinement reads."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.networks.stylegan2 import Window
from pipeline.refinement.window import bounding_window, paste_window

SIZE = 64


def mask_with(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[top:bottom, left:right] = True
    return mask


def test_bounding_box_of_masks_and_points_grown_by_the_margin() -> None:
    masks = [mask_with(30, 20, 40, 25), mask_with(35, 40, 50, 45), np.zeros((SIZE, SIZE), bool)]
    points = np.array([[10.2, 28.7], [12.0, 33.0], [np.nan, 1.0]])  # (x, y); non-finite points are ignored
    assert bounding_window(masks, points, margin=0, size=SIZE) == Window(28, 10, 50, 45)
    assert bounding_window(masks, points, margin=3, size=SIZE) == Window(25, 7, 53, 48)


def test_the_window_is_clipped_to_the_image() -> None:
    assert bounding_window([mask_with(0, 60, 64, 64)], None, margin=10, size=SIZE) == Window(0, 50, 64, 64)


def test_nothing_to_cover_gives_none() -> None:
    assert bounding_window([np.zeros((SIZE, SIZE), bool)], None, margin=5, size=SIZE) is None
    assert bounding_window([], np.zeros((0, 2)), margin=5, size=SIZE) is None


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="margin"):
        bounding_window([mask_with(1, 1, 2, 2)], None, margin=-1, size=SIZE)
    with pytest.raises(ValueError, match=r"masks must be \(64, 64\)"):
        bounding_window([np.zeros((8, 8), bool)], None, margin=0, size=SIZE)


def test_paste_window_replaces_only_the_window() -> None:
    background = np.zeros((SIZE, SIZE, 3), np.uint8)
    window = Window(5, 6, 9, 16)
    out = paste_window(background, np.full((4, 10, 3), 7, np.uint8), window)
    assert out is not background and not background.any()
    assert (out[5:9, 6:16] == 7).all() and out.sum() == 7 * 4 * 10 * 3
