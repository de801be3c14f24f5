"""Fewer diffuse steps on the CPU: how much of the current CPU recipe's loss decrease a shorter schedule reaches.

Usage (from the repo root)::

    .venv/bin/python -m bench.bench_diffuse_steps [--variants 25/0.04 30/0.035 50/0.02@edited] [--json PATH]

The face of the end-to-end benchmark (full-size random weights, the 12 MP photo, the synthetic label map; see
:mod:`bench.bench_end_to_end`) is edited at strength −5 with the diffuse method's settings; then the diffuse loop
runs with the CPU recipe (:data:`pipeline.refinement.diffuse.CPU_DIFFUSE`, 50 steps at lr 0.02) and with each
``STEPS/LR`` variant (same render and VGG sizes). Each final code is scored by the recipe's own objective (masked
pixel loss + λ·VGG feature loss at the recipe's sizes, evaluated on the final code, the same for all), and a variant
is given as the share of the recipe's decrease it reaches: ``(L(start) − L(variant)) / (L(start) − L(recipe))``,
``L(start)`` being the recipe's loss at its start (the original code). ``STEPS/LR@START`` starts a variant elsewhere:
``edited`` (the edited code, which rendered the pasted neck) or ``halfway`` between the two (not the official recipe,
which starts from the original code, METHOD.md §7).
Times are the loop's wall clock (steps × a step's cost, so they scale with the step count).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from functools import partial

import numpy as np
import torch

from bench.bench_end_to_end import load_remover, prepare_once
from bench.common import Record, reference_forward_s, row_from
from bench.full_size import full_size_weights_dir
from pipeline.allocator import keep_freed_memory
from pipeline.latent.editing import edit_latent
from pipeline.networks.perceptual import DIFFUSE_FEATURE_TAP, feature_mse
from pipeline.refinement.compositing import FEATHER_DIFFUSE, composite, feather_mask
from pipeline.refinement.diffuse import CPU_DIFFUSE, DiffuseResult, DiffuseSettings, FeatureDistance, diffuse_refine
from pipeline.refinement.neck_mask import NECK_MASK_DIFFUSE, neck_mask
from pipeline.remover import cached_target_distance, diffuse_features
from pipeline.settings import default_settings

STRENGTH = -5.0  # README / main_warp.py default
DEFAULT_VARIANTS = ("25/0.04", "30/0.035")


@dataclasses.dataclass
class DiffuseProblem:
    """The benchmark face's diffuse refinement, ready to run (what ``remover.edit`` passes to the loop)."""

    generator: torch.nn.Module  # full-size FFHQ config-f stand-in
    distance: FeatureDistance  # VGG16 relu4_3 MSE at the CPU recipe's feature size, target features cached
    target: np.ndarray  # (1024, 1024, 3) uint8: the aligned photo with the edited neck pasted in
    outside_weight: np.ndarray  # (1024, 1024) float32: 1 − the feathered neck mask
    code: np.ndarray  # (1, 18, 512) float32: the photo's code (where the recipe starts)
    forward_s: float  # one 1024² forward (no grad) in this process, seconds
    vgg: torch.nn.Module  # the VGG16 the distance runs
    edited_code: np.ndarray  # (1, 18, 512) float32: the edited code (what rendered the pasted neck)

    def refine(self, code: np.ndarray, options: DiffuseSettings) -> DiffuseResult:
        """Run the diffuse loop from ``code``."""
        return diffuse_refine(self.generator, self.distance, self.target, self.outside_weight, code, settings=options)

    def start(self, name: str) -> np.ndarray:
        """A starting code by name: ``original`` (the recipe's), ``edited``, or ``halfway`` between them."""
        if name == "original":
            return self.code
        if name == "edited":
            return self.edited_code
        if name == "halfway":
            return (0.5 * (self.code + self.edited_code)).astype(np.float32)
        raise ValueError(f"unknown start {name!r}: original, edited or halfway")

    def objective(self, code: np.ndarray) -> float:
        """The recipe's loss at ``code`` (one step with lr 0 reports it)."""
        return self.refine(code, dataclasses.replace(CPU_DIFFUSE, steps=1, learning_rate=0.0)).losses[0]


def diffuse_problem() -> DiffuseProblem:
    """Load the full-size stand-ins, prepare the benchmark face and build its diffuse problem (edit at −5)."""
    full_size_weights_dir()
    remover, labels = load_remover("synthetic")
    settings = dataclasses.replace(default_settings(torch.device("cpu")), method="diffuse", strength=STRENGTH)
    _, prepared = prepare_once(remover, labels, settings)
    boundary = remover.boundary(settings.boundary, settings.boundary_variant)
    mix = {"mix_layers": settings.effective_mix_layers, "mix_ratio": settings.mix_ratio}
    edited_code = edit_latent(prepared.w_plus, boundary, strength=STRENGTH, **mix)
    edited = remover.render(edited_code)
    region = neck_mask(prepared.labels, prepared.landmarks, settings=NECK_MASK_DIFFUSE)
    region &= prepared.aligned.inside_mask() > 0
    blend = feather_mask(region, dilate_px=FEATHER_DIFFUSE.dilate_px, blur_px=FEATHER_DIFFUSE.blur_px)
    target = composite(prepared.aligned.image, edited, region.astype(np.float32))
    distance = cached_target_distance(
        partial(diffuse_features, remover.models.vgg, size=CPU_DIFFUSE.feature_size),
        partial(feature_mse, tap=DIFFUSE_FEATURE_TAP),
    )
    generator = remover.models.generator
    forward = reference_forward_s(generator)
    code = prepared.w_plus
    return DiffuseProblem(generator, distance, target, 1.0 - blend, code, forward, remover.models.vgg, edited_code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help="STEPS/LR[@START]")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    keep_freed_memory()
    problem = diffuse_problem()
    refine, objective = problem.refine, problem.objective
    record = Record("diffuse_steps")
    record.extra["forward_s"] = forward = problem.forward_s
    start_loss = objective(problem.code)
    runs = {f"{CPU_DIFFUSE.steps}/{CPU_DIFFUSE.learning_rate:g} (recipe)": (CPU_DIFFUSE, "original")}
    for variant in args.variants:
        schedule, _, start = variant.partition("@")
        steps, rate = schedule.split("/")
        options = dataclasses.replace(CPU_DIFFUSE, steps=int(steps), learning_rate=float(rate))
        runs[variant] = (options, start or "original")
    scores: dict[str, dict[str, float]] = {}
    for name, (options, start) in runs.items():
        begin = time.perf_counter()
        result = refine(problem.start(start), options)
        seconds = time.perf_counter() - begin
        scores[name] = {"seconds": seconds, "final_loss": objective(result.w_plus)}
        scores[name]["start_loss"] = objective(problem.start(start))
        record.rows.append(row_from(f"diffuse {name}", [seconds], forward_s=forward))
    recipe = next(iter(scores.values()))
    for name, score in scores.items():
        score["share_of_recipe_decrease"] = (start_loss - score["final_loss"]) / (start_loss - recipe["final_loss"])
        print(
            f"{name:<20} {score['seconds']:7.1f} s = {score['seconds'] / forward:5.1f}× a forward   "
            f"loss {score['start_loss']:.5f} → {score['final_loss']:.5f}   share of the recipe's decrease "
            f"{score['share_of_recipe_decrease']:.3f}"
        )
    record.extra["start_loss"] = start_loss
    record.extra["scores"] = scores
    record.write(args.json)


if __name__ == "__main__":
    main()
