"""Run every benchmark, each in a fresh process, and print one table (stage, median, spread, peak RSS, target).

Usage (from the repo root)::

    .venv/bin/python -m bench.run_all [--quick] [--only NAME ...] [--keep-freed-memory]
                                      [--json bench/results/latest.json] [--markdown docs/benchmarks.md]

Each benchmark runs as ``python -m bench.<script>`` in its own process, so the peak RSS of a row is that process's
own (read with ``os.wait4``, whatever the script prints). Scripts with a ``--json`` option write their record, the
others (owned elsewhere: generator, encoder, align, inversion, app) are read from their printed summary lines.
The full-size random weights are built once into the benchmark cache first (see :mod:`bench.full_size`).

``--keep-freed-memory`` starts every benchmark with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set (glibc
keeps freed memory instead of returning it to the kernel; see docs/performance.md). The table goes to stdout, the
records to ``--json`` and a Markdown version (with the machine and its load) to ``--markdown``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import KIB_PER_MB, Row, machine
from bench.full_size import full_size_weights_dir, twelve_mp_jpeg

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "latest.json"
MARKDOWN = REPO_ROOT / "docs" / "benchmarks.md"
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "2147483647", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
RSS_TARGET_MB = 6 * 1024  # issue 8
NO_GPU_EXIT = 2  # bench_gpu's "no CUDA here"
NUMBER = r"([0-9.]+)"


@dataclass(frozen=True)
class Benchmark:
    """One script run and how to read its result."""

    name: str
    args: tuple[str, ...]  # after ``python -m``
    quick_args: tuple[str, ...]  # replaces the run counts in --quick mode
    parse: Callable[[str, Path], list[Row]] | None  # stdout, JSON path → rows (None: the script writes --json)
    target_s: float | None = None
    optional: bool = False  # skipped when its script is absent


def _median_line(text: str, label: str, pattern: str) -> tuple[float, float, float]:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"could not find the {label} line in the output")
    return tuple(float(x) for x in match.groups()[:3])  # type: ignore[return-value]


def parse_generator(text: str, _: Path) -> list[Row]:
    median, low, high = _median_line(text, "median", rf"median {NUMBER} s\s+min {NUMBER} s\s+max {NUMBER} s")
    return [Row("generator: 1024² render (no grad)", median, low, high, high - low, _runs(text))]


def parse_encoder(text: str, _: Path) -> list[Row]:
    match = re.search(
        rf"forward, batch 1:\s+median {NUMBER} s\s+\(min {NUMBER}, IQR {NUMBER}–{NUMBER}, max {NUMBER}; n=(\d+)", text
    )
    if match is None:
        raise ValueError("could not find the encoder forward line")
    median, low, q1, q3, high, runs = match.groups()
    return [
        Row(
            "encoder: e4e forward (256²)",
            float(median),
            float(low),
            float(high),
            float(q3) - float(q1),
            int(runs),
            target_s=1.0,
        )
    ]


def parse_align(text: str, _: Path) -> list[Row]:
    median, low, high = _median_line(text, "total", rf"total: median {NUMBER} s\s+\(min {NUMBER}, max {NUMBER}\)")
    iqr = re.search(rf"IQR {NUMBER} s", text)
    runs = re.search(r"runs=(\d+)", text)
    return [
        Row(
            "decode + detect + align, 24 MP",
            median,
            low,
            high,
            float(iqr.group(1)) if iqr else high - low,
            int(runs.group(1)) if runs else 0,
            target_s=2.0,
        )
    ]


def parse_inversion(text: str, _: Path) -> list[Row]:
    rows = []
    for match in re.finditer(
        rf"(W\+ optimisation step|diffuse step), (\d+)² render\s+median\s+{NUMBER} s/step\s+min\s+{NUMBER}\s+max\s+"
        rf"{NUMBER}",
        text,
    ):
        kind, size, median, low, high = match.groups()
        label = "W+ optimisation" if kind.startswith("W") else "diffuse (VGG 256²)"
        rows.append(
            Row(f"{label} step, {size}² render", float(median), float(low), float(high), float(high) - float(low), 0)
        )
    if not rows:
        raise ValueError("no step lines in the output")
    return rows


def parse_app(text: str, _: Path) -> list[Row]:
    match = re.search(rf"median {NUMBER} s\s+min {NUMBER} s\s+max {NUMBER} s\s+stdev {NUMBER} s\s+\((\d+) runs", text)
    if match is None:
        raise ValueError("could not find the app's median line")
    median, low, high, _stdev, runs = match.groups()
    return [
        Row(
            "app: slider change (handler, full-size generator)",
            float(median),
            float(low),
            float(high),
            float(high) - float(low),
            int(runs),
            target_s=4.0,
        )
    ]


def _runs(text: str) -> int:
    match = re.search(r"\((\d+) runs", text)
    return int(match.group(1)) if match else 0


BENCHMARKS = (
    Benchmark("generator", ("bench.bench_generator", "--threads", "2"), ("--runs", "3"), parse_generator),
    Benchmark("encoder", ("bench.bench_encoder", "--threads", "2"), ("--repeats", "3"), parse_encoder),
    Benchmark("align", ("bench.bench_align",), ("--runs", "3"), parse_align),
    Benchmark(
        "inversion", ("bench.bench_inversion", "--sizes", "256", "--steps", "3"), ("--steps", "2"), parse_inversion
    ),
    Benchmark("end-to-end", ("bench.bench_end_to_end", "--case", "end-to-end"), ("--runs", "2"), None),
    Benchmark(
        "end-to-end-model-labels",
        ("bench.bench_end_to_end", "--case", "end-to-end", "--labels", "model"),
        ("--runs", "2"),
        None,
    ),
    Benchmark("slider", ("bench.bench_end_to_end", "--case", "slider"), ("--runs", "3"), None),
    Benchmark("diffuse", ("bench.bench_end_to_end", "--case", "diffuse"), (), None),
    Benchmark(
        "app", ("bench.bench_app", "--full-generator", "--threads", "2"), ("--runs", "3"), parse_app, optional=True
    ),
    Benchmark("gpu", ("bench.bench_gpu",), ("--runs", "3"), None),
)


@dataclass
class Outcome:
    """What one benchmark process gave."""

    name: str
    rows: list[Row]
    peak_rss_mb: float
    seconds: float
    status: str  # "ok", "skipped: …" or "failed: …"
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def run(benchmark: Benchmark, *, quick: bool, env: dict[str, str], scratch: Path) -> Outcome:
    """Run one benchmark in a fresh process and collect its rows and peak RSS."""
    json_path = scratch / f"{benchmark.name}.json"
    log_path = scratch / f"{benchmark.name}.log"
    command = [sys.executable, "-m", *benchmark.args, *(benchmark.quick_args if quick else ())]
    if benchmark.parse is None:
        command += ["--json", str(json_path)]
    load_before = os.getloadavg()
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    rss = usage.ru_maxrss / KIB_PER_MB
    text = log_path.read_text(encoding="utf-8", errors="replace")
    outcome = Outcome(benchmark.name, [], rss, seconds, "ok", load_before, os.getloadavg())
    if benchmark.name == "gpu" and process.returncode == NO_GPU_EXIT:
        outcome.status = "skipped: no CUDA GPU here (see docs/performance.md for FLOP-based estimates)"
        return outcome
    if process.returncode != 0:
        tail = " | ".join(text.strip().splitlines()[-3:])
        outcome.status = f"failed (exit {process.returncode}): {tail}"
        return outcome
    try:
        if benchmark.parse is None:
            record = json.loads(json_path.read_text(encoding="utf-8"))
            outcome.rows = [Row(**{k: v for k, v in row.items() if k != "passed"}) for row in record["rows"]]
        else:
            outcome.rows = benchmark.parse(text, json_path)
    except (ValueError, KeyError, OSError) as err:
        outcome.status = f"failed to read its result: {err}"
        return outcome
    for row in outcome.rows:
        row.peak_rss_mb = rss if not row.stage.startswith("  ") else None
        if row.target_s is None and not row.stage.startswith("  "):
            row.target_s = benchmark.target_s
        if row.peak_rss_mb is not None and row.target_rss_mb is None:
            row.target_rss_mb = RSS_TARGET_MB
    return outcome


def verdict(row: Row) -> str:
    """pass/FAIL against the time and RSS targets; "RSS ok" for rows that only have the RSS target."""
    if row.passed and row.target_s is None:
        return "RSS ok"
    return {True: "pass", False: "FAIL", None: ""}[row.passed]


def table(outcomes: list[Outcome]) -> list[str]:
    """Plain-text lines: stage, median, spread, peak RSS, target, pass/fail."""
    lines = [f"{'stage':<52} {'median':>9} {'spread (min–max)':>19} {'peak RSS':>9} {'target':>8}  result"]
    for outcome in outcomes:
        if outcome.status != "ok":
            lines.append(f"{outcome.name:<52} {outcome.status}")
            continue
        for row in outcome.rows:
            rss = f"{row.peak_rss_mb:,.0f} MB" if row.peak_rss_mb is not None else ""
            target = f"≤ {row.target_s:g} s" if row.target_s is not None else ""
            lines.append(
                f"{row.stage:<52} {row.median_s:8.3f}s {row.min_s:8.3f}–{row.max_s:<8.3f}s {rss:>9} {target:>8}  "
                f"{verdict(row)}"
            )
    return lines


def markdown(outcomes: list[Outcome], info: dict[str, object], started: str, loads: list[tuple]) -> str:
    """The Markdown page (docs/benchmarks.md)."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `.venv/bin/python -m bench.run_all` (do not edit by hand; re-run it). CPU figures use full-size",
        "networks with random weights in the real file formats, which cost exactly what the real weights cost.",
        "",
        f"- Run: {started}; machine: {info['cpu']}, {info['cpus']} CPUs, {info['memory_gb']} GB RAM, torch "
        f"{info['torch']}, Python {info['python']}, {info['platform']}.",
        f"- Allocator: {info['allocator'] or 'glibc defaults'}.",
        f"- Load average (1 min) before each benchmark: {', '.join(f'{load[0]:.1f}' for load in loads)} "
        "(2 CPUs; other jobs were running on the machine when this is above ~0.5, so times are pessimistic).",
        "",
        "| stage | median (s) | min–max (s) | peak RSS | target | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for outcome in outcomes:
        if outcome.status != "ok":
            lines.append(f"| {outcome.name} | | | | | {outcome.status} |")
            continue
        for row in outcome.rows:
            stage = row.stage.strip() if not row.stage.startswith("  ") else f"↳ {row.stage.strip()}"
            rss = f"{row.peak_rss_mb:,.0f} MB" if row.peak_rss_mb is not None else ""
            target = f"≤ {row.target_s:g} s" if row.target_s is not None else ""
            note = f" ({row.note})" if row.note else ""
            lines.append(
                f"| {stage}{note} | {row.median_s:.3f} | {row.min_s:.3f}–{row.max_s:.3f} | {rss} | {target} | "
                f"{verdict(row)} |"
            )
    lines += [
        "",
        "Targets: issue 8 (CPU budget: end to end ≤ 12 s, slider ≤ 4 s, diffuse ≤ 90 s, peak RSS ≤ 6 GB) and the",
        "stage benchmarks' own (encoder ≤ 1 s, 24 MP align ≤ 2 s). See docs/performance.md.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per benchmark")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run only these")
    parser.add_argument("--keep-freed-memory", action="store_true", help="set glibc's MALLOC_*_THRESHOLD_")
    parser.add_argument("--json", default=str(RESULTS), help=f"records (default {RESULTS.relative_to(REPO_ROOT)})")
    parser.add_argument("--markdown", default=str(MARKDOWN), help="Markdown table ('' to skip)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.keep_freed_memory:
        env.update(ALLOCATOR_ENV)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    full_size_weights_dir()  # build the shared inputs once, outside any timing
    twelve_mp_jpeg()
    chosen = [b for b in BENCHMARKS if args.only is None or b.name in args.only]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="c2f_run_all_") as scratch:
        for benchmark in chosen:
            module_file = REPO_ROOT / Path(*benchmark.args[0].split(".")).with_suffix(".py")
            if benchmark.optional and not module_file.is_file():
                continue
            print(f"running {benchmark.name} …", flush=True)
            outcome = run(benchmark, quick=args.quick, env=env, scratch=Path(scratch))
            outcomes.append(outcome)
            print(f"  {outcome.status}, {outcome.seconds:.0f} s, peak RSS {outcome.peak_rss_mb:,.0f} MB", flush=True)
    info = machine()
    if args.keep_freed_memory:
        info["allocator"] = ALLOCATOR_ENV
    print("\n".join(table(outcomes)))
    loads = [outcome.load_before for outcome in outcomes]
    data = {
        "started": started,
        "machine": info,
        "quick": args.quick,
        "outcomes": [
            asdict(outcome) | {"rows": [asdict(r) | {"passed": r.passed} for r in outcome.rows]}
            for outcome in outcomes
        ],
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(markdown(outcomes, info, started, loads), encoding="utf-8")
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
