"""Full-size stand-in weights and a 12 MP test photo, shared by the benchmarks (not by the tests).

Random weights in the real file formats cost exactly what the real ones cost, so the benchmarks time the real
architecture without the real (licensed, 1.4 GB) files:

- ``e4e_ffhq_encode.pt``: the full IR-SE-50 e4e encoder (``Encoder4Editing(EncoderConfig())``) and the full FFHQ
  config-f generator (``GeneratorConfig.ffhq()``) under ``encoder.*`` / ``decoder.*``, with ``latent_avg`` and
  ``opts`` as the released file (~1.2 GB), drawn with :func:`pipeline.weights.stand_in.seeded_state_dict`;
- ``79999_iter.pth``: the full BiSeNet face parser;
- ``model.safetensors``: the full-width VGG16 conv stack (:func:`pipeline.networks.perceptual.random_vgg16_features`).

The folder is written once into a cache folder (``$C2F_BENCH_CACHE``, default ``<tmp>/c2f_bench``) and reused by later
runs. The e4e file carries the stand-in flag, so every result made with it says "not a real result".

The face parser with random weights labels pixels at random, so the neck mask and the jaw warp would take their
fallback paths. :class:`SyntheticLabelParser` wraps the real (random) BiSeNet: it runs the full network (same cost)
and then returns the logits of a synthetic, plausible label map built from the photo's landmarks (skin inside the
jaw line and a forehead arc, neck below the chin, background elsewhere), with the jaw of every later call (the edited
render) moved up a little so the warp has a contour to move.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from pipeline.config import EXAMPLES_DIR, PARSER_INPUT_SIZE
from pipeline.networks.encoder import Encoder4Editing, EncoderConfig
from pipeline.networks.parsing import BACKGROUND, NECK, NUM_CLASSES, SKIN, BiSeNet
from pipeline.networks.perceptual import VGGConfig
from pipeline.networks.stylegan2 import Generator, GeneratorConfig, state_dict_layout
from pipeline.weights.registry import REGISTRY, STAND_IN_MARKER
from pipeline.weights.stand_in import (
    FIXTURE_SEED,
    STAND_IN_OPTION,
    random_vgg16_features,
    save_vgg16_features,
    seeded_state_dict,
)

logger = logging.getLogger(__name__)

CACHE_ENV = "C2F_BENCH_CACHE"
WEIGHTS_FOLDER = "weights-full-v1"  # bump the suffix when the recipe changes
DONE_MARKER = "COMPLETE"
LATENT_AVG_SAMPLES = 4096  # z's averaged for latent_avg (as StyleGAN2's mean_latent)

PHOTO_CANVAS = (4000, 3000)  # (width, height): 12 MP
PHOTO_SOURCE = "00016.png"  # an official reference photo (an FFHQ-aligned 1024² face)
PHOTO_FACE_SCALE = 1.25  # the 1024² reference is placed at 1280² so the aligned crop is a slight downscale
PHOTO_QUALITY = 92
CLUTTER_CELL = 64  # px: size of the smooth random background's cells
NOISE_LEVEL = 8  # ± grey levels of sensor-like noise, so the JPEG has a realistic size

FOREHEAD_RISE = 0.55  # forehead arc height, × jaw width, above the eyebrow line (synthetic label map)
NECK_HALF_WIDTH = 0.32  # neck half width at the chin, × jaw width
EDITED_JAW_LIFT = 0.04  # the edited render's jaw is lifted by this × jaw width (the edit removes the double chin)
SYNTHETIC_LOGIT = 10.0  # logit of the chosen class (others 0): the arg-max is the synthetic label


def cache_dir() -> Path:
    """Where the benchmark caches live (``$C2F_BENCH_CACHE`` or ``<tmp>/c2f_bench``)."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "c2f_bench")


def _layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in module.state_dict().items()]


def _e4e_checkpoint(seed: int) -> dict[str, object]:
    config = GeneratorConfig.ffhq()
    decoder = seeded_state_dict(state_dict_layout(config), seed=seed)
    with torch.device("meta"):
        encoder_layout = _layout(Encoder4Editing(EncoderConfig()))
    encoder = seeded_state_dict(encoder_layout, seed=seed + 1, random_fir_kernels=True)
    generator = Generator(config)
    generator.load_state_dict(decoder)
    with torch.inference_mode():
        z = torch.randn(LATENT_AVG_SAMPLES, config.w_dim, generator=torch.Generator().manual_seed(seed))
        latent_avg = generator.mapping(z).mean(0)
    del generator
    state = {f"encoder.{k}": v for k, v in encoder.items()} | {f"decoder.{k}": v for k, v in decoder.items()}
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "start_from_latent_avg": True}
    return {
        "state_dict": state,
        "latent_avg": latent_avg.expand(config.num_ws, -1).clone(),
        "opts": opts | {STAND_IN_OPTION: True},
    }


def full_size_weights_dir(seed: int = FIXTURE_SEED) -> Path:
    """A weights folder with full-size random e4e, BiSeNet and VGG16 files in the real formats (built once, cached).

    Returns:
        The folder; pass it as ``weights_dir`` / ``C2F_WEIGHTS_DIR``.
    """
    folder = cache_dir() / WEIGHTS_FOLDER
    if (folder / DONE_MARKER).is_file():
        # Stand-in folders are exempt from the registry's pinned checksums (the parser's), also when built earlier.
        (folder / STAND_IN_MARKER).write_text("full-size random stand-in weights (bench/full_size.py)\n", "utf-8")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.save(_e4e_checkpoint(seed), folder / REGISTRY["e4e"].filename)
    with torch.device("meta"):
        parser_layout = _layout(BiSeNet())
    torch.save(seeded_state_dict(parser_layout, seed=seed + 2, random_fir_kernels=True), folder / "79999_iter.pth")
    save_vgg16_features(random_vgg16_features(VGGConfig(), seed=seed + 3), folder / REGISTRY["vgg16"].filename)
    (folder / STAND_IN_MARKER).write_text("full-size random stand-in weights (bench/full_size.py)\n", "utf-8")
    (folder / DONE_MARKER).write_text(f"built in {time.perf_counter() - start:.0f} s\n", encoding="utf-8")
    logger.info("wrote full-size stand-in weights to %s", folder)
    return folder


def twelve_mp_jpeg(seed: int = 0) -> Path:
    """A 4000×3000 JPEG (quality 92) with the reference face at 1280² on smooth random clutter (built once)."""
    path = cache_dir() / f"photo_12mp_{Path(PHOTO_SOURCE).stem}.jpg"
    if path.is_file():
        return path
    width, height = PHOTO_CANVAS
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 200, (height // CLUTTER_CELL, width // CLUTTER_CELL, 3), dtype=np.uint8)
    canvas = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-NOISE_LEVEL, NOISE_LEVEL + 1, canvas.shape, dtype=np.int16)
    canvas = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    face = np.asarray(Image.open(EXAMPLES_DIR / PHOTO_SOURCE).convert("RGB"))
    side = round(face.shape[0] * PHOTO_FACE_SCALE)
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    top, left = (height - side) // 2, (width - side) // 2
    canvas[top : top + side, left : left + side] = face
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "JPEG", quality=PHOTO_QUALITY)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def synthetic_labels(landmarks: np.ndarray, size: int, *, jaw_lift: float = 0.0) -> np.ndarray:
    """A plausible (size, size) uint8 label map from 68 landmarks: skin face, neck below the chin, background.

    Args:
        landmarks: (68, 2) float (x, y) in a ``size``² aligned frame.
        size: side of the label map.
        jaw_lift: move the lower jaw points up by this fraction of the jaw width (0 = as detected).
    """
    points = np.asarray(landmarks, dtype=np.float64).copy()
    jaw = points[0:17]
    jaw_width = float(jaw[:, 0].max() - jaw[:, 0].min())
    lift = np.clip((jaw[:, 1] - jaw[[0, 16], 1].mean()) / max(np.ptp(jaw[:, 1]), 1.0), 0.0, 1.0)
    jaw[:, 1] -= jaw_lift * jaw_width * lift  # the chin moves most, the ends not at all
    brow_y = float(points[17:27, 1].min())
    centre_x = float(jaw[:, 0].mean())
    angles = np.linspace(0.0, np.pi, 24)
    arc = np.stack(
        [centre_x + 0.5 * jaw_width * np.cos(angles), brow_y - FOREHEAD_RISE * jaw_width * np.sin(angles)], axis=1
    )
    labels = np.full((size, size), BACKGROUND, dtype=np.uint8)
    chin = jaw[8]
    half = NECK_HALF_WIDTH * jaw_width
    neck = np.array(
        [
            [chin[0] - half, jaw[4, 1]],
            [chin[0] + half, jaw[12, 1]],
            [chin[0] + 1.2 * half, size],
            [chin[0] - 1.2 * half, size],
        ]
    )
    cv2.fillPoly(labels, [np.rint(neck).astype(np.int32)], NECK)
    face = np.vstack([jaw, arc])
    cv2.fillPoly(labels, [np.rint(face).astype(np.int32)], SKIN)
    return labels


class SyntheticLabelParser(torch.nn.Module):
    """Runs the wrapped BiSeNet (so the cost is real), then returns one-hot logits of a synthetic label map.

    The first call after :meth:`set_landmarks` (the aligned photo) gets the map of the detected jaw; later calls (the
    edited renders) get the same map with the jaw lifted by :data:`EDITED_JAW_LIFT`.
    """

    def __init__(self, parser: BiSeNet) -> None:
        super().__init__()
        self.parser = parser
        self._maps: tuple[torch.Tensor, torch.Tensor] | None = None
        self._calls = 0

    def set_landmarks(self, landmarks: np.ndarray, aligned_size: int, *, edited: bool = False) -> None:
        """Landmarks of the face in its ``aligned_size``² crop; resets the call counter.

        With ``edited`` the next call already gets the edited render's map (the aligned photo was parsed earlier).
        """
        scaled = np.asarray(landmarks, dtype=np.float64) * PARSER_INPUT_SIZE / aligned_size
        maps = (
            synthetic_labels(scaled, PARSER_INPUT_SIZE),
            synthetic_labels(scaled, PARSER_INPUT_SIZE, jaw_lift=EDITED_JAW_LIFT),
        )
        self._maps = tuple(self._one_hot(labels) for labels in maps)
        self._calls = 1 if edited else 0

    def reset(self) -> None:
        """The next call is the aligned photo again (a new run of the same photo)."""
        self._calls = 0

    @staticmethod
    def _one_hot(labels: np.ndarray) -> torch.Tensor:
        index = torch.from_numpy(labels.astype(np.int64))
        return torch.nn.functional.one_hot(index, NUM_CLASSES).permute(2, 0, 1)[None].float() * SYNTHETIC_LOGIT

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 512, 512) normalised images -> (N, 19, 512, 512) logits of the synthetic map."""
        logits = self.parser(images)
        if self._maps is None:
            return logits
        chosen = self._maps[0 if self._calls == 0 else 1]
        self._calls += 1
        return chosen.to(logits.device).expand(images.shape[0], -1, -1, -1)
