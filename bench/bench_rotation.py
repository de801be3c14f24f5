"""Benchmark: what the rotation retry of the face search costs (issue 11 item 4).

Three photos per size: an upright portrait (the retry must cost nothing), the same portrait turned 90° (found on the
first retry) and a landscape without a face (all three retries run, then "No face was found"). Run by hand:

    .venv/bin/python -m bench.bench_rotation --runs 5

Prints the median seconds of the plain upright search (:func:`pipeline.faces.align.find_faces`) and of
:func:`pipeline.faces.upright.find_faces_any_turn` for each photo, and the load average (other processes distort the
numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from pipeline.config import EXAMPLES_DIR
from pipeline.errors import NoFaceError
from pipeline.faces.align import find_faces
from pipeline.faces.upright import find_faces_any_turn, turn_clockwise

SIZES = ((1024, 768), (4000, 3000))  # (width, height): a web photo and a 12 MP phone photo


def portrait(size: tuple[int, int]) -> np.ndarray:
    """A reference face at 60 % of the short side on a smooth background."""
    width, height = size
    side = int(min(size) * 0.6)
    canvas = Image.new("RGB", size, (120, 110, 100))
    face = Image.open(EXAMPLES_DIR / "00016.png").convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    canvas.paste(face, ((width - side) // 2, (height - side) // 3))
    return np.asarray(canvas).copy()


def landscape(size: tuple[int, int]) -> np.ndarray:
    """Smooth gradients: a photo without a face."""
    width, height = size
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return np.stack([x, y, np.full_like(x, 128)], axis=2).astype(np.uint8)


def median_seconds(search: Callable[[np.ndarray], object], image: np.ndarray, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with contextlib.suppress(NoFaceError):
            search(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'photo':<28} {'find_faces s':>13} {'any turn s':>11} {'turn':>5}")
    for size in SIZES:
        upright = portrait(size)
        cases = {"upright portrait": upright, "portrait turned 90°": turn_clockwise(upright, -90)}
        cases["landscape, no face"] = landscape(size)
        for name, image in cases.items():
            plain = median_seconds(find_faces, image, args.runs)
            turned = median_seconds(find_faces_any_turn, image, args.runs)
            try:
                degrees = str(find_faces_any_turn(image).turn_degrees)
            except NoFaceError:
                degrees = "—"
            print(f"{name + f' {size[0]}×{size[1]}':<28} {plain:>13.3f} {turned:>11.3f} {degrees:>5}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
