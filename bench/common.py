"""What every benchmark script shares: timing statistics, the machine description, peak RSS and the JSON record.

Each benchmark writes one JSON record (``--json PATH``) that :mod:`bench.run_all` collects::

    {"benchmark": name, "machine": {...}, "load_before": [1, 5, 15 min], "load_after": [...],
     "rows": [{"stage", "median_s", "min_s", "max_s", "iqr_s", "runs", "cpu_s", "peak_rss_mb", "target_s",
               "target_rss_mb", "note"}, ...], "extra": {...}}

Times are wall-clock seconds (``time.perf_counter``); ``cpu_s`` is the median process CPU time (all threads), which
other load on the machine distorts less. Peak RSS is ``ru_maxrss`` of the benchmark's own process, so
:mod:`bench.run_all` runs each benchmark in a fresh process.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline import allocator

KIB_PER_MB = 1024  # ru_maxrss is in KiB on Linux; "MB" in the tables means MiB
SKIPPED = "skipped: "  # a benchmark that cannot run here prints a line starting with this and exits 0 (bench.run_all)


@dataclass
class Row:
    """One line of a benchmark table."""

    stage: str
    median_s: float
    min_s: float
    max_s: float
    iqr_s: float
    runs: int
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    target_s: float | None = None
    target_rss_mb: float | None = None
    note: str = ""
    forward_s: float | None = None  # one 1024² generator forward (no grad), timed in the same process
    rss_file_mb: float | None = None  # file-backed resident memory when the peak was read (mapped weights, libraries)

    @property
    def ratio(self) -> float | None:
        """The median in units of one generator forward measured in the same process (None when not measured)."""
        return None if not self.forward_s else self.median_s / self.forward_s

    @property
    def passed(self) -> bool | None:
        """Whether the median (and peak RSS) meet their targets; None without a target."""
        if self.target_s is None and self.target_rss_mb is None:
            return None
        ok = self.target_s is None or self.median_s <= self.target_s
        if self.target_rss_mb is not None and self.peak_rss_mb is not None:
            ok = ok and self.peak_rss_mb <= self.target_rss_mb
        return ok


@dataclass
class Samples:
    """Wall and CPU times of repeated runs."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        """Record one run."""
        self.wall.append(wall)
        self.cpu.append(cpu)

    def row(self, stage: str, **extra: object) -> Row:
        """Summary statistics as a table row."""
        return row_from(stage, self.wall, cpu=self.cpu or None, **extra)


def row_from(stage: str, seconds: list[float], *, cpu: list[float] | None = None, **extra: object) -> Row:
    """Median, min, max and inter-quartile range of ``seconds``."""
    if len(seconds) > 1:
        q1, _, q3 = statistics.quantiles(seconds, n=4, method="inclusive")
    else:
        q1 = q3 = seconds[0]
    return Row(
        stage=stage,
        median_s=statistics.median(seconds),
        min_s=min(seconds),
        max_s=max(seconds),
        iqr_s=q3 - q1,
        runs=len(seconds),
        cpu_s=statistics.median(cpu) if cpu else None,
        **extra,
    )


def timed(run: Callable[[], object], samples: Samples) -> object:
    """Run ``run()`` once, add its wall and CPU time to ``samples`` and return its result."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = run()
    samples.add(time.perf_counter() - start, time.process_time() - start_cpu)
    return result


REFERENCE_RUNS = 3  # timed forwards of the in-process reference (after one warm-up)


def reference_forward_s(generator: torch.nn.Module, runs: int = REFERENCE_RUNS) -> float:
    """Median time of one batch-1 1024² synthesis forward (no grad, constant noise) of ``generator``, in seconds.

    The unit of the ratios in the benchmark table: timed in the benchmark's own process, next to the figure it
    divides, a busy machine slows both about equally.
    """
    parameter = next(generator.parameters())
    code = torch.randn(1, generator.config.num_ws, generator.config.w_dim, generator=torch.Generator().manual_seed(0))
    code = code.to(device=parameter.device, dtype=parameter.dtype)
    times = []
    with torch.inference_mode():
        for index in range(runs + 1):
            start = time.perf_counter()
            generator.synthesis(code)
            if parameter.device.type == "cuda":
                torch.cuda.synchronize(parameter.device)
            if index:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MB


PEAK_GREY = 255.0  # uint8 images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8-valued images (peak 255); inf when they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(PEAK_GREY**2 / mse)


def resident_file_mb() -> float | None:
    """File-backed resident memory of this process now, in MB (``RssFile``: memory-mapped weights and libraries).

    These pages are clean copies of files (the kernel can drop them and read them again), unlike the anonymous
    memory of the rest of the peak. None where ``/proc/self/status`` has no ``RssFile`` line (not Linux).
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / KIB_PER_MB
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    """Total memory of the machine."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "allocator": allocator_settings(),
    }


def allocator_settings() -> dict[str, str]:
    """glibc malloc settings from the environment plus any applied with :func:`keep_freed_memory`."""
    found = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "THP_MEM_ALLOC_ENABLE", "LD_PRELOAD"))}
    if allocator.applied():
        found["mallopt"] = "M_MMAP_THRESHOLD=M_TRIM_THRESHOLD=2**31-1"
    return found


@dataclass
class Record:
    """The JSON record of one benchmark run."""

    benchmark: str
    rows: list[Row] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (adds the machine and the load now)."""
        return {
            "benchmark": self.benchmark,
            "machine": machine(),
            "load_before": [round(x, 2) for x in self.load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "rows": [asdict(row) | {"passed": row.passed} for row in self.rows],
            "extra": self.extra,
        }

    def write(self, path: str | os.PathLike[str] | None) -> None:
        """Write the record as JSON (nothing when ``path`` is None)."""
        if path is None:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def format_row(row: Row) -> str:
    """One human-readable line."""
    cpu = f"  CPU {row.cpu_s:6.2f} s" if row.cpu_s is not None else ""
    rss = f"  peak RSS {row.peak_rss_mb:6.0f} MB" if row.peak_rss_mb is not None else ""
    if rss and row.rss_file_mb is not None:
        rss += f" ({row.rss_file_mb:.0f} MB file-backed)"
    target = f"  target ≤ {row.target_s:g} s" if row.target_s is not None else ""
    verdict = {True: " PASS", False: " FAIL", None: ""}[row.passed]
    ratio = f"  = {row.ratio:.2f}× a forward" if row.ratio is not None else ""
    return (
        f"{row.stage:<34} median {row.median_s:7.3f} s{ratio}  (min {row.min_s:.3f}, max {row.max_s:.3f}, "
        f"IQR {row.iqr_s:.3f}; n={row.runs}){cpu}{rss}{target}{verdict}{'  ' + row.note if row.note else ''}"
    )


def import_app(weights_dir: Path, temp_dir: Path) -> object:
    """Import app.py as the Space does, pointed at ``weights_dir`` on the CPU, offline."""
    os.environ.update(
        {
            "C2F_WEIGHTS_DIR": str(weights_dir),
            "C2F_DEVICE": "cpu",
            "C2F_ALLOW_DOWNLOAD": "0",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_TEMP_DIR": str(temp_dir),
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
    )
    return importlib.import_module("app")
