"""Face search that also tries the photo turned by a quarter or half turn.

Photos whose EXIF orientation tag was stripped (messengers, editors, screenshots) arrive sideways or upside down, and
the frontal face detector finds no face in them. :func:`find_faces_any_turn` runs the ordinary upright search first
(so it costs nothing when that finds a confident face) and only then tries the photo turned 90° clockwise, 90°
counter-clockwise (270° clockwise) and 180°, in that order (sideways photos are far more common than upside-down ones;
ours). dlib's HOG detector sometimes "finds" an upside-down face with a score near its threshold, so an upright
search whose best score is below ``CONFIDENT_SCORE`` also tries the turns and keeps the frame with the best score. The
edit
then runs in the turned frame and :meth:`FaceSearch.unturn` turns the result back; ``np.rot90`` moves pixels without
resampling, so the photo outside the edit stays bit-exact.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import dlib
import numpy as np

from pipeline.errors import FaceTooSmallError, NoFaceError
from pipeline.faces.align import DEFAULT_SEARCH, Face, FaceSearchConfig, editable_faces, find_faces
from pipeline.faces.landmarks import CoarseDetections, landmarks_in_boxes, plan_coarse_copy

logger = logging.getLogger(__name__)

# Clockwise turns tried after the upright search, in degrees (issue 11; order: ours, see the module docstring).
RETRY_TURNS_DEGREES = (90, 270, 180)
QUARTER_TURN_DEGREES = 90
FULL_TURN_QUARTERS = 4
# A detection at least this confident ends the search. dlib SVM scores (threshold 0) measured on the reference photos
# at 300–700 px faces: upright 1.96–2.21, the same photos upside down 0.001–0.036 when anything is found (ours).
CONFIDENT_SCORE = 0.5


@dataclass(frozen=True)
class FaceSearch:
    """The faces found and the frame they were found in.

    Attributes:
        faces: faces in the turned frame, largest first (see :func:`pipeline.faces.align.find_faces`).
        turn_degrees: clockwise turn applied to the photo before the faces were found: 0, 90, 180 or 270.
    """

    faces: list[Face]
    turn_degrees: int = 0
    # False when a quick search for the largest face ended early (``largest_only``): faces too small to be seen on its
    # coarse copy were not looked for, so ``faces`` may miss small ones.
    exhaustive: bool = True
    # True when that quick search's boxes came from a JPEG's reduced decode (pipeline.faces.draft), not from a copy of
    # the decoded photo: the landmarks can then differ a little from those of the same photo given as pixels.
    on_draft: bool = False

    @property
    def description(self) -> str:
        """Which search found the faces, in words (the result summary's ``faces_search``)."""
        if self.exhaustive:
            return "every face"
        where = ", on the JPEG's reduced decode" if self.on_draft else ""
        return f"large faces (quick search for the largest{where})"

    @property
    def note(self) -> str | None:
        """The user-facing remark for a turned photo (None when upright)."""
        if self.turn_degrees == 0:
            return None
        return (
            f"No face was found upright; the face was found after turning the photo {self.turn_degrees}° clockwise. "
            "It was edited in that position and turned back, so the result keeps the photo's orientation."
        )

    def turn(self, image: np.ndarray) -> np.ndarray:
        """(H, W, …) photo → the frame the faces are in (a view when upright)."""
        return turn_clockwise(image, self.turn_degrees)

    def unturn(self, image: np.ndarray) -> np.ndarray:
        """An image in the faces' frame → the photo's own orientation."""
        return turn_clockwise(image, -self.turn_degrees)


def turn_clockwise(image: np.ndarray, degrees: int) -> np.ndarray:
    """Turn an (H, W, …) array by a multiple of 90° clockwise (negative: counter-clockwise); exact, no resampling.

    Raises:
        ValueError: ``degrees`` is not a multiple of 90.
    """
    if degrees % QUARTER_TURN_DEGREES:
        raise ValueError(f"only quarter turns are supported, got {degrees}°")
    quarters = (degrees // QUARTER_TURN_DEGREES) % FULL_TURN_QUARTERS
    if quarters == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-quarters, axes=(0, 1)))


def find_faces_any_turn(
    image: np.ndarray,
    config: FaceSearchConfig = DEFAULT_SEARCH,
    predictor: dlib.shape_predictor | None = None,
    *,
    largest_only: bool = False,
    coarse: CoarseDetections | None = None,
) -> FaceSearch:
    """:func:`pipeline.faces.align.find_faces` upright, then on the photo turned by ``RETRY_TURNS_DEGREES``.

    Args:
        image: (H, W, 3) uint8 RGB photo (the model view), upright as shown to the user.
        config: minimum face size and detector settings.
        predictor: the 68-point model (``Models.landmarks``); None loads the default (see ``find_faces``).
        largest_only: only the largest face will be used: a photo above ``config.detection.coarse_pixel_budget``
            pixels is first searched upright on a copy of that size, and a confident face there ends the search
            (``exhaustive=False``); otherwise the full search below runs.
        coarse: with ``largest_only``, the coarse copy's detections when they were found already (a JPEG's reduced
            decode, :class:`pipeline.faces.draft.DraftSearch`); used when they are for this image's size.

    Returns:
        FaceSearch with the faces of the first frame whose best score reaches ``CONFIDENT_SCORE`` (else the frame with
        the best score), and that frame's turn.

    Raises:
        NoFaceError: no face in any of the four orientations (the upright search's message).
        FaceTooSmallError: no orientation has a face large enough to edit, and at least one has a smaller face.
    """
    if largest_only and (quick := _coarse_search(image, config, predictor, coarse)) is not None:
        return quick
    best: FaceSearch | None = None
    error: NoFaceError | FaceTooSmallError | None = None
    for degrees in (0, *RETRY_TURNS_DEGREES):
        try:
            found = FaceSearch(find_faces(turn_clockwise(image, degrees), config, predictor), degrees)
        except NoFaceError as no_face:
            error = error or no_face
            continue
        except FaceTooSmallError as too_small:  # the answer unless another turn finds a large face
            if error is None or isinstance(error, NoFaceError):
                error = too_small
            continue
        if best is None or _best_score(found) > _best_score(best):
            best = found
        if _best_score(best) >= CONFIDENT_SCORE:
            break
    if best is None:
        assert error is not None
        raise error
    if best.turn_degrees:
        logger.info("face found after turning the photo %d° clockwise", best.turn_degrees)
    return best


def _coarse_search(
    image: np.ndarray,
    config: FaceSearchConfig,
    predictor: dlib.shape_predictor | None,
    coarse: CoarseDetections | None = None,
) -> FaceSearch | None:
    """The upright faces found on the coarse copy, if one is confident; None when the full search must run.

    ``coarse``: the copy's detections if already found (used when they are for ``image``'s size); else the copy is
    made from ``image`` and searched here.
    """
    height, width = image.shape[:2]
    if plan_coarse_copy(width, height, config.detection) is None:
        return None  # the photo is no larger than the coarse copy: the full search costs the same
    on_draft = coarse is not None and tuple(coarse.full_size) == (width, height)
    try:
        if on_draft:
            faces = editable_faces(landmarks_in_boxes(image, coarse, predictor), config)
        else:
            faces = find_faces(image, dataclasses.replace(config, detection=config.detection.coarse()), predictor)
    except (NoFaceError, FaceTooSmallError):
        return None
    found = FaceSearch(faces, exhaustive=False, on_draft=on_draft)
    return found if _best_score(found) >= CONFIDENT_SCORE else None


def _best_score(search: FaceSearch) -> float:
    return max(face.score for face in search.faces)
