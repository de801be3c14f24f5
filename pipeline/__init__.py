"""Coarse-to-Fine double-chin removal (Wu et al., SIGGRAPH 2021) as a small library with a CLI.

The folders follow the method's figure, left to right:

- :mod:`pipeline.faces`: decode the upload (keeping the photo's own form: profile, depth, alpha), find the face
  (dlib 68 landmarks, turning sideways photos), FFHQ-align it, paste back and write back into the photo's form.
- :mod:`pipeline.networks`: our own StyleGAN2 generator, e4e encoder, BiSeNet face parser and VGG16 features, each
  loading the real checkpoint format.
- :mod:`pipeline.latent`: W+ inversion (optimisation) and the boundary edit with style mixing.
- :mod:`pipeline.refinement`: the neck mask, the jaw warp, the masked W+ "diffuse" optimisation and compositing.
- :mod:`pipeline.weights`: where every pretrained file comes from, its checks, stand-in weights and its CLI.
- :mod:`pipeline.remover`: :class:`DoubleChinRemover`, the one orchestrator every front end calls;
  :mod:`pipeline.settings` its settings; :mod:`pipeline.models` loads every model from one weights folder.

Everything a caller needs is importable from here (the app imports nothing else)::

    from pipeline import DoubleChinRemover, RemovalSettings

The names are resolved lazily (PEP 562), so ``python -m pipeline.weights`` does not import torch or dlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it (the app and the CLI import only these)
_EXPORTS: dict[str, str] = {
    "DoubleChinRemover": "pipeline.remover",
    "RemovalResult": "pipeline.remover",
    "FaceEdit": "pipeline.remover",
    "PreparedFace": "pipeline.remover",
    "add_timings": "pipeline.remover",
    "RemovalSettings": "pipeline.settings",
    "default_settings": "pipeline.settings",
    "MAX_STEPS": "pipeline.settings",
    "SEED_MAX": "pipeline.settings",
    "STRENGTH_MAX": "pipeline.settings",
    "STRENGTH_MIN": "pipeline.settings",
    "SourcePhoto": "pipeline.faces.photo",
    "FaceSearch": "pipeline.faces.upright",
    "encode_png": "pipeline.faces.photo",
    "PipelineError": "pipeline.errors",
    "InputImageError": "pipeline.errors",
    "NoFaceError": "pipeline.errors",
    "FaceTooSmallError": "pipeline.errors",
    "LatentCodeError": "pipeline.errors",
    "WeightsError": "pipeline.errors",
    "CheckpointFormatError": "pipeline.errors",
    "CHECKPOINTS_DIR": "pipeline.config",
    "EXAMPLES_DIR": "pipeline.config",
    "NUM_WS": "pipeline.config",
    "select_device": "pipeline.device",
    "DecodedImage": "pipeline.faces.decode",
    "decode_upload": "pipeline.faces.decode",
    "Face": "pipeline.faces.align",
    "MAX_LATENT_FILE_BYTES": "pipeline.latent.editing",
    "BOUNDARY_VARIANTS": "pipeline.latent.editing",
    "ScoreChange": "pipeline.latent.editing",
    "load_latent_code": "pipeline.latent.editing",
    "mask_overlay": "pipeline.refinement.compositing",
    "REGISTRY": "pipeline.weights.registry",
    "resolve_weights_dir": "pipeline.weights.registry",
    "format_status": "pipeline.weights.checks",
    "weights_status": "pipeline.weights.checks",
    "STAND_IN_NOTE": "pipeline.weights.stand_in",
    "StartupCheck": "pipeline.verification.verify",
    "keep_freed_memory": "pipeline.allocator",
    "single_threaded_numpy_blas": "pipeline.threads",
    "RECONSTRUCTION_PREVIEW_SIZE": "pipeline.remover",
}

__all__ = [
    "BOUNDARY_VARIANTS",
    "CHECKPOINTS_DIR",
    "EXAMPLES_DIR",
    "MAX_LATENT_FILE_BYTES",
    "MAX_STEPS",
    "NUM_WS",
    "RECONSTRUCTION_PREVIEW_SIZE",
    "REGISTRY",
    "SEED_MAX",
    "STAND_IN_NOTE",
    "STRENGTH_MAX",
    "STRENGTH_MIN",
    "CheckpointFormatError",
    "DecodedImage",
    "DoubleChinRemover",
    "Face",
    "FaceEdit",
    "FaceSearch",
    "FaceTooSmallError",
    "InputImageError",
    "LatentCodeError",
    "NoFaceError",
    "PipelineError",
    "PreparedFace",
    "RemovalResult",
    "RemovalSettings",
    "ScoreChange",
    "SourcePhoto",
    "StartupCheck",
    "WeightsError",
    "add_timings",
    "decode_upload",
    "default_settings",
    "encode_png",
    "format_status",
    "keep_freed_memory",
    "load_latent_code",
    "mask_overlay",
    "resolve_weights_dir",
    "select_device",
    "single_threaded_numpy_blas",
    "weights_status",
]

if TYPE_CHECKING:
    from pipeline.allocator import keep_freed_memory
    from pipeline.config import CHECKPOINTS_DIR, EXAMPLES_DIR, NUM_WS
    from pipeline.device import select_device
    from pipeline.errors import (
        CheckpointFormatError,
        FaceTooSmallError,
        InputImageError,
        LatentCodeError,
        NoFaceError,
        PipelineError,
        WeightsError,
    )
    from pipeline.faces.align import Face
    from pipeline.faces.decode import DecodedImage, decode_upload
    from pipeline.faces.photo import SourcePhoto, encode_png
    from pipeline.faces.upright import FaceSearch
    from pipeline.latent.editing import BOUNDARY_VARIANTS, MAX_LATENT_FILE_BYTES, ScoreChange, load_latent_code
    from pipeline.refinement.compositing import mask_overlay
    from pipeline.remover import (
        RECONSTRUCTION_PREVIEW_SIZE,
        DoubleChinRemover,
        FaceEdit,
        PreparedFace,
        RemovalResult,
        add_timings,
    )
    from pipeline.settings import MAX_STEPS, SEED_MAX, STRENGTH_MAX, STRENGTH_MIN, RemovalSettings, default_settings
    from pipeline.threads import single_threaded_numpy_blas
    from pipeline.verification.verify import StartupCheck
    from pipeline.weights.checks import format_status, weights_status
    from pipeline.weights.registry import REGISTRY, resolve_weights_dir
    from pipeline.weights.stand_in import STAND_IN_NOTE


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
