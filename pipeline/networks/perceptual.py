"""VGG16 conv features for the perceptual losses (diffuse refinement, W+ optimisation), and the losses themselves.

Weights: torchvision's ImageNet VGG16 (Simonyan & Zisserman, ICLR 2015; torchvision ``vgg16`` IMAGENET1K_V1) as
re-published by timm, ``timm/vgg16.tv_in1k`` / ``model.safetensors``. Its keys are flat: ``features.{i}.weight/bias``
for the 13 convs at torchvision's ``features`` indices, plus ``pre_logits.fc1.*``, ``pre_logits.fc2.*`` and
``head.fc.*`` (the classifier), which are never read. The module here keeps torchvision's layer indices, so its
``state_dict()`` uses exactly the file's ``features.{i}.*`` keys.

Taps are the ReLU outputs used by LPIPS (Zhang et al., CVPR 2018): relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
relu4_3 (the ReLU after conv4_3, 512×32×32 at 256² input) is the layer the official diffuse loss uses
(idinvert's ``layer22``; METHOD.md §7).

**Feature-loss weight.** The official diffuse loss runs idinvert's Caffe-style VGG16 (Keras weights): BGR input in
[0, 255] minus the Caffe channel means. Ours runs torchvision's weights on RGB input scaled to [0, 1] and normalised
by the ImageNet mean/std, so the same pixels enter the first conv ≈ 255·σ ≈ 57.6× smaller (σ = 0.229, 0.224, 0.225;
58.4×, 57.1×, 57.4× per channel). If both networks scaled their features with the input alike, squared features —
and hence ``L_feat`` — would be ≈ 57.6² ≈ 3300× smaller here, suggesting λ ≈ 1e-4 × 3300 ≈ 0.33 in place of the
official 1e-4. The weights and biases differ, so this is only a starting point: λ must be re-tuned (e.g. by matching
the ratio ``L_pix / (λ·L_feat)`` at the first step to what the official setup gives on the same photo).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.nn import functional as F  # noqa: N812

from pipeline.errors import CheckpointFormatError, WeightsError
from pipeline.networks.checkpoint_io import load_state_dict_strict

__all__ = [
    "DIFFUSE_FEATURE_TAP",
    "FEATURE_LOSS_SIZE",
    "TAP_NAMES",
    "VGG16Features",
    "VGGConfig",
    "feature_mse",
    "load_vgg16_features",
    "lpips_like_distance",
    "perceptual_distance",
]

logger = logging.getLogger(__name__)

# torchvision vgg16 "features": conv at these indices, each followed by a ReLU at index + 1; max-pools at 4, 9, 16, 23
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
POOL_INDICES = (4, 9, 16, 23)  # the pool after conv5_3 (index 30) comes after the last tap and is left out
TAP_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")  # LPIPS taps
TAP_INDICES = (3, 8, 15, 22, 29)  # index of each tap's ReLU in ``features``
DIFFUSE_FEATURE_TAP = "relu4_3"  # official diffuse loss: idinvert VGG ``layer22`` = ReLU after conv4_3
FEATURE_LOSS_SIZE = 256  # official diffuse loss: AdaptiveAvgPool2d(256) before the VGG
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ImageNet normalisation, RGB in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
KERNEL_SIZE = 3
UNIT_NORM_EPS = 1e-10  # LPIPS normalize_tensor eps; used squared inside the sqrt so all-zero features stay finite
SAFETENSORS_METADATA = {"format": "pt"}  # what timm / safetensors.torch write


@dataclass(frozen=True)
class VGGConfig:
    """Channel widths of the 13 VGG16 convs (the loader infers them from the file, so stand-ins can be tiny)."""

    widths: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)  # VGG16 config "D"
    in_channels: int = 3  # RGB

    def __post_init__(self) -> None:
        if len(self.widths) != len(CONV_INDICES) or min(self.widths) < 1:
            raise ValueError(f"VGG16 needs {len(CONV_INDICES)} positive conv widths, got {self.widths}")

    @classmethod
    def tiny(cls) -> VGGConfig:
        """A few channels per conv, for fast tests with stand-in weights (same keys and layer layout)."""
        return cls(widths=(4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8))


class VGG16Features(nn.Module):
    """The conv part of torchvision's VGG16 up to relu5_3, returning the LPIPS taps.

    ``state_dict()`` keys are ``features.{i}.weight`` / ``features.{i}.bias`` for ``i`` in ``CONV_INDICES``; the
    ImageNet mean/std are non-persistent buffers.
    """

    def __init__(self, config: VGGConfig | None = None) -> None:
        super().__init__()
        self.config = config or VGGConfig()
        widths = iter(self.config.widths)
        channels = self.config.in_channels
        layers: list[nn.Module] = []
        while len(layers) <= TAP_INDICES[-1]:
            if len(layers) in POOL_INDICES:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            width = next(widths)
            layers += [nn.Conv2d(channels, width, KERNEL_SIZE, padding=KERNEL_SIZE // 2), nn.ReLU()]
            channels = width
        assert tuple(i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)) == CONV_INDICES
        # channels-last weights and activations: oneDNN's (CPU) and cuDNN's (tensor-core) fast layout, ~10 % faster
        # on the CPU for the forward + backward of the diffuse loss; loading a state dict keeps the layout
        self.features = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, *, last_tap: str = TAP_NAMES[-1]) -> list[torch.Tensor]:
        """Features of images at the LPIPS taps.

        Args:
            images: (N, 3, H, W) float RGB in [-1, 1] (H, W ≥ 16; 256 gives relu4_3 at 32×32).
            last_tap: stop after this tap (e.g. ``"relu4_3"`` for the diffuse loss, which skips conv5).

        Returns:
            The ReLU outputs for ``TAP_NAMES`` up to and including ``last_tap``, in that order; tap k has shape
            (N, C_k, H / 2^k, W / 2^k) (stored channels-last).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        if last_tap not in TAP_NAMES:
            raise ValueError(f"last_tap must be one of {TAP_NAMES}, got {last_tap!r}")
        stop = TAP_INDICES[TAP_NAMES.index(last_tap)]
        x = ((images + 1.0) / 2.0 - self.mean) / self.std  # [-1, 1] → [0, 1] → ImageNet-normalised
        x = x.contiguous(memory_format=torch.channels_last)
        taps: list[torch.Tensor] = []
        for index, layer in enumerate(self.features[: stop + 1]):
            x = layer(x)
            if index in TAP_INDICES:
                taps.append(x)
        return taps


# ---------------------------------------------------------------------------------------------------------------------
# Weight files


def _feature_keys() -> list[str]:
    return [f"features.{i}.{part}" for i in CONV_INDICES for part in ("weight", "bias")]


def _read_feature_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read only the ``features.*`` tensors of a safetensors file (the classifier is never touched)."""
    wanted = _feature_keys()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            keys = set(handle.keys())
            missing = [k for k in wanted if k not in keys]
            if missing:
                raise CheckpointFormatError(f"{path} is missing VGG16 feature keys: {', '.join(missing[:5])}")
            # Other features.* keys mean another architecture (e.g. vgg16_bn puts BatchNorm at features.1, …).
            # Keys outside features.* (pre_logits.*, head.*) are the classifier, ignored by design.
            unexpected = sorted(k for k in keys if k.startswith("features.") and k not in wanted)
            if unexpected:
                raise CheckpointFormatError(
                    f"{path} has feature keys plain VGG16 does not have ({', '.join(unexpected[:5])}); it is not a "
                    "torchvision-layout VGG16 (a batch-norm VGG?)"
                )
            return {k: handle.get_tensor(k) for k in wanted}
    except (SafetensorError, OSError) as err:
        raise WeightsError(
            f"weight file {path} could not be read as safetensors ({err}); it is probably truncated or not the "
            "expected file. Delete it and download it again."
        ) from err


def _infer_config(tensors: Mapping[str, torch.Tensor], path: Path) -> VGGConfig:
    """Check each conv's shape against its neighbour and read the widths off the weights."""
    widths = []
    channels = VGGConfig.in_channels
    for index in CONV_INDICES:
        weight, bias = tensors[f"features.{index}.weight"], tensors[f"features.{index}.bias"]
        for key, tensor in ((f"features.{index}.weight", weight), (f"features.{index}.bias", bias)):
            if not tensor.is_floating_point():
                raise CheckpointFormatError(f"{path}: {key} has dtype {tensor.dtype}; expected floating point")
        width = weight.shape[0] if weight.ndim == 4 else -1
        if tuple(weight.shape) != (width, channels, KERNEL_SIZE, KERNEL_SIZE):
            raise CheckpointFormatError(
                f"{path}: features.{index}.weight has shape {tuple(weight.shape)}; expected "
                f"(out, {channels}, {KERNEL_SIZE}, {KERNEL_SIZE})"
            )
        if tuple(bias.shape) != (width,):
            raise CheckpointFormatError(
                f"{path}: features.{index}.bias has shape {tuple(bias.shape)}; expected ({width},)"
            )
        widths.append(width)
        channels = width
    return VGGConfig(widths=tuple(widths))


def load_vgg16_features(
    path: str | Path, device: str | torch.device = "cpu", *, config: VGGConfig | None = None
) -> VGG16Features:
    """Load the VGG16 conv stack from a safetensors file with torchvision/timm ``features.{i}.*`` keys.

    Only the 26 ``features.*`` tensors are read; classifier keys (``pre_logits.*``, ``head.*``) are ignored by design.
    Channel widths are inferred from the shapes, so a tiny stand-in file loads through the same path.

    Args:
        path: the ``model.safetensors`` file (``timm/vgg16.tv_in1k``) or a stand-in with the same keys.
        device: where to put the module.
        config: if given, the widths the file must have (e.g. ``VGGConfig()`` to insist on the real network).

    Returns:
        A :class:`VGG16Features` in eval mode with ``requires_grad_(False)``, float32, on ``device``.

    Raises:
        WeightsError: the file is missing or not a readable safetensors file.
        CheckpointFormatError: a feature key is missing, mis-shaped or not floating point, an unexpected
            ``features.*`` key is present, or the widths differ from ``config``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist (VGG16 features, timm/vgg16.tv_in1k model.safetensors)")
    tensors = _read_feature_tensors(path)
    found = _infer_config(tensors, path)
    if config is not None and found != config:
        raise CheckpointFormatError(f"{path} has VGG16 conv widths {found.widths}; expected {config.widths}")
    module = VGG16Features(found)
    load_state_dict_strict(module, {k: v.float() for k, v in tensors.items()}, source=str(path))
    logger.info("loaded VGG16 features from %s (widths %s)", path, found.widths)
    return module.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------------
# Losses (pure functions of tensors)


def _check_pairs(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor]) -> None:
    if len(feats_a) != len(feats_b) or not feats_a:
        raise ValueError(f"feature lists must be non-empty and equally long, got {len(feats_a)} and {len(feats_b)}")
    for a, b in zip(feats_a, feats_b, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"feature shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def _unit_channels(features: torch.Tensor) -> torch.Tensor:
    """Scale each spatial position's channel vector to unit length (LPIPS ``normalize_tensor``), in fp32.

    fp32 even under autocast: ``UNIT_NORM_EPS**2`` (1e-20) underflows to 0 in fp16, so an all-zero position would
    give 0·inf = NaN.
    """
    features = features.float()
    return features * torch.rsqrt(features.pow(2).sum(dim=1, keepdim=True) + UNIT_NORM_EPS**2)


def lpips_like_distance(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor]) -> torch.Tensor:
    """LPIPS-style distance without learned heads: Σ_taps mean_(h,w) ‖â − b̂‖² over channels, per image.

    â, b̂ are the features with each position's channel vector scaled to unit length, so each tap contributes a
    value in [0, 4]. This is LPIPS's "baseline" variant (all channel weights 1). The learned LPIPS v0.1 linear heads
    are not used because the ``lpips`` package depends on torchvision, which would move the pinned torch version.

    Args:
        feats_a: tap features of the first images, e.g. ``VGG16Features(...)(images_a)``; each (N, C_k, H_k, W_k).
        feats_b: the same taps for the second images (same shapes).

    Returns:
        (N,) float distances, 0 for identical features; differentiable.
    """
    _check_pairs(feats_a, feats_b)
    per_tap = [
        (_unit_channels(a) - _unit_channels(b)).pow(2).sum(dim=1).mean(dim=(1, 2))
        for a, b in zip(feats_a, feats_b, strict=True)
    ]
    return torch.stack(per_tap).sum(dim=0)


def feature_mse(
    feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], tap: str = DIFFUSE_FEATURE_TAP
) -> torch.Tensor:
    """Mean squared difference of one tap's features (the diffuse loss's ``L_feat``, relu4_3 by default); a scalar.

    ``feats_a``/``feats_b`` are tap lists from :class:`VGG16Features` (possibly cut at ``last_tap``); see the module
    docstring for why the official λ = 1e-4 does not carry over to these weights.
    """
    if tap not in TAP_NAMES:
        raise ValueError(f"tap must be one of {TAP_NAMES}, got {tap!r}")
    index = TAP_NAMES.index(tap)
    if min(len(feats_a), len(feats_b)) <= index:
        raise ValueError(f"the feature lists stop before {tap}; run the extractor with last_tap={tap!r} or later")
    _check_pairs([feats_a[index]], [feats_b[index]])
    return F.mse_loss(feats_a[index].float(), feats_b[index].float())  # fp32 sum even under autocast


def perceptual_distance(extractor: VGG16Features, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
    """Mean :func:`lpips_like_distance` between two image batches in [-1, 1]; a scalar loss.

    Use ``functools.partial(perceptual_distance, vgg)`` where a two-image distance callable is expected.
    """
    return lpips_like_distance(extractor(images_a), extractor(images_b)).mean()
