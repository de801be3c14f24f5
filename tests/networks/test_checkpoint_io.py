"""Checkpoint reading (memory-mapped, with the legacy format still readable) and loading without a second copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.errors import WeightsError
from pipeline.networks.checkpoint_io import load_state_dict_strict, read_torch_checkpoint, release_file_pages


def small_state() -> dict[str, torch.Tensor]:
    return {"weight": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), "bias": torch.zeros(4)}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_both_file_formats_are_read(tmp_path: Path, zip_format: bool) -> None:
    path = tmp_path / "weights.pt"
    torch.save(small_state(), path, _use_new_zipfile_serialization=zip_format)
    state = read_torch_checkpoint(path)
    assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], small_state()["weight"])


def test_a_truncated_file_is_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(small_state(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="could not be read as a PyTorch checkpoint"):
        read_torch_checkpoint(path)


def test_matching_tensors_are_taken_without_a_copy() -> None:
    state = small_state()
    module = nn.Linear(3, 4)
    load_state_dict_strict(module, state, source="test")
    assert module.weight.data_ptr() == state["weight"].data_ptr()  # the module holds the tensor itself
    assert isinstance(module.weight, nn.Parameter) and module.weight.requires_grad  # still a parameter


@pytest.mark.parametrize("case", ["dtype", "layout"])
def test_other_dtypes_or_layouts_are_copied_into_the_module(case: str) -> None:
    if case == "dtype":
        module, state = nn.Linear(3, 4), {k: v.double() for k, v in small_state().items()}
    else:
        module = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
        state = {"weight": torch.randn(4, 3, 3, 3), "bias": torch.zeros(4)}
    load_state_dict_strict(module, state, source="test")
    assert module.weight.data_ptr() != state["weight"].data_ptr()
    assert module.weight.dtype == torch.float32
    if case == "layout":
        assert module.weight.is_contiguous(memory_format=torch.channels_last)  # the module keeps its layout
    assert torch.allclose(module.weight, state["weight"].float())


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status here")


def mapped_range(path: Path) -> tuple[int, int] | None:
    """The address range where ``path`` is mapped into this process (None when it is not)."""
    for line in Path("/proc/self/maps").read_text(encoding="utf-8").splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            return int(start, 16), int(end, 16)
    return None


def test_a_memory_mapped_checkpoint_is_not_copied_into_memory(tmp_path: Path) -> None:
    """Loading a 256 MiB checkpoint into a module leaves it on disk until used; reading it whole would not."""
    path = tmp_path / "big.pt"
    rows = 64 * 1024  # 64 Ki × 1 Ki float32 = 256 MiB
    torch.save({"weight": torch.ones(rows, 1024), "bias": torch.zeros(rows)}, path)
    before = resident_mib()
    with torch.device("meta"):
        module = nn.Linear(1024, rows)
    module = module.to_empty(device="cpu")
    load_state_dict_strict(module, read_torch_checkpoint(path), source=str(path))
    assert resident_mib() - before < 64  # a copy would add 256 MiB (unless it reused freed memory)
    assert mapped_range(path)[0] <= module.weight.data_ptr() < mapped_range(path)[1]  # the weights are the file
    with torch.no_grad():
        assert float(module.weight[-1, -1]) == 1.0  # the values are there, read on use


def test_the_legacy_format_is_read_into_memory(tmp_path: Path) -> None:
    """The control for the mapping check above: a file that cannot be mapped is not."""
    path = tmp_path / "legacy.pt"
    torch.save(small_state(), path, _use_new_zipfile_serialization=False)
    state = read_torch_checkpoint(path)
    module = nn.Linear(3, 4)
    load_state_dict_strict(module, state, source=str(path))
    assert mapped_range(path) is None


def mapped_rss_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux only")
def test_released_file_pages_leave_memory_and_keep_their_values(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"big": torch.arange(8 * 2**20, dtype=torch.float32), "small": torch.ones(3)}, path)  # 32 MB
    checkpoint = read_torch_checkpoint(path)
    big, expected = checkpoint["big"], torch.arange(8 * 2**20, dtype=torch.float32)
    assert torch.equal(big, expected)  # read: its pages are resident
    before = mapped_rss_kb(path)
    assert before >= 30_000
    released = release_file_pages([big, checkpoint["small"]])  # "small" holds no whole page
    assert 31 * 2**20 < released <= 32 * 2**20
    assert mapped_rss_kb(path) < before - 30_000
    assert torch.equal(big, expected), "read again from the file: the same values"


def test_ordinary_tensors_are_never_released() -> None:
    anonymous = torch.arange(4 * 2**20, dtype=torch.float32)  # 16 MB in ordinary memory: madvise would zero it
    assert release_file_pages([anonymous, torch.empty(0)]) == 0
    assert float(anonymous[-1]) == 4 * 2**20 - 1
