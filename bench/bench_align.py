"""Benchmark: decode + detect + align of a 24 MP JPEG (issue target: median ≤ 2 s on the project CPU).

The JPEG is synthesised in memory: a reference photo (examples/*.png) scaled up and placed in a 6000×4000 canvas of
smooth clutter, encoded at quality 92. Run by hand:

    .venv/bin/python -m bench.bench_align --runs 7 [--at-border]

``--at-border`` puts the face at the bottom edge (chin/neck cut off, as in many portraits), which takes the recipe's
reflect-pad path.

Prints per-stage medians, the spread of the total, peak RSS and the load average before and after (other processes on
the machine distort the numbers; re-run when the load is low).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import time

import cv2
import numpy as np
from PIL import Image

from pipeline.config import EXAMPLES_DIR
from pipeline.faces.align import align_face, find_faces
from pipeline.faces.decode import decode_image
from pipeline.faces.landmarks import load_face_detector, load_shape_predictor

CANVAS_SIZE = (6000, 4000)  # (width, height): 24 MP, a typical phone/DSLR photo
JPEG_QUALITY = 92
NOISE_LEVEL = 8  # ± grey levels of uniform noise, so the JPEG has a realistic size
NOISE_STRIPE_ROWS = 200


def make_jpeg(face_scale: float, *, at_border: bool, seed: int = 0) -> bytes:
    width, height = CANVAS_SIZE
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 200, (height // 64, width // 64, 3), dtype=np.uint8)
    canvas = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for top in range(0, height, NOISE_STRIPE_ROWS):  # sensor-like noise, in stripes to keep the setup's RSS low
        stripe = canvas[top : top + NOISE_STRIPE_ROWS]
        noise = rng.integers(-NOISE_LEVEL, NOISE_LEVEL + 1, stripe.shape, dtype=np.int16)
        stripe[:] = np.clip(stripe + noise, 0, 255)
    photo = decode_image(sorted(EXAMPLES_DIR.glob("*.png"))[0])
    side = round(photo.shape[0] * face_scale)
    face = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
    left = (width - side) // 3
    if at_border:  # the bottom 30 % of the reference photo falls outside the canvas
        visible = side - round(0.3 * side)
        canvas[height - visible :, left : left + side] = face[:visible]
    else:
        top = (height - side) // 2
        canvas[top : top + side, left : left + side] = face
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--face-scale", type=float, default=2.0, help="scale of the 1024² reference photo")
    parser.add_argument("--at-border", action="store_true", help="cut the face off at the bottom edge")
    args = parser.parse_args()

    load_before = os.getloadavg()
    data = make_jpeg(args.face_scale, at_border=args.at_border)
    setup_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_face_detector()
    load_shape_predictor()  # model load + SHA-256 check happen once per process; not part of a request
    stages: dict[str, list[float]] = {"decode": [], "detect": [], "align": [], "total": []}
    faces = []
    for _ in range(args.runs):
        start = time.perf_counter()
        image = decode_image(data)
        decoded = time.perf_counter()
        faces = find_faces(image)
        detected = time.perf_counter()
        aligned = align_face(image, faces[0])
        done = time.perf_counter()
        stages["decode"].append(decoded - start)
        stages["detect"].append(detected - decoded)
        stages["align"].append(done - detected)
        stages["total"].append(done - start)
    assert aligned.image.shape == (1024, 1024, 3)
    load_after = os.getloadavg()

    width, height = CANVAS_SIZE
    print(f"input: {width}×{height} JPEG q{JPEG_QUALITY}, {len(data) / 1e6:.1f} MB; {len(faces)} face(s)")
    print(f"       largest face {faces[0].size:.0f} px, at border: {args.at_border}")
    print(f"       cpu_count={os.cpu_count()}, runs={args.runs}")
    for name, values in stages.items():
        print(f"{name:>7}: median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f})")
    total = stages["total"]
    quartiles = statistics.quantiles(total, n=4) if len(total) > 1 else [total[0]] * 3
    print(f" spread: IQR {quartiles[2] - quartiles[0]:.3f} s")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_rss:.0f} MB (after building the test JPEG: {setup_rss:.0f} MB)")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
