"""Seeded random weights in the exact key names and shapes of the real checkpoints.

This reproduces the recipe documented with the parity fixtures (``shared/fixtures/stylegan2/README.md`` and
``shared/fixtures/README-e4e-bisenet.md``): one CPU ``torch.Generator`` seeded once, one ``torch.randn`` draw per
tensor in state-dict order, with fixed rules per key name. The same function builds the stand-in weights written by
``python -m pipeline.weights make-test-weights``, so tests and smoke runs exercise the real loaders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

FIXTURE_SEED = 20210830  # the seed every parity fixture was made with
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's [1, 3, 3, 1] binomial filter
FIR_UPSAMPLE_GAIN = 4.0  # the up-sampling FIR kernel is scaled by factor**2 = 4 (rosinality `Upsample`)
BIAS_SCALE = 0.1  # biases and noise strengths are drawn ×0.1
MODULATION_BIAS_OFFSET = 1.0  # style modulation biases start at 1 (as in StyleGAN2's bias_init=1)
RUNNING_MEAN_SCALE = 0.1
RUNNING_VAR_SCALE = 0.1


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
