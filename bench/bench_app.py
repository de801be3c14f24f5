"""Latency of a strength-slider change with a cached inversion, through the app's own handler, on the CPU.

Run by hand from the repository root::

    .venv/bin/python -m bench.bench_app [--runs 7] [--full-generator] [--photo examples/00016.png] [--threads 2]

The app is imported exactly as the Space imports it (models load at import, ``C2F_*`` environment), with small random
stand-in weights (written to a temporary folder unless ``--weights-dir`` is given). ``--full-generator`` swaps in a
randomly initialised StyleGAN2 generator of the real FFHQ 1024² size (the fixture recipe of
``pipeline.weights.stand_in``), so the edit renders cost what they cost with the real weights. One call of
``RemovalApp.remove_double_chin`` fills the cache (alignment + inversion); then each timed call changes only the
strength, which is what releasing the slider does (``apply_if_photo`` calls the same method). The time includes the
edit, the neck refinement, the paste-back at full size and writing the PNG/NPY/JSON outputs; it excludes Gradio's own
pre/postprocessing and the network. Prints median, spread, per-stage medians and peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import import_app
from pipeline.config import EXAMPLES_DIR
from pipeline.faces.decode import decode_upload
from pipeline.networks.stylegan2 import GeneratorConfig, generator_from_state_dict, state_dict_layout
from pipeline.remover import DoubleChinRemover
from pipeline.weights.stand_in import seeded_state_dict, write_stand_in_weights

KIB_PER_MIB = 1024  # ru_maxrss is in KiB on Linux
STRENGTHS = (-2.0, -3.5, -5.0, -6.5, -8.0)  # the timed slider positions, in turn
FIRST_STRENGTH = -4.0  # the run that fills the cache (not timed)
EDIT_STAGES = ("detect", "edit", "mask", "refine_warp", "refine_diffuse", "paste_back")


def with_full_size_generator(remover: DoubleChinRemover) -> DoubleChinRemover:
    """The same models with a random generator of the real FFHQ config-f size in place of the tiny stand-in."""
    config = GeneratorConfig.ffhq()
    weights = seeded_state_dict(state_dict_layout(config))
    latent_avg = remover.models.generator.latent_avg.detach().reshape(-1)[: config.w_dim].cpu()
    generator = generator_from_state_dict(weights, latent_avg, source="random weights", device=remover.device)
    return DoubleChinRemover(dataclasses.replace(remover.models, generator=generator))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed slider changes (default 7)")
    parser.add_argument("--photo", type=Path, default=EXAMPLES_DIR / "00016.png", help="photo to edit")
    parser.add_argument("--weights-dir", type=Path, default=None, help="weights folder (default: fresh stand-ins)")
    parser.add_argument("--full-generator", action="store_true", help="random generator of the real FFHQ size")
    parser.add_argument("--method", choices=("warp", "diffuse"), default="warp", help="refinement (default warp)")
    parser.add_argument("--refine-steps", type=int, default=100, help="diffuse steps (default 100)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_app_") as scratch:
        weights_dir = args.weights_dir
        if weights_dir is None:
            weights_dir = Path(scratch) / "weights"
            write_stand_in_weights(weights_dir)
        app = import_app(weights_dir, Path(scratch) / "gradio")
        remover = app.LOADED
        if not isinstance(remover, DoubleChinRemover):
            raise SystemExit(f"the models did not load: {remover}")
        if args.full_generator:
            remover = with_full_size_generator(remover)
        handlers = app.RemovalApp(remover)
        photo = decode_upload(args.photo)  # what the photo input's preprocess hands the handler

        def slider_change(strength: float) -> dict[str, object]:
            outputs = handlers.remove_double_chin(
                photo, strength, False, args.method, "encoder", 1, [], 0, args.refine_steps, 0, None, None
            )
            return outputs[3]

        start = time.perf_counter()
        first = slider_change(FIRST_STRENGTH)
        fill_s = time.perf_counter() - start
        assert first["inversion_cached"] is False
        times, stages = [], {name: [] for name in EDIT_STAGES}
        for index in range(args.runs):
            start = time.perf_counter()
            summary = slider_change(STRENGTHS[index % len(STRENGTHS)])
            times.append(time.perf_counter() - start)
            assert summary["inversion_cached"] is True, "the inversion was not reused"
            for name in EDIT_STAGES:
                if name in summary["timings_s"]:
                    stages[name].append(summary["timings_s"][name])

    generator = "full-size random FFHQ generator" if args.full_generator else "tiny stand-in generator"
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB
    load = os.getloadavg()
    height, width = photo.image.shape[:2]
    print(
        f"slider change with a cached inversion: {args.method}, {generator}, photo {width}×{height}, "
        f"device {remover.device}, threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    spread = statistics.stdev(times) if len(times) > 1 else 0.0
    print(
        f"median {statistics.median(times):.3f} s   min {min(times):.3f} s   max {max(times):.3f} s   "
        f"stdev {spread:.3f} s   ({args.runs} runs; first run incl. alignment + inversion {fill_s:.2f} s)"
    )
    print("per stage (median): " + "   ".join(f"{k} {statistics.median(v):.3f} s" for k, v in stages.items() if v))
    print(
        f"peak RSS {peak_mib:.0f} MB   load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
