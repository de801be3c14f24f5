"""Coarse-to-Fine double-chin removal (Wu et al., SIGGRAPH 2021) as a small library with a CLI.

The folders follow the method's figure, left to right:

- :mod:`pipeline.faces`: decode the upload (keeping the photo's own form: profile, depth, alpha), find the face
  (dlib 68 landmarks, turning sideways photos), FFHQ-align it, paste back and write back into the photo's form.
- :mod:`pipeline.networks`: our own StyleGAN2 generator, e4e encoder, BiSeNet face parser and VGG16 features, each
  loading the real checkpoint format.
- :mod:`pipeline.latent`: W+ inversion (optimisation) and the boundary edit with style mixing.
- :mod:`pipeline.refinement`: the neck mask, the jaw warp, the masked W+ "diffuse" optimisation and compositing.
- :mod:`pipeline.weights`: where every pretrained file comes from, its checks, stand-in weights and its CLI.
- :mod:`pipeline.remover`: :class:`DoubleChinRemover`, the one orchestrator every front end calls.

Everything a caller needs is importable from here::

    from pipeline import DoubleChinRemover, RemovalSettings

The names are resolved lazily (PEP 562), so ``python -m pipeline.weights`` does not import torch or dlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "DoubleChinRemover": "pipeline.remover",
    "RemovalResult": "pipeline.remover",
    "FaceEdit": "pipeline.remover",
    "PreparedFace": "pipeline.remover",
    "RemovalSettings": "pipeline.settings",
    "SourcePhoto": "pipeline.faces.photo",
    "encode_png": "pipeline.faces.photo",
    "PipelineError": "pipeline.errors",
    "InputImageError": "pipeline.errors",
    "NoFaceError": "pipeline.errors",
    "FaceTooSmallError": "pipeline.errors",
    "LatentCodeError": "pipeline.errors",
    "WeightsError": "pipeline.errors",
    "CheckpointFormatError": "pipeline.errors",
}

__all__ = [
    "CheckpointFormatError",
    "DoubleChinRemover",
    "FaceEdit",
    "FaceTooSmallError",
    "InputImageError",
    "LatentCodeError",
    "NoFaceError",
    "PipelineError",
    "PreparedFace",
    "RemovalResult",
    "RemovalSettings",
    "SourcePhoto",
    "WeightsError",
    "encode_png",
]

if TYPE_CHECKING:
    from pipeline.errors import (
        CheckpointFormatError,
        FaceTooSmallError,
        InputImageError,
        LatentCodeError,
        NoFaceError,
        PipelineError,
        WeightsError,
    )
    from pipeline.faces.photo import SourcePhoto, encode_png
    from pipeline.remover import DoubleChinRemover, FaceEdit, PreparedFace, RemovalResult
    from pipeline.settings import RemovalSettings


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
