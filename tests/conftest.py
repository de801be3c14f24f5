from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import torch

from pipeline import DoubleChinRemover
from pipeline.config import REPO_ROOT

if TYPE_CHECKING:
    from gradio_client import Client

    from tests.serving import Served

SHARED_DIR = Path(os.environ.get("C2F_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURES_DIR = SHARED_DIR / "fixtures"
REFERENCE_DIR = SHARED_DIR / "reference" / "official-c2f"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TEMP_ENV = ("TMPDIR", "GRADIO_TEMP_DIR")
_run_temp: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Send every temporary file of the run into one folder of its own, removed when the run ends.

    gradio_client leaves an empty ``tempfile.gettempdir()/<40 hex>`` folder behind for every file it downloads,
    and Gradio's default folder (``<tmp>/gradio``) is the one ``python app.py`` wipes as "leftovers of an earlier
    run"; so ``tempfile`` (pytest's own ``tmp_path`` included), ``TMPDIR`` for subprocesses and
    ``GRADIO_TEMP_DIR`` all point inside this run's folder (tests that serve the app still set their own).
    """
    folder = Path(tempfile.mkdtemp(prefix="c2f-tests-"))
    _run_temp.update(folder=folder, tempdir=tempfile.tempdir, env={name: os.environ.get(name) for name in TEMP_ENV})
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's temporary folder and restore the environment."""
    if "folder" not in _run_temp:
        return
    tempfile.tempdir = _run_temp["tempdir"]  # type: ignore[assignment]
    for name, value in _run_temp["env"].items():  # type: ignore[union-attr]
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(_run_temp.pop("folder"), ignore_errors=True)  # type: ignore[arg-type]


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


@pytest.fixture(scope="session")
def synthetic_label_remover(stand_in_weights_dir: Path) -> object:
    """The stand-in remover whose face parser draws plausible labels, so the end-to-end tests run the jaw warp.

    A :class:`tests.serving.SyntheticLabelRemover` (the benchmark's synthetic-label parser, ``bench/full_size.py``).
    """
    from pipeline.remover import DoubleChinRemover
    from tests.serving import SyntheticLabelRemover

    return SyntheticLabelRemover(
        DoubleChinRemover.from_pretrained(stand_in_weights_dir, device="cpu", allow_download=False)
    )


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


@pytest.fixture(scope="module")
def remover(stand_in_weights_dir: Path) -> DoubleChinRemover:
    """The whole remover on the stand-in weights, on the CPU, without progress bars (loaded once per module)."""
    from pipeline import DoubleChinRemover

    remover = DoubleChinRemover.from_pretrained(stand_in_weights_dir, device="cpu", allow_download=False)
    remover.progress_bars = False
    return remover
