"""Time one W+ optimisation step and one diffuse step with full-size networks (the cost of the real ones).

Usage (from the repo root): ``.venv/bin/python -m bench.bench_inversion [--steps 3] [--warmup 1] [--threads 2]
[--sizes 256 1024] [--device cpu]``

The generator is StyleGAN2 FFHQ config-f (``GeneratorConfig.ffhq()``) and the perceptual network the full VGG16 conv
stack (``VGGConfig()``), both with seeded random weights, so every step does exactly the work the real weights do.
For each render size it runs :func:`pipeline.latent.inversion.optimise_latent` (perceptual + pixel loss at 256²) and
:func:`pipeline.refinement.diffuse.diffuse_refine` (masked pixel loss + VGG relu4_3 feature loss at 256²), timing each
step from the ``should_stop`` poll before it to the ``progress`` call after it. The losses are built as the remover
builds them (target features computed once; ``--uncached`` recomputes them every step, for comparison). The CPU path
of the app renders 256² while optimising; 1024² is the official setting (and the GPU path).

Prints per-step median / min / max wall time, steps per second, process CPU time per step, the one-off costs
(W spread from 10,000 mapped z's, final full-size render), peak RSS after each phase, and the load average before and
after (the machine is shared, so timings are noisy).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch

from pipeline.device import select_device
from pipeline.latent.inversion import OptimisationSettings, optimise_latent, w_spread
from pipeline.networks.perceptual import DIFFUSE_FEATURE_TAP, VGGConfig, feature_mse, lpips_like_distance
from pipeline.networks.pixels import to_uint8
from pipeline.networks.stylegan2 import GeneratorConfig, generator_from_state_dict, state_dict_layout
from pipeline.refinement.compositing import FEATHER_DIFFUSE, feather_mask
from pipeline.refinement.diffuse import DiffuseSettings, diffuse_refine
from pipeline.remover import cached_target_distance, diffuse_features
from pipeline.weights.stand_in import random_vgg16_features, seeded_state_dict

KIB_PER_MIB = 1024  # ru_maxrss is in KiB on Linux
NECK_BOX = (slice(640, 900), slice(380, 660))  # a neck-sized region of the 1024² crop for the diffuse mask


class StepClock:
    """Times each optimisation step: started by the ``should_stop`` poll, stopped by the ``progress`` call."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    def should_stop(self) -> bool:
        self._start = (time.perf_counter(), time.process_time())
        return False

    def progress(self, _step: int, _total: int, _loss: float) -> None:
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB


def report(name: str, clock: StepClock, warmup: int, total_s: float) -> None:
    wall, cpu = clock.wall[warmup:], clock.cpu[warmup:]
    median = statistics.median(wall)
    print(
        f"{name:<34} median {median:7.3f} s/step  min {min(wall):7.3f}  max {max(wall):7.3f}  "
        f"= {1 / median:6.3f} steps/s   CPU {statistics.median(cpu):7.3f} s/step   "
        f"(first step {clock.wall[0]:.3f} s; call total {total_s:.1f} s; peak RSS so far {peak_rss_mib():.0f} MB)"
    )


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="render sizes (default 256 1024)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, … (default cpu)")
    parser.add_argument("--uncached", action="store_true", help="recompute the target's VGG features every step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    load_before = os.getloadavg()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, device {device}; "
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}"
    )

    config = GeneratorConfig.ffhq()
    start = time.perf_counter()
    weights = seeded_state_dict(state_dict_layout(config))
    generator = generator_from_state_dict(weights, torch.zeros(config.w_dim), source="random weights", device=device)
    del weights
    vgg = random_vgg16_features(VGGConfig()).to(device)
    print(f"built FFHQ config-f generator + full VGG16 in {time.perf_counter() - start:.1f} s")

    rng = torch.Generator().manual_seed(0)
    target_code = torch.randn(1, config.num_ws, config.w_dim, generator=rng).to(device)
    start_code = (target_code.cpu() + 0.3 * torch.randn(target_code.shape, generator=rng)).numpy()
    with torch.inference_mode():
        target = generator.synthesis(target_code).clamp(-1.0, 1.0)
    target_uint8 = to_uint8(target)
    region = np.zeros(target_uint8.shape[:2], dtype=bool)
    region[NECK_BOX] = True
    outside = 1.0 - feather_mask(region, dilate_px=FEATHER_DIFFUSE.dilate_px, blur_px=FEATHER_DIFFUSE.blur_px)

    print(f"one-off: W spread (10,000 mapped z's) {timed(lambda: w_spread(generator)):.3f} s")
    with torch.inference_mode():
        print(f"one-off: full-size render (no grad) {timed(lambda: generator.synthesis(target_code)):.3f} s")
    print(f"peak RSS after setup {peak_rss_mib():.0f} MB")

    def lpips_mean(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
        return lpips_like_distance(a, b).mean()

    extract_diffuse, compare_diffuse = partial(diffuse_features, vgg), partial(feature_mse, tap=DIFFUSE_FEATURE_TAP)
    if args.uncached:  # the target's features recomputed every step (as before the remover cached them)
        perceptual = lambda a, b: lpips_mean(vgg(a), vgg(b))  # noqa: E731
        feature_distance = lambda a, b: compare_diffuse(extract_diffuse(a), extract_diffuse(b))  # noqa: E731
    else:  # what the remover does
        perceptual = cached_target_distance(vgg, lpips_mean)
        feature_distance = cached_target_distance(extract_diffuse, compare_diffuse)

    steps = args.warmup + args.steps
    for size in sorted(args.sizes):
        clock = StepClock()
        total = timed(
            lambda clock=clock, size=size: optimise_latent(
                generator,
                target,
                start_code,
                perceptual=perceptual,
                settings=OptimisationSettings(steps=steps, render_size=size),
                progress=clock.progress,
                should_stop=clock.should_stop,
            )
        )
        report(f"W+ optimisation step, {size}² render", clock, args.warmup, total)
        clock = StepClock()
        total = timed(
            lambda clock=clock, size=size: diffuse_refine(
                generator,
                feature_distance,
                target_uint8,
                outside,
                start_code,
                settings=DiffuseSettings(steps=steps, optimise_size=size),
                progress=clock.progress,
                should_stop=clock.should_stop,
            )
        )
        report(f"diffuse step, {size}² render", clock, args.warmup, total)

    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
