"""Mask feathering and alpha compositing of an edited render into the original photo (METHOD.md §6, §7 step 9, §8).

Matches the behaviour of the Coarse-to-Fine official code (``mask_dilate_blur`` and the final blends of
``main_diffuse.py`` / ``main_warp.py``, repository oneThousand1000/Facial-Structure-Editing-of-Portrait-Images-via-
Latent-Space-Classifications), which in turn follows idinvert's ``diffuse`` blending:

* feathering: ``D = dilate(B, ones(k, k))``, ``Bl = boxblur(D, (s, s))``, ``M = B + (1 − B)·Bl``. The soft mask is
  exactly 1 on the binary mask and the whole transition lies *outside* it;
* compositing: ``out = base·(1 − M) + overlay·M``, computed in floating point and rounded.

Differences from the official code, both in the direction of exactness: the box blur is evaluated with integer window
counts (the official code blurs a uint8 0/255 image and so quantises the ramp to 1/255), and the composite copies the
base image wherever ``M == 0`` so that those pixels are bit-exact by construction rather than by rounding luck.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.boxes import mask_box

__all__ = [
    "FEATHER_DIFFUSE",
    "FEATHER_WARP",
    "MASK_OVERLAY_COLOUR",
    "MASK_OVERLAY_OPACITY",
    "FeatherSettings",
    "composite",
    "feather_mask",
    "mask_overlay",
]

MASK_OVERLAY_COLOUR = (255, 48, 48)  # RGB tint used to show the edit mask in the UI (ours)
MASK_OVERLAY_OPACITY = 0.5  # how strongly a fully-masked pixel is tinted (ours)
_RGB_MAX = 255.0


def _check_kernel(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer number of pixels, got {value!r}")


@dataclass(frozen=True)
class FeatherSettings:
    """Kernel sizes of ``mask_dilate_blur`` (both in pixels of the 1024² aligned image)."""

    dilate_px: int  # side of the square dilation kernel ones(k, k)
    blur_px: int  # side of the square box-blur window

    def __post_init__(self) -> None:
        _check_kernel("dilate_px", self.dilate_px)
        _check_kernel("blur_px", self.blur_px)


# main_diffuse.py: mask_dilate_blur(mask, 30, 35). Measured ramp: ≈233/255 at the mask edge, 0 after ≈32 px.
FEATHER_DIFFUSE = FeatherSettings(dilate_px=30, blur_px=35)
# main_warp.py (get_neck_blur_mask), also the training-time diffusion: 15 / 25. Ramp ≈194/255 at the edge, 0 by ≈20 px.
FEATHER_WARP = FeatherSettings(dilate_px=15, blur_px=25)


def _check_binary_mask(binary: object) -> np.ndarray:
    if not isinstance(binary, np.ndarray) or binary.ndim != 2 or binary.dtype != np.bool_:
        got = f"{binary.dtype} array of shape {binary.shape}" if isinstance(binary, np.ndarray) else type(binary)
        raise ValueError(f"binary mask must be a (H, W) bool array, got {got}")
    if binary.size == 0:
        raise ValueError(f"binary mask must not be empty, got shape {binary.shape}")
    return binary


def feather_mask(binary: np.ndarray, *, dilate_px: int, blur_px: int) -> np.ndarray:
    """Soft mask that is 1 on ``binary`` and ramps to 0 outside it (the official ``mask_dilate_blur``).

    The binary mask is dilated with a ``dilate_px``² square of ones (OpenCV anchor at the kernel centre, so an even
    kernel grows one pixel more towards +x/+y), box-blurred with a ``blur_px``² window (reflect-101 border), and the
    original mask is put back on top: ``M = B + (1 − B)·blur(dilate(B))``.

    Args:
        binary: (H, W) bool, the hard mask (not modified).
        dilate_px: side of the square dilation kernel in pixels (30 diffuse, 15 warp; see :data:`FEATHER_DIFFUSE`).
        blur_px: side of the square box-blur window in pixels (35 diffuse, 25 warp).

    Returns:
        (H, W) float32 in [0, 1]: exactly 1.0 where ``binary`` is set, exactly 0.0 where no dilated pixel lies within
        the blur window, the window's fraction of dilated pixels in between.

    Raises:
        ValueError: if ``binary`` is not a non-empty (H, W) bool array or a kernel size is not a positive integer.
    """
    binary = _check_binary_mask(binary)
    _check_kernel("dilate_px", dilate_px)
    _check_kernel("blur_px", blur_px)
    hard = binary.astype(np.uint8)  # (H, W) 0/1
    dilated = cv2.dilate(hard, np.ones((dilate_px, dilate_px), np.uint8))
    # Integer window counts keep the ramp exact (and exactly 0 far from the mask, where float running sums drift).
    counts = cv2.boxFilter(dilated, cv2.CV_32S, (blur_px, blur_px), normalize=False, borderType=cv2.BORDER_REFLECT_101)
    blurred = counts.astype(np.float32) / np.float32(blur_px * blur_px)
    soft = np.where(binary, np.float32(1.0), blurred)
    return np.clip(soft, 0.0, 1.0).astype(np.float32, copy=False)


def _check_image(name: str, image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(f"{name} must be an (H, W, 3) uint8 image, got {got}")
    return image


def _check_soft_mask(mask: object, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or not np.issubdtype(mask.dtype, np.floating):
        got = f"{mask.dtype} array of shape {mask.shape}" if isinstance(mask, np.ndarray) else type(mask)
        raise ValueError(f"mask must be an (H, W) float array in [0, 1], got {got}")
    if mask.shape != shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match the image size {shape[:2]}")
    if not np.all(np.isfinite(mask)) or mask.min(initial=0.0) < 0.0 or mask.max(initial=0.0) > 1.0:
        raise ValueError(f"mask values must be finite and in [0, 1], got range [{mask.min()}, {mask.max()}]")
    return mask


def composite(base: np.ndarray, overlay: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Alpha-blend ``overlay`` into ``base``: ``base·(1 − M) + overlay·M``, rounded to uint8.

    Pixels with ``M == 0`` are copied from ``base`` bit-exactly and pixels with ``M == 1`` equal ``overlay`` exactly.

    Args:
        base: (H, W, 3) uint8 RGB, the original photo (not modified). (H, W) grey images are accepted too.
        overlay: uint8 image of the same shape as ``base``, e.g. the edited render (not modified).
        mask: (H, W) float (float32 preferred) in [0, 1], weight of ``overlay``.

    Returns:
        New uint8 array with the shape of ``base``.

    Raises:
        ValueError: on a wrong dtype, mismatched shapes, or mask values outside [0, 1].
    """
    base = _check_image("base", base)
    overlay = _check_image("overlay", overlay)
    if overlay.shape != base.shape:
        raise ValueError(f"overlay shape {overlay.shape} does not match base shape {base.shape}")
    mask = _check_soft_mask(mask, base.shape)
    result = base.copy()
    touched = mask > 0  # (H, W) bool: only these pixels are recomputed, inside their bounding box
    box = mask_box(touched)
    if box is None:
        return result
    weight = mask[box].astype(np.float32)
    if base.ndim == 3:
        weight = weight[:, :, None]  # broadcast over channels
    blended = base[box].astype(np.float32) * (1.0 - weight) + overlay[box].astype(np.float32) * weight
    inside = touched[box] if base.ndim == 2 else touched[box][:, :, None]
    np.copyto(result[box], np.clip(np.rint(blended), 0.0, _RGB_MAX).astype(np.uint8), where=inside)
    return result


def mask_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    colour: tuple[int, int, int] = MASK_OVERLAY_COLOUR,
    *,
    opacity: float = MASK_OVERLAY_OPACITY,
) -> np.ndarray:
    """Tint ``image`` with ``colour`` where ``mask`` is set, to show an edit mask in the UI.

    Args:
        image: (H, W, 3) uint8 RGB (not modified).
        mask: (H, W) bool (hard mask) or float in [0, 1] (soft mask).
        colour: RGB tint, three integers in [0, 255].
        opacity: tint strength of a fully-masked pixel, in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB; pixels outside the mask are unchanged.

    Raises:
        ValueError: on a wrong image/mask shape or dtype, or an out-of-range colour or opacity.
    """
    image = _check_image("image", image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB image, got shape {image.shape}")
    if len(colour) != 3 or any(not 0 <= int(c) <= _RGB_MAX for c in colour):
        raise ValueError(f"colour must be three integers in [0, 255], got {colour!r}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if isinstance(mask, np.ndarray) and mask.dtype == np.bool_:
        mask = mask.astype(np.float32)
    weight = _check_soft_mask(mask, image.shape).astype(np.float32) * np.float32(opacity)
    tint = np.broadcast_to(np.asarray(colour, dtype=np.uint8), image.shape)
    return composite(image, np.ascontiguousarray(tint), weight)
