"""Refinement B, "warp": pull the edited jaw line back toward the original one with a piecewise-affine warp.

Matches the behaviour of ``warp_img`` in the Coarse-to-Fine official code (oneThousand1000/Facial-Structure-Editing-
of-Portrait-Images-via-Latent-Space-Classifications, ``main_warp.py`` + ``warp/warpper.py`` + ``warp/utils.py``;
METHOD.md §8), written from the description there:

1. On the parser's 512² grid (where the official code ran FAN), band rows ``[int(max(y0, y16)), int(min(y7, y10)))`` of
   the original's 68 landmarks (the 7/10 asymmetry is the official code's and is kept) and the chin row
   ``int(y8)``. The band is up-sampled bilinearly to the image size and only fully covered rows are kept (rows
   ``2a+1 … 2b−2`` at 1024²); the chin row is scaled as ``int(int(y8)·H/512)`` (``2·int(y8)`` at 1024²).
2. Face masks (parser classes 1–6, 10–13) of the original (F1) and of the edited render (F2), built at 512² and
   up-sampled bilinearly then ``!= 0`` (:func:`face_and_neck_masks`), limited to the band; neck masks (class 14) with
   the rows above the chin row cleared (N1, N2).
3. On ``rows`` rows spread over the rows both masks of a pair cover (``linspace(top, bottom, rows + 1)[:-1]``), the
   leftmost and rightmost mask pixel: jaw sides ``p1`` (original), ``p2`` (edited); neck sides of the edited render.
4. Exaggerate ``p2' = p1 + 1.2·(p2 − p1)``, truncated to whole pixels (the official ``uint32`` cast); the neck sides
   are fixed anchors; 27 fixed seed points (official order) hold the border and a coarse interior grid.
5. Delaunay triangulation of seeds + P1; destination ``P = int(0.5·P1 + 0.5·P2')``; every triangle of the edited
   render at P2' is mapped affinely onto its triangle at P. Net effect: edited content at ``p1 + 1.2Δ`` lands at
   ``p1 + 0.6Δ``.

Deliberate differences from the official code (measured in docs/fidelity.md), all toward robustness or exactness:

* the piecewise-affine map is sampled once per output pixel (each pixel takes the inverse affine of the destination
  triangle that contains it, then one bilinear ``cv2.remap`` with ``BORDER_REFLECT_101``) instead of one
  ``cv2.warpAffine`` per triangle pasted with anti-aliased triangle masks; the mapping is the same, but there are no
  seams where neighbouring triangle masks overlap and no reflection at each triangle's crop border, and triangles
  that do not move are copied bit-exactly (measured: with identical control points, 19–365 px of a 1024² render
  differ from the official paste, by at most 13 grey levels, all on triangle edges);
* exaggerated points are clipped to the image before truncation (the official ``uint32`` cast wraps negatives);
* empty masks, a band or neck overlap of fewer than ``rows + 1`` rows, a split mask or a failed triangulation do not
  crash (the official code raises on all but the short overlap, which it samples with repeated rows): the unwarped
  edited render is returned with ``warped=False`` and the reason.

Only the warp's own constants live in :class:`WarpSettings`; the warp method's feathering (15/25, see
:data:`pipeline.refinement.compositing.FEATHER_WARP`) and style-mixing layers (6–17) belong to the pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.spatial import Delaunay, QhullError

from pipeline.boxes import mask_box
from pipeline.config import PARSER_INPUT_SIZE
from pipeline.networks.parsing import FACE_LABELS, NECK
from pipeline.refinement.neck_mask import check_landmarks, labels_on_grid, rescale_landmarks, resize_binary_mask

__all__ = ["WarpResult", "WarpSettings", "face_and_neck_masks", "jaw_band_rows", "seed_points", "warp_edited_jaw"]

logger = logging.getLogger(__name__)

BAND_TOP_POINTS = (0, 16)  # jaw ends: the band starts at the lower of the two (max y)
BAND_BOTTOM_POINTS = (7, 10)  # near the chin: the band ends at the higher of the two (min y); asymmetric as official
CHIN_POINT = 8  # neck rows start at the chin
SEED_GRID = 8  # the seed points sit on multiples of 1/8 of the image size
_FULL = 255  # the official band mask value; after bilinear up-sampling only fully covered rows keep it
_MIN_TRIANGLE_AREA = 1e-6  # px²: destination triangles smaller than this are skipped (no affine defined)
_POINT_SHIFT = 8  # fractional bits used to rasterise triangles with OpenCV (1/256 px)


@dataclass(frozen=True)
class WarpSettings:
    """Constants of the jaw warp (main_warp.py / warp/utils.py)."""

    rows: int = 5  # sampled rows per contour: get_point(..., n=5)
    exaggeration: float = 1.2  # p2' = p1 + 1.2·(p2 − p1): the edited jaw sides are pushed 20% further
    destination_weight: float = 0.5  # P = (1 − 0.5)·P1 + 0.5·P2', the official morph alpha
    work_size: int = PARSER_INPUT_SIZE  # grid of the landmark rows: the official FAN ran on the photo resized to 512²

    def __post_init__(self) -> None:
        for name in ("rows", "work_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not np.isfinite(self.exaggeration) or not np.isfinite(self.destination_weight):
            raise ValueError("exaggeration and destination_weight must be finite numbers")


def _empty_points() -> np.ndarray:
    return np.zeros((0, 2), np.float64)


@dataclass(frozen=True)
class WarpResult:
    """Output of :func:`warp_edited_jaw`, with the control points for debugging overlays."""

    image: np.ndarray  # (H, W, 3) uint8 RGB: the warped edited render (the unwarped copy when warped is False)
    warped: bool  # False when the warp was skipped (see reason)
    reason: str | None = None  # why the warp was skipped; None when it ran
    original_points: np.ndarray = field(default_factory=_empty_points)  # (K, 2) float64 x, y: seeds + P1
    source_points: np.ndarray = field(default_factory=_empty_points)  # (K, 2): seeds + P2' (in the edited render)
    target_points: np.ndarray = field(default_factory=_empty_points)  # (K, 2): seeds + P (where they land)
    triangles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # (T, 3) point indices


# --- Inputs ---------------------------------------------------------------------------------------------------------


def face_and_neck_masks(
    labels: np.ndarray, output_size: int | None = None, *, work_size: int = PARSER_INPUT_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """The warp's face and neck masks from a parser label map (official ``get_face_mask``).

    The masks are built on the parser's ``work_size``² grid (512²), then up-sampled bilinearly as 0/255 images and
    tested ``!= 0``, as the official code does before ``get_point``: at 1024² each parser pixel covers a 4×4 block
    (its own 2×2 block plus a one-pixel fringe).

    Args:
        labels: (S, S) uint8 class ids of the BiSeNet 19-class parser, at 512² or at any size it was resized to with
            nearest-neighbour sampling (:func:`pipeline.networks.parsing.parse_labels`); put on the work grid with
            :func:`pipeline.refinement.neck_mask.labels_on_grid`.
        output_size: side of the returned masks (the image size); defaults to ``S``.
        work_size: side of the parser grid (official 512).

    Returns:
        ``(face, neck)``, each (output_size, output_size) bool: face = classes 1–6 and 10–13, neck = class 14.

    Raises:
        ValueError: if ``labels`` is not a square uint8 label map or ``output_size`` is not a positive integer.
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.shape[0] != labels.shape[1]:
        got = labels.shape if isinstance(labels, np.ndarray) else type(labels)
        raise ValueError(f"labels must be a square (S, S) uint8 label map, got {got}")
    if labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 class ids, got dtype {labels.dtype}")
    size = labels.shape[0] if output_size is None else output_size
    work_labels = labels_on_grid(labels, work_size)
    face = resize_binary_mask(np.isin(work_labels, FACE_LABELS), size)
    neck = resize_binary_mask(work_labels == NECK, size)
    return face, neck


def _check_inputs(edited: np.ndarray, masks: dict[str, np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    if not isinstance(edited, np.ndarray) or edited.dtype != np.uint8 or edited.ndim != 3 or edited.shape[2] != 3:
        got = f"{edited.dtype} array of shape {edited.shape}" if isinstance(edited, np.ndarray) else type(edited)
        raise ValueError(f"edited must be an (H, W, 3) uint8 RGB image, got {got}")
    for name, mask in masks.items():
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != edited.shape[:2]:
            got = f"{mask.dtype} array of shape {mask.shape}" if isinstance(mask, np.ndarray) else type(mask)
            raise ValueError(f"{name} must be an {edited.shape[:2]} bool mask (the image size), got {got}")
    return check_landmarks(landmarks)


# --- Control points -------------------------------------------------------------------------------------------------


def seed_points(height: int, width: int) -> np.ndarray:
    """The 27 fixed points that pin the border and a coarse interior grid (``get_tris`` in warp/utils.py).

    In the official order, so that ties in the triangulation (co-circular grid cells) break the same way: the border
    clockwise from the
    top-left corner (corners and edge midpoints, the far border at ``W − 1`` / ``H − 1``), ``(W/2, H/4)``, then for
    ``x = W/8·{1, 2, 6, 7}`` the pair ``(x, H/8)``, ``(x, 7H/8)``, then for ``y = H/8·{2, …, 6}`` the pair
    ``(W/8, y)``, ``(7W/8, y)``. Truncated to whole pixels as the official ``uint32`` cast (exact when the size is a
    multiple of 8, e.g. 1024²).

    Returns:
        (27, 2) float64 (x, y), whole numbers.
    """
    right, bottom = width - 1, height - 1
    mid_x, mid_y = width // 2, height // 2
    step_x, step_y = width / SEED_GRID, height / SEED_GRID
    top_edge = [(0, 0), (mid_x, 0), (right, 0), (right, mid_y)]  # clockwise from the top-left corner
    bottom_edge = [(right, bottom), (mid_x, bottom), (0, bottom), (0, mid_y)]
    centre = [(width / 2, height / 4)]
    rows = [(step_x * i, step_y * j) for i in (1, 2, SEED_GRID - 2, SEED_GRID - 1) for j in (1, SEED_GRID - 1)]
    columns = [(step_x * i, step_y * j) for j in range(2, SEED_GRID - 1) for i in (1, SEED_GRID - 1)]
    return np.floor(np.array(top_edge + bottom_edge + centre + rows + columns, dtype=np.float64))


def _row_extent(mask: np.ndarray) -> tuple[int, int] | None:
    """First and last row holding a set pixel, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    return (int(rows[0]), int(rows[-1])) if rows.size else None


def _side_points(mask: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Leftmost and rightmost set pixel of ``mask`` on each of ``rows``: two (R, 2) float64 arrays, or None."""
    lefts, rights = [], []
    for row in rows:
        columns = np.flatnonzero(mask[row])
        if columns.size == 0:
            return None
        lefts.append((columns[0], row))
        rights.append((columns[-1], row))
    return np.array(lefts, np.float64), np.array(rights, np.float64)


def _paired_sides(mask_a: np.ndarray, mask_b: np.ndarray, count: int, what: str):
    """Official ``get_point``: side points of two masks on ``count`` shared rows; (sides, None) or (None, reason)."""
    extent_a, extent_b = _row_extent(mask_a), _row_extent(mask_b)
    if extent_a is None or extent_b is None:
        return None, f"the {what} mask of the {'original' if extent_a is None else 'edited'} image is empty"
    top, bottom = max(extent_a[0], extent_b[0]), min(extent_a[1], extent_b[1])
    if bottom - top < count:
        return None, f"the {what} masks share only {max(0, bottom - top + 1)} rows, fewer than {count + 1}"
    rows = np.linspace(top, bottom, count + 1)[:-1].astype(np.int64)  # (count,) as the official, last row dropped
    sides_a, sides_b = _side_points(mask_a, rows), _side_points(mask_b, rows)
    if sides_a is None or sides_b is None:
        return None, f"a sampled row of the {what} masks is empty (mask split in pieces)"
    return (sides_a, sides_b), None


def _band_masks(face: np.ndarray, neck: np.ndarray, band: np.ndarray, chin_row: int):
    """Face mask limited to the (H,) bool band rows and neck mask with the rows above ``chin_row`` cleared."""
    face_band = face & band[:, None]
    neck_below_chin = neck.copy()
    neck_below_chin[: max(0, chin_row)] = False
    return face_band, neck_below_chin


def jaw_band_rows(landmarks: np.ndarray, height: int, work_size: int = PARSER_INPUT_SIZE) -> tuple[np.ndarray, int]:
    """The rows the jaw sides are sampled in, and the first neck row (official ``get_warpping_mask``).

    On the ``work_size``² grid (landmarks mapped with :func:`pipeline.refinement.neck_mask.rescale_landmarks`) the
    band is rows ``a = int(max(y0, y16))`` up to, not including, ``b = int(min(y7, y10))``, drawn as 255 on a 0
    background; it is up-sampled to ``height`` rows bilinearly and a row is in the band when it is exactly 255 (the
    official ``mask // 255``), i.e. when both source rows it interpolates are in. At 1024² from 512² that is rows
    ``2a+1 … 2b−2`` (from row 0 when ``a = 0``, to the last row when ``b ≥ 512``). The chin row ``int(y8)`` is scaled
    as ``int(int(y8)·height/work_size)``: ``2·int(y8)`` at 1024².

    Args:
        landmarks: (68, 2) float (x, y) landmarks of the original photo in the ``height``² pixel frame.
        height: side of the image in pixels.
        work_size: side of the grid the official code found the landmarks on (512).

    Returns:
        ``(band, chin_row)``: (height,) bool rows of the jaw band, and the first row the neck masks keep (rows above
        it are cleared; may lie outside ``[0, height)``).

    Raises:
        ValueError: on malformed landmarks or a non-positive size.
    """
    points = check_landmarks(landmarks)
    for name, value in (("height", height), ("work_size", work_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    work_points = rescale_landmarks(points, height, work_size)
    top = int(max(work_points[i, 1] for i in BAND_TOP_POINTS))
    bottom = int(min(work_points[i, 1] for i in BAND_BOTTOM_POINTS))
    band = np.zeros((work_size, 1), np.uint8)  # one column is enough: the up-sampling is separable
    band[max(top, 0) : max(bottom, 0)] = _FULL
    band_rows = cv2.resize(band, (1, height), interpolation=cv2.INTER_LINEAR)[:, 0] == _FULL  # (height,)
    chin_row = int(int(work_points[CHIN_POINT, 1]) / work_size * height)
    return band_rows, chin_row


def _control_points(points: np.ndarray, masks: dict[str, np.ndarray], settings: WarpSettings):
    """Original and edited side points P1, P2 (each (4·rows, 2) float64 whole pixels), or (None, None, reason)."""
    height = masks["original_face"].shape[0]
    band, chin_row = jaw_band_rows(points, height, settings.work_size)
    if not band.any():
        return None, None, "the jaw band is empty: landmarks 0/16 lie below 7/10"
    face1, neck1 = _band_masks(masks["original_face"], masks["original_neck"], band, chin_row)
    face2, neck2 = _band_masks(masks["edited_face"], masks["edited_neck"], band, chin_row)
    face_sides, reason = _paired_sides(face1, face2, settings.rows, "face (jaw band)")
    if face_sides is None:
        return None, None, reason
    neck_sides, reason = _paired_sides(neck1, neck2, settings.rows, "neck (below chin)")
    if neck_sides is None:
        return None, None, reason
    (face1_left, face1_right), (face2_left, face2_right) = face_sides
    _, (neck2_left, neck2_right) = neck_sides  # only the edited neck sides are used, as fixed anchors
    # Left points bottom-up, right points top-down: one loop around the lower face (official order).
    original = np.vstack([face1_left[::-1], neck2_left[::-1], neck2_right, face1_right])
    edited = np.vstack([face2_left[::-1], neck2_left[::-1], neck2_right, face2_right])
    return original, edited, None


# --- The piecewise-affine warp ---------------------------------------------------------------------------------------


def _inverse_affines(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per triangle, the (3, 2) matrix A with ``[x, y, 1] @ A`` = source point of target pixel (x, y)."""
    target_h = np.concatenate([target, np.ones((*target.shape[:2], 1))], axis=2)  # (T, 3, 3) homogeneous vertices
    return np.linalg.solve(target_h, source)  # (T, 3, 2)


def _triangle_owner(target: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32: 1 + index of the target triangle covering each pixel (0 where none does)."""
    owner = np.zeros(shape, np.int32)
    fixed_point = np.rint(target * (1 << _POINT_SHIFT)).astype(np.int32)  # (T, 3, 2) sub-pixel vertices
    for index, triangle in enumerate(fixed_point):
        cv2.fillConvexPoly(owner, triangle, index + 1, lineType=cv2.LINE_8, shift=_POINT_SHIFT)
    return owner


def _piecewise_affine(image: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Warp ``image`` so that each triangle ``source[t]`` (T, 3, 2) lands on ``target[t]``; still ones are copied."""
    result = image.copy()
    edge1, edge2 = target[:, 1] - target[:, 0], target[:, 2] - target[:, 0]  # (T, 2) each
    area = np.abs(edge1[:, 0] * edge2[:, 1] - edge1[:, 1] * edge2[:, 0]) / 2  # (T,)
    moving = np.any(source != target, axis=(1, 2)) & (area > _MIN_TRIANGLE_AREA)  # (T,)
    if not moving.any():
        return result
    owner = _triangle_owner(target[moving], image.shape[:2])
    box = mask_box(owner)  # bounding box of the moving triangles
    if box is None:  # they cover no pixel centre
        return result
    owner = owner[box]
    inside = owner > 0
    # Per pixel of the box, its triangle's inverse affine (row 0: identity, for pixels outside every triangle), taken
    # coefficient by coefficient; each source position is x·a00 + y·a10 + a20 in float64, as for a single point.
    table = np.concatenate([[[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]], _inverse_affines(source[moving], target[moving])])
    grid_x = np.arange(box[1].start, box[1].stop, dtype=np.float64)[None, :]
    grid_y = np.arange(box[0].start, box[0].stop, dtype=np.float64)[:, None]
    map_x = (grid_x * table[:, 0, 0][owner] + grid_y * table[:, 1, 0][owner] + table[:, 2, 0][owner]).astype(
        np.float32
    )
    map_y = (grid_x * table[:, 0, 1][owner] + grid_y * table[:, 1, 1][owner] + table[:, 2, 1][owner]).astype(
        np.float32
    )
    resampled = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    result[box] = np.where(inside[:, :, None], resampled, result[box])
    return result


def warp_edited_jaw(
    edited: np.ndarray,
    *,
    original_face: np.ndarray,
    original_neck: np.ndarray,
    edited_face: np.ndarray,
    edited_neck: np.ndarray,
    landmarks: np.ndarray,
    settings: WarpSettings = WarpSettings(),
) -> WarpResult:
    """Warp the edited render so that its jaw sides move ``destination_weight`` of the way back to the original's.

    The original photo itself is not needed: the official code used it only to compute the masks and landmarks,
    which are passed in (see :func:`face_and_neck_masks`).

    Args:
        edited: (H, W, 3) uint8 RGB, the render of the edited code (not modified).
        original_face: (H, W) bool face mask of the original photo (parser classes 1–6, 10–13).
        original_neck: (H, W) bool neck mask (class 14) of the original photo.
        edited_face: (H, W) bool face mask of the edited render.
        edited_neck: (H, W) bool neck mask of the edited render.
        landmarks: (68, 2) float (x, y) landmarks of the original photo in the same pixel frame; the band and chin
            rows are taken on the ``settings.work_size``² grid (see :func:`jaw_band_rows`).
        settings: the warp constants.

    Returns:
        A :class:`WarpResult`. When a contour cannot be found (empty masks, a degenerate band, a failed
        triangulation), ``image`` is a copy of ``edited``, ``warped`` is False and ``reason`` says why.

    Raises:
        ValueError: on malformed images, masks or landmarks (programming errors, not photo content).
    """
    masks = {
        "original_face": original_face,
        "original_neck": original_neck,
        "edited_face": edited_face,
        "edited_neck": edited_neck,
    }
    points = _check_inputs(edited, masks, landmarks)
    height, width = edited.shape[:2]
    # 1-3. Jaw and neck side points of both images.
    original, exaggerated, reason = _control_points(points, masks, settings)
    if reason is not None:
        logger.info("jaw warp skipped: %s", reason)
        return WarpResult(image=edited.copy(), warped=False, reason=reason)
    # 4. Exaggerate the edited jaw sides (the neck anchors have p2 == p1, so they stay put), clip to the image and
    #    truncate to whole pixels as the official uint32 cast; the destination is truncated the same way.
    limits = np.array([width - 1.0, height - 1.0])
    exaggerated = np.floor(np.clip(original + (exaggerated - original) * settings.exaggeration, 0.0, limits))
    seeds = seed_points(height, width)
    original_all = np.vstack([seeds, original])  # (27 + 4·rows, 2)
    source_all = np.vstack([seeds, exaggerated])
    weight = settings.destination_weight
    target_all = np.floor(np.clip((1 - weight) * original_all + weight * source_all, 0.0, limits))
    # 5. Triangulate at the original positions; map each triangle from the edited render (P2') to P.
    try:
        triangles = Delaunay(original_all).simplices  # (T, 3)
    except QhullError as error:
        reason = f"the control points could not be triangulated ({error.__class__.__name__})"
        logger.info("jaw warp skipped: %s", reason)
        return WarpResult(image=edited.copy(), warped=False, reason=reason)
    warped = _piecewise_affine(edited, source_all[triangles], target_all[triangles])
    return WarpResult(
        image=warped,
        warped=True,
        original_points=original_all,
        source_points=source_all,
        target_points=target_all,
        triangles=triangles,
    )
