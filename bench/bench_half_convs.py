"""Can the encoder's small style convolutions keep float16 weights on the CPU? (issue 16)

Usage (from the repo root)::

    .venv/bin/python -m bench.bench_half_convs [--weights-dir checkpoints] [--json PATH]

On the CPU, :meth:`pipeline.networks.encoder.Encoder4Editing.keep_small_convs_in_half` stores the weights of the 72
style convolutions with inputs up to 16² in float16 (``HALF_SMALL_CONVS_ON_CPU``: 0.34 GB less resident memory with
the released checkpoint). Issue 16 allows lower precision only where the renders stay ≥ 40 dB (PSNR) from float32 and
the edit's neck mask does not change. For each of the seven reference photos (``examples/*.png``, FFHQ-aligned 1024²)
this runs the fast path (CPU defaults: encoder inversion, warp) with the float32 encoder and with the float16 small
convolutions and compares

- the generator's renders of the two W+ codes (uint8 PSNR, the bar: ≥ 40 dB);
- the neck masks of the two edits (pixels that differ; the mask comes from the photo's parse, so it should be 0);
- the two results, over the pixels either edit changed (uint8 PSNR): what the user sees, including the jaw warp that
  follows the parse of the edited render;

and times one e4e forward with each (interleaved). It ends with a verdict line: keep ``HALF_SMALL_CONVS_ON_CPU`` on,
or switch it off in ``pipeline/networks/encoder.py``.

Without ``--weights-dir`` it runs on the full-size random stand-ins (:mod:`bench.full_size`): that is how the default
was chosen (59–62 dB), but random weights are not a trained network, so the verdict then reads "stand-in weights".
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.common import Record, Samples, format_row, psnr
from bench.full_size import full_size_weights_dir
from pipeline.config import EXAMPLES_DIR
from pipeline.faces.decode import decode_image
from pipeline.models import load_models
from pipeline.networks.encoder import encoder_input
from pipeline.remover import DoubleChinRemover, RemovalResult
from pipeline.settings import default_settings

RENDER_BAR_DB = 40.0  # issue 16: lower precision only where renders stay at least this close to float32
TIMING_ROUNDS = 5  # interleaved e4e forwards per encoder


@dataclass(frozen=True)
class Comparison:
    """One reference photo, float32 encoder against float16 small convolutions."""

    name: str
    code_change: float  # ‖w_half − w_fp32‖ / ‖w_fp32‖
    render_psnr_db: float  # generator renders of the two codes (uint8)
    mask_pixels_differing: int  # neck masks of the two edits
    result_psnr_db: float  # results over the pixels either edit changed (inf: equal, or nothing changed)


def verdict(comparisons: list[Comparison], *, real_weights: bool) -> str:
    """The closing line: keep the float16 small convolutions on the CPU, or switch them off."""
    worst = min(comparison.render_psnr_db for comparison in comparisons)
    masks_equal = all(comparison.mask_pixels_differing == 0 for comparison in comparisons)
    passed = worst >= RENDER_BAR_DB and masks_equal
    masks = "equal" if masks_equal else "DIFFER"
    summary = f"worst render PSNR {worst:.1f} dB (bar {RENDER_BAR_DB:g} dB), neck masks {masks}"
    weights = "real weights" if real_weights else "stand-in weights, not a trained network"
    if passed:
        return f"PASS ({weights}): {summary}; keep HALF_SMALL_CONVS_ON_CPU = True"
    return f"FAIL ({weights}): {summary}; set HALF_SMALL_CONVS_ON_CPU = False in pipeline/networks/encoder.py"


def compare(name: str, fp32: RemovalResult, half: RemovalResult, remover: DoubleChinRemover) -> Comparison:
    (index,) = fp32.edits
    codes = [result.edits[index].prepared.w_plus for result in (fp32, half)]
    renders = [remover.render(code) for code in codes]
    regions = [result.edits[index].neck_mask for result in (fp32, half)]
    changed = np.any(fp32.image != fp32.original, axis=2) | np.any(half.image != half.original, axis=2)
    result_psnr = psnr(fp32.image[changed], half.image[changed]) if changed.any() else math.inf
    return Comparison(
        name,
        float(np.linalg.norm(codes[1] - codes[0]) / np.linalg.norm(codes[0])),
        psnr(renders[0], renders[1]),
        int(np.count_nonzero(regions[0] != regions[1])),
        result_psnr,
    )


def time_encoders(removers: tuple[DoubleChinRemover, DoubleChinRemover], record: Record) -> None:
    images = encoder_input(decode_image(EXAMPLES_DIR / "00016.png"))
    samples = (Samples(), Samples())
    with torch.inference_mode():
        for remover in removers:
            remover.models.encoder(images)  # warm-up
        for _ in range(TIMING_ROUNDS):
            for remover, sample in zip(removers, samples, strict=True):
                start, start_cpu = time.perf_counter(), time.process_time()
                remover.models.encoder(images)
                sample.add(time.perf_counter() - start, time.process_time() - start_cpu)
    record.rows.append(samples[0].row("e4e forward, float32"))
    record.rows.append(samples[1].row("e4e forward, float16 small convolutions"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-dir", default=None, help="the real weights (default: the full-size stand-ins)")
    parser.add_argument("--json", default=None, help="write the record here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    weights = Path(args.weights_dir) if args.weights_dir else full_size_weights_dir()
    removers = tuple(
        DoubleChinRemover(load_models(weights, device="cpu", allow_download=False, half_small_convs=half))
        for half in (False, True)
    )
    for remover in removers:
        remover.progress_bars = False
    real_weights = not removers[0].models.stand_in
    settings = default_settings(torch.device("cpu"))
    record = Record("half_convs")
    comparisons = []
    for path in sorted(EXAMPLES_DIR.glob("*.png")):
        results = [remover(str(path), settings) for remover in removers]
        comparisons.append(compare(path.stem, *results, removers[0]))
        found = comparisons[-1]
        print(
            f"{found.name}: code change {found.code_change:.1e}, render PSNR {found.render_psnr_db:.1f} dB, "
            f"neck mask pixels differing {found.mask_pixels_differing}, result PSNR {found.result_psnr_db:.1f} dB",
            flush=True,
        )
    time_encoders(removers, record)
    for row in record.rows:
        print(format_row(row))
    line = verdict(comparisons, real_weights=real_weights)
    print(line)
    record.extra.update(
        weights=str(weights),
        real_weights=real_weights,
        comparisons=[vars(comparison) for comparison in comparisons],
        verdict=line,
    )
    record.write(args.json)


if __name__ == "__main__":
    main()
