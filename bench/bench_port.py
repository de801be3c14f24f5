"""Our 1024² StyleGAN2 forward against the CPU path of the widely used PyTorch port, interleaved in one process.

Issue 16's row "generator forward vs the widely used PyTorch port's CPU path": the time of one batch-1 fp32 1024²
synthesis of :mod:`pipeline.networks.stylegan2` divided by the same render of ``rosinality/stylegan2-pytorch``
(``model.py`` + ``op/``), target ≤ 0.2×. Usage (from the repo root)::

    git clone https://github.com/rosinality/stylegan2-pytorch /tmp/c2f_port/stylegan2-pytorch   # once, outside
    C2F_PORT_DIR=/tmp/c2f_port/stylegan2-pytorch .venv/bin/python -m bench.bench_port [--rounds 5] [--json PATH]

The port is never copied into this repository: it is imported from ``--port-dir`` (default: ``$C2F_PORT_DIR``). When
neither names a folder with the port's ``model.py`` and ``op/``, the script prints a line starting with ``skipped:``
and how to get the port, and exits 0 (``bench.run_all`` shows the row as skipped).

**The port's CPU path.** The port's ``op/fused_act.py`` and ``op/upfirdn2d.py`` JIT-compile their CUDA extensions
(``torch.utils.cpp_extension.load``) when imported, which fails on a machine without the CUDA toolkit; but at call
time both dispatch to plain PyTorch on CPU tensors (``fused_leaky_relu``: ``F.leaky_relu`` on ``input + bias`` times
√2; ``upfirdn2d``: ``upfirdn2d_native``, zero insertion + pad + a 2-D convolution), and ``conv2d_gradfix`` falls back
to ``F.conv2d`` / ``F.conv_transpose2d`` off CUDA. CPU users therefore remove the two ``load`` calls (port issue #89).
This script does the same without touching the port's files: while the port is imported,
``torch.utils.cpp_extension.load`` is replaced by a function that builds nothing and returns a placeholder that
raises if anything is looked up on it, so any use of a compiled op on the CPU path would fail loudly.

**Weights.** The generator of a ``stylegan2-ffhq-config-f.pt`` (``g_ema``) or ``e4e_ffhq_encode.pt`` (``decoder.*``)
file, by default the full-size random stand-in e4e file of :mod:`bench.full_size`. e4e uses the port's ``Generator``,
and our generator uses the port's key layout, so both load the same state dict: ours with
:func:`pipeline.networks.stylegan2.load_generator`, the port's ``Generator(size, 512, 8, channel_multiplier)`` with
a strict ``load_state_dict``.

**Parity.** Both render the same W+ code with constant noise (the port's ``randomize_noise=False`` reads its
``noises.noise_i`` buffers, ours ``noise_mode="const"`` the same buffers, loaded from the same keys; the script
checks they are equal and that the noise is not a no-op: a random-noise render differs). Printed: max |difference| of
the raw outputs, and PSNR / max difference of the uint8 images (official postprocess).

**Timing** (both implementations alternately, one untimed warm-up each, under ``torch.inference_mode``): first with
2 torch threads, wall clock (the unit of ``bench.run_all``), then with 1 thread, process CPU time (the work itself,
which other load on a shared machine barely moves). The ratio ours / port is printed for both. The allocator is
whatever the environment sets (printed): run once as is and once with ``MALLOC_MMAP_THRESHOLD_=2147483647
MALLOC_TRIM_THRESHOLD_=4294967296`` (what the app and the CLI apply; ``bench.run_all`` sets them by default).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from unittest import mock

import numpy as np
import torch
import torch.utils.cpp_extension
from torch import nn

from bench.common import (
    SKIPPED,
    Record,
    Samples,
    allocator_settings,
    format_row,
    peak_rss_mb,
    psnr,
    row_from,
    timed,
)
from bench.full_size import full_size_weights_dir
from pipeline.errors import CheckpointFormatError
from pipeline.networks.checkpoint_io import read_torch_checkpoint, strip_prefix
from pipeline.networks.pixels import to_uint8
from pipeline.networks.stylegan2 import Generator, GeneratorConfig, load_generator

PORT_ENV = "C2F_PORT_DIR"
PORT_URL = "https://github.com/rosinality/stylegan2-pytorch"
PORT_PACKAGE = "op"  # the port's model.py imports its ops as the top-level package "op"
PORT_MODEL_MODULE = "c2f_port_model"  # the name the port's model.py is loaded under (never put in sys.modules)
E4E_FILE = "e4e_ffhq_encode.pt"
E4E_GENERATOR_PREFIX = "decoder"  # e4e's checkpoint keeps the port's Generator under decoder.*
THREADS_WALL = 2  # bench.run_all's unit: 2 torch threads, wall clock (the Space's 2 vCPUs)
THREADS_CPU = 1  # the robust figure: 1 thread, process CPU time
DEFAULT_ROUNDS = 5
TARGET_RATIO = 0.2  # issue 16: ours / port ≤ 0.2×
CODE_SEED = 0  # the W+ code both render (same as bench.common.reference_forward_s)
HOW_TO_GET_THE_PORT = (
    f"To measure this row, put a checkout of the PyTorch port outside the repository and name it:\n"
    f"    git clone {PORT_URL} /tmp/c2f_port/stylegan2-pytorch\n"
    f"    {PORT_ENV}=/tmp/c2f_port/stylegan2-pytorch python -m bench.bench_port\n"
    "(or pass --port-dir; only model.py and op/ are used, and nothing is compiled)"
)


@dataclass(frozen=True)
class PortArgs:
    """The arguments of the port's ``Generator(size, style_dim, n_mlp, channel_multiplier=...)``."""

    size: int
    style_dim: int
    n_mlp: int
    channel_multiplier: int


def port_constructor_args(config: GeneratorConfig) -> PortArgs:
    """The port's constructor arguments that build exactly ``config`` (FFHQ config-f: 1024, 512, 8, 2).

    The port's channel table is fixed up to one multiplier (applied from 64² up), so only such configurations can be
    built by it; the multiplier is read off the top level (below 64² it changes nothing, and 1 is returned).

    Raises:
        ValueError: ``config`` has channels the port's table cannot express (e.g. :meth:`GeneratorConfig.tiny`), or
            is larger than the table (over 1024²).
    """
    plain = GeneratorConfig.from_channel_multiplier(
        config.size, style_dim=config.style_dim, n_mlp=config.n_mlp, channel_multiplier=1
    )
    multiplier, rest = divmod(config.channels[-1], plain.channels[-1])
    if (
        rest
        or multiplier < 1
        or (
            GeneratorConfig.from_channel_multiplier(
                config.size, style_dim=config.style_dim, n_mlp=config.n_mlp, channel_multiplier=multiplier
            )
            != config
        )
    ):
        raise ValueError(f"the port's Generator cannot build channels {config.channels} (no channel multiplier fits)")
    return PortArgs(config.size, config.style_dim, config.n_mlp, multiplier)


def generator_state_dict(checkpoint: object, *, source: str) -> dict[str, torch.Tensor]:
    """The generator's weights in the port's key layout from a read checkpoint (``g_ema`` or e4e ``decoder.*``).

    Raises:
        CheckpointFormatError: the checkpoint is in neither format or holds no generator keys.
    """
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("g_ema"), Mapping):
        return dict(checkpoint["g_ema"])
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        state_dict = strip_prefix(checkpoint["state_dict"], E4E_GENERATOR_PREFIX)
        if state_dict:
            return state_dict
    raise CheckpointFormatError(
        f"{source}: no generator found (expected 'g_ema' or an e4e 'state_dict' with {E4E_GENERATOR_PREFIX}.* keys)"
    )


class UnbuiltExtension:
    """What the port's ``op`` modules get instead of a compiled CUDA extension: any use of it raises."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attribute: str) -> object:
        raise RuntimeError(
            f"the port's CUDA extension {self.name!r} was not built (bench.bench_port imports the port for its "
            f"CPU path); {attribute!r} was called, so a CPU tensor reached a CUDA-only op"
        )


def _no_build(name: str, *args: object, **kwargs: object) -> UnbuiltExtension:
    """Stands in for ``torch.utils.cpp_extension.load`` while the port is imported: compiles nothing."""
    return UnbuiltExtension(name)


@contextlib.contextmanager
def _port_package_slot() -> Iterator[None]:
    """Free the top-level name ``op`` for the port's package while it is imported, then restore what was there."""
    ours = [name for name in sys.modules if name == PORT_PACKAGE or name.startswith(PORT_PACKAGE + ".")]
    saved = {name: sys.modules.pop(name) for name in ours}
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n == PORT_PACKAGE or n.startswith(PORT_PACKAGE + ".")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _exec_module(name: str, path: Path, *, package_dir: Path | None = None, register: bool = False) -> ModuleType:
    locations = [str(package_dir)] if package_dir is not None else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def port_files_missing(port_dir: Path) -> list[str]:
    """The port files this script needs that ``port_dir`` lacks (empty when it looks like a checkout of the port)."""
    needed = ("model.py", f"{PORT_PACKAGE}/__init__.py")
    return [name for name in needed if not (port_dir / name).is_file()]


def import_port(port_dir: Path) -> ModuleType:
    """Import the port's ``model.py`` (with its ``op`` package) from ``port_dir`` for its CPU path.

    While importing, ``torch.utils.cpp_extension.load`` returns an :class:`UnbuiltExtension` instead of compiling
    (see the module docstring); afterwards it is restored, and so is whatever ``sys.modules["op"]`` was.

    Returns:
        The port's ``model`` module (``Generator``, ``ModulatedConv2d``, …).

    Raises:
        FileNotFoundError: ``port_dir`` lacks ``model.py`` or ``op/__init__.py``.
    """
    missing = port_files_missing(port_dir)
    if missing:
        raise FileNotFoundError(f"{port_dir} is not a checkout of {PORT_URL}: missing {', '.join(missing)}")
    package_dir = port_dir / PORT_PACKAGE
    with _port_package_slot(), mock.patch.object(torch.utils.cpp_extension, "load", _no_build):
        _exec_module(PORT_PACKAGE, package_dir / "__init__.py", package_dir=package_dir, register=True)
        return _exec_module(PORT_MODEL_MODULE, port_dir / "model.py")


def build_port_generator(model: ModuleType, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """The port's ``Generator`` for ``state_dict``'s architecture, loaded strictly, frozen, in eval mode."""
    args = port_constructor_args(GeneratorConfig.from_state_dict(state_dict, source="port weights"))
    generator = model.Generator(args.size, args.style_dim, args.n_mlp, channel_multiplier=args.channel_multiplier)
    generator.load_state_dict(state_dict, strict=True)
    return generator.eval().requires_grad_(False)


def port_render(port: nn.Module, wp: torch.Tensor) -> torch.Tensor:
    """(N, num_ws, 512) W+ → (N, 3, size, size) raw image with the port's stored constant noise."""
    image, _ = port([wp], input_is_latent=True, randomize_noise=False)
    return image


def parity(ours: Generator, port: nn.Module, wp: torch.Tensor) -> dict[str, float | bool]:
    """How closely both render ``wp`` with constant noise, and checks that the noise is shared and matters.

    Returns:
        ``noise_buffers_equal``; ``max_abs_difference`` of the raw (1, 3, H, W) outputs and ``output_range`` (the
        port's largest |value|: random weights are not confined to [-1, 1]); ``raw_psnr_db`` (peak: the port's
        output's max − min); ``uint8_psnr_db`` and ``uint8_max_difference`` after the official postprocess (values
        outside [-1, 1] clip); ``random_noise_max_abs_difference``: ours with fresh noise against the port.
    """
    buffers_equal = all(
        torch.equal(ours.noises.get(index), getattr(port.noises, f"noise_{index}"))
        for index in range(ours.config.num_noises)
    )
    with torch.inference_mode():
        mine, theirs = ours.synthesis(wp), port_render(port, wp)
        random_noise = ours.synthesis(wp, noise_mode="random", generator=torch.Generator().manual_seed(CODE_SEED))
    mine_u8, theirs_u8 = to_uint8(mine), to_uint8(theirs)
    peak_to_peak = float(theirs.max() - theirs.min())
    mse = float((mine.double() - theirs.double()).square().mean())
    return {
        "noise_buffers_equal": buffers_equal,
        "max_abs_difference": float((mine - theirs).abs().max()),
        "output_range": float(theirs.abs().max()),
        "raw_psnr_db": math.inf if mse == 0 else 10 * math.log10(peak_to_peak**2 / mse),
        "uint8_psnr_db": psnr(mine_u8, theirs_u8),
        "uint8_max_difference": int(np.abs(mine_u8.astype(np.int16) - theirs_u8.astype(np.int16)).max()),
        "random_noise_max_abs_difference": float((random_noise - theirs).abs().max()),
    }


def interleaved(runs: Sequence[Callable[[], object]], rounds: int) -> list[Samples]:
    """Wall and process CPU seconds of each of ``runs``, run alternately ``rounds`` times after one warm-up each."""
    for run_once in runs:
        run_once()
    samples = [Samples() for _ in runs]
    for _ in range(rounds):
        for run_once, bucket in zip(runs, samples, strict=True):
            timed(run_once, bucket)
    return samples


def measure(ours: Generator, port: nn.Module, wp: torch.Tensor, rounds: int) -> dict[int, list[Samples]]:
    """Samples of (ours, port) with :data:`THREADS_WALL` and with :data:`THREADS_CPU` torch threads."""
    results = {}
    before = torch.get_num_threads()
    try:
        with torch.inference_mode():
            for threads in (THREADS_WALL, THREADS_CPU):
                torch.set_num_threads(threads)
                results[threads] = interleaved((lambda: ours.synthesis(wp), lambda: port_render(port, wp)), rounds)
    finally:
        torch.set_num_threads(before)
    return results


def rows(results: dict[int, list[Samples]], record: Record) -> None:
    """Table rows: ours with the port's forward as unit (2 threads, wall), the port, and the 1-thread CPU times."""
    (ours_wall, port_wall), (ours_cpu, port_cpu) = results[THREADS_WALL], results[THREADS_CPU]
    port_wall_s, port_cpu_s = statistics.median(port_wall.wall), statistics.median(port_cpu.cpu)
    wall_ratio = statistics.median(ours_wall.wall) / port_wall_s
    cpu_ratio = statistics.median(ours_cpu.cpu) / port_cpu_s
    note = f"ours / port: {wall_ratio:.2f}× wall ({THREADS_WALL} threads), {cpu_ratio:.2f}× CPU ({THREADS_CPU} thread)"
    record.rows += [
        ours_wall.row("generator vs port: ours, 1024² fwd", forward_s=port_wall_s, note=note),
        port_wall.row("  port's CPU path, 1024² fwd", forward_s=port_wall_s),
        row_from("  ours, 1 thread, CPU s", ours_cpu.cpu, forward_s=port_cpu_s),
        row_from("  port, 1 thread, CPU s", port_cpu.cpu, forward_s=port_cpu_s),
    ]
    record.extra["ratio"] = {"wall_2_threads": wall_ratio, "cpu_1_thread": cpu_ratio, "target": TARGET_RATIO}
    record.extra["seconds"] = {
        "ours_wall_2_threads": statistics.median(ours_wall.wall),
        "port_wall_2_threads": port_wall_s,
        "ours_cpu_1_thread": statistics.median(ours_cpu.cpu),
        "port_cpu_1_thread": port_cpu_s,
    }


def skip(reason: str) -> None:
    """Say why the row is skipped and how to get the port (exit status stays 0)."""
    print(f"{SKIPPED}{reason}")
    print(HOW_TO_GET_THE_PORT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port-dir", default=os.environ.get(PORT_ENV), help=f"the port's checkout (default ${PORT_ENV})"
    )
    parser.add_argument("--weights", default=None, help=f"generator file (default: the full-size stand-in {E4E_FILE})")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"timed rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--json", default=None, help="write the record here (bench.run_all)")
    args = parser.parse_args(argv)
    if not args.port_dir:
        skip(f"the PyTorch port is not here (set {PORT_ENV} or pass --port-dir)")
        return
    port_dir = Path(args.port_dir).expanduser()
    missing = port_files_missing(port_dir)
    if missing:
        skip(f"{port_dir} is not a checkout of the PyTorch port (missing {', '.join(missing)})")
        return

    model = import_port(port_dir)
    weights = Path(args.weights) if args.weights else full_size_weights_dir() / E4E_FILE
    ours = load_generator(weights)
    state_dict = generator_state_dict(read_torch_checkpoint(weights), source=str(weights))
    port = build_port_generator(model, state_dict)
    del state_dict
    config = ours.config
    wp = torch.randn(1, config.num_ws, config.w_dim, generator=torch.Generator().manual_seed(CODE_SEED))

    record = Record("port", extra={"port_dir": str(port_dir), "weights": str(weights)})
    record.extra["port_args"] = vars(port_constructor_args(config))
    record.extra["parity"] = parity(ours, port, wp)
    rows(measure(ours, port, wp, args.rounds), record)

    found = record.extra["parity"]
    print(f"StyleGAN2 {config.size}² forward, batch 1, fp32, CPU: ours vs {PORT_URL} (CPU path) from {port_dir}")
    print(f"weights {weights}; port Generator{tuple(record.extra['port_args'].values())}")
    print(
        f"parity (same code, constant noise; noise buffers equal: {found['noise_buffers_equal']}): max |diff| "
        f"{found['max_abs_difference']:.2e} (outputs up to {found['output_range']:.2f}; PSNR "
        f"{found['raw_psnr_db']:.1f} dB over the output's range), uint8 PSNR "
        f"{found['uint8_psnr_db']:.1f} dB, max uint8 diff {found['uint8_max_difference']}; with random noise "
        f"instead: max |diff| {found['random_noise_max_abs_difference']:.2f}"
    )
    for row in record.rows:
        print(format_row(row))
    ratio, seconds = record.extra["ratio"], record.extra["seconds"]
    print(
        f"ours / port: {ratio['wall_2_threads']:.3f}× wall clock, {THREADS_WALL} threads "
        f"({seconds['ours_wall_2_threads']:.3f} s vs {seconds['port_wall_2_threads']:.3f} s); "
        f"{ratio['cpu_1_thread']:.3f}× process CPU time, {THREADS_CPU} thread "
        f"({seconds['ours_cpu_1_thread']:.3f} s vs {seconds['port_cpu_1_thread']:.3f} s); target ≤ {TARGET_RATIO:g}×"
    )
    record.extra["peak_rss_mb"] = peak_rss_mb()  # both generators, the mapped weight file and the port's intermediates
    print(
        f"allocator environment: {allocator_settings() or 'glibc defaults'}; load {os.getloadavg()[0]:.2f}; "
        f"peak RSS {record.extra['peak_rss_mb']:,.0f} MB"
    )
    record.write(args.json)


if __name__ == "__main__":
    main()
