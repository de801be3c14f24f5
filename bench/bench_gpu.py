"""Per-stage GPU times (CUDA events) of the full-size networks, fp32 against autocast, plus a whole request.

Usage on a machine with a CUDA GPU (from the repo root)::

    .venv/bin/python -m bench.bench_gpu [--weights-dir DIR] [--runs 10] [--steps 20] [--json PATH]

One command, meant to finish in well under 5 minutes on any CUDA GPU (a T4 included) and to run unchanged the first
time a GPU is available; ``--cpu-smoke-test`` runs the same code on the CPU (the tests do, with tiny stand-ins).

Without ``--weights-dir`` the full-size random stand-ins of :mod:`bench.full_size` are used (same cost as the real
weights). Without a CUDA device it prints why and exits with status 2, so :mod:`bench.run_all` can skip it.

Stages (each warmed up, then timed ``--runs`` times with ``torch.cuda.Event`` pairs, medians reported): encoder
forward, 1024² render, face parsing, one diffuse step and one W+ optimisation step in fp32 and under the automatic
mixed precision of the loops (:func:`pipeline.latent.inversion.autocast_dtype`: bf16 on compute capability ≥ 8.0, fp16
with loss scaling before), and the whole GPU-default request ``remover(photo, settings)`` on the 12 MP photo (wall
clock, including the CPU stages). It also checks that ``--steps`` diffuse steps under autocast stay within tolerance of
fp32 (relative code difference and PSNR of the final renders) and reports peak GPU memory.

Per-stage times of both paths at the GPU defaults, from the remover's own stage timings (each stage ends by copying
its result to the host, which waits for the GPU, so the wall-clock stage times are the GPU's): the **fast path**
(encoder inversion + warp) and the **paper-quality path** (:func:`pipeline.settings.default_settings` on the GPU:
optimised inversion + diffuse), each also as a multiple of one 1024² render timed in the same process. The JSON record
goes to ``--json`` (default ``bench/results/gpu.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from bench.common import Record, Samples, format_row, psnr, row_from
from bench.full_size import SyntheticLabelParser, full_size_weights_dir, twelve_mp_jpeg
from pipeline.config import ALIGNED_SIZE
from pipeline.device import select_device
from pipeline.faces.align import align_face, find_faces
from pipeline.faces.decode import decode_upload
from pipeline.latent.inversion import OptimisationSettings, autocast_dtype, optimise_latent
from pipeline.networks.encoder import encoder_input
from pipeline.networks.parsing import parser_input
from pipeline.networks.perceptual import DIFFUSE_FEATURE_TAP, feature_mse, lpips_like_distance
from pipeline.networks.pixels import to_model_range, to_uint8
from pipeline.refinement.diffuse import DiffuseSettings, diffuse_refine
from pipeline.remover import STAGES, DoubleChinRemover, cached_target_distance, diffuse_features
from pipeline.settings import RemovalSettings, default_settings

Timer = Callable[[Callable[[], object], int], list[float]]
NO_GPU_EXIT = 2
DEFAULT_JSON = "bench/results/gpu.json"
STAGE_ORDER = STAGES  # the remover's stage names, in pipeline order
PSNR_TOLERANCE_DB = 35.0  # autocast renders must stay at least this close to fp32 (ours: invisible difference)
CODE_TOLERANCE = 0.1  # ‖w_amp − w_fp32‖ / ‖w_fp32 − w_start‖ after --steps diffuse steps


def cuda_times(run: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """Seconds per call measured with CUDA events (GPU time, no host sync inside the timed region)."""
    for _ in range(warmup):
        run()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for start, end in events:
        start.record()
        run()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def wall_times(run: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    """Seconds per call by the wall clock (the CPU smoke test of this script)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, weights: str, args: argparse.Namespace, timer: Timer) -> Record:
    """Every measurement of the module doc on ``device``, timing stages with ``timer``."""
    remover = DoubleChinRemover.from_pretrained(weights, device=device, allow_download=False)
    remover.progress_bars = False
    models = remover.models
    record = Record("gpu")
    record.extra["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    record.extra["autocast"] = str(autocast_dtype(device))

    photo = decode_upload(str(twelve_mp_jpeg()))
    face = find_faces(photo.image)[0]
    aligned = align_face(photo.image, face, ALIGNED_SIZE)
    rng = np.random.default_rng(0)
    code = torch.from_numpy(rng.standard_normal((1, 18, 512)).astype(np.float32) * 0.5).to(device)
    code = code + models.generator.latent_avg
    with torch.inference_mode():
        encoder_batch = encoder_input(aligned.image).to(device)
        parser_batch = parser_input(aligned.image).to(device)
        stages = {
            "encoder forward": lambda: models.encoder(encoder_batch),
            "render 1024² (fp32)": lambda: models.generator.synthesis(code),
            "parse 512²": lambda: models.parser(parser_batch),
        }
        for name, run in stages.items():
            record.rows.append(row_from(f"gpu: {name}", timer(run, args.runs)))

    # One optimisation step of each loop, fp32 and automatic precision (timed as a 1-step loop minus nothing:
    # the loops' own set-up is negligible next to a 1024² forward + backward).
    target = to_uint8(models.generator.synthesis(code).detach())
    region = np.zeros(target.shape[:2], dtype=np.float32)
    region[640:900, 380:660] = 1.0
    start_code = (code + 0.1 * torch.randn_like(code)).cpu().numpy()
    distance = cached_target_distance(
        partial(diffuse_features, models.vgg), partial(feature_mse, tap=DIFFUSE_FEATURE_TAP)
    )
    perceptual = cached_target_distance(models.vgg, lambda a, b: lpips_like_distance(a, b).mean())
    target_tensor = to_model_range(target, device)
    results = {}
    for precision in ("fp32", "auto"):
        settings = DiffuseSettings(steps=args.steps, precision=precision)
        one = dataclasses.replace(settings, steps=1)
        times = timer(
            lambda one=one: diffuse_refine(models.generator, distance, target, 1 - region, start_code, settings=one),
            args.runs,
        )
        record.rows.append(row_from(f"gpu: diffuse step + final render ({precision})", times))
        results[precision] = diffuse_refine(
            models.generator, distance, target, 1 - region, start_code, settings=settings
        )
        options = OptimisationSettings(steps=1, precision=precision)
        times = timer(
            lambda options=options: optimise_latent(
                models.generator, target_tensor, start_code, perceptual=perceptual, settings=options
            ),
            args.runs,
        )
        record.rows.append(row_from(f"gpu: inversion step + final render ({precision})", times))
    reference, mixed = results["fp32"], results["auto"]
    moved = float(np.linalg.norm(reference.w_plus - start_code))
    code_error = float(np.linalg.norm(mixed.w_plus - reference.w_plus)) / max(moved, 1e-12)
    image_psnr = psnr(to_uint8(mixed.render), to_uint8(reference.render))
    within = code_error <= CODE_TOLERANCE and image_psnr >= PSNR_TOLERANCE_DB
    record.extra["autocast_check"] = {
        "steps": args.steps,
        "relative_code_difference": code_error,
        "render_psnr_db": image_psnr,
        "within_tolerance": within,
    }

    # Both paths, whole requests on the 12 MP photo, with the remover's per-stage times.
    labels = SyntheticLabelParser(models.parser)
    labels.set_landmarks(aligned.to_aligned(face.landmarks), ALIGNED_SIZE)
    remover = DoubleChinRemover(dataclasses.replace(models, parser=labels))
    remover.progress_bars = False
    forward = statistics.median(timer(lambda: models.generator.synthesis(code), args.runs))
    record.extra["forward_s"] = forward
    for name, settings in path_settings(device, args).items():
        samples, per_stage = Samples(), {}
        for index in range(args.e2e_runs + 1 if args.e2e_runs else 0):
            labels.reset()
            synchronize(device)
            begin = time.perf_counter()
            result = remover(str(twelve_mp_jpeg()), settings)
            synchronize(device)
            if index:
                samples.add(time.perf_counter() - begin, 0.0)
                for stage, seconds in result.timings.items():
                    per_stage.setdefault(stage, []).append(seconds)
        if not samples.wall:
            continue
        title = f"gpu: {name} ({settings.inversion} inversion, {settings.method})"
        record.rows.append(samples.row(title, forward_s=forward))
        for stage in sorted(per_stage, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER)):
            record.rows.append(row_from(f"  {name}: {stage}", per_stage[stage], forward_s=forward))
        record.extra[f"{name} settings"] = settings.to_dict()
    if device.type == "cuda":
        record.extra["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return record


ZERO_GPU_SAFETY = 2.0  # ours: a ZeroGPU slice is shared and each call first moves the models into its worker


def zero_gpu_budget_lines(record: Record, settings: RemovalSettings) -> list[str]:
    """app.py's ZeroGPU duration constants from the measured stage medians (×ZERO_GPU_SAFETY), as lines to paste.

    Per step: a one-step loop minus one 1024² render (the loops end with a final render). Base: the whole
    paper-quality request minus its optimisation steps (alignment, encoder, parsing, warp, transfers).
    """
    median = {row.stage: row.median_s for row in record.rows}
    render = median.get("gpu: render 1024² (fp32)", 0.0)
    per_inversion = max(0.0, median.get("gpu: inversion step + final render (auto)", 0.0) - render)
    per_refine = max(0.0, median.get("gpu: diffuse step + final render (auto)", 0.0) - render)
    whole = [value for stage, value in median.items() if stage.startswith("gpu: paper-quality path")]
    if not whole:
        return []
    base = whole[0] - settings.inversion_steps * per_inversion - settings.refine_steps * per_refine
    return [
        f"# measured on {record.extra.get('gpu')}, ×{ZERO_GPU_SAFETY:g} for ZeroGPU; paste into app.py:",
        f"GPU_BASE_SECONDS = {math.ceil(ZERO_GPU_SAFETY * max(base, 0.0))}",
        f"GPU_SECONDS_PER_INVERSION_STEP = {ZERO_GPU_SAFETY * per_inversion:.3f}",
        f"GPU_SECONDS_PER_REFINE_STEP = {ZERO_GPU_SAFETY * per_refine:.3f}",
    ]


def path_settings(device: torch.device, args: argparse.Namespace) -> dict[str, RemovalSettings]:
    """The settings of the two timed paths on ``device``: fast (encoder + warp) and paper quality (GPU defaults).

    ``--inversion-steps`` / ``--refine-steps`` shorten the paper-quality path (for the CPU smoke test).
    """
    paper = default_settings(torch.device("cuda") if device.type == "cpu" else device)
    if args.inversion_steps is not None:
        paper = dataclasses.replace(paper, inversion_steps=args.inversion_steps)
    if args.refine_steps is not None:
        paper = dataclasses.replace(paper, refine_steps=args.refine_steps)
    fast = dataclasses.replace(paper, inversion="encoder", method="warp")
    return {"fast path": fast, "paper-quality path": paper}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", default=None, help="weights folder (default: full-size random stand-ins)")
    parser.add_argument("--device", default=None, help="CUDA device (default: the first)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="steps of the autocast-vs-fp32 diffuse check")
    parser.add_argument("--e2e-runs", type=int, default=3, help="timed whole requests per path (after one warm-up)")
    parser.add_argument("--inversion-steps", type=int, default=None, help="paper path (default: the GPU defaults)")
    parser.add_argument("--refine-steps", type=int, default=None, help="paper path (default: the GPU defaults)")
    parser.add_argument("--cpu-smoke-test", action="store_true", help="run on the CPU with wall-clock timing")
    parser.add_argument("--json", default=DEFAULT_JSON, help=f"write the record here (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    device = torch.device("cpu") if args.cpu_smoke_test else select_device(args.device)
    if device.type != "cuda" and not args.cpu_smoke_test:
        print("bench_gpu: no CUDA GPU on this machine; nothing to measure (see docs/performance.md for estimates).")
        sys.exit(NO_GPU_EXIT)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    timer = cuda_times if device.type == "cuda" else wall_times
    record = measure(device, args.weights_dir or str(full_size_weights_dir()), args, timer)
    within = record.extra["autocast_check"]["within_tolerance"]
    for row in record.rows:
        print(format_row(row))
    print(
        f"autocast ({record.extra['autocast']}) vs fp32 after {args.steps} diffuse steps: "
        f"{record.extra['autocast_check']}"
    )
    print(f"device {record.extra['gpu']}, peak GPU memory {record.extra.get('peak_gpu_memory_mb', 0):.0f} MB")
    if args.weights_dir is not None and device.type == "cuda":
        print("\n".join(zero_gpu_budget_lines(record, default_settings(device))))
    record.write(args.json)
    if not within:
        print("autocast is NOT within tolerance of fp32 here: set precision='fp32' for this GPU", file=sys.stderr)


if __name__ == "__main__":
    main()
