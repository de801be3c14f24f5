"""The example photos and the authors' W+ codes that come with them (``examples/codes/<stem>_wp.npy``).

The authors inverted each of their seven test photos with NVIDIA's StyleGAN2 projector; editing an example from that
code follows the paper's own inversion instead of our encoder's.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from page.cache import pixel_hash
from pipeline import EXAMPLES_DIR, decode_upload, load_latent_code

EXAMPLE_CODES_DIR = EXAMPLES_DIR / "codes"  # <photo stem>_wp.npy: the authors' W+ code of each example photo
AUTHORS_CODE_INVERSION = "authors' code"  # PreparedFace.inversion of an example edited from its authors' code


def example_photos() -> list[Path]:
    """The example photos, sorted by name."""
    return sorted(EXAMPLES_DIR.glob("*.png"))


class ExampleCodes:
    """Recognises an example photo by its pixels and loads the authors' code for it (lazily, once)."""

    def __init__(self) -> None:
        self._paths: dict[str, Path] | None = None
        self._lock = threading.Lock()

    def code_for(self, photo_key: str) -> np.ndarray | None:
        """The (1, 18, 512) float32 code of the example photo whose :func:`page.cache.pixel_hash` is ``photo_key``.

        Returns:
            The code, or None when the photo is not one of the examples (pixel for pixel) or has no code.
        """
        with self._lock:
            if self._paths is None:
                self._paths = {}
                for photo in example_photos():
                    code = EXAMPLE_CODES_DIR / f"{photo.stem}_wp.npy"
                    if code.is_file():
                        self._paths[pixel_hash(decode_upload(photo).image)] = code
        path = self._paths.get(photo_key)
        return None if path is None else load_latent_code(path)
