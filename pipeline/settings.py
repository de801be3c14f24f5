"""End-to-end settings of one double-chin removal, shared by the UI, the CLI and the API.

Defaults follow the paper's official test code (METHOD.md §5–§8); where the official code disagrees with itself the
chosen source is named. Settings are frozen: derive variants with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from pipeline.config import NUM_WS
from pipeline.latent.editing import BOUNDARY_VARIANTS, MIX_LAYERS_DIFFUSE, MIX_LAYERS_WARP
from pipeline.latent.inversion import OptimisationSettings
from pipeline.refinement.diffuse import CPU_DIFFUSE, DiffuseSettings

Method = Literal["warp", "diffuse"]
Inversion = Literal["encoder", "optimise"]
BoundaryKind = Literal["fine", "coarse"]

METHODS: tuple[str, ...] = ("warp", "diffuse")
INVERSIONS: tuple[str, ...] = ("encoder", "optimise")
STRENGTH_MIN = -8.0  # UI range 0 … −8 (METHOD.md §5, suggested slider range)
STRENGTH_MAX = 0.0
MAX_STEPS = 1000  # upper bound of any optimisation loop a user can ask for (the official projector's 1000 steps)
AUTO_STRENGTH_BOUNDARY = ("fine", "all")  # the only boundary shipped with intercepts (April-2021 main_warp.py)
SEED_MAX = 2**31 - 1  # ours: the largest seed every front end accepts (a browser number and torch both hold it)


@dataclass(frozen=True)
class RemovalSettings:
    """What to do to one photo. Field comments give unit and source."""

    strength: float = -5.0  # α of `wp + α·n`; −5 in the README commands and main_warp.py (main_diffuse.py says −4)
    auto_strength: bool = False  # per-layer step d_i = −1.8·|n_i·w_i + b_i| (April-2021 main_warp.py) instead of α
    boundary: BoundaryKind = "fine"  # fine W+ boundary keeps identity better (official README); coarse = W SVM
    boundary_variant: str = "all"  # fine: all / psi_0.5 / psi_0.8; coarse: psi_0.5 / psi_0.8
    method: Method = "warp"  # refinement: "warp" (fast, no optimisation) or "diffuse" (100-step optimisation)
    mix_layers: tuple[int, ...] | None = None  # layers restored from the original code; None = the method's default
    mix_ratio: float = 1.0  # 1.0 restores those layers fully (easy_style_mixing mix_ratio=1.0 at test time)
    inversion: Inversion = "encoder"  # "encoder" = e4e only; "optimise" = e4e then W+ optimisation
    inversion_steps: int = OptimisationSettings.steps  # W+ optimisation steps after e4e (source: OptimisationSettings)
    refine_steps: int = DiffuseSettings.steps  # diffuse: Adam steps (main_diffuse.py; see DiffuseSettings)
    refine_lr: float = DiffuseSettings.learning_rate  # diffuse: Adam learning rate (main_diffuse.py)
    face_index: int | None = None  # which face (0 = largest); None = the largest
    all_faces: bool = False  # edit every detected face instead of one
    seed: int = 0  # seeds every random choice (optimisation noise), so results repeat exactly

    def __post_init__(self) -> None:
        if not STRENGTH_MIN - 1e-9 <= self.strength <= STRENGTH_MAX + 1e-9:
            raise ValueError(f"strength must be between {STRENGTH_MIN} and {STRENGTH_MAX}, got {self.strength}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.inversion not in INVERSIONS:
            raise ValueError(f"inversion must be one of {INVERSIONS}, got {self.inversion!r}")
        if self.boundary not in BOUNDARY_VARIANTS:
            raise ValueError(f"boundary must be 'fine' or 'coarse', got {self.boundary!r}")
        if self.boundary_variant not in BOUNDARY_VARIANTS[self.boundary]:
            raise ValueError(
                f"the {self.boundary} boundary has the variants {', '.join(BOUNDARY_VARIANTS[self.boundary])}, "
                f"got {self.boundary_variant!r}"
            )
        if self.auto_strength and (self.boundary, self.boundary_variant) != AUTO_STRENGTH_BOUNDARY:
            raise ValueError(
                "the automatic strength needs the fine/all boundary (the only one with intercepts), "
                f"got {self.boundary}/{self.boundary_variant}"
            )
        if not 0.0 <= self.mix_ratio <= 1.0:
            raise ValueError(f"mix_ratio must be between 0 and 1, got {self.mix_ratio}")
        for name in ("inversion_steps", "refine_steps"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_STEPS:
                raise ValueError(f"{name} must be between 0 and {MAX_STEPS}, got {value}")
        if not 0.0 < self.refine_lr <= 1.0:
            raise ValueError(f"refine_lr must be in (0, 1], got {self.refine_lr}")
        if self.mix_layers is not None and any(not 0 <= i < NUM_WS for i in self.mix_layers):
            raise ValueError(f"mix_layers must be W+ layer indices 0–17, got {self.mix_layers}")
        if self.mix_ratio == 1.0 and set(self.effective_mix_layers) >= set(range(NUM_WS)):
            raise ValueError("mix_layers restores all 18 layers from the original code, so nothing would be edited")
        if self.face_index is not None and self.face_index < 0:
            raise ValueError(f"face_index must be 0 or more, got {self.face_index}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be between 0 and {SEED_MAX}, got {self.seed}")

    @property
    def effective_mix_layers(self) -> tuple[int, ...]:
        """Layers restored from the original code: the explicit choice, else the method's official default."""
        if self.mix_layers is not None:
            return tuple(self.mix_layers)
        return MIX_LAYERS_DIFFUSE if self.method == "diffuse" else MIX_LAYERS_WARP

    @property
    def optimises_inversion(self) -> bool:
        """Whether the inversion runs the W+ optimisation after e4e (unless a W+ code is given)."""
        return self.inversion == "optimise" and self.inversion_steps > 0

    def inversion_key(self, w_plus: np.ndarray | None = None) -> tuple[object, ...]:
        """What a face's W+ code depends on besides the photo: the given code, else the inversion settings.

        Equal keys give equal codes, so a front end can cache :meth:`DoubleChinRemover.prepare` under
        ``(photo, face, *settings.inversion_key(w_plus))`` and re-run only the edit when the strength, the method or
        the mixing changes.

        Args:
            w_plus: a user-supplied (1, 18, 512) code, which replaces the inversion.
        """
        if w_plus is not None:
            return ("user code", hashlib.sha256(np.ascontiguousarray(w_plus).tobytes()).hexdigest())
        if self.optimises_inversion:
            return ("optimise", self.inversion_steps, self.seed)
        return ("encoder",)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def default_settings(device: torch.device) -> RemovalSettings:
    """Sensible defaults per device: a GPU can afford the paper's diffuse refinement, a CPU gets the fast warp.

    On a CPU, choosing diffuse uses the CPU recipe's step count and learning rate (``refine_diffuse.CPU_DIFFUSE``:
    50 steps at lr 0.02, ≈42 s here instead of ≈130 s; see docs/performance.md for its measured cost).
    """
    if device.type == "cuda":
        return RemovalSettings(method="diffuse", inversion="optimise", inversion_steps=200)
    return RemovalSettings(
        method="warp", inversion="encoder", refine_steps=CPU_DIFFUSE.steps, refine_lr=CPU_DIFFUSE.learning_rate
    )
