"""Test photos shared by several test modules: standard ICC profiles and reference faces on a canvas."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import EXAMPLES_DIR

COLORD_DIR = Path("/usr/share/color/icc/colord")  # Debian's colord-data (installed by .ci/run)


def colord_profile(name: str) -> bytes:
    """A standard profile from Debian's colord-data; missing is a failure in CI (.ci/run installs it), else a skip."""
    path = COLORD_DIR / name
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing although .ci/run installs colord-data")
        pytest.skip(f"{path} missing: install Debian's colord-data (.ci/run does)")
    return path.read_bytes()


def make_photo(size: tuple[int, int], placements: list[tuple[str, int, tuple[int, int]]]) -> np.ndarray:
    """Reference photos (name, side, top-left) scaled and pasted onto a grey canvas of ``size`` (width, height)."""
    canvas = Image.new("RGB", size, (118, 112, 105))
    for name, side, corner in placements:
        face = Image.open(EXAMPLES_DIR / f"{name}.png").convert("RGB")
        canvas.paste(face.resize((side, side), Image.Resampling.LANCZOS), corner)
    return np.asarray(canvas).copy()
