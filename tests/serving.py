"""Serving the app in the test process and talking to it: shared by the page, HTTP, load and browser tests.

Not a test module: the fixtures built on these (``app_module``, ``served``, ``client``) live in conftest.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import gradio as gr
import httpx
import numpy as np
import pytest
from PIL import Image

import pipeline.remover as remover_module
from bench.full_size import SyntheticLabelParser
from pipeline.config import ALIGNED_SIZE, EXAMPLES_DIR
from pipeline.faces.align import Face, align_face
from pipeline.remover import DoubleChinRemover, FaceEdit, PreparedFace
from pipeline.settings import RemovalSettings

EXAMPLE = EXAMPLES_DIR / "00016.png"
TEST_PHOTO_SIZE = (720, 860)  # (width, height): not square, so "same size" means something
FACE_SIZE = 640  # side the 1024² example is resized to inside the test photo
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.png"))
PORTRAIT_SIZE = (360, 440)  # (width, height) of the test portraits: small, so detection and paste-back are quick
PORTRAIT_FACE_SIZE = 300  # side the 1024² example is resized to inside a test portrait (dlib finds a ~155-190 px face)
REQUEST_TIMEOUT_S = 120.0  # one request on a loaded 2-core machine, with generous slack


class SyntheticLabelRemover(DoubleChinRemover):
    """The remover with the benchmark's synthetic face parser, so the jaw warp really runs on stand-in weights.

    Random BiSeNet weights label pixels at random, so the neck mask of the photo is empty and the warp is skipped.
    :class:`bench.full_size.SyntheticLabelParser` runs the (random) parser and returns a plausible label map drawn from
    the face's landmarks instead (skin face, neck below the chin; the edited render's jaw a little higher), so the
    mask, the jaw warp and their notes are the ones real weights produce. ``prepare`` and ``edit`` tell it which face
    and which image (the aligned photo or the edited render) comes next.
    """

    def __init__(self, remover: DoubleChinRemover) -> None:
        self.parser = SyntheticLabelParser(remover.models.parser)
        super().__init__(
            dataclasses.replace(remover.models, parser=self.parser), boundaries_dir=remover.boundaries_dir
        )
        self.progress_bars = False

    def prepare(self, image: np.ndarray, face: Face, settings: RemovalSettings, **kwargs: object) -> PreparedFace:
        self.parser.set_landmarks(align_face(image, face, ALIGNED_SIZE).to_aligned(face.landmarks), ALIGNED_SIZE)
        return super().prepare(image, face, settings, **kwargs)  # type: ignore[arg-type]

    def edit(self, prepared: PreparedFace, settings: RemovalSettings, **kwargs: object) -> FaceEdit:
        self.parser.set_landmarks(prepared.landmarks, ALIGNED_SIZE, edited=True)
        return super().edit(prepared, settings, **kwargs)  # type: ignore[arg-type]


WARP_SKIPPED = "The jaw warp was skipped"  # the note of a warp that did not run (pipeline/remover.py)


@dataclass
class Served:
    """A launched demo and what the tests need to talk to it."""

    app: ModuleType
    demo: gr.Blocks
    url: str
    calls: Counter[str]  # how often the wrapped pipeline functions ran


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use_stand_in_environment(monkeypatch: pytest.MonkeyPatch, weights_dir: Path, temp_dir: Path) -> None:
    """Point app.py at stand-in weights on the CPU, offline, with its own Gradio temp folder."""
    monkeypatch.setenv("C2F_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("C2F_DEVICE", "cpu")
    monkeypatch.setenv("C2F_ALLOW_DOWNLOAD", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp_dir))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")


def import_app() -> ModuleType:
    """Import app.py (its models load at import: once per session, with the environment set above)."""
    app = importlib.import_module("app")
    assert isinstance(app.LOADED, DoubleChinRemover), app.LOADED
    assert app.LOADED.models.stand_in, "app.py was imported before with other weights"
    return app


def counting(calls: Counter[str], name: str, function: Callable[..., object]) -> Callable[..., object]:
    def wrapper(*args: object, **kwargs: object) -> object:
        calls[name] += 1
        return function(*args, **kwargs)

    return wrapper


def launch(app: ModuleType, demo: gr.Blocks) -> str:
    """Launch ``demo`` on a free loopback port with the shipped queue and launch options; returns its URL."""
    demo.queue(**app.QUEUE_OPTIONS)
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **app.launch_options()
    )
    return url.rstrip("/")


def serve(monkeypatch: pytest.MonkeyPatch, app: ModuleType) -> Iterator[Served]:
    """Build the demo as app.py does, count encoder/optimiser runs, and serve it for the duration."""
    calls: Counter[str] = Counter()
    for name in ("invert_with_encoder", "optimise_latent"):
        monkeypatch.setattr(remover_module, name, counting(calls, name, getattr(remover_module, name)))
    demo = app.build_demo(app.LOADED)
    url = launch(app, demo)
    try:
        yield Served(app, demo, url, calls)
    finally:
        demo.close()


def make_test_photo(path: Path, example: Path = EXAMPLE) -> Path:
    """A non-square photo: the example face, shrunk and padded with its edge colours."""
    face = Image.open(example).convert("RGB").resize((FACE_SIZE, FACE_SIZE), Image.Resampling.LANCZOS)
    width, height = TEST_PHOTO_SIZE
    left, top = (width - FACE_SIZE) // 2, (height - FACE_SIZE) // 3
    padded = np.pad(
        np.asarray(face), ((top, height - FACE_SIZE - top), (left, width - FACE_SIZE - left), (0, 0)), mode="edge"
    )
    Image.fromarray(padded).save(path, quality=95)
    return path


def make_landscape(path: Path) -> Path:
    """A smooth colour gradient: a valid photo without any face."""
    height, width = 300, 400
    red = np.broadcast_to(np.linspace(0, 255, width)[None, :], (height, width))
    green = np.broadcast_to(np.linspace(0, 255, height)[:, None], (height, width))
    blue = np.full((height, width), 128.0)
    Image.fromarray(np.stack([red, green, blue], axis=2).astype(np.uint8)).save(path)
    return path


def rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def portrait(
    example: Path = EXAMPLES[0],
    *,
    size: tuple[int, int] = PORTRAIT_SIZE,
    face: int = PORTRAIT_FACE_SIZE,
    at: tuple[int, int] = (30, 20),
    tint: tuple[int, int, int] = (90, 140, 200),
) -> Image.Image:
    """An example face placed on a flat-coloured canvas (tint and position make every test photo distinct)."""
    width, height = size
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = tint
    face_pixels = np.asarray(Image.open(example).convert("RGB").resize((face, face), Image.Resampling.LANCZOS))
    x, y = at
    canvas[y : y + face, x : x + face] = face_pixels
    return Image.fromarray(canvas)


HTML_FILENAME = "<img src=x onerror=alert(1)>.jpg"


def upload(url: str, path: Path) -> str:
    """Upload ``path`` through Gradio's upload route; returns the server-side path."""
    with path.open("rb") as handle:
        response = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, handle)}, timeout=30)
    response.raise_for_status()
    return response.json()[0]


def file_data(server_path: str, name: str = "photo.png") -> dict[str, object]:
    return {"path": server_path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def queue_call(url: str, api_name: str, data: list[object], timeout: float = REQUEST_TIMEOUT_S) -> list[dict]:
    """Join the queue for ``api_name`` with raw ``data`` and return every SSE message up to completion."""
    config = httpx.get(f"{url}/config", timeout=30).json()
    fn_index = next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == api_name)
    session = uuid.uuid4().hex
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    headers = {"Content-Type": "application/json"}
    joined = httpx.post(f"{url}/gradio_api/queue/join", content=json.dumps(body), headers=headers, timeout=30)
    joined.raise_for_status()
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as sse:
        buffer = ""
        for chunk in sse.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                line, buffer = buffer.split("\n\n", 1)
                if line.startswith("data:"):
                    messages.append(json.loads(line[5:]))
                    if messages[-1]["msg"] in ("process_completed", "close_stream"):
                        return messages
            assert time.monotonic() < deadline, "the queue did not answer in time"
    return messages


def default_inputs(photo: object) -> list[object]:
    """The remove_double_chin inputs in order, with the CPU defaults."""
    return [photo, -5.0, False, "warp", "encoder", 1, [], 0, 0, 0, None, False, "fine/all", True]


def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
