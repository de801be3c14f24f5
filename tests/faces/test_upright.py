"""The face search that turns a sideways or upside-down photo: each angle, no cost upright, exact turns."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.config import EXAMPLES_DIR
from pipeline.errors import NoFaceError
from pipeline.faces import upright
from pipeline.faces.align import DEFAULT_SEARCH, Face, FaceSearchConfig, find_faces
from pipeline.faces.landmarks import DEFAULT_DETECTION
from pipeline.faces.upright import FaceSearch, find_faces_any_turn, turn_clockwise
from tests.photos import make_photo


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """An example face, shrunk (fast detection) and padded to a non-square canvas."""
    face = Image.open(EXAMPLES_DIR / "00016.png").convert("RGB").resize((300, 300), Image.Resampling.LANCZOS)
    return np.pad(np.asarray(face), ((10, 40), (60, 20), (0, 0)), mode="edge")


def test_turns_are_exact_and_clockwise() -> None:
    image = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(turn_clockwise(image, 90), [[3, 0], [4, 1], [5, 2]])  # top row becomes right column
    np.testing.assert_array_equal(turn_clockwise(image, 270), np.rot90(image))
    for degrees in (0, 90, 180, 270):
        search = FaceSearch([], degrees)
        np.testing.assert_array_equal(search.unturn(search.turn(image)), image)
    with pytest.raises(ValueError, match="quarter turns"):
        turn_clockwise(image, 45)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_turned_photo_is_found_after_turning_it_back(portrait: np.ndarray, degrees: int) -> None:
    shown = turn_clockwise(portrait, -degrees)  # the photo as it arrives: turned the other way
    with pytest.raises(NoFaceError):
        find_faces(shown)  # the plain detector misses it
    search = find_faces_any_turn(shown)
    assert search.turn_degrees == degrees
    assert f"turning the photo {degrees}° clockwise" in (search.note or "")
    np.testing.assert_array_equal(search.turn(shown), portrait)
    upright_faces = find_faces(portrait)
    np.testing.assert_allclose(search.faces[0].landmarks, upright_faces[0].landmarks)


def test_upright_photo_costs_one_search(portrait: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    def counting(image: np.ndarray, *args: object) -> object:
        calls.append(image.shape)
        return find_faces(image, *args)

    monkeypatch.setattr(upright, "find_faces", counting)
    search = find_faces_any_turn(portrait)
    assert search.turn_degrees == 0 and search.note is None and len(calls) == 1


def test_no_face_in_any_turn_keeps_the_upright_message(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[tuple[int, ...]] = []

    def nothing(image: np.ndarray, *args: object) -> object:
        tried.append(image.shape)
        raise NoFaceError("No face was found in this photo.")

    monkeypatch.setattr(upright, "find_faces", nothing)
    with pytest.raises(NoFaceError, match="No face was found"):
        find_faces_any_turn(np.zeros((100, 200, 3), np.uint8))
    assert tried == [(100, 200, 3), (200, 100, 3), (200, 100, 3), (100, 200, 3)]  # upright, 90°, 270°, 180°


def test_a_doubtful_upright_detection_is_checked_against_the_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """dlib sometimes scores an upside-down face just above its threshold; a confident turned face wins."""
    scores = {(100, 200): 0.03, (200, 100): 2.0}  # upright: doubtful; turned 90°: confident

    def scored(image: np.ndarray, *args: object) -> list[Face]:
        box = np.array([0.0, 0.0, 50.0, 50.0])
        return [Face(landmarks=np.zeros((68, 2)), bbox=box, score=scores[image.shape[:2]])]

    monkeypatch.setattr(upright, "find_faces", scored)
    assert find_faces_any_turn(np.zeros((100, 200, 3), np.uint8)).turn_degrees == 90
    scores[(100, 200)] = upright.CONFIDENT_SCORE
    assert find_faces_any_turn(np.zeros((100, 200, 3), np.uint8)).turn_degrees == 0


# --- the quick search for the largest face (issue 16) ---------------------------------------------------------------


def detector_budgets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the pixel budget of every detector scan."""
    budgets: list[int] = []
    original = upright.find_faces

    def recording(image: np.ndarray, config: FaceSearchConfig = DEFAULT_SEARCH, *args: object) -> list[Face]:
        budgets.append(config.detection.pixel_budget)
        return original(image, config, *args)

    monkeypatch.setattr(upright, "find_faces", recording)
    return budgets


def test_largest_face_search_of_a_large_photo_scans_only_the_coarse_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # 6 MP: a large face (about 540 px box) and a small one (about 115 px box, below what the 1 MP copy can see).
    photo = make_photo((3000, 2000), [("00016", 800, (100, 200)), ("00191", 170, (2500, 300))])
    full = find_faces_any_turn(photo)
    assert full.exhaustive and len(full.faces) == 2
    budgets = detector_budgets(monkeypatch)
    quick = find_faces_any_turn(photo, largest_only=True)
    assert budgets == [DEFAULT_DETECTION.coarse_pixel_budget], "one scan, on the coarse copy"
    assert not quick.exhaustive and quick.turn_degrees == 0
    assert len(quick.faces) == 1, "the small face is not looked for"
    # The same face, with landmarks from the full-resolution predictor (started from a coarser box).
    assert abs(quick.faces[0].size - full.faces[0].size) < 0.2 * full.faces[0].size  # dlib pyramid step: 6/5
    assert np.median(np.abs(quick.faces[0].landmarks - full.faces[0].landmarks)) < 6


def test_largest_face_search_falls_back_to_the_full_search(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a small face (about 115 px box at 6 MP): the coarse copy finds nothing, the full search finds it.
    photo = make_photo((3000, 2000), [("00191", 170, (1400, 900))])
    budgets = detector_budgets(monkeypatch)
    search = find_faces_any_turn(photo, largest_only=True)
    assert budgets == [DEFAULT_DETECTION.coarse_pixel_budget, DEFAULT_DETECTION.pixel_budget]
    assert search.exhaustive and len(search.faces) == 1


def test_largest_face_search_of_a_small_photo_is_the_full_search(
    portrait: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = detector_budgets(monkeypatch)
    search = find_faces_any_turn(portrait, largest_only=True)  # 0.1 MP: below the coarse budget
    assert budgets == [DEFAULT_DETECTION.pixel_budget] and search.exhaustive


def test_the_search_says_which_search_ran() -> None:
    assert FaceSearch([]).description == "every face"
    assert FaceSearch([], exhaustive=False).description == "large faces (quick search for the largest)"
    on_draft = FaceSearch([], exhaustive=False, on_draft=True)
    assert on_draft.description == "large faces (quick search for the largest, on the JPEG's reduced decode)"
