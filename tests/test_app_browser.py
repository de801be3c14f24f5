"""The page in a real browser: Debian's Chromium (``apt-get install chromium``) driven by Playwright.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` headless. Without it the tests are
skipped locally and fail in CI (``.ci/run`` installs it). The page is served from this process with stand-in weights
(see ``tests/test_app.py``). The screenshots go to the run's temporary folder; with ``C2F_UPDATE_SCREENSHOTS=1``
they replace the README's pictures in ``docs/`` instead (a plain test run leaves the clone unchanged).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import STAND_IN_NOTE, STRENGTH_MAX, STRENGTH_MIN
from pipeline.config import EXAMPLES_DIR, REPO_ROOT
from tests.serving import TEST_PHOTO_SIZE, Served, make_landscape, make_test_photo

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
PHONE_VIEWPORT = {"width": 390, "height": 844}  # a common phone screen, in CSS pixels
UPDATE_SCREENSHOTS_ENV = "C2F_UPDATE_SCREENSHOTS"  # "1": the run replaces the README's pictures in docs/
SCREENSHOT = REPO_ROOT / "docs" / "screenshot.png"  # the README's picture: the page before a run
RESULT_SCREENSHOT = REPO_ROOT / "docs" / "screenshot-stand-in-result.png"  # after a run with stand-in weights
PHONE_SCREENSHOT = REPO_ROOT / "docs" / "screenshot-phone.png"  # 390 px wide, after a run with stand-in weights
SCREENSHOT_EXAMPLE = EXAMPLES_DIR / "00352.png"
SCREENSHOT_COLOURS = 256
RUN_TIMEOUT_MS = 120_000  # one full run on a loaded 2-core CI machine
UI_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found; install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: object, served: Served) -> Iterator[object]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(served.url)
    playwright_api.expect(page.get_by_role("heading", name="Double-chin removal")).to_be_visible()
    try:
        yield page
    finally:
        context.close()


def upload(page: object, path: Path) -> None:
    page.locator("#c2f-photo input[type=file]").set_input_files(str(path))  # type: ignore[attr-defined]
    playwright_api.expect(page.locator("#c2f-photo img")).to_have_count(1)  # type: ignore[attr-defined]


def slider_images(page: object) -> list[dict[str, object]]:
    """The before/after images once both are loaded: src and natural size."""
    images = page.locator("#c2f-slider img")  # type: ignore[attr-defined]
    playwright_api.expect(images).to_have_count(2, timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => [...document.querySelectorAll('#c2f-slider img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    return images.evaluate_all("els => els.map(e => ({src: e.src, width: e.naturalWidth, height: e.naturalHeight}))")


def wait_for_new_result(page: object, old_src: object) -> None:
    """Wait until the slider's "after" image is a new, fully loaded result (its src differs from ``old_src``)."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "old => { const i = document.querySelectorAll('#c2f-slider img'); "
        "return i.length === 2 && i[1].src !== old && i[1].complete && i[1].naturalWidth > 0; }",
        arg=old_src,
        timeout=RUN_TIMEOUT_MS,
    )


def fetch_rgb(page: object, url: str) -> np.ndarray:
    response = page.request.get(url)  # type: ignore[attr-defined]
    assert response.ok, url
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def drag_strength(page: object, value: float, minimum: float, maximum: float) -> None:
    """Drag the strength slider's thumb to ``value`` with the mouse (the release applies the edit)."""
    track = page.locator("#c2f-strength input[type=range]")  # type: ignore[attr-defined]
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    current = float(track.input_value())
    y = box["y"] + box["height"] / 2

    def x_of(v: float) -> float:
        return box["x"] + box["width"] * (v - minimum) / (maximum - minimum)

    page.mouse.move(x_of(current), y)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    page.mouse.move(x_of(value), y, steps=8)  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]
    playwright_api.expect(track).to_have_value(f"{value:g}")


def test_upload_run_compare_and_move_the_strength(page: object, served: Served, tmp_path: Path) -> None:
    upload(page, make_test_photo(tmp_path / "portrait.jpg"))
    page.locator("#c2f-run").click()  # type: ignore[attr-defined]
    before, after = slider_images(page)
    width, height = TEST_PHOTO_SIZE
    assert (before["width"], before["height"]) == (after["width"], after["height"]) == (width, height)
    first_result = fetch_rgb(page, str(after["src"]))
    assert np.any(first_result != fetch_rgb(page, str(before["src"])))

    encoder_runs = served.calls["invert_with_encoder"]
    drag_strength(page, -2.0, STRENGTH_MIN, STRENGTH_MAX)
    wait_for_new_result(page, after["src"])
    _, new_after = slider_images(page)
    assert (new_after["width"], new_after["height"]) == (width, height)
    assert np.any(fetch_rgb(page, str(new_after["src"])) != first_result), "moving the strength changes the result"
    assert served.calls["invert_with_encoder"] == encoder_runs, "the slider reuses the cached inversion"


def save_screenshot(page: object, path: Path, width: int) -> None:
    """A full-page screenshot as a 256-colour PNG (keeps the pictures in docs/ at ~0.4 MB instead of ~1.3 MB).

    Written to ``path`` only with ``C2F_UPDATE_SCREENSHOTS=1``; otherwise to the run's temporary folder.
    """
    if os.environ.get(UPDATE_SCREENSHOTS_ENV) != "1":
        path = Path(tempfile.gettempdir()) / path.name
    page.mouse.move(0, 0)  # type: ignore[attr-defined]  # no hover highlight in the picture
    png = page.screenshot(full_page=True)  # type: ignore[attr-defined]
    with Image.open(io.BytesIO(png)) as shot:
        assert shot.width == width
        palette = shot.convert("RGB").quantize(
            SCREENSHOT_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    palette.save(path, optimize=True)


def pick_example(page: object) -> None:
    page.locator(f"img[src$='/{SCREENSHOT_EXAMPLE.name}']").first.click()  # type: ignore[attr-defined]
    playwright_api.expect(page.locator("#c2f-photo img")).to_have_count(1)  # type: ignore[attr-defined]


def not_clipped(page: object, selector: str) -> bool:
    """Whether every element matching ``selector`` shows its whole text (no ellipsis, nothing cut off)."""
    return page.locator(selector).evaluate_all(  # type: ignore[attr-defined]
        "els => els.length > 0 && els.every(e => e.scrollWidth <= e.clientWidth + 1)"
    )


def test_an_example_runs_from_the_authors_code_and_the_page_is_screenshotted(page: object) -> None:
    pick_example(page)
    faces = page.locator("#c2f-faces")  # type: ignore[attr-defined]
    playwright_api.expect(faces).to_be_visible()
    playwright_api.expect(faces).to_contain_text("1 face found")
    # The README's picture: the page as a visitor finds it, before any (stand-in) result is shown.
    save_screenshot(page, SCREENSHOT, VIEWPORT["width"])
    page.locator("#c2f-run").click()  # type: ignore[attr-defined]
    before, after = slider_images(page)
    with Image.open(SCREENSHOT_EXAMPLE) as example:
        assert (after["width"], after["height"]) == (before["width"], before["height"]) == example.size
    playwright_api.expect(page.locator(".c2f-banner").get_by_text(STAND_IN_NOTE)).to_be_visible()  # type: ignore[attr-defined]
    score = page.locator("#c2f-score")  # type: ignore[attr-defined]
    playwright_api.expect(score).to_contain_text("Double-chin score:")
    playwright_api.expect(score).to_contain_text("positive = double-chin side")
    playwright_api.expect(page.locator("#c2f-notes")).to_contain_text("authors' own W+ code")  # type: ignore[attr-defined]
    page.get_by_role("tab", name="Stages").click()  # type: ignore[attr-defined]
    playwright_api.expect(page.locator("#c2f-stages .caption-label")).to_have_count(5)  # type: ignore[attr-defined]
    assert not_clipped(page, "#c2f-stages .caption-label"), "stage captions are shown whole"
    page.get_by_role("button", name="Advanced").click()  # type: ignore[attr-defined]
    playwright_api.expect(page.locator("#c2f-boundary")).to_contain_text("Coarse (W, one for all layers)")  # type: ignore[attr-defined]
    code_box = page.locator("#c2f-code").bounding_box()  # type: ignore[attr-defined]
    prompt = page.locator("#c2f-code").get_by_text("Click to Upload").bounding_box()  # type: ignore[attr-defined]
    assert code_box["y"] <= prompt["y"] and prompt["y"] + prompt["height"] <= code_box["y"] + code_box["height"]
    save_screenshot(page, RESULT_SCREENSHOT, VIEWPORT["width"])


def test_the_page_at_phone_width(browser: object, served: Served) -> None:
    context = browser.new_context(viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True)  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(served.url)
        pick_example(page)
        page.locator("#c2f-run").click()
        slider_images(page)
        for name in ("Downloads", "Stages", "Sweep"):  # every tab in the bar, none behind a "⋯" menu
            playwright_api.expect(page.get_by_role("tab", name=name)).to_be_visible()
        page.get_by_role("tab", name="Downloads").click()
        playwright_api.expect(page.get_by_text("result.png", exact=True).first).to_be_visible()
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= PHONE_VIEWPORT["width"], "nothing sticks out sideways"
        save_screenshot(page, PHONE_SCREENSHOT, PHONE_VIEWPORT["width"])
    finally:
        context.close()


def test_enter_in_the_strength_box_applies_it(page: object, tmp_path: Path) -> None:
    upload(page, make_test_photo(tmp_path / "portrait.jpg"))
    page.locator("#c2f-run").click()  # type: ignore[attr-defined]
    _, after = slider_images(page)
    box = page.locator("#c2f-strength input[type=number]")  # type: ignore[attr-defined]
    box.fill("-3")
    box.press("Enter")
    wait_for_new_result(page, after["src"])
    playwright_api.expect(page.locator("#c2f-score")).to_contain_text("(layers 0–5)")  # type: ignore[attr-defined]
    # A value beyond the range runs at the end of the range the box shows, not as an error.
    _, after = slider_images(page)
    box.fill("-20")
    box.press("Enter")
    wait_for_new_result(page, after["src"])
    assert float(box.input_value()) == -8.0
    assert page.get_by_text("is not valid", exact=False).count() == 0  # type: ignore[attr-defined]
    # The slider itself, moved with the keyboard, applies when the key is let go.
    _, after = slider_images(page)
    page.locator("#c2f-strength input[type=range]").press("ArrowRight")  # type: ignore[attr-defined]
    wait_for_new_result(page, after["src"])
    assert float(box.input_value()) == -7.5


def test_a_failed_run_clears_the_previous_result(page: object, tmp_path: Path) -> None:
    upload(page, make_test_photo(tmp_path / "portrait.jpg"))
    page.locator("#c2f-run").click()  # type: ignore[attr-defined]
    slider_images(page)
    upload(page, make_landscape(tmp_path / "landscape.png"))
    page.locator("#c2f-run").click()  # type: ignore[attr-defined]
    message = page.get_by_text("No face was found in this photo.", exact=False)  # type: ignore[attr-defined]
    playwright_api.expect(message.first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    playwright_api.expect(page.locator("#c2f-notes")).to_contain_text("The last run failed")  # type: ignore[attr-defined]
    playwright_api.expect(page.locator("#c2f-slider img")).to_have_count(0)  # type: ignore[attr-defined]
    assert "Double-chin score" not in page.locator("#c2f-score").inner_text()  # type: ignore[attr-defined]


def share_link(page: object) -> str:
    """Click the share button and return the link it copied (the clipboard is emptied first: no earlier link)."""
    page.evaluate("navigator.clipboard.writeText('')")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Copy a share link").click()  # type: ignore[attr-defined]
    # Polled from here: page.wait_for_function does not await an async predicate (a Promise is truthy at once).
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        copied = page.evaluate("navigator.clipboard.readText()")  # type: ignore[attr-defined]
        if "deep_link=" in copied:
            return copied
        page.wait_for_timeout(100)  # type: ignore[attr-defined]
    raise AssertionError("the share button copied no link")


def test_a_share_link_restores_the_result_until_its_files_expire(
    browser: object, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = browser.new_context(viewport=VIEWPORT, permissions=["clipboard-read", "clipboard-write"])  # type: ignore[attr-defined]
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(served.url)
        upload(page, make_test_photo(tmp_path / "portrait.jpg"))
        page.locator("#c2f-run").click()
        _, after = slider_images(page)
        link = share_link(page)
        playwright_api.expect(page.locator("#c2f-share-note")).to_contain_text("deleted about 30 minutes after")
        visitor = context.new_page()
        visitor.goto(link)
        _, shared_after = slider_images(visitor)
        assert shared_after["src"] == after["src"]  # the same result, for whoever opens the link
        playwright_api.expect(visitor.locator("#c2f-score")).to_contain_text("Double-chin score:")

        monkeypatch.setattr(served.app, "DELETE_CACHE", (600, 0))  # results made now expire at once
        page.locator("#c2f-run").click()
        wait_for_new_result(page, after["src"])
        expired = context.new_page()
        expired.goto(share_link(page))
        playwright_api.expect(expired.locator("#c2f-notes")).to_contain_text("This shared link has expired")
        playwright_api.expect(expired.locator("#c2f-slider img")).to_have_count(0)
    finally:
        context.close()


def test_a_photo_without_a_face_shows_its_message(page: object, tmp_path: Path) -> None:
    upload(page, make_landscape(tmp_path / "landscape.png"))
    page.locator("#c2f-run").click()  # type: ignore[attr-defined]
    message = page.get_by_text("No face was found in this photo.", exact=False)  # type: ignore[attr-defined]
    playwright_api.expect(message.first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert page.locator("#c2f-slider img").count() == 0  # type: ignore[attr-defined]
