from __future__ import annotations

import dataclasses
import io
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import BOUNDARIES_DIR, EXAMPLES_DIR
from pipeline.errors import LatentCodeError, WeightsError
from pipeline.latent.editing import (
    BOUNDARY_VARIANTS,
    MAX_LATENT_FILE_BYTES,
    MAX_LATENT_ROW_NORM,
    MIX_LAYERS_DIFFUSE,
    MIX_LAYERS_WARP,
    Boundary,
    auto_layer_steps,
    auto_strength,
    double_chin_score,
    edit_latent,
    edit_latent_auto,
    edited_layers,
    layer_scores,
    load_boundary,
    load_latent_code,
    strength_sweep,
    sweep_strengths,
)

CODE_PATHS = sorted((EXAMPLES_DIR / "codes").glob("*_wp.npy"))
DIFFUSE_MIX = tuple(range(7, 18))
EDITED_DIFFUSE = list(range(7))


@pytest.fixture(scope="module")
def fine() -> Boundary:
    return load_boundary("fine", "all")


@pytest.fixture(scope="module")
def codes() -> dict[str, np.ndarray]:
    assert len(CODE_PATHS) == 7
    return {p.name[:5]: np.load(p) for p in CODE_PATHS}


def npy_bytes(array: np.ndarray, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# Boundaries


@pytest.mark.parametrize(("kind", "variant"), [(k, v) for k, vs in BOUNDARY_VARIANTS.items() for v in vs])
def test_shipped_boundaries_load_with_unit_rows(kind: str, variant: str) -> None:
    boundary = load_boundary(kind, variant)
    assert boundary.normal.shape == (18, 512)
    assert boundary.normal.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(boundary.normal.astype(np.float64), axis=1), 1.0, atol=1e-6)
    raw = np.load(BOUNDARIES_DIR / kind / variant / "boundary.npy").reshape(-1, 512)
    np.testing.assert_array_equal(boundary.normal, np.broadcast_to(raw, (18, 512)))  # coarse: one row for all 18
    assert (boundary.intercept is not None) == (kind == "fine" and variant == "all")


def test_fine_all_intercepts_are_the_file_values(fine: Boundary) -> None:
    raw = np.load(BOUNDARIES_DIR / "fine" / "all" / "intercept.npy")
    assert fine.intercept is not None
    assert fine.intercept.shape == (18,)
    np.testing.assert_array_equal(fine.intercept, raw.ravel())


def test_coarse_rows_are_identical() -> None:
    coarse = load_boundary("coarse", "psi_0.8")
    assert (coarse.normal == coarse.normal[0]).all()


def test_boundary_is_read_only_and_owns_its_arrays() -> None:
    normal = np.random.default_rng(0).standard_normal((18, 512)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    keep = normal.copy()
    boundary = Boundary(kind="fine", variant="all", normal=normal, intercept=np.zeros((18, 1)))
    normal[:] = 0  # the caller's array changes; the boundary must not
    np.testing.assert_array_equal(boundary.normal, keep)
    assert not boundary.normal.flags.writeable
    assert boundary.intercept is not None
    assert boundary.intercept.shape == (18,)
    with pytest.raises(ValueError):
        boundary.normal[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        boundary.kind = "coarse"  # type: ignore[misc]


@pytest.mark.parametrize(("kind", "variant"), [("medium", "all"), ("coarse", "all"), ("fine", "../coarse")])
def test_unknown_boundary_names_are_rejected(kind: str, variant: str) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        load_boundary(kind, variant)


@pytest.fixture
def boundary_copy(tmp_path: Path) -> Path:
    shutil.copytree(BOUNDARIES_DIR, tmp_path / "boundaries")
    return tmp_path / "boundaries"


def test_missing_boundary_file_names_it(boundary_copy: Path) -> None:
    (boundary_copy / "fine" / "all" / "boundary.npy").unlink()
    with pytest.raises(WeightsError, match=r"fine/all/boundary\.npy does not exist"):
        load_boundary("fine", "all", boundaries_dir=boundary_copy)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not an npy file", "could not be read"),
        (npy_bytes(np.zeros((1, 17, 512), np.float32)), r"shape \(1, 17, 512\); expected \(1, 18, 512\)"),
        (npy_bytes(np.ones((1, 18, 512), np.int32)), "int32 array"),
        (npy_bytes(np.full((1, 18, 512), np.nan, np.float32)), "NaN"),
        (npy_bytes(np.full((1, 18, 512), 0.5, np.float32)), r"not made of unit normals \(row 0: 11.31"),
    ],
)
def test_bad_fine_boundary_file_is_rejected_naming_it(boundary_copy: Path, content: bytes, match: str) -> None:
    (boundary_copy / "fine" / "all" / "boundary.npy").write_bytes(content)
    with pytest.raises(WeightsError, match=match) as info:
        load_boundary("fine", "all", boundaries_dir=boundary_copy)
    assert "fine/all/boundary.npy" in str(info.value)


def test_slightly_off_unit_rows_are_accepted_unchanged(boundary_copy: Path) -> None:
    path = boundary_copy / "coarse" / "psi_0.5" / "boundary.npy"
    raw = np.load(path) * np.float32(1.0005)  # within the 1e-3 tolerance
    np.save(path, raw)
    np.testing.assert_array_equal(load_boundary("coarse", "psi_0.5", boundaries_dir=boundary_copy).normal[5], raw[0])


def test_bad_intercept_file_is_rejected_naming_it(boundary_copy: Path) -> None:
    np.save(boundary_copy / "fine" / "all" / "intercept.npy", np.zeros(17))
    with pytest.raises(WeightsError, match=r"intercept\.npy holds a float64 array of shape \(17,\)"):
        load_boundary("fine", "all", boundaries_dir=boundary_copy)
    np.save(boundary_copy / "fine" / "all" / "intercept.npy", np.full((18, 1), np.inf))
    with pytest.raises(WeightsError, match=r"intercept.npy contains NaN or infinite"):
        load_boundary("fine", "all", boundaries_dir=boundary_copy)


# ---------------------------------------------------------------------------------------------------------------------
# The edit


def test_official_edit_of_00016(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    wp = codes["00016"]
    edited = edit_latent(wp, fine, strength=-5.0, mix_layers=DIFFUSE_MIX, mix_ratio=1.0)
    assert edited.shape == (1, 18, 512)
    assert edited.dtype == np.float32
    np.testing.assert_array_equal(edited[0, :7], wp[0, :7] + np.float32(-5.0) * fine.normal[:7])
    np.testing.assert_array_equal(edited[0, 7:], wp[0, 7:])
    assert not np.array_equal(edited[0, :7], wp[0, :7])


def test_warp_mixing_edits_layers_0_to_5(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    wp = codes["00352"]
    edited = edit_latent(wp, fine, strength=-5.0, mix_layers=MIX_LAYERS_WARP)
    np.testing.assert_array_equal(edited[0, :6], wp[0, :6] - 5.0 * fine.normal[:6])
    np.testing.assert_array_equal(edited[0, 6:], wp[0, 6:])


def test_strength_zero_is_identity(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    for wp in codes.values():
        np.testing.assert_array_equal(edit_latent(wp, fine, strength=0.0, mix_ratio=0.3), wp)


def test_edit_never_mutates_its_inputs(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    wp = codes["00191"].copy()
    wp_before = wp.copy()
    normal_before = fine.normal.copy()
    edit_latent(wp, fine, strength=-6.0)
    edit_latent(wp, fine, strength=-6.0, mix_layers=())
    edit_latent_auto(wp, fine)
    strength_sweep(wp, fine, end_strength=-7.0, steps=3)
    layer_scores(wp, fine)
    np.testing.assert_array_equal(wp, wp_before)
    np.testing.assert_array_equal(fine.normal, normal_before)
    assert not np.shares_memory(edit_latent(wp, fine, strength=0.0), wp)


def test_mix_ratio_0_8_keeps_a_fifth_of_the_edit(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    wp = codes["00212"].astype(np.float64)
    strength = -4.0
    edited = edit_latent(wp, fine, strength=strength, mix_layers=DIFFUSE_MIX, mix_ratio=0.8)
    full = wp[0] + strength * fine.normal.astype(np.float64)
    expected = full.copy()
    expected[7:] = 0.2 * full[7:] + 0.8 * wp[0, 7:]
    np.testing.assert_allclose(edited[0], expected, rtol=0, atol=1e-5)
    # equivalently, the fine layers move 0.2·α along their normals
    np.testing.assert_allclose(
        np.einsum("ij,ij->i", edited[0, 7:] - wp[0, 7:], fine.normal[7:]), 0.2 * strength, atol=1e-5
    )


def test_two_dimensional_and_float64_codes(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    wp = codes["00295"][0].astype(np.float64)  # (18, 512) float64
    edited = edit_latent(wp, fine, strength=-3.0)
    assert edited.shape == (18, 512)
    assert edited.dtype == np.float32
    np.testing.assert_array_equal(edited, edit_latent(codes["00295"], fine, strength=-3.0)[0])


def test_coarse_boundary_moves_every_layer_along_the_same_direction(codes: dict[str, np.ndarray]) -> None:
    coarse = load_boundary("coarse", "psi_0.5")
    raw = np.load(BOUNDARIES_DIR / "coarse" / "psi_0.5" / "boundary.npy")[0]
    wp = codes["00657"]
    edited = edit_latent(wp, coarse, strength=-4.0, mix_layers=())
    np.testing.assert_array_equal(edited[0], wp[0] + np.float32(-4.0) * raw[None, :])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strength": float("nan")}, "strength must be a finite number"),
        ({"strength": -5.0, "mix_ratio": 1.5}, "mix_ratio must be between 0 and 1"),
        ({"strength": -5.0, "mix_layers": (7, 18)}, "mix_layers must be W\\+ layer indices"),
        ({"strength": -5.0, "mix_layers": (-1,)}, "mix_layers must be W\\+ layer indices"),
    ],
)
def test_bad_edit_settings_are_rejected(fine: Boundary, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        edit_latent(np.zeros((1, 18, 512), np.float32), fine, **kwargs)


def test_bad_code_shape_in_edit_is_a_latent_code_error(fine: Boundary) -> None:
    with pytest.raises(LatentCodeError, match=r"got \(1, 512\)"):
        edit_latent(np.zeros((1, 512), np.float32), fine, strength=-5.0)
    with pytest.raises(LatentCodeError, match="float array"):
        edit_latent(np.zeros((1, 18, 512), np.int64), fine, strength=-5.0)


@settings(max_examples=30, deadline=None)
@given(
    strength=st.floats(-8.0, 0.0),
    ratio=st.floats(0.0, 1.0),
    mixed=st.sets(st.integers(0, 17)),
)
def test_edit_matches_the_formula_for_any_settings(strength: float, ratio: float, mixed: set[int]) -> None:
    boundary = load_boundary("fine", "psi_0.5")
    wp = np.random.default_rng(1).standard_normal((1, 18, 512)).astype(np.float32)
    edited = edit_latent(wp, boundary, strength=strength, mix_layers=mixed, mix_ratio=ratio)
    full = wp[0].astype(np.float64) + strength * boundary.normal
    r = np.array([ratio if i in mixed else 0.0 for i in range(18)])[:, None]
    np.testing.assert_allclose(edited[0], (1 - r) * full + r * wp[0], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Sweep


def test_strength_sweep_endpoints_and_frames(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    wp = codes["00667"]
    frames = strength_sweep(wp, fine, end_strength=-7.0, steps=5)
    assert frames.shape == (5, 18, 512)
    assert frames.dtype == np.float32
    np.testing.assert_array_equal(frames[0], wp[0])
    np.testing.assert_array_equal(frames[-1], edit_latent(wp, fine, strength=-7.0)[0])
    strengths = sweep_strengths(-7.0, 5)
    np.testing.assert_allclose(strengths, [0.0, -1.75, -3.5, -5.25, -7.0])
    for frame, strength in zip(frames, strengths, strict=True):
        np.testing.assert_array_equal(frame, edit_latent(wp, fine, strength=float(strength))[0])


def test_strength_sweep_needs_two_steps(fine: Boundary) -> None:
    with pytest.raises(ValueError, match="at least 2 steps"):
        strength_sweep(np.zeros((18, 512), np.float32), fine, end_strength=-5.0, steps=1)


# ---------------------------------------------------------------------------------------------------------------------
# Scores and automatic strength


# Measured on the seven official codes (fine/all boundary, layers 0–6), the figures double_chin_score documents.
OFFICIAL_DOUBLE_CHIN_SCORES = {
    "00016": 1.747,
    "00191": 3.140,
    "00212": 2.107,
    "00295": 0.519,
    "00352": 4.535,
    "00657": 2.645,
    "00667": 2.703,
}


def test_double_chin_score_on_the_official_codes(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    assert fine.intercept is not None
    for name, wp in codes.items():
        score = double_chin_score(wp, fine)
        direct = np.mean([np.dot(fine.normal[i].astype(np.float64), wp[0, i]) + fine.intercept[i] for i in range(7)])
        assert score == pytest.approx(direct, abs=1e-9)
        assert score == pytest.approx(OFFICIAL_DOUBLE_CHIN_SCORES[name], abs=5e-4)
        assert score > 0  # all seven were chosen as double-chin cases: positive side
        # The diffuse edit (α = −5, layers 7–17 restored) moves layers 0–6 by exactly α along unit normals.
        edited = edit_latent(wp, fine, strength=-5.0, mix_layers=DIFFUSE_MIX)
        assert double_chin_score(edited, fine) == pytest.approx(score - 5.0, abs=1e-4)
        assert double_chin_score(edited, fine) < 0
        assert double_chin_score(wp, fine, layers=range(18)) == pytest.approx(layer_scores(wp, fine).mean())


def test_double_chin_score_rejects_bad_layers_and_boundaries_without_intercepts(
    fine: Boundary, codes: dict[str, np.ndarray]
) -> None:
    wp = codes["00016"]
    for layers in ([], [18], [-1]):
        with pytest.raises(ValueError, match="layer indices"):
            double_chin_score(wp, fine, layers=layers)
    with pytest.raises(ValueError, match="no intercepts"):
        double_chin_score(wp, load_boundary("coarse", "psi_0.8"))
    with pytest.raises(LatentCodeError):
        double_chin_score(wp[0, :5], fine)


def test_layer_scores_match_a_direct_computation_and_the_documented_range(
    fine: Boundary, codes: dict[str, np.ndarray]
) -> None:
    assert fine.intercept is not None
    all_scores = []
    for wp in codes.values():
        scores = layer_scores(wp, fine)
        direct = [float(np.dot(fine.normal[i].astype(np.float64), wp[0, i])) + fine.intercept[i] for i in range(18)]
        np.testing.assert_allclose(scores, direct, rtol=0, atol=1e-9)
        assert 2 <= (scores < 0).sum() <= 5  # METHOD.md §4: 2–5 of 18 layers per face are negative
        all_scores.append(scores)
    all_scores = np.concatenate(all_scores)
    # METHOD.md §4: n·w + b ranges from −3.2 to +8.0 on the 7 official codes; d_i from −0.03 to −14.4 (factor 1.8)
    assert round(all_scores.min(), 1) == -3.2
    assert round(all_scores.max(), 1) == 8.0
    steps = np.concatenate([auto_layer_steps(wp, fine, factor=1.8) for wp in codes.values()])
    assert round(steps.max(), 2) == -0.03
    assert round(steps.min(), 1) == -14.4


def test_scores_need_an_intercept(codes: dict[str, np.ndarray]) -> None:
    for kind, variant in [("coarse", "psi_0.8"), ("fine", "psi_0.5")]:
        with pytest.raises(ValueError, match=f"{kind}/{variant} boundary has no intercepts"):
            layer_scores(codes["00016"], load_boundary(kind, variant))


def test_auto_edit_applies_the_per_layer_steps(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    for wp in codes.values():
        edited, strength = edit_latent_auto(wp, fine, mix_layers=DIFFUSE_MIX)
        steps = auto_layer_steps(wp, fine)
        np.testing.assert_array_equal(strength.steps, steps)
        np.testing.assert_array_equal(strength.scores, layer_scores(wp, fine))
        np.testing.assert_allclose(steps, -1.8 * np.abs(strength.scores))
        expected = wp[0, :7] + steps[:7].astype(np.float32)[:, None] * fine.normal[:7]
        np.testing.assert_array_equal(edited[0, :7], expected)
        np.testing.assert_array_equal(edited[0, 7:], wp[0, 7:])
        assert strength.mean_strength == pytest.approx(steps[EDITED_DIFFUSE].mean())
        assert strength.mean_score == pytest.approx(strength.scores[EDITED_DIFFUSE].mean())
        assert strength.already_clear == (strength.mean_score <= 0)
        assert (strength.message is None) == (not strength.already_clear)


def test_auto_strength_weights_partially_mixed_layers(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    wp = codes["00191"]
    strength = auto_strength(wp, fine, mix_layers=DIFFUSE_MIX, mix_ratio=0.8)
    weights = np.r_[np.ones(7), np.full(11, 0.2)]
    np.testing.assert_allclose(strength.edit_weights, weights, atol=1e-7)
    assert strength.mean_strength == pytest.approx((weights * strength.steps).sum() / weights.sum())


def test_auto_strength_says_when_the_face_already_scores_clear(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    wp = codes["00352"]
    scores = layer_scores(wp, fine)
    assert not auto_strength(wp, fine).already_clear  # this face scores on the double-chin side (mean > 0)
    # n_i is unit norm, so moving w_i by −k·n_i lowers s_i by exactly k: every layer lands on the negative side
    moved = wp - (scores.max() + 0.5) * fine.normal[None].astype(np.float64)
    strength = auto_strength(moved, fine)
    assert (strength.scores < 0).all()
    assert strength.already_clear
    assert strength.message is not None
    assert "already scores on the no-double-chin side" in strength.message
    assert "not a reliable double-chin detector" in strength.message
    assert "manual strength" in strength.message
    assert f"{strength.mean_strength:.1f}" in strength.message


def test_auto_strength_with_nothing_edited_is_an_error(fine: Boundary, codes: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="restore every layer"):
        auto_strength(codes["00016"], fine, mix_layers=range(18), mix_ratio=1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Settings


# ---------------------------------------------------------------------------------------------------------------------
# Loading user codes


@pytest.mark.parametrize("path", CODE_PATHS, ids=lambda p: p.name)
def test_official_codes_load_from_path_str_and_bytes(path: Path) -> None:
    raw = np.load(path)
    for source in (path, str(path), path.read_bytes()):
        code = load_latent_code(source)
        assert code.shape == (1, 18, 512)
        assert code.dtype == np.float32
        np.testing.assert_array_equal(code, raw)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 18, 512), (18, 512)])
def test_float_dtypes_and_both_shapes_are_accepted(tmp_path: Path, dtype: type, shape: tuple[int, ...]) -> None:
    values = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    path = tmp_path / "code.npy"
    np.save(path, values)
    code = load_latent_code(path)
    assert code.shape == (1, 18, 512)
    assert code.dtype == np.float32
    np.testing.assert_array_equal(code.reshape(shape), values.astype(np.float32))


def test_array_source_is_copied() -> None:
    values = np.ones((18, 512), np.float32)
    code = load_latent_code(values)
    assert not np.shares_memory(code, values)
    code[...] = 0
    assert (values == 1).all()


GOOD = np.ones((1, 18, 512), np.float32)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (npy_bytes(np.ones((1, 512), np.float32)), r"shape \(1, 512\); expected .*\(1, 18, 512\).*single W vector"),
        (
            npy_bytes(np.ones((1, 14, 512), np.float32)),
            r"shape \(1, 14, 512\); expected .*\(1, 18, 512\) or \(18, 512\)",
        ),
        (npy_bytes(np.ones((1, 18, 512), np.int64)), "dtype int64; a W\\+ code must be float"),
        (npy_bytes(np.ones((1, 18, 512), bool)), "dtype bool"),
        (npy_bytes(np.ones((1, 18, 512), np.complex64)), "dtype complex64"),
        (npy_bytes(np.array([{"wp": 1}], dtype=object), allow_pickle=True), "holds Python objects"),
        (pickle.dumps(GOOD), "is a Python pickle that is not a plain PyTorch tensor file .it is never executed."),
        (b"hello, this is text", "is neither a .npy file nor a PyTorch file"),
        (b"", "is empty"),
        (npy_bytes(GOOD)[:-1000], "truncated or damaged"),
        (npy_bytes(GOOD)[:40], "damaged .npy header"),
        (npy_bytes(np.where(np.arange(512) == 3, np.nan, 1.0)[None, None].repeat(18, 1)), "NaN or infinite"),
        (npy_bytes(np.full((18, 512), np.inf, np.float32)), "NaN or infinite"),
        (npy_bytes(np.full((1, 18, 512), 100.0, np.float32)), r"layer of norm 2263; .*not a StyleGAN2 W\+ code"),
    ],
)
def test_bad_latent_files_are_rejected_with_a_specific_message(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "upload.npy"
    path.write_bytes(content)
    for source in (path, content):
        with pytest.raises(LatentCodeError, match=match) as info:
            load_latent_code(source)
        assert str(tmp_path) not in str(info.value)  # no file-system paths in user messages


def test_npz_archive_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "codes.npz"
    np.savez(path, wp=GOOD)
    with pytest.raises(LatentCodeError, match=r"'codes.npz' is a .npz archive"):
        load_latent_code(path)


def test_oversized_file_is_rejected_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.npy"
    np.save(path, np.zeros(MAX_LATENT_FILE_BYTES // 8 + 10))
    with pytest.raises(LatentCodeError, match=r"'big.npy' is .* bytes; a W\+ code file is at most"):
        load_latent_code(path)
    with pytest.raises(LatentCodeError, match="at most"):
        load_latent_code(path.read_bytes())


def test_unreadable_sources_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(LatentCodeError, match=r"'missing.npy' could not be read"):
        load_latent_code(tmp_path / "missing.npy")
    with pytest.raises(LatentCodeError, match="is not a file"):
        load_latent_code(tmp_path)


def test_bad_arrays_are_rejected_like_files() -> None:
    with pytest.raises(LatentCodeError, match=r"shape \(18, 511\)"):
        load_latent_code(np.zeros((18, 511), np.float32))
    with pytest.raises(LatentCodeError, match="holds Python objects"):
        load_latent_code(np.empty((18, 512), dtype=object))
    with pytest.raises(LatentCodeError, match="at most 1000 is accepted"):
        load_latent_code(np.full((18, 512), MAX_LATENT_ROW_NORM, np.float64))


def test_row_norm_bound_is_far_above_real_codes(codes: dict[str, np.ndarray]) -> None:
    largest = max(np.linalg.norm(wp[0], axis=1).max() for wp in codes.values())
    assert largest * 20 < MAX_LATENT_ROW_NORM


# --- W+ codes saved with torch.save ----------------------------------------------------------------------------------


def torch_bytes(obj: object, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], *, compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


CODE = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 18, 512)).astype(np.float32))


@pytest.mark.parametrize(
    "obj",
    [
        CODE,
        CODE[0],
        CODE.double(),
        CODE.half(),
        CODE.bfloat16(),
        CODE.clone().requires_grad_(True),
        {"w": CODE},
        {"wp": CODE, "step": 1000},
        {"latent": CODE[0], "noise": [torch.zeros(4)]},
        {"projected_w": CODE},
    ],
)
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_pytorch_codes_are_accepted(tmp_path: Path, obj: object, suffix: str) -> None:
    path = tmp_path / f"code{suffix}"
    path.write_bytes(torch_bytes(obj))
    code = load_latent_code(path)
    assert code.shape == (1, 18, 512) and code.dtype == np.float32
    tensor = obj if isinstance(obj, torch.Tensor) else next(v for v in obj.values() if isinstance(v, torch.Tensor))
    expected = tensor.detach().float().reshape(1, 18, 512).numpy()
    np.testing.assert_array_equal(code, expected)
    np.testing.assert_array_equal(load_latent_code(path.read_bytes()), code)


def test_legacy_pytorch_format_is_accepted() -> None:
    code = load_latent_code(torch_bytes(CODE, _use_new_zipfile_serialization=False))
    np.testing.assert_array_equal(code, CODE.numpy())


class Executes:
    """Unpickling this would run os.system; the restricted loader must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("echo pwned > /dev/null",)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (torch_bytes({"a": CODE, "b": 1}), r"holds a dict \('a', 'b'\) with no tensor under the keys we look for"),
        (torch_bytes({"w": CODE, "latent": CODE}), "holds a dict .* with several codes"),
        (torch_bytes([CODE]), "holds a list, not a tensor; save the .* torch.save"),
        (torch_bytes(CODE.long()), "tensor of dtype torch.int64"),
        (torch_bytes(torch.ones(1, 14, 512)), r"shape \(1, 14, 512\); expected"),
        (torch_bytes(torch.ones(1, 512)), "single W vector"),
        (torch_bytes(CODE * 100), "layer of norm"),
        (pickle.dumps(Executes()), "not a plain PyTorch tensor file .it is never executed."),
        (torch_bytes(CODE)[:-200], "not a plain PyTorch tensor file|damaged ZIP"),
        (zip_bytes({"readme.txt": b"hello"}), "ZIP archive but neither a PyTorch file nor a numpy file"),
    ],
)
def test_bad_pytorch_files_get_a_specific_message(content: bytes, match: str) -> None:
    with pytest.raises(LatentCodeError, match=match):
        load_latent_code(content)


def test_pytorch_zip_bomb_is_refused_before_loading(monkeypatch) -> None:
    big = zip_bytes({"archive/data.pkl": b"x", "archive/data/0": bytes(5 * MAX_LATENT_FILE_BYTES)}, compress=True)
    assert len(big) < MAX_LATENT_FILE_BYTES  # small on disk, 10 MB unpacked
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran on an oversized archive"))
    with pytest.raises(LatentCodeError, match="unpacks to more data than a W\\+ code"):
        load_latent_code(big)


def test_edited_layers_are_those_style_mixing_does_not_restore() -> None:
    assert edited_layers(MIX_LAYERS_WARP, 1.0) == tuple(range(6))
    assert edited_layers(MIX_LAYERS_DIFFUSE, 1.0) == tuple(range(7))
    assert edited_layers(MIX_LAYERS_DIFFUSE, 0.5) == tuple(range(18))  # a partial mix still changes them
    with pytest.raises(ValueError, match="layer indices"):
        edited_layers([18], 1.0)
