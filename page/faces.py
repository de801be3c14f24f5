"""Which face is which: the detected faces drawn as numbered boxes over a small copy of the photo.

The page's "Face" number counts from the largest face; this picture shows what each number means.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline import Face

PREVIEW_SIDE = 640  # longest side of the preview in pixels (ours: sharp enough at the page's ~300 px display)
BOX_COLOUR = (255, 64, 160)  # the theme's pink, visible on skin and on most backgrounds
LABEL_TEXT = (255, 255, 255)
BOX_WIDTH_FRACTION = 0.01  # box line width, × the preview's longest side (≥ 2 px)
LABEL_FRACTION = 0.09  # label font size, × the preview's longest side (≥ 14 px)


def faces_overview(image: np.ndarray, faces: list[Face]) -> np.ndarray:
    """The photo, at most :data:`PREVIEW_SIDE` pixels on its longest side, each face boxed and numbered from 1.

    Args:
        image: (H, W, 3) uint8 RGB photo.
        faces: the detected faces, largest first (numbered in that order, as the page's "Face" control counts).

    Returns:
        (h, w, 3) uint8 RGB, ``h, w ≤ PREVIEW_SIDE``.
    """
    height, width = image.shape[:2]
    scale = min(1.0, PREVIEW_SIDE / max(height, width))
    preview = Image.fromarray(image)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        preview = preview.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(preview)
    longest = max(preview.size)
    line = max(2, round(BOX_WIDTH_FRACTION * longest))
    font = ImageFont.load_default(size=max(14, round(LABEL_FRACTION * longest)))
    for number, face in enumerate(faces, start=1):
        left, top, right, bottom = (float(value) * scale for value in face.bbox)
        draw.rectangle((left, top, right, bottom), outline=BOX_COLOUR, width=line)
        text = str(number)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        pad = line
        label_top = max(0.0, top - (y1 - y0) - 2 * pad)
        draw.rectangle((left, label_top, left + (x1 - x0) + 2 * pad, label_top + (y1 - y0) + 2 * pad), fill=BOX_COLOUR)
        draw.text((left + pad - x0, label_top + pad - y0), text, fill=LABEL_TEXT, font=font)
    return np.asarray(preview)


def faces_label(count: int) -> str:
    """The preview's caption: how many faces were found and how the numbers count."""
    if count == 1:
        return "1 face found"
    return f"{count} faces found (1 = largest): choose one with “Face”, or tick “Every face”"
