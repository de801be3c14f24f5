"""What the Space reads from its environment: the device and whether weights may be downloaded."""

from __future__ import annotations

import logging
import os

from pipeline import select_device

logger = logging.getLogger(__name__)

DEVICE_ENV = "C2F_DEVICE"  # auto / cpu / cuda / cuda:N
ALLOW_DOWNLOAD_ENV = "C2F_ALLOW_DOWNLOAD"  # 0/false/no/off: never touch the network for weights
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_flag(name: str, default: bool) -> bool:
    """A boolean environment variable: unset → ``default``; 0/false/no/off → False; anything else → True."""
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value not in FALSE_WORDS


def device_from_env() -> str:
    """``C2F_DEVICE`` (default auto), or "cpu" with a warning in the log when this machine does not have that device.

    A Space moved to CPU hardware (or a typo) keeps serving on the CPU, with the CPU's step caps, instead of failing
    to start (RELIABILITY.md §6.2 item 9).
    """
    requested = os.environ.get(DEVICE_ENV, "").strip() or "auto"
    try:
        select_device(requested)
    except (ValueError, RuntimeError) as err:
        logger.warning("%s=%s cannot be used (%s); running on the CPU instead", DEVICE_ENV, requested, err)
        return "cpu"
    return requested
