"""The CPU-side logic of the GPU benchmark (it must run unchanged the first time a CUDA GPU is available).

``--cpu-smoke-test`` runs every measurement of ``bench.bench_gpu`` on the CPU with wall-clock timing; here with the
tiny stand-in weights and a few steps, so the code paths (stage rows of both paths, the autocast check, the JSON
record) are exercised without a GPU. Benchmark figures themselves are never asserted (they are printed, not tested).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import bench_gpu, run_all


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_without_a_gpu_it_exits_with_the_skip_status(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_gpu.main(["--json", str(tmp_path / "gpu.json")])
    assert exit_info.value.code == run_all.NO_GPU_EXIT == bench_gpu.NO_GPU_EXIT
    assert not (tmp_path / "gpu.json").exists()


def test_cpu_smoke_test_writes_both_paths_per_stage(
    stand_in_weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C2F_BENCH_CACHE", str(tmp_path / "cache"))  # the 12 MP photo is built there
    out = tmp_path / "gpu.json"
    bench_gpu.main(
        [
            "--cpu-smoke-test",
            "--weights-dir",
            str(stand_in_weights_dir),
            "--runs",
            "1",
            "--steps",
            "2",
            "--e2e-runs",
            "1",
            "--inversion-steps",
            "2",
            "--refine-steps",
            "2",
            "--json",
            str(out),
        ]
    )
    record = json.loads(out.read_text(encoding="utf-8"))
    stages = [row["stage"] for row in record["rows"]]
    fast = next(s for s in stages if s.startswith("gpu: fast path"))
    paper = next(s for s in stages if s.startswith("gpu: paper-quality path"))
    assert "encoder inversion, warp" in fast and "optimise inversion, diffuse" in paper
    for name, expected in (("fast path", "refine_warp"), ("paper-quality path", "refine_diffuse")):
        per_stage = {s.split(": ", 1)[1] for s in stages if s.startswith(f"  {name}: ")}
        assert {"decode", "detect", "align", "invert", "parse", "mask", "edit", expected, "paste_back"} <= per_stage
    assert "  paper-quality path: optimise" in stages
    for row in record["rows"]:
        assert row["median_s"] > 0
        if "path" in row["stage"]:
            assert row["forward_s"] == pytest.approx(record["extra"]["forward_s"]) and row["forward_s"] > 0
    assert record["extra"]["paper-quality path settings"]["inversion_steps"] == 2
    assert set(record["extra"]["autocast_check"]) >= {"relative_code_difference", "render_psnr_db"}


def test_zero_gpu_budget_lines_come_from_the_measured_stages() -> None:
    from bench.common import Record, row_from
    from pipeline.settings import RemovalSettings

    record = Record("gpu", extra={"gpu": "Test GPU"})
    for stage, seconds in (
        ("gpu: render 1024² (fp32)", 0.25),
        ("gpu: inversion step + final render (auto)", 0.75),  # 0.5 s per step once the render is taken off
        ("gpu: diffuse step + final render (auto)", 1.25),  # 1.0 s per step
        ("gpu: paper-quality path (optimise inversion, diffuse)", 200.0),
    ):
        record.rows.append(row_from(stage, [seconds]))
    settings = RemovalSettings(inversion="optimise", inversion_steps=100, method="diffuse", refine_steps=100)
    lines = bench_gpu.zero_gpu_budget_lines(record, settings)
    # base: 200 s − 100 × 0.5 − 100 × 1.0 = 50 s, ×2 for ZeroGPU (binary-exact figures)
    assert lines[1:] == [
        "GPU_BASE_SECONDS = 100",
        "GPU_SECONDS_PER_INVERSION_STEP = 1.000",
        "GPU_SECONDS_PER_REFINE_STEP = 2.000",
    ]
    assert "Test GPU" in lines[0]
    assert bench_gpu.zero_gpu_budget_lines(Record("gpu"), settings) == []  # no whole request timed: nothing to pin
