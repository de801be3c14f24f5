"""Latent editing along the double-chin boundaries: the edit, style mixing, automatic strength and code loading.

Matches the test-time editing of Wu et al., "Coarse-to-Fine: Facial Structure Editing of Portrait Images via Latent
Space Classifications" (SIGGRAPH 2021), official repository
``oneThousand1000/Facial-Structure-Editing-of-Portrait-Images-via-Latent-Space-Classifications``
(``main_diffuse.py``, ``main_warp.py``, ``easy_style_mixing``; the automatic per-layer step from the April-2021
``main_warp.py``), and reads its boundary files (InterFaceGAN-style unit SVM normals). See METHOD.md §4–§5.

The math (shapes: ``wp`` (18, 512) W+ code, ``n`` (18, 512) per-layer unit normals, ``b`` (18,) intercepts):

- Manual edit: ``edited = wp + α·n``; negative α removes the double chin (the positive side is "double chin").
- Style mixing: for the layers in ``mix_layers``, ``mixed = (1 − r)·edited + r·wp`` (r = 1 restores the original
  rows); the other layers keep the edit. Unlike the official code, nothing is modified in place.
- Per-layer score ``s_i = n_i·w_i + b_i``; automatic step ``d_i = −factor·|s_i|`` and ``wp_i += d_i·n_i``.
  ``s_i`` mixes units (the SVM weight norm was not stored), so it is a step-size heuristic, **not** a detector.

Everything here is numpy; the only I/O is in :func:`load_boundary` and :func:`load_latent_code`.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.config import BOUNDARIES_DIR, NUM_WS, W_DIM
from pipeline.errors import LatentCodeError, WeightsError

__all__ = [
    "AutoStrength",
    "Boundary",
    "ScoreChange",
    "auto_layer_steps",
    "auto_strength",
    "double_chin_score",
    "edit_latent",
    "edit_latent_auto",
    "edited_layers",
    "layer_scores",
    "load_boundary",
    "load_latent_code",
    "strength_sweep",
    "sweep_strengths",
]

logger = logging.getLogger(__name__)

BOUNDARY_VARIANTS: dict[str, tuple[str, ...]] = {
    "coarse": ("psi_0.5", "psi_0.8"),  # W-space SVMs on data generated at ψ = 0.5 / 0.8 (METHOD.md §4)
    "fine": ("all", "psi_0.5", "psi_0.8"),  # per-layer W+ SVMs; "all" is the one the official commands use
}
BOUNDARY_FILENAME = "boundary.npy"
INTERCEPT_FILENAME = "intercept.npy"  # only fine/all has one (raw sklearn intercept_, (18, 1) float64)
UNIT_NORM_TOLERANCE = 1e-3  # |‖n_i‖ − 1| allowed; the shipped rows are within 1.2e-7 of 1
MIX_LAYERS_DIFFUSE = tuple(range(7, NUM_WS))  # main_diffuse.py style_range: layers 7–17 come back from the original
MIX_LAYERS_WARP = tuple(range(6, NUM_WS))  # main_warp.py: layers 6–17 come back from the original code
AUTO_STEP_FACTOR = 1.8  # April-2021 main_warp.py: d_i = −1.8·|n_i·w_i + b_i|
SCORE_LAYERS = tuple(range(0, 7))  # layers the diffuse edit keeps (0–6): complement of DEFAULT_MIX_LAYERS (ours)

LATENT_SHAPES = ((1, NUM_WS, W_DIM), (NUM_WS, W_DIM))  # accepted W+ code shapes
MAX_LATENT_FILE_BYTES = 2 * 1024 * 1024  # a valid file is ≤ 73,856 bytes ((1, 18, 512) float64 + header)
# Largest accepted per-row norm of a W+ code. Official and e4e codes have row norms ≈ 33–41 (METHOD.md §5); 1000 is
# ~25× that, so anything larger is not a StyleGAN2 FFHQ W+ code (e.g. pixels, or a code saved in the wrong units).
MAX_LATENT_ROW_NORM = 1000.0
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"  # .npz archives are zip files
PICKLE_PROTOCOL_MARK = 0x80  # first byte of a pickle written with protocol ≥ 2
SUPPORTED_NPY_VERSIONS = ((1, 0), (2, 0))  # what numpy.save writes for plain numeric arrays
TORCH_PICKLE_MEMBER = "data.pkl"  # torch.save's zip format holds "<archive>/data.pkl" (torch/serialization.py)
# Keys under which projectors and editing repos save a W+ code in a dict (e4e/pSp "latent", StyleGAN2-ADA
# "projected_w"/"w", InterFaceGAN/official C2F "wp", others "w_plus"/"latents"/"code"); ours, from those repos.
LATENT_DICT_KEYS = ("w", "wp", "w_plus", "latent", "latents", "projected_w", "code")
# Uncompressed bytes a .pt archive may unpack to: its members hold at most one (1, 18, 512) float64 tensor plus small
# pickles; the cap stops a zip bomb before torch.load reads anything (ours).
MAX_TORCH_ARCHIVE_BYTES = 4 * MAX_LATENT_FILE_BYTES


@dataclass(frozen=True, eq=False)
class Boundary:
    """A double-chin boundary, always expanded to one unit normal per W+ layer.

    Attributes:
        kind: ``"coarse"`` (one W-space normal broadcast to all 18 rows) or ``"fine"`` (one normal per layer).
        variant: ``"all"``, ``"psi_0.5"`` or ``"psi_0.8"`` (see ``BOUNDARY_VARIANTS``).
        normal: (18, 512) float32, read-only; each row has unit norm. Positive side = double chin.
        intercept: (18,) float64 read-only raw SVM intercepts ``b_i``, or None when the variant has none.
    """

    kind: str
    variant: str
    normal: np.ndarray
    intercept: np.ndarray | None = None

    def __post_init__(self) -> None:
        normal = np.array(self.normal, dtype=np.float32)  # private copy, so the caller's array can change freely
        if normal.shape != (NUM_WS, W_DIM):
            raise ValueError(f"normal must have shape {(NUM_WS, W_DIM)}, got {normal.shape}")
        normal.setflags(write=False)
        object.__setattr__(self, "normal", normal)
        if self.intercept is not None:
            intercept = np.array(self.intercept, dtype=np.float64).reshape(-1)
            if intercept.shape != (NUM_WS,):
                raise ValueError(f"intercept must have {NUM_WS} values, got shape {np.shape(self.intercept)}")
            intercept.setflags(write=False)
            object.__setattr__(self, "intercept", intercept)


@dataclass(frozen=True, eq=False)
class AutoStrength:
    """What the automatic per-layer strength did, for display next to the result.

    Attributes:
        steps: (18,) float64 per-layer steps ``d_i = −factor·|s_i|`` (all ≤ 0).
        scores: (18,) float64 per-layer scores ``s_i = n_i·w_i + b_i`` of the input code.
        edit_weights: (18,) float64 share of each layer's step that survives style mixing (1 outside the mixed
            layers, ``1 − mix_ratio`` inside).
        mean_strength: the constant strength α with the same mean step over the edited layers (weighted by
            ``edit_weights``), comparable with the manual strength slider.
        mean_score: the mean score over the edited layers (same weights).
        already_clear: True when ``mean_score ≤ 0``, i.e. the edited layers already score on the no-double-chin side.
        message: a user-facing note when ``already_clear``; None otherwise.
    """

    steps: np.ndarray
    scores: np.ndarray
    edit_weights: np.ndarray
    mean_strength: float
    mean_score: float
    already_clear: bool
    message: str | None = field(default=None)


@dataclass(frozen=True)
class ScoreChange:
    """The double-chin score (:func:`double_chin_score`) of a code before and after its edit.

    Attributes:
        before: score of the input code (positive = double-chin side of the fine/all boundary).
        after: score of the edited code, over the same layers.
        layers: the W+ layers averaged over: those the edit changes (:func:`edited_layers`).
        target: what the automatic strength aimed for on those layers (``mean(s_i + d_i)``), or None for a manual
            strength. With unit normals the edit reaches it exactly.
    """

    before: float
    after: float
    layers: tuple[int, ...]
    target: float | None = None

    def arrow(self) -> str:
        """``"2.1 → −2.9"``: both scores to one decimal, with a true minus sign."""
        return " → ".join(f"{value:.1f}".replace("-", "−") for value in (self.before, self.after))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: scores rounded to 4 decimals, the layers as a list, the boundary that scores."""
        rounded = {"before": round(self.before, 4), "after": round(self.after, 4)}
        target = {} if self.target is None else {"auto_strength_target": round(self.target, 4)}
        return {**rounded, **target, "layers": list(self.layers), "boundary": "fine/all"}


# ---------------------------------------------------------------------------------------------------------------------
# Boundaries


def _read_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise WeightsError(f"{what} file {path} does not exist; the boundaries ship with the app in {BOUNDARIES_DIR}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise WeightsError(
            f"{what} file {path} could not be read as a .npy array ({err}); restore it from git"
        ) from err


def _check_unit_rows(normal: np.ndarray, path: Path) -> None:
    norms = np.linalg.norm(normal.astype(np.float64), axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE)
    if bad.size:
        shown = ", ".join(f"row {i}: {norms[i]:.4g}" for i in bad[:5])
        raise WeightsError(
            f"boundary file {path} is not made of unit normals ({shown}); the official boundaries have unit rows. "
            "Restore the file from git."
        )


def load_boundary(kind: str = "fine", variant: str = "all", *, boundaries_dir: Path = BOUNDARIES_DIR) -> Boundary:
    """Load one of the authors' boundaries (and its intercepts, when it has them).

    Files: ``{boundaries_dir}/{kind}/{variant}/boundary.npy`` — coarse (1, 512) float32, fine (1, 18, 512) float32 —
    and, for fine/all only, ``intercept.npy`` (18, 1) float64.

    Rows must already have unit norm (within ``UNIT_NORM_TOLERANCE``): they are used as stored, so the arithmetic
    equals the official ``wp + α·n``. A file off by more is rejected rather than renormalised, because it is not one
    of the shipped boundaries (e.g. a raw SVM weight) and silently rescaling it would change what α means.

    Args:
        kind: ``"fine"`` (per-layer W+ boundary) or ``"coarse"`` (W boundary, broadcast to all 18 layers).
        variant: one of ``BOUNDARY_VARIANTS[kind]``.
        boundaries_dir: root folder of the boundary files.

    Returns:
        A :class:`Boundary` with an (18, 512) float32 normal.

    Raises:
        ValueError: unknown kind or variant.
        WeightsError: a file is missing, unreadable, of the wrong shape, not finite or not unit-norm (names the file).
    """
    if kind not in BOUNDARY_VARIANTS:
        raise ValueError(f"boundary kind must be one of {tuple(BOUNDARY_VARIANTS)}, got {kind!r}")
    if variant not in BOUNDARY_VARIANTS[kind]:
        raise ValueError(f"{kind} boundary variant must be one of {BOUNDARY_VARIANTS[kind]}, got {variant!r}")
    folder = Path(boundaries_dir) / kind / variant
    path = folder / BOUNDARY_FILENAME
    raw = _read_npy(path, "boundary")
    expected = (1, W_DIM) if kind == "coarse" else (1, NUM_WS, W_DIM)
    if raw.shape != expected or raw.dtype.kind != "f":
        raise WeightsError(f"boundary file {path} holds a {raw.dtype} array of shape {raw.shape}; expected {expected}")
    if not np.isfinite(raw).all():
        raise WeightsError(f"boundary file {path} contains NaN or infinite values; restore it from git")
    normal = np.broadcast_to(raw.reshape(-1, W_DIM), (NUM_WS, W_DIM))  # coarse: one W normal for every layer
    _check_unit_rows(normal, path)

    intercept = None
    intercept_path = folder / INTERCEPT_FILENAME
    if kind == "fine" and intercept_path.exists():
        raw_intercept = _read_npy(intercept_path, "intercept")
        if raw_intercept.size != NUM_WS or raw_intercept.dtype.kind != "f":
            raise WeightsError(
                f"intercept file {intercept_path} holds a {raw_intercept.dtype} array of shape {raw_intercept.shape}; "
                f"expected {NUM_WS} float values"
            )
        if not np.isfinite(raw_intercept).all():
            raise WeightsError(f"intercept file {intercept_path} contains NaN or infinite values; restore it from git")
        intercept = raw_intercept.reshape(NUM_WS)
    return Boundary(kind=kind, variant=variant, normal=normal, intercept=intercept)


# ---------------------------------------------------------------------------------------------------------------------
# The edit


def _as_rows(wp: np.ndarray) -> np.ndarray:
    """Validate a W+ code and return it as an (18, 512) float32 array (a view or a converted copy; never written)."""
    wp = np.asarray(wp)
    if wp.shape not in LATENT_SHAPES:
        raise LatentCodeError(f"a W+ code must have shape (1, 18, 512) or (18, 512), got {wp.shape}")
    if wp.dtype.kind != "f":
        raise LatentCodeError(f"a W+ code must be a float array, got dtype {wp.dtype}")
    return wp.reshape(NUM_WS, W_DIM).astype(np.float32, copy=False)


def _mix_weights(mix_layers: Iterable[int], mix_ratio: float) -> np.ndarray:
    """Per-layer weight r_i of the original code after style mixing: ``mix_ratio`` on ``mix_layers``, else 0."""
    if not (math.isfinite(mix_ratio) and 0.0 <= mix_ratio <= 1.0):
        raise ValueError(f"mix_ratio must be between 0 and 1, got {mix_ratio}")
    layers = sorted({int(i) for i in mix_layers})
    if any(not 0 <= i < NUM_WS for i in layers):
        raise ValueError(f"mix_layers must be W+ layer indices 0–{NUM_WS - 1}, got {layers}")
    ratios = np.zeros(NUM_WS, dtype=np.float32)
    ratios[layers] = mix_ratio
    return ratios


def edited_layers(mix_layers: Iterable[int], mix_ratio: float) -> tuple[int, ...]:
    """The W+ layers an edit changes: every layer except those style mixing restores fully (``mix_ratio`` = 1).

    Raises:
        ValueError: ``mix_layers`` / ``mix_ratio`` out of range (see :func:`edit_latent`).
    """
    return tuple(int(i) for i in np.flatnonzero(_mix_weights(mix_layers, mix_ratio) < 1.0))


def _step_and_mix(rows: np.ndarray, steps: np.ndarray, normal: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """``edited_i = w_i + d_i·n_i``; rows with r_i > 0 then become ``(1 − r_i)·edited_i + r_i·w_i``. (18, 512) f32."""
    edited = rows + steps.astype(np.float32)[:, None] * normal  # (18, 512); a new array, ``rows`` is untouched
    mixed = ratios > 0
    r = ratios[mixed][:, None]  # (k, 1)
    # (1 − r)·edited + r·w written as w + (1 − r)·(edited − w): the same value, but exactly w when r = 1 or α = 0
    edited[mixed] = rows[mixed] + (1.0 - r) * (edited[mixed] - rows[mixed])
    return edited


def _like_input(rows: np.ndarray, wp: np.ndarray) -> np.ndarray:
    return rows.reshape(np.shape(wp))


def edit_latent(
    wp: np.ndarray,
    boundary: Boundary,
    *,
    strength: float,
    mix_layers: Iterable[int] = MIX_LAYERS_DIFFUSE,
    mix_ratio: float = 1.0,
) -> np.ndarray:
    """Move a W+ code by ``strength`` (α in ``wp + α·n``) along the boundary, then restore ``mix_layers`` (METHOD §5).

    Args:
        wp: W+ code, (1, 18, 512) or (18, 512), float (converted to float32). Not modified.
        boundary: the boundary to walk along.
        strength: signed distance α per layer; negative removes the double chin (UI range 0 … −8, default −5).
        mix_layers: layers pulled back toward the original code (diffuse: 7–17, warp: 6–17).
        mix_ratio: r in ``(1 − r)·edited + r·wp`` for ``mix_layers``; 1.0 restores them exactly.

    Returns:
        The edited code, float32, same shape as ``wp``.

    Raises:
        LatentCodeError: ``wp`` has the wrong shape or is not a float array.
        ValueError: ``strength`` is not finite, or ``mix_layers`` / ``mix_ratio`` are out of range.
    """
    if not math.isfinite(strength):
        raise ValueError(f"strength must be a finite number, got {strength}")
    rows = _as_rows(wp)
    steps = np.full(NUM_WS, strength, dtype=np.float32)
    return _like_input(_step_and_mix(rows, steps, boundary.normal, _mix_weights(mix_layers, mix_ratio)), wp)


def sweep_strengths(end_strength: float, steps: int) -> np.ndarray:
    """The strengths of :func:`strength_sweep`: ``linspace(0, end_strength, steps)``, (steps,) float64."""
    if steps < 2:
        raise ValueError(f"a strength sweep needs at least 2 steps, got {steps}")
    if not math.isfinite(end_strength):
        raise ValueError(f"end_strength must be a finite number, got {end_strength}")
    return np.linspace(0.0, end_strength, steps)


def strength_sweep(
    wp: np.ndarray,
    boundary: Boundary,
    *,
    end_strength: float,
    steps: int,
    mix_layers: Iterable[int] = MIX_LAYERS_DIFFUSE,
    mix_ratio: float = 1.0,
) -> np.ndarray:
    """Edited codes for strengths from 0 to ``end_strength`` (to animate the removal), as ``run_img_step.py`` sweeps.

    Args:
        wp: W+ code, (1, 18, 512) or (18, 512). Not modified.
        boundary: the boundary to walk along.
        end_strength: the last strength (the first is 0, i.e. the input code).
        steps: number of frames, ≥ 2; the strengths are :func:`sweep_strengths`.
        mix_layers: as in :func:`edit_latent`.
        mix_ratio: as in :func:`edit_latent`.

    Returns:
        (steps, 18, 512) float32; frame k equals ``edit_latent(wp, boundary, strength=strengths[k], ...)``.
    """
    mix_layers = tuple(mix_layers)
    frames = [
        edit_latent(wp, boundary, strength=float(a), mix_layers=mix_layers, mix_ratio=mix_ratio).reshape(NUM_WS, W_DIM)
        for a in sweep_strengths(end_strength, steps)
    ]
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------------------------------
# Per-layer scores and the automatic strength


def layer_scores(wp: np.ndarray, boundary: Boundary) -> np.ndarray:
    """Per-layer SVM score ``s_i = n_i·w_i + b_i`` (positive = double-chin side), computed in float64.

    The SVM weight norm was not stored, so ``s_i`` is not a distance and not a reliable detector (METHOD.md §4); on
    the 7 official test codes it ranges from about −3.2 to +8.0.

    Args:
        wp: W+ code, (1, 18, 512) or (18, 512).
        boundary: a boundary with intercepts (only fine/all has them).

    Returns:
        (18,) float64.

    Raises:
        ValueError: the boundary has no intercepts.
        LatentCodeError: ``wp`` has the wrong shape or dtype.
    """
    if boundary.intercept is None:
        raise ValueError(
            f"the {boundary.kind}/{boundary.variant} boundary has no intercepts, so per-layer scores (and the "
            "automatic strength) are unavailable; use the fine/all boundary or a manual strength"
        )
    rows = _as_rows(wp).astype(np.float64)
    return np.einsum("ij,ij->i", boundary.normal.astype(np.float64), rows) + boundary.intercept


def double_chin_score(wp: np.ndarray, boundary: Boundary, layers: Iterable[int] = SCORE_LAYERS) -> float:
    """Mean per-layer SVM score ``mean_{i ∈ layers}(n_i·w_i + b_i)`` of a W+ code on the fine boundary.

    Sign convention (official boundaries, METHOD.md §4): **positive = double-chin side**, negative = the other side.
    The default layers are 0–6, the ones the diffuse edit moves (layers 7–17 are restored by style mixing), so an
    edit ``edit_latent(wp, boundary, strength=s)`` with unit normals shifts this score by exactly s. On the seven
    official test codes (all chosen as double-chin cases) it lies between +0.52 and +4.54, and at strength −5 between
    −4.48 and −0.47. The SVM weight norm was not stored, so the value is a position relative to the boundary in
    boundary units, not a calibrated probability: show it as a guide, never as a detector's verdict.

    Args:
        wp: W+ code, (1, 18, 512) or (18, 512), float.
        boundary: a boundary with intercepts (fine/all).
        layers: W+ layer indices to average over (default 0–6); at least one, each in 0–17.

    Returns:
        The mean score as a Python float.

    Raises:
        ValueError: the boundary has no intercepts, or ``layers`` is empty or out of range.
        LatentCodeError: ``wp`` has the wrong shape or dtype.
    """
    chosen = sorted({int(i) for i in layers})
    if not chosen or any(not 0 <= i < NUM_WS for i in chosen):
        raise ValueError(f"layers must be a non-empty set of W+ layer indices 0–{NUM_WS - 1}, got {chosen}")
    return float(layer_scores(wp, boundary)[chosen].mean())


def auto_layer_steps(wp: np.ndarray, boundary: Boundary, factor: float = AUTO_STEP_FACTOR) -> np.ndarray:
    """Automatic per-layer steps ``d_i = −factor·|n_i·w_i + b_i|`` (April-2021 ``main_warp.py``), (18,) float64 ≤ 0."""
    _check_factor(factor)
    return -factor * np.abs(layer_scores(wp, boundary))


def _check_factor(factor: float) -> None:
    if not (math.isfinite(factor) and factor >= 0):
        raise ValueError(f"factor must be a finite number ≥ 0, got {factor}")


def auto_strength(
    wp: np.ndarray,
    boundary: Boundary,
    *,
    factor: float = AUTO_STEP_FACTOR,
    mix_layers: Iterable[int] = MIX_LAYERS_DIFFUSE,
    mix_ratio: float = 1.0,
) -> AutoStrength:
    """Per-layer automatic steps plus a summary for the UI (see :class:`AutoStrength`).

    "Edited layers" are weighted by how much of their step survives style mixing: 1 outside ``mix_layers`` and
    ``1 − mix_ratio`` inside (so with the default r = 1 they are simply the layers outside ``mix_layers``). The
    face counts as already clear when the weighted mean score over them is ≤ 0. That test uses the same unreliable
    score as the heuristic itself, so the message says so and only suggests a manual strength; it never blocks
    the edit.

    Raises:
        ValueError: the boundary has no intercepts, or the mixing settings restore every layer (nothing is edited).
    """
    ratios = _mix_weights(mix_layers, mix_ratio)
    weights = 1.0 - ratios.astype(np.float64)
    if weights.sum() <= 0:
        raise ValueError("these mixing settings restore every layer, so nothing would be edited")
    _check_factor(factor)
    scores = layer_scores(wp, boundary)
    steps = -factor * np.abs(scores)  # = auto_layer_steps(wp, boundary, factor), without scoring twice
    mean_strength = float(np.average(steps, weights=weights))
    mean_score = float(np.average(scores, weights=weights))
    already_clear = mean_score <= 0.0
    message = None
    if already_clear:
        message = (
            f"This face already scores on the no-double-chin side of the boundary (mean layer score {mean_score:.2f} "
            f"on the edited layers), so the automatic strength has no double chin to measure; it still moved the "
            f"code by an average of {mean_strength:.1f}. The score is a rough guide, not a reliable double-chin "
            "detector: try a manual strength instead."
        )
    return AutoStrength(
        steps=steps,
        scores=scores,
        edit_weights=weights,
        mean_strength=mean_strength,
        mean_score=mean_score,
        already_clear=already_clear,
        message=message,
    )


def edit_latent_auto(
    wp: np.ndarray,
    boundary: Boundary,
    *,
    factor: float = AUTO_STEP_FACTOR,
    mix_layers: Iterable[int] = MIX_LAYERS_DIFFUSE,
    mix_ratio: float = 1.0,
) -> tuple[np.ndarray, AutoStrength]:
    """Edit with the automatic per-layer steps (``wp_i += d_i·n_i``), then style-mix as :func:`edit_latent`.

    Args:
        wp: W+ code, (1, 18, 512) or (18, 512). Not modified.
        boundary: a boundary with intercepts (fine/all).
        factor: the step factor (1.8 in the April-2021 ``main_warp.py``).
        mix_layers: as in :func:`edit_latent`.
        mix_ratio: as in :func:`edit_latent`.

    Returns:
        The edited code (float32, same shape as ``wp``) and the :class:`AutoStrength` summary.

    Raises:
        ValueError: see :func:`auto_strength`.
        LatentCodeError: ``wp`` has the wrong shape or dtype.
    """
    mix_layers = tuple(mix_layers)
    strength = auto_strength(wp, boundary, factor=factor, mix_layers=mix_layers, mix_ratio=mix_ratio)
    rows = _step_and_mix(_as_rows(wp), strength.steps, boundary.normal, _mix_weights(mix_layers, mix_ratio))
    return _like_input(rows, wp), strength


# ---------------------------------------------------------------------------------------------------------------------
# Loading user-supplied codes


def _read_source_bytes(source: str | Path | bytes) -> tuple[bytes, str]:
    """The raw bytes of an uploaded code and a name for messages (the file name only, never a full path)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > MAX_LATENT_FILE_BYTES:
            raise LatentCodeError(
                f"the latent code is {len(data):,} bytes; a W+ code file is at most {MAX_LATENT_FILE_BYTES:,} bytes"
            )
        return data, "the latent code"
    path = Path(source)
    name = f"latent code file '{path.name}'"
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise LatentCodeError(f"{name} is not a file; upload a .npy or .pt file")
        if size > MAX_LATENT_FILE_BYTES:
            raise LatentCodeError(
                f"{name} is {size:,} bytes; a W+ code file is at most {MAX_LATENT_FILE_BYTES:,} bytes"
            )
        return path.read_bytes(), name
    except OSError as err:
        raise LatentCodeError(f"{name} could not be read ({type(err).__name__}); upload a .npy or .pt file") from err


def _array_from_npy_bytes(data: bytes, name: str) -> np.ndarray:
    """Parse .npy bytes, checking the header (dtype, shape) before reading any values; never unpickles."""
    if not data:
        raise LatentCodeError(f"{name} is empty; upload a W+ code saved with numpy.save")
    if data.startswith(ZIP_MAGIC):
        members = _zip_members(data, name)
        if any(member == TORCH_PICKLE_MEMBER or member.endswith("/" + TORCH_PICKLE_MEMBER) for member in members):
            return _array_from_torch_bytes(data, name, members)
        if members and all(member.endswith(".npy") for member in members):
            raise LatentCodeError(f"{name} is a .npz archive; save the single (1, 18, 512) array with numpy.save")
        raise LatentCodeError(f"{name} is a ZIP archive but neither a PyTorch file nor a numpy file; {SAVE_CODE_HINT}")
    if data[0] == PICKLE_PROTOCOL_MARK:
        return _array_from_torch_bytes(data, name, {})
    if not data.startswith(NPY_MAGIC):
        raise LatentCodeError(f"{name} is neither a .npy file nor a PyTorch file (or it is damaged); {SAVE_CODE_HINT}")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in SUPPORTED_NPY_VERSIONS:
            raise LatentCodeError(
                f"{name} uses .npy format version {version}; save a plain float array with numpy.save"
            )
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except ValueError as err:
        raise LatentCodeError(f"{name} has a damaged .npy header; save the array again with numpy.save") from err
    _check_latent_dtype_and_shape(dtype, shape, name)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise LatentCodeError(f"{name} is truncated or damaged; save the array again with numpy.save") from err


SAVE_CODE_HINT = "save the (1, 18, 512) code with numpy.save(path, w) or torch.save(w, path)"


def _zip_members(data: bytes, name: str) -> dict[str, int]:
    """Member name → uncompressed size of a ZIP archive (only its directory is read)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {info.filename: info.file_size for info in archive.infolist()}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise LatentCodeError(f"{name} is a damaged ZIP archive; {SAVE_CODE_HINT}") from err


def _array_from_torch_bytes(data: bytes, name: str, members: dict[str, int]) -> np.ndarray:
    """A W+ code from a ``torch.save`` file: a tensor, or a dict with one under a :data:`LATENT_DICT_KEYS` key.

    Loaded with ``torch.load(weights_only=True)``, PyTorch's restricted unpickler: only tensors and plain containers
    are rebuilt, so no code in the file is ever run. Legacy (non-zip) files go through the same loader.
    """
    if sum(members.values()) > MAX_TORCH_ARCHIVE_BYTES:
        raise LatentCodeError(f"{name} unpacks to more data than a W+ code; {SAVE_CODE_HINT}")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": harmless for the restricted loader
            warnings.simplefilter("ignore", UserWarning)
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for forbidden globals, RuntimeError/EOFError for damaged files
        logger.info("torch.load refused a latent code file: %s", type(err).__name__)
        raise LatentCodeError(
            f"{name} is a Python pickle that is not a plain PyTorch tensor file (it is never executed); "
            f"{SAVE_CODE_HINT}"
        ) from err
    tensor = loaded
    if isinstance(loaded, dict):
        found = [key for key in LATENT_DICT_KEYS if isinstance(loaded.get(key), torch.Tensor)]
        if len(found) != 1:
            keys = ", ".join(repr(str(key)) for key in list(loaded)[:8]) or "no keys"
            wanted = ", ".join(repr(key) for key in LATENT_DICT_KEYS)
            problem = "several codes" if found else "no tensor"
            raise LatentCodeError(
                f"{name} holds a dict ({keys}) with {problem} under the keys we look for ({wanted}); {SAVE_CODE_HINT}"
            )
        tensor = loaded[found[0]]
    if not isinstance(tensor, torch.Tensor):
        raise LatentCodeError(f"{name} holds a {type(loaded).__name__}, not a tensor; {SAVE_CODE_HINT}")
    if not tensor.is_floating_point():
        raise LatentCodeError(f"{name} holds a tensor of dtype {tensor.dtype}; a W+ code must be float16/32/64")
    array = tensor.detach().to(torch.float64 if tensor.dtype == torch.float64 else torch.float32).numpy()
    _check_latent_dtype_and_shape(array.dtype, array.shape, name)
    return array


def _check_latent_dtype_and_shape(dtype: np.dtype, shape: tuple[int, ...], name: str) -> None:
    if dtype.hasobject:
        raise LatentCodeError(f"{name} holds Python objects (dtype {dtype}); only plain float arrays are accepted")
    if dtype.kind != "f":
        raise LatentCodeError(f"{name} has dtype {dtype}; a W+ code must be float16, float32 or float64")
    if tuple(shape) not in LATENT_SHAPES:
        hint = ""
        if tuple(shape) in ((W_DIM,), (1, W_DIM)):
            hint = " This looks like a single W vector: repeat it for the 18 layers (numpy.tile) to make a W+ code."
        raise LatentCodeError(
            f"{name} has shape {tuple(shape)}; expected a W+ code of shape (1, 18, 512) or (18, 512).{hint}"
        )


def load_latent_code(source: str | Path | bytes | np.ndarray) -> np.ndarray:
    """Read and validate a user-supplied W+ code (e.g. from e4e or a projector) for StyleGAN2 FFHQ 1024².

    Accepted: a ``.npy`` file, a ``.pt``/``.pth`` file from ``torch.save`` holding the tensor or a dict with it under
    one of :data:`LATENT_DICT_KEYS` (read with ``torch.load(weights_only=True)``), or an array; shape (1, 18, 512) or
    (18, 512), float16/32/64, all finite, every row norm ≤ ``MAX_LATENT_ROW_NORM`` (official codes: 33–41).
    ``.npy`` files are parsed with ``allow_pickle=False`` after checking the header, and PyTorch files only with the
    restricted unpickler, so no code in an uploaded file is ever executed.

    Args:
        source: a file path (str or Path), the file's bytes, or an array.

    Returns:
        (1, 18, 512) float32, a new array (never a view of ``source``).

    Raises:
        LatentCodeError: unreadable or oversized file, neither a .npy nor a PyTorch tensor file (other pickles,
            .npz, other ZIPs, dicts without a code under a known key), object or non-float dtype, wrong shape (the
            message gives the shape found and expected), NaN/inf, or absurd magnitude.
    """
    if isinstance(source, np.ndarray):
        name = "the latent code"
        _check_latent_dtype_and_shape(source.dtype, source.shape, name)
        array = source
    else:
        data, name = _read_source_bytes(source)
        array = _array_from_npy_bytes(data, name)
    if not np.isfinite(array).all():
        raise LatentCodeError(f"{name} contains NaN or infinite values; a W+ code must be finite")
    row_norms = np.linalg.norm(array.reshape(NUM_WS, W_DIM).astype(np.float64), axis=1)
    if row_norms.max() > MAX_LATENT_ROW_NORM:
        raise LatentCodeError(
            f"{name} has a layer of norm {row_norms.max():.4g}; W+ codes have layer norms of about 30–50 (at most "
            f"{MAX_LATENT_ROW_NORM:g} is accepted), so this is not a StyleGAN2 W+ code"
        )
    return np.array(array, dtype=np.float32).reshape(1, NUM_WS, W_DIM)
