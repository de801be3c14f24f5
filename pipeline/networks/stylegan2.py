"""StyleGAN2 config-f generator in plain PyTorch, loading the community PyTorch checkpoint format.

The network is the generator of Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020),
configuration F: a mapping network (pixel norm + ``n_mlp`` equalised-learning-rate dense layers with leaky ReLU) and a
skip-architecture synthesis network (constant 4×4 input, modulated/demodulated 3×3 convolutions, up-sampling
convolutions with the [1, 3, 3, 1] FIR filter, per-layer noise, modulated 1×1 toRGB layers whose outputs are
FIR-up-sampled and summed).

The parameter names, shapes and buffer layout are those of the widely used PyTorch port
(``rosinality/stylegan2-pytorch``, ``model.py``; file ``stylegan2-ffhq-config-f.pt``, also embedded under
``decoder.*`` in the e4e checkpoint ``e4e_ffhq_encode.pt``), so those files load without conversion and W+ codes and
boundaries carry over 1:1. The arithmetic matches that port (e.g. the up-sampling convolution is a stride-2
transposed convolution followed by a 4×4 FIR blur with padding 1; toRGB skips are up-sampled by zero insertion + FIR
with padding (2, 1)) up to floating-point rounding; it is verified against fixtures made with the port itself
(``shared/fixtures/stylegan2``). The code here is our own and uses only standard PyTorch operators: no custom CUDA
ops and no compile step, so it runs on CPU, CUDA and ZeroGPU.

Speed (CPU): activations are kept in ``channels_last`` layout (oneDNN's fast path); for a batch of one the style
and demodulation are folded into the convolution weight (one ordinary convolution per layer), for larger batches
the input is scaled, a shared convolution is run once for the whole batch and the output is scaled; FIR filters
run as depthwise convolutions with the padding folded in; biases and the leaky ReLU's gain are fused into the
convolutions; weights reach the convolutions in channels-last order (no reorder per call); the demodulation's weight
energy is computed once per weight; the 1×1 toRGB layers run as a matrix product. When the code needs a gradient
(the optimisation loops) the wide layers scale the input even at batch one, so the backward pass needs no weight
gradient (see ``SCALE_INPUT_MIN_WORK``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from pipeline.errors import CheckpointFormatError
from pipeline.networks.checkpoint_io import load_state_dict_strict, read_torch_checkpoint, strip_prefix

__all__ = [
    "Generator",
    "GeneratorConfig",
    "NoiseMode",
    "Window",
    "generator_from_checkpoint",
    "generator_from_state_dict",
    "load_generator",
    "state_dict_layout",
]

logger = logging.getLogger(__name__)

NoiseMode = Literal["const", "random"]
NOISE_MODES = ("const", "random")

# --- constants of the architecture (StyleGAN2 paper / official config-f; same values in the PyTorch port) ---
INPUT_RESOLUTION = 4  # the synthesis network starts from a learned constant of 4×4 pixels
LRELU_SLOPE = 0.2  # leaky-ReLU negative slope
LRELU_GAIN = math.sqrt(2.0)  # activations are multiplied by sqrt(2) after the leaky ReLU (He gain)
MAPPING_LR_MUL = 0.01  # learning-rate multiplier of the mapping network (weights and biases scaled at runtime)
MODULATION_BIAS_INIT = 1.0  # style affine layers start with bias 1 (only used for freshly built layers)
PIXEL_NORM_EPS = 1e-8  # epsilon of the mapping network's input pixel norm
DEMOD_EPS = 1e-8  # epsilon of the weight demodulation
CONV_KERNEL_SIZE = 3  # 3×3 convolutions in every synthesis block
RGB_KERNEL_SIZE = 1  # toRGB layers are 1×1 modulated convolutions without demodulation
RGB_CHANNELS = 3
FIR_KERNEL_SIZE = 4  # the stored FIR buffers are 4×4 (outer product of [1, 3, 3, 1], gain 4)
UPSAMPLE_FACTOR = 2
# Padding of the FIR blur after the stride-2 transposed 3×3 convolution (output 2H+1 -> 2H):
# p = 4 - 2 - (3 - 1) = 0, pads ((p + 1) // 2 + 2 - 1, p // 2 + 1) = (1, 1).
CONV_BLUR_PADDING = 1
# Modulated convolutions whose gradient is needed (the optimisation loops) scale their input instead of folding the
# style into the weight when k²·in·out/(in + out) — convolution work per element-wise pass — reaches this. Measured
# per layer on the CPU diffuse step (256² render, one thread, CPU time; bench.bench_diffuse_step --scale-rule): every
# 3×3 layer from 64² up gains by scaling (512/512 at 64²: 40–75 ms a step, 512→256 and 256/256 at 128²: 190 and
# 110 ms, 256→128 and 128/128 at 256²: 220 and 105 ms); at 4²–32² both are within noise (±20 ms); the 1×1 toRGB
# layers lose by scaling (up to 17 ms). Layers below 576 (only at 512² and 1024²) were not re-measured and fold, as
# before (a first measurement, on 2 cores with the older weight layout, had put the line at 700).
SCALE_INPUT_MIN_WORK = 500
# Zero-insertion + FIR up-sampling of the toRGB skip pads (2, 1) around the 2H zero-inserted samples; as a stride-2
# transposed convolution with the 4×4 kernel (output 2H + 2) this is a crop of 1 pixel on each side.
SKIP_UPSAMPLE_PADDING = 1
# Windowed synthesis (ours): levels up to this resolution are rendered whole (about 1/5 of the FLOPs of a 1024²
# render); the higher levels only on the window plus a halo. 32 rather than 64: a neck window's 64² level is about half
# of that level (0.97× the windowed render's CPU time, measured; lower makes no difference, the window covers them).
WINDOW_FULL_RESOLUTION = 32
# Halo in pixels of each level's output kept around the part the next level needs. One level reads at most 2 input
# pixels beyond an output pixel's footprint (3×3 transposed convolution + 4×4 blur, then a 3×3 convolution; the skip's
# 4×4 up-sampling), and crop edges spoil at most 6 output pixels; 8 leaves room (ours; checked by the window tests).
WINDOW_HALO = 8

# Channels per resolution of the PyTorch port's Generator (before the channel multiplier, applied from 64² up).
_BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
_MULTIPLIED_FROM = 64
FFHQ_CHANNEL_MULTIPLIER = 2  # config-f
TINY_CHANNELS = (16, 16, 16, 16, 16, 16, 16, 8, 8)  # 4² … 1024²: a stand-in small enough for fast CPU tests


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a StyleGAN2 skip generator (what the PyTorch port's ``Generator(...)`` constructor fixes)."""

    size: int = 1024  # output resolution; FFHQ config-f is 1024 (power of two, ≥ 4)
    style_dim: int = 512  # width of Z, W and every W+ row (config-f: 512)
    n_mlp: int = 8  # dense layers in the mapping network (config-f: 8)
    # Feature channels at 4², 8², …, size² (log2(size) − 1 entries); config-f FFHQ: 512 ×5, 256, 128, 64, 32.
    channels: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128, 64, 32)

    def __post_init__(self) -> None:
        """Check that the numbers describe a buildable network."""
        if self.size < INPUT_RESOLUTION or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two ≥ {INPUT_RESOLUTION}, got {self.size}")
        if self.style_dim < 1 or self.n_mlp < 1:
            raise ValueError(f"style_dim and n_mlp must be positive, got {self.style_dim} and {self.n_mlp}")
        channels = tuple(int(c) for c in self.channels)
        if len(channels) != self.num_levels or min(channels) < 1:
            raise ValueError(
                f"channels must list {self.num_levels} positive counts (resolutions {INPUT_RESOLUTION}…{self.size}),"
                f" got {self.channels}"
            )
        object.__setattr__(self, "channels", channels)

    @property
    def num_levels(self) -> int:
        """Number of resolutions 4², 8², …, size²."""
        return int(math.log2(self.size)) - 1

    @property
    def num_ws(self) -> int:
        """Rows of W+ (the port's ``n_latent``): 2·log2(size) − 2, i.e. 18 at 1024², 14 at 256²."""
        return 2 * int(math.log2(self.size)) - 2

    @property
    def num_noises(self) -> int:
        """Number of noise inputs (one per styled convolution): 2·log2(size) − 3."""
        return self.num_ws - 1

    @property
    def w_dim(self) -> int:
        """Width of W and of each W+ row."""
        return self.style_dim

    @property
    def resolution(self) -> int:
        """Output resolution (same as ``size``)."""
        return self.size

    def channels_at(self, resolution: int) -> int:
        """Feature channels at ``resolution`` (a power of two between 4 and ``size``)."""
        return self.channels[int(math.log2(resolution)) - 2]

    @classmethod
    def from_channel_multiplier(
        cls, size: int = 1024, *, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2
    ) -> GeneratorConfig:
        """The PyTorch port's channel table: 512 up to 32², then 256·m, 128·m, 64·m, 32·m, 16·m at 64² … 1024²."""
        if size > max(_BASE_CHANNELS):
            raise ValueError(f"the channel table of the PyTorch port stops at {max(_BASE_CHANNELS)}, got size {size}")
        levels = [INPUT_RESOLUTION * 2**i for i in range(int(math.log2(size)) - 1)]
        channels = tuple(_BASE_CHANNELS[r] * (channel_multiplier if r >= _MULTIPLIED_FROM else 1) for r in levels)
        return cls(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=channels)

    @classmethod
    def ffhq(cls) -> GeneratorConfig:
        """FFHQ config-f: 1024², style_dim 512, 8 mapping layers, channel multiplier 2 (18 W+ rows)."""
        return cls.from_channel_multiplier(1024, channel_multiplier=FFHQ_CHANNEL_MULTIPLIER)

    @classmethod
    def tiny(cls) -> GeneratorConfig:
        """A fast stand-in with the real interface: 1024², W+ (N, 18, 512), but only 8–16 feature channels."""
        return cls(size=1024, style_dim=512, n_mlp=8, channels=TINY_CHANNELS)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict") -> GeneratorConfig:
        """Infer the architecture from the key names and shapes of a generator state dict (no prefix).

        Args:
            state_dict: e.g. the ``g_ema`` entry of ``stylegan2-ffhq-config-f.pt``.
            source: a human-readable name used in error messages.

        Returns:
            The configuration whose ``state_dict_layout`` the keys are expected to match.

        Raises:
            CheckpointFormatError: if a key needed to read the architecture is missing or has an unexpected shape.
        """

        def shape_of(key: str, ndim: int) -> tuple[int, ...]:
            if key not in state_dict:
                raise CheckpointFormatError(
                    f"{source} is not a StyleGAN2 generator state dict: key {key} is missing, so the architecture "
                    "cannot be read from it"
                )
            shape = tuple(state_dict[key].shape)
            if len(shape) != ndim:
                raise CheckpointFormatError(f"{source}: {key} has shape {shape}, expected a {ndim}-D tensor")
            return shape

        style_dim = shape_of("style.1.weight", 2)[1]
        n_mlp = sum(1 for key in state_dict if re.fullmatch(r"style\.\d+\.weight", key))
        num_rgb = sum(1 for key in state_dict if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", key))
        channels = [shape_of("input.input", 4)[1]]
        channels += [shape_of(f"convs.{2 * level}.conv.weight", 5)[1] for level in range(num_rgb)]
        try:
            return cls(size=INPUT_RESOLUTION * 2**num_rgb, style_dim=style_dim, n_mlp=n_mlp, channels=tuple(channels))
        except ValueError as err:
            raise CheckpointFormatError(f"{source} does not describe a valid StyleGAN2 generator: {err}") from err


@dataclass(frozen=True)
class Window:
    """A rectangle of output pixels: rows ``top:bottom``, columns ``left:right`` (half-open, in pixels)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        """Rows in the window."""
        return self.bottom - self.top

    @property
    def width(self) -> int:
        """Columns in the window."""
        return self.right - self.left

    def check(self, size: int) -> None:
        """Raise ValueError unless this is a non-empty window inside a ``size``² image."""
        if not (0 <= self.top < self.bottom <= size and 0 <= self.left < self.right <= size):
            raise ValueError(f"window {self} must be a non-empty rectangle inside the {size}² image")

    def needed_below(self, size: int, halo: int | None = None) -> Window:
        """The window one level down (``size // 2``²) whose exact values give this one's: grown by ``halo``, halved.

        ``halo`` defaults to :data:`WINDOW_HALO`.
        """
        halo = WINDOW_HALO if halo is None else halo
        half = size // 2
        return Window(
            max(0, (self.top - halo) // 2),
            max(0, (self.left - halo) // 2),
            min(half, -(-(self.bottom + halo) // 2)),
            min(half, -(-(self.right + halo) // 2)),
        )


def _crop(x: torch.Tensor, window: Window, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``x[..., window]`` where ``x``'s first row and column sit at ``origin`` (top, left) of the full image."""
    top, left = origin
    return x[:, :, window.top - top : window.bottom - top, window.left - left : window.right - left]


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------


class PixelNorm(nn.Module):
    """Normalise each vector to unit root-mean-square over the feature dimension (mapping network input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D)."""
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)


class EqualizedLinear(nn.Module):
    """Dense layer with equalised learning rate: ``y = x (w·c)ᵀ + b·lr_mul`` with ``c = lr_mul / sqrt(in_dim)``.

    With ``activate=True`` the bias is added before a leaky ReLU (slope 0.2) and the result is scaled by sqrt(2)
    (the port's "fused leaky ReLU").
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, lr_mul: float = 1.0, bias_init: float = 0.0, activate: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)  # stored pre-scale, as in the checkpoint
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, out_dim)."""
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        if self.activate:
            out = F.leaky_relu(out, LRELU_SLOPE) * LRELU_GAIN
        return out


class FirKernel(nn.Module):
    """Holds the 4×4 FIR kernel buffer (``…blur.kernel`` / ``…upsample.kernel``; [1,3,3,1]⊗[1,3,3,1] with gain 4)."""

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = torch.outer(taps, taps)
        self.register_buffer("kernel", kernel / kernel.sum() * UPSAMPLE_FACTOR**2)

    def depthwise(self, channels: int, *, flip: bool) -> torch.Tensor:
        """The kernel as a (channels, 1, 4, 4) depthwise weight; ``flip`` turns convolution into correlation."""
        kernel = self.kernel.flip(0, 1) if flip else self.kernel
        return kernel.expand(channels, 1, FIR_KERNEL_SIZE, FIR_KERNEL_SIZE).contiguous()


class ConstantInput(nn.Module):
    """The learned 4×4 constant the synthesis network starts from (key ``input.input``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, INPUT_RESOLUTION, INPUT_RESOLUTION))

    def forward(self, batch: int) -> torch.Tensor:
        """Returns (batch, C, 4, 4)."""
        return self.input.expand(batch, -1, -1, -1)


def _conv_layout(weight: torch.Tensor) -> torch.Tensor:
    """A 4-D convolution weight in channels-last memory order (a copy unless it already is).

    oneDNN (and cuDNN) use this layout with channels-last activations; given another, every convolution, forward and
    backward, reorders the weight itself.
    """
    return weight.contiguous(memory_format=torch.channels_last)


def _channels_last_product(weight: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``weight * factor[:, :, None, None]`` for an (a, b, k, k) weight and an (a, b) factor, in channels-last memory.

    The product is written straight into that order: the same single pass as the plain product, and the convolution
    need not reorder it (see :func:`_conv_layout`).
    """
    product = weight.permute(0, 2, 3, 1) * factor[:, None, None, :]  # (a, k, k, b), contiguous
    return product.permute(0, 3, 1, 2)


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """1×1 convolution of (N, in, H, W) features with an (out, in) weight as one matrix product over the channels.

    On channels-last features this is a single GEMM forward and backward; PyTorch runs a 1×1 convolution to 3
    channels (toRGB) on its slow reference path instead. Returns (N, out, H, W) in channels-last memory.
    """
    return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled per sample by a style (and whose output is demodulated).

    Weight layout (1, out, in, k, k) as in the checkpoint. With ``upsample=True`` the layer is a stride-2
    transposed convolution followed by the 4×4 FIR blur (output size 2H).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        if upsample:
            self.blur = FirKernel()
        self.modulation = EqualizedLinear(style_dim, in_channels, bias_init=MODULATION_BIAS_INIT)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.demodulate = demodulate
        self.upsample = upsample
        self.pointwise = kernel_size == 1 and not upsample  # the toRGB layers: a matrix product (see _pointwise)
        # Under autograd, folding the style into the weight makes the backward compute a weight gradient (a second
        # convolution's worth of work); scaling the input instead costs a few element-wise passes. The convolution
        # dominates only for wide layers (see SCALE_INPUT_MIN_WORK).
        work = kernel_size**2 * in_channels * out_channels / (in_channels + out_channels)
        self.scale_input_under_grad = work >= SCALE_INPUT_MIN_WORK
        self._energy_key: tuple[object, ...] | None = None  # what _energy_cache was computed from
        self._energy_cache = torch.empty(0)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, gain: float = 1.0
    ) -> torch.Tensor:
        """Apply the layer.

        Args:
            x: (N, in, H, W) features.
            w: (N, style_dim) the W+ row driving this layer.
            bias: optional (out,) bias added to the result (fused into the last convolution).
            gain: constant factor applied to the whole result, bias included (folded into the per-channel scale,
                so it costs no pass of its own; the styled convolutions pass the leaky ReLU's gain here).

        Returns:
            (N, out, H', W') with H' = 2H when up-sampling, else H.
        """
        batch = x.shape[0]
        styles = self.modulation(w) * self.scale  # (N, in)
        weight = self.weight[0]  # (out, in, k, k)
        scale = None  # (N, out) per-output-channel factor: demodulation × gain
        if self.demodulate:
            # sum over (in, ky, kx) of (weight·style)², without materialising the modulated weight
            scale = torch.rsqrt(styles.square() @ self._energy().T + DEMOD_EPS)  # (N, out)
            if gain != 1.0:
                scale = scale * gain
        elif gain != 1.0:
            scale = torch.full((batch, weight.shape[0]), gain, dtype=styles.dtype, device=styles.device)
        if bias is not None and gain != 1.0:
            bias = bias * gain
        needs_grad = w.requires_grad and torch.is_grad_enabled()
        if batch == 1 and not (needs_grad and self.scale_input_under_grad):
            # fold style, demodulation and gain into one (out, in, k, k) weight: a single ordinary convolution
            factor = styles[0][None, :] if scale is None else scale[0][:, None] * styles[0][None, :]
            if self.pointwise:
                return _pointwise(x, weight[:, :, 0, 0] * factor, bias)
            if not self.upsample:
                return F.conv2d(x, _channels_last_product(weight, factor), bias, padding=self.padding)
            weight = _channels_last_product(weight.transpose(0, 1), factor.T)  # (in, out, k, k)
            out = F.conv_transpose2d(x, weight, stride=UPSAMPLE_FACTOR)
            return self._blur(out, bias)
        # batch > 1 (or a wide layer under autograd): scale the input, one shared convolution for the whole batch,
        # scale the output. The FIR blur is per-channel linear, so the output scale and the bias can both be applied
        # after it, in one pass.
        x = x * styles[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, _conv_layout(weight.transpose(0, 1)), stride=UPSAMPLE_FACTOR)
            out = self._blur(out, None)
        elif self.pointwise:
            out = _pointwise(x, weight[:, :, 0, 0], None)
        else:
            out = F.conv2d(x, _conv_layout(weight), padding=self.padding)
        if scale is None:
            return out if bias is None else out + bias[None, :, None, None]
        if bias is None:
            return out * scale[:, :, None, None]
        return torch.addcmul(bias[None, :, None, None], out, scale[:, :, None, None])

    def _energy(self) -> torch.Tensor:
        """(out, in) Σ over (ky, kx) of weight²: the demodulation's constant part, computed once per weight.

        Recomputed when the weight tensor is replaced or changed in place (its data pointer or version changes);
        not cached while the weight itself needs a gradient, nor for weights made under inference mode (which keep
        no version counter).
        """
        weight = self.weight[0]
        if self.weight.requires_grad or self.weight.is_inference():
            return torch.einsum("oikl,oikl->oi", weight, weight)
        key = (self.weight.data_ptr(), self.weight._version, self.weight.device, self.weight.dtype)
        if self._energy_key != key:
            # a plain tensor even when first called under inference_mode, so autograd may save it later
            with torch.inference_mode(False), torch.no_grad():
                self._energy_cache = torch.einsum("oikl,oikl->oi", weight, weight)  # einsum: a batched dot
            self._energy_key = key
        return self._energy_cache

    def _blur(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """FIR-filter (N, C, 2H+1, 2H+1) -> (N, C, 2H, 2H) (true convolution, i.e. correlation with the flip)."""
        channels = x.shape[1]
        return F.conv2d(x, self.blur.depthwise(channels, flip=True), bias, padding=CONV_BLUR_PADDING, groups=channels)


class NoiseInjection(nn.Module):
    """Per-layer noise strength (key ``…noise.weight``, shape (1,))."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class FusedBiasLeakyReLU(nn.Module):
    """Per-channel bias of a styled convolution (key ``…activate.bias``), added before the leaky ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class StyledConv(nn.Module):
    """Modulated 3×3 convolution (optionally up-sampling) + noise + bias + leaky ReLU·sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, *, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, CONV_KERNEL_SIZE, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedBiasLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(N, in, H, W), (N, style_dim), noise (1 or N, 1, H', W') -> (N, out, H', W')."""
        # lrelu(v)·g = lrelu(v·g) for g > 0: the gain scales the convolution's output (folded into its per-channel
        # factor), its bias and the noise, so it costs no pass over the features; the bias is fused into the conv
        out = self.conv(x, w, self.activate.bias, gain=LRELU_GAIN)
        out = out.add_(noise * (self.noise.weight * LRELU_GAIN))
        return F.leaky_relu_(out, LRELU_SLOPE)  # (in-place ops save memory; autograd allows this order)


class ToRGB(nn.Module):
    """Modulated 1×1 convolution to RGB (no demodulation) + bias, plus the FIR-up-sampled previous RGB (skip)."""

    def __init__(self, in_channels: int, style_dim: int, *, upsample: bool = True) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, RGB_CHANNELS, 1, 1))
        if upsample:
            self.upsample = FirKernel()
        self.conv = ModulatedConv2d(in_channels, RGB_CHANNELS, RGB_KERNEL_SIZE, style_dim, demodulate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """(N, in, H, W), (N, style_dim), skip (N, 3, H/2, W/2) or None -> (N, 3, H, W)."""
        out = self.conv(x, w, self.bias.view(RGB_CHANNELS))
        if skip is None:
            return out
        # zero insertion + FIR with pads (2, 1) == stride-2 transposed convolution with the kernel, cropped by 1
        kernel = self.upsample.depthwise(RGB_CHANNELS, flip=False)
        up = F.conv_transpose2d(
            skip, kernel, stride=UPSAMPLE_FACTOR, padding=SKIP_UPSAMPLE_PADDING, groups=RGB_CHANNELS
        )
        return out.add_(up)


class NoiseBuffers(nn.Module):
    """The stored constant noise maps ``noises.noise_0 … noise_{L-1}``, each (1, 1, r, r)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        for index in range(config.num_noises):
            resolution = INPUT_RESOLUTION * 2 ** ((index + 1) // 2)
            self.register_buffer(f"noise_{index}", torch.randn(1, 1, resolution, resolution))

    def get(self, index: int) -> torch.Tensor:
        """The noise map of styled convolution ``index`` (0 = the 4² convolution)."""
        return getattr(self, f"noise_{index}")


# ----------------------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping(z) -> w`` and ``synthesis(wp) -> image``.

    Submodule names follow the PyTorch port so its state dict loads key for key: ``style`` (pixel norm + dense
    layers), ``input``, ``conv1``, ``to_rgb1``, ``convs`` (pairs: up-sampling conv, conv), ``to_rgbs``, ``noises``.
    ``latent_avg`` (w_dim,) is a non-persistent buffer (it is stored next to, not inside, the state dict).
    Freshly built layers hold random values; load real weights through :func:`load_generator` or
    :func:`generator_from_state_dict`.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.style_dim
        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualizedLinear(dim, dim, lr_mul=MAPPING_LR_MUL, activate=True) for _ in range(config.n_mlp)),
        )
        self.input = ConstantInput(config.channels[0])
        self.conv1 = StyledConv(config.channels[0], config.channels[0], dim)
        self.to_rgb1 = ToRGB(config.channels[0], dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for in_channels, out_channels in zip(config.channels[:-1], config.channels[1:], strict=True):
            self.convs.append(StyledConv(in_channels, out_channels, dim, upsample=True))
            self.convs.append(StyledConv(out_channels, out_channels, dim))
            self.to_rgbs.append(ToRGB(out_channels, dim))
        self.noises = NoiseBuffers(config)
        self.register_buffer("latent_avg", torch.zeros(dim), persistent=False)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Map Z to W.

        Args:
            z: (N, w_dim) float latent codes (standard normal).

        Returns:
            (N, w_dim) W codes (no truncation).

        Raises:
            ValueError: if ``z`` is not a floating tensor of shape (N, w_dim) on the generator's device.
        """
        z = self._checked(z, (self.config.w_dim,), "z")
        return self.style(z)

    def synthesis(
        self,
        wp: torch.Tensor,
        noise_mode: NoiseMode = "const",
        *,
        generator: torch.Generator | None = None,
        resolution: int | None = None,
    ) -> torch.Tensor:
        """Render W+ codes to images.

        Differentiable with respect to ``wp`` (the generator's own parameters are frozen by the loaders).

        Args:
            wp: (N, num_ws, w_dim) float W+ codes on the generator's device (18×512 for FFHQ 1024²). Row i drives
                the i-th styled layer; a toRGB layer shares the row of the next block's first convolution.
            noise_mode: ``"const"`` uses the stored noise maps (deterministic); ``"random"`` draws fresh N(0, 1)
                maps per sample and call.
            generator: torch random generator on the generator's device, used in ``"random"`` mode (None: the
                global torch RNG).
            resolution: stop early and return the RGB skip image at this resolution (a power of two between 4 and
                ``size``; rows driving higher layers are then unused). None: full size.

        Returns:
            (N, 3, R, R) float32 raw images (about [-1, 1] for a trained generator; not clamped), contiguous NCHW.

        Raises:
            ValueError: on a bad ``wp`` shape/dtype/device, an unknown ``noise_mode`` or a bad ``resolution``.
        """
        config = self.config
        wp = self._checked(wp, (config.num_ws, config.w_dim), "wp")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        levels = config.num_levels
        if resolution is not None:
            if resolution < INPUT_RESOLUTION or resolution > config.size or resolution & (resolution - 1):
                raise ValueError(
                    f"resolution must be a power of two between {INPUT_RESOLUTION} and {config.size}, got {resolution}"
                )
            levels = int(math.log2(resolution)) - 1
        _, image = self._levels(wp, noise_mode, generator, levels)
        return image.contiguous()

    def synthesis_window(
        self,
        wp: torch.Tensor,
        window: Window,
        noise_mode: NoiseMode = "const",
        *,
        generator: torch.Generator | None = None,
        full_resolution: int = WINDOW_FULL_RESOLUTION,
    ) -> torch.Tensor:
        """Render only ``window`` of the full-size image: ``synthesis(wp)[:, :, top:bottom, left:right]``.

        The levels up to ``full_resolution`` run whole; each higher level runs on the part of the previous level's
        output that its window needs, grown by :data:`WINDOW_HALO` pixels (convolutions are local, and the crop edges
        that are not image borders spoil only pixels inside the halo). Equal to the full render within fp32 rounding
        (the window tests check a normalised error < 1e-4). Cheaper by about the share of the window in the top
        levels, which hold ~3/4 of a render's FLOPs.

        Args:
            wp: (N, num_ws, w_dim) float W+ codes on the generator's device, as for :meth:`synthesis`.
            window: the output pixels wanted (inside the ``size``² image).
            noise_mode: as for :meth:`synthesis`; in ``"random"`` mode the whole noise maps are drawn (same random
                stream as a full render) and cropped.
            generator: random generator for ``"random"`` mode.
            full_resolution: the highest level rendered whole (a power of two between 4 and ``size``).

        Returns:
            (N, 3, window.height, window.width) float32, contiguous NCHW.

        Raises:
            ValueError: on a bad code, noise mode, window or ``full_resolution``.
        """
        config = self.config
        window.check(config.size)
        if not INPUT_RESOLUTION <= full_resolution <= config.size or full_resolution & (full_resolution - 1):
            raise ValueError(
                f"full_resolution must be a power of two between {INPUT_RESOLUTION} and {config.size}, "
                f"got {full_resolution}"
            )
        windows = {config.size: window}  # resolution → the exact part of that level needed
        resolution = config.size
        while resolution > full_resolution:
            windows[resolution // 2] = windows[resolution].needed_below(resolution)
            resolution //= 2
        if window == Window(0, 0, config.size, config.size):
            return self.synthesis(wp, noise_mode, generator=generator)
        wp = self._checked(wp, (config.num_ws, config.w_dim), "wp")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        x, image = self._levels(wp, noise_mode, generator, int(math.log2(full_resolution)) - 1)
        below = windows[full_resolution]
        x, image = _crop(x, below).contiguous(memory_format=torch.channels_last), _crop(image, below)
        batch = wp.shape[0]
        for level in range(int(math.log2(full_resolution)) - 1, config.num_levels):
            resolution = INPUT_RESOLUTION * 2**level
            row = 2 * level - 1
            origin = (2 * below.top, 2 * below.left)
            computed = Window(*origin, 2 * below.bottom, 2 * below.right)

            def noise(index: int, computed: Window = computed) -> torch.Tensor:
                stored = self.noises.get(index)
                if noise_mode == "random":
                    shape = (batch, 1, *stored.shape[2:])
                    stored = torch.randn(shape, generator=generator, device=stored.device, dtype=stored.dtype)
                return _crop(stored, computed)

            up_conv, conv = self.convs[2 * level - 2], self.convs[2 * level - 1]
            x = up_conv(x, wp[:, row], noise(row))
            x = conv(x, wp[:, row + 1], noise(row + 1))
            image = self.to_rgbs[level - 1](x, wp[:, row + 2], image)
            below = windows[resolution]
            x = _crop(x, below, origin).contiguous(memory_format=torch.channels_last)
            image = _crop(image, below, origin)
        return image.contiguous()

    def _levels(
        self, wp: torch.Tensor, noise_mode: NoiseMode, generator: torch.Generator | None, levels: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the first ``levels`` levels on checked codes: (features, RGB skip image) of the last one."""
        batch = wp.shape[0]

        def noise(index: int) -> torch.Tensor:
            stored = self.noises.get(index)
            if noise_mode == "const":
                return stored
            return torch.randn(
                (batch, 1, *stored.shape[2:]), generator=generator, device=stored.device, dtype=stored.dtype
            )

        x = self.input(batch).contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, wp[:, 0], noise(0))
        image = self.to_rgb1(x, wp[:, 1])
        for level in range(1, levels):
            row = 2 * level - 1  # W+ row of this level's up-sampling conv; its toRGB uses row + 2
            up_conv, conv = self.convs[2 * level - 2], self.convs[2 * level - 1]
            x = up_conv(x, wp[:, row], noise(row))
            x = conv(x, wp[:, row + 1], noise(row + 1))
            image = self.to_rgbs[level - 1](x, wp[:, row + 2], image)
        return x, image

    def forward(self, wp: torch.Tensor, noise_mode: NoiseMode = "const") -> torch.Tensor:
        """Same as :meth:`synthesis` at full resolution."""
        return self.synthesis(wp, noise_mode)

    def _checked(self, codes: torch.Tensor, row_shape: tuple[int, ...], name: str) -> torch.Tensor:
        """Validate a batch of codes; cast floating inputs to the generator's dtype (a new tensor, never in place)."""
        expected = "(N, " + ", ".join(str(s) for s in row_shape) + ")"
        if not isinstance(codes, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(codes).__name__}")
        if codes.ndim != len(row_shape) + 1 or tuple(codes.shape[1:]) != row_shape or codes.shape[0] < 1:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(codes.shape)}")
        if not codes.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {codes.dtype}")
        own = self.latent_avg
        if codes.device != own.device:
            raise ValueError(f"{name} is on {codes.device} but the generator is on {own.device}; move it first")
        return codes.to(own.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def state_dict_layout(config: GeneratorConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Keys and shapes of the generator's state dict in file order (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        module = Generator(config)
    return [(key, tuple(value.shape)) for key, value in module.state_dict().items()]


def generator_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    latent_avg: torch.Tensor,
    *,
    source: str,
    device: torch.device | str = "cpu",
    prefix: str = "",
) -> Generator:
    """Build a frozen generator whose architecture is inferred from ``state_dict`` and load it strictly.

    Args:
        state_dict: generator weights with the PyTorch port's key names (prefix already removed).
        latent_avg: (w_dim,) average W.
        source: human-readable name of where the weights came from (for messages).
        device: where to put the model.
        prefix: the prefix the keys carried in the file (e.g. ``"decoder"``), only for error messages.

    Returns:
        The generator in eval mode with ``requires_grad_(False)``, on ``device``.

    Raises:
        CheckpointFormatError: naming any missing, unexpected or mis-shaped key, or a bad ``latent_avg``.
    """
    config = GeneratorConfig.from_state_dict(state_dict, source=source)
    with torch.device("meta"):
        generator = Generator(config)
    generator = generator.to_empty(device="cpu")
    load_state_dict_strict(generator, state_dict, source=source, prefix=prefix)
    if tuple(latent_avg.shape) != (config.w_dim,):
        raise CheckpointFormatError(
            f"{source}: latent_avg has shape {tuple(latent_avg.shape)}, expected ({config.w_dim},)"
        )
    generator.latent_avg.copy_(latent_avg.detach().to(torch.float32))
    logger.info("loaded StyleGAN2 generator %s from %s", config, source)
    return generator.eval().requires_grad_(False).to(device)


def _average_w(latent_avg: object, *, source: str) -> torch.Tensor:
    """The (w_dim,) average W from a checkpoint's ``latent_avg``: (w_dim,) or (num_ws, w_dim) with equal rows."""
    if not isinstance(latent_avg, torch.Tensor) or latent_avg.ndim not in (1, 2) or latent_avg.numel() == 0:
        raise CheckpointFormatError(f"{source}: 'latent_avg' must be a tensor of shape (512,) or (18, 512)")
    if latent_avg.ndim == 1:
        return latent_avg
    if not torch.equal(latent_avg, latent_avg[:1].expand_as(latent_avg)):
        raise CheckpointFormatError(
            f"{source}: the rows of 'latent_avg' {tuple(latent_avg.shape)} differ; expected the average W repeated "
            "for every W+ row, as e4e saves it"
        )
    return latent_avg[0]


def generator_from_checkpoint(
    checkpoint: Mapping[str, object], *, source: str, device: torch.device | str = "cpu"
) -> Generator:
    """Build the generator from an already-read checkpoint dict in either supported format.

    Formats:
        * ``stylegan2-ffhq-config-f.pt``: ``{"g_ema": state_dict, "latent_avg": (512,), ["g", "d"]}``;
        * ``e4e_ffhq_encode.pt``: ``{"state_dict": {"encoder.*", "decoder.*"}, "latent_avg": (18, 512), "opts"}``
          (the ``decoder.*`` keys are the generator).

    Args:
        checkpoint: the object returned by :func:`pipeline.networks.checkpoint_io.read_torch_checkpoint`.
        source: human-readable name of the file (for messages).
        device: where to put the model.

    Returns:
        A frozen generator (eval, no grad) on ``device`` with its ``latent_avg`` set.

    Raises:
        CheckpointFormatError: if the dict is in neither format, or its generator keys/shapes do not match.
    """
    keys = list(checkpoint) if isinstance(checkpoint, Mapping) else None
    if keys is not None and "g_ema" in checkpoint and "latent_avg" in checkpoint:
        state_dict, prefix = checkpoint["g_ema"], ""
    elif keys is not None and isinstance(checkpoint.get("state_dict"), Mapping) and "latent_avg" in checkpoint:
        prefix = "decoder"
        state_dict = strip_prefix(checkpoint["state_dict"], prefix)
        if not state_dict:
            raise CheckpointFormatError(f"{source}: the e4e 'state_dict' has no decoder.* (generator) keys")
    else:
        found = f"top-level keys {sorted(map(str, keys))}" if keys is not None else f"a {type(checkpoint).__name__}"
        raise CheckpointFormatError(
            f"{source} is not a StyleGAN2 generator checkpoint: expected top-level keys 'g_ema' and 'latent_avg' "
            f"(stylegan2-ffhq-config-f.pt) or 'state_dict' and 'latent_avg' (e4e_ffhq_encode.pt), found {found}"
        )
    if not isinstance(state_dict, Mapping):
        raise CheckpointFormatError(f"{source}: the generator weights are a {type(state_dict).__name__}, not a dict")
    latent_avg = _average_w(checkpoint["latent_avg"], source=source)
    return generator_from_state_dict(state_dict, latent_avg, source=source, device=device, prefix=prefix)


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> Generator:
    """Read a generator checkpoint file (``stylegan2-ffhq-config-f.pt`` or ``e4e_ffhq_encode.pt`` format).

    Args:
        path: the ``torch.save`` file.
        device: where to put the model.

    Returns:
        A frozen generator (eval, no grad) on ``device``.

    Raises:
        WeightsError: if the file is missing, truncated or not a torch file.
        CheckpointFormatError: if it is neither format or its keys/shapes do not match (the key is named).
    """
    path = Path(path)
    checkpoint = read_torch_checkpoint(path)
    return generator_from_checkpoint(checkpoint, source=f"weight file {path}", device=device)
