"""The quick search's head start: faces found on a JPEG's reduced decode while the full photo decodes."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.faces import upright
from pipeline.faces.decode import EXIF_ORIENTATION_TAG, decode_upload
from pipeline.faces.draft import DraftPlan, DraftSearch, detect_on_draft, plan_draft
from pipeline.faces.landmarks import DEFAULT_DETECTION, CoarseDetections
from pipeline.faces.upright import find_faces_any_turn, turn_clockwise
from tests.photos import make_photo

JPEG_QUALITY = 92


def jpeg(pixels: np.ndarray, orientation: int | None = None) -> bytes:
    image, exif = Image.fromarray(pixels), Image.Exif()
    if orientation is not None:
        exif[EXIF_ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """3 MP with one large face (≈ 540 px box) and one the coarse copy cannot see (≈ 115 px box)."""
    return make_photo((2400, 1300), [("00016", 800, (100, 200)), ("00191", 170, (2000, 300))])


def drafted(source: object) -> tuple[DraftPlan, CoarseDetections]:
    """The plan read from the header and the boxes found on the reduced decode (both must exist)."""
    plan = plan_draft(source)
    assert plan is not None
    found = detect_on_draft(source, plan)
    assert found is not None
    return plan, found


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def test_the_draft_finds_the_face_the_coarse_copy_finds(photo: np.ndarray) -> None:
    data = jpeg(photo)
    plan, found = drafted(data)
    decoded = decode_upload(data)
    assert plan.orientation == 1 and plan.full_size == found.full_size == (photo.shape[1], photo.shape[0])
    quick = find_faces_any_turn(decoded.image, largest_only=True)  # coarse copy made from the full decode
    assert len(found.boxes) == 1, "the small face is not seen on the coarse copy either"
    assert iou(found.boxes[0], quick.faces[0].bbox) > 0.85
    assert found.scores[0] > upright.CONFIDENT_SCORE


def test_a_path_and_bytes_give_the_same_boxes(photo: np.ndarray, tmp_path: Path) -> None:
    data = jpeg(photo)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    (_, from_path), (_, from_bytes) = drafted(str(path)), drafted(data)
    np.testing.assert_array_equal(from_path.boxes[0], from_bytes.boxes[0])


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_boxes_are_in_the_upright_photo(photo: np.ndarray, orientation: int) -> None:
    # Stored turned, with the EXIF tag that turns it upright again (6: the camera was turned 90° clockwise).
    stored = {3: turn_clockwise(photo, 180), 6: turn_clockwise(photo, -90), 8: turn_clockwise(photo, 90)}[orientation]
    data = jpeg(stored, orientation)
    plan, found = drafted(data)
    assert plan.orientation == decode_upload(data).exif_orientation == orientation
    _, upright_found = drafted(jpeg(photo))
    assert found.full_size == upright_found.full_size == (photo.shape[1], photo.shape[0])
    assert iou(found.boxes[0], upright_found.boxes[0]) > 0.85


def test_threads_share_the_detector_safely(photo: np.ndarray) -> None:
    # dlib's HOG detector is not safe for concurrent use: without its lock, threads scanning photos of different sizes
    # corrupt its state (wrong boxes) or the heap (the process aborts).
    photos = [jpeg(photo), jpeg(photo[:1100, :1800]), jpeg(np.ascontiguousarray(photo[:, ::-1]))]
    plans = [plan_draft(data) for data in photos]
    serial = [detect_on_draft(data, plan) for data, plan in zip(photos, plans, strict=True)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(detect_on_draft, photos * 8, plans * 8))
    for expected, result in zip(serial * 8, found, strict=True):
        assert expected is not None and result is not None
        np.testing.assert_array_equal(np.stack(result.boxes), np.stack(expected.boxes))


def test_what_is_not_drafted(photo: np.ndarray, tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.fromarray(photo).save(png, "PNG")
    assert plan_draft(png.getvalue()) is None, "not a JPEG"
    assert plan_draft(jpeg(photo[:500, :800])) is None, "0.4 MP: no coarse copy is needed"
    assert plan_draft(str(tmp_path / "missing.jpg")) is None
    assert plan_draft(photo) is None, "arrays are decoded already"
    truncated = jpeg(photo)[:2000]
    plan = plan_draft(truncated)  # its header is whole
    assert plan is not None and detect_on_draft(truncated, plan) is None, "the full decode reports it"


def test_the_search_uses_draft_boxes_only_for_the_photo_they_describe(photo: np.ndarray) -> None:
    data = jpeg(photo)
    decoded = decode_upload(data)
    with DraftSearch(data) as draft:
        pass
    coarse = draft.detections_for(decoded)
    assert coarse is not None
    search = find_faces_any_turn(decoded.image, largest_only=True, coarse=coarse)
    assert not search.exhaustive and len(search.faces) == 1
    np.testing.assert_array_equal(search.faces[0].bbox, coarse.boxes[0])
    # An orientation the full decode did not apply, or another size: the draft is not used.
    turned = decode_upload(jpeg(turn_clockwise(photo, -90), 6))
    assert draft.detections_for(turned) is None
    with DraftSearch(data, enabled=False) as off:
        pass
    assert off.detections_for(decoded) is None


def test_boxes_for_another_size_fall_back_to_the_coarse_scan(
    photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets: list[int] = []
    original = upright.find_faces

    def recording(image: np.ndarray, config: upright.FaceSearchConfig = upright.DEFAULT_SEARCH, *args: object):
        budgets.append(config.detection.pixel_budget)
        return original(image, config, *args)

    monkeypatch.setattr(upright, "find_faces", recording)
    wrong = CoarseDetections((photo.shape[1] + 8, photo.shape[0]), (np.array([0.0, 0.0, 50.0, 50.0]),), (3.0,))
    search = find_faces_any_turn(photo, largest_only=True, coarse=wrong)
    assert budgets == [DEFAULT_DETECTION.coarse_pixel_budget] and len(search.faces) == 1
    budgets.clear()
    no_face_here = CoarseDetections((photo.shape[1], photo.shape[0]), (), ())
    search = find_faces_any_turn(photo, largest_only=True, coarse=no_face_here)
    assert budgets == [DEFAULT_DETECTION.pixel_budget], "no face on the draft: the full search"
    assert search.exhaustive and len(search.faces) == 2
