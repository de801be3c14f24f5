"""The page's own logic, fast: app.py's handlers over a small fake pipeline (no models, no server, no dlib).

What is checked here is what the page adds to the remover: its caches (detection per photo, prepared face per
``inversion_key``), the GPU call's estimate, the notes it shows beside the banner, the files it writes, its setting
checks and its API signatures. The slower end-to-end tests on stand-in weights are in test_app.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import pickle
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from page.cache import LruCache
from page.files import DEEP_LINKS_SUBDIR, ResultFolders, wipe_temp_dir
from page.inputs import NO_PHOTO_MESSAGE, data_url_bytes
from page.text import STAGE_PROGRESS, expired_link_js, score_markdown, stage_reporter
from pipeline import (
    DecodedImage,
    DoubleChinRemover,
    Face,
    FaceEdit,
    FaceSearch,
    InputImageError,
    PreparedFace,
    RemovalSettings,
    ScoreChange,
    decode_upload,
)
from pipeline.config import EXAMPLES_DIR
from pipeline.faces.align import align_face
from pipeline.refinement.compositing import composite
from pipeline.remover import STAGES

CROP = 64  # side of the fake aligned crop
MODEL_NOTE = "The face parser is unavailable (a note about the models, shown in the banner)."
EDIT_NOTE = "A note about this edit."


@dataclasses.dataclass(frozen=True, eq=False)
class FakeModels:
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    stand_in: bool = False
    notes: tuple[str, ...] = (MODEL_NOTE,)


def face_at(left: float, top: float, side: float) -> Face:
    """A face whose eyes and mouth sit where FFHQ alignment expects them inside a ``side``² box."""
    landmarks = np.tile([left + side / 2, top + side / 2], (68, 1))
    landmarks[36:42] = [left + 0.32 * side, top + 0.4 * side]  # left eye
    landmarks[42:48] = [left + 0.68 * side, top + 0.4 * side]  # right eye
    landmarks[48] = [left + 0.38 * side, top + 0.75 * side]  # mouth corners
    landmarks[54] = [left + 0.62 * side, top + 0.75 * side]
    return Face(landmarks=landmarks, bbox=np.array([left, top, left + side, top + side]))


class FakeRemover(DoubleChinRemover):
    """The remover's steps without networks: the "edit" inverts the lower half of a small aligned crop.

    ``finish`` and ``select_faces`` are the real ones, so paste-back and notes are the pipeline's.
    """

    def __init__(self, faces: list[Face]) -> None:
        super().__init__(FakeModels())  # type: ignore[arg-type]
        self.faces = faces
        self.calls: Counter[str] = Counter()

    def detect(self, image: np.ndarray) -> FaceSearch:
        self.calls["detect"] += 1
        return FaceSearch(self.faces)

    def prepare(self, image, face, settings, *, w_plus=None, on_stage=None, should_stop=None) -> PreparedFace:
        self.calls["prepare"] += 1
        aligned = align_face(image, face, CROP)
        code = np.zeros((1, 18, 512), np.float32) if w_plus is None else w_plus
        how = "user code" if w_plus is not None else "optimise" if settings.optimises_inversion else "encoder"
        landmarks = aligned.to_aligned(face.landmarks)
        return PreparedFace(aligned, landmarks, code, aligned.image, None, how, {"align": 0.0, "invert": 0.0})

    def edit(self, prepared, settings, *, on_stage=None, should_stop=None) -> FaceEdit:
        self.calls["edit"] += 1
        region = np.zeros((CROP, CROP), bool)
        region[CROP // 2 :] = True
        blend = region.astype(np.float32) * (prepared.aligned.inside_mask() > 0)
        edited = 255 - prepared.aligned.image
        refined = composite(prepared.aligned.image, edited, blend)
        code = prepared.w_plus + settings.strength
        score = ScoreChange(1.25, 1.25 + settings.strength, tuple(range(6)))
        return FaceEdit(prepared, code, edited, region, blend, refined, code, None, [EDIT_NOTE], {"edit": 0.0}, score)

    def reconstruct(self, prepared: PreparedFace, *, size: int | None = None) -> np.ndarray:
        return prepared.aligned.image  # the fake "reconstruction" is the crop itself (prepare sets it so)

    def sweep(self, edit, settings, frames, *, on_stage=None) -> tuple[np.ndarray, ...]:
        self.calls["sweep"] += 1
        return tuple((edit.refined + 40 * k).astype(np.uint8) for k in range(frames))  # distinct frames


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """app.py, imported without weights when no other test has imported it (its handlers get a fake remover)."""
    if "app" in sys.modules:
        yield sys.modules["app"]
        return
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("C2F_WEIGHTS_DIR", str(tmp_path_factory.mktemp("no_weights")))
        monkeypatch.setenv("C2F_DEVICE", "cpu")
        monkeypatch.setenv("C2F_ALLOW_DOWNLOAD", "0")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        module = importlib.import_module("app")
        try:
            yield module
        finally:
            sys.modules.pop("app", None)  # the stand-in tests import it again with their weights


@pytest.fixture(autouse=True)
def gradio_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    return tmp_path / "gradio"


def canvas(seed: int = 0, size: tuple[int, int] = (160, 120)) -> DecodedImage:
    """A random (height, width) photo, decoded as an upload would be."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return decode_upload(pixels)


def inputs(**changes: object) -> list[object]:
    """The handlers' inputs after the photo, in order: the page's defaults on a CPU with ``changes``."""
    values: dict[str, object] = {
        "strength": -5.0,
        "auto_strength": False,
        "method": "warp",
        "inversion": "encoder",
        "face_number": 1,
        "mix_layers": [],
        "inversion_steps": 50,
        "refine_steps": 50,
        "seed": 0,
        "w_plus_code": None,
        "all_faces": False,
        "boundary": "fine/all",
        "authors_codes": True,
    }
    values.update(changes)
    return [*values.values(), None]  # the progress tracker: none outside a Gradio event


def handlers(app: ModuleType, faces: list[Face] | None = None) -> tuple[object, FakeRemover]:
    remover = FakeRemover(faces or [face_at(40, 20, 80)])
    return app.RemovalApp(remover), remover


def test_a_new_strength_or_method_reuses_the_prepared_face_and_the_detection(app: ModuleType) -> None:
    page, remover = handlers(app)
    photo = canvas()
    (before, after), stages, downloads, first, _, _ = page.remove_double_chin(photo, *inputs())
    assert first["inversion_cached"] is False
    for changes in ({"strength": -2.0}, {"method": "diffuse"}, {"mix_layers": [7, 8]}):
        summary = page.apply_if_photo(photo, *inputs(**changes))[3]
        assert summary["inversion_cached"] is True, changes
    assert remover.calls == Counter(detect=1, prepare=1, edit=4)
    original, result = (np.asarray(Image.open(path)) for path in (before, after))
    np.testing.assert_array_equal(original, photo.image)
    assert result.shape == photo.image.shape and np.any(result != original)
    assert [Path(path).name for path in downloads] == ["result.png", "w_plus.npy", "settings.json"]
    assert json.loads(Path(downloads[2]).read_text(encoding="utf-8")) == first
    assert len(stages) == 5


def test_what_changes_the_code_prepares_the_face_again(app: ModuleType, tmp_path: Path) -> None:
    page, remover = handlers(app)
    photo = canvas()
    page.remove_double_chin(photo, *inputs())
    page.remove_double_chin(photo, *inputs(inversion="optimise", inversion_steps=20))
    page.remove_double_chin(photo, *inputs(inversion="optimise", inversion_steps=20, seed=1))
    page.remove_double_chin(photo, *inputs(inversion="optimise", inversion_steps=20, seed=1))  # cached
    code = tmp_path / "code.npy"
    np.save(code, np.full((1, 18, 512), 0.5, np.float32))
    page.remove_double_chin(photo, *inputs(w_plus_code=str(code)))
    page.remove_double_chin(canvas(seed=1), *inputs())  # another photo: detected and prepared again
    assert remover.calls["prepare"] == 5 and remover.calls["detect"] == 2


def test_the_notes_under_the_result_leave_the_models_notes_to_the_banner(app: ModuleType) -> None:
    page, _ = handlers(app, [face_at(10, 20, 70), face_at(90, 30, 60)])
    *_, summary, notes, _ = page.remove_double_chin(canvas(), *inputs())
    assert summary["notes"][0] == MODEL_NOTE and EDIT_NOTE in summary["notes"]
    assert MODEL_NOTE not in notes and EDIT_NOTE in notes
    assert "2 faces were found; face 1 (numbered from the largest) was edited." in notes
    assert app.FACE_CHOICE_HINT in notes
    assert "warning" not in summary and summary["stand_in_weights"] is False


def test_the_strength_sweep_writes_an_animation_from_the_cached_face(app: ModuleType) -> None:
    page, remover = handlers(app)
    photo = canvas()
    page.remove_double_chin(photo, *inputs())
    path = page.strength_sweep(photo, *inputs(strength=-3.0))
    with Image.open(path) as animation:
        assert animation.format == "WEBP" and animation.n_frames == 2 * app.SWEEP_FRAMES - 2  # there and back
    assert remover.calls["prepare"] == 1 and remover.calls["sweep"] == 1


def test_handlers_share_the_api_parameters(app: ModuleType) -> None:
    page, _ = handlers(app)
    names = list(inspect.signature(page.remove_double_chin).parameters)
    assert names[:2] == ["photo", "strength"] and names[-6:-4] == ["seed", "w_plus_code"]
    assert names[-4:] == ["all_faces", "boundary", "authors_codes", "progress"]  # new inputs go last
    for handler in (page.apply_if_photo, page.strength_sweep):
        assert list(inspect.signature(handler).parameters) == names


def test_without_a_photo_the_page_asks_for_one_or_changes_nothing(app: ModuleType) -> None:
    page, remover = handlers(app)
    with pytest.raises(gr.Error, match=NO_PHOTO_MESSAGE.split(" (")[0]):
        page.remove_double_chin(None, *inputs())
    assert page.apply_if_photo(None, *inputs()) == page.cleared("")
    assert not remover.calls


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mix_layers": list(range(18))}, "leaves nothing to edit"),
        ({"face_number": 3}, "there is no face number 3"),
        ({"strength": 4.0}, "strength must be between"),
    ],
)
def test_settings_the_pipeline_cannot_do_get_its_message(app: ModuleType, changes: dict, message: str) -> None:
    page, _ = handlers(app)
    with pytest.raises(gr.Error, match=message):
        page.remove_double_chin(canvas(), *inputs(**changes))


def test_step_counts_are_capped_on_this_device(app: ModuleType) -> None:
    page, _ = handlers(app)
    settings = page.settings_from((-5.0, False, "diffuse", "optimise", 1, None, 10_000, 10_000, 0))
    assert (settings.inversion_steps, settings.refine_steps) == (page.inversion_step_cap, page.refine_step_cap)
    assert settings.face_index == 0 and settings.mix_layers is None


def test_the_gpu_estimate_counts_only_the_work_the_gpu_call_does(app: ModuleType) -> None:
    image = canvas().image
    face = face_at(40, 20, 80)
    optimise = RemovalSettings(inversion="optimise", inversion_steps=200, method="diffuse", refine_steps=100)
    warp = dataclasses.replace(optimise, method="warp")
    prepared = FakeRemover([face]).prepare(image, face, warp)
    fresh = app.gpu_seconds(app.GpuJob(warp, face, image, None))
    cached = app.gpu_seconds(app.GpuJob(warp, face, None, prepared))
    assert fresh - cached == int(200 * app.GPU_SECONDS_PER_INVERSION_STEP)  # a cached inversion costs nothing
    code = np.zeros((1, 18, 512), np.float32)
    assert app.gpu_seconds(app.GpuJob(warp, face, image, None, user_code=code)) == cached
    diffuse = app.gpu_seconds(app.GpuJob(optimise, face, None, prepared))
    assert diffuse - cached == int(100 * app.GPU_SECONDS_PER_REFINE_STEP)
    sweep = app.gpu_seconds(app.GpuJob(warp, face, None, prepared, sweep_frames=6))
    assert sweep - cached == int(6 * app.GPU_SECONDS_PER_SWEEP_FRAME)
    job = app.GpuJob(warp, face, image, None, user_code=code)
    assert pickle.loads(pickle.dumps(job)).settings == warp  # ZeroGPU pickles it into its worker


def test_stage_reporter_names_every_pipeline_stage() -> None:
    shown: list[tuple[float | None, str]] = []

    class Progress:
        def __call__(self, fraction: float | None, desc: str) -> None:
            shown.append((fraction, desc))

    report = stage_reporter(Progress())  # type: ignore[arg-type]
    for stage in ("detect", "align", "invert", "edit", "refine_warp", "paste_back", "something_new"):
        report(stage)
    labels = [label for _, label in shown]
    assert labels[:3] == ["Finding faces", "Aligning the face", "Encoding the face into W+"]
    assert labels[-1] == "Something new"
    fractions = [fraction for fraction, _ in shown[:-1]]
    assert fractions == sorted(fractions)


def test_every_pipeline_stage_has_a_progress_label() -> None:
    assert set(STAGES) <= set(STAGE_PROGRESS), "a new stage needs its label in page/text.py"


def test_lru_cache_keeps_the_most_recently_used_entries() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_data_url_uploads_are_bounded_and_decoded() -> None:
    assert data_url_bytes("data:image/png;base64,aGVsbG8=") == b"hello"
    with pytest.raises(InputImageError, match="as a file"):
        data_url_bytes("data:image/png,plain")
    with pytest.raises(InputImageError, match="could not be read"):
        data_url_bytes("data:image/png;base64,!!!")


def test_every_face_edits_each_face_and_offers_each_code(app: ModuleType) -> None:
    page, remover = handlers(app, [face_at(10, 20, 70), face_at(90, 30, 60)])
    _, stages, downloads, summary, notes, score = page.remove_double_chin(canvas(), *inputs(all_faces=True))
    assert summary["faces_edited"] == [0, 1] and remover.calls["prepare"] == 2
    assert [Path(path).name for path in downloads] == [
        "result.png",
        "w_plus_face1.npy",
        "w_plus_face2.npy",
        "settings.json",
    ]
    assert len(stages) == 10 and stages[5][1].startswith("Face 2 · 1 ·")
    assert app.FACE_CHOICE_HINT not in notes
    assert f"Face 1: {EDIT_NOTE}" in notes and f"Face 2: {EDIT_NOTE}" in notes  # each face's notes say whose
    assert "Double-chin score (face 1): 1.2 → −3.8" in score and "(face 2)" in score
    with pytest.raises(gr.Error, match="describes one face"):
        code = Path(downloads[1])
        page.remove_double_chin(canvas(), *inputs(all_faces=True, w_plus_code=str(code)))


def test_the_score_readout_explains_the_sign(app: ModuleType) -> None:
    page, _ = handlers(app)
    *_, summary, _, score = page.remove_double_chin(canvas(), *inputs(strength=-5.0))
    assert "**Double-chin score: 1.2 → −3.8** (layers 0–5)" in score
    assert "positive = double-chin side, negative = no double chin" in score
    assert summary["faces"]["0"]["double_chin_score"]["after"] == -3.75


def test_an_example_photo_is_edited_from_the_authors_code_unless_switched_off(app: ModuleType) -> None:
    example = decode_upload(EXAMPLES_DIR / "00016.png")
    page, remover = handlers(app, [face_at(40, 20, 80)])
    seen: list[np.ndarray | None] = []
    prepare = remover.prepare

    def recording(image, face, settings, *, w_plus=None, **kwargs):
        seen.append(w_plus)
        return prepare(image, face, settings, w_plus=w_plus, **kwargs)

    remover.prepare = recording  # type: ignore[method-assign]
    _, stages, _, summary, notes, _ = page.remove_double_chin(example, *inputs())
    np.testing.assert_array_equal(seen[0], np.load(EXAMPLES_DIR / "codes" / "00016_wp.npy"))
    assert summary["faces"]["0"]["inversion"] == app.AUTHORS_CODE_INVERSION
    assert "authors' own W+ code" in notes and "(authors' code)" in stages[1][1]
    *_, summary, notes, _ = page.remove_double_chin(example, *inputs(authors_codes=False))
    assert seen[1] is None and summary["faces"]["0"]["inversion"] == "encoder" and "authors'" not in notes
    *_, summary, _, _ = page.remove_double_chin(canvas(), *inputs())  # not an example: the encoder
    assert seen[2] is None and summary["faces"]["0"]["inversion"] == "encoder"


def test_a_failed_run_clears_every_output(app: ModuleType) -> None:
    page, _ = handlers(app)
    cleared = page.failed()
    assert len(cleared) == app.OUTPUT_COUNT == len(page.remove_double_chin(canvas(), *inputs()))
    slider, stages, downloads, summary, notes, score = cleared
    assert (slider, stages, downloads, summary, score) == (None, [], None, None, "")
    assert "The last run failed" in notes


def test_results_say_when_their_files_expire(app: ModuleType) -> None:
    page, _ = handlers(app)
    summary = page.remove_double_chin(canvas(), *inputs())[3]
    expires = datetime.fromisoformat(summary["files_expire_at"])
    assert timedelta(minutes=29) < expires - datetime.now(UTC) <= timedelta(seconds=app.DELETE_CACHE[1])
    js = expired_link_js("**Expired**")
    assert "values[5]" in js and "files_expire_at" in js and '"**Expired**"' in js  # summary is the 6th value


def test_the_faces_preview_numbers_the_detected_faces(app: ModuleType) -> None:
    page, remover = handlers(app, [face_at(10, 20, 70), face_at(90, 30, 60)])
    photo = canvas()
    shown = page.show_faces(photo)
    assert shown["visible"] is True and shown["label"].startswith("2 faces found (1 = largest)")
    assert shown["value"].shape == photo.image.shape  # small photos keep their size
    assert not np.array_equal(shown["value"], photo.image)  # boxes drawn
    page.remove_double_chin(photo, *inputs())
    assert remover.calls["detect"] == 1  # the run reuses the preview's detection
    assert page.show_faces(None)["visible"] is False


def test_the_boundary_choice_reaches_the_settings(app: ModuleType) -> None:
    page, _ = handlers(app)
    controls = (-5.0, False, "warp", "encoder", 1, [], 0, 0, 0)
    settings = page.settings_from(controls, boundary="coarse/psi_0.8", all_faces=True)
    assert (settings.boundary, settings.boundary_variant, settings.all_faces) == ("coarse", "psi_0.8", True)
    with pytest.raises(gr.Error, match="automatic strength needs the fine/all"):
        page.remove_double_chin(canvas(), *inputs(auto_strength=True, boundary="coarse/psi_0.5"))


def test_share_links_are_swept_with_the_results_and_wiped_at_start(gradio_temp_dir: Path) -> None:
    folders = ResultFolders(max_age_s=60, interval_s=600)
    link = gradio_temp_dir / DEEP_LINKS_SUBDIR / "AbC123" / "state.json"
    fresh = gradio_temp_dir / DEEP_LINKS_SUBDIR / "fresh" / "state.json"
    for path in (link, fresh):
        path.parent.mkdir(parents=True)
        path.write_text("[]", encoding="utf-8")
    old = folders.new()  # a result folder
    for path in (link.parent, old):
        os.utime(path, (1, 1))  # long ago
    assert folders.sweep() == 2
    assert not link.parent.exists() and not old.exists() and fresh.exists()
    assert wipe_temp_dir(gradio_temp_dir) >= 1 and not (gradio_temp_dir / DEEP_LINKS_SUBDIR).exists()


def test_the_score_readout_names_the_automatic_strength_target_and_other_layers() -> None:
    auto = ScoreChange(2.0, -1.6, (0, 1, 2, 3, 4, 5), target=-1.6)
    text = score_markdown({0: auto}, stand_in=False)
    assert "**Double-chin score: 2.0 → −1.6** (layers 0–5; the automatic strength aimed for −1.6)" in text
    assert "stand-in" not in text
    scattered = score_markdown({0: ScoreChange(1.0, -4.0, (0, 2, 5))}, stand_in=True)
    assert "(layers 0, 2, 5)" in scattered and "the score means nothing here" in scattered
    assert score_markdown({}, stand_in=False) == ""
