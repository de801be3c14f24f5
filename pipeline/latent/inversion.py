"""W+ optimisation ("quality inversion"): refine a code so the generator reproduces the aligned photo.

The schedule follows NVIDIA's StyleGAN2 projector (Karras et al., CVPR 2020, Appendix D; METHOD.md §2b): Adam with a
linear learning-rate ramp-up over the first 5 % and a cosine ramp-down over the last 25 %, and Gaussian noise added
to the latent early on (scaled by the spread of W, decaying quadratically to zero at 75 % of the steps). Unlike the
projector we start from the e4e code (or the average latent) and optimise all 18 W+ rows, with a pixel loss plus a
VGG16 perceptual loss at 256², as the authors' PyTorch projector variant does.

GPU path: the forward passes run under autocast (:class:`MixedPrecision`: bf16 where the GPU has it natively, fp16
with on-device loss scaling before), and the loop makes no host-device round trip: losses stay on the device and are
read every :data:`SYNC_EVERY` steps (:class:`LossLog`). The diffuse refinement uses the same pieces.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from pipeline.config import NUM_WS, W_DIM
from pipeline.networks.pixels import downsample

ProgressCallback = Callable[[int, int, float], None]  # (step done, total steps, loss)
StopCheck = Callable[[], bool]  # returns True when the caller wants the loop to stop early
PerceptualDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # images in [-1,1] -> scalar
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
BF16_MIN_CAPABILITY = (8, 0)  # CUDA compute capability with native bf16 (Ampere); older GPUs (T4 = 7.5) get fp16
FP16_INITIAL_SCALE = 2.0**8  # fp16 only: first loss scale of the GradScaler. Its default 2**16 overflows the
# backward's spatial sums at once, and each overflow skips a step (and shifts Adam's bias correction). 256 already
# lifts the per-pixel gradients of a mean over 3·1024² pixels (~1e-7) out of fp16's subnormal range; the scaler
# then adapts on the device.
SYNC_EVERY = 10  # on accelerators the losses are copied to the host (and progress reported) every this many steps


@dataclass(frozen=True)
class OptimisationSettings:
    """Hyper-parameters of the W+ optimisation."""

    steps: int = 50  # ours: e4e already lands close, so far fewer than the projector's 1000 steps from w_avg
    learning_rate: float = 0.01  # ours for an e4e start (the projector's 0.1 is for a start at w_avg)
    lr_rampup: float = 0.05  # NVIDIA projector: linear ramp-up over the first 5 % of steps
    lr_rampdown: float = 0.25  # NVIDIA projector: cosine ramp-down over the last 25 % of steps
    noise_scale: float = 0.005  # initial latent noise, × the RMS spread of W: the NVIDIA projector's 0.05 scaled by
    # the same 1/10 as its learning rate (0.1 → 0.01); at 0.05 the noise swamps 0.01-sized steps (measured: worse fit)
    noise_ramp: float = 0.75  # NVIDIA projector: the latent noise reaches zero at 75 % of the steps
    pixel_weight: float = 1.0  # mean squared error in [-1, 1] (the authors' PyTorch projector adds a pixel term)
    perceptual_weight: float = 1.0  # VGG16 perceptual distance at 256² (the projector's LPIPS term)
    loss_size: int = 256  # both losses compare 256² versions (the projector area-downsamples 1024 → 256)
    render_size: int | None = None  # render only up to this resolution while optimising (None = full size; ours,
    # for CPUs: the 256² skip output stands in for the downsampled 1024² render)
    precision: Precision = "auto"  # autocast dtype of the forward passes; "auto" = fp32 on CPU, bf16 on CUDA GPUs
    # with native bf16 (Ampere+), fp16 with loss scaling on older ones (see autocast_dtype)


@dataclass
class OptimisationResult:
    """The optimised code, its render and the loss history."""

    w_plus: np.ndarray  # (1, 18, 512) float32
    image: torch.Tensor  # (1, 3, S, S) raw generator output of the final code, detached
    losses: list[float] = field(default_factory=list)
    steps_run: int = 0
    stopped_early: bool = False


def learning_rate_at(step: int, total: int, settings: OptimisationSettings) -> float:
    """NVIDIA projector schedule: base lr × min(1, t/rampup) × cosine ramp-down over the last part."""
    t = step / max(total, 1)
    ramp = min(1.0, (1.0 - t) / settings.lr_rampdown) if settings.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if settings.lr_rampup > 0:
        ramp *= min(1.0, t / settings.lr_rampup)
    return settings.learning_rate * ramp


def latent_noise_std(step: int, total: int, settings: OptimisationSettings, w_spread: float) -> float:
    """Std of the Gaussian noise added to the latent at ``step`` (quadratic decay to 0 at ``noise_ramp``)."""
    t = step / max(total, 1)
    return w_spread * settings.noise_scale * max(0.0, 1.0 - t / settings.noise_ramp) ** 2


def w_spread(generator: nn.Module, *, samples: int = 10_000, seed: int = 123) -> float:
    """RMS distance of mapped random z's to their mean (the projector's ``dlatent_std``; seed 123 as there)."""
    gen = torch.Generator().manual_seed(seed)
    device = generator.latent_avg.device
    z = torch.randn(samples, W_DIM, generator=gen).to(device)
    with torch.inference_mode():
        w = generator.mapping(z)
    return float(((w - w.mean(0)).square().sum() / samples).sqrt())


def autocast_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """The reduced precision the optimisation loops run their forward passes in, or None for plain fp32.

    "auto" keeps fp32 on CPUs (bf16 is emulated on most and is slower) and picks bf16 on CUDA GPUs that have it
    natively (compute capability ≥ 8.0: A10G, A100, L4, H100), fp16 on older ones (T4).

    Raises:
        ValueError: on an unknown ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    explicit = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision != "auto":
        return explicit[precision]
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY else torch.float16


class MixedPrecision:
    """Autocast for the forward passes and, under fp16, loss scaling, without host-device round trips.

    fp16 uses ``torch.amp.GradScaler`` with a fused Adam: the overflow check and the skipped step then stay on the
    device (``GradScaler`` only reads the overflow flag on the host for unfused optimisers). bf16 has fp32's
    exponent range and needs no scaling; fp32 (None) is the plain loop.
    """

    def __init__(self, device: torch.device, precision: Precision = "auto") -> None:
        self.device = device
        self.dtype = autocast_dtype(device, precision)
        scaled = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type, init_scale=FP16_INITIAL_SCALE, enabled=scaled)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward-pass context: ``torch.autocast`` to the reduced dtype, or nothing for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def adam(self, parameter: torch.Tensor, learning_rate: float) -> torch.optim.Adam:
        """Adam with default betas/eps (fused when the loss is scaled, so the scaler never syncs)."""
        fused = True if self.scaler.is_enabled() else None
        return torch.optim.Adam([parameter], lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused)

    def step(self, loss: torch.Tensor, optimiser: torch.optim.Optimizer) -> None:
        """Backward (scaled under fp16) and one optimiser step (skipped on overflow, decided on the device)."""
        optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimiser)
        self.scaler.update()


class LossLog:
    """Per-step losses and progress reports without a host-device round trip every step.

    On the CPU each loss is read as soon as it exists (reading it costs nothing) and progress is reported after
    every step. On an accelerator the losses stay on the device and are copied in one transfer every
    ``sync_every`` steps (and at the end), when progress is reported too.
    """

    def __init__(
        self, device: torch.device, total: int, progress: ProgressCallback | None, sync_every: int = SYNC_EVERY
    ) -> None:
        self.values: list[float] = []
        self._pending: list[torch.Tensor] = []
        self._every = 1 if device.type == "cpu" else max(1, sync_every)
        self._total = total
        self._progress = progress

    def add(self, step: int, loss: torch.Tensor) -> None:
        """Record the loss of step ``step`` (1-based)."""
        self._pending.append(loss.detach().float())
        if step % self._every == 0 or step == self._total:
            self.flush(step)

    def flush(self, step: int) -> None:
        """Copy the pending losses to the host and report progress at ``step``."""
        if not self._pending:
            return
        self.values.extend(torch.stack(self._pending).tolist())
        self._pending.clear()
        if self._progress is not None:
            self._progress(step, self._total, self.values[-1])


def final_code_and_render(generator: nn.Module, w_plus: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """The optimised code as (1, 18, 512) float32 numpy and its full-size fp32 render (no grad, constant noise)."""
    with torch.inference_mode():
        final = w_plus.detach()
        render = generator.synthesis(final)
    return final.cpu().numpy().astype(np.float32), render


def optimise_latent(
    generator: nn.Module,
    target: torch.Tensor,
    init_w_plus: np.ndarray,
    *,
    perceptual: PerceptualDistance,
    settings: OptimisationSettings = OptimisationSettings(),
    seed: int = 0,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> OptimisationResult:
    """Optimise a W+ code so ``generator.synthesis`` reproduces ``target``.

    Args:
        generator: StyleGAN2 with ``synthesis(wp)`` and ``mapping(z)``, frozen (no parameter needs grad).
        target: (1, 3, S, S) float in [-1, 1] on the generator's device (the aligned photo).
        init_w_plus: (1, 18, 512) float32 starting code (e4e output or the average latent).
        perceptual: distance between two (1, 3, loss_size, loss_size) images in [-1, 1].
        settings: schedule and loss weights.
        seed: seeds the latent noise, so equal inputs give equal results.
        progress: called with (step, total, loss) after every step on the CPU, every :data:`SYNC_EVERY` steps
            (and after the last) on an accelerator.
        should_stop: polled before every step; True ends the loop early (the code reached so far is returned).

    Returns:
        The final code (1, 18, 512) float32, its render (always fp32) and the loss history.
    """
    device = target.device
    init = np.asarray(init_w_plus, dtype=np.float32).reshape(1, NUM_WS, W_DIM)
    w_plus = torch.tensor(init, device=device, requires_grad=True)
    target_small = downsample(target, settings.loss_size)
    precision = MixedPrecision(device, settings.precision)
    optimiser = precision.adam(w_plus, settings.learning_rate)
    noise_gen = torch.Generator(device=device).manual_seed(seed)
    spread = w_spread(generator) if settings.noise_scale > 0 else 0.0
    result = OptimisationResult(w_plus=init.copy(), image=torch.empty(0))
    log = LossLog(device, settings.steps, progress)
    with torch.enable_grad():
        for step in range(settings.steps):
            if should_stop is not None and should_stop():
                result.stopped_early = True
                break
            for group in optimiser.param_groups:
                group["lr"] = learning_rate_at(step, settings.steps, settings)
            noise_std = latent_noise_std(step, settings.steps, settings, spread)
            noisy = w_plus
            if noise_std > 0:
                noisy = w_plus + noise_std * torch.randn(w_plus.shape, generator=noise_gen, device=device)
            with precision.autocast():
                image = generator.synthesis(noisy, resolution=settings.render_size)
                image_small = downsample(image, settings.loss_size).float()
                loss = settings.pixel_weight * F.mse_loss(image_small, target_small)
                loss = loss + settings.perceptual_weight * perceptual(image_small, target_small)
            precision.step(loss, optimiser)
            result.steps_run = step + 1
            log.add(step + 1, loss)
    log.flush(result.steps_run)
    result.losses = log.values
    result.w_plus, result.image = final_code_and_render(generator, w_plus)
    return result
