from __future__ import annotations

import dataclasses
import re
import time

import numpy as np
import pytest
from scipy.spatial import Delaunay

from pipeline.refinement.neck_mask import NECK
from pipeline.refinement.warp import (
    WarpSettings,
    _triangle_owner,
    face_and_neck_masks,
    jaw_band_rows,
    seed_points,
    warp_edited_jaw,
)

SIZE = 256
NARROWING = 5  # the edited jaw is 5 px narrower on each side
BAND_TOP, BAND_BOTTOM, CHIN_Y = 100, 158, 175  # max(y0, y16), min(y7, y10), y8
FACE_LEFT, FACE_RIGHT = 70, 186  # original face columns (inclusive)
NECK_LEFT, NECK_RIGHT = 100, 156


def _landmarks(scale: float = 1.0) -> np.ndarray:
    landmarks = np.full((68, 2), 128.0)
    landmarks[0], landmarks[16] = (60, BAND_TOP - 4), (196, BAND_TOP)  # the lower jaw end sets the band top
    landmarks[7], landmarks[10] = (110, BAND_BOTTOM + 2), (146, BAND_BOTTOM)  # the higher of 7/10 sets its bottom
    landmarks[8] = (128, CHIN_Y)
    return landmarks * scale


def _masks(scale: int = 1) -> dict[str, np.ndarray]:
    size = SIZE * scale
    original_face = np.zeros((size, size), bool)
    original_face[40 * scale : 170 * scale, FACE_LEFT * scale : FACE_RIGHT * scale + 1] = True
    edited_face = np.zeros_like(original_face)
    left, right = (FACE_LEFT + NARROWING) * scale, (FACE_RIGHT - NARROWING) * scale
    edited_face[40 * scale : 170 * scale, left : right + 1] = True
    neck = np.zeros_like(original_face)
    neck[150 * scale :, NECK_LEFT * scale : NECK_RIGHT * scale + 1] = True  # rows above the chin get cleared
    return {"original_face": original_face, "edited_face": edited_face, "original_neck": neck, "edited_neck": neck}


def _coordinate_image(size: int = SIZE) -> np.ndarray:
    """R = x, G = y: every output pixel tells where in the edited render it was sampled from."""
    ys, xs = np.mgrid[:size, :size]
    return np.stack([xs, ys, (xs + ys) % 256], axis=-1).astype(np.uint8)


def test_jaw_points_move_as_specified():
    edited, masks, landmarks = _coordinate_image(), _masks(), _landmarks()
    before = edited.copy()
    result = warp_edited_jaw(edited, landmarks=landmarks, **masks)
    assert result.warped
    assert result.reason is None
    assert np.array_equal(edited, before)
    assert result.image.dtype == np.uint8
    assert result.image.shape == edited.shape
    seeds = seed_points(SIZE, SIZE)
    num_seeds = len(seeds)
    assert num_seeds == 27
    for points in (result.original_points, result.source_points, result.target_points):
        assert np.array_equal(points[:num_seeds], seeds)  # seeds never move
    original = result.original_points[num_seeds:]
    source = result.source_points[num_seeds:]
    target = result.target_points[num_seeds:]
    assert original.shape == (20, 2)
    # Rows: linspace(top, bottom, 6)[:-1] over the shared rows; face rows in the band, neck rows from the chin down.
    face_rows = np.linspace(BAND_TOP, BAND_BOTTOM - 1, 6)[:-1].astype(int)
    neck_rows = np.linspace(CHIN_Y, SIZE - 1, 6)[:-1].astype(int)
    face_left, neck_left, neck_right, face_right = original[:5], original[5:10], original[10:15], original[15:]
    assert np.array_equal(face_left, np.c_[np.full(5, FACE_LEFT), face_rows[::-1]])  # left side listed bottom-up
    assert np.array_equal(face_right, np.c_[np.full(5, FACE_RIGHT), face_rows])  # right side top-down
    assert np.array_equal(neck_left, np.c_[np.full(5, NECK_LEFT), neck_rows[::-1]])
    assert np.array_equal(neck_right, np.c_[np.full(5, NECK_RIGHT), neck_rows])
    # Δ = edited − original = +5 on the left, −5 on the right: the source is p1 + 1.2Δ, the target p1 + 0.6Δ.
    delta = np.zeros((20, 2))
    delta[:5, 0], delta[15:, 0] = NARROWING, -NARROWING
    np.testing.assert_allclose(source, original + 1.2 * delta)
    np.testing.assert_allclose(target, original + 0.6 * delta)
    # Neck anchors do not move.
    assert np.array_equal(source[5:15], original[5:15])
    assert np.array_equal(target[5:15], original[5:15])
    # Edited content at p1 + 1.2Δ lands at p1 + 0.6Δ.
    for (x, y), (source_x, source_y) in zip(target.astype(int), source, strict=True):
        assert tuple(result.image[y, x, :2]) == (source_x, source_y)


def test_far_pixels_are_copied_exactly_and_the_jaw_region_moves():
    edited, masks, landmarks = _coordinate_image(), _masks(), _landmarks()
    result = warp_edited_jaw(edited, landmarks=landmarks, **masks)
    changed = np.any(result.image != edited, axis=2)
    assert changed.any()
    assert not changed[:32].any()  # the top of the image: triangles of seeds only
    assert np.array_equal(result.image[10, 10], edited[10, 10])
    assert np.array_equal(result.image[250, 128], edited[250, 128])
    rows, cols = np.nonzero(changed)
    inner, outer = SIZE // 8, 7 * SIZE // 8  # the seed grid around the jaw holds everything outside it still
    assert inner <= rows.min() and rows.max() <= outer
    assert inner <= cols.min() and cols.max() <= outer
    # On a sampled band row the edited jaw side is pulled outward: R (source x) at the target is 3 px larger.
    row = int(result.target_points[27 + 2, 1])
    assert result.image[row, FACE_LEFT + 3, 0] == FACE_LEFT + 6


def test_no_difference_means_no_change():
    edited, masks, landmarks = _coordinate_image(), _masks(), _landmarks()
    masks["edited_face"] = masks["original_face"]
    result = warp_edited_jaw(edited, landmarks=landmarks, **masks)
    assert result.warped
    assert np.array_equal(result.image, edited)


def test_settings_change_the_displacement():
    edited, masks, landmarks = _coordinate_image(), _masks(), _landmarks()
    settings = WarpSettings(rows=3, exaggeration=1.0, destination_weight=1.0)
    result = warp_edited_jaw(edited, landmarks=landmarks, settings=settings, **masks)
    assert result.original_points.shape == (27 + 12, 2)
    np.testing.assert_allclose(result.target_points, result.source_points)  # full move back onto P2
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.rows = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="rows"):
        WarpSettings(rows=0)


@pytest.mark.parametrize(
    ("emptied", "match"),
    [
        ("edited_face", "face .* edited image is empty"),
        ("original_face", "face .* original image is empty"),
        ("edited_neck", "neck .* edited image is empty"),
        ("original_neck", "neck .* original image is empty"),
    ],
)
def test_empty_masks_fall_back_to_the_unwarped_render(emptied, match):
    edited, masks, landmarks = _coordinate_image(), _masks(), _landmarks()
    masks[emptied] = np.zeros_like(masks[emptied])
    result = warp_edited_jaw(edited, landmarks=landmarks, **masks)
    assert not result.warped
    assert result.reason is not None
    assert len(result.triangles) == 0
    assert np.array_equal(result.image, edited)
    assert result.image is not edited
    assert re.search(match, result.reason)


def test_degenerate_band_and_split_masks_fall_back():
    edited, masks, landmarks = _coordinate_image(), _masks(), _landmarks()
    upside_down = landmarks.copy()
    upside_down[[0, 16], 1] = BAND_BOTTOM + 20  # jaw ends below the chin points: empty band
    result = warp_edited_jaw(edited, landmarks=upside_down, **masks)
    assert not result.warped
    assert "band" in result.reason
    neck_above_chin = landmarks.copy()
    neck_above_chin[8, 1] = SIZE  # every neck row is above the chin: cleared
    assert "neck" in warp_edited_jaw(edited, landmarks=neck_above_chin, **masks).reason
    split = dict(masks)
    split["edited_face"] = masks["edited_face"].copy()
    split["edited_face"][111] = False  # a hole exactly on a sampled row
    result = warp_edited_jaw(edited, landmarks=landmarks, **split)
    assert not result.warped
    assert "row" in result.reason


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"edited": np.zeros((SIZE, SIZE, 3), np.float32)}, "uint8"),
        ({"edited_face": np.zeros((SIZE, SIZE), np.uint8)}, "edited_face"),
        ({"original_neck": np.zeros((SIZE, SIZE + 1), bool)}, "original_neck"),
        ({"landmarks": np.zeros((5, 2))}, r"\(68, 2\)"),
    ],
)
def test_bad_inputs_raise(change, match):
    arguments = {"edited": _coordinate_image(), "landmarks": _landmarks(), **_masks()}
    arguments.update(change)
    with pytest.raises(ValueError, match=match):
        warp_edited_jaw(**arguments)


def test_seed_points_follow_the_official_pattern():
    seeds = seed_points(1024, 1024)
    # The official order: border clockwise from (0, 0), the centre point, then the row pairs and the column pairs.
    border = [(0, 0), (512, 0), (1023, 0), (1023, 512), (1023, 1023), (512, 1023), (0, 1023), (0, 512)]
    assert [tuple(p) for p in seeds[:9]] == [*border, (512, 256)]
    assert [tuple(p) for p in seeds[9:13]] == [(128, 128), (128, 896), (256, 128), (256, 896)]
    assert [tuple(p) for p in seeds[17:19]] == [(128, 256), (896, 256)]
    assert seeds.shape == (27, 2)
    assert len({tuple(p) for p in seeds}) == 27
    for corner in [(0, 0), (1023, 0), (0, 1023), (1023, 1023)]:
        assert corner in {tuple(p) for p in seeds}
    assert (512, 256) in {tuple(p) for p in seeds}
    assert {tuple(p) for p in seeds if p[1] == 128} == {(128, 128), (256, 128), (768, 128), (896, 128)}
    assert {p[1] for p in seeds if p[0] == 896} == {128, 256, 384, 512, 640, 768, 896}


def test_triangles_cover_every_pixel():
    rng = np.random.default_rng(3)
    points = np.vstack([seed_points(SIZE, SIZE), rng.uniform(40, 216, (20, 2))])
    triangles = Delaunay(points).simplices
    owner = _triangle_owner(points[triangles], (SIZE, SIZE))
    assert owner.min() >= 1  # no cracks between triangles, no pixel outside the triangulation


# --- The official integer rules at 1024², each derived by hand -------------------------------------------------------

BIG = 1024


def _big_landmarks(top_y: float = 400.0, bottom_y: float = 800.0, chin_y: float = 900.0) -> np.ndarray:
    """1024² landmarks; on the 512² grid y ↦ (y + 0.5)/2 − 0.5, so 400 → 199.75, 800 → 399.75, 900 → 449.75."""
    landmarks = np.full((68, 2), 512.0)
    landmarks[0], landmarks[16] = (250, top_y), (774, top_y - 2)  # max(y0, y16) = top_y
    landmarks[7], landmarks[10] = (450, bottom_y + 2), (574, bottom_y)  # min(y7, y10) = bottom_y
    landmarks[8] = (512, chin_y)
    return landmarks


def test_band_and_chin_rows_are_whole_512_rows_up_sampled():
    band, chin_row = jaw_band_rows(_big_landmarks(), BIG)
    # a = int(199.75) = 199, b = int(399.75) = 399: rows 2a+1 … 2b−2 = 399 … 796 are fully covered after the 2×
    # bilinear up-sampling; the chin row is 2·int(449.75) = 898.
    assert np.array_equal(np.flatnonzero(band), np.arange(399, 797))
    assert chin_row == 898
    # At the frame: a = int(−0.15) = 0 keeps row 0 (the clamped border); b = int(514.75) ≥ 512 keeps the last row.
    band, chin_row = jaw_band_rows(_big_landmarks(top_y=0.2, bottom_y=1030.0, chin_y=1040.0), BIG)
    assert band.all()
    assert chin_row == 2 * int((1040.0 + 0.5) / 2 - 0.5) == 1038  # below the frame: every neck row is cleared


def test_control_points_use_whole_512_rows_and_truncated_coordinates():
    face = np.zeros((BIG, BIG), bool)
    face[300:851, 300:701] = True  # original jaw sides at x = 300 and 700
    edited_face = np.zeros_like(face)
    edited_face[300:851, 312:689] = True  # edited 12 px narrower on each side
    neck = np.zeros_like(face)
    neck[850:, 400:601] = True
    edited = np.zeros((BIG, BIG, 3), np.uint8)
    masks = {"original_face": face, "edited_face": edited_face, "original_neck": neck, "edited_neck": neck}
    result = warp_edited_jaw(edited, landmarks=_big_landmarks(), **masks)
    assert result.warped
    original, source, target = (p[27:] for p in (result.original_points, result.source_points, result.target_points))
    # Face rows: uint32(linspace(399, 796, 6))[:-1]; neck rows: uint32(linspace(898, 1023, 6))[:-1].
    face_rows, neck_rows = np.array([399, 478, 557, 637, 716]), np.array([898, 923, 948, 973, 998])
    assert np.array_equal(original[:5, 1], face_rows[::-1]) and np.array_equal(original[15:, 1], face_rows)
    assert np.array_equal(original[5:10, 1], neck_rows[::-1]) and np.array_equal(original[10:15, 1], neck_rows)
    # Left: p2' = int(300 + 12·1.2) = int(314.4) = 314, P = int((300 + 314)/2) = 307.
    # Right: p2' = int(700 − 14.4) = 685, P = int((700 + 685)/2) = int(692.5) = 692.
    assert (original[:5, 0] == 300).all() and (source[:5, 0] == 314).all() and (target[:5, 0] == 307).all()
    assert (original[15:, 0] == 700).all() and (source[15:, 0] == 685).all() and (target[15:, 0] == 692).all()
    # Neck anchors: the edited neck sides, still.
    assert np.array_equal(source[5:15], original[5:15]) and np.array_equal(target[5:15], original[5:15])
    assert set(original[5:10, 0]) == {400} and set(original[10:15, 0]) == {600}


def test_warp_masks_come_from_the_512_grid_with_a_bilinear_fringe():
    labels = np.zeros((512, 512), np.uint8)
    labels[100, 200] = 1  # one skin pixel
    labels[300:302, 250] = NECK  # two neck pixels
    face, neck = face_and_neck_masks(labels, BIG)
    # Parser pixel r covers rows 2r−1 … 2r+2 at 1024² (its 2×2 block plus the fringe where it weighs 1/4).
    expected_face = np.zeros((BIG, BIG), bool)
    expected_face[199:203, 399:403] = True
    assert np.array_equal(face, expected_face)
    expected_neck = np.zeros((BIG, BIG), bool)
    expected_neck[599:605, 499:503] = True
    assert np.array_equal(neck, expected_neck)
    # The parser's 1024² nearest-neighbour label map (what the remover keeps) gives the same masks.
    labels_1024 = np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1)
    assert all(np.array_equal(a, b) for a, b in zip(face_and_neck_masks(labels_1024), (face, neck), strict=True))


def test_face_and_neck_masks_from_labels():
    labels = np.zeros((512, 512), np.uint8)
    labels[100:200, 100:200] = 1  # skin
    labels[120:130, 120:130] = 10  # nose
    labels[100:200, 90:100] = 7  # ear: not face
    labels[100:200, 200:210] = 17  # hair: not face
    labels[300:400, 150:250] = NECK
    face, neck = face_and_neck_masks(labels, 1024)
    assert face.shape == neck.shape == (1024, 1024)
    assert face[250, 250] and face[250, 245]  # skin and nose
    assert not face[300, 185] and not face[300, 415]  # ear and hair (a pixel away from the bilinear seam)
    assert neck[700, 400]
    assert not neck[250, 250]
    same_size = face_and_neck_masks(labels)
    assert np.array_equal(same_size[1], labels == NECK)
    with pytest.raises(ValueError, match="uint8"):
        face_and_neck_masks(labels.astype(np.int32))


def test_warp_is_fast_at_1024():
    scale = 4
    edited = np.ascontiguousarray(np.repeat(np.repeat(_coordinate_image(), scale, 0), scale, 1))
    masks, landmarks = _masks(scale), _landmarks(scale)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        result = warp_edited_jaw(edited, landmarks=landmarks, **masks)
        timings.append(time.perf_counter() - start)
    assert result.warped
    assert min(timings) < 0.5  # ≈ 0.03 s on an idle CPU core
