from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.refinement.compositing import (
    FEATHER_DIFFUSE,
    FEATHER_WARP,
    FeatherSettings,
    composite,
    feather_mask,
    mask_overlay,
)

EDGE = 100  # first column outside the half-plane masks below


def _left_half_plane(height: int = 80, width: int = 200) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[:, :EDGE] = True
    return mask


def _expected_outside_ramp(settings: FeatherSettings, offsets: np.ndarray) -> np.ndarray:
    """Formula of M = B + (1 − B)·box(dilate(B)) for a left half-plane, at ``offsets`` px right of its edge.

    With OpenCV's centred anchor, ones(k, k) grows a left half-plane by k // 2 columns; a box of odd side s counts the
    dilated columns in [x − s // 2, x + s // 2].
    """
    grown_to = settings.dilate_px // 2  # dilated columns reach EDGE + grown_to − 1
    half_window = settings.blur_px // 2
    counts = np.clip(grown_to + half_window - offsets, 0, settings.blur_px)
    return counts / settings.blur_px


@pytest.mark.parametrize(
    ("settings", "edge_value_255", "zero_from"),
    [(FEATHER_DIFFUSE, 233, 32), (FEATHER_WARP, 194, 19)],  # METHOD.md §6 measured profiles
)
def test_feather_profile_matches_formula_and_measured_ramp(settings, edge_value_255, zero_from):
    binary = _left_half_plane()
    soft = feather_mask(binary, dilate_px=settings.dilate_px, blur_px=settings.blur_px)
    assert soft.dtype == np.float32
    assert soft.shape == binary.shape
    assert np.all(soft[binary] == 1.0)  # exactly 1 inside
    offsets = np.arange(0, 60)
    profile = soft[40, EDGE + offsets]
    np.testing.assert_allclose(profile, _expected_outside_ramp(settings, offsets), atol=1e-6)
    # The official figures: ≈233/255 (diffuse) or ≈194/255 (warp) at the edge, then linear down to 0.
    assert abs(profile[0] * 255 - edge_value_255) <= 1
    assert profile[zero_from - 1] > 0
    assert np.all(profile[zero_from:] == 0.0)
    assert np.all(np.diff(profile) <= 0)  # monotone ramp
    steps = -np.diff(profile[: zero_from - 1])
    np.testing.assert_allclose(steps, 1 / settings.blur_px, atol=1e-6)  # linear
    assert np.all(soft[:, EDGE:] < 1.0)  # the whole transition lies outside the mask


def test_feather_is_bounded_and_exactly_zero_far_away():
    rng = np.random.default_rng(0)
    binary = np.zeros((300, 300), bool)
    binary[20:60, 30:90] = rng.random((40, 60)) > 0.3  # ragged blob near the corner
    before = binary.copy()
    soft = feather_mask(binary, dilate_px=30, blur_px=35)
    assert np.array_equal(binary, before)  # input not mutated
    assert soft.min() >= 0.0
    assert soft.max() <= 1.0
    assert np.all(soft[binary] == 1.0)
    assert np.all(soft[150:, :] == 0.0)  # far from the blob: exactly zero, no float drift
    assert np.all(soft[:, 150:] == 0.0)
    assert soft[60 + 10, 60] > 0.0  # but the ramp reaches below the blob


def test_feather_of_empty_mask_is_zero():
    soft = feather_mask(np.zeros((32, 48), bool), dilate_px=15, blur_px=25)
    assert soft.shape == (32, 48)
    assert not soft.any()


@pytest.mark.parametrize(
    "binary",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.float32), np.zeros((10, 10, 1), bool), np.zeros(10, bool)],
)
def test_feather_rejects_non_bool_or_wrong_rank(binary):
    with pytest.raises(ValueError, match="bool"):
        feather_mask(binary, dilate_px=15, blur_px=25)


@pytest.mark.parametrize(("dilate_px", "blur_px"), [(0, 25), (15, 0), (15.0, 25), (True, 25), (-3, 25)])
def test_feather_rejects_bad_kernel_sizes(dilate_px, blur_px):
    with pytest.raises(ValueError, match="positive integer"):
        feather_mask(np.zeros((10, 10), bool), dilate_px=dilate_px, blur_px=blur_px)


def test_feather_presets_are_the_official_values_and_frozen():
    assert (FEATHER_DIFFUSE.dilate_px, FEATHER_DIFFUSE.blur_px) == (30, 35)
    assert (FEATHER_WARP.dilate_px, FEATHER_WARP.blur_px) == (15, 25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        FEATHER_WARP.dilate_px = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="blur_px"):
        FeatherSettings(dilate_px=3, blur_px=0)


def _images(shape=(64, 80, 3), seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)


def test_composite_is_exact_outside_and_inside_and_blends_between():
    base, overlay = _images()
    binary = np.zeros(base.shape[:2], bool)
    binary[20:40, 25:50] = True
    mask = feather_mask(binary, dilate_px=9, blur_px=11)
    base_before, overlay_before = base.copy(), overlay.copy()
    out = composite(base, overlay, mask)
    assert out.dtype == np.uint8
    assert out.shape == base.shape
    assert np.array_equal(base, base_before)
    assert np.array_equal(overlay, overlay_before)
    outside, inside = mask == 0, mask == 1
    assert outside.any()
    assert inside.any()
    assert np.array_equal(out[outside], base[outside])  # bit-exact
    assert np.array_equal(out[inside], overlay[inside])
    ramp = (mask > 0) & (mask < 1)
    assert ramp.any()
    weight = mask[ramp][:, None].astype(np.float64)
    expected = base[ramp] * (1 - weight) + overlay[ramp] * weight
    assert np.max(np.abs(out[ramp].astype(np.float64) - expected)) <= 0.5 + 1e-3  # rounded, not truncated


def test_composite_tiny_weights_do_not_touch_base_and_grey_images_work():
    base, overlay = _images((16, 16))
    mask = np.zeros((16, 16), np.float32)
    mask[:8] = 1e-7
    mask[8:] = 1.0
    out = composite(base, overlay, mask)
    assert np.array_equal(out[:8], base[:8])
    assert np.array_equal(out[8:], overlay[8:])
    assert out.shape == (16, 16)


def test_composite_accepts_float64_masks():
    base, overlay = _images((8, 8, 3))
    out = composite(base, overlay, np.full((8, 8), 0.5))
    expected = np.rint((base.astype(np.float64) + overlay) / 2)
    assert np.max(np.abs(out - expected)) <= 1


@pytest.mark.parametrize(
    ("base_shape", "overlay_shape", "mask", "match"),
    [
        ((8, 8, 3), (8, 9, 3), np.zeros((8, 8), np.float32), "overlay shape"),
        ((8, 8, 3), (8, 8, 3), np.zeros((8, 9), np.float32), "mask shape"),
        ((8, 8, 3), (8, 8, 3), np.zeros((8, 8, 1), np.float32), r"\(H, W\) float"),
        ((8, 8, 3), (8, 8, 3), np.zeros((8, 8), np.uint8), r"\(H, W\) float"),
        ((8, 8, 3), (8, 8, 3), np.full((8, 8), 1.5, np.float32), r"\[0, 1\]"),
        ((8, 8, 3), (8, 8, 3), np.full((8, 8), -0.1, np.float32), r"\[0, 1\]"),
        ((8, 8, 3), (8, 8, 3), np.full((8, 8), np.nan, np.float32), "finite"),
    ],
)
def test_composite_rejects_bad_shapes_and_masks(base_shape, overlay_shape, mask, match):
    with pytest.raises(ValueError, match=match):
        composite(np.zeros(base_shape, np.uint8), np.zeros(overlay_shape, np.uint8), mask)


def test_composite_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        composite(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32))


def test_mask_overlay_tints_only_the_mask():
    image, _ = _images((32, 32, 3))
    binary = np.zeros((32, 32), bool)
    binary[8:16, 8:16] = True
    out = mask_overlay(image, binary, (255, 0, 0), opacity=1.0)
    assert out.dtype == np.uint8
    assert np.array_equal(out[~binary], image[~binary])
    assert np.all(out[binary] == (255, 0, 0))
    half = mask_overlay(image, binary.astype(np.float32), (0, 0, 0), opacity=0.5)
    assert np.max(np.abs(half[binary].astype(int) - np.rint(image[binary] / 2))) <= 1


@pytest.mark.parametrize(("colour", "opacity"), [((256, 0, 0), 0.5), ((0, 0), 0.5), ((0, 0, 0), 1.5)])
def test_mask_overlay_rejects_bad_colour_or_opacity(colour, opacity):
    with pytest.raises(ValueError, match=r"colour|opacity"):
        mask_overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), bool), colour, opacity=opacity)
