"""Run every benchmark, each in a fresh process, and print one table (stage, median, spread, peak RSS, target).

Usage (from the repo root)::

    .venv/bin/python -m bench.run_all [--quick] [--only NAME ...] [--glibc-defaults]
                                      [--json bench/results/latest.json] [--markdown docs/benchmarks.md]

Each benchmark runs as ``python -m bench.<script>`` in its own process, so the peak RSS of a row is that process's
own (read with ``os.wait4``), unless the script reports its own reading for the row (the end-to-end benchmarks read
it before the reference forward they time for the ratios, whose whole 1024² render the measured path no longer
does). Scripts with a ``--json`` option write their record, the others (owned elsewhere: generator, encoder, align,
inversion, app) are read from their printed summary lines. A script that cannot run here (no CUDA GPU for ``gpu``; no
checkout of the PyTorch port for ``port``, see :mod:`bench.bench_port`) shows as a "skipped" row.
The full-size random weights are built once into the benchmark cache first (see :mod:`bench.full_size`).

Every benchmark starts with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_ARENA_MAX`` set (glibc
keeps freed memory instead of returning it to the kernel, in one arena), the setting the app and the CLI apply at
start-up (:func:`pipeline.allocator.keep_freed_memory`; see docs/performance.md); ``--glibc-defaults`` leaves glibc
as it is. The table goes to stdout, the records to ``--json``, a Markdown version (with the machine and its load) to
``--markdown``, and (full runs only) the same into README.md between its bench markers. Rows of the end-to-end, slider
and diffuse benchmarks also give their time in units of one 1024² generator forward timed in the same process.
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

from bench.common import KIB_PER_MB, SKIPPED, Row, machine
from bench.full_size import full_size_weights_dir, twelve_mp_jpeg

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "latest.json"
MARKDOWN = REPO_ROOT / "docs" / "benchmarks.md"
ALLOCATOR_ENV = {  # what pipeline.allocator.keep_freed_memory sets in the app and the CLI
    "MALLOC_MMAP_THRESHOLD_": "2147483647",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_ARENA_MAX": "1",
}
# what pipeline.threads.single_threaded_numpy_blas sets in the app and the CLI (always: it is not an allocator setting)
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1"}
RSS_TARGET_MB = 6 * 1024  # issue 8
README = REPO_ROOT / "README.md"
README_START, README_END = "<!-- bench-start -->", "<!-- bench-end -->"
README_INTRO = (
    "Latest figures (`.venv/bin/python -m bench.run_all`, which also writes `docs/benchmarks.md`); how they are\n"
    "measured, the profile, the diffuse CPU recipe and GPU estimates from FLOP counts are in\n"
    "[docs/performance.md](docs/performance.md).\n"
)


@dataclass(frozen=True)
class RatioTarget:
    """An issue-16 target: a benchmark's first row in units of one 1024² generator forward of the same process."""

    benchmark: str
    figure: str
    target: float
    stretch: float | None = None


RATIO_TARGETS = (  # issue 16
    RatioTarget("end-to-end", "fast path on a 12 MP photo (decode → paste back, e4e + warp)", 2.8, 2.0),
    RatioTarget("slider", "strength change on a prepared face (edit → paste back)", 0.9, 0.5),
    RatioTarget("diffuse", "diffuse, CPU recipe", 30.0),
    # here the unit is the port's forward, timed interleaved with ours (bench.bench_port)
    RatioTarget("port", "generator forward vs the PyTorch port's CPU path (unit: port's fwd)", 0.2),
)
FAST_PATH_RSS_TARGET_MB = 2.0 * 1024  # issue 16: peak RSS of the fast path ≤ 2.0 GB
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
    Benchmark(
        "end-to-end-float32-encoder",
        ("bench.bench_end_to_end", "--case", "end-to-end", "--float32-encoder"),
        ("--runs", "2"),
        None,
    ),
    Benchmark("slider", ("bench.bench_end_to_end", "--case", "slider"), ("--runs", "3"), None),
    Benchmark("diffuse", ("bench.bench_end_to_end", "--case", "diffuse"), (), None),
    Benchmark(
        "app", ("bench.bench_app", "--full-generator", "--threads", "2"), ("--runs", "3"), parse_app, optional=True
    ),
    Benchmark("gpu", ("bench.bench_gpu",), ("--runs", "3"), None),
    Benchmark("port", ("bench.bench_port",), ("--rounds", "3"), None, optional=True),  # needs $C2F_PORT_DIR
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
    skipped = next((line.strip() for line in text.splitlines() if line.startswith(SKIPPED)), None)
    if process.returncode == 0 and skipped is not None:
        outcome.status = skipped
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
    for row in outcome.rows:  # a row's own figure (read before measuring aids) wins over the process's peak
        if row.stage.startswith("  "):
            row.peak_rss_mb = None
        elif row.peak_rss_mb is None:
            row.peak_rss_mb = rss
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


def _ratio(row: Row) -> str:
    return f"{row.ratio:.2f}×" if row.ratio is not None else ""


def table(outcomes: list[Outcome]) -> list[str]:
    """Plain-text lines: stage, median, its ratio to one generator forward, spread, peak RSS, target, pass/fail."""
    lines = [
        f"{'stage':<52} {'median':>9} {'× fwd':>6} {'spread (min–max)':>19} {'peak RSS':>9} {'target':>8}  result"
    ]
    for outcome in outcomes:
        if outcome.status != "ok":
            lines.append(f"{outcome.name:<52} {outcome.status}")
            continue
        for row in outcome.rows:
            rss = f"{row.peak_rss_mb:,.0f} MB" if row.peak_rss_mb is not None else ""
            target = f"≤ {row.target_s:g} s" if row.target_s is not None else ""
            lines.append(
                f"{row.stage:<52} {row.median_s:8.3f}s {_ratio(row):>6} {row.min_s:8.3f}–{row.max_s:<8.3f}s "
                f"{rss:>9} {target:>8}  {verdict(row)}"
            )
    return lines


@dataclass(frozen=True)
class RatioResult:
    """One issue-16 figure as measured."""

    figure: str
    seconds: float
    forward_s: float
    ratio: float
    target: float
    stretch: float | None

    @property
    def verdict(self) -> str:
        """pass (stretch) / pass / FAIL."""
        if self.stretch is not None and self.ratio <= self.stretch:
            return "pass (stretch)"
        return "pass" if self.ratio <= self.target else "FAIL"


def ratio_results(outcomes: list[Outcome]) -> tuple[list[RatioResult], Row | None]:
    """The issue-16 figures found in ``outcomes`` and the fast path's row (its peak RSS; None when not run)."""
    by_name = {outcome.name: outcome for outcome in outcomes if outcome.status == "ok" and outcome.rows}
    results = []
    for target in RATIO_TARGETS:
        outcome = by_name.get(target.benchmark)
        row = outcome.rows[0] if outcome is not None else None
        if row is None or row.ratio is None or row.forward_s is None:
            continue
        figures = (row.median_s, row.forward_s, row.ratio)
        results.append(RatioResult(target.figure, *figures, target.target, target.stretch))
    fast = by_name.get("end-to-end")
    return results, (fast.rows[0] if fast is not None and fast.rows[0].peak_rss_mb is not None else None)


def rss_figure(row: Row) -> tuple[str, str, str]:
    """The fast path's peak RSS as (figure, target, verdict) texts; the figure names its file-backed part."""
    assert row.peak_rss_mb is not None
    figure = f"{row.peak_rss_mb:,.0f} MB"
    if row.rss_file_mb is not None:
        figure += f" ({row.rss_file_mb:,.0f} MB of it file-backed: mapped weights, libraries)"
    passed = "pass" if row.peak_rss_mb <= FAST_PATH_RSS_TARGET_MB else "FAIL"
    return figure, f"≤ {FAST_PATH_RSS_TARGET_MB:,.0f} MB", passed


def ratio_lines(outcomes: list[Outcome]) -> list[str]:
    """Plain-text lines of the issue-16 figures."""
    results, fast = ratio_results(outcomes)
    lines = [f"{'figure (issue 16)':<64} {'seconds':>8} {'1 fwd':>7} {'ratio':>7} {'target':>8}  result"]
    for result in results:
        stretch = f" ({result.stretch:g}×)" if result.stretch is not None else ""
        lines.append(
            f"{result.figure:<64} {result.seconds:7.3f}s {result.forward_s:6.3f}s {result.ratio:6.2f}× "
            f"≤ {result.target:g}×{stretch}  {result.verdict}"
        )
    if fast is not None:
        figure, limit, rss_verdict = rss_figure(fast)
        lines.append(f"{'peak RSS, fast path':<64} {figure} (target {limit})  {rss_verdict}")
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
        f"- Allocator: {info['allocator'] or 'glibc defaults'}; threads: {info.get('threads', {})}.",
        f"- Load average (1 min) before each benchmark: {', '.join(f'{load[0]:.1f}' for load in loads)} "
        "(2 CPUs; other jobs were running on the machine when this is above ~0.5, so times are pessimistic).",
        "",
    ]
    results, fast = ratio_results(outcomes)
    if results or fast is not None:
        lines += [
            "Issue 16's figures, as multiples of one 1024² generator forward timed in the same process (twice, right",
            "after the timed runs), so that other load on the machine moves them much less than the seconds:",
            "",
            "| figure | seconds | one forward (s) | ratio | target | result |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for result in results:
            stretch = f" (stretch {result.stretch:g}×)" if result.stretch is not None else ""
            lines.append(
                f"| {result.figure} | {result.seconds:.3f} | {result.forward_s:.3f} | {result.ratio:.2f}× | "
                f"≤ {result.target:g}×{stretch} | {result.verdict} |"
            )
        if fast is not None:
            figure, limit, rss_verdict = rss_figure(fast)
            lines.append(f"| peak RSS, fast path | {figure} | | | {limit} | {rss_verdict} |")
        lines.append("")
    lines += [
        "| stage | median (s) | × forward | min–max (s) | peak RSS | target | result |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for outcome in outcomes:
        if outcome.status != "ok":
            lines.append(f"| {outcome.name} | | | | | | {outcome.status} |")
            continue
        for row in outcome.rows:
            stage = row.stage.strip() if not row.stage.startswith("  ") else f"↳ {row.stage.strip()}"
            rss = f"{row.peak_rss_mb:,.0f} MB" if row.peak_rss_mb is not None else ""
            target = f"≤ {row.target_s:g} s" if row.target_s is not None else ""
            note = f" ({row.note})" if row.note else ""
            lines.append(
                f"| {stage}{note} | {row.median_s:.3f} | {_ratio(row)} | {row.min_s:.3f}–{row.max_s:.3f} | {rss} | "
                f"{target} | {verdict(row)} |"
            )
    lines += [
        "",
        "Targets: issue 8 (CPU budget: end to end ≤ 12 s, slider ≤ 4 s, diffuse ≤ 90 s, peak RSS ≤ 6 GB), issue",
        "16 (the ratios above) and the stage benchmarks' own (encoder ≤ 1 s, 24 MP align ≤ 2 s). See",
        "docs/performance.md.",
        "",
    ]
    return "\n".join(lines)


def update_readme(page: str, readme: Path = README) -> bool:
    """Put ``page`` (the Markdown page without its title) between the README's bench markers.

    Returns:
        False (and leaves the file alone) when the README or its markers are missing.
    """
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return False
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    body = page.split("\n", 2)[2] if page.startswith("# ") else page  # drop the "# Benchmarks" title
    block = f"{README_START}\n{README_INTRO}\n{body.rstrip()}\n"
    readme.write_text(text[:start] + block + text[end:], encoding="utf-8")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per benchmark")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run only these")
    parser.add_argument(
        "--glibc-defaults", action="store_true", help="do not set MALLOC_* (the app and CLI set the same with mallopt)"
    )
    parser.add_argument("--json", default=str(RESULTS), help=f"records (default {RESULTS.relative_to(REPO_ROOT)})")
    parser.add_argument("--markdown", default=str(MARKDOWN), help="Markdown table ('' to skip)")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md's table as it is")
    args = parser.parse_args()
    env = dict(os.environ) | THREAD_ENV
    if not args.glibc_defaults:
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
            rss = f"process peak RSS {outcome.peak_rss_mb:,.0f} MB (the table: a row's own figure where it has one)"
            print(f"  {outcome.status}, {outcome.seconds:.0f} s, {rss}", flush=True)
    info = machine()
    info["threads"] = THREAD_ENV
    if not args.glibc_defaults:
        info["allocator"] = ALLOCATOR_ENV
    print("\n".join(table(outcomes)))
    print()
    print("\n".join(ratio_lines(outcomes)))
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
        page = markdown(outcomes, info, started, loads)
        Path(args.markdown).write_text(page, encoding="utf-8")
        print(f"wrote {args.markdown}")
        if not args.no_readme and not args.quick and args.only is None and update_readme(page):
            print(f"updated the table in {README.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
