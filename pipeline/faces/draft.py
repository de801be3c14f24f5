"""Faces found on a JPEG's reduced decode while the full photo decodes: the quick search's head start.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size by scaling its DCT blocks (libjpeg's scaled decoding, Pillow's
``Image.draft``) for about two thirds of a full decode's time (23 vs 33 ms for the 12 MP benchmark photo, measured).
When only the largest face is wanted (:func:`pipeline.faces.upright.find_faces_any_turn` with ``largest_only``), the
quick search's detector can run on such a copy in a second thread while the main thread decodes the full photo, so
decoding and detecting take little more than decoding alone (86 → 59 ms at 12 MP on 2 cores, measured, issue 16).

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

import dataclasses
import io
import logging
import math
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
from PIL import Image

from pipeline.faces.decode import DEFAULT_LIMITS, DecodedImage, DecodeLimits, check_dimensions, exif_orientation
from pipeline.faces.landmarks import DEFAULT_DETECTION, CoarseDetections, DetectionConfig, detect_boxes, plan_detection
from pipeline.faces.photo import orient_array

logger = logging.getLogger(__name__)

JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI marker + the first byte of the next marker (JPEG/JFIF/EXIF/MPO files)
DRAFT_FORMATS = ("JPEG", "MPO")  # Pillow formats with scaled DCT decoding (``Image.draft``)
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height (EXIF 2.32, tag 0x0112)


@dataclass(frozen=True, eq=False)
class DraftDetections:
    """The detector's boxes on a JPEG's reduced decode, for the upright photo."""

    detections: CoarseDetections  # boxes in the pixel edges of the upright full-size photo
    orientation: int  # EXIF orientation applied to the copy (1 = as stored); the full decode must agree


def detect_on_draft(
    source: object, config: DetectionConfig = DEFAULT_DETECTION, limits: DecodeLimits = DEFAULT_LIMITS
) -> DraftDetections | None:
    """Run the quick search's detector on a reduced decode of a JPEG.

    Args:
        source: a file path (str or Path) or the file's bytes; anything else gives None.
        config: ``coarse_pixel_budget`` (the copy's size) and the score threshold.
        limits: the decode's size limits (a photo the decode will refuse is not drafted).

    Returns:
        DraftDetections (possibly with no boxes), or None when the photo is not a JPEG larger than the coarse budget,
        cannot be read, or breaks a limit. Never raises for a bad photo: the full decode reports those.
    """
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            head, opened = bytes(source[: len(JPEG_SIGNATURE)]), io.BytesIO(source)
        elif isinstance(source, str | Path):
            with Path(source).open("rb") as handle:
                head = handle.read(len(JPEG_SIGNATURE))
            opened = Path(source)
        else:
            return None
        if head != JPEG_SIGNATURE:
            return None
        with Image.open(opened) as image:
            return _detect_on_open_draft(image, config, limits)
    except Exception as err:  # the full decode gives the user-facing message for a bad file
        logger.debug("no draft detection: %s", type(err).__name__)
        return None


def _detect_on_open_draft(image: Image.Image, config: DetectionConfig, limits: DecodeLimits) -> DraftDetections | None:
    if image.format not in DRAFT_FORMATS:
        return None
    check_dimensions(image.width, image.height, limits)
    orientation = exif_orientation(image)
    width, height = (image.height, image.width) if orientation in TRANSPOSED_ORIENTATIONS else image.size
    if width * height <= config.coarse_pixel_budget:
        return None  # no coarse copy needed: the search runs on the photo itself
    plan = plan_detection(width, height, dataclasses.replace(config, pixel_budget=config.coarse_pixel_budget))
    scale = plan.working_size[0] / width
    image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        pixels = np.asarray(image.convert("RGB"))
    upright = orient_array(pixels, orientation)
    working = cv2.resize(upright, plan.working_size, interpolation=cv2.INTER_AREA)
    return DraftDetections(detect_boxes(working, (width, height), plan.upsample_times, config), orientation)


class DraftSearch:
    """Runs :func:`detect_on_draft` in a worker thread for the duration of a ``with`` block (the full decode).

    ``with DraftSearch(photo) as draft: decoded = decode_upload(photo)`` then ``draft.detections_for(decoded)``. The
    block's exit waits for the worker (a reduced decode and one detector pass, ≈ 55 ms at 12 MP), so no thread
    outlives it, also when the decode raises.
    """

    def __init__(self, source: object, config: DetectionConfig = DEFAULT_DETECTION, *, enabled: bool = True) -> None:
        self._source = source if enabled else None
        self._config = config
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[DraftDetections | None] | None = None

    def __enter__(self) -> DraftSearch:
        if isinstance(self._source, str | Path | bytes | bytearray | memoryview):
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="draft-search")
            self._future = self._pool.submit(detect_on_draft, self._source, self._config)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def detections_for(self, decoded: DecodedImage) -> CoarseDetections | None:
        """The draft's boxes if they describe ``decoded`` (same orientation and size), else None."""
        found = self._future.result() if self._future is not None else None
        if found is None or found.orientation != decoded.exif_orientation:
            return None
        height, width = decoded.image.shape[:2]
        return found.detections if found.detections.full_size == (width, height) else None
