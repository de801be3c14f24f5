"""Conversions between photos and the networks' tensors, and the one area-downsampling helper.

The generator's raw output is about [-1, 1]; photos are (H, W, 3) uint8 RGB. The mapping is the official
pre/postprocess (``x/127.5 − 1`` and ``(x + 1)·127.5``, rounded and clipped; METHOD.md §3).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812


def to_model_range(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [-1, 1] (``x/127.5 − 1`` as the official preprocess)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=torch.float32)
    return (tensor.permute(2, 0, 1).unsqueeze(0) / 127.5) - 1.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) raw generator output, about [-1, 1] → (H, W, 3) uint8 RGB (official postprocess, METHOD.md §3)."""
    pixels = (image.detach()[0].float() + 1.0) * 127.5 + 0.5
    return pixels.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average (adaptive average pooling) (N, C, H, W) images to (N, C, size, size).

    Equals the official ``AdaptiveAvgPool2d(256)``; for 1024² input it is an exact 4×4 box average. Images already
    ``size``² are returned as they are (no copy).

    Raises:
        ValueError: ``images`` is not 4-D.
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.adaptive_avg_pool2d(images, size)
