"""RemovalSettings: validation, the inversion cache key, the method's defaults and the per-device defaults."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pipeline.refinement.diffuse import CPU_DIFFUSE
from pipeline.settings import SEED_MAX, RemovalSettings, default_settings


def test_defaults_are_the_official_ones() -> None:
    settings = RemovalSettings()
    assert (settings.strength, settings.boundary, settings.boundary_variant) == (-5.0, "fine", "all")
    assert settings.effective_mix_layers == tuple(range(6, 18))  # main_warp.py
    assert dataclasses.replace(settings, method="diffuse").effective_mix_layers == tuple(range(7, 18))
    assert (settings.refine_steps, settings.refine_lr) == (100, 0.01)  # main_diffuse.py --num_iterations, lr
    assert settings.inversion_steps == 50  # ours: e4e lands close, far fewer than the projector's 1000


def test_default_settings_per_device() -> None:
    cpu = default_settings(torch.device("cpu"))
    assert (cpu.method, cpu.inversion) == ("warp", "encoder")
    assert (cpu.refine_steps, cpu.refine_lr) == (CPU_DIFFUSE.steps, CPU_DIFFUSE.learning_rate)
    gpu = default_settings(torch.device("cuda"))
    assert (gpu.method, gpu.inversion) == ("diffuse", "optimise") and gpu.optimises_inversion


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strength": 0.5}, "strength must be between -8.0 and 0.0"),
        ({"method": "blend"}, "method must be one of"),
        ({"boundary": "coarse", "boundary_variant": "all"}, "the coarse boundary has the variants psi_0.5, psi_0.8"),
        ({"auto_strength": True, "boundary_variant": "psi_0.5"}, "needs the fine/all boundary"),
        ({"mix_layers": tuple(range(18))}, "nothing would be edited"),
        ({"mix_layers": (18,)}, "W\\+ layer indices 0–17"),
        ({"inversion_steps": 1001}, "inversion_steps must be between 0 and 1000"),
        ({"refine_lr": 0.0}, "refine_lr must be in"),
        ({"face_index": -1}, "face_index must be 0 or more"),
        ({"seed": SEED_MAX + 1}, f"seed must be between 0 and {SEED_MAX}"),
        ({"seed": -1}, "seed must be between"),
    ],
)
def test_invalid_settings_are_refused_with_a_message(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RemovalSettings(**changes)


def test_the_largest_seed_is_accepted_everywhere() -> None:
    settings = RemovalSettings(seed=SEED_MAX)
    torch.Generator().manual_seed(settings.seed)
    np.random.default_rng(settings.seed)
    assert SEED_MAX <= 2**53 - 1  # a browser number holds it exactly


def test_inversion_key_depends_only_on_what_changes_the_code() -> None:
    base = RemovalSettings(strength=-5.0, inversion="encoder", inversion_steps=50, seed=0)
    key = base.inversion_key()
    assert key == RemovalSettings(strength=-1.0, method="diffuse", seed=7, mix_layers=(8,)).inversion_key()
    assert RemovalSettings(inversion="optimise", inversion_steps=0).inversion_key() == key  # 0 steps = encoder only
    optimised = RemovalSettings(inversion="optimise", inversion_steps=20, seed=1)
    assert optimised.inversion_key() != key
    assert optimised.inversion_key() != dataclasses.replace(optimised, seed=2).inversion_key()
    assert optimised.inversion_key() != dataclasses.replace(optimised, inversion_steps=21).inversion_key()
    code = np.full((1, 18, 512), 0.25, np.float32)
    assert base.inversion_key(code) == optimised.inversion_key(code)  # a given code replaces the inversion
    assert base.inversion_key(code) != base.inversion_key(code + 1)
    assert base.inversion_key(code) != key


def test_settings_round_trip_through_json() -> None:
    settings = RemovalSettings(mix_layers=(6, 7), face_index=1, seed=3)
    data = json.loads(json.dumps(settings.to_dict()))
    assert RemovalSettings(**{**data, "mix_layers": tuple(data["mix_layers"])}) == settings
