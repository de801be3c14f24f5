"""One step of the CPU diffuse recipe: where its time goes, and the step of this tree against an earlier revision.

Usage (from the repo root)::

    .venv/bin/python -m bench.bench_diffuse_step --profile [--profile-steps 2] [--revision REV]
    .venv/bin/python -m bench.bench_diffuse_step --against REV [--rounds 5] [--steps-per-run 2] [--json PATH]
    .venv/bin/python -m bench.bench_diffuse_step --scale-rule [--rounds 5]

The problem is the benchmark face's (:func:`bench.bench_diffuse_steps.diffuse_problem`: full-size random weights,
the 12 MP photo, synthetic labels, edit −5) with the CPU recipe (:data:`pipeline.refinement.diffuse.CPU_DIFFUSE`:
256² render, VGG16 at 128²). A step is what the loop does: the loss of
:func:`pipeline.refinement.diffuse.diffuse_objective`, its backward and an Adam update. Torch runs one thread and the
figures are process CPU time (on a shared machine that is the work itself; see docs/performance.md).

- ``--profile``: torch.profiler over a few steps, self CPU time summed into groups: the generator's convolutions
  per level (forward; backward split into the input-gradient-only and the weight-gradient-too calls), its FIR blurs
  and toRGB layers, VGG16 (forward, backward), element-wise work, Adam (``--revision``: with the generator and VGG16
  modules of that git revision, see below).
- ``--against REV``: this tree's step against the same step with ``pipeline/networks/stylegan2.py`` and
  ``pipeline/networks/perceptual.py`` as they are at git revision ``REV`` (loaded from ``git show`` as separate
  modules, holding the same weights), interleaved; then both run the whole recipe (50 steps) from the same code and
  the largest relative differences of the loss curves and of the final codes are printed (exactness check). The
  implied diffuse figure is ``(steps × step + one 1024² forward) / forward``, all one-thread CPU time.
- ``--scale-rule``: per modulated layer of the 256² render, the step with that layer folding the style into the
  weight against scaling its input (``ModulatedConv2d.scale_input_under_grad``), interleaved.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from bench.bench_diffuse_steps import DiffuseProblem, diffuse_problem
from bench.common import Record
from pipeline.allocator import keep_freed_memory
from pipeline.networks.perceptual import DIFFUSE_FEATURE_TAP, VGG16Features, feature_mse
from pipeline.networks.stylegan2 import Generator, ModulatedConv2d
from pipeline.refinement.diffuse import CPU_DIFFUSE, DiffuseSettings, FeatureDistance, diffuse_objective
from pipeline.remover import cached_target_distance, diffuse_features

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPARED_MODULES = ("pipeline/networks/stylegan2.py", "pipeline/networks/perceptual.py")
GENERATOR_CHANNELS = (512, 256, 128)  # channel widths of the FFHQ generator's levels up to 256²
VGG_INPUT_CHANNELS = 3


@dataclasses.dataclass
class Stepper:
    """Runs diffuse steps from the problem's code with one generator and one feature distance."""

    generator: torch.nn.Module
    distance: FeatureDistance
    problem: DiffuseProblem
    settings: DiffuseSettings = CPU_DIFFUSE

    def __post_init__(self) -> None:
        p = self.problem
        self.loss_of = diffuse_objective(self.generator, self.distance, p.target, p.outside_weight, self.settings)

    def run(self, steps: int) -> tuple[list[float], np.ndarray]:
        """``steps`` Adam steps from the problem's code: (losses, final code)."""
        w_plus = torch.tensor(self.problem.code, requires_grad=True)
        optimiser = torch.optim.Adam([w_plus], lr=self.settings.learning_rate)
        losses = []
        with torch.enable_grad():
            for _ in range(steps):
                optimiser.zero_grad(set_to_none=True)
                loss = self.loss_of(w_plus)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
        return losses, w_plus.detach().numpy().copy()


def cpu_seconds(run: Callable[[], object]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def interleaved_cpu(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Process CPU seconds of each run, alternating (one untimed warm-up of each first)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(cpu_seconds(run))
    return times


def forward_cpu_s(generator: torch.nn.Module, runs: int = 3) -> float:
    """Median one-thread CPU time of a 1024² forward (no grad) of the problem's code."""
    code = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        generator.synthesis(code)
        return statistics.median(cpu_seconds(lambda: generator.synthesis(code)) for _ in range(runs))


# ---------------------------------------------------------------------------------------------------------------------
# --against REV


def module_at(revision: str, path: str, name: str) -> ModuleType:
    """Import ``path`` as at git ``revision``, as module ``name`` (its own imports resolve to this tree)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=REPO_ROOT, check=True, capture_output=True, text=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="c2f_rev_"))
    file = folder / f"{name}.py"
    file.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered while it executes
    spec.loader.exec_module(module)
    return module


def models_at(revision: str, generator: Generator, vgg: VGG16Features) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The generator and VGG16 classes of ``revision`` holding the same weights as ``generator`` and ``vgg``."""
    old_g, old_p = (module_at(revision, path, f"rev_{Path(path).stem}") for path in COMPARED_MODULES)
    config = old_g.GeneratorConfig(**dataclasses.asdict(generator.config))
    old_generator = old_g.Generator(config)
    old_generator.load_state_dict(generator.state_dict())
    old_generator.latent_avg.copy_(generator.latent_avg)
    old_vgg = old_p.VGG16Features(old_p.VGGConfig(widths=vgg.config.widths))
    old_vgg.load_state_dict(vgg.state_dict())
    return old_generator.eval().requires_grad_(False), old_vgg.eval().requires_grad_(False)


def vgg_distance(vgg: torch.nn.Module, size: int) -> FeatureDistance:
    return cached_target_distance(
        partial(diffuse_features, vgg, size=size), partial(feature_mse, tap=DIFFUSE_FEATURE_TAP)
    )


def largest_relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def against(args: argparse.Namespace, problem: DiffuseProblem, vgg: VGG16Features, record: Record) -> None:
    old_generator, old_vgg = models_at(args.against, problem.generator, vgg)
    size = CPU_DIFFUSE.feature_size
    sides = {
        f"{args.against}": Stepper(old_generator, vgg_distance(old_vgg, size), problem),
        "this tree": Stepper(problem.generator, vgg_distance(vgg, size), problem),
    }
    k = args.steps_per_run
    times = interleaved_cpu({name: partial(side.run, k) for name, side in sides.items()}, args.rounds)
    forward = {name: forward_cpu_s(side.generator) for name, side in sides.items()}
    summary = {}
    for name, values in times.items():
        step = statistics.median(values) / k
        implied = (CPU_DIFFUSE.steps * step + forward[name]) / forward[name]
        summary[name] = {"step_cpu_s": step, "forward_cpu_s": forward[name], "implied_diffuse_ratio": implied}
        spread = f"{min(values) / k:.3f}–{max(values) / k:.3f}"
        print(
            f"{name:<14} step {step:.3f} CPU s (range {spread}, n={len(values)})   1024² forward "
            f"{forward[name]:.3f} CPU s   implied diffuse ({CPU_DIFFUSE.steps} steps + final render) "
            f"{implied:.1f}× a forward"
        )
    before, after = (summary[name]["step_cpu_s"] for name in sides)
    print(f"step after / before: {after / before:.3f}")
    record.extra |= {"sides": summary, "step_ratio": after / before}
    if args.skip_recipe:
        return
    (old_losses, old_code), (new_losses, new_code) = (side.run(CPU_DIFFUSE.steps) for side in sides.values())
    loss_diff = largest_relative(np.array(new_losses), np.array(old_losses))
    moved = np.abs(old_code - problem.code).max()
    code_diff = float(np.abs(new_code - old_code).max() / moved)
    norm_diff = float(np.linalg.norm(new_code - old_code) / np.linalg.norm(old_code - problem.code))
    print(
        f"whole recipe: largest relative loss difference {loss_diff:.2e}; final codes differ by {code_diff:.2e} of "
        f"the largest move ({moved:.4f}), in norm {norm_diff:.2e} of the move; final loss {old_losses[-1]:.6f} → "
        f"{new_losses[-1]:.6f}"
    )
    record.extra["loss_curve_rel_diff"] = loss_diff
    record.extra["final_code_diff_of_move"] = {"max": code_diff, "norm": norm_diff}


# ---------------------------------------------------------------------------------------------------------------------
# --scale-rule


def scale_rule(args: argparse.Namespace, problem: DiffuseProblem, vgg: VGG16Features, record: Record) -> None:
    stepper = Stepper(problem.generator, vgg_distance(vgg, CPU_DIFFUSE.feature_size), problem)
    levels = int(np.log2(CPU_DIFFUSE.optimise_size)) - 1
    used = ["conv1", "to_rgb1"] + [f"convs.{i}" for i in range(2 * levels - 2)]
    used += [f"to_rgbs.{i}" for i in range(levels - 1)]
    layers = {name: module.conv for name, module in problem.generator.named_modules() if name in used}
    for name, layer in layers.items():
        default = layer.scale_input_under_grad

        def with_rule(scale: bool, layer: ModulatedConv2d = layer) -> Callable[[], object]:
            def run() -> object:
                layer.scale_input_under_grad = scale
                return stepper.run(args.steps_per_run)

            return run

        times = interleaved_cpu({"fold": with_rule(False), "scale": with_rule(True)}, args.rounds)
        layer.scale_input_under_grad = default
        fold, scale = (statistics.median(times[k]) / args.steps_per_run for k in ("fold", "scale"))
        out_channels, in_channels, k = layer.weight.shape[1:4]
        work = k * k * in_channels * out_channels / (in_channels + out_channels)
        print(
            f"{name:<10} {in_channels:>3}→{out_channels:<3} k{k} work {work:6.0f}: step fold {fold:.3f} s, scale "
            f"{scale:.3f} s, scale − fold {1e3 * (scale - fold):+6.1f} ms   (now: {'scale' if default else 'fold'})"
        )
        record.extra[name] = {"work": work, "fold_step_s": fold, "scale_step_s": scale, "now_scales": default}


# ---------------------------------------------------------------------------------------------------------------------
# --profile


CONV_OPS = {
    "aten::mkldnn_convolution": False,  # (name: is a backward op)
    "aten::_convolution": False,  # transposed convolutions spend their forward here
    "aten::_slow_conv2d_forward": False,  # the 1×1 toRGB convolutions
    "aten::slow_conv_transpose2d": False,
    "aten::convolution_backward": True,
    "aten::_slow_conv2d_backward": True,
}


def op_weight_shape(module: torch.nn.Module) -> tuple[int, ...]:
    """The weight shape a module's convolution op records: (out, in, k, k), or (in, out, k, k) when transposed."""
    weight = module.weight
    if weight.ndim == 5:  # a modulated convolution: (1, out, in, k, k)
        out_channels, in_channels, k = weight.shape[1], weight.shape[2], weight.shape[3]
        if module.upsample:
            return (in_channels, out_channels, k, k)
        return (out_channels, in_channels, k, k)
    return tuple(weight.shape)


def layer_names(problem: DiffuseProblem, stepper: Stepper) -> dict[tuple[tuple[int, ...], tuple[int, ...]], str]:
    """(input shape, op weight shape) of every convolution in a step → which layer(s) it is."""
    modules = []
    for module in problem.generator.modules():
        if type(module).__name__ == ModulatedConv2d.__name__:  # also a revision's class
            kind = "toRGB" if module.weight.shape[-1] == 1 else "up-conv" if module.upsample else "conv"
            modules.append((module, f"generator {kind}"))
    modules += [(m, "VGG16 conv") for m in problem.vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    found: dict[tuple[tuple[int, ...], tuple[int, ...]], str] = {}

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], name: str) -> None:
        shape = tuple(inputs[0].shape[1:])
        key = (shape, op_weight_shape(module))
        label = f"{name} {shape[0]}→{key[1][1] if 'up' in name else key[1][0]} @{shape[1]}² in"
        found[key] = label if found.get(key, label) == label else f"{found[key]} = {label}"

    handles = [m.register_forward_pre_hook(partial(hook, name=n)) for m, n in modules]
    try:
        stepper.run(1)
    finally:
        for handle in handles:
            handle.remove()
    return found


def ancestors(event: object) -> list[str]:
    names = []
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        names.append(parent.name)
        parent = parent.cpu_parent
    return names


def profile_step(args: argparse.Namespace, problem: DiffuseProblem, vgg: VGG16Features, record: Record) -> None:
    if args.revision:
        generator, vgg = models_at(args.revision, problem.generator, vgg)
        problem = dataclasses.replace(problem, generator=generator, vgg=vgg)
    stepper = Stepper(problem.generator, vgg_distance(vgg, CPU_DIFFUSE.feature_size), problem)
    stepper.run(2)
    step_s = statistics.median(cpu_seconds(partial(stepper.run, 1)) for _ in range(3))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        stepper.run(args.profile_steps)
    names = layer_names(problem, stepper)
    groups: dict[str, float] = defaultdict(float)
    total = 0.0
    for event in prof.events():
        micros = event.self_cpu_time_total
        if micros <= 0:
            continue
        total += micros
        parents = ancestors(event)
        in_backward = any(name.startswith("autograd::engine") for name in [*parents, event.name])
        if event.name in CONV_OPS:
            backward = CONV_OPS[event.name]
            shapes = [tuple(shape) for shape in event.input_shapes]
            shape, weight = (shapes[1][1:], shapes[2]) if backward else (shapes[0][1:], shapes[1])
            name = names.get((shape, weight), f"FIR blur / skip up-sampling {shape[0]} ch @{shape[1]}² in")
            key = f"{name}: {'backward' if backward else 'forward'}"
        elif any(name.startswith("Optimizer.step") for name in [*parents, event.name]):
            key = "Adam"
        else:
            key = f"element-wise/other {'backward' if in_backward else 'forward'}: {event.name}"
        groups[key] += micros
    steps = args.profile_steps
    print(
        f"one step: {step_s:.3f} CPU s (median of 3, not profiled); profiled ({steps} steps): "
        f"{total / 1e6 / steps:.3f} s self CPU per step"
    )
    for key, micros in sorted(groups.items(), key=lambda kv: -kv[1])[: args.profile_rows]:
        print(f"  {key:<70} {micros / 1e3 / steps:8.1f} ms/step  {100 * micros / total:5.1f} %")
    coarse: dict[str, float] = defaultdict(float)
    for key, micros in groups.items():
        direction = "backward" if "backward" in key else "forward"
        if key.startswith(("generator", "FIR")):
            coarse[f"generator convolutions (incl. FIR, toRGB), {direction}"] += micros
        elif key.startswith("VGG16"):
            coarse[f"VGG16 convolutions, {direction}"] += micros
        elif key == "Adam":
            coarse[key] += micros
        else:
            coarse[f"element-wise and other ops, {direction}"] += micros
    print("coarse:")
    for key, micros in sorted(coarse.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<60} {micros / 1e3 / steps:8.1f} ms/step  {100 * micros / total:5.1f} %")
    record.extra["profile_ms_per_step"] = {k: v / 1e3 / steps for k, v in groups.items()}
    record.extra["coarse_ms_per_step"] = {k: v / 1e3 / steps for k, v in coarse.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--profile", action="store_true", help="where one step's time goes")
    mode.add_argument("--against", metavar="REV", help="this tree's step against git revision REV's modules")
    mode.add_argument("--scale-rule", action="store_true", help="fold vs scale per modulated layer")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each side (default 5)")
    parser.add_argument("--steps-per-run", type=int, default=2, help="steps in one timed run (default 2)")
    parser.add_argument("--skip-recipe", action="store_true", help="--against: time the steps only (no exactness run)")
    parser.add_argument("--revision", default=None, help="--profile: the modules of this git revision")
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--profile-rows", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time is the work)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    problem = diffuse_problem()
    vgg = problem.vgg
    record = Record("diffuse_step")
    if args.profile:
        profile_step(args, problem, vgg, record)
    elif args.against:
        against(args, problem, vgg, record)
    else:
        scale_rule(args, problem, vgg, record)
    record.write(args.json)


if __name__ == "__main__":
    main()
