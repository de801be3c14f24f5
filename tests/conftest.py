from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.config import REPO_ROOT

SHARED_DIR = Path(os.environ.get("C2F_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURES_DIR = SHARED_DIR / "fixtures"
REFERENCE_DIR = SHARED_DIR / "reference" / "official-c2f"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared parity fixtures; missing is a failure in CI and a skip elsewhere."""
    if not FIXTURES_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared fixtures not found at {FIXTURES_DIR}")
        pytest.skip(f"shared fixtures not found at {FIXTURES_DIR} (set C2F_SHARED_DIR)")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def stand_in_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small random stand-in weights in the real formats (``make-test-weights``), made once per run."""
    from pipeline.weights.stand_in import write_stand_in_weights

    folder = tmp_path_factory.mktemp("stand_in_weights")
    write_stand_in_weights(folder)
    return folder
