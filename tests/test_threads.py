"""The start-up thread setting: numpy's OpenBLAS limited to one thread, idempotent, a no-op without OpenBLAS."""

from __future__ import annotations

import pytest
from threadpoolctl import ThreadpoolController

from pipeline import threads


def openblas_threads() -> list[int]:
    return [info["num_threads"] for info in ThreadpoolController().select(internal_api="openblas").info()]


def test_numpy_openblas_runs_one_thread_after_the_call() -> None:
    if not openblas_threads():
        pytest.skip("this numpy is not built on OpenBLAS")
    assert threads.single_threaded_numpy_blas() is True
    assert threads.single_threaded_numpy_blas() is True
    assert openblas_threads() and set(openblas_threads()) == {threads.NUMPY_BLAS_THREADS}


def test_without_openblas_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoLibraries:
        lib_controllers: tuple[object, ...] = ()

        def limit(self, limits: int) -> None:
            raise AssertionError("nothing to limit")

    monkeypatch.setattr(ThreadpoolController, "select", lambda self, **kwargs: NoLibraries())
    assert threads.single_threaded_numpy_blas() is False
