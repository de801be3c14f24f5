"""Loading every model the pipeline needs, once, onto one device, from one weights folder.

The e4e checkpoint (~1.2 GB) is read a single time and gives both the encoder and the StyleGAN2 generator. The dlib
68-point landmark model is resolved through the same folder and download options as the networks. The face
parser and VGG16 are optional: without the parser the neck mask falls back to landmarks and skin colour, without VGG16
the optimisation-based stages (quality inversion, diffuse refinement) are unavailable. Each missing piece is reported
in ``notes`` rather than hidden.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dlib
import torch

from pipeline.device import select_device
from pipeline.errors import WeightsError
from pipeline.faces.landmarks import LANDMARKS_WEIGHT_KEY, load_shape_predictor
from pipeline.networks.checkpoint_io import read_torch_checkpoint
from pipeline.networks.encoder import Encoder4Editing, encoder_from_checkpoint
from pipeline.networks.parsing import BiSeNet, load_parser
from pipeline.networks.perceptual import VGG16Features, load_vgg16_features
from pipeline.networks.stylegan2 import Generator, generator_from_checkpoint
from pipeline.weights.download import resolve_weight
from pipeline.weights.stand_in import STAND_IN_NOTE, is_stand_in

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Models:
    """The loaded networks and what is known about them."""

    device: torch.device
    generator: Generator
    encoder: Encoder4Editing
    landmarks: dlib.shape_predictor  # the 68-point model that places the landmarks of every detected face
    parser: BiSeNet | None
    vgg: VGG16Features | None
    stand_in: bool  # True when the weights are seeded random stand-ins (results are not real)
    notes: tuple[str, ...]  # user-facing remarks on degraded capabilities


def load_models(
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    allow_download: bool = True,
    half_small_convs: bool | None = None,
) -> Models:
    """Resolve (download if needed), verify and load every network.

    Args:
        weights_dir: folder of weight files (default: ``$C2F_WEIGHTS_DIR`` or ``checkpoints/``).
        device: "cpu", "cuda", … or None for CUDA when available.
        allow_download: False never touches the network.
        half_small_convs: the encoder's small style convolutions with float16 weights (less memory, see
            :func:`pipeline.networks.encoder.encoder_from_checkpoint`); None: its default.

    Raises:
        WeightsError: the e4e checkpoint (encoder + generator) or the dlib model cannot be had; the message names the
            file, where it was looked for and how to provide it.
    """
    device = device if isinstance(device, torch.device) else select_device(device)
    e4e_path = resolve_weight("e4e", weights_dir=weights_dir, allow_download=allow_download)
    checkpoint = read_torch_checkpoint(e4e_path)
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{e4e_path} is not an e4e checkpoint (expected a dict with 'state_dict' and 'latent_avg')")
    source = Path(e4e_path).name
    generator = generator_from_checkpoint(checkpoint, source=source, device=device)
    encoder = encoder_from_checkpoint(checkpoint, source=source, device=device, half_small_convs=half_small_convs)
    stand_in = is_stand_in(checkpoint)
    del checkpoint
    notes: list[str] = [STAND_IN_NOTE] if stand_in else []

    def resolve(key: str) -> Path:
        return resolve_weight(key, weights_dir=weights_dir, allow_download=allow_download)

    landmarks = load_shape_predictor(resolve(LANDMARKS_WEIGHT_KEY))

    parser = _optional(
        lambda: load_parser(resolve("face_parser"), device),
        "The face parser is unavailable, so the neck mask comes from landmarks and skin colour (less precise).",
        notes,
    )
    vgg = _optional(
        lambda: load_vgg16_features(resolve("vgg16"), device),
        "VGG16 weights are unavailable, so the optimisation-based modes (quality inversion, diffuse) are disabled.",
        notes,
    )
    return Models(device, generator, encoder, landmarks, parser, vgg, stand_in, tuple(notes))


def _optional(load: Callable[[], T], note: str, notes: list[str]) -> T | None:
    """Run ``load``; on a WeightsError log it, record ``note`` and return None."""
    try:
        return load()
    except WeightsError as err:
        logger.warning("%s (%s)", note, err)
        notes.append(note)
        return None
