"""The verdict of ``bench.bench_half_convs`` (whether the float16 small convolutions stay the CPU default)."""

from __future__ import annotations

import math

from bench.bench_half_convs import RENDER_BAR_DB, Comparison, verdict


def comparison(render_db: float, mask_pixels: int = 0) -> Comparison:
    return Comparison("00016", 4e-4, render_db, mask_pixels, math.inf)


def test_the_verdict_keeps_the_default_only_when_both_bars_are_cleared() -> None:
    good = [comparison(RENDER_BAR_DB + 15), comparison(RENDER_BAR_DB + 0.1)]
    assert verdict(good, real_weights=True) == (
        "PASS (real weights): worst render PSNR 40.1 dB (bar 40 dB), neck masks equal; "
        "keep HALF_SMALL_CONVS_ON_CPU = True"
    )
    assert verdict(good, real_weights=False).startswith("PASS (stand-in weights, not a trained network)")
    low = [*good, comparison(RENDER_BAR_DB - 0.1)]
    assert verdict(low, real_weights=True).startswith("FAIL (real weights): worst render PSNR 39.9 dB")
    assert verdict(low, real_weights=True).endswith(
        "set HALF_SMALL_CONVS_ON_CPU = False in pipeline/networks/encoder.py"
    )
    moved_mask = [*good, comparison(RENDER_BAR_DB + 20, mask_pixels=3)]
    assert "neck masks DIFFER" in verdict(moved_mask, real_weights=True)
    assert verdict(moved_mask, real_weights=True).startswith("FAIL")
