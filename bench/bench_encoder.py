"""Time the full-size e4e encoder (pipeline.networks.encoder) on the CPU with the fixtures' random-weight recipe.

Usage (from the repo root): .venv/bin/python -m bench.bench_encoder [--repeats 10] [--threads 2]

Prints the median and spread of one forward pass at batch 1 (256² input, all 18 styles), of the public
``invert_with_encoder`` call on a 1024² crop (resize + forward + latent_avg), the time to build the encoder from an
in-memory checkpoint dict, peak RSS, and the machine load before and after (timings on a shared machine are noisy).
Target: ≤ 1 s per forward (the reference code takes about 0.65 s with 2 threads).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.config import ALIGNED_SIZE, NUM_WS, W_DIM
from pipeline.networks.encoder import (
    Encoder4Editing,
    EncoderConfig,
    encoder_from_checkpoint,
    encoder_input,
    invert_with_encoder,
)
from pipeline.weights.stand_in import seeded_state_dict

TARGET_SECONDS = 1.0


def timings(run: Callable[[], object], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(seconds: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else (seconds[0],) * 3
    return (
        f"median {median:.3f} s  (min {min(seconds):.3f}, IQR {q1:.3f}–{q3:.3f}, max {max(seconds):.3f}; "
        f"n={len(seconds)})"
    )


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads; load average before: {load_before[0]:.2f} (1 min), "
        f"{load_before[1]:.2f} (5 min)"
    )

    # 1. Full-size weights in the checkpoint layout (e4e/BiSeNet recipe of the parity fixtures).
    with torch.device("meta"):
        layout = [(f"encoder.{k}", tuple(v.shape)) for k, v in Encoder4Editing(EncoderConfig()).state_dict().items()]
    start = time.perf_counter()
    checkpoint = {
        "state_dict": seeded_state_dict(layout, random_fir_kernels=True),
        "latent_avg": torch.randn(NUM_WS, W_DIM, generator=torch.Generator().manual_seed(0)),
    }
    print(f"random weights: {time.perf_counter() - start:.2f} s")

    # 2. Build from the in-memory dict (what the pipeline does after reading the file once).
    start = time.perf_counter()
    encoder = encoder_from_checkpoint(checkpoint, source="bench", device="cpu")
    print(
        f"encoder_from_checkpoint: {time.perf_counter() - start:.2f} s, "
        f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.1f} M parameters"
    )
    del checkpoint
    gc.collect()

    # 3. Forward at batch 1 and the public call on a 1024² crop; one warm-up each.
    aligned = np.random.default_rng(0).integers(0, 256, size=(ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)
    images = encoder_input(aligned)
    with torch.inference_mode():
        encoder(images)
        forward = timings(lambda: encoder(images), args.repeats)
    invert_with_encoder(encoder, aligned, device="cpu")
    invert = timings(lambda: invert_with_encoder(encoder, aligned, device="cpu"), args.repeats)

    load_after = os.getloadavg()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"forward, batch 1:             {summary(forward)}")
    print(f"invert_with_encoder (1024²):  {summary(invert)}")
    verdict = "within" if statistics.median(forward) <= TARGET_SECONDS else "OVER"
    print(f"target ≤ {TARGET_SECONDS:.1f} s per forward: {verdict}")
    print(f"peak RSS {peak_mb:.0f} MB (includes the generated weight dict); RSS at the end {current_rss_mb():.0f} MB")
    print(f"load average after: {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")


if __name__ == "__main__":
    main()
