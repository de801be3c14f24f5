"""Face finding, FFHQ alignment and paste-back on the 7 reference photos and on canvases built from them.

The reference photos (examples/*.png) are FFHQ-aligned 1024² crops, so re-aligning one must reproduce its own frame,
and a copy placed anywhere in a larger canvas (moved, scaled, rotated, cut by the border, next to another face) must be
found and framed the same way, with paste-back landing exactly on the original pixels.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.ndimage

from pipeline.config import ALIGNED_SIZE, EXAMPLES_DIR
from pipeline.errors import FaceTooSmallError, NoFaceError, WeightsError
from pipeline.faces.align import (
    AlignedFace,
    Face,
    FaceSearchConfig,
    FFHQAlignConfig,
    align_face,
    ffhq_quad,
    find_faces,
    paste_back,
    quad_to_affine,
    reflect_pad_with_blur,
)
from pipeline.faces.decode import decode_image
from pipeline.faces.landmarks import (
    SHAPE_PREDICTOR_SHA256,
    DetectionConfig,
    load_shape_predictor,
    plan_detection,
    shape_predictor_path,
)

EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES_DIR.glob("*.png"))
FRAMING_TOLERANCE = 0.025  # crop corners may move ≤ 2.5 % of the crop size (issue acceptance; measured 0.3–2 %)
MIN_PASTE_PSNR = 35.0  # dB inside the face quad for an unmodified crop pasted back (issue acceptance)
QUAD_EDGE_MARGIN = 3  # px: the warped mask fades over ~1 px at the quad outline; compare inside it


# --- helpers ---------------------------------------------------------------------------------------------------------


@cache
def example(name: str) -> np.ndarray:
    image = decode_image(EXAMPLES_DIR / f"{name}.png")
    image.flags.writeable = False  # any in-place change by the code under test raises
    return image


@cache
def reference_face(name: str) -> Face:
    return find_faces(example(name))[0]


@cache
def aligned_example(name: str) -> AlignedFace:
    return align_face(example(name), reference_face(name))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def quad_region(quad: np.ndarray, shape: tuple[int, int], border_band: int = 0) -> np.ndarray:
    """Pixels inside the quad (minus an outline margin) and at least ``border_band`` px from the image border."""
    region = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(region, np.round(quad * 16).astype(np.int32), 1, shift=4)
    region = cv2.erode(region, np.ones((2 * QUAD_EDGE_MARGIN + 1,) * 2, np.uint8)) > 0
    if border_band:
        region[:border_band] = region[-border_band:] = False
        region[:, :border_band] = region[:, -border_band:] = False
    return region


def recipe_blur_band(qsize: float) -> int:
    """Width of the image-border band that the recipe's pad blur reaches (pad/3 = 0.1·qsize) plus filter support."""
    return math.ceil(0.1 * qsize) + 8


def background(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth coloured clutter (no faces)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 200, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def place(canvas: np.ndarray, photo: np.ndarray, scale: float, angle: float, centre: tuple[float, float]):
    """Draw ``photo`` scaled/rotated about its centre onto a copy of ``canvas``.

    Returns the new canvas and the 2×3 map from photo pixel indices to canvas pixel indices.
    """
    height, width = photo.shape[:2]
    photo_centre = ((width - 1) / 2, (height - 1) / 2)
    to_canvas = cv2.getRotationMatrix2D(photo_centre, angle, scale)
    to_canvas[:, 2] += np.asarray(centre) - photo_centre
    source, source_to_canvas = photo, to_canvas
    if scale < 1:  # area-filter first so the warp does not alias
        small = round(width * scale)
        source = cv2.resize(photo, (small, small), interpolation=cv2.INTER_AREA)
        ratio = width / small
        small_to_photo = np.array([[ratio, 0, 0.5 * ratio - 0.5], [0, ratio, 0.5 * ratio - 0.5], [0, 0, 1]])
        source_to_canvas = (np.vstack([to_canvas, [0, 0, 1]]) @ small_to_photo)[:2]
    out = canvas.copy()
    cv2.warpAffine(
        source,
        source_to_canvas,
        (canvas.shape[1], canvas.shape[0]),
        dst=out,
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return out, to_canvas


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def framing_error(found: np.ndarray, expected: np.ndarray, qsize: float) -> float:
    return float(np.linalg.norm(found - expected, axis=1).max() / qsize)


# --- pure geometry ---------------------------------------------------------------------------------------------------


def synthetic_landmarks(centre: np.ndarray, qsize: float, angle_deg: float) -> np.ndarray:
    """Landmarks whose FFHQ quad is a square of side ``qsize`` centred at ``centre``, rotated by ``angle_deg``."""
    eye_half = qsize / 8  # half-width = max(2·|eye_to_eye|, 1.8·|eye_to_mouth|) = 4·eye_half = qsize / 2
    mouth_drop = 1.5 * eye_half  # 1.8 · 1.5 < 4, so the eye distance sets the size
    eyes = np.array([0.0, -0.1 * mouth_drop])  # crop centre = eye midpoint + 0.1·eye_to_mouth = origin
    points = np.zeros((68, 2))
    points[36:42] = eyes + np.array([-eye_half, 0.0])
    points[42:48] = eyes + np.array([eye_half, 0.0])
    points[48] = eyes + np.array([-eye_half / 2, mouth_drop])
    points[54] = eyes + np.array([eye_half / 2, mouth_drop])
    angle = math.radians(angle_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rotation.T + centre


def test_ffhq_quad_worked_example() -> None:
    # Eyes centred at (40, 50) and (60, 50), mouth corners at (45, 70) and (55, 70):
    # eye_to_eye = (20, 0), eye_to_mouth = (0, 20), x = (20 + 20, 0 − 0) → unit (1, 0) · max(2·20, 1.8·20) = (40, 0),
    # y = (0, 40), centre = (50, 50) + 0.1·(0, 20) = (50, 52).
    points = np.zeros((68, 2))
    points[36:42] = (40.0, 50.0)
    points[42:48] = (60.0, 50.0)
    points[48] = (45.0, 70.0)
    points[54] = (55.0, 70.0)
    quad, qsize = ffhq_quad(points)
    np.testing.assert_allclose(quad, [[10, 12], [10, 92], [90, 92], [90, 12]])
    assert qsize == pytest.approx(80.0)


def test_ffhq_quad_uses_mouth_when_face_is_long() -> None:
    points = np.zeros((68, 2))
    points[36:42] = (45.0, 50.0)
    points[42:48] = (55.0, 50.0)  # |eye_to_eye| = 10 → 2·10 = 20
    points[48] = (48.0, 80.0)
    points[54] = (52.0, 80.0)  # |eye_to_mouth| = 30 → 1.8·30 = 54 wins
    _, qsize = ffhq_quad(points)
    assert qsize == pytest.approx(108.0)


@pytest.mark.parametrize("angle", [-35.0, 0.0, 12.5, 90.0])
def test_ffhq_quad_is_a_square_that_turns_with_the_face(angle: float) -> None:
    centre = np.array([300.0, 200.0])
    quad, qsize = ffhq_quad(synthetic_landmarks(centre, 240.0, angle))
    assert qsize == pytest.approx(240.0)
    sides = np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)
    np.testing.assert_allclose(sides, 240.0)
    np.testing.assert_allclose(quad.mean(axis=0), centre, atol=1e-9)
    down = quad[1] - quad[0]  # upper-left → lower-left points down the face
    assert math.degrees(math.atan2(-down[0], down[1])) == pytest.approx(angle)


def test_ffhq_quad_rejects_bad_landmarks() -> None:
    with pytest.raises(ValueError, match="68"):
        ffhq_quad(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        ffhq_quad(np.zeros((68, 2)))


def test_quad_to_affine_maps_crop_corners_to_quad_corners() -> None:
    quad = np.array([[10.0, 20.0], [0.0, 120.0], [100.0, 130.0], [110.0, 30.0]])
    affine = quad_to_affine(quad, 64)
    corners = np.array([[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]])
    np.testing.assert_allclose(apply_affine(affine, corners), quad, atol=1e-12)


def test_config_defaults_are_the_recipe() -> None:
    config = FFHQAlignConfig()
    assert (config.eye_to_eye_scale, config.eye_to_mouth_scale, config.center_shift) == (2.0, 1.8, 0.1)
    assert config.supersampling * ALIGNED_SIZE == 4096
    assert (config.border_fraction, config.pad_fraction, config.blur_fraction) == (0.1, 0.3, 0.02)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.center_shift = 0.2  # type: ignore[misc]
    assert FaceSearchConfig().min_face_size == 80.0


def test_detection_plan_respects_the_pixel_budget() -> None:
    config = DetectionConfig()
    assert plan_detection(1024, 1024, config).upsample_times == 1  # FFHQ recipe setting for ≤ 1 MP
    assert plan_detection(1024, 1024, config).working_size == (1024, 1024)
    assert plan_detection(2000, 1500, config) == plan_detection(2000, 1500, config)
    assert plan_detection(2000, 1500, config).upsample_times == 0
    big = plan_detection(6000, 4000, config)
    width, height = big.working_size
    assert big.upsample_times == 0 and width * height <= config.pixel_budget
    assert width / height == pytest.approx(1.5, rel=1e-3)


# --- the affine is exact: analytic test image, no detector involved --------------------------------------------------


def analytic_image(width: int, height: int, period: float) -> tuple[np.ndarray, callable, callable]:
    """A smooth grey pattern with a closed form, so the crop can be compared with the truth at any sub-pixel point."""

    def value(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 128 + 50 * np.sin(2 * np.pi * x / period + 0.3) * np.cos(2 * np.pi * y / (0.8 * period) - 0.2)

    def gradient(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wx, wy = 2 * np.pi / period, 2 * np.pi / (0.8 * period)
        gx = 50 * wx * np.cos(wx * x + 0.3) * np.cos(wy * y - 0.2)
        gy = -50 * wy * np.sin(wx * x + 0.3) * np.sin(wy * y - 0.2)
        return gx, gy

    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    grey = np.clip(np.rint(value(cols, rows)), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2), value, gradient


def measured_shift(aligned: AlignedFace, affine: np.ndarray, value, gradient, keep_from_border: float) -> np.ndarray:
    """Least-squares sub-pixel displacement (original px) between the crop and the truth sampled through ``affine``."""
    size = aligned.size
    grid_u, grid_v = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    source = apply_affine(affine, np.stack([grid_u.ravel(), grid_v.ravel()], axis=1))
    height, width = aligned.original_shape
    inside = (source[:, 0] > keep_from_border) & (source[:, 0] < width - keep_from_border)
    inside &= (source[:, 1] > keep_from_border) & (source[:, 1] < height - keep_from_border)
    gx, gy = gradient(source[:, 0], source[:, 1])
    truth = value(source[:, 0], source[:, 1])
    design = np.stack([gx, gy, np.ones_like(truth), truth], axis=1)[inside]
    observed = aligned.image[..., 0].astype(np.float64).ravel()[inside]
    coefficients, *_ = np.linalg.lstsq(design, observed, rcond=None)
    return coefficients[:2]


@pytest.mark.parametrize(
    ("case", "width", "height", "centre", "qsize", "angle", "size"),
    [
        ("inside", 600, 500, (300.0, 260.0), 300.0, 17.0, 256),
        ("crosses border (reflect-pad)", 600, 500, (520.0, 250.0), 300.0, 8.0, 256),
        ("shrink ×3", 2400, 2000, (1200.0, 1000.0), 1800.0, -11.0, 256),
    ],
)
def test_affine_matches_the_pixels_the_crop_shows(case, width, height, centre, qsize, angle, size) -> None:
    period = qsize / 3  # smooth enough that every resampling filter passes it, sharp enough to see 0.1 px
    image, value, gradient = analytic_image(width, height, period)
    aligned = align_face(image, synthetic_landmarks(np.array(centre), qsize, angle), size=size)
    band = recipe_blur_band(qsize)
    shift = measured_shift(aligned, aligned.affine, value, gradient, band)
    assert np.abs(shift).max() < 0.05, f"{case}: crop is displaced by {shift} px from its affine"
    naive_shift = measured_shift(aligned, quad_to_affine(aligned.quad, size), value, gradient, band)
    if case.startswith("shrink"):  # the recipe's own bookkeeping (quad / shrink) is off by (shrink − 1)/2 px
        assert np.abs(naive_shift).max() > 0.4
    else:
        np.testing.assert_allclose(aligned.affine, quad_to_affine(aligned.quad, size), atol=1e-9)


def recipe_padding(image: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """METHOD.md §2 "Pad", transcribed literally (scipy Gaussian, float32), as the parity reference."""
    left, top, right, bottom = pad
    img = np.pad(image.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    height, width = img.shape[:2]
    y = np.arange(height, dtype=np.float32)[:, None, None]
    x = np.arange(width, dtype=np.float32)[None, :, None]
    ramp = np.maximum(
        1 - np.minimum(x / left, (width - 1 - x) / right), 1 - np.minimum(y / top, (height - 1 - y) / bottom)
    )
    sigma = 0.02 * qsize
    img += (scipy.ndimage.gaussian_filter(img, [sigma, sigma, 0]) - img) * np.clip(3 * ramp + 1, 0, 1)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(ramp, 0, 1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("rows", "cols", "qsize"),
    [
        ((100, 900), (50, 1000), 1000.0),  # σ = 20: full-resolution blur
        ((0, 300), (0, 250), 400.0),  # σ = 8
        ((0, 40), (0, 30), 200.0),  # padding wider than the crop: repeated reflection
        ((0, 500), (200, 700), 1100.0),  # σ = 22: blur on a 2× smaller copy
    ],
)
def test_padding_matches_the_recipe_formula(rows, cols, qsize) -> None:
    crop = example(EXAMPLE_NAMES[1])[rows[0] : rows[1], cols[0] : cols[1]]
    pad = tuple(round(0.3 * qsize) + extra for extra in (0, 3, 7, 1))
    expected = recipe_padding(crop, pad, qsize)
    found = reflect_pad_with_blur(crop, pad, 0.02 * qsize)
    difference = np.abs(found.astype(int) - expected)
    assert found.shape == expected.shape
    assert difference.max() <= 1 and difference.mean() < 0.01


def test_align_validates_inputs_and_tiny_quads() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        align_face(image.astype(np.float32), synthetic_landmarks(np.array([100.0, 100.0]), 80.0, 0.0))
    with pytest.raises(FaceTooSmallError, match="too small"):
        align_face(image, synthetic_landmarks(np.array([100.0, 100.0]), 8.0, 0.0))


# --- the 7 reference photos ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_realigning_an_ffhq_photo_keeps_its_framing(name: str) -> None:
    faces = find_faces(example(name))
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float64
    np.testing.assert_array_equal(face.landmarks, reference_face(name).landmarks)  # deterministic
    aligned = aligned_example(name)
    assert aligned.image.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3) and aligned.image.dtype == np.uint8
    own_frame = np.array([[-0.5, -0.5], [-0.5, 1023.5], [1023.5, 1023.5], [1023.5, -0.5]])
    assert framing_error(aligned.quad, own_frame, ALIGNED_SIZE) <= FRAMING_TOLERANCE


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_paste_back_of_unmodified_crop_reproduces_the_photo(name: str) -> None:
    photo = example(name)
    aligned = aligned_example(name)
    full = aligned.paste_back(photo, aligned.image, np.ones((ALIGNED_SIZE, ALIGNED_SIZE), np.float32))
    _, qsize = ffhq_quad(reference_face(name).landmarks)
    # Near the photo's own border the recipe blurs real pixels into its reflect padding (the ramp reaches pad/3 =
    # 0.1·qsize inside the image), so those are not expected back; everything else is.
    region = quad_region(aligned.quad, photo.shape[:2], recipe_blur_band(qsize))
    assert region.mean() > 0.5
    assert psnr(full[region], photo[region]) >= MIN_PASTE_PSNR
    nothing = aligned.paste_back(photo, aligned.image, np.zeros((ALIGNED_SIZE, ALIGNED_SIZE), np.float32))
    np.testing.assert_array_equal(nothing, photo)


def test_paste_back_changes_only_where_the_mask_lands() -> None:
    photo = example(EXAMPLE_NAMES[0])
    aligned = aligned_example(EXAMPLE_NAMES[0])
    edited = aligned.image.copy()
    edited[600:700, 400:500] = (255, 0, 255)
    mask = np.zeros((ALIGNED_SIZE, ALIGNED_SIZE), np.float32)
    mask[600:700, 400:500] = 1.0
    result = aligned.paste_back(photo, edited, mask)
    changed = np.any(result != photo, axis=2)
    # Where the warped square lands, up to one pixel of interpolation around it.
    square = aligned.to_original(np.array([[399.5, 599.5], [399.5, 699.5], [499.5, 699.5], [499.5, 599.5]]))
    footprint = np.zeros(photo.shape[:2], np.uint8)
    cv2.fillConvexPoly(footprint, np.round(square * 16).astype(np.int32), 1, shift=4)
    allowed = cv2.dilate(footprint, np.ones((5, 5), np.uint8)) > 0
    assert changed.any() and not np.any(changed & ~allowed)
    rows, cols = np.nonzero(changed)
    np.testing.assert_allclose([cols.mean(), rows.mean()], square.mean(axis=0), atol=0.5)
    inner = cv2.erode(footprint, np.ones((7, 7), np.uint8)) > 0
    assert np.abs(result[inner].astype(int) - (255, 0, 255)).max() <= 2


@pytest.mark.parametrize("scale", [0.45, 1.0, 1.9])  # photo coarser than the crop (pre-filtered), equal, finer
def test_paste_back_warps_only_the_mask_support_and_equals_a_whole_photo_warp(
    scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restricting the warp to the mask's support changes no pixel: each pixel is sampled from absolute coordinates."""
    rng = np.random.default_rng(7)
    size = 256
    crop = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[150:210, 60:140] = rng.random((60, 80), dtype=np.float32)
    angle = 0.3
    affine = np.array(
        [
            [scale * math.cos(angle), -scale * math.sin(angle), 40.3],
            [scale * math.sin(angle), scale * math.cos(angle), 25.7],
        ]
    )
    photo = rng.integers(0, 256, (620, 640, 3), dtype=np.uint8)
    windowed = paste_back(photo, crop, mask, affine)
    monkeypatch.setattr("pipeline.faces.align.MASK_REACH_PX", 10**6)  # window = the whole crop footprint
    whole = paste_back(photo, crop, mask, affine)
    np.testing.assert_array_equal(windowed, whole)
    assert np.any(windowed != photo)


@pytest.mark.parametrize("seed", range(12))
def test_paste_box_holds_every_pixel_paste_back_changes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = 192
    scale, angle = rng.uniform(0.3, 2.5), rng.uniform(-0.6, 0.6)  # below 1: the crop is pre-filtered
    affine = np.array(
        [
            [scale * math.cos(angle), -scale * math.sin(angle), rng.uniform(-60, 120)],
            [scale * math.sin(angle), scale * math.cos(angle), rng.uniform(-60, 120)],
        ]
    )
    photo = rng.integers(0, 256, (400, 420, 3), dtype=np.uint8)
    aligned = AlignedFace(np.zeros((size, size, 3), np.uint8), np.zeros((4, 2)), affine, photo.shape[:2])
    mask = np.zeros((size, size), np.float32)
    top, left = rng.integers(0, size - 40, 2)
    mask[top : top + 40, left : left + 30] = rng.random((40, 30), dtype=np.float32)
    crop = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    changed = np.any(aligned.paste_back(photo, crop, mask) != photo, axis=2)
    box = aligned.paste_box(mask)
    if box is None:
        assert not changed.any()
        return
    outside = changed.copy()
    outside[box] = False
    assert not outside.any()
    assert aligned.paste_box(np.zeros_like(mask)) is None


def test_paste_back_validates_its_inputs_and_never_mutates_them() -> None:
    photo = example(EXAMPLE_NAMES[1])
    aligned = aligned_example(EXAMPLE_NAMES[1])
    crop = aligned.image.copy()
    crop.flags.writeable = False
    mask = np.full((ALIGNED_SIZE, ALIGNED_SIZE), 0.5, np.float32)
    mask.flags.writeable = False
    aligned.paste_back(photo, crop, mask)  # read-only inputs: any in-place write would raise
    with pytest.raises(ValueError, match="aligned from"):
        aligned.paste_back(photo[:-1], crop, mask)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aligned.paste_back(photo, crop, mask * 3)
    with pytest.raises(ValueError, match="mask"):
        aligned.paste_back(photo, crop, np.ones((512, 512), np.float32))
    with pytest.raises(ValueError, match="like the aligned crop"):
        aligned.paste_back(photo, crop[:512, :512], mask[:512, :512])
    with pytest.raises(ValueError, match="uint8"):
        paste_back(photo, crop.astype(np.float32), mask, aligned.affine)


def test_point_maps_are_inverse() -> None:
    aligned = aligned_example(EXAMPLE_NAMES[2])
    points = np.random.default_rng(0).uniform(0, ALIGNED_SIZE, (50, 2))
    np.testing.assert_allclose(aligned.to_aligned(aligned.to_original(points)), points, atol=1e-9)
    np.testing.assert_allclose(aligned.to_original(np.array([[-0.5, -0.5]]))[0], aligned.quad[0], atol=1e-6)


# --- the same face elsewhere in a larger photo -----------------------------------------------------------------------

CANVAS_CASES = {
    # name: (canvas height, width, scale, angle in degrees (counter-clockwise), centre of the photo in the canvas)
    "offset": (1600, 2000, 1.0, 0.0, (1100.0, 700.0)),
    "scaled x0.5": (1200, 1600, 0.5, 0.0, (700.0, 500.0)),
    "scaled x3": (3600, 4000, 3.0, 0.0, (2100.0, 1800.0)),
    "rotated +20": (1700, 1900, 1.0, 20.0, (950.0, 850.0)),
    "rotated -20": (1700, 1900, 1.0, -20.0, (950.0, 850.0)),
    "near the border": (1300, 1700, 1.0, 0.0, (1250.0, 400.0)),
}
CANVAS_PHOTO = EXAMPLE_NAMES[0]


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=pytest.mark.slow) if "x3" in case else case for case in CANVAS_CASES]
)
def test_face_in_a_larger_canvas_is_found_framed_and_pasted_in_place(case: str) -> None:
    height, width, scale, angle, centre = CANVAS_CASES[case]
    canvas, to_canvas = place(background(height, width, seed=1), example(CANVAS_PHOTO), scale, angle, centre)
    canvas.flags.writeable = False
    reference = reference_face(CANVAS_PHOTO)
    reference_quad, reference_qsize = ffhq_quad(reference.landmarks)

    faces = find_faces(canvas)
    assert len(faces) == 1
    aligned = align_face(canvas, faces[0])
    expected_quad = apply_affine(to_canvas, reference_quad)
    assert framing_error(aligned.quad, expected_quad, reference_qsize * scale) <= FRAMING_TOLERANCE
    # The landmarks themselves land where the reference's do (mean error ≲ 1.5 % of the crop, i.e. landmark noise).
    landmark_error = np.linalg.norm(faces[0].landmarks - apply_affine(to_canvas, reference.landmarks), axis=1)
    assert landmark_error.mean() <= FRAMING_TOLERANCE * reference_qsize * scale

    full = aligned.paste_back(canvas, aligned.image, np.ones((ALIGNED_SIZE, ALIGNED_SIZE), np.float32))
    region = quad_region(aligned.quad, canvas.shape[:2], recipe_blur_band(reference_qsize * scale))
    assert region.mean() > 0.02
    assert psnr(full[region], canvas[region]) >= MIN_PASTE_PSNR
    assert full.shape == canvas.shape
    nothing = aligned.paste_back(canvas, aligned.image, np.zeros((ALIGNED_SIZE, ALIGNED_SIZE), np.float32))
    np.testing.assert_array_equal(nothing, canvas)
    if case == "near the border":
        assert aligned.inside_mask().mean() < 0.95  # part of the crop is reflect-padding
    else:
        assert aligned.inside_mask().min() == 1.0


def test_two_faces_are_sorted_largest_first_and_both_framed() -> None:
    big_name, small_name = EXAMPLE_NAMES[0], EXAMPLE_NAMES[5]
    canvas, big_map = place(background(1400, 2400, seed=2), example(big_name), 1.0, 0.0, (800.0, 700.0))
    canvas, small_map = place(canvas, example(small_name), 0.45, 0.0, (1900.0, 600.0))
    faces = find_faces(canvas)
    assert len(faces) == 2
    assert faces[0].size > faces[1].size
    for face, name, to_canvas, scale in ((faces[0], big_name, big_map, 1.0), (faces[1], small_name, small_map, 0.45)):
        reference_quad, reference_qsize = ffhq_quad(reference_face(name).landmarks)
        quad, _ = ffhq_quad(face.landmarks)
        assert (
            framing_error(quad, apply_affine(to_canvas, reference_quad), reference_qsize * scale) <= FRAMING_TOLERANCE
        )
    assert faces[0].bbox[2] < 1400 < faces[1].bbox[0]  # the big face is the left one


# --- no face / small face --------------------------------------------------------------------------------------------


def test_landscape_without_a_face_raises_no_face() -> None:
    with pytest.raises(NoFaceError, match="No face was found"):
        find_faces(background(600, 800, seed=3))


def test_tiny_face_raises_face_too_small() -> None:
    canvas, _ = place(background(480, 640, seed=4), example(CANVAS_PHOTO), 0.11, 0.0, (320.0, 240.0))
    with pytest.raises(FaceTooSmallError, match="too small"):
        find_faces(canvas)


def test_face_smaller_than_the_configured_minimum_raises() -> None:
    with pytest.raises(FaceTooSmallError, match=r"at least 2000"):
        find_faces(example(EXAMPLE_NAMES[3]), FaceSearchConfig(min_face_size=2000.0))


# --- the dlib model file ---------------------------------------------------------------------------------------------


def test_model_file_is_found_without_importing_its_package() -> None:
    import sys

    path = shape_predictor_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.is_file()
    assert "face_recognition_models" not in sys.modules
    assert len(SHAPE_PREDICTOR_SHA256) == 64


def test_damaged_model_file_is_refused_before_dlib_reads_it(tmp_path: Path) -> None:
    broken = tmp_path / "shape_predictor_68_face_landmarks.dat"
    broken.write_bytes(b"BZh91AY&SY" + bytes(100))  # e.g. the still-compressed .bz2 download
    with pytest.raises(WeightsError, match="SHA-256"):
        load_shape_predictor(broken)
    with pytest.raises(WeightsError, match="does not exist"):
        load_shape_predictor(tmp_path / "missing.dat")
