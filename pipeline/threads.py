"""Process-wide thread setting for the entry points (the app and the CLI), applied once at start-up.

numpy does its linear algebra with its bundled OpenBLAS, which starts a thread per core on the first matrix product
and keeps those threads spinning for a while after each one. The pipeline's numpy products are tiny (landmarks through
an affine map, 512-d boundary projections, 3×3 solves), but the spinning threads hold the cores that the PyTorch work
right after them needs: on 2 vCPUs a windowed render that follows ``AlignedFace.inside_mask`` took 0.28–0.38 s instead
of 0.245 s (measured, issue 16). One OpenBLAS thread removes that and costs the tiny products nothing. PyTorch's own
threads (OpenMP, oneDNN) are not touched. Like :mod:`pipeline.allocator`, it changes the whole process, so only entry
points call it, never the library on import.
"""

from __future__ import annotations

import logging

import numpy  # noqa: F401 - loads numpy's OpenBLAS, so that the controller finds it
from threadpoolctl import ThreadpoolController

__all__ = ["NUMPY_BLAS_THREADS", "single_threaded_numpy_blas"]

logger = logging.getLogger(__name__)

NUMPY_BLAS_THREADS = 1  # ours (module doc)


def single_threaded_numpy_blas() -> bool:
    """Limit every OpenBLAS loaded in the process (numpy's) to :data:`NUMPY_BLAS_THREADS` thread. Safe to repeat.

    Returns:
        True if an OpenBLAS was found and limited; False if none is loaded (nothing changed).
    """
    openblas = ThreadpoolController().select(internal_api="openblas")
    if not openblas.lib_controllers:
        return False
    openblas.limit(limits=NUMPY_BLAS_THREADS)
    logger.info("numpy's OpenBLAS runs %d thread (docs/performance.md)", NUMPY_BLAS_THREADS)
    return True
