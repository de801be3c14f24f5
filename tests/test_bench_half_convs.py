"""The verdict of ``bench.bench_half_convs`` (whether float16 small convolutions can become the CPU default)."""

from __future__ import annotations

import math

from bench.bench_half_convs import RENDER_BAR_DB, Comparison, verdict


def comparison(render_db: float, mask_pixels: int = 0) -> Comparison:
    return Comparison("00016", 4e-4, render_db, mask_pixels, math.inf)


def test_the_default_is_switched_on_only_by_real_weights_that_clear_both_bars() -> None:
    good = [comparison(RENDER_BAR_DB + 15), comparison(RENDER_BAR_DB + 0.1)]
    assert verdict(good, real_weights=True).startswith("PASS")
    assert "HALF_SMALL_CONVS_ON_CPU = True" in verdict(good, real_weights=True)
    assert verdict(good, real_weights=False).startswith("not decided (random stand-in weights)")
    low = [*good, comparison(RENDER_BAR_DB - 0.1)]
    assert verdict(low, real_weights=True).startswith("keep float32: worst render PSNR 39.9 dB")
    moved_mask = [*good, comparison(RENDER_BAR_DB + 20, mask_pixels=3)]
    assert verdict(moved_mask, real_weights=True) == (
        "keep float32: worst render PSNR 40.1 dB (bar 40 dB), neck masks DIFFER"
    )
