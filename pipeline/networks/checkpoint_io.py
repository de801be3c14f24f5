"""Safe reading of PyTorch checkpoint files and strict, key-by-key state-dict loading.

All weight files are read with ``torch.load(..., weights_only=True, map_location="cpu", mmap=True)`` so a pickle can
never run code and the tensors stay file-backed (read on first use, never copied twice), and every failure is turned
into a :class:`~pipeline.errors.WeightsError` that names the file.

File-backed means a loaded model keeps reading its file: replace a weight file only by writing a new file and renaming
it into place (as :mod:`pipeline.weights.download` does), never by overwriting it in place while a process uses it (the
model would change, or the process die with SIGBUS if the file shrinks).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import CheckpointFormatError, WeightsError

MAX_KEYS_IN_MESSAGE = 5  # how many offending keys an error message lists before summarising


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
