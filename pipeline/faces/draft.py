"""Faces found on a JPEG's reduced decode while the full photo decodes: the quick search's head start.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size by scaling its DCT blocks (libjpeg's scaled decoding, Pillow's
``Image.draft``) for about two thirds of a full decode's time (23 vs 33 ms for the 12 MP benchmark photo, measured).
When only the largest face is wanted (:func:`pipeline.faces.upright.find_faces_any_turn` with ``largest_only``), the
quick search's detector can run on such a copy in a second thread while the main thread decodes the full photo, so
decoding and detecting take little more than decoding alone (86 → 61–64 ms at 12 MP on 2 cores, measured, issue 16).

Only the detector's boxes come from the copy: the landmarks are placed on the full, colour-managed photo as always
(:func:`pipeline.faces.landmarks.landmarks_in_boxes`). The copy is not colour-managed (the detector looks at
gradients, not colours) and is made from the DCT-scaled decode instead of an area-resampled full decode. Its boxes are
usually the quick search's on the decoded photo (62 of 63 cases: the seven reference faces at three sizes and three
EXIF orientations on a smooth background), but where two overlapping candidates score within a few per cent dlib can
keep the other one (measured: a box 66 px off in a 2400 × 1800 photo on a noisy background), and
the landmarks, started from that box, then differ too (there by ≈ 10 px at the alignment quad). The result summary
says when this search ran (``faces_search``); the same photo given as pixels (an array, a PIL image) is searched on
a copy of its decoded pixels. Anything unusual — not a JPEG, too small to need a coarse copy, unreadable, an
orientation or size the full decode does not confirm — gives ``None``, and the search runs as before.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
from PIL import Image

from pipeline.faces.decode import DEFAULT_LIMITS, DecodedImage, DecodeLimits, check_dimensions, exif_orientation
from pipeline.faces.landmarks import (
    DEFAULT_DETECTION,
    CoarseDetections,
    DetectionConfig,
    detect_boxes,
    plan_coarse_copy,
)
from pipeline.faces.photo import orient_array, oriented_size

logger = logging.getLogger(__name__)

JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI marker + the first byte of the next marker (JPEG/JFIF/EXIF/MPO files)
DRAFT_FORMATS = ("JPEG", "MPO")  # Pillow formats with scaled DCT decoding (``Image.draft``)


@dataclass(frozen=True)
class DraftPlan:
    """What a JPEG's header says about a quick search on its reduced decode (no pixels decoded yet)."""

    orientation: int  # EXIF orientation the decoder will apply (1 = as stored); the full decode must agree
    full_size: tuple[int, int]  # (width, height) of the upright photo
    working_size: tuple[int, int]  # (width, height) of the quick search's coarse copy of it
    upsample_times: int  # dlib upsampling for that copy (0: it is a reduction)


def plan_draft(
    source: object, config: DetectionConfig = DEFAULT_DETECTION, limits: DecodeLimits = DEFAULT_LIMITS
) -> DraftPlan | None:
    """Read a JPEG's header and plan the quick search on its reduced decode.

    Call it in the thread that decodes (it reads the EXIF orientation under ``warnings.catch_warnings``, which is not
    thread-safe in Python 3.11); :func:`detect_on_draft` then needs no process-wide state.

    Args:
        source: a file path (str or Path) or the file's bytes; anything else gives None.
        config: ``coarse_pixel_budget`` (the copy's size).
        limits: the decode's limits (a photo the decode will refuse is not drafted).

    Returns:
        The plan, or None when the photo is not a JPEG larger than the coarse budget, cannot be read, or breaks a
        limit. Never raises for a bad photo: the full decode reports those.
    """
    try:
        with _open_jpeg(source) as image:
            if image is None or image.format not in DRAFT_FORMATS:
                return None
            check_dimensions(image.width, image.height, limits)
            orientation = exif_orientation(image)
            full_size = oriented_size(image.size, orientation)
    except Exception as err:  # the full decode gives the user-facing message for a bad file
        logger.debug("no draft plan: %s", type(err).__name__)
        return None
    plan = plan_coarse_copy(*full_size, config)
    if plan is None:
        return None  # no coarse copy needed: the search runs on the photo itself
    return DraftPlan(orientation, full_size, plan.working_size, plan.upsample_times)


def detect_on_draft(
    source: object, plan: DraftPlan, config: DetectionConfig = DEFAULT_DETECTION
) -> CoarseDetections | None:
    """Run the quick search's detector on a reduced decode of a JPEG, as ``plan`` says.

    Safe in a worker thread: it touches no process-wide state (dlib's detector runs under its own lock).

    Returns:
        The boxes in the upright photo's pixel edges (possibly none), or None if the file cannot be read.
    """
    try:
        with _open_jpeg(source) as image:
            if image is None:
                return None
            scale = plan.working_size[0] / plan.full_size[0]
            image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
            pixels = np.asarray(image.convert("RGB"))
        upright = orient_array(pixels, plan.orientation)
        working = cv2.resize(upright, plan.working_size, interpolation=cv2.INTER_AREA)
        return detect_boxes(working, plan.full_size, plan.upsample_times, config)
    except Exception as err:  # the full decode gives the user-facing message for a bad file
        logger.debug("no draft detection: %s", type(err).__name__)
        return None


@contextmanager
def _open_jpeg(source: object) -> Iterator[Image.Image | None]:
    """Pillow's lazy open of a JPEG path or bytes (header only); None for anything else or another format."""
    if isinstance(source, bytes | bytearray | memoryview):
        head, opened = bytes(source[: len(JPEG_SIGNATURE)]), io.BytesIO(source)
    elif isinstance(source, str | Path):
        with Path(source).open("rb") as handle:
            head = handle.read(len(JPEG_SIGNATURE))
        opened = Path(source)
    else:
        yield None
        return
    if head != JPEG_SIGNATURE:
        yield None
        return
    with Image.open(opened) as image:
        yield image


class DraftSearch:
    """Runs :func:`detect_on_draft` in a worker thread for the duration of a ``with`` block (the full decode).

    ``with DraftSearch(photo) as draft: decoded = decode_upload(photo)`` then ``draft.detections_for(decoded)``. The
    header is read (:func:`plan_draft`) when the block is entered, in the caller's thread; the block's exit waits for
    the worker (a reduced decode and one detector pass, ≈ 55 ms at 12 MP), so no thread outlives it, also when the
    decode raises.
    """

    def __init__(self, source: object, config: DetectionConfig = DEFAULT_DETECTION, *, enabled: bool = True) -> None:
        self._source = source if enabled else None
        self._config = config
        self._plan: DraftPlan | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[CoarseDetections | None] | None = None

    def __enter__(self) -> DraftSearch:
        self._plan = plan_draft(self._source, self._config) if self._source is not None else None
        if self._plan is not None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="draft-search")
            self._future = self._pool.submit(detect_on_draft, self._source, self._plan, self._config)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def detections_for(self, decoded: DecodedImage) -> CoarseDetections | None:
        """The draft's boxes if they describe ``decoded`` (the orientation and size it planned for), else None."""
        if self._plan is None or self._future is None or self._plan.orientation != decoded.exif_orientation:
            return None
        height, width = decoded.image.shape[:2]
        return self._future.result() if self._plan.full_size == (width, height) else None
