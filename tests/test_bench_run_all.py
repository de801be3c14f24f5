"""The table logic of ``bench.run_all`` (ratios to one generator forward, issue-16 targets, the README block)."""

from __future__ import annotations

from pathlib import Path

from bench.common import Row
from bench.run_all import (
    FAST_PATH_RSS_TARGET_MB,
    README_END,
    README_START,
    Outcome,
    markdown,
    ratio_lines,
    ratio_results,
    table,
    update_readme,
)

INFO = {"cpu": "x", "cpus": 2, "memory_gb": 1, "torch": "t", "python": "p", "platform": "l", "allocator": {}}
LOAD = (0.1, 0.1, 0.1)


def outcome(name: str, median: float, forward: float | None, rss: float = 1000.0) -> Outcome:
    rows = [
        Row(f"{name} row", median, median, median, 0.0, 3, forward_s=forward, peak_rss_mb=rss),
        Row(f"  {name}: stage", median / 2, median / 2, median / 2, 0.0, 3, forward_s=forward),
    ]
    return Outcome(name, rows, rss, 1.0, "ok", LOAD, LOAD)


def test_ratios_and_verdicts() -> None:
    outcomes = [
        outcome("end-to-end", 2.0, 1.0, rss=FAST_PATH_RSS_TARGET_MB + 1),  # 2.0×: stretch target met
        outcome("slider", 1.0, 1.0),  # 1.0× > 0.9×
        outcome("diffuse", 10.0, 1.0),
        outcome("generator", 1.0, None),  # no in-process forward: no ratio
    ]
    results, fast = ratio_results(outcomes)
    assert [(r.ratio, r.verdict) for r in results] == [(2.0, "pass (stretch)"), (1.0, "FAIL"), (10.0, "pass")]
    assert fast is not None and fast.peak_rss_mb == FAST_PATH_RSS_TARGET_MB + 1
    text = "\n".join(table(outcomes) + ratio_lines(outcomes))
    assert "2.00×" in text and "0.50×" in text  # the stage row is a ratio too
    assert text.splitlines()[-1].endswith("FAIL")  # peak RSS over 2 GB
    fast.rss_file_mb = 1300.0  # the file-backed part is named beside the figure, in both forms
    assert "2,049 MB (1,300 MB of it file-backed: mapped weights, libraries) (target ≤ 2,048 MB)  FAIL" in "\n".join(
        ratio_lines(outcomes)
    )
    page = markdown(outcomes, INFO, "now", [LOAD] * len(outcomes))
    assert "| peak RSS, fast path | 2,049 MB (1,300 MB of it file-backed: mapped weights, libraries) | | |" in page
    assert "| fast path on a 12 MP photo (decode → paste back, e4e + warp) | 2.000 | 1.000 | 2.00× |" in page
    assert "| generator row | 1.000 |  |" in page  # no ratio column value


def test_failed_benchmarks_have_no_ratio() -> None:
    failed = Outcome("slider", [], 0.0, 1.0, "failed (exit 1): boom", LOAD, LOAD)
    assert ratio_results([failed]) == ([], None)
    assert "| slider | | | | | | failed (exit 1): boom |" in markdown([failed], INFO, "now", [LOAD])


def test_readme_block_is_replaced_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\nrest\n", encoding="utf-8")
    assert update_readme("# Benchmarks\n\nnew table\n", readme)
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text and "new table" in text and "# Benchmarks" not in text
    assert text.startswith("intro\n") and text.endswith(f"{README_END}\nrest\n")
    unmarked = tmp_path / "OTHER.md"
    unmarked.write_text("no markers\n", encoding="utf-8")
    assert not update_readme("# Benchmarks\n\nx\n", unmarked)
    assert unmarked.read_text(encoding="utf-8") == "no markers\n"
