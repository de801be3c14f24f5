"""The end-to-end remover with the stand-in weights: result contents, untouched pixels, settings, face choice."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import EXAMPLES_DIR
from pipeline.errors import PipelineError
from pipeline.faces import draft as draft_module
from pipeline.faces.align import Face
from pipeline.faces.decode import decode_upload
from pipeline.faces.landmarks import CoarseDetections
from pipeline.latent.editing import edit_latent, edit_latent_auto, load_boundary
from pipeline.networks.perceptual import VGGConfig, lpips_like_distance, perceptual_distance
from pipeline.networks.stylegan2 import Window
from pipeline.refinement.compositing import FEATHER_DIFFUSE, composite, feather_mask
from pipeline.refinement.diffuse import CPU_DIFFUSE
from pipeline.refinement.neck_mask import landmark_neck_mask
from pipeline.remover import (
    FACES_NOTE_QUICK,
    RECONSTRUCTION_PREVIEW_SIZE,
    STAGES,
    DoubleChinRemover,
    RemovalResult,
    cached_target_distance,
    diffuse_features,
)
from pipeline.settings import MIX_LAYERS_WARP, RemovalSettings, default_settings
from pipeline.weights.registry import REGISTRY
from pipeline.weights.stand_in import MARKER_FILENAME, STAND_IN_NOTE, random_vgg16_features
from tests.photos import make_photo
from tests.serving import WARP_SKIPPED

PHOTO_SIZE = (900, 760)  # (width, height) of the test photo: not square, not 1024, face off-centre
CROP = 1024
MIX_LAYERS_WARP_COMPLEMENT = tuple(range(6))  # the layers the warp edit changes (6–17 are restored)


def one_face_photo() -> np.ndarray:
    """00016 scaled to 700² and placed off-centre on a 900×760 canvas."""
    return make_photo(PHOTO_SIZE, [("00016", 700, (150, 40))])


def two_face_photo() -> np.ndarray:
    """00016 (larger) and 00191 side by side on an 820×460 canvas."""
    return make_photo((820, 460), [("00016", 420, (10, 20)), ("00191", 340, (460, 60))])


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return one_face_photo()


@pytest.fixture(scope="module")
def warp_stages() -> list[str]:
    return []


@pytest.fixture(scope="module")
def warp_result(remover: DoubleChinRemover, photo: np.ndarray, warp_stages: list[str]) -> RemovalResult:
    return remover(photo, RemovalSettings(method="warp"), on_stage=warp_stages.append)


def test_result_fields_and_shapes(warp_result: RemovalResult, warp_stages: list[str], photo: np.ndarray) -> None:
    result = warp_result
    assert result.image.shape == photo.shape and result.image.dtype == np.uint8
    assert np.array_equal(result.original, photo)
    assert result.stand_in and STAND_IN_NOTE in result.notes
    assert len(result.faces) == 1 and list(result.edits) == [0]
    edit = result.edits[0]
    prepared = edit.prepared
    assert prepared.aligned.image.shape == (CROP, CROP, 3)
    assert prepared.landmarks.shape == (68, 2) and prepared.landmarks.dtype == np.float64
    assert prepared.reconstruction is None  # not needed by the result: rendered on demand
    assert prepared.labels is not None and prepared.labels.shape == (CROP, CROP)
    assert prepared.inversion == "encoder"
    for code in (prepared.w_plus, edit.w_edited, edit.w_final):
        assert code.shape == (1, 18, 512) and code.dtype == np.float32 and np.isfinite(code).all()
    assert edit.edited.shape == (CROP, CROP, 3) and edit.edited.dtype == np.uint8
    assert edit.refined.shape == (CROP, CROP, 3) and edit.refined.dtype == np.uint8
    assert edit.neck_mask.shape == (CROP, CROP) and edit.neck_mask.dtype == bool and edit.neck_mask.any()
    assert edit.blend_mask.dtype == np.float32 and 0.0 <= edit.blend_mask.min() <= edit.blend_mask.max() <= 1.0
    assert np.array_equal(edit.w_final, edit.w_edited)  # warp keeps the edited code
    # The edit moves only the layers outside the warp's mixing range (0–5); 6–17 are the original rows.
    assert np.array_equal(edit.w_edited[:, list(MIX_LAYERS_WARP)], prepared.w_plus[:, list(MIX_LAYERS_WARP)])
    assert not np.array_equal(edit.w_edited[:, :6], prepared.w_plus[:, :6])
    stages = [stage for stage in STAGES if stage not in ("optimise", "reconstruct", "refine_diffuse", "sweep")]
    assert warp_stages == stages  # every stage of the fast path, each once, in the declared order (no reconstruction)
    assert set(stages) <= set(result.timings) and all(t >= 0 for t in result.timings.values())
    summary = result.summary()
    json.dumps(summary)  # JSON-ready
    assert summary["size"] == [PHOTO_SIZE[0], PHOTO_SIZE[1]]
    assert summary["faces"]["0"]["inversion"] == "encoder"
    assert summary["settings"]["method"] == "warp"


def test_pixels_outside_the_pasted_mask_are_untouched(warp_result: RemovalResult) -> None:
    result, edit = warp_result, warp_result.edits[0]
    # In aligned space the refined crop equals the aligned photo wherever the blend mask is 0.
    outside = edit.blend_mask == 0
    assert outside.any() and not outside.all()
    assert np.array_equal(edit.refined[outside], edit.prepared.aligned.image[outside])
    # In the photo: paste the mask's support as white onto black to see where the warped mask can be > 0. Every pixel
    # that changed must lie there; everything else is bit-identical to the input photo.
    support = (edit.blend_mask > 0).astype(np.float32)
    probe = edit.prepared.aligned.paste_back(
        np.zeros_like(result.original), np.full((CROP, CROP, 3), 255, np.uint8), support
    )
    reachable = probe.max(axis=2) > 0
    changed = np.any(result.image != result.original, axis=2)
    assert changed.any()
    assert not changed[~reachable].any()
    assert reachable.mean() < 0.5  # the edit is local: most of the photo cannot change


def test_auto_strength_path(remover: DoubleChinRemover, warp_result: RemovalResult) -> None:
    prepared = warp_result.edits[0].prepared
    settings = RemovalSettings(method="warp", auto_strength=True)
    edit = remover.edit(prepared, settings)
    expected, auto = edit_latent_auto(prepared.w_plus, load_boundary("fine", "all"), mix_layers=MIX_LAYERS_WARP)
    assert np.array_equal(edit.w_edited, expected)
    assert edit.auto_strength is not None
    assert edit.auto_strength.mean_strength == pytest.approx(auto.mean_strength)
    if auto.message:
        assert auto.message in edit.notes


def test_diffuse_edit_refines_the_code(remover: DoubleChinRemover, warp_result: RemovalResult) -> None:
    prepared = warp_result.edits[0].prepared
    edit = remover.edit(prepared, RemovalSettings(method="diffuse", refine_steps=2))
    region = edit.neck_mask
    expected_blend = feather_mask(region, dilate_px=FEATHER_DIFFUSE.dilate_px, blur_px=FEATHER_DIFFUSE.blur_px)
    inside = prepared.aligned.inside_mask() > 0
    assert np.array_equal(edit.blend_mask, np.where(inside, expected_blend, 0.0).astype(np.float32))
    assert not np.array_equal(edit.w_final, prepared.w_plus)  # optimised from the original code
    assert "refine_diffuse" in edit.timings
    outside = edit.blend_mask == 0
    assert np.array_equal(edit.refined[outside], prepared.aligned.image[outside])


def test_empty_neck_region_returns_the_crop_unchanged(remover: DoubleChinRemover, warp_result: RemovalResult) -> None:
    prepared = warp_result.edits[0].prepared
    background = dataclasses.replace(prepared, labels=np.zeros_like(prepared.labels))  # parser found only background
    edit = remover.edit(background, RemovalSettings(method="diffuse", refine_steps=50))
    assert not edit.neck_mask.any() and not edit.blend_mask.any()
    assert np.array_equal(edit.refined, prepared.aligned.image)
    assert np.array_equal(edit.w_final, prepared.w_plus)
    assert "refine_diffuse" not in edit.timings  # the 50 steps were not spent on nothing
    assert any("returned unchanged" in note for note in edit.notes)


def test_optimise_inversion_can_be_stopped(remover: DoubleChinRemover, warp_result: RemovalResult, photo) -> None:
    face = warp_result.faces[0]
    settings = RemovalSettings(inversion="optimise", inversion_steps=5)
    prepared = remover.prepare(photo, face, settings, should_stop=lambda: True)
    encoder_only = warp_result.edits[0].prepared
    assert prepared.inversion == "optimise"
    assert np.array_equal(prepared.w_plus, encoder_only.w_plus)  # stopped before the first step
    assert prepared.reconstruction.shape == (CROP, CROP, 3)  # the optimisation's own final render
    assert np.array_equal(prepared.reconstruction, remover.reconstruct(dataclasses.replace(encoder_only)))


def test_without_parser_the_landmark_mask_is_used(stand_in_weights_dir: Path, tmp_path: Path, photo) -> None:
    for key in ("e4e", "vgg16"):
        (tmp_path / REGISTRY[key].filename).symlink_to(stand_in_weights_dir / REGISTRY[key].filename)
    (tmp_path / MARKER_FILENAME).symlink_to(stand_in_weights_dir / MARKER_FILENAME)
    remover = DoubleChinRemover.from_pretrained(tmp_path, device="cpu", allow_download=False)
    assert remover.models.parser is None
    result = remover(photo, RemovalSettings(method="warp"))
    edit = result.edits[0]
    assert edit.prepared.labels is None
    expected = landmark_neck_mask(edit.prepared.aligned.image, edit.prepared.landmarks)
    expected &= edit.prepared.aligned.inside_mask() > 0
    assert np.array_equal(edit.neck_mask, expected)
    assert any("face parser is unavailable" in note for note in result.notes)
    assert any("needs the face parser" in note for note in edit.notes)
    assert "parse" not in result.timings


def dummy_faces(count: int) -> list[Face]:
    return [Face(landmarks=np.zeros((68, 2)), bbox=np.array([0.0, 0.0, 100.0 - i, 100.0 - i])) for i in range(count)]


def test_select_faces() -> None:
    select = DoubleChinRemover.select_faces
    assert select(dummy_faces(3), RemovalSettings()) == [0]
    assert select(dummy_faces(3), RemovalSettings(face_index=2)) == [2]
    assert select(dummy_faces(3), RemovalSettings(all_faces=True)) == [0, 1, 2]
    with pytest.raises(PipelineError, match=r"1 face large enough.*no face number 2.*between 1 and 1"):
        select(dummy_faces(1), RemovalSettings(face_index=1))
    with pytest.raises(PipelineError, match=r"3 faces .*no face number 5.*between 1 and 3"):
        select(dummy_faces(3), RemovalSettings(face_index=4))


def test_all_faces(remover: DoubleChinRemover) -> None:
    photo = two_face_photo()
    result = remover(photo, RemovalSettings(all_faces=True))
    assert len(result.faces) == 2 and sorted(result.edits) == [0, 1]
    assert result.faces[0].size > result.faces[1].size  # largest first
    left, right = np.any(result.image != photo, axis=2)[:, :440], np.any(result.image != photo, axis=2)[:, 440:]
    assert left.any() and right.any()  # both faces were edited and pasted back
    assert sorted(result.summary()["faces"]) == ["0", "1"]
    code = np.load(EXAMPLES_DIR / "codes" / "00016_wp.npy")
    with pytest.raises(PipelineError, match="one face"):
        remover(photo, RemovalSettings(all_faces=True), w_plus=code)


def test_the_largest_face_is_found_by_the_quick_search_and_the_summary_says_so(remover: DoubleChinRemover) -> None:
    # 3.8 MP: a large face and a small one that the quick search's 0.5 MP copy cannot see (issue 16).
    photo = make_photo((2400, 1600), [("00016", 900, (100, 100)), ("00191", 150, (2000, 300))])
    assert len(remover.detect(photo).faces) == 2  # the full search (the app's face preview, a chosen face number)
    quick = remover.detect(photo, largest_only=True)
    assert not quick.exhaustive and len(quick.faces) == 1
    result = remover(photo, RemovalSettings(method="warp"))
    summary = result.summary()
    assert summary["faces_found"] == 1 and summary["faces_edited"] == [0]
    assert summary["faces_search"].startswith("large faces")
    changed = np.any(result.image != photo, axis=2)
    assert changed[:, :1100].any() and not changed[:, 1100:].any(), "the large face (left) is the one edited"
    chosen = remover(photo, RemovalSettings(method="warp", face_index=0, strength=0.0)).summary()
    assert chosen["faces_search"] == "every face" and chosen["faces_found"] == 2, "a chosen face number searches all"
    two_large = make_photo((1600, 900), [("00016", 600, (50, 100)), ("00191", 500, (900, 150))])
    notes = remover(two_large, RemovalSettings(method="warp", strength=0.0)).notes
    assert FACES_NOTE_QUICK.format(count=2, number=1) in notes


def test_a_large_jpeg_is_searched_on_its_draft_while_it_decodes(
    remover: DoubleChinRemover, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = make_photo((2400, 1600), [("00016", 900, (100, 100)), ("00191", 150, (2000, 300))])
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(path, "JPEG", quality=92)
    drafts: list[CoarseDetections | None] = []
    original = draft_module.detect_on_draft

    def recording(*args: object) -> CoarseDetections | None:
        drafts.append(original(*args))
        return drafts[-1]

    monkeypatch.setattr(draft_module, "detect_on_draft", recording)
    result = remover(str(path), RemovalSettings(method="warp"))
    assert len(drafts) == 1 and drafts[0] is not None
    assert (
        result.summary()["faces_search"] == "large faces (quick search for the largest, on the JPEG's reduced decode)"
    )
    assert len(result.faces) == 1
    np.testing.assert_array_equal(result.faces[0].bbox, drafts[0].boxes[0])  # the draft's box was used
    as_pixels = remover(decode_upload(str(path)).image, RemovalSettings(method="warp", strength=0.0))
    assert as_pixels.summary()["faces_search"] == "large faces (quick search for the largest)"
    decoded = decode_upload(str(path))
    changed = np.any(result.image != decoded.image, axis=2)
    assert changed[:, :1100].any() and not changed[:, 1100:].any()
    remover(str(path), RemovalSettings(method="warp", face_index=0, strength=0.0))
    assert len(drafts) == 1, "a chosen face number runs the full search: no draft"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strength": 1.0}, "strength must be between"),
        ({"strength": -8.5}, "strength must be between"),
        ({"strength": float("nan")}, "strength must be between"),
        ({"method": "blur"}, "method must be one of"),
        ({"inversion": "magic"}, "inversion must be one of"),
        ({"boundary": "medium"}, "boundary must be"),
        ({"boundary": "coarse"}, "coarse boundary has the variants psi_0.5, psi_0.8"),
        ({"boundary_variant": "psi_0.3"}, "fine boundary has the variants"),
        ({"auto_strength": True, "boundary_variant": "psi_0.5"}, "automatic strength needs the fine/all"),
        ({"mix_ratio": 1.5}, "mix_ratio must be between"),
        ({"mix_layers": (3, 18)}, "layer indices 0–17"),
        ({"mix_layers": tuple(range(18))}, "nothing would be edited"),
        ({"inversion_steps": 1001}, "inversion_steps must be between 0 and 1000"),
        ({"refine_steps": -1}, "refine_steps must be between"),
        ({"refine_lr": 0.0}, "refine_lr"),
        ({"face_index": -1}, "face_index must be 0 or more"),
    ],
)
def test_settings_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RemovalSettings(**changes)


def test_settings_defaults_and_dict() -> None:
    settings = RemovalSettings(boundary="coarse", boundary_variant="psi_0.8", mix_layers=(7, 8))
    assert settings.to_dict()["mix_layers"] == [7, 8]
    json.dumps(settings.to_dict())
    assert RemovalSettings(method="diffuse").effective_mix_layers == tuple(range(7, 18))
    assert RemovalSettings(method="warp").effective_mix_layers == tuple(range(6, 18))
    assert default_settings(torch.device("cpu")).method == "warp"
    gpu = default_settings(torch.device("cuda"))
    assert (gpu.method, gpu.inversion) == ("diffuse", "optimise")


def test_cached_target_distance_matches_the_plain_distance() -> None:
    vgg = random_vgg16_features(VGGConfig.tiny(), seed=2)
    rng = torch.Generator().manual_seed(0)
    first, second = (torch.rand(1, 3, 64, 64, generator=rng) * 2 - 1 for _ in range(2))
    image = (torch.rand(1, 3, 64, 64, generator=rng) * 2 - 1).requires_grad_(True)
    calls: list[int] = []

    def extract(images: torch.Tensor) -> list[torch.Tensor]:
        calls.append(1)
        return vgg(images)

    cached = cached_target_distance(extract, lambda a, b: lpips_like_distance(a, b).mean())
    for target in (first, first, second):
        value = cached(image, target)
        expected = perceptual_distance(vgg, image, target)
        assert torch.equal(value, expected)
        (grad,) = torch.autograd.grad(value, image)
        (expected_grad,) = torch.autograd.grad(expected, image)
        assert torch.equal(grad, expected_grad)
    assert len(calls) == 3 + 2  # the image every time, each target once


def test_diffuse_settings_follow_the_device(remover: DoubleChinRemover) -> None:
    settings = RemovalSettings(method="diffuse", refine_steps=7, refine_lr=0.03)
    cpu = remover.diffuse_settings(settings)
    assert (cpu.steps, cpu.learning_rate) == (7, 0.03)
    assert (cpu.optimise_size, cpu.feature_size, cpu.precision) == (
        CPU_DIFFUSE.optimise_size,
        CPU_DIFFUSE.feature_size,
        "fp32",
    )
    gpu_models = dataclasses.replace(remover.models, device=torch.device("cuda"))  # only the device type is read
    gpu = DoubleChinRemover(gpu_models).diffuse_settings(settings)
    assert (gpu.optimise_size, gpu.feature_size, gpu.precision) == (1024, 256, "auto")  # official sizes, autocast


def test_diffuse_features_downsample_only_when_larger() -> None:
    vgg = random_vgg16_features(VGGConfig.tiny(), seed=2)
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert diffuse_features(vgg, images)[-1].shape[-1] == 32  # relu4_3 = 1/8 of 256
    small = diffuse_features(vgg, images, size=128)
    assert small[-1].shape[-1] == 16
    pooled = torch.nn.functional.adaptive_avg_pool2d(images, 128)
    assert torch.equal(diffuse_features(vgg, pooled, size=128)[-1], small[-1])  # already 128²: used as it is


OFFICIAL_CODES = sorted((EXAMPLES_DIR / "codes").glob("*_wp.npy"))


@pytest.mark.parametrize(("method", "layers"), [("warp", tuple(range(6))), ("diffuse", tuple(range(7)))])
def test_double_chin_score_of_the_seven_official_codes_changes_sign_at_minus_5(
    remover: DoubleChinRemover, method: str, layers: tuple[int, ...]
) -> None:
    settings = RemovalSettings(method=method, strength=-5.0)
    boundary = remover.boundary("fine", "all")
    assert len(OFFICIAL_CODES) == 7
    for path in OFFICIAL_CODES:
        code = np.load(path)
        edited = edit_latent(code, boundary, strength=-5.0, mix_layers=settings.effective_mix_layers)
        score = remover.score(code, edited, settings)
        assert score.layers == layers  # the layers the edit changes (style mixing restores the others)
        assert score.before > 0 > score.after, path.name  # all seven were chosen as double-chin cases
        assert score.after == pytest.approx(score.before - 5.0, abs=1e-4)  # unit normals: moved by the strength
        assert score.target is None
        auto_edited, auto = edit_latent_auto(code, boundary, mix_layers=settings.effective_mix_layers)
        auto_score = remover.score(code, auto_edited, settings, auto)
        assert auto_score.target == pytest.approx(auto_score.after, abs=1e-4) and auto_score.after < 0


def test_the_score_is_in_the_edit_and_the_summary(warp_result: RemovalResult) -> None:
    edit = warp_result.edits[0]
    assert edit.score is not None and edit.score.after == pytest.approx(edit.score.before - 5.0, abs=1e-4)
    written = json.loads(json.dumps(warp_result.summary()))["faces"]["0"]["double_chin_score"]
    assert written == {
        "before": round(edit.score.before, 4),
        "after": round(edit.score.after, 4),
        "layers": list(MIX_LAYERS_WARP_COMPLEMENT),
        "boundary": "fine/all",
    }


def test_a_coarse_edit_is_scored_on_the_fine_boundary(remover: DoubleChinRemover) -> None:
    code = np.load(OFFICIAL_CODES[0])
    settings = RemovalSettings(boundary="coarse", boundary_variant="psi_0.8")
    edited = edit_latent(code, remover.boundary("coarse", "psi_0.8"), strength=-5.0, mix_layers=MIX_LAYERS_WARP)
    score = remover.score(code, edited, settings)
    assert score.after < score.before  # the coarse edit also moves away from the double-chin side, less directly


def test_the_jaw_warp_really_runs_end_to_end_with_synthetic_labels(synthetic_label_remover: DoubleChinRemover) -> None:
    photo = one_face_photo()
    result = synthetic_label_remover(photo, RemovalSettings(method="warp"))
    edit = result.edits[0]
    assert not any(note.startswith(WARP_SKIPPED) for note in result.notes), result.notes
    assert edit.neck_mask.any()
    unwarped = composite(edit.prepared.aligned.image, edit.edited, edit.blend_mask)
    assert np.any(edit.refined != unwarped), "the warp moved the edited jaw before blending"
    changed = np.any(result.image != photo, axis=2)
    assert changed.any() and not changed[: photo.shape[0] // 4].any()  # only the neck region, never the top


def test_reconstruction_is_rendered_on_demand(remover: DoubleChinRemover, warp_result: RemovalResult) -> None:
    prepared = dataclasses.replace(warp_result.edits[0].prepared, timings={})
    preview = remover.reconstruct(prepared, size=RECONSTRUCTION_PREVIEW_SIZE)
    assert preview.shape == (RECONSTRUCTION_PREVIEW_SIZE, RECONSTRUCTION_PREVIEW_SIZE, 3) and preview.dtype == np.uint8
    assert remover.reconstruct(prepared, size=RECONSTRUCTION_PREVIEW_SIZE) is preview  # kept
    full = remover.reconstruct(prepared)
    assert np.array_equal(full, remover.render(prepared.w_plus)) and prepared.reconstruction is full
    assert remover.reconstruct(prepared, size=RECONSTRUCTION_PREVIEW_SIZE) is full  # a larger one serves previews
    assert prepared.timings["reconstruct"] > 0


@pytest.mark.parametrize("method", ["warp", "diffuse"])
def test_windowed_edit_renders_what_the_full_render_gives(
    remover: DoubleChinRemover, warp_result: RemovalResult, method: str
) -> None:
    prepared = warp_result.edits[0].prepared
    settings = RemovalSettings(method=method, refine_steps=1)
    windowed = remover.edit(prepared, settings)
    remover.windowed_edit = False
    try:
        full = remover.edit(prepared, settings)
    finally:
        remover.windowed_edit = True
    window = windowed.window
    assert full.window is None and window is not None and window != Window(0, 0, CROP, CROP)
    inside = np.zeros((CROP, CROP), bool)
    inside[window.top : window.bottom, window.left : window.right] = True
    difference = np.abs(windowed.edited.astype(np.int16) - full.edited.astype(np.int16))
    assert difference[inside].max() <= 1  # fp32 rounding can flip a rounding to uint8
    assert np.array_equal(windowed.edited[~inside], prepared.aligned.image[~inside])
    # Everything the refinement blends in lies inside the window.
    assert not (windowed.blend_mask > 0)[~inside].any()
    assert np.array_equal(windowed.neck_mask, full.neck_mask)
    assert np.array_equal(windowed.blend_mask, full.blend_mask)
