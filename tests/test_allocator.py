"""The start-up allocator setting: accepted by glibc, idempotent, and a no-op without glibc."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from pipeline import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_settings_twice() -> None:
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True
    assert allocator.applied()


def test_without_a_c_library_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator.keep_freed_memory() is False
