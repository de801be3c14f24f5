"""The one place that decides which torch device the models run on."""

from __future__ import annotations

import torch


def select_device(requested: str | None = None) -> torch.device:
    """Return the device to run on: ``requested`` if given, else CUDA when available, else CPU.

    Args:
        requested: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` … or None/``"auto"`` for automatic choice.

    Raises:
        ValueError: if CUDA is requested but not available.
    """
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} was requested but CUDA is not available on this machine")
    return device
