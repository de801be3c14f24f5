"""The e4e encoder: an aligned face crop → a W+ code of the StyleGAN2 FFHQ generator.

Our own implementation of ``Encoder4Editing`` from Tov et al., "Designing an Encoder for StyleGAN Image
Manipulation" (SIGGRAPH 2021), in the configuration of the released FFHQ checkpoint ``e4e_ffhq_encode.pt``
(omertov/encoder4editing). Parameter names and shapes are exactly the file's ``encoder.*`` entries, so the checkpoint
loads strictly; the file's ``decoder.*`` entries (the StyleGAN2 generator) are read by
:mod:`pipeline.networks.stylegan2`.
METHOD.md §2b explains why the demo inverts with e4e instead of the authors' 1000-step projector.

Architecture (the numbers are those of the released checkpoint; all of them live in :class:`EncoderConfig`):

* Body: the IR-SE-50 face-recognition trunk of ArcFace (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep
  Face Recognition", CVPR 2019; InsightFace's "improved residual" unit BN → conv → PReLU → conv → BN) with
  squeeze-and-excitation gating (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018). A stride-1 3×3 stem is
  followed by four stages of 3, 4, 14 and 3 units with 64, 128, 256 and 512 channels; the first unit of each stage
  halves the resolution. The ends of stages 2, 3 and 4 are the pyramid taps c1 (64²), c2 (32²) and c3 (16²).
* Feature pyramid (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017):
  p2 = up(c3) + lateral(c2) and p1 = up(p2) + lateral(c1), with bilinear up-sampling (aligned corners) and 1×1
  lateral convs to the width of c3.
* 18 "map2style" blocks (Richardson et al., pSp, CVPR 2021): stride-2 3×3 convs with LeakyReLU down to 1×1, then
  an equalised-learning-rate linear layer. Blocks 0–2 read c3, blocks 3–6 read p2 and blocks 7–17 read p1.
* e4e's offset scheme, at its final ("inference") progressive stage where every offset is active:
  w_0 = style_0(c3) and w_i = w_0 + Δ_i with Δ_i = style_i(level_i) for i = 1…17.

The network returns codes *before* the checkpoint's average latent is added (as e4e's ``Encoder4Editing.forward``
does); :func:`invert_with_encoder` adds ``latent_avg`` (e4e's ``start_from_latent_avg``) to give the W+ code that the
generator takes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import nn

from pipeline.config import ENCODER_INPUT_SIZE, NUM_WS, W_DIM
from pipeline.errors import CheckpointFormatError, InputImageError, WeightsError
from pipeline.networks.checkpoint_io import (
    load_state_dict_strict,
    read_torch_checkpoint,
    release_file_pages,
    strip_prefix,
)

__all__ = [
    "Encoder4Editing",
    "EncoderConfig",
    "encoder_from_checkpoint",
    "encoder_input",
    "invert_with_encoder",
    "load_encoder",
]

logger = logging.getLogger(__name__)

ENCODER_PREFIX = "encoder"  # key prefix of the encoder inside pSp.state_dict()
STATE_DICT_ENTRY = "state_dict"  # top-level entry of e4e_ffhq_encode.pt holding pSp.state_dict()
LATENT_AVG_ENTRY = "latent_avg"  # top-level entry holding the (18, 512) average latent
NUM_BODY_STAGES = 4  # IR-SE trunks have four resolution stages
BODY_DOWNSAMPLING = 2**NUM_BODY_STAGES  # stride-1 stem, one stride-2 unit per stage: c3 is input_size / 16
PYRAMID_TAP_STAGES = (1, 2, 3)  # zero-based stages whose last unit gives c1, c2, c3 (units 6, 20, 23 of IR-SE-50)
RGB_CHANNELS = 3
STYLE_LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default slope, used in pSp/e4e's GradualStyleBlock
PIXEL_HALF_RANGE = np.float32(127.5)  # uint8 → [-1, 1] as x / 127.5 − 1 (== e4e's ToTensor + Normalize(0.5, 0.5))
PIXEL_OFFSET = np.float32(1.0)
RESIZE_FILTER = Image.Resampling.BILINEAR  # torchvision Resize((256, 256)) on a PIL image: antialiased bilinear
# Ours (issue 16): the style blocks' convolutions whose input is at most this many pixels on a side (16², 8², 4², 2²:
# 72 of the released checkpoint's 98 style convolutions, 0.68 of its 1.07 GB of weights, 1.2 % of its FLOPs) keep
# their weights in float16 on the CPU and compute in float32 (HalfWeightConv2d). Measured on the full-size stand-ins:
# fast-path peak RSS 2.22 → 1.94 GB, an e4e forward +4–16 ms (of 0.43–0.45 s), codes within 4–5e-4 of their norm
# (TF32 convolutions, PyTorch's default on GPUs, move them 1.1e-3). Issue 16's bar for lower precision: the
# generator's renders of the two codes are 59–62 dB apart (uint8 PSNR; ≥ 40 dB asked), the neck masks equal and the
# results 60–62 dB apart on the seven reference faces (bench.bench_half_convs, the benchmark's stand-in generator with
# the architecture's fixed FIR kernels). A generator with random FIR kernels, which no trained StyleGAN2 has, is far
# more sensitive (39 dB, and 32 dB for TF32; tests/networks/test_encoder.py). ``python -m bench.bench_half_convs
# --weights-dir checkpoints`` repeats the check on the real weights and says if HALF_SMALL_CONVS_ON_CPU must go off.
HALF_WEIGHT_MAX_INPUT = 16
HALF_SMALL_CONVS_ON_CPU = True  # the default of ``half_small_convs`` on the CPU (see above)


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of the e4e encoder; the defaults are the released FFHQ checkpoint (IR-SE-50, 18 styles of 512)."""

    input_size: int = ENCODER_INPUT_SIZE  # side of the square input; e4e's test transform resizes to 256
    stem_channels: int = 64  # width of the 3×3 stem conv (``input_layer``), IR-SE-50
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)  # unit width per body stage, IR-50 (ArcFace)
    stage_units: tuple[int, ...] = (3, 4, 14, 3)  # units per body stage, IR-50: 24 units in all
    se_reduction: int = 16  # squeeze-and-excitation channel reduction (pSp/e4e ``SEModule(depth, 16)``)
    style_conv_channels: int = 512  # width of the style blocks' stride-2 convs (pSp/e4e: 512)
    num_styles: int = NUM_WS  # W+ rows: 2·log2(1024) − 2 = 18 for the 1024² generator
    style_dim: int = W_DIM  # width of each W+ row, the output of each style block's linear layer
    coarse_index: int = 3  # first style block that reads p2 instead of c3 (e4e ``coarse_ind``)
    middle_index: int = 7  # first style block that reads p1 (e4e ``middle_ind``)

    def __post_init__(self) -> None:
        if len(self.stage_channels) != NUM_BODY_STAGES or len(self.stage_units) != NUM_BODY_STAGES:
            raise ValueError(
                f"the body needs {NUM_BODY_STAGES} stages; got widths {self.stage_channels}, units {self.stage_units}"
            )
        if min(self.stage_units) < 1 or min(self.stage_channels) < 1 or self.stem_channels < 1:
            raise ValueError("every body stage needs at least one unit and one channel")
        if any(a == b for a, b in zip(self.stage_channels, self.stage_channels[1:], strict=False)):
            raise ValueError(f"neighbouring body stages must differ in width; got {self.stage_channels}")
        if self.se_reduction < 1 or any(c % self.se_reduction for c in self.stage_channels):
            raise ValueError(f"se_reduction {self.se_reduction} must divide every stage width {self.stage_channels}")
        coarse_size = self.input_size // BODY_DOWNSAMPLING
        if self.input_size % BODY_DOWNSAMPLING or coarse_size < 2 or coarse_size & (coarse_size - 1):
            raise ValueError(f"input_size must be {BODY_DOWNSAMPLING} × a power of two ≥ 2; got {self.input_size}")
        if not 1 <= self.coarse_index < self.middle_index < self.num_styles:
            raise ValueError(
                f"need 1 ≤ coarse_index < middle_index < num_styles; got {self.coarse_index}, {self.middle_index}, "
                f"{self.num_styles}"
            )
        if self.style_conv_channels < 1 or self.style_dim < 1:
            raise ValueError("style_conv_channels and style_dim must be positive")

    @classmethod
    def tiny(cls) -> EncoderConfig:
        """Same structure, key names and (N, 18, 512) output, with narrow layers: a stand-in file of about 4 MB."""
        return cls(stem_channels=8, stage_channels=(8, 16, 32, 64), se_reduction=4, style_conv_channels=16)

    @property
    def pyramid_channels(self) -> int:
        """Width of c3, of the lateral convs' outputs and of the style blocks' inputs."""
        return self.stage_channels[-1]

    @property
    def tap_units(self) -> tuple[int, int, int]:
        """Zero-based body unit indices after which c1, c2 and c3 are taken ((6, 20, 23) for IR-SE-50)."""
        ends = np.cumsum(self.stage_units) - 1
        c1, c2, c3 = (int(ends[stage]) for stage in PYRAMID_TAP_STAGES)
        return c1, c2, c3

    def style_level(self, index: int) -> int:
        """Pyramid level a style block reads: 0 = c3 (coarse), 1 = p2 (middle), 2 = p1 (fine)."""
        return int(index >= self.coarse_index) + int(index >= self.middle_index)

    def style_convs(self, index: int) -> int:
        """Number of stride-2 convs that bring style block ``index``'s input map down to 1×1 (4, 5 or 6)."""
        coarse_size = self.input_size // BODY_DOWNSAMPLING
        return int(math.log2(coarse_size)) + self.style_level(index)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict", prefix: str = ""
    ) -> EncoderConfig:
        """Infer the configuration from the shapes of an encoder state dict (keys without the ``encoder.`` prefix).

        Args:
            state_dict: encoder parameters keyed like ``input_layer.0.weight``, ``body.3.res_layer.1.weight``, …
            source: a human-readable name of where the dict came from, used in messages.
            prefix: the prefix the keys carry in the file (e.g. ``"encoder"``), used in messages.

        Returns:
            The configuration whose module has these shapes (every other key is checked when it is loaded).

        Raises:
            CheckpointFormatError: if a key the inference needs is missing or the shapes describe no valid encoder.
        """
        shown = f"{prefix}." if prefix else ""

        def shape_of(key: str, ndim: int) -> tuple[int, ...]:
            value = state_dict.get(key)
            if not isinstance(value, torch.Tensor):
                raise CheckpointFormatError(f"{source} is not an e4e encoder: missing tensor {shown}{key}")
            if value.ndim != ndim or min(value.shape) < 1:
                raise CheckpointFormatError(
                    f"{source}: {shown}{key} has shape {tuple(value.shape)}, expected a non-empty {ndim}-D tensor"
                )
            return tuple(value.shape)

        stem_channels = shape_of("input_layer.0.weight", 4)[0]
        unit_widths = [shape_of("body.0.res_layer.1.weight", 4)[0]]
        while f"body.{len(unit_widths)}.res_layer.1.weight" in state_dict:
            unit_widths.append(shape_of(f"body.{len(unit_widths)}.res_layer.1.weight", 4)[0])
        stage_channels, stage_units = _runs(unit_widths)
        se_reduction = stage_channels[0] // shape_of("body.0.res_layer.5.fc1.weight", 4)[0]

        shape_of("styles.0.convs.0.weight", 4)
        style_dim, style_conv_channels = shape_of("styles.0.linear.weight", 2)
        style_convs = [_count_style_convs(state_dict, 0)]
        while f"styles.{len(style_convs)}.linear.weight" in state_dict:
            style_convs.append(_count_style_convs(state_dict, len(style_convs)))
        # Style blocks on a deeper (larger) pyramid level need one more conv; the first block with more convs
        # than its predecessors marks the next level.
        coarse_index = next((i for i, n in enumerate(style_convs) if n > style_convs[0]), len(style_convs))
        middle_index = next(
            (i for i, n in enumerate(style_convs) if i > coarse_index and n > style_convs[coarse_index]),
            len(style_convs),
        )
        try:
            return cls(
                input_size=BODY_DOWNSAMPLING * 2 ** style_convs[0],
                stem_channels=stem_channels,
                stage_channels=tuple(stage_channels),
                stage_units=tuple(stage_units),
                se_reduction=se_reduction,
                style_conv_channels=style_conv_channels,
                num_styles=len(style_convs),
                style_dim=style_dim,
                coarse_index=coarse_index,
                middle_index=middle_index,
            )
        except ValueError as err:
            raise CheckpointFormatError(f"{source} does not describe an e4e encoder: {err}") from err


def _runs(values: list[int]) -> tuple[list[int], list[int]]:
    """Group consecutive equal values: [64, 64, 128] -> ([64, 128], [2, 1])."""
    distinct: list[int] = []
    counts: list[int] = []
    for value in values:
        if distinct and distinct[-1] == value:
            counts[-1] += 1
        else:
            distinct.append(value)
            counts.append(1)
    return distinct, counts


def _count_style_convs(state_dict: Mapping[str, torch.Tensor], index: int) -> int:
    """Number of convs in style block ``index`` (they sit at even Sequential indices, LeakyReLUs in between)."""
    count = 0
    while f"styles.{index}.convs.{2 * count}.weight" in state_dict:
        count += 1
    return count


class Subsample(nn.Module):
    """Keep every ``stride``-th pixel: the identity shortcut of a strided unit (a 1×1 max-pool in IR-SE code)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, ceil(H / stride), ceil(W / stride))."""
        return x[:, :, :: self.stride, :: self.stride]


class SqueezeExcite(nn.Module):
    """Channel gating x · sigmoid(fc2(relu(fc1(mean_hw(x))))) with bias-free 1×1 convs (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        squeezed = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))  # (N, C, 1, 1)
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: BN → conv3×3 → PReLU → conv3×3 (strided) → BN → SE, plus a shortcut (ArcFace, IR-SE)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, se_reduction: int) -> None:
        super().__init__()
        # The shortcut is defined first so that the state-dict order is the checkpoint's.
        if in_channels == out_channels:
            self.shortcut_layer: nn.Module = Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """Linear layer whose weight is scaled by 1/sqrt(fan_in) at run time (equalised learning rate, lr_mul 1)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N, out_features)."""
        return F.linear(x, self.weight * self.scale, self.bias)


class GradualStyleBlock(nn.Module):
    """pSp's "map2style": ``num_convs`` stride-2 3×3 convs with LeakyReLU down to 1×1, then an EqualLinear."""

    def __init__(self, in_channels: int, conv_channels: int, out_features: int, num_convs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(num_convs):
            conv_in = in_channels if index == 0 else conv_channels
            layers.append(nn.Conv2d(conv_in, conv_channels, kernel_size=3, stride=2, padding=1))
            layers.append(nn.LeakyReLU(STYLE_LEAKY_SLOPE))
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(conv_channels, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, 2**num_convs, 2**num_convs) -> (N, out_features)."""
        pooled = self.convs(features)  # (N, conv_channels, 1, 1)
        return self.linear(pooled.flatten(1))  # (N, conv_channels) -> (N, out_features)


class HalfWeightConv2d(nn.Module):
    """A convolution that keeps its weight in float16 and computes in the input's dtype (float32).

    For layers whose work is small next to their weight (a 512→512 3×3 kernel is 9.4 MB in float32 for 0.3 GFLOP at
    16² input and less below): half the memory, the same state-dict keys (``weight`` in float16, ``bias``), and
    float32 arithmetic on the weight rounded to float16 (relative error ≤ 2⁻¹¹).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().to(torch.float16), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float → the convolution with the weight converted to ``x``'s dtype."""
        return F.conv2d(x, self.weight.to(x.dtype), self.bias, self.stride, self.padding)


def _upsample_add(coarse: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """FPN merge: bilinearly resize ``coarse`` (aligned corners) to ``lateral``'s size and add them."""
    upsampled = F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=True)
    return upsampled + lateral


class Encoder4Editing(nn.Module):
    """The e4e encoder: (N, 3, 256, 256) images in [-1, 1] -> (N, 18, 512) codes before ``latent_avg`` is added.

    Attributes:
        config: the sizes this module was built with.
        latent_avg: (num_styles, style_dim) float32 buffer, the checkpoint's average latent (zeros until loaded).
            It is not part of ``state_dict()`` because the checkpoint stores it outside the state dict.
    """

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EncoderConfig()
        stem = config.stem_channels
        self.input_layer = nn.Sequential(
            nn.Conv2d(RGB_CHANNELS, stem, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem)
        )
        units: list[nn.Module] = []
        in_channels = stem
        for channels, count in zip(config.stage_channels, config.stage_units, strict=True):
            for index in range(count):
                stride = 2 if index == 0 else 1  # each stage halves the resolution in its first unit
                units.append(BottleneckIRSE(in_channels, channels, stride, config.se_reduction))
                in_channels = channels
        self.body = nn.Sequential(*units)
        self.styles = nn.ModuleList(
            GradualStyleBlock(
                config.pyramid_channels, config.style_conv_channels, config.style_dim, config.style_convs(index)
            )
            for index in range(config.num_styles)
        )
        width = config.pyramid_channels
        self.latlayer1 = nn.Conv2d(config.stage_channels[2], width, kernel_size=1)  # c2 -> width of c3
        self.latlayer2 = nn.Conv2d(config.stage_channels[1], width, kernel_size=1)  # c1 -> width of c3
        self.register_buffer("latent_avg", torch.zeros(config.num_styles, config.style_dim), persistent=False)
        self._tap_units = config.tap_units

    def keep_small_convs_in_half(self, max_input: int = HALF_WEIGHT_MAX_INPUT) -> list[torch.Tensor]:
        """Replace the style blocks' convolutions whose input side is ≤ ``max_input`` with :class:`HalfWeightConv2d`.

        A weight outside float16's range keeps its layer in float32.

        Returns:
            The replaced float32 weights (for :func:`pipeline.networks.checkpoint_io.release_file_pages`).
        """
        replaced = []
        for index, block in enumerate(self.styles):
            side = self.config.input_size // BODY_DOWNSAMPLING * 2 ** self.config.style_level(index)  # 16, 32, 64
            for position, layer in enumerate(block.convs):
                if not isinstance(layer, nn.Conv2d):
                    continue
                half = HalfWeightConv2d(layer) if side <= max_input else None
                if half is not None and bool(torch.isfinite(half.weight).all()):  # beyond float16's range: inf
                    block.convs[position] = half
                    replaced.append(layer.weight)
                side //= 2
        return replaced

    def body_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the IR-SE trunk and return the pyramid taps.

        Args:
            images: (N, 3, S, S) float in [-1, 1], S = ``config.input_size``.

        Returns:
            c1 (N, stage_channels[1], S/4, S/4), c2 (N, stage_channels[2], S/8, S/8) and
            c3 (N, stage_channels[3], S/16, S/16): for IR-SE-50 at 256², the outputs of body units 6, 20 and 23.

        Raises:
            InputImageError: if ``images`` is not a float tensor of that shape.
        """
        self._check_images(images)
        x = self.input_layer(images.contiguous(memory_format=torch.channels_last))  # (N, stem, S, S); oneDNN's layout
        taps = []
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self._tap_units:
                taps.append(x)
        c1, c2, c3 = taps
        return c1, c2, c3

    def codes_from_features(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor) -> torch.Tensor:
        """Feature pyramid and style blocks: the taps of :meth:`body_features` -> (N, num_styles, style_dim) codes."""
        p2 = _upsample_add(c3, self.latlayer1(c2))  # (N, width, S/8, S/8)
        p1 = _upsample_add(p2, self.latlayer2(c1))  # (N, width, S/4, S/4)
        levels = (c3, p2, p1)
        base = self.styles[0](c3)  # (N, style_dim): w_0, shared by every row
        rows = [base]
        for index in range(1, self.config.num_styles):
            rows.append(base + self.styles[index](levels[self.config.style_level(index)]))  # w_0 + Δ_index
        return torch.stack(rows, dim=1)  # (N, num_styles, style_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            images: (N, 3, S, S) float in [-1, 1], S = ``config.input_size`` (256), RGB.

        Returns:
            (N, num_styles, style_dim) codes *without* ``latent_avg`` (add it to get W+ codes).

        Raises:
            InputImageError: if ``images`` is not a float tensor of that shape.
        """
        return self.codes_from_features(*self.body_features(images))

    def _check_images(self, images: torch.Tensor) -> None:
        size = self.config.input_size
        expected = f"a float tensor of shape (N, {RGB_CHANNELS}, {size}, {size}) with values in [-1, 1]"
        if not isinstance(images, torch.Tensor):
            raise InputImageError(f"the e4e encoder takes {expected}; got a {type(images).__name__}")
        shape_ok = images.ndim == 4 and images.shape[0] >= 1 and tuple(images.shape[1:]) == (RGB_CHANNELS, size, size)
        if not shape_ok or not images.is_floating_point():
            raise InputImageError(
                f"the e4e encoder takes {expected}; got shape {tuple(images.shape)} and dtype {images.dtype}. "
                "Use encoder_input() to prepare an aligned face crop."
            )


def encoder_input(aligned: np.ndarray, *, size: int = ENCODER_INPUT_SIZE) -> torch.Tensor:
    """Turn an aligned face crop into the encoder's input, exactly as e4e's test transform does.

    The crop is resized with Pillow's (antialiased) bilinear filter, then mapped to [-1, 1] as x / 127.5 − 1 in
    float32, which equals e4e's ``ToTensor()`` + ``Normalize([0.5] * 3, [0.5] * 3)`` for every uint8 level.

    Args:
        aligned: (H, W, 3) uint8 RGB, a square FFHQ-aligned crop (normally 1024²). It is not modified.
        size: output side; the encoder's ``config.input_size``.

    Returns:
        (1, 3, size, size) float32 tensor on the CPU, values in [-1, 1].

    Raises:
        InputImageError: if ``aligned`` is not a square (H, W, 3) uint8 array.
    """
    if not isinstance(aligned, np.ndarray):
        raise InputImageError(f"the aligned face must be a numpy array; got a {type(aligned).__name__}")
    if aligned.ndim != 3 or aligned.shape[2] != RGB_CHANNELS or aligned.dtype != np.uint8:
        raise InputImageError(
            f"the aligned face must be an (H, W, 3) uint8 RGB array; got shape {aligned.shape}, dtype {aligned.dtype}"
        )
    height, width = aligned.shape[:2]
    if height != width or height == 0:
        raise InputImageError(f"the aligned face crop must be square and non-empty; got {width}×{height} pixels")
    resized = Image.fromarray(aligned).resize((size, size), RESIZE_FILTER)
    pixels = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)  # (3, size, size), 0…255
    scaled = pixels / PIXEL_HALF_RANGE - PIXEL_OFFSET  # float32 throughout
    return torch.from_numpy(np.ascontiguousarray(scaled[None]))  # (1, 3, size, size)


@torch.inference_mode()
def invert_with_encoder(encoder: Encoder4Editing, aligned: np.ndarray, *, device: torch.device | str) -> np.ndarray:
    """W+ code of an aligned face crop: the encoder's output plus the checkpoint's ``latent_avg``.

    Args:
        encoder: a loaded encoder (see :func:`load_encoder`), already on ``device``.
        aligned: (H, W, 3) uint8 RGB square FFHQ-aligned crop (normally 1024²). It is not modified.
        device: where to run the encoder.

    Returns:
        (1, 18, 512) float32 W+ code for the StyleGAN2 FFHQ generator (untruncated).

    Raises:
        InputImageError: if ``aligned`` is not a square (H, W, 3) uint8 array.
    """
    images = encoder_input(aligned, size=encoder.config.input_size).to(device)  # (1, 3, 256, 256)
    codes = encoder(images) + encoder.latent_avg  # (1, 18, 512); latent_avg broadcasts over the batch
    return codes.to(device="cpu", dtype=torch.float32).numpy()


def encoder_from_checkpoint(
    checkpoint: Mapping[str, object],
    *,
    source: str,
    device: torch.device | str = "cpu",
    half_small_convs: bool | None = None,
) -> Encoder4Editing:
    """Build the encoder from an already-read e4e checkpoint (the file holds the generator too).

    Args:
        checkpoint: the dict stored in ``e4e_ffhq_encode.pt``: ``"state_dict"`` (``encoder.*`` and ``decoder.*``
            tensors) and ``"latent_avg"`` ((18, 512) float). Other entries (``"opts"``, …) are ignored. Not modified.
        source: a human-readable name of the file, used in messages.
        device: where to put the encoder.
        half_small_convs: keep the style convolutions with inputs ≤ :data:`HALF_WEIGHT_MAX_INPUT`² in float16
            (:meth:`Encoder4Editing.keep_small_convs_in_half`) and release their float32 file pages (−0.34 GB of
            resident memory for the released checkpoint); None (default): :data:`HALF_SMALL_CONVS_ON_CPU` on the CPU,
            never on a GPU.

    Returns:
        The encoder on ``device``, in eval mode, with gradients off and ``latent_avg`` set. Its shapes are inferred
        from the file, so the small stand-in checkpoints (:meth:`EncoderConfig.tiny`) load too.

    Raises:
        WeightsError: if the checkpoint lacks ``state_dict`` or ``latent_avg``.
        CheckpointFormatError: naming the key, if an ``encoder.*`` entry is missing, unexpected or mis-shaped, or if
            ``latent_avg`` or the output size does not fit the (18, 512) W+ space.
    """
    state_dict, latent_avg = _checkpoint_entries(checkpoint, source=source)
    encoder_state = strip_prefix(state_dict, ENCODER_PREFIX)
    if not encoder_state:
        raise CheckpointFormatError(
            f"{source} has no '{ENCODER_PREFIX}.*' entries in its state_dict; expected the e4e checkpoint "
            "e4e_ffhq_encode.pt"
        )
    config = EncoderConfig.from_state_dict(encoder_state, source=source, prefix=ENCODER_PREFIX)
    code_shape = (config.num_styles, config.style_dim)
    if code_shape != (NUM_WS, W_DIM):
        raise CheckpointFormatError(
            f"{source} encodes to {code_shape} codes, but the StyleGAN2 FFHQ generator needs ({NUM_WS}, {W_DIM})"
        )
    if tuple(latent_avg.shape) != code_shape or not bool(torch.isfinite(latent_avg).all()):
        raise CheckpointFormatError(
            f"{source}: '{LATENT_AVG_ENTRY}' must be a finite {code_shape} tensor; got shape {tuple(latent_avg.shape)}"
        )
    with torch.device("meta"):  # no memory and no random init for ~270 M parameters that are overwritten anyway
        encoder = Encoder4Editing(config)
    encoder.to_empty(device=device)
    load_state_dict_strict(encoder, encoder_state, source=source, prefix=ENCODER_PREFIX)
    encoder.latent_avg.copy_(latent_avg)
    encoder.eval().requires_grad_(False)
    if half_small_convs is None:
        half_small_convs = HALF_SMALL_CONVS_ON_CPU and torch.device(device).type == "cpu"
    if half_small_convs:
        replaced = encoder.keep_small_convs_in_half()
        released = release_file_pages(replaced)  # their float32 pages were read once, for the copies
        logger.info("e4e: %d style convolutions keep float16 weights (%.0f MB of file pages released)",
                    len(replaced), released / 2**20)  # fmt: skip
    logger.info("loaded the e4e encoder from %s (%s)", source, config)
    return encoder


def _checkpoint_entries(checkpoint: object, *, source: str) -> tuple[Mapping[str, torch.Tensor], torch.Tensor]:
    """The ``state_dict`` and ``latent_avg`` entries of an e4e checkpoint, or a WeightsError saying what is missing."""
    expected = (
        f"expected the e4e checkpoint e4e_ffhq_encode.pt: a dict with '{STATE_DICT_ENTRY}' (encoder and generator "
        f"weights) and '{LATENT_AVG_ENTRY}' (an (18, 512) tensor)"
    )
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"{source} holds a {type(checkpoint).__name__}; {expected}")
    missing = [
        name
        for name, kind in ((STATE_DICT_ENTRY, Mapping), (LATENT_AVG_ENTRY, torch.Tensor))
        if not isinstance(checkpoint.get(name), kind)
    ]
    if missing:
        found = ", ".join(repr(key) for key in list(checkpoint)[:8]) or "nothing"
        raise WeightsError(
            f"{source} has no usable {' or '.join(repr(m) for m in missing)} (found {found}); {expected}"
        )
    return checkpoint[STATE_DICT_ENTRY], checkpoint[LATENT_AVG_ENTRY].float()


def load_encoder(
    path: Path | str, device: torch.device | str = "cpu", *, half_small_convs: bool | None = None
) -> Encoder4Editing:
    """Read ``e4e_ffhq_encode.pt`` (or a stand-in with the same format) and build the encoder.

    Args:
        path: the checkpoint file.
        device: where to put the encoder.
        half_small_convs: see :func:`encoder_from_checkpoint`.

    Returns:
        The encoder in eval mode with gradients off; ``latent_avg`` (18, 512) is set from the file.

    Raises:
        WeightsError: if the file is missing or unreadable or lacks ``state_dict``/``latent_avg``.
        CheckpointFormatError: naming the key, if an ``encoder.*`` entry is missing, unexpected or mis-shaped.
    """
    path = Path(path)
    checkpoint = read_torch_checkpoint(path)
    return encoder_from_checkpoint(
        checkpoint, source=f"weight file {path}", device=device, half_small_convs=half_small_convs
    )
