"""Safe reading of PyTorch checkpoint files and strict, key-by-key state-dict loading.

All weight files are read with ``torch.load(..., weights_only=True, map_location="cpu", mmap=True)`` so a pickle can
never run code and the tensors stay file-backed (read on first use, never copied twice), and every failure is turned
into a :class:`~pipeline.errors.WeightsError` that names the file.

File-backed means a loaded model keeps reading its file: replace a weight file only by writing a new file and renaming
it into place (as :mod:`pipeline.weights.download` does), never by overwriting it in place while a process uses it (the
model would change, or the process die with SIGBUS if the file shrinks).
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import pickle
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import CheckpointFormatError, WeightsError

logger = logging.getLogger(__name__)

MAX_KEYS_IN_MESSAGE = 5  # how many offending keys an error message lists before summarising
MADV_DONTNEED = 4  # Linux madvise(2) advice (include/uapi/asm-generic/mman-common.h)
PROC_MAPS = Path("/proc/self/maps")


def read_torch_checkpoint(path: Path) -> object:
    """Load a ``torch.save`` file safely (no code execution) onto the CPU.

    Raises:
        WeightsError: if the file is missing, truncated, not a torch file, or contains objects other than tensors and
            plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist")
    try:
        try:  # memory-mapped: tensors stay file-backed and are read on first use (no second copy in memory)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # e.g. the legacy (non-zip) format cannot be mapped: read it whole
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise WeightsError(
            f"weight file {path} could not be read as a PyTorch checkpoint ({type(err).__name__}); it is probably "
            "truncated or not the expected file. Delete it and download it again."
        ) from err


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Return the entries whose key starts with ``prefix + "."``, with that prefix removed."""
    head = prefix + "."
    return {key[len(head) :]: value for key, value in state_dict.items() if key.startswith(head)}


def _summarise(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_IN_MESSAGE])
    more = len(keys) - MAX_KEYS_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


def check_state_dict(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], *, source: str, prefix: str = ""
) -> None:
    """Compare two state dicts key by key and shape by shape.

    Args:
        expected: the module's own ``state_dict()``.
        found: the state dict read from the file (prefix already stripped).
        source: a human-readable name of the file, used in messages.
        prefix: the prefix the keys carry in the file (e.g. ``"decoder"``), used in messages.

    Raises:
        CheckpointFormatError: naming the missing, unexpected or mis-shaped keys.
    """
    shown = (prefix + ".") if prefix else ""
    missing = [shown + k for k in expected if k not in found]
    extra = [shown + k for k in found if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if extra:
        problems.append(f"unexpected keys: {_summarise(extra)}")
    wrong = [
        f"{shown}{k} has shape {tuple(found[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    if wrong:
        problems.append("; ".join(wrong[:MAX_KEYS_IN_MESSAGE]) + (" …" if len(wrong) > MAX_KEYS_IN_MESSAGE else ""))
    if problems:
        raise CheckpointFormatError(f"{source} does not match the expected architecture: " + "; ".join(problems))


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, prefix: str = ""
) -> None:
    """Check keys and shapes (with messages naming the key), then load with ``strict=True``.

    When every tensor already has the module's dtype, device and memory layout, the module takes the tensors
    themselves (``assign=True``) instead of copies: a checkpoint read memory-mapped by :func:`read_torch_checkpoint`
    then stays file-backed, with one copy of the weights in memory instead of two (issue 16: peak RSS). The module
    shares their storage, so a caller must not modify the tensors in place afterwards (the loaders freeze them).
    """
    expected = module.state_dict()
    check_state_dict(expected, state_dict, source=source, prefix=prefix)
    assign = all(
        (state_dict[key].dtype, state_dict[key].device, state_dict[key].stride())
        == (value.dtype, value.device, value.stride())
        for key, value in expected.items()
    )
    module.load_state_dict(dict(state_dict), strict=True, assign=assign)


def release_file_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Drop this process's resident pages of memory-mapped checkpoint tensors that it will not read again.

    A tensor read by :func:`read_torch_checkpoint` lives in a private mapping of the weight file; once read (for
    example to make a converted copy), its pages count towards the process's resident memory until the whole file is
    unmapped, which does not happen while other tensors of the file are in use. ``madvise(MADV_DONTNEED)`` on the
    tensor's whole pages returns them; the file's contents stay in the page cache, and reading the tensor again
    (it must not have been modified in place) maps them back with the same values.

    Only whole pages inside a CPU tensor's storage that lie in a private, file-backed mapping (``/proc/self/maps``)
    are released, so an ordinary (anonymous) tensor is never touched; elsewhere than on Linux nothing is done.

    Args:
        tensors: tensors of a memory-mapped checkpoint, not modified since it was read.

    Returns:
        The number of bytes released (0 where nothing could be).
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        mappings = _private_file_mappings()
    except (OSError, AttributeError) as err:
        logger.debug("cannot release file pages: %s", err)
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page = mmap.PAGESIZE
    released = 0
    for tensor in tensors:
        if tensor.device.type != "cpu":
            continue
        storage = tensor.untyped_storage()
        start, end = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
        first, last = -(-start // page) * page, end // page * page  # whole pages only: neighbours keep theirs
        if last <= first or not any(low <= first and last <= high for low, high in mappings):
            continue
        if madvise(first, last - first, MADV_DONTNEED) == 0:
            released += last - first
    return released


def _private_file_mappings() -> list[tuple[int, int]]:
    """(start, end) addresses of this process's private mappings of regular files."""
    ranges = []
    for line in PROC_MAPS.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
        if len(fields) == 6 and fields[1].endswith("p") and fields[4] != "0" and fields[5].startswith("/"):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            ranges.append((start, end))
    return ranges
