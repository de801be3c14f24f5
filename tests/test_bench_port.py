"""The CPU-side logic of ``bench.bench_port`` (our generator against the PyTorch port), mostly without the port.

The port itself is never part of this repository: the skip path, the mapping from a weight file to the port's
constructor and state dict, the import that intercepts the port's CUDA build and ``bench.run_all``'s handling of the
row are checked here without it. One test renders with the real port when ``$C2F_PORT_DIR`` names a checkout of it
(skipped otherwise). Benchmark figures are never asserted.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.utils.cpp_extension

from bench import bench_port, run_all
from bench.common import SKIPPED, Row
from pipeline.errors import CheckpointFormatError
from pipeline.networks.checkpoint_io import read_torch_checkpoint
from pipeline.networks.stylegan2 import GeneratorConfig, generator_from_state_dict, state_dict_layout
from pipeline.weights.stand_in import seeded_state_dict

LOAD = (0.1, 0.1, 0.1)


def test_without_the_port_it_says_skipped_and_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(bench_port.PORT_ENV, raising=False)
    out = tmp_path / "port.json"
    bench_port.main(["--json", str(out)])  # returns: exit status 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(SKIPPED) and bench_port.PORT_ENV in lines[0]
    assert any(f"git clone {bench_port.PORT_URL}" in line for line in lines)
    (tmp_path / "not-the-port").mkdir()
    monkeypatch.setenv(bench_port.PORT_ENV, str(tmp_path / "not-the-port"))
    bench_port.main(["--json", str(out)])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(SKIPPED) and "missing model.py, op/__init__.py" in first
    assert not out.exists()


def test_run_all_shows_the_row_as_skipped_without_the_port(tmp_path: Path) -> None:
    benchmark = next(b for b in run_all.BENCHMARKS if b.name == "port")
    env = {k: v for k, v in os.environ.items() if k != bench_port.PORT_ENV}
    outcome = run_all.run(benchmark, quick=True, env=env, scratch=tmp_path)
    assert outcome.status.startswith("skipped: the PyTorch port is not here") and outcome.rows == []
    assert f"| port | | | | | | {outcome.status} |" in run_all.markdown([outcome], _INFO, "now", [LOAD])


_INFO = {"cpu": "x", "cpus": 2, "memory_gb": 1, "torch": "t", "python": "p", "platform": "l", "allocator": {}}


def test_the_port_row_is_an_issue_16_ratio_of_ours_to_the_port() -> None:
    rows = [Row("generator vs port: ours, 1024² fwd", 0.5, 0.4, 0.6, 0.1, 3, forward_s=2.0)]
    outcome = run_all.Outcome("port", rows, 900.0, 1.0, "ok", LOAD, LOAD)
    (result,), _ = run_all.ratio_results([outcome])
    assert (result.ratio, result.target, result.verdict) == (0.25, bench_port.TARGET_RATIO, "FAIL")
    rows[0].median_s = 0.4
    (result,), _ = run_all.ratio_results([outcome])
    assert result.verdict == "pass"


def test_port_constructor_args_rebuild_the_config_or_refuse() -> None:
    assert bench_port.port_constructor_args(GeneratorConfig.ffhq()) == bench_port.PortArgs(1024, 512, 8, 2)
    config = GeneratorConfig.from_channel_multiplier(256, style_dim=64, n_mlp=2, channel_multiplier=1)
    assert bench_port.port_constructor_args(config) == bench_port.PortArgs(256, 64, 2, 1)
    assert bench_port.port_constructor_args(GeneratorConfig.from_channel_multiplier(32)).size == 32
    with pytest.raises(ValueError, match="no channel multiplier fits"):
        bench_port.port_constructor_args(GeneratorConfig.tiny())  # 8–16 channels: not the port's table
    mixed = GeneratorConfig(size=128, channels=(512, 512, 512, 512, 512, 128))  # 64² × 2 but 128² × 1
    with pytest.raises(ValueError, match="no channel multiplier fits"):
        bench_port.port_constructor_args(mixed)


def test_the_e4e_decoder_is_the_generator_in_the_port_key_layout(stand_in_weights_dir: Path) -> None:
    path = stand_in_weights_dir / bench_port.E4E_FILE
    checkpoint = read_torch_checkpoint(path)
    state_dict = bench_port.generator_state_dict(checkpoint, source=str(path))
    config = GeneratorConfig.from_state_dict(state_dict)
    assert [(k, tuple(v.shape)) for k, v in state_dict.items()] == state_dict_layout(config)
    assert not any(key.startswith("decoder.") or key.startswith("encoder.") for key in state_dict)
    g_ema = bench_port.generator_state_dict({"g_ema": state_dict, "latent_avg": torch.zeros(512)}, source="g")
    assert g_ema.keys() == state_dict.keys()
    with pytest.raises(CheckpointFormatError, match="no generator found"):
        bench_port.generator_state_dict({"state_dict": {"encoder.x": torch.zeros(1)}}, source="encoder only")


FAKE_OP = """
from torch.utils.cpp_extension import load

compiled = load("fused", sources=["fused_bias_act.cpp", "fused_bias_act_kernel.cu"])  # the port's import-time build


def on_cpu(x):
    return x * 2
"""
FAKE_MODEL = """
from op import compiled, on_cpu


class Generator:
    def __call__(self, x):
        return on_cpu(x)
"""


def _fake_port(folder: Path) -> Path:
    """A folder shaped like the port whose ``op`` package builds an extension at import (as the port's does)."""
    (folder / "op").mkdir(parents=True)
    (folder / "op" / "__init__.py").write_text(textwrap.dedent(FAKE_OP), encoding="utf-8")
    (folder / "model.py").write_text(textwrap.dedent(FAKE_MODEL), encoding="utf-8")
    return folder


def test_import_port_builds_nothing_and_restores_what_it_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_op = ModuleType("op")
    monkeypatch.setitem(sys.modules, "op", other_op)
    load = torch.utils.cpp_extension.load
    model = bench_port.import_port(_fake_port(tmp_path / "port"))
    assert model.Generator()(torch.ones(1)).item() == 2.0  # the CPU path runs
    with pytest.raises(RuntimeError, match="'fused' was not built"):
        model.compiled.fused_bias_act  # noqa: B018 (the lookup is what raises)
    assert torch.utils.cpp_extension.load is load
    assert sys.modules["op"] is other_op and bench_port.PORT_MODEL_MODULE not in sys.modules
    with pytest.raises(FileNotFoundError, match=r"missing model\.py"):
        bench_port.import_port(tmp_path)


PORT_DIR = os.environ.get(bench_port.PORT_ENV)


@pytest.mark.skipif(
    not PORT_DIR or bool(bench_port.port_files_missing(Path(PORT_DIR))), reason=f"${bench_port.PORT_ENV} not set"
)
def test_the_port_renders_what_ours_renders_from_the_same_weights() -> None:
    config = GeneratorConfig.from_channel_multiplier(128, style_dim=64, n_mlp=2, channel_multiplier=1)
    state_dict = seeded_state_dict(state_dict_layout(config))
    ours = generator_from_state_dict(state_dict, torch.zeros(config.w_dim), source="seeded")
    port = bench_port.build_port_generator(bench_port.import_port(Path(str(PORT_DIR))), state_dict)
    wp = torch.randn(1, config.num_ws, config.w_dim, generator=torch.Generator().manual_seed(1))
    found = bench_port.parity(ours, port, wp)
    assert found["noise_buffers_equal"]
    assert found["max_abs_difference"] < 1e-4 * found["output_range"]
    assert found["random_noise_max_abs_difference"] > 1e-2 * found["output_range"]  # the noise is in the render
