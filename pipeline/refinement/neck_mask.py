"""The neck mask: which pixels of the aligned photo the edited render may replace (METHOD.md §6).

Matches ``chin_mask_extractor``, ``get_neck_mask`` and ``get_neck_blur_mask`` of the Coarse-to-Fine official code
(oneThousand1000/Facial-Structure-Editing-of-Portrait-Images-via-Latent-Space-Classifications,
``classifier/src/feature_extractor/neck_mask_extractor.py``): at the parser's 512² resolution, the mask is the
BiSeNet *neck* class plus the *skin* class below ear level, minus the jaw polygon (68-point landmarks 0–16), dilated
with a square box kernel, minus the jaw polygon again (the warp variant dilates *before* its first polygon cut and
drops small connected components). It is then resized to the image size bilinearly and binarised with ``> 0``.

The integer rules are the official ones (pinned by tests/refinement/test_neck_mask.py; agreement measured in
docs/fidelity.md): the jaw polygon is filled from landmark coordinates truncated to whole pixels, and the skin rows
cleared above ear level are those above ``int(min(y1, y15))``. Like the official code, the bilinear up-sampling leaves
a fringe of at most one output pixel inside the polygon; it lies inside the feathered blend band anyway.

Deliberate differences: ``remove_small_objects`` is applied to the single-channel mask with the equivalent area
threshold (same result, see :class:`NeckMaskSettings`); an ear level above the image (negative row) clears nothing,
where the official slice ``[:negative]`` would clear all but the last rows.

:func:`landmark_neck_mask` is our own fallback for when the parser weights are unavailable: it needs only the photo
and its landmarks (region below the jaw line ∩ a skin-colour model fitted on the lower face).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.config import NUM_LANDMARKS, PARSER_INPUT_SIZE
from pipeline.networks.parsing import FACE_LABELS, NECK, SKIN

__all__ = [
    "FACE_LABELS",
    "NECK",
    "NECK_MASK_DIFFUSE",
    "NECK_MASK_WARP",
    "SKIN",
    "LandmarkNeckMaskSettings",
    "NeckMaskSettings",
    "ear_level",
    "jaw_polygon_mask",
    "labels_on_grid",
    "landmark_neck_mask",
    "neck_mask",
    "rescale_landmarks",
    "resize_binary_mask",
]

logger = logging.getLogger(__name__)

# 68-point landmark indices (dlib / FAN iBUG scheme, 0-based; METHOD.md §2).
JAW_POINTS = slice(0, 17)  # jaw contour, ear to ear through the chin (point 8)
JAW_LEFT_END, JAW_RIGHT_END = 0, 16  # the jaw's ends at the ears (image left / image right)
EAR_LEVEL_POINTS = (1, 15)  # jaw points at ear-lobe height: chin_mask_extractor's threshold = min(y1, y15)
CHIN_POINT = 8
NOSE_BOTTOM_POINT = 33
EYE_POINTS = slice(36, 48)
OUTER_MOUTH_POINTS = slice(48, 60)

_POLYGON_SHIFT = 4  # fractional bits used when rasterising polygons with OpenCV (1/16 px)


@dataclass(frozen=True)
class NeckMaskSettings:
    """Settings of the parser-based neck mask. Pixel sizes are at ``work_size``² (the official 512²)."""

    dilate_px: int = 7  # side of the square dilation kernel: get_neck_mask(dilate=7) for diffuse, 5 for warp
    # get_neck_mask (diffuse) cuts the jaw polygon out before dilating; get_neck_blur_mask (warp) dilates the
    # uncut mask, so the skin inside the polygon grows a dilate_px // 2 band out of it along the jaw sides.
    cut_before_dilate: bool = True
    remove_small: bool = False  # drop small connected components: only get_neck_blur_mask (warp) does this
    # remove_small_objects(min_size=800, connectivity=1) ran on the 3-channel 512² volume, where a 2-D component of
    # area a is one 3-D component of 3a voxels, removed iff 3a < 800, i.e. a ≤ 266: so keep areas ≥ 267 px,
    # 4-connected (connectivity=1), on the single-channel mask.
    min_component_px: int = 267
    work_size: int = PARSER_INPUT_SIZE  # the official code builds the mask on the 512² parser grid

    def __post_init__(self) -> None:
        for name in ("dilate_px", "min_component_px", "work_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


NECK_MASK_DIFFUSE = NeckMaskSettings()  # get_neck_mask(dilate=7), main_diffuse.py
# get_neck_blur_mask(dilate=5), main_warp.py
NECK_MASK_WARP = NeckMaskSettings(dilate_px=5, cut_before_dilate=False, remove_small=True)


# --- Validation and small geometry helpers -------------------------------------------------------------------------


def check_landmarks(landmarks: object) -> np.ndarray:
    """(68, 2) finite landmarks as float64, or a ValueError naming what is wrong (shared with the jaw warp)."""
    if not isinstance(landmarks, np.ndarray) or landmarks.shape != (NUM_LANDMARKS, 2):
        got = landmarks.shape if isinstance(landmarks, np.ndarray) else type(landmarks)
        raise ValueError(f"landmarks must be a ({NUM_LANDMARKS}, 2) array of (x, y) pixel coordinates, got {got}")
    points = landmarks.astype(np.float64)
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks must be finite")
    return points


def _check_shape(shape: object) -> tuple[int, int]:
    if (
        not isinstance(shape, tuple | list)
        or len(shape) < 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in shape[:2])
    ):
        raise ValueError(f"shape must start with a (height, width) pair of positive integers, got {shape!r}")
    return int(shape[0]), int(shape[1])


def _check_size(name: str, size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"{name} must be a positive integer, got {size!r}")
    return int(size)


def rescale_landmarks(points: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """Map (x, y) pixel-index coordinates between two square grids, pixel centres aligned (ours).

    Used to put the aligned photo's landmarks on the parser's 512² grid, where the official code ran FAN on the photo
    resized to 512².

    Args:
        points: (K, 2) float (x, y) in the ``from_size``² frame.
        from_size: side of the source grid in pixels.
        to_size: side of the target grid in pixels.

    Returns:
        (K, 2) float64 ``(p + 0.5)·to/from − 0.5``; a copy when the sizes match.
    """
    points = np.asarray(points, dtype=np.float64)
    if from_size == to_size:
        return points.copy()
    scale = to_size / from_size
    return (points + 0.5) * scale - 0.5


def labels_on_grid(labels: np.ndarray, size: int) -> np.ndarray:
    """A square label map on the ``size``² grid by pixel-centre nearest-neighbour sampling.

    The parser's 512² arg-max up-sampled by :func:`pipeline.networks.parsing.parse_labels` (an integer factor) comes
    back unchanged, so the masks can be built on the official 512² grid from either map.

    Args:
        labels: (S, S) uint8 class ids.
        size: side of the returned map.

    Returns:
        (size, size) uint8; ``labels`` itself when the size already matches.
    """
    if labels.shape[0] == size:
        return labels
    return cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)


def _fill_polygon(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool raster of the closed polygon through ``points`` (K, 2) (x, y), boundary included."""
    canvas = np.zeros(shape, np.uint8)
    fixed_point = np.rint(points * (1 << _POLYGON_SHIFT)).astype(np.int32)  # (K, 2) sub-pixel vertices
    cv2.fillPoly(canvas, [fixed_point], 1, lineType=cv2.LINE_8, shift=_POLYGON_SHIFT)
    return canvas.astype(bool)


def _dilate_square(mask: np.ndarray, side: int) -> np.ndarray:
    """Dilate a bool mask with a ``side``² square of ones (OpenCV anchor at the kernel centre)."""
    if side <= 1:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), np.ones((side, side), np.uint8)).astype(bool)


def resize_binary_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a square bool mask the official way: bilinear on 0/255, then ``> 0``.

    Args:
        mask: (S, S) bool (not modified).
        size: output side in pixels.

    Returns:
        (size, size) bool; a copy of ``mask`` when the size already matches.

    Raises:
        ValueError: if ``mask`` is not a square bool array or ``size`` is not a positive integer.
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        got = f"{mask.dtype} array of shape {mask.shape}" if isinstance(mask, np.ndarray) else type(mask)
        raise ValueError(f"mask must be a square (S, S) bool array, got {got}")
    size = _check_size("size", size)
    if mask.shape == (size, size):
        return mask.copy()
    resized = cv2.resize(mask.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_LINEAR)
    return resized > 0


# --- Landmark geometry (chin_mask_extractor) ---------------------------------------------------------------------


def jaw_polygon_mask(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The lower-face region: the polygon through jaw points 0..16, closed by the straight 16→0 edge.

    As ``chin_mask_extractor`` (official ``chin_edge_extractor.py``): the vertices are truncated to whole pixels
    (toward zero, the ``dtype=int`` cast) and the polygon is filled with OpenCV's 8-connected scan conversion at
    integer precision, so the cut line is the official one to the pixel.

    Args:
        landmarks: (68, 2) float (x, y) pixel coordinates in the frame of ``shape``.
        shape: (height, width, ...) of the raster.

    Returns:
        (height, width) bool, True inside the polygon and on its boundary.

    Raises:
        ValueError: on malformed landmarks or shape.
    """
    points = check_landmarks(landmarks)
    height, width = _check_shape(shape)
    canvas = np.zeros((height, width), np.uint8)
    vertices = np.trunc(points[JAW_POINTS]).astype(np.int32)  # (17, 2) whole pixels, truncated toward zero
    cv2.fillPoly(canvas, [vertices], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def ear_level(landmarks: np.ndarray) -> float:
    """Row of the jaw at ear-lobe height, ``min(y1, y15)``: skin above it is not part of the neck mask."""
    points = check_landmarks(landmarks)
    return float(min(points[EAR_LEVEL_POINTS[0], 1], points[EAR_LEVEL_POINTS[1], 1]))


def _clear_rows_above(mask: np.ndarray, row: float) -> np.ndarray:
    """Copy of ``mask`` with the rows above ``int(row)`` cleared (official ``face_mask[:int(threshold)] = 0``).

    ``int`` truncates, so for a non-negative ``row`` the first kept row is ``floor(row)``. A negative row clears
    nothing (ours; the official slice would count from the bottom).
    """
    cleared = mask.copy()
    cleared[: max(0, int(row))] = False
    return cleared


# --- Parser-based mask (get_neck_mask / get_neck_blur_mask) ------------------------------------------------------


def _remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 4-connected components smaller than ``min_area``; keep the input if nothing would survive."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area  # (count,) per component; index 0 is the background
    keep[0] = False
    if count <= 1 or not keep.any():
        logger.info("neck mask: no component reaches %d px; keeping the unfiltered mask", min_area)
        return mask.copy()
    return keep[components]


def neck_mask(
    labels: np.ndarray,
    landmarks: np.ndarray,
    *,
    output_size: int | None = None,
    settings: NeckMaskSettings = NECK_MASK_DIFFUSE,
) -> np.ndarray:
    r"""Binary neck mask from a face-parsing label map and the 68 landmarks.

    Steps (on the ``settings.work_size``² grid, 512² as in the official code): ``M = neck ∪ (skin in rows ≥
    int(min(y1, y15)))``; ``M = M \\ jaw`` (diffuse only: ``cut_before_dilate``); dilate with a ``dilate_px``² box;
    ``M = M \\ jaw``; optionally drop components smaller than ``min_component_px`` (kept unfiltered if none
    survives); resize bilinearly to ``output_size`` and binarise with ``> 0``. ``jaw`` is the polygon of
    :func:`jaw_polygon_mask` on the work grid. There is no further cut at the output size: the official mask keeps the
    ≤ 1 px bilinear fringe inside the polygon, and so does this one (docs/fidelity.md).

    Args:
        labels: (S, S) uint8 class ids of the BiSeNet 19-class parser (:data:`SKIN`, :data:`NECK`), any square size
            (512² or 1024² usually); put on the work grid with :func:`labels_on_grid` if needed.
        landmarks: (68, 2) float (x, y) pixel coordinates in the same pixel frame as ``labels``.
        output_size: side of the returned mask; defaults to the side of ``labels``.
        settings: :data:`NECK_MASK_DIFFUSE` (dilate 7) or :data:`NECK_MASK_WARP` (dilate 5, small parts removed).

    Returns:
        (output_size, output_size) bool, True where the edited render may replace the photo. Never inside the jaw
        polygon on the work grid (at most the one-pixel bilinear fringe at other sizes). May be empty (no neck or skin
        below the ears); callers decide what to do then.

    Raises:
        ValueError: if ``labels`` is not a square 2-D uint8 array, or on malformed landmarks or sizes.
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.shape[0] != labels.shape[1]:
        got = labels.shape if isinstance(labels, np.ndarray) else type(labels)
        raise ValueError(f"labels must be a square (S, S) uint8 label map, got {got}")
    if labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 class ids, got dtype {labels.dtype}")
    points = check_landmarks(landmarks)
    label_size = labels.shape[0]
    output_size = label_size if output_size is None else _check_size("output_size", output_size)
    work = settings.work_size

    # 1. Parser classes on the 512² grid, landmarks mapped to it.
    work_labels = labels_on_grid(labels, work)
    work_points = rescale_landmarks(points, label_size, work)
    jaw = jaw_polygon_mask(work_points, (work, work))
    # 2. Neck plus the skin below ear level.
    mask = (work_labels == NECK) | _clear_rows_above(work_labels == SKIN, ear_level(work_points))
    # 3. Grow with a square box and cut the jaw polygon out: the mask never enters the lower face on the work grid.
    if settings.cut_before_dilate:
        mask &= ~jaw
    mask = _dilate_square(mask, settings.dilate_px) & ~jaw
    if settings.remove_small:
        mask = _remove_small_components(mask, settings.min_component_px)
    # 4. Back to the output resolution (bilinear, > 0).
    return resize_binary_mask(mask, output_size)


# --- Landmark-only fallback (ours) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandmarkNeckMaskSettings:
    """Constants of :func:`landmark_neck_mask` (ours, tuned by eye on the 7 example photos).

    Lengths given as fractions are fractions of the face height ``h = y8 − mean eye y`` (≈ 300–450 px on a 1024²
    aligned face), so the same settings work at any resolution.
    """

    extend_below_chin: float = 0.8  # the search region reaches down to y8 + 0.8·h (the official mask has no limit)
    sample_inset: float = 0.05  # skin samples stay 0.05·h inside the jaw polygon (no background at its edge)
    mouth_margin: float = 0.1  # and 0.1·h away from the outer-lip polygon (lips and teeth are not skin)
    chroma_sigmas: float = 3.0  # keep pixels within 3 Mahalanobis units of the sampled skin chroma
    min_luma_fraction: float = 0.35  # and at least 35% of the sampled mean luma (normalised chroma is noise when dark)
    chroma_variance_floor: float = 1e-5  # added to the chroma covariance diagonal (avoids a singular model)
    cleanup_fraction: float = 0.03  # closing-then-opening kernel side: fills pores, then removes specks
    contact_fraction: float = 0.05  # kept components must reach within 0.05·h of the jaw polygon
    min_samples: int = 200  # fewer skin samples than this: no colour model, empty mask
    dilate_px: int = NECK_MASK_DIFFUSE.dilate_px  # final square dilation, in pixels of a 512² image (as neck_mask)

    def __post_init__(self) -> None:
        for name in ("extend_below_chin", "sample_inset", "mouth_margin", "chroma_sigmas", "cleanup_fraction"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.min_luma_fraction < 1:
            raise ValueError(f"min_luma_fraction must be in [0, 1), got {self.min_luma_fraction!r}")
        if self.min_samples < 3 or self.dilate_px < 1:
            raise ValueError("min_samples must be at least 3 and dilate_px at least 1")


def _luma_normalised_chroma(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) luma Y and (H, W, 2) chroma ((Cr − 128)/Y, (Cb − 128)/Y), which does not change under shading."""
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)  # (H, W, 3)
    luma = ycrcb[..., 0]
    chroma = (ycrcb[..., 1:] - np.float32(128.0)) / np.maximum(luma, np.float32(1.0))[..., None]
    return luma, chroma


def _odd_kernel(length: float) -> np.ndarray:
    side = max(1, round(float(length)) | 1)
    return np.ones((side, side), np.uint8)


def _skin_sample_region(
    points: np.ndarray, jaw: np.ndarray, face_height: float, settings: LandmarkNeckMaskSettings
) -> np.ndarray:
    """Lower-face pixels that are almost surely skin: inside the jaw polygon, below the nose, away from the lips."""
    inner = cv2.erode(jaw.astype(np.uint8), _odd_kernel(2 * settings.sample_inset * face_height)).astype(bool)
    lips = _fill_polygon(points[OUTER_MOUTH_POINTS], jaw.shape)
    lips = cv2.dilate(lips.astype(np.uint8), _odd_kernel(2 * settings.mouth_margin * face_height)).astype(bool)
    return _clear_rows_above(inner & ~lips, points[NOSE_BOTTOM_POINT, 1])


def _skin_likelihood_mask(image: np.ndarray, samples: np.ndarray, settings: LandmarkNeckMaskSettings) -> np.ndarray:
    """Pixels whose luma-normalised chroma lies within ``chroma_sigmas`` of the sampled skin (Mahalanobis)."""
    luma, chroma = _luma_normalised_chroma(image)
    sampled = chroma[samples].astype(np.float64)  # (N, 2)
    mean = sampled.mean(axis=0)
    covariance = np.cov(sampled.T) + np.eye(2) * settings.chroma_variance_floor
    offset = (chroma - mean.astype(np.float32)).astype(np.float64)  # (H, W, 2)
    distance_sq = np.einsum("...i,ij,...j->...", offset, np.linalg.inv(covariance), offset)  # (H, W)
    bright_enough = luma >= settings.min_luma_fraction * luma[samples].mean()
    return (distance_sq <= settings.chroma_sigmas**2) & bright_enough


def landmark_neck_mask(
    image: np.ndarray,
    landmarks: np.ndarray,
    *,
    settings: LandmarkNeckMaskSettings = LandmarkNeckMaskSettings(),
) -> np.ndarray:
    """Neck mask from the photo and its landmarks alone (fallback when the face parser is unavailable).

    1. Search region: below the jaw line, between the verticals through jaw points 0 and 16, from ear level
       (``min(y1, y15)``, as the official skin rule) down to ``y8 + extend_below_chin·h``; the jaw polygon excluded.
    2. Skin model: mean and covariance of the luma-normalised YCrCb chroma of pixels inside the jaw polygon, below the
       nose and away from the lips; a pixel is skin if its Mahalanobis distance is ≤ ``chroma_sigmas`` and it is not
       much darker than the samples.
    3. Region ∩ skin, closed then opened (pores, then specks), keeping only the components that reach the jaw line.
    4. Dilated with the same square box as :func:`neck_mask` (scaled from 512²) and the jaw polygon cut out again.

    Args:
        image: (H, W, 3) uint8 RGB aligned photo (not modified).
        landmarks: (68, 2) float (x, y) pixel coordinates of ``image``.
        settings: the constants above.

    Returns:
        (H, W) bool. Empty (and a warning logged) when too little lower-face skin is visible to fit the colour model.

    Raises:
        ValueError: on a malformed image or landmarks.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {got}")
    points = check_landmarks(landmarks)
    shape = (int(image.shape[0]), int(image.shape[1]))
    jaw = jaw_polygon_mask(points, shape)
    face_height = max(1.0, float(points[CHIN_POINT, 1] - points[EYE_POINTS, 1].mean()))

    # 1. Where the neck can be.
    bottom = min(shape[0] - 1.0, points[CHIN_POINT, 1] + settings.extend_below_chin * face_height)
    corners = np.array([[points[JAW_RIGHT_END, 0], bottom], [points[JAW_LEFT_END, 0], bottom]])
    region = _clear_rows_above(_fill_polygon(np.vstack([points[JAW_POINTS], corners]), shape), ear_level(points))
    region &= ~jaw
    # 2. What skin looks like on this face.
    samples = _skin_sample_region(points, jaw, face_height, settings)
    if samples.sum() < settings.min_samples:
        logger.warning(
            "landmark neck mask: only %d skin samples below the nose; returning an empty mask", samples.sum()
        )
        return np.zeros(shape, bool)
    candidate = (region & _skin_likelihood_mask(image, samples, settings)).astype(np.uint8)
    # 3. Clean up and keep what is attached to the jaw line.
    cleanup = _odd_kernel(settings.cleanup_fraction * face_height)
    candidate = cv2.morphologyEx(candidate, cv2.MORPH_CLOSE, cleanup)  # first fill pores and shadow speckle,
    candidate = cv2.morphologyEx(candidate, cv2.MORPH_OPEN, cleanup).astype(bool) & region  # then drop specks
    near_jaw = cv2.dilate(jaw.astype(np.uint8), _odd_kernel(2 * settings.contact_fraction * face_height)) > 0
    _, components = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    touching = np.unique(components[near_jaw & candidate])
    mask = np.isin(components, touching[touching > 0])
    # 4. Same growth as the parser-based mask, never into the lower face.
    dilate_side = settings.dilate_px * max(shape) / PARSER_INPUT_SIZE
    return cv2.dilate(mask.astype(np.uint8), _odd_kernel(dilate_side)).astype(bool) & ~jaw
