"""Public-demo robustness (issue 7; design/RELIABILITY.md §6.1 bad inputs, §6.2 faults, privacy).

Bad inputs go through the pipeline (``DoubleChinRemover``) and through the HTTP app (``gradio_client`` against one
server per module on 127.0.0.1 with stand-in weights, see tests/test_app.py); every refusal must be a specific message
without a traceback, a path or exception text, and the next good request must succeed. Faults are injected with
monkeypatch (a stage raising, out of memory, a full or unwritable temp folder, damaged weights at start) and with a
real ``python app.py`` that is sent SIGTERM and restarted. Decode-level cases live in tests/faces/test_decode.py and
tests/faces/test_decode_properties.py, Hub/download faults in tests/weights/test_weights.py, HTTP hardening in
tests/test_http_security.py, concurrency in tests/test_load.py; docs/reliability.md maps every hazard to its test.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import gradio.route_utils
import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import constants as hf_constants
from PIL import Image, PngImagePlugin

from page import environment as page_environment
from page import errors as page_errors
from page import files as page_files
from pipeline.config import REPO_ROOT
from pipeline.errors import PipelineError, WeightsError
from pipeline.faces.align import AlignedFace
from pipeline.faces.decode import decode_upload
from pipeline.remover import DoubleChinRemover
from tests.serving import (
    EXAMPLES,
    HTML_FILENAME,
    PORTRAIT_SIZE,
    REQUEST_TIMEOUT_S,
    Served,
    default_inputs,
    file_data,
    files_in,
    free_port,
    launch,
    portrait,
    queue_call,
    rgb,
    upload,
)

SECRET = "/srv/secret-dir/model.pt"  # planted in injected exceptions; must never reach a client
SERVER_START_TIMEOUT_S = 180.0  # `python app.py`: imports, loads the stand-in models, builds the page
SERVER_STOP_TIMEOUT_S = 30.0
SWEEP_TIMEOUT_S = 20.0
EXIF_ORIENTATION, EXIF_ARTIST, EXIF_DESCRIPTION, EXIF_GPS_IFD = 0x0112, 0x013B, 0x010E, 0x8825
PLANTED_TEXT = "Jane Secret at 52.3676N 4.9041E"  # metadata that must not survive into any output
LEAK_MARKERS = ("Traceback", "/tmp/", "/srv/", "secret-dir", "Error:", 'File "')


# -- photos and files made here ----------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def group_photo() -> Image.Image:
    """Two faces of different sizes side by side (the larger one on the left)."""
    canvas = np.full((440, 680, 3), 120, dtype=np.uint8)
    for example, face, x, y in ((EXAMPLES[0], 360, 10, 40), (EXAMPLES[3], 250, 400, 120)):
        pixels = Image.open(example).convert("RGB").resize((face, face), Image.Resampling.LANCZOS)
        canvas[y : y + face, x : x + face] = np.asarray(pixels)
    return Image.fromarray(canvas)


def landscape() -> Image.Image:
    """A smooth gradient: a valid photo without a face."""
    ramp = np.linspace(0, 255, 400, dtype=np.float64)
    pixels = np.stack([np.tile(ramp, (300, 1)), np.tile(ramp[:300, None], (1, 400)), np.full((300, 400), 128.0)], 2)
    return Image.fromarray(pixels.astype(np.uint8))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def png_with_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR claims ``width`` × ``height`` (8-bit grey), with an optional IDAT payload."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    body = png_chunk(b"IHDR", ihdr) + (png_chunk(b"IDAT", idat) if idat else b"")
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def pixel_flood_png(side: int = 12000) -> bytes:
    """A ~140 KB PNG of side² black pixels: decoding it would cost side² bytes (RELIABILITY.md §0 item 7)."""
    compressor = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + one row of zeros
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_with_header(side, side, idat)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.txt", "not a photo")
    return buffer.getvalue()


def animated_gif() -> bytes:
    """Frame 0 is the portrait, frame 1 a landscape: only frame 0 may be used."""
    frames = [portrait().convert("RGB"), landscape().resize(PORTRAIT_SIZE)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    exif[EXIF_ARTIST] = PLANTED_TEXT
    exif[EXIF_DESCRIPTION] = PLANTED_TEXT
    exif.get_ifd(EXIF_GPS_IFD).update({1: "N", 2: (52.0, 22.0, 3.36), 3: "E", 4: (4.0, 54.0, 14.76)})
    return exif


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# (id, file contents, file name, the start of the message; a regex). Every case of RELIABILITY.md §6.1 that applies
# to an upload and is not already in tests/test_app.py (HTML renamed .jpg, PDF, 0-byte file, landscape).
BAD_UPLOADS: list[tuple[str, Callable[[], bytes], str, str]] = [
    ("zip-renamed", zip_bytes, "holiday.png", r"This ZIP file is not supported\."),
    ("elf-renamed", lambda: b"\x7fELF\x02\x01\x01\x00" + bytes(120), "photo.png", r"This file could not be read as"),
    (
        "svg",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300"><rect width="300"/></svg>',
        "drawing.svg",
        r"This SVG file is not supported\.",
    ),
    ("tiff-renamed", lambda: encoded(portrait(), "TIFF"), "scan.jpg", r"This TIFF file is not"),
    (
        "eps-renamed",
        lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n",
        "art.jpg",
        r"This PostScript/EPS file",
    ),
    (
        "heic-damaged",  # HEIC itself decodes (pillow-heif): tests/faces/test_photo.py
        lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        "IMG_0001.heic",
        r"This photo file appears to be damaged",
    ),
    (
        "truncated-jpeg",
        lambda: half(encoded(portrait(), "JPEG", quality=90)),
        "cut.jpg",
        r"This photo file appears to be damaged",
    ),
    (
        "png-bomb-header",
        lambda: png_with_header(20000, 20000),
        "bomb.png",
        r"This image is too large \(",
    ),
    ("pixel-flood", pixel_flood_png, "flood.png", r"This image is too large \("),
    (
        "32x32",
        lambda: encoded(portrait().resize((32, 32)), "PNG"),
        "tiny.png",
        r"This image is too small \(32×32 pixels\)",
    ),
    (
        "1x10000",
        lambda: encoded(Image.new("RGB", (1, 10000), "gray"), "PNG"),
        "strip.png",
        r"This image has an unusual shape \(1×10000",
    ),
    (
        "html-named-file",
        lambda: b"<html><body>hello</body></html>",
        HTML_FILENAME,
        r"This file could not be read as a photo\.",
    ),
]


def assert_clean(message: str) -> None:
    """A client-visible message: no traceback, no server path, no exception text, no unescaped HTML from the user."""
    for marker in (*LEAK_MARKERS, "<img", "onerror"):
        assert marker not in message, f"{marker!r} leaked into {message!r}"


# -- the raw queue protocol (what any HTTP client sees; gradio_client hides the payload) ----------------------------


# -- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "good.png"
    portrait().save(path)
    return path


def remove(client: Client, photo: Path | None, **settings: object) -> tuple:
    settings.setdefault("w_plus_code", None)
    return client.predict(
        None if photo is None else handle_file(str(photo)), api_name="/remove_double_chin", **settings
    )


def assert_serves(client: Client, photo: Path) -> None:
    """The follow-up good request: a result of the photo's size comes back."""
    (before, after), *_ = remove(client, photo)
    assert rgb(after).shape == rgb(before).shape == decode_upload(photo).image.shape


def refused(client: Client, photo: Path | None, pattern: str, **settings: object) -> str:
    with pytest.raises(AppError, match=pattern) as error:
        remove(client, photo, **settings)
    message = str(error.value)
    assert_clean(message)
    return message


# -- bad inputs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name", "pattern"), [case[1:] for case in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS]
)
def test_bad_upload_gets_its_message_and_the_server_stays_healthy(
    served: Served,
    client: Client,
    good_photo: Path,
    tmp_path: Path,
    make: Callable[[], bytes],
    name: str,
    pattern: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(make())
    encoder_runs = served.calls["invert_with_encoder"]
    start = time.perf_counter()
    refused(client, path, "^" + pattern)
    assert time.perf_counter() - start < REQUEST_TIMEOUT_S
    assert served.calls["invert_with_encoder"] == encoder_runs, "a refused upload never reaches the models"
    assert_serves(client, good_photo)


@pytest.mark.parametrize(
    ("make", "name", "pattern"), [case[1:] for case in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS]
)
def test_bad_upload_through_the_pipeline(
    app_module: ModuleType, tmp_path: Path, make: Callable[[], bytes], name: str, pattern: str
) -> None:
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(PipelineError, match="^" + pattern) as error:
        app_module.LOADED(path)
    assert_clean(str(error.value))


def test_no_photo_asks_for_one(client: Client, good_photo: Path) -> None:
    refused(client, None, r"^Please upload a photo \(or pick one of the examples\) first\.$")
    assert_serves(client, good_photo)


# (setting, a malformed value, the control's label): types and ranges an API caller can send (RELIABILITY.md §6.1 #42)
BAD_SETTINGS: list[tuple[str, object, str]] = [
    ("strength", 50.0, "Strength"),
    ("strength", "abc", "Strength"),
    ("strength", None, "Strength"),
    ("strength", True, "Strength"),
    ("auto_strength", "yes", "Automatic strength"),
    ("method", HTML_FILENAME, "Neck refinement"),
    ("inversion", 3, "Inversion quality"),
    ("face_number", 0, "Face (1 = largest)"),
    ("face_number", "one", "Face (1 = largest)"),
    ("mix_layers", True, "Layers restored from the original (style mixing)"),
    ("mix_layers", [99], "Layers restored from the original (style mixing)"),
    ("inversion_steps", -10, "Optimisation steps (encoder + optimisation only)"),
    ("refine_steps", 10**9, "Diffuse refinement steps"),
    ("seed", 1e300, "Seed"),
]


def test_api_settings_of_the_wrong_type_or_range_are_refused_by_name(client: Client, good_photo: Path) -> None:
    # One test for all of them: they are refused in Gradio's preprocess, before any handler or model state is touched,
    # so one follow-up request shows the server healthy after the lot.
    for setting, value, label in BAD_SETTINGS:
        pattern = f"^The value sent for “{re.escape(label)}” is not valid: it must be "
        message = refused(client, good_photo, pattern, **{setting: value})
        assert not isinstance(value, str) or value not in message, f"{setting}={value!r} echoed: {message}"
    assert_serves(client, good_photo)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_strength_is_refused(served: Served, value: float) -> None:
    inputs = default_inputs(None)
    inputs[1] = value  # JSON has no NaN/Infinity, but Python's json module (and so the server) reads them
    completed = queue_call(served.url, "remove_double_chin", inputs)[-1]
    assert completed["success"] is False
    assert completed["output"]["error"].startswith("The value sent for “Strength” is not valid: it must be a number")


def test_group_photo_edits_the_largest_face_and_says_so(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "group.png"
    group_photo().save(path)
    (before, after), _, _, summary, notes, _ = remove(client, path)
    assert summary["faces_found"] == 2
    assert summary["faces_edited"] == [0]
    assert "2 faces were found; face 1 (numbered from the largest) was edited." in notes
    quad = np.asarray(summary["faces"]["0"]["quad"])
    assert quad[:, 0].mean() < 340, "the larger face (on the left) is the one edited"
    changed = np.any(rgb(after) != rgb(before), axis=2)
    assert changed.any() and not changed[:, 400:].any(), "the smaller face on the right is untouched"


def test_group_photo_through_the_pipeline(app_module: ModuleType) -> None:
    result = app_module.LOADED(np.asarray(group_photo()))
    assert len(result.faces) == 2 and list(result.edits) == [0]
    assert result.faces[0].size > result.faces[1].size
    assert "2 faces were found; face 1 (numbered from the largest) was edited." in result.notes  # as on the page


@pytest.mark.parametrize("kind", ["static-gif", "animated-gif"])
def test_gif_uploads_reach_the_pipeline_as_rgb(client: Client, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.gif"
    if kind == "static-gif":
        path.write_bytes(encoded(portrait(tint=(200, 90, 60)), "GIF"))
    else:
        path.write_bytes(animated_gif())
    (before, _), _, _, summary, notes, _ = remove(client, path)
    with Image.open(before) as shown:
        assert shown.mode == "RGB" and shown.size == PORTRAIT_SIZE, "3-channel RGB, not GIF palette indices"
    np.testing.assert_array_equal(rgb(before), decode_upload(path).image)
    animated_note = "This is an animated image; only its first frame was used."
    assert (animated_note in notes) == (kind == "animated-gif")
    assert summary["faces_found"] == 1


def test_tiny_face_in_a_large_photo_gets_its_message(client: Client, good_photo: Path, tmp_path: Path) -> None:
    path = tmp_path / "far_away.png"
    portrait(size=(900, 700), face=120, at=(400, 300)).save(path)
    refused(client, path, r"^(The face in this photo is too small to edit|No face was found in this photo)")
    assert_serves(client, good_photo)


# -- privacy -----------------------------------------------------------------------------------------------------


def output_files(result: tuple) -> list[Path]:
    """Every file a removal returns: before/after, the stage previews and the downloads."""
    (before, after), stages, downloads, *_ = result
    return [Path(before), Path(after), *(Path(item["image"]) for item in stages), *(Path(p) for p in downloads)]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_outputs_carry_no_metadata_even_when_the_input_had_gps_and_text(
    client: Client, tmp_path: Path, fmt: str
) -> None:
    upright = portrait(tint=(30, 160, 90) if fmt == "JPEG" else (160, 40, 160))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # EXIF orientation 6 turns it back upright
    exif = exif_with_gps(orientation=6)
    path = tmp_path / f"gps.{fmt.lower()}"
    if fmt == "JPEG":
        stored.save(path, "JPEG", quality=95, exif=exif.tobytes(), comment=PLANTED_TEXT.encode())
    else:
        text = PngImagePlugin.PngInfo()
        text.add_text("Comment", PLANTED_TEXT)
        text.add_itxt("Location", PLANTED_TEXT)
        stored.save(path, "PNG", exif=exif.tobytes(), pnginfo=text)
    with Image.open(path) as check:  # the input really carries what the outputs must drop
        assert check.getexif().get_ifd(EXIF_GPS_IFD)[1] == "N"
        assert check.getexif()[EXIF_ARTIST] == PLANTED_TEXT

    result = remove(client, path)
    before = rgb(result[0][0])
    assert before.shape == (PORTRAIT_SIZE[1], PORTRAIT_SIZE[0], 3), "EXIF orientation applied once (upright)"
    for output in output_files(result):
        assert PLANTED_TEXT.encode() not in output.read_bytes(), f"{output.name} carries the input's metadata"
        if output.suffix.lower() in (".png", ".jpeg", ".jpg", ".webp"):
            with Image.open(output) as image:
                assert not image.getexif(), f"{output.name} has EXIF"
                assert not {"exif", "comment", "Comment", "Location", "xmp", "icc_profile"} & set(image.info), (
                    f"{output.name}: {set(image.info)}"
                )
    assert PLANTED_TEXT not in json.dumps(result[3])


def test_flagging_run_history_and_monitoring_are_off(served: Served) -> None:
    config = httpx.get(f"{served.url}/config", timeout=30).json()
    assert config["run_history"] is False
    assert config["show_error"] is False
    assert config["analytics_enabled"] is False
    assert not [dep for dep in config["dependencies"] if "flag" in str(dep.get("api_name") or "").lower()]
    labels = [str(block.get("props", {}).get("value", "")) for block in config["components"]]
    assert not [label for label in labels if label.lower().startswith("flag")], "no flagging button"
    options = served.app.launch_options()
    assert options["enable_monitoring"] is False and options["run_history"] is False
    for route in ("/monitoring", "/monitoring/summary"):
        assert 400 <= httpx.get(served.url + route, timeout=30).status_code < 500


def test_buttons_start_one_job_per_click(served: Served) -> None:
    config = httpx.get(f"{served.url}/config", timeout=30).json()
    named = {dep["api_name"]: dep for dep in config["dependencies"] if dep.get("api_name")}
    assert named["remove_double_chin"]["trigger_mode"] == "once"  # double clicks do not queue twice (§6.2 #14)
    assert named["strength_sweep"]["trigger_mode"] == "once"


def test_uploads_and_results_do_not_outlive_the_cache_sweep(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = served.app
    assert served.demo.delete_cache == app.DELETE_CACHE == (600, 1800), "the shipped page sweeps its files"
    folder = tmp_path / "sweep_tmp"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    monkeypatch.setattr(app, "DELETE_CACHE", (1, 1))  # sweep every second, files older than a second
    demo = app.build_demo(app.LOADED)
    assert demo.delete_cache == (1, 1)
    url = launch(app, demo)
    try:
        photo = tmp_path / "swept.png"
        portrait(tint=(10, 200, 200)).save(photo)
        uploaded = upload(url, photo)
        completed = queue_call(url, "remove_double_chin", default_inputs(file_data(uploaded)))[-1]
        assert completed["success"] is True
        created = [Path(uploaded), *(Path(path) for path in served_paths(completed["output"]["data"]))]
        assert {"swept.png", "result.png", "original.png", "w_plus.npy", "settings.json"} <= {p.name for p in created}
        assert all(path.is_relative_to(folder) for path in created)
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while any(path.exists() for path in created) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not [path.name for path in created if path.exists()], "uploads and results outlived the sweep"
    finally:
        demo.close()


def served_paths(data: object) -> Iterator[str]:
    """Every server-side file path in a queue result (FileData dicts, nested in lists and dicts)."""
    if isinstance(data, dict):
        if data.get("meta", {}).get("_type") == "gradio.FileData" and data.get("path"):
            yield data["path"]
        for value in data.values():
            yield from served_paths(value)
    elif isinstance(data, list):
        for item in data:
            yield from served_paths(item)


def plant_leftovers(folder: Path, outside: Path) -> tuple[list[Path], list[Path]]:
    """Files an earlier run would leave (returned first) and files that are not ours (returned second)."""
    folder.mkdir(parents=True, exist_ok=True)
    ours = [
        folder / ("ab" * 32) / "someones_photo.jpg",  # an upload: Gradio names its folder after the sha256
        folder / "c2f-results" / uuid.uuid4().hex / "result.png",
        folder / "tmpk3j4h5g6",  # an upload cut off mid-stream (Gradio's NamedTemporaryFile)
    ]
    for path in ours:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"earlier user's data")
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / "must_survive.txt"
    target.write_text("not in the temp folder")
    link = folder / ("cd" * 32)  # looks like Gradio's, but is a link to somewhere else: never followed
    link.symlink_to(outside, target_is_directory=True)
    theirs = [folder / "notes_of_another_tool.txt", folder / "another_tool" / "state.json", target]
    for path in theirs[:2]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not ours")
    return [*ours, link], theirs


def test_temp_dir_wipe_removes_only_what_gradio_and_the_app_leave(tmp_path: Path) -> None:
    folder = tmp_path / "gradio"
    ours, theirs = plant_leftovers(folder, tmp_path / "elsewhere")
    assert page_files.wipe_temp_dir(folder) == len(ours)
    assert not [path for path in ours if path.exists() or path.is_symlink()]
    assert all(path.exists() for path in theirs)
    assert page_files.wipe_temp_dir(tmp_path / "does_not_exist") == 0


def test_a_starting_server_never_wipes_a_folder_another_live_server_uses(tmp_path: Path) -> None:
    folder = tmp_path / "gradio"
    first = page_files.claim_temp_dir(folder)  # no other server: wipes (nothing there yet)
    assert first.removed == 0
    result = folder / page_files.RESULTS_SUBDIR / "0123abcd" / "result.png"
    result.parent.mkdir(parents=True)
    result.write_bytes(b"a live user's result")
    second = page_files.claim_temp_dir(folder)  # same folder while the first still runs
    assert second.removed is None and result.exists()
    first.lock.close()
    second.lock.close()  # both servers gone (the kernel drops a dead process's lock the same way)
    third = page_files.claim_temp_dir(folder)
    assert third.removed == 1 and not result.exists()
    third.lock.close()


# -- injected faults ---------------------------------------------------------------------------------------------


def fresh_photo(tmp_path: Path, seed: int) -> Path:
    """A portrait no earlier request has seen (so neither cache answers for it)."""
    rng = np.random.default_rng(seed)
    path = tmp_path / f"fresh_{seed}.png"
    portrait(tint=tuple(int(v) for v in rng.integers(0, 256, 3)), at=(int(rng.integers(0, 50)), 20)).save(path)
    return path


STAGES = {  # where an exception is injected → (object, attribute); GPU function, main process before and after it
    "detector": (DoubleChinRemover, "detect"),
    "inversion": (DoubleChinRemover, "prepare"),
    "paste-back": (AlignedFace, "paste_back"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_exception_inside_a_stage_gives_a_generic_message_and_the_traceback_stays_in_the_log(
    served: Served,
    client: Client,
    good_photo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stage: str,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"cannot open {SECRET}")

    owner, name = STAGES[stage]
    monkeypatch.setattr(owner, name, broken)
    photo = fresh_photo(tmp_path, seed=len(stage))
    caplog.set_level(logging.ERROR)
    messages = queue_call(served.url, "remove_double_chin", default_inputs(file_data(upload(served.url, photo))))
    completed = messages[-1]
    assert completed["msg"] == "process_completed" and completed["success"] is False
    assert completed["output"]["error"] == page_errors.INTERNAL_ERROR_MESSAGE
    raw = json.dumps(messages)
    assert SECRET not in raw and "RuntimeError" not in raw and "Traceback" not in raw
    assert "Traceback (most recent call last)" in caplog.text and SECRET in caplog.text, "the cause is logged"
    monkeypatch.undo()
    assert_serves(client, good_photo)


@pytest.mark.parametrize("cuda", [True, False], ids=["cuda", "cpu"])
def test_out_of_memory_gives_a_busy_message_and_frees_the_gpu_cache(
    served: Served, client: Client, good_photo: Path, monkeypatch: pytest.MonkeyPatch, cuda: bool
) -> None:
    freed: list[bool] = []

    def out_of_memory(*args: object, **kwargs: object) -> None:
        if cuda:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (see {SECRET})")
        raise MemoryError(SECRET)

    monkeypatch.setattr(DoubleChinRemover, "edit", out_of_memory)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    message = refused(client, good_photo, "^" + re.escape(page_errors.OUT_OF_MEMORY_MESSAGE) + "$")
    assert "CUDA" not in message
    assert freed == ([True] if cuda else []), "empty_cache runs once, and only when CUDA is there"
    monkeypatch.undo()
    assert_serves(client, good_photo)


def test_full_disk_while_saving_the_result_gives_a_clear_message(
    served: Served, client: Client, good_photo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(path: Path, image: np.ndarray) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", SECRET)

    monkeypatch.setattr(page_files, "write_png", disk_full)
    refused(client, good_photo, "^" + re.escape(page_errors.STORAGE_MESSAGE) + "$")
    assert "No space left on device" in caplog.text
    monkeypatch.undo()
    assert_serves(client, good_photo)


def test_unwritable_results_folder_gives_a_clear_message(
    served: Served, client: Client, good_photo: Path, temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = temp_dir / "a-file-not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(page_files, "RESULTS_SUBDIR", f"{blocker.name}/c2f-results")  # mkdir fails: ENOTDIR
    refused(client, good_photo, "^" + re.escape(page_errors.STORAGE_MESSAGE) + "$")
    monkeypatch.undo()
    blocker.unlink()
    assert_serves(client, good_photo)


def test_full_disk_during_an_upload_is_refused_and_the_server_stays_up(
    served: Served, client: Client, good_photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", SECRET)

    monkeypatch.setattr(gradio.route_utils, "NamedTemporaryFile", disk_full)  # where Gradio streams an upload to
    with good_photo.open("rb") as handle:
        response = httpx.post(f"{served.url}/gradio_api/upload", files={"files": ("a.png", handle)}, timeout=30)
    assert response.status_code >= 500
    assert_clean(response.text)
    monkeypatch.undo()
    assert_serves(client, good_photo)


def test_temp_dir_deleted_while_running_is_recreated(client: Client, good_photo: Path, temp_dir: Path) -> None:
    shutil.rmtree(temp_dir)
    assert_serves(client, good_photo)
    assert temp_dir.is_dir() and files_in(temp_dir)


# -- damaged weights at start (the files themselves: tests/weights/test_weights.py) --------------------------------


def weights_copy(source: Path, target: Path, replace: dict[str, bytes | None]) -> Path:
    """Hard links to the stand-in weights, except the files in ``replace`` (new bytes, or None = missing)."""
    target.mkdir()
    for path in source.iterdir():
        if path.name in replace:
            if replace[path.name] is not None:
                (target / path.name).write_bytes(replace[path.name])  # a new file: never writes through a link
            continue
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)
    return target


E4E, PARSER, VGG = "e4e_ffhq_encode.pt", "79999_iter.pth", "model.safetensors"
HTML_PAGE = b"<!DOCTYPE html><html><body>Quota exceeded. Please try again later.</body></html>"


class CodeOnLoad:
    """Unpickling this calls ``os.mkdir(path)``: the shape of a malicious checkpoint (RELIABILITY.md §6.2 #7)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


def unsafe_checkpoint(marker: Path) -> bytes:
    """A real torch zip checkpoint whose pickle would run code when loaded without ``weights_only``."""
    buffer = io.BytesIO()
    torch.save({"state_dict": CodeOnLoad(marker)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("case", "replace", "says"),
    [
        pytest.param("truncated", {E4E: "half"}, "could not be read as a PyTorch checkpoint", id="truncated"),
        pytest.param("html-page", {E4E: HTML_PAGE}, "text/HTML page", id="html-page"),
        pytest.param("missing-offline", {E4E: None}, "Hub access is disabled", id="missing-offline"),
        pytest.param("missing-hub-unreachable", {E4E: None}, "could not be reached", id="missing-hub-unreachable"),
        pytest.param(
            "unsafe-pickle", {E4E: "unsafe"}, "could not be read as a PyTorch checkpoint", id="unsafe-pickle"
        ),
    ],
)
def test_damaged_main_weights_at_start_show_what_is_missing(
    app_module: ModuleType,
    stand_in_weights_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    replace: dict[str, object],
    says: str,
) -> None:
    marker = tmp_path / "code_ran"
    made = {
        "half": lambda name: half((stand_in_weights_dir / name).read_bytes()),
        "unsafe": lambda _: unsafe_checkpoint(marker),
    }
    contents = {name: made[value](name) if isinstance(value, str) else value for name, value in replace.items()}
    folder = weights_copy(stand_in_weights_dir, tmp_path / "weights", contents)
    monkeypatch.setenv("C2F_WEIGHTS_DIR", str(folder))
    if case == "missing-offline":
        monkeypatch.setenv("C2F_ALLOW_DOWNLOAD", "1")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if case == "missing-hub-unreachable":  # nothing listens on that port: the connection is refused at once
        monkeypatch.setenv("C2F_ALLOW_DOWNLOAD", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    start = time.perf_counter()
    loaded = app_module.load_remover_from_env()
    assert time.perf_counter() - start < REQUEST_TIMEOUT_S
    assert isinstance(loaded, WeightsError)
    assert says in str(loaded) and E4E in str(loaded)
    panel = page_text(app_module.build_demo(loaded))
    assert "The model weights are not available, so photos cannot be processed" in panel
    assert E4E in panel and "How to provide them" in panel
    if case == "html-page":  # recognised before torch.load and moved aside, so it is never tried again
        assert not (folder / E4E).exists() and (folder / (E4E + ".corrupt")).exists()
    assert not marker.exists(), "the checkpoint's pickle ran code"


@pytest.mark.parametrize(
    ("replace", "note"),
    [
        ({PARSER: HTML_PAGE}, "The face parser is unavailable"),
        ({VGG: None}, "VGG16 weights are unavailable"),
    ],
    ids=["parser-html-page", "vgg-missing"],
)
def test_damaged_optional_weights_start_a_degraded_app_that_says_so(
    app_module: ModuleType,
    stand_in_weights_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    replace: dict[str, bytes | None],
    note: str,
) -> None:
    monkeypatch.setenv("C2F_WEIGHTS_DIR", str(weights_copy(stand_in_weights_dir, tmp_path / "weights", replace)))
    loaded = app_module.load_remover_from_env()
    assert isinstance(loaded, DoubleChinRemover)
    assert any(item.startswith(note) for item in loaded.models.notes)
    assert note in page_text(app_module.build_demo(loaded)), "the banner tells visitors"


@pytest.mark.parametrize("requested", ["cuda", "cuda:3", "tpu"])
def test_a_device_this_machine_lacks_falls_back_to_the_cpu_with_a_warning(
    app_module: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, requested: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("C2F_DEVICE", requested)
    assert page_environment.device_from_env() == "cpu"
    assert f"C2F_DEVICE={requested} cannot be used" in caplog.text
    monkeypatch.setenv("C2F_DEVICE", "cpu")
    assert page_environment.device_from_env() == "cpu"
    monkeypatch.delenv("C2F_DEVICE")
    assert page_environment.device_from_env() == "auto"


def page_text(demo: object) -> str:
    texts = [block.get("props", {}).get("value") for block in demo.config["components"]]  # type: ignore[attr-defined]
    return "\n".join(text for text in texts if isinstance(text, str))


# -- SIGTERM and restart of the real app -------------------------------------------------------------------------


class AppProcess:
    """``python app.py`` in a subprocess, on a free loopback port, logging to a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "app.py"],
                cwd=REPO_ROOT,
                env={**env, "GRADIO_SERVER_PORT": str(self.port)},
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"app.py exited early:\n{self.log_tail()}"
            try:
                if httpx.get(f"{self.url}/config", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        pytest.fail(f"app.py did not start within {SERVER_START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)

    def kill_if_running(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


@pytest.mark.slow
def test_sigterm_then_restart_wipes_the_previous_uploads_and_serves_again(
    stand_in_weights_dir: Path, tmp_path: Path, good_photo: Path
) -> None:
    folder = tmp_path / "gradio_tmp"
    env = {
        **os.environ,
        "C2F_WEIGHTS_DIR": str(stand_in_weights_dir),
        "C2F_DEVICE": "cpu",
        "C2F_ALLOW_DOWNLOAD": "0",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(folder),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "app.log"
    first = AppProcess(env, log)
    try:
        first.wait_ready()
        client = Client(first.url, verbose=False, download_files=str(tmp_path / "downloads"))
        (before, after), *_ = remove(client, good_photo)
        assert rgb(after).shape == rgb(before).shape
        served_files = [folder / name for name in files_in(folder)]
        uploads = [path for path in served_files if path.name == good_photo.name]
        results = [path for path in served_files if "c2f-results" in path.parts]
        assert uploads and results, served_files
        leftovers, foreign = plant_leftovers(folder, tmp_path / "elsewhere")
        assert first.terminate() is not None, "app.py stops on SIGTERM"
    finally:
        first.kill_if_running()
    assert all(path.exists() or path.is_symlink() for path in leftovers), "nothing deleted them before the restart"

    second = AppProcess(env, log)
    try:
        second.wait_ready()
        assert not [path for path in [*uploads, *results, *leftovers] if path.exists() or path.is_symlink()], (
            f"the previous run's files survived the restart: {files_in(folder)}"
        )
        assert all(path.exists() for path in foreign), "only the app's own files are wiped"
        assert "removed" in second.log_tail() and "leftovers of an earlier run" in second.log_tail()
        client = Client(second.url, verbose=False, download_files=str(tmp_path / "downloads2"))
        (before, after), *_ = remove(client, good_photo)
        assert rgb(after).shape == rgb(before).shape, "the restarted app serves again"
    finally:
        second.terminate()
        second.kill_if_running()
