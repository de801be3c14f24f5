"""Time one StyleGAN2 synthesis forward (batch 1, no grad) with random weights in the real FFHQ layout.

Run by hand from the repository root: ``.venv/bin/python -m bench.bench_generator [--runs 10] [--threads 2]
[--device cpu] [--config ffhq]``.
Prints median, min/max and peak RSS. The weights follow the fixture recipe (``weights.stand_in``), so the
work done is exactly that of the real 1024² config-f generator.

The top levels allocate 64–128 MB activations; glibc serves blocks that large with fresh ``mmap`` pages, so page
faults are a large share of the CPU time. The allocator settings in effect are printed: compare e.g. a plain run with
``THP_MEM_ALLOC_ENABLE=1`` (PyTorch asks for transparent huge pages) or ``MALLOC_MMAP_THRESHOLD_=2147483647
MALLOC_TRIM_THRESHOLD_=4294967296`` (glibc keeps and reuses the memory).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from pipeline.device import select_device
from pipeline.networks.stylegan2 import GeneratorConfig, generator_from_state_dict, state_dict_layout
from pipeline.weights.stand_in import seeded_state_dict

CONFIGS = {"ffhq": GeneratorConfig.ffhq, "tiny": GeneratorConfig.tiny}
KIB_PER_MIB = 1024  # ru_maxrss is in KiB on Linux
ALLOCATOR_ENV_PREFIXES = ("MALLOC_", "THP_MEM_ALLOC_ENABLE", "LD_PRELOAD")  # settings that change the timing


def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed forwards (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards first (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, … (default: CUDA if available)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="ffhq", help="architecture (default ffhq)")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    config = CONFIGS[args.config]()
    weights = seeded_state_dict(state_dict_layout(config))
    generator = generator_from_state_dict(weights, torch.zeros(config.w_dim), source="random weights", device=device)
    del weights
    wp = torch.randn(args.batch, config.num_ws, config.w_dim, generator=torch.Generator().manual_seed(0)).to(device)

    times: list[float] = []
    cpu_times: list[float] = []  # process CPU time (all threads): less sensitive to other load
    with torch.inference_mode():
        for index in range(args.warmup + args.runs):
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            generator.synthesis(wp)
            synchronize(device)
            if index >= args.warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - start_cpu)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB
    load = os.getloadavg()
    print(
        f"StyleGAN2 {args.config} {config.size}² synthesis, batch {args.batch}, device {device}, "
        f"threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(
        f"median {statistics.median(times):.3f} s   min {min(times):.3f} s   max {max(times):.3f} s   "
        f"({args.runs} runs after {args.warmup} warm-up)"
    )
    print(f"process CPU time per forward: median {statistics.median(cpu_times):.3f} s (summed over threads)")
    allocator = {name: value for name, value in os.environ.items() if name.startswith(ALLOCATOR_ENV_PREFIXES)}
    print(f"allocator environment: {allocator or 'defaults'}")
    print(
        f"peak RSS {peak_mib:.0f} MB   load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
