from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import torch

from pipeline.config import REPO_ROOT

if TYPE_CHECKING:
    from gradio_client import Client

    from tests.serving import Served

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


# -- the app, served in this process (one server per test module) --------------------------------------------------


@pytest.fixture(scope="module")
def temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gradio's temporary folder for this module's server (uploads, cached files and results)."""
    return tmp_path_factory.mktemp("gradio_tmp")


@pytest.fixture(scope="module")
def app_module(stand_in_weights_dir: Path, temp_dir: Path) -> Iterator[ModuleType]:
    """app.py imported with stand-in weights on the CPU, offline (its models load once per session)."""
    from tests.serving import import_app, use_stand_in_environment  # gradio only for the app's tests

    with pytest.MonkeyPatch.context() as monkeypatch:
        use_stand_in_environment(monkeypatch, stand_in_weights_dir, temp_dir)
        yield import_app()


@pytest.fixture(scope="module")
def served(app_module: ModuleType) -> Iterator[Served]:
    """The page built as app.py builds it, launched on loopback with the shipped options."""
    from tests.serving import serve

    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from serve(monkeypatch, app_module)


@pytest.fixture(scope="module")
def client(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """A gradio_client for ``served`` that downloads outputs into a temporary folder."""
    from gradio_client import Client

    return Client(served.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
