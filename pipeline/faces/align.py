"""Find faces in a photo, FFHQ-align each to a square crop, and paste an edited crop back into the photo.

Alignment reproduces the FFHQ dataset recipe (NVlabs/ffhq-dataset ``download_ffhq.py::recreate_aligned_images``, used
unchanged by the official Coarse-to-Fine ``ffhq_dataset/face_alignment.py``; METHOD.md §2): an oriented square "quad"
from the eye centres and mouth corners, shrink for very large faces, crop, reflect-pad with blur near image borders,
``PIL`` QUAD transform to 4× the output size with bilinear sampling, then a Lanczos downsize
(``Image.Resampling.LANCZOS``; ``ANTIALIAS`` no longer exists).

Paste-back is not part of the recipe (METHOD.md §1 step 6). Because the quad is a square, the whole chain
(shrink → crop → pad → QUAD → downsize) is an affine map from aligned pixel indices to original pixel indices. We
compose it from the operations actually applied (including the half-pixel offset of the shrink resize, which the
recipe's bookkeeping ``quad /= shrink`` ignores), so ``AlignedFace.affine`` is exact rather than approximate, and warp
the edited crop and its mask back with ``cv2.warpAffine``. Pixels where the warped mask is 0 are copied unchanged.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import dlib
import numpy as np
from PIL import Image

from pipeline.boxes import mask_box
from pipeline.config import ALIGNED_SIZE, NUM_LANDMARKS
from pipeline.errors import FaceTooSmallError, NoFaceError
from pipeline.faces.landmarks import DEFAULT_DETECTION, DetectedFace, DetectionConfig, detect_landmarks

logger = logging.getLogger(__name__)

# iBUG 300-W 68-point layout (0-based, METHOD.md §2).
LEFT_EYE = slice(36, 42)  # the subject's right eye, on the left of the image
RIGHT_EYE = slice(42, 48)
MOUTH_LEFT_CORNER = 48
MOUTH_RIGHT_CORNER = 54

UINT8_MAX = 255
# Pixels a bilinear sample reaches past the last non-zero mask pixel (1), plus one for rounding (ours): paste_back
# warps only the mask's support grown by this.
MASK_REACH_PX = 2
GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default kernel extent, in σ
BLUR_MIN_SIGMA = 10.0  # px; wider pad blurs run on an integer-downscaled copy with σ ≥ this (_StripeGaussianBlur)
STRIPE_ROWS = 256  # rows per stripe in the padding arithmetic (bounds temporary memory)
MAX_UPSCALE = 64  # refuse quads smaller than size / 64 (16 px for 1024²): landmarks that close are not a usable face
# Horizontal bands the oriented resampling is split into, one thread each (ours, issue 16; Pillow releases the GIL in
# transform and resize, and the Space has 2 vCPUs). Same pixels as one call up to the rounding of sampling positions.
RESAMPLE_BANDS = 2
LANCZOS_LOBES = 3  # support of Pillow's LANCZOS filter in output pixels (Pillow's Resample.c: lanczos, support 3)


@dataclass(frozen=True)
class FFHQAlignConfig:
    """Constants of the FFHQ alignment recipe (NVlabs/ffhq-dataset ``recreate_aligned_images``; METHOD.md §2)."""

    eye_to_eye_scale: float = 2.0  # half-width of the crop ≥ 2.0·|eye_to_eye|
    eye_to_mouth_scale: float = 1.8  # half-width of the crop ≥ 1.8·|eye_to_mouth|
    center_shift: float = 0.1  # crop centre = eye midpoint + 0.1·eye_to_mouth ("em_scale")
    supersampling: int = 4  # transform_size / output_size (recipe: 4096 / 1024)
    shrink_threshold: float = 0.5  # shrink = floor(qsize / output_size · 0.5); applied when > 1
    border_fraction: float = 0.1  # crop margin = max(rint(0.1·qsize), 3)
    min_border: int = 3
    pad_trigger_margin: int = 4  # pad when the quad comes within 4 px of an image edge (max(pad) > border − 4)
    pad_fraction: float = 0.3  # reflect padding ≥ rint(0.3·qsize) on every side
    blur_fraction: float = 0.02  # Gaussian σ of the padded-area blur = 0.02·qsize
    enable_padding: bool = True  # the recipe's default


DEFAULT_ALIGN = FFHQAlignConfig()


@dataclass(frozen=True)
class FaceSearchConfig:
    """Which detections count as editable faces."""

    # Smallest face (side of dlib's detection box, original pixels) we edit: dlib's HOG window is 80×80 px and faces
    # below it are found only by upsampling, with unreliable landmarks (davisking/dlib#401; RELIABILITY.md §2.3
    # "Tiny image / tiny face"; the 1024² StyleGAN crop would be upscaled > 10×).
    min_face_size: float = 80.0
    detection: DetectionConfig = DEFAULT_DETECTION


DEFAULT_SEARCH = FaceSearchConfig()


@dataclass(frozen=True, eq=False)
class Face:
    """A detected face in original-image pixel coordinates."""

    landmarks: np.ndarray  # (68, 2) float64 (x, y)
    bbox: np.ndarray  # (4,) float64 (left, top, right, bottom) pixel edges of dlib's detection box
    score: float = 0.0  # dlib detector score

    @property
    def size(self) -> float:
        """Side of the detection box in pixels (geometric mean of its width and height)."""
        return math.sqrt(max(self.bbox[2] - self.bbox[0], 0.0) * max(self.bbox[3] - self.bbox[1], 0.0))


def find_faces(
    image: np.ndarray, config: FaceSearchConfig = DEFAULT_SEARCH, predictor: dlib.shape_predictor | None = None
) -> list[Face]:
    """Detect all frontal faces large enough to edit, largest first.

    Args:
        image: (H, W, 3) uint8 RGB photo at full resolution (e.g. from :func:`pipeline.faces.decode.decode_image`).
        config: minimum face size and detector settings.
        predictor: the 68-point landmark model (``Models.landmarks``); None loads the default one.

    Returns:
        Faces with ``size >= config.min_face_size``, sorted by ``size`` descending (index 0 = largest). Smaller faces
        are left out (and logged).

    Raises:
        NoFaceError: the detector found no face.
        FaceTooSmallError: faces were found but all are smaller than ``config.min_face_size``.
    """
    return editable_faces(detect_landmarks(image, config.detection, predictor), config)


def editable_faces(detections: list[DetectedFace], config: FaceSearchConfig = DEFAULT_SEARCH) -> list[Face]:
    """The detections large enough to edit, as Faces, largest first (the selection rule of :func:`find_faces`).

    Raises:
        NoFaceError: ``detections`` is empty.
        FaceTooSmallError: every detection is smaller than ``config.min_face_size``.
    """
    if not detections:
        raise NoFaceError(
            "No face was found in this photo. Please use a photo where one face looks roughly towards the camera, "
            "upright and not covered; if the face is small in a large photo, crop the photo around it."
        )
    faces = [Face(landmarks=d.landmarks, bbox=d.box, score=d.score) for d in detections]
    faces.sort(key=lambda face: face.size, reverse=True)
    large = [face for face in faces if face.size >= config.min_face_size]
    if not large:
        raise FaceTooSmallError(
            f"The face in this photo is too small to edit (about {faces[0].size:.0f} pixels wide; at least "
            f"{config.min_face_size:.0f} are needed). Please use a closer or higher-resolution photo of the face."
        )
    if len(large) < len(faces):
        logger.info("ignoring %d face(s) smaller than %.0f px", len(faces) - len(large), config.min_face_size)
    return large


def ffhq_quad(landmarks: np.ndarray, config: FFHQAlignConfig = DEFAULT_ALIGN) -> tuple[np.ndarray, float]:
    """The FFHQ crop square for a face (METHOD.md §2 "Geometry").

    Args:
        landmarks: (68, 2) float (x, y) pixel coordinates.
        config: recipe constants.

    Returns:
        quad: (4, 2) float64 corners upper-left, lower-left, lower-right, upper-right, in the same coordinates (the
            outer corners of the crop: aligned pixel (u, v) samples at UL + (UR−UL)(u+½)/S + (LL−UL)(v+½)/S).
        qsize: side length of the square in pixels.

    Raises:
        ValueError: wrong landmark shape or degenerate landmarks (eyes and mouth at one point).
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected ({NUM_LANDMARKS}, 2) landmarks, got {points.shape}")
    eye_left = points[LEFT_EYE].mean(axis=0)
    eye_right = points[RIGHT_EYE].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (points[MOUTH_LEFT_CORNER] + points[MOUTH_RIGHT_CORNER]) / 2
    eye_to_mouth = mouth_avg - eye_avg

    # x axis: eye_to_eye plus eye_to_mouth rotated by −90° (v ↦ (v_y, −v_x)), scaled to the crop's half-width.
    x_axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    length = float(np.hypot(*x_axis))
    half_width = max(
        float(np.hypot(*eye_to_eye)) * config.eye_to_eye_scale,
        float(np.hypot(*eye_to_mouth)) * config.eye_to_mouth_scale,
    )
    if length == 0.0 or half_width == 0.0:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x_axis = x_axis / length * half_width
    y_axis = np.array([-x_axis[1], x_axis[0]])  # x rotated by +90°, pointing down the face
    center = eye_avg + eye_to_mouth * config.center_shift
    quad = np.stack(
        [center - x_axis - y_axis, center - x_axis + y_axis, center + x_axis + y_axis, center + x_axis - y_axis]
    )
    return quad, 2.0 * half_width


def quad_to_affine(quad: np.ndarray, size: int) -> np.ndarray:
    """The 2×3 affine taking aligned pixel indices (u, v) of a ``size``² crop of ``quad`` to source pixel indices.

    Args:
        quad: (4, 2) corners UL, LL, LR, UR (outer crop corners, pixel-index coordinates).
        size: side of the aligned crop in pixels.

    Returns:
        (2, 3) float64 ``A`` with ``[x, y] = A @ [u, v, 1]`` (METHOD.md §2 "Inverse map for paste-back").
    """
    upper_left, lower_left, _, upper_right = np.asarray(quad, dtype=np.float64)
    step_u = (upper_right - upper_left) / size
    step_v = (lower_left - upper_left) / size
    offset = upper_left + 0.5 * (step_u + step_v)
    return np.column_stack([step_u, step_v, offset])


def _as_3x3(affine: np.ndarray) -> np.ndarray:
    return np.vstack([affine, [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An FFHQ-aligned crop and the exact map back to the photo it came from."""

    image: np.ndarray  # (S, S, 3) uint8 RGB aligned crop
    # (4, 2) float64 FFHQ quad UL, LL, LR, UR in original pixel coordinates, as computed from the landmarks
    quad: np.ndarray
    # (2, 3) float64 aligned pixel index (u, v) → original pixel index (x, y) of the resampling actually applied;
    # equals quad_to_affine(quad, S) except after a shrink, where they differ by ≤ (shrink − 1)/2 px (module doc)
    affine: np.ndarray
    original_shape: tuple[int, int]  # (H, W) of the photo the crop came from
    face: Face | None = None
    _inverse: np.ndarray = field(init=False, repr=False)
    _inside: np.ndarray | None = field(init=False, repr=False, default=None)  # inside_mask(), made on first use

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inverse", np.linalg.inv(_as_3x3(self.affine))[:2])

    @property
    def size(self) -> int:
        """Side of the aligned crop in pixels."""
        return int(self.image.shape[0])

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) aligned pixel coordinates (x=u, y=v) to original pixel coordinates."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.affine[:, :2].T + self.affine[:, 2]

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) original pixel coordinates to aligned pixel coordinates."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self._inverse[:, :2].T + self._inverse[:, 2]

    def inside_mask(self) -> np.ndarray:
        """(S, S) float32: 1 where the crop samples the photo itself, 0 where it shows reflect-padding.

        Useful to keep an edit mask off regions that do not exist in the photo (they are never pasted back). Computed
        once per crop (every strength change asks for it) and returned read-only.
        """
        if self._inside is None:
            inside = self._inside_mask()
            inside.setflags(write=False)
            object.__setattr__(self, "_inside", inside)
        return self._inside

    def _inside_mask(self) -> np.ndarray:
        # In stripes of rows: the whole crop's source positions at once are ~50 MB of float64 temporaries, whose
        # passage through the caches slowed the render that follows by ~15 % (measured, issue 16).
        height, width = self.original_shape
        inside = np.empty((self.size, self.size), dtype=np.float32)
        grid_u = np.arange(self.size, dtype=np.float64)
        for top in range(0, self.size, STRIPE_ROWS):
            rows = np.arange(top, min(top + STRIPE_ROWS, self.size), dtype=np.float64)
            grid_v, grid_w = np.meshgrid(rows, grid_u, indexing="ij")
            source = self.to_original(np.stack([grid_w.ravel(), grid_v.ravel()], axis=1))
            stripe = (source[:, 0] >= -0.5) & (source[:, 0] <= width - 0.5)
            stripe &= (source[:, 1] >= -0.5) & (source[:, 1] <= height - 0.5)
            inside[top : top + rows.size] = stripe.reshape(rows.size, self.size)
        return inside

    def paste_back(self, original: np.ndarray, edited_crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Warp an edited crop into the photo with the inverse alignment and blend it in under ``mask``.

        Args:
            original: (H, W, 3) uint8 RGB, the photo this face was aligned from (same size; not modified).
            edited_crop: (S, S, 3) uint8 RGB in aligned space.
            mask: (S, S) float32 in [0, 1], aligned space; 1 = take the edited crop.

        Returns:
            (H, W, 3) uint8 RGB: ``original·(1−M) + warped·M`` (rounded) where the warped mask M > 0, and exactly
            ``original`` everywhere else.

        Raises:
            ValueError: if shapes, dtypes or the mask range do not match.
        """
        if edited_crop.shape[:2] != (self.size, self.size):
            raise ValueError(
                f"edited_crop must be {self.size}×{self.size} like the aligned crop, got {edited_crop.shape}"
            )
        return paste_back(original, edited_crop, mask, self.affine, self.original_shape)

    def paste_box(self, mask: np.ndarray) -> tuple[slice, slice] | None:
        """The photo's rows and columns that :meth:`paste_back` with this ``mask`` warps (None: none).

        The same window ``paste_back`` computes (:func:`_paste_window`): every pixel it can change lies inside
        (test). Lets the write-back compare only this part of a large photo.

        Args:
            mask: (S, S) float in [0, 1], as given to :meth:`paste_back`.
        """
        (crop_mask,), to_photo = _prefilter_for_downscale((mask.astype(np.float32),), self.affine)
        bounds = _paste_window(crop_mask, to_photo, self.original_shape)
        return None if bounds is None else (slice(bounds[1], bounds[3]), slice(bounds[0], bounds[2]))


def paste_back(
    original: np.ndarray,
    edited_crop: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    original_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Warp ``edited_crop`` and ``mask`` into ``original`` with ``affine`` (aligned → original) and composite.

    Only the crop's footprint in the photo is warped. The crop is resampled bicubically (after an area pre-shrink when
    the face is smaller in the photo than in the crop, to avoid aliasing); the mask bilinearly, with zeros outside the
    crop, so pixels beyond the crop or under a zero mask keep their exact original values.

    Args:
        original: (H, W, 3) uint8 RGB (not modified).
        edited_crop: (S, S, 3) uint8 RGB.
        mask: (S, S) float32/float64 in [0, 1].
        affine: (2, 3) aligned pixel index → original pixel index.
        original_shape: expected (H, W) of ``original``, if known.

    Returns:
        (H, W, 3) uint8 RGB; pixels where the warped mask is 0 are bit-identical to ``original``.

    Raises:
        ValueError: on mismatched shapes, dtypes or mask values outside [0, 1].
    """
    if original.dtype != np.uint8 or original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"original must be (H, W, 3) uint8, got {original.shape} {original.dtype}")
    if original_shape is not None and tuple(original.shape[:2]) != tuple(original_shape):
        raise ValueError(f"original is {original.shape[:2]}, but the face was aligned from {tuple(original_shape)}")
    size = edited_crop.shape[0]
    if edited_crop.dtype != np.uint8 or edited_crop.shape != (size, size, 3):
        raise ValueError(f"edited_crop must be (S, S, 3) uint8, got {edited_crop.shape} {edited_crop.dtype}")
    if mask.shape != (size, size) or not np.issubdtype(mask.dtype, np.floating):
        raise ValueError(f"mask must be ({size}, {size}) float, got {mask.shape} {mask.dtype}")
    if not np.all(np.isfinite(mask)) or mask.min(initial=0.0) < 0.0 or mask.max(initial=0.0) > 1.0:
        raise ValueError("mask values must lie in [0, 1]")

    result = original.copy()
    if not np.any(mask > 0):
        return result
    height, width = original.shape[:2]
    forward = np.asarray(affine, dtype=np.float64)

    (crop, crop_mask), to_photo = _prefilter_for_downscale((edited_crop, mask.astype(np.float32)), forward)
    bounds = _paste_window(crop_mask, to_photo, (height, width))
    if bounds is None:
        return result
    x0, y0, x1, y1 = bounds

    # Source position of every window pixel, from absolute photo coordinates (float64, then float32 for OpenCV): a
    # pixel's value does not depend on where the window starts (cv2.warpAffine's fixed-point row/column split does).
    to_crop = np.linalg.inv(_as_3x3(to_photo))
    grid_x, grid_y = np.arange(x0, x1, dtype=np.float64)[None, :], np.arange(y0, y1, dtype=np.float64)[:, None]
    map_x = (to_crop[0, 0] * grid_x + to_crop[0, 1] * grid_y + to_crop[0, 2]).astype(np.float32)  # broadcast (h, w)
    map_y = (to_crop[1, 0] * grid_x + to_crop[1, 1] * grid_y + to_crop[1, 2]).astype(np.float32)
    warped = cv2.remap(crop, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    warped_mask = cv2.remap(crop_mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    warped_mask = np.clip(warped_mask, 0.0, 1.0)[:, :, None]
    window = result[y0:y1, x0:x1]
    blended = window.astype(np.float32) * (1.0 - warped_mask) + warped * warped_mask  # warped: uint8 values
    blended = np.clip(np.rint(blended), 0, UINT8_MAX).astype(np.uint8)
    np.copyto(window, blended, where=warped_mask > 0)  # untouched pixels keep their exact values
    return result


def _paste_window(
    crop_mask: np.ndarray, to_photo: np.ndarray, photo_shape: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the photo that the warp of ``crop_mask`` by ``to_photo`` can reach, or None.

    The footprint in the photo of the mask's support, grown by the bilinear kernel's reach (:data:`MASK_REACH_PX`) and
    clipped. The warped mask is 0 outside it, and each warped pixel depends only on its own source neighbourhood, so
    warping only this window changes no value (big photos and small neck regions stay cheap).
    """
    box = mask_box(crop_mask > 0)
    if box is None:
        return None
    height, width = photo_shape
    last = crop_mask.shape[0] - 0.5
    left, right = max(box[1].start - MASK_REACH_PX, -0.5), min(box[1].stop - 1 + MASK_REACH_PX, last)
    top, bottom = max(box[0].start - MASK_REACH_PX, -0.5), min(box[0].stop - 1 + MASK_REACH_PX, last)
    corners = np.array([[left, top], [left, bottom], [right, bottom], [right, top]], dtype=np.float64)
    footprint = corners @ to_photo[:, :2].T + to_photo[:, 2]
    x0 = max(math.floor(footprint[:, 0].min()) - 1, 0)
    y0 = max(math.floor(footprint[:, 1].min()) - 1, 0)
    x1 = min(math.ceil(footprint[:, 0].max()) + 2, width)
    y1 = min(math.ceil(footprint[:, 1].max()) + 2, height)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def _prefilter_for_downscale(
    images: tuple[np.ndarray, ...], affine: np.ndarray
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Area-resize (S, S[, C]) crop images first when the photo is coarser than the crop, so the warp does not alias.

    Returns the (possibly smaller) images and the affine from *their* pixel indices to original indices.
    """
    size = images[0].shape[0]
    scale = math.sqrt(abs(np.linalg.det(affine[:, :2])))  # original pixels per aligned pixel
    target = round(size * scale)
    if scale >= 1.0 or target >= size or target < 2:
        return images, affine.copy()
    small = tuple(cv2.resize(image, (target, target), interpolation=cv2.INTER_AREA) for image in images)
    # small index w ↦ crop index u = (w + ½)·size/target − ½ (pixel-centre convention of an area resize)
    ratio = size / target
    small_to_crop = np.array([[ratio, 0.0, 0.5 * ratio - 0.5], [0.0, ratio, 0.5 * ratio - 0.5]])
    return small, (_as_3x3(affine) @ _as_3x3(small_to_crop))[:2]


def align_face(
    image: np.ndarray, face: Face | np.ndarray, size: int = ALIGNED_SIZE, config: FFHQAlignConfig = DEFAULT_ALIGN
) -> AlignedFace:
    """FFHQ-align one face to a ``size``² crop, keeping the exact map back to ``image``.

    Args:
        image: (H, W, 3) uint8 RGB photo (not modified).
        face: a :class:`Face` from :func:`find_faces`, or its (68, 2) landmarks.
        size: output side in pixels (1024 = the FFHQ / StyleGAN2 resolution).
        config: recipe constants.

    Returns:
        AlignedFace with ``.image`` (size, size, 3) uint8 RGB, ``.quad``, ``.affine`` and ``.paste_back``.

    Raises:
        FaceTooSmallError: if the landmarks span less than a pixel per 64 output pixels (nothing to align).
        ValueError: on a malformed image or landmarks.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    landmarks = face.landmarks if isinstance(face, Face) else np.asarray(face, dtype=np.float64)
    quad, qsize = ffhq_quad(landmarks, config)
    if qsize < size / MAX_UPSCALE:
        raise FaceTooSmallError(
            f"The face in this photo is too small to edit (its crop is {qsize:.0f} pixels wide). Please use a closer "
            "or higher-resolution photo of the face."
        )
    height, width = image.shape[:2]
    transform_size = size * config.supersampling

    # Bookkeeping: ``work_to_original`` maps pixel indices of the working image back to the photo.
    work_to_original = np.eye(3)
    work_quad = quad.copy()
    work_qsize = qsize
    working: Image.Image | np.ndarray = image

    # 1. Shrink very large faces (recipe: integer factor, Lanczos resize of the whole photo).
    shrink = math.floor(qsize / size * config.shrink_threshold)
    if shrink > 1:
        shrunk_size = (round(width / shrink), round(height / shrink))
        working = Image.fromarray(image).resize(shrunk_size, Image.Resampling.LANCZOS)
        scale_x, scale_y = width / shrunk_size[0], height / shrunk_size[1]
        # resized index q ↦ source index (q + ½)·scale − ½ (Pillow's pixel-centre convention)
        work_to_original = np.array([[scale_x, 0, 0.5 * scale_x - 0.5], [0, scale_y, 0.5 * scale_y - 0.5], [0, 0, 1]])
        work_quad = work_quad / shrink
        work_qsize = work_qsize / shrink
        working = np.asarray(working)
    work_height, work_width = working.shape[:2]

    # 2. Crop to the quad's bounding box plus a border.
    border = max(round(work_qsize * config.border_fraction), config.min_border)
    left, top = math.floor(work_quad[:, 0].min()), math.floor(work_quad[:, 1].min())
    right, bottom = math.ceil(work_quad[:, 0].max()), math.ceil(work_quad[:, 1].max())
    crop_x0, crop_y0 = max(left - border, 0), max(top - border, 0)
    crop_x1, crop_y1 = min(right + border, work_width), min(bottom + border, work_height)
    cropped = np.asarray(working)[crop_y0:crop_y1, crop_x0:crop_x1]
    work_quad = work_quad - (crop_x0, crop_y0)
    work_to_original = work_to_original @ _translation(crop_x0, crop_y0)

    # 3. Reflect-pad with blur where the quad leaves (or nearly touches) the image.
    crop_height, crop_width = cropped.shape[:2]
    left, top = math.floor(work_quad[:, 0].min()), math.floor(work_quad[:, 1].min())
    right, bottom = math.ceil(work_quad[:, 0].max()), math.ceil(work_quad[:, 1].max())
    pad = (
        max(-left + border, 0),
        max(-top + border, 0),
        max(right - crop_width + border, 0),
        max(bottom - crop_height + border, 0),
    )
    if config.enable_padding and max(pad) > border - config.pad_trigger_margin:
        pad = tuple(max(p, round(work_qsize * config.pad_fraction)) for p in pad)
        cropped = reflect_pad_with_blur(cropped, pad, work_qsize * config.blur_fraction)
        work_quad = work_quad + pad[:2]
        work_to_original = work_to_original @ _translation(-pad[0], -pad[1])

    # 4. Oriented resampling: bilinear QUAD transform at 4× the output size, then Lanczos down to the output size.
    source = Image.fromarray(np.ascontiguousarray(cropped))
    aligned = quad_resample(source, work_quad, transform_size, size)

    affine = (work_to_original @ _as_3x3(quad_to_affine(work_quad, size)))[:2]
    face_record = face if isinstance(face, Face) else None
    return AlignedFace(image=aligned, quad=quad, affine=affine, original_shape=(height, width), face=face_record)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def reflect_pad_with_blur(image: np.ndarray, pad: tuple[int, int, int, int], sigma: float) -> np.ndarray:
    """The recipe's padding: reflect, blur towards the outside, fade to the median colour (METHOD.md §2 "Pad").

    With m the ramp (> 0 only inside the padding), the recipe computes in float32
    ``img += (blur(img) − img)·clip(3m + 1, 0, 1)``, then ``img += (median(img) − img)·clip(m, 0, 1)``, then rounds.
    We do the same in row stripes, so a face that fills a 40 MP photo needs one float copy of the padded image rather
    than several.

    Args:
        image: (h, w, 3) uint8.
        pad: (left, top, right, bottom) pixels, each ≥ 1.
        sigma: Gaussian σ in pixels (0.02·qsize).

    Returns:
        (h + top + bottom, w + left + right, 3) uint8.
    """
    pad_left, pad_top, pad_right, pad_bottom = pad
    padded = np.pad(image, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)), mode="reflect")
    height, width = padded.shape[:2]
    rows = np.arange(height, dtype=np.float32)
    cols = np.arange(width, dtype=np.float32)
    ramp_x = 1.0 - np.minimum(cols / pad_left, (width - 1 - cols) / pad_right)
    ramp_y = 1.0 - np.minimum(rows / pad_top, (height - 1 - rows) / pad_bottom)

    work = padded.astype(np.float32)
    blurred = _StripeGaussianBlur(work, sigma)
    stripes = [(start, min(start + STRIPE_ROWS, height)) for start in range(0, height, STRIPE_ROWS)]
    for start, stop in stripes:
        ramp = np.maximum(ramp_y[start:stop, None], ramp_x[None, :])[:, :, None]
        stripe = work[start:stop]
        delta = blurred.rows(start, stop) - stripe
        delta *= np.clip(ramp * 3.0 + 1.0, 0.0, 1.0)
        stripe += delta
    median = np.array([np.median(work[:, :, channel]) for channel in range(3)], dtype=np.float32)
    for start, stop in stripes:
        ramp = np.maximum(ramp_y[start:stop, None], ramp_x[None, :])[:, :, None]
        stripe = work[start:stop]
        stripe += (median - stripe) * np.clip(ramp, 0.0, 1.0)
        padded[start:stop] = np.clip(np.rint(stripe), 0, UINT8_MAX)
    return padded


class _StripeGaussianBlur:
    """``scipy.ndimage.gaussian_filter(image, [σ, σ, 0])`` (mode "reflect", truncate 4), served in row stripes.

    Same sampled kernel, applied with OpenCV's separable filter (``BORDER_REFLECT`` is scipy's "reflect"). When σ is
    large (big faces), the image is first area-downscaled by an integer factor that keeps σ ≥ ``BLUR_MIN_SIGMA`` px,
    blurred there, and bilinearly upscaled stripe by stripe: a blur that wide has no detail the coarse grid misses
    (≤ 0.1 grey levels from the full-resolution filter on the reference photos; ≤ 1 level after rounding), and the cost
    stops growing with σ³.
    """

    def __init__(self, image: np.ndarray, sigma: float) -> None:
        self._height, self._width = image.shape[:2]
        factor = max(1, int(sigma // BLUR_MIN_SIGMA))
        if factor == 1:
            kernel = _scipy_gaussian_kernel(sigma)
            self._full = cv2.sepFilter2D(image, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
            return
        self._full = None
        small_size = (max(1, round(self._width / factor)), max(1, round(self._height / factor)))
        small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
        kernel = _scipy_gaussian_kernel(sigma * small_size[0] / self._width)
        self._small = cv2.sepFilter2D(small, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
        self._scale = (small_size[0] / self._width, small_size[1] / self._height)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Blurred rows ``start:stop`` as (stop − start, W, 3) float32."""
        if self._full is not None:
            return self._full[start:stop]
        scale_x, scale_y = self._scale
        # Bilinear upscale with the pixel-centre convention of cv2.resize: src = (dst + ½)·scale − ½.
        dst_to_src = np.array(
            [[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, (start + 0.5) * scale_y - 0.5]], dtype=np.float64
        )
        return cv2.warpAffine(
            self._small,
            dst_to_src,
            (self._width, stop - start),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )


def _scipy_gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1-D kernel of ``scipy.ndimage.gaussian_filter`` (radius ⌊4σ + ½⌋, normalised samples of exp(−x²/2σ²))."""
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 / (sigma * sigma) * offsets**2)
    return kernel / kernel.sum()


def quad_resample(
    source: Image.Image, quad: np.ndarray, transform_size: int, size: int, *, bands: int | None = None
) -> np.ndarray:
    """The recipe's oriented resampling: bilinear QUAD transform to ``transform_size``², Lanczos down to ``size``².

    The work is split into horizontal bands, one thread each: a thread QUAD-transforms its band's rows of the
    intermediate plus the Lanczos filter's reach beyond them (the sub-quad of those rows: the quad is a
    parallelogram, so sub-quads are exact up to floating-point rounding), then Lanczos-resizes its own rows (``box``),
    whose filter taps read the same intermediate rows as in one whole resize. The result equals the recipe's single
    call except where a sampling position rounds differently: in the tests at most 1 grey level, on at most a few
    pixels per million.

    Args:
        source: the cropped (and padded) RGB photo.
        quad: (4, 2) float64 quad corners UL, LL, LR, UR in ``source`` pixel indices.
        transform_size: side of the intermediate (recipe: 4 × ``size``).
        size: output side.
        bands: number of bands/threads (default: :data:`RESAMPLE_BANDS`, at most the CPU count; 1 = one call).

    Returns:
        (size, size, 3) uint8 RGB.
    """
    corners = (np.asarray(quad, dtype=np.float64) + 0.5).reshape(4, 2)  # PIL's QUAD takes pixel-edge coordinates
    if bands is None:
        bands = min(RESAMPLE_BANDS, os.cpu_count() or 1)
    if bands <= 1 or transform_size % bands or size % bands:
        big = source.transform(
            (transform_size, transform_size), Image.Transform.QUAD, tuple(corners.ravel()), Image.Resampling.BILINEAR
        )
        return np.asarray(big.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8).copy()
    upper_left, lower_left, lower_right, upper_right = corners
    rows = transform_size // bands
    # Intermediate rows each band needs beyond its own: the reach of Pillow's Lanczos window (3 lobes at the
    # reduction's scale) plus rounding (ours). With them, a band's output rows read the same intermediate rows as
    # in one whole resize, and the threads never wait for each other or copy their parts into one image.
    margin = math.ceil(LANCZOS_LOBES * transform_size / size) + 2

    def band(index: int) -> np.ndarray:
        first, last = index * rows, (index + 1) * rows
        start, stop = max(first - margin, 0), min(last + margin, transform_size)
        top, bottom = start / transform_size, stop / transform_size
        sub_quad = (
            upper_left + (lower_left - upper_left) * top,
            upper_left + (lower_left - upper_left) * bottom,
            upper_right + (lower_right - upper_right) * bottom,
            upper_right + (lower_right - upper_right) * top,
        )
        piece = source.transform(
            (transform_size, stop - start),
            Image.Transform.QUAD,
            tuple(np.concatenate(sub_quad)),
            Image.Resampling.BILINEAR,
        )
        box = (0, first - start, transform_size, last - start)
        return np.asarray(piece.resize((size, size // bands), Image.Resampling.LANCZOS, box=box), dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=bands) as pool:
        return np.concatenate(list(pool.map(band, range(bands))), axis=0)
