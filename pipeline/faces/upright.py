"""Face search that also tries the photo turned by a quarter or half turn.

Photos whose EXIF orientation tag was stripped (messengers, editors, screenshots) arrive sideways or upside down, and
the frontal face detector finds no face in them. :func:`find_faces_any_turn` runs the ordinary upright search first
(so it costs nothing when that finds a face) and only then tries the photo turned 90° clockwise, 90° counter-clockwise
(270° clockwise) and 180°, in that order (sideways photos are far more common than upside-down ones; ours). The edit
then runs in the turned frame and :meth:`FaceSearch.unturn` turns the result back; ``np.rot90`` moves pixels without
resampling, so the photo outside the edit stays bit-exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.errors import FaceTooSmallError, NoFaceError
from pipeline.faces.align import DEFAULT_SEARCH, Face, FaceSearchConfig, find_faces

logger = logging.getLogger(__name__)

# Clockwise turns tried after the upright search, in degrees (issue 11; order: ours, see the module docstring).
RETRY_TURNS_DEGREES = (90, 270, 180)
QUARTER_TURN_DEGREES = 90
FULL_TURN_QUARTERS = 4


@dataclass(frozen=True)
class FaceSearch:
    """The faces found and the frame they were found in.

    Attributes:
        faces: faces in the turned frame, largest first (see :func:`pipeline.faces.align.find_faces`).
        turn_degrees: clockwise turn applied to the photo before the faces were found: 0, 90, 180 or 270.
    """

    faces: list[Face]
    turn_degrees: int = 0

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


def find_faces_any_turn(image: np.ndarray, config: FaceSearchConfig = DEFAULT_SEARCH) -> FaceSearch:
    """:func:`pipeline.faces.align.find_faces` upright, then on the photo turned by ``RETRY_TURNS_DEGREES``.

    Args:
        image: (H, W, 3) uint8 RGB photo (the model view), upright as shown to the user.
        config: minimum face size and detector settings.

    Returns:
        FaceSearch with the faces of the first frame that has any, and that frame's turn.

    Raises:
        NoFaceError: no face in any of the four orientations (the upright search's message).
        FaceTooSmallError: the upright photo has only faces too small to edit (a face was found, so the photo is not
            sideways), or no turn found a face and some turn found only small ones.
    """
    try:
        return FaceSearch(find_faces(image, config), 0)
    except NoFaceError as upright_error:
        error: NoFaceError | FaceTooSmallError = upright_error
    for degrees in RETRY_TURNS_DEGREES:
        try:
            faces = find_faces(turn_clockwise(image, degrees), config)
        except NoFaceError:
            continue
        except FaceTooSmallError as too_small:  # a later turn may still find a large face; else this is the answer
            if isinstance(error, NoFaceError):
                error = too_small
            continue
        logger.info("face found after turning the photo %d° clockwise", degrees)
        return FaceSearch(faces, degrees)
    raise error
