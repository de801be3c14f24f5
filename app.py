"""The Hugging Face Space: a one-page Gradio app that removes double chins from portraits.

A thin UI shell over :mod:`pipeline` (the hysts Space pattern: ``demo`` at module level, ``launch`` only under
``__main__``). Method: Wu, Yang, Xiao and Jin, "Coarse-to-Fine: Facial Structure Editing of Portrait Images via Latent
Space Classifications" (SIGGRAPH 2021). Public-service settings follow design/RELIABILITY.md (§0, §1.3, §2.2).

How one request runs:

1. The photo input (:class:`SafeImage`) decodes the upload with :func:`pipeline.faces.decode.decode_upload`
   (allow-listed formats, size limits, EXIF orientation once) instead of Gradio's unrestricted Pillow call, so a bad
   file gets our message.
2. Faces are detected in the main process on the CPU (a photo without a face never reaches the GPU).
3. The one ``@spaces.GPU`` function aligns and inverts the face (unless cached), moves the code along the boundary and
   refines the neck. Its argument and result are picklable CPU values: ZeroGPU runs it in a forked worker.
4. The main process pastes the face back at full size, writes the outputs, and keeps the aligned crop, transform and
   W+ code in a small LRU cache keyed by the photo's pixels and the inversion settings, so moving the strength slider
   or switching the method re-runs only edit + refinement, never the inversion.

Environment: ``C2F_WEIGHTS_DIR`` (weights folder), ``C2F_DEVICE`` (auto / cpu / cuda), ``C2F_ALLOW_DOWNLOAD``
(default 1: fetch missing weights from the Hub), and Gradio's own ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` /
``GRADIO_TEMP_DIR``. ``python app.py`` first removes what earlier runs left in that temporary folder (uploads and
results of their users). Hazards, faults and the tests that check them: docs/reliability.md.
"""

from __future__ import annotations

import spaces  # isort: skip  (first: on ZeroGPU it must patch torch before anything else imports it)

# isort: split
import base64
import binascii
import dataclasses
import hashlib
import html
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import gradio as gr
import gradio.component_meta
import numpy as np
import torch
from gradio.data_classes import ImageData
from gradio.utils import get_upload_folder
from PIL import Image
from tqdm.auto import tqdm

from pipeline.allocator import keep_freed_memory
from pipeline.config import CHECKPOINTS_DIR, EXAMPLES_DIR, NUM_WS
from pipeline.device import select_device
from pipeline.errors import InputImageError, PipelineError, WeightsError
from pipeline.faces.align import Face, find_faces
from pipeline.faces.decode import DecodedImage, decode_upload
from pipeline.latent.editing import MAX_LATENT_FILE_BYTES, load_latent_code, strength_sweep
from pipeline.models import STAND_IN_NOTE
from pipeline.refinement.compositing import composite, mask_overlay
from pipeline.remover import RECONSTRUCTION_PREVIEW_SIZE, DoubleChinRemover, FaceEdit, PreparedFace, RemovalResult
from pipeline.settings import MAX_STEPS, STRENGTH_MAX, STRENGTH_MIN, RemovalSettings, default_settings
from pipeline.weights.registry import REGISTRY, format_status, resolve_weights_dir, weights_status

logger = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

if __name__ == "__main__":  # before the models load at import, so their log lines are shown
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # process-wide glibc tuning: renders reuse their memory (docs/performance.md)

# -- configuration ---------------------------------------------------------------------------------------------------

DEVICE_ENV = "C2F_DEVICE"  # auto / cpu / cuda / cuda:N
ALLOW_DOWNLOAD_ENV = "C2F_ALLOW_DOWNLOAD"  # 0/false/no/off: never touch the network for weights
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

MAX_FILE_SIZE_MB = 10  # uploads above this get HTTP 413 (RELIABILITY.md §0 item 2; a 40 MP JPEG is ~8–15 MB)
QUEUE_MAX_SIZE = 16  # waiting requests beyond this get "Queue is full" (RELIABILITY.md §0 item 4: peers use 4–25)
DELETE_CACHE = (600, 1800)  # sweep temporary files every 10 min, deleting those older than 30 min (§1.3)
CACHE_ENTRIES = 8  # prepared faces kept in memory (~7 MB each: 1024² crop, reconstruction, parsing labels)
FACE_CACHE_ENTRIES = 8  # detection results kept per photo
MAX_FACE_NUMBER = 15  # "too many faces (>15)" bound of RELIABILITY.md §2.3 (a CodeFormer Space derivative)
SEED_MAX = 2**31 - 1
# Optimisation steps a user may ask for here, bounded so one request cannot hold the queue for long
# (RELIABILITY.md §0 item 12): device type → (inversion steps, diffuse refinement steps); never above MAX_STEPS.
STEP_CAPS = {"cuda": (500, 300), "cpu": (100, 100)}
STEP_INCREMENT = 10
SWEEP_FRAMES = 6  # frames of the strength-sweep animation, strength 0 … chosen strength
SWEEP_FRAME_SIZE = 384  # side of each animation frame in pixels (the aligned crop is 1024²)
SWEEP_FRAME_MS = 220  # display time of each frame
SWEEP_WEBP_QUALITY = 85
PNG_COMPRESS_LEVEL = 3  # zlib level of the lossless outputs: ~4× faster than Pillow's 6 for ~9 % larger files
OUTPUT_COUNT = 5  # slider, stages, downloads, summary, notes
RESULTS_SUBDIR = "c2f-results"  # per-request folders under Gradio's cache
# What earlier runs leave in Gradio's temporary folder (wiped at start, see wipe_temp_dir): Gradio keeps each uploaded
# or cached file in a folder named after its sha256 (gradio/processing_utils.py::hash_file, route_utils.upload_fn) and
# streams uploads into NamedTemporaryFile()s ("tmp…") in the folder itself.
GRADIO_HASH_FOLDER = re.compile(r"[0-9a-f]{64}")
GRADIO_PARTIAL_UPLOAD_PREFIX = "tmp"
# ZeroGPU time budget of one GPU call, in seconds: a base for model transfer, alignment, encoder, parsing and the
# warp, plus per-step costs of the optimisation loops. Estimates for a ZeroGPU slice (not measured here: no GPU).
GPU_BASE_SECONDS = 20
GPU_SECONDS_PER_INVERSION_STEP = 0.15
GPU_SECONDS_PER_REFINE_STEP = 0.15
GPU_SECONDS_PER_SWEEP_FRAME = 1.0

INTERNAL_ERROR_MESSAGE = (
    "Something went wrong on our side while processing this photo. Please try again; if it keeps happening, try "
    "another photo or the default settings."
)
OUT_OF_MEMORY_MESSAGE = (
    "The server ran out of memory (it may be busy, or the photo or the settings too demanding). Please try again in "
    "a moment, or with a smaller photo or the default settings."
)
STORAGE_MESSAGE = (
    "The server could not save the result (its temporary storage is full or not writable). Please try again in a few "
    "minutes."
)
STAND_IN_BANNER = (
    "**Small random stand-in weights: results are not real.** They exist to test the app offline; point "
    "`C2F_WEIGHTS_DIR` at the real weights (or let the app download them) for real results."
)
NO_PHOTO_MESSAGE = "Please upload a photo (or pick one of the examples) first."
STAGE_PROGRESS = {  # pipeline stage → (fraction done when it starts, label shown to the user)
    "detect": (0.03, "Finding faces"),
    "align": (0.08, "Aligning the face"),
    "invert": (0.15, "Encoding the face into W+"),
    "optimise": (0.2, "Optimising the W+ code"),
    "reconstruct": (0.45, "Rendering the reconstruction"),
    "parse": (0.5, "Parsing the face"),
    "mask": (0.6, "Finding the neck region"),
    "edit": (0.65, "Moving along the double-chin boundary"),
    "refine_warp": (0.75, "Refining the neck (warp)"),
    "refine_diffuse": (0.75, "Refining the neck (diffuse)"),
    "sweep": (0.85, "Rendering the strength sweep"),
    "paste_back": (0.9, "Pasting the face back into the photo"),
    "save": (0.95, "Saving the results"),
}

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="pink", neutral_hue="slate")
CSS = """
.c2f-banner {border-radius: 8px; padding: 10px 14px !important}
.c2f-warning {background: #fff7e6; border: 1px solid #f0a020}
.c2f-error {background: #fdecec; border: 1px solid #d93030}
.c2f-notes {font-size: 0.92em}
"""
PAPER_URL = "https://doublechinremoval.github.io/"
CODE_URL = (
    "https://github.com/oneThousand1000/Facial-Structure-Editing-of-Portrait-Images-via-Latent-Space-Classifications"
)

QUEUE_OPTIONS: dict[str, Any] = {
    "max_size": QUEUE_MAX_SIZE,
    "default_concurrency_limit": 1,  # one model job at a time (RELIABILITY.md §0 item 4)
    "api_open": False,  # no queue bypass through /gradio_api/run/… (§0 item 3)
}


def launch_options() -> dict[str, Any]:
    """Keyword arguments of ``demo.launch`` for a public service (the tests launch with exactly these)."""
    return {
        "max_file_size": f"{MAX_FILE_SIZE_MB}mb",
        "show_error": False,  # only gr.Error texts reach users (RELIABILITY.md §0 item 5)
        "enable_monitoring": False,  # /monitoring/summary would be public (§0 item 14)
        "run_history": False,  # do not keep inputs/outputs in the browser's localStorage (§0 item 14)
        "strict_cors": True,
        "share": False,
        "ssr_mode": False,  # server-side rendering needs a Node server; not needed here
        "allowed_paths": [],
        "blocked_paths": [str(CHECKPOINTS_DIR.resolve()), str(resolve_weights_dir().resolve())],
        "theme": THEME,
        "css": CSS,
    }


# -- model loading ---------------------------------------------------------------------------------------------------


def env_flag(name: str, default: bool) -> bool:
    """A boolean environment variable: unset → ``default``; 0/false/no/off → False; anything else → True."""
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value not in FALSE_WORDS


def device_from_env() -> str:
    """``C2F_DEVICE`` (default auto), or "cpu" with a warning in the log when this machine does not have that device.

    A Space moved to CPU hardware (or a typo) keeps serving on the CPU, with the CPU's step caps, instead of failing
    to start (RELIABILITY.md §6.2 item 9).
    """
    requested = os.environ.get(DEVICE_ENV, "").strip() or "auto"
    try:
        select_device(requested)
    except (ValueError, RuntimeError) as err:
        logger.warning("%s=%s cannot be used (%s); running on the CPU instead", DEVICE_ENV, requested, err)
        return "cpu"
    return requested


def load_remover_from_env() -> DoubleChinRemover | WeightsError:
    """Load every model once, as the environment says; a weights problem is returned (and logged), not raised."""
    device = device_from_env()
    try:
        return DoubleChinRemover.from_pretrained(
            None, device=device, allow_download=env_flag(ALLOW_DOWNLOAD_ENV, default=True)
        )
    except WeightsError as err:
        logger.error("starting without models: %s", err)
        return err


# -- small helpers ---------------------------------------------------------------------------------------------------


class LruCache(Generic[K, V]):
    """A bounded, thread-safe least-recently-used map (Gradio runs event handlers in a thread pool)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value for ``key`` (which becomes the most recent), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        """Store ``value``, dropping the least recently used entries beyond the capacity."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def user_error(message: str) -> gr.Error:
    """A gr.Error for the user, as a sentence; HTML-escaped because Gradio renders error messages as HTML."""
    return gr.Error(html.escape(message[:1].upper() + message[1:], quote=False), print_exception=False)


@contextmanager
def user_facing_errors() -> Iterator[None]:
    """Turn every failure into a gr.Error: ours verbatim, anything else generic (logged here with its traceback)."""
    try:
        yield
    except gr.Error:
        raise
    except PipelineError as err:
        raise user_error(str(err)) from None
    except (torch.OutOfMemoryError, MemoryError):
        logger.exception("out of memory")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # RELIABILITY.md §0 item 11: free the cache so the next request can run
        raise user_error(OUT_OF_MEMORY_MESSAGE) from None
    except Exception:
        logger.exception("unexpected failure while processing a photo")
        raise user_error(INTERNAL_ERROR_MESSAGE) from None


def pixel_hash(image: np.ndarray) -> str:
    """sha256 of a decoded photo's shape and pixels: the same photo hits the cache under any file name or format."""
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def read_user_code(path: str | None) -> np.ndarray | None:
    """Validate an uploaded W+ code file. Messages never name the file (its name is user-controlled)."""
    if not path:
        return None
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_LATENT_FILE_BYTES + 1)  # one byte more, so an oversized file is reported as such
    except OSError as err:
        raise PipelineError("The W+ code file could not be read. Please upload it again.") from err
    return load_latent_code(data)


def data_url_bytes(url: str) -> bytes:
    """The payload of a base64 ``data:`` image URL (sent by some clients), bounded like a file upload."""
    header, _, payload = url.partition(",")
    base64_limit = MAX_FILE_SIZE_MB * 1024 * 1024 * 4 // 3 + 4
    if not header.endswith(";base64") or len(payload) > base64_limit:
        raise InputImageError(f"Please upload the photo as a file (JPEG, PNG or WebP, at most {MAX_FILE_SIZE_MB} MB).")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputImageError("The photo data could not be read. Please upload the photo as a file.") from err


@contextmanager
def no_pyi_stubs() -> Iterator[None]:
    """Keep Gradio from writing a ``.pyi`` stub while a component subclass is defined.

    Gradio's component metaclass writes a stub next to the module of every component subclass (a convenience for
    custom-component packages); for this module that would be an ``app.pyi`` in the repository at every import.
    """
    original = gradio.component_meta.create_or_modify_pyi
    gradio.component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        gradio.component_meta.create_or_modify_pyi = original


with no_pyi_stubs():

    class SafeImage(gr.Image):
        """gr.Image whose upload is decoded by :func:`pipeline.faces.decode.decode_upload`, not Gradio's Pillow call.

        Gradio's own preprocess opens a file with every Pillow plugin before the event function runs, so undecodable
        files and bombs end as an opaque error (RELIABILITY.md §2.2). Here the event function receives a
        :class:`~pipeline.faces.decode.DecodedImage` (or None), and every bad upload becomes a specific message. A
        subclass (not a patched instance) because Gradio rebuilds a component from its class when an event updates it.
        """

        is_template = True  # the browser renders it with gr.Image's front end (Gradio names it after the parent)

        def preprocess(self, payload: ImageData | None) -> DecodedImage | None:  # type: ignore[override]
            """Decode the uploaded file (Gradio has already checked that it is in its upload folder)."""
            if payload is None:
                return None
            with user_facing_errors():
                if payload.path:
                    return decode_upload(payload.path)
                if payload.url and payload.url.startswith("data:"):
                    return decode_upload(data_url_bytes(payload.url))
                raise InputImageError(NO_PHOTO_MESSAGE)

    class SettingSlider(gr.Slider):
        """gr.Slider that answers a malformed API value with :func:`checked_setting`'s message."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type, then Gradio's bounds check."""
            expected = number_range(self.minimum, self.maximum)
            return checked_setting(self.label, expected, is_finite_number(payload), super().preprocess, payload)

    class SettingNumber(gr.Number):
        """gr.Number that answers a malformed API value with :func:`checked_setting`'s message."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type, then Gradio's bounds check and rounding."""
            expected = number_range(self.minimum, self.maximum)
            return checked_setting(self.label, expected, is_finite_number(payload), super().preprocess, payload)

    class SettingCheckbox(gr.Checkbox):
        """gr.Checkbox that accepts only true or false (Gradio passes any value through)."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type."""
            return checked_setting(self.label, "true or false", isinstance(payload, bool), super().preprocess, payload)

    class SettingRadio(gr.Radio):
        """gr.Radio that answers a malformed API value with :func:`checked_setting`'s message."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type, then Gradio's choices check."""
            expected = "one of " + ", ".join(f"“{value}”" for _, value in self.choices)
            return checked_setting(self.label, expected, isinstance(payload, str), super().preprocess, payload)

    class SettingDropdown(gr.Dropdown):
        """A multiselect gr.Dropdown of numbers; a malformed API value gets :func:`checked_setting`'s message.

        Gradio itself lets ``true`` through (it equals the choice 1), which the handler cannot iterate.
        """

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type, then Gradio's choices check."""
            expected = "a list of numbers from " + ", ".join(str(value) for _, value in self.choices)
            valid = payload is None or (isinstance(payload, list) and all(is_finite_number(item) for item in payload))
            return checked_setting(self.label, expected, valid, super().preprocess, payload)


def is_finite_number(value: object) -> bool:
    """Whether ``value`` is an int or float (not a bool) and finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number_range(minimum: float | None, maximum: float | None) -> str:
    """The phrase "a number from A to B" (open-ended when a bound is missing)."""

    def plain(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else f"{value:g}"

    if minimum is None and maximum is None:
        return "a finite number"
    if minimum is None:
        return f"a number up to {plain(maximum)}"  # type: ignore[arg-type]
    if maximum is None:
        return f"a number from {plain(minimum)}"
    return f"a number from {plain(minimum)} to {plain(maximum)}"


def checked_setting(
    label: str | None, expected: str, valid: bool, preprocess: Callable[[Any], Any], payload: Any
) -> Any:
    """Preprocess one setting sent by the page or the API, refusing a malformed value with a message of ours.

    Gradio answers a wrong type with an opaque "upstream Gradio app has raised an exception" (its bounds check compares
    a string with a number), lets some values through (a checkbox takes anything), and its own messages repeat the
    value unescaped. Ours names the control and what it takes, never the value (RELIABILITY.md §6.1 item 42).

    Raises:
        gr.Error: the value has the wrong type or is out of range.
    """
    message = f"The value sent for “{label}” is not valid: it must be {expected}."
    if not valid:
        raise user_error(message)
    try:
        return preprocess(payload)
    except Exception as err:  # gr.Error (out of range, not a choice) or TypeError/ValueError from Gradio's checks
        logger.info("refused a value for %s: %s", label, type(err).__name__)
        raise user_error(message) from None


def stage_reporter(progress: gr.Progress | None) -> Callable[[str], None]:
    """An ``on_stage`` callback showing each stage's name (and a rough fraction) in Gradio's progress bar."""

    def report(stage: str) -> None:
        if progress is not None:
            fraction, label = STAGE_PROGRESS.get(stage, (None, stage.replace("_", " ").capitalize()))
            progress(fraction, desc=label)

    return report


class ResultFolders:
    """Per-request folders for the output files, under Gradio's cache so that Gradio serves and sweeps them.

    Gradio's ``delete_cache`` sweep deletes old files but leaves their folders, and it does not run when the process is
    killed (RELIABILITY.md §6.2 item 18), so old folders are also removed here, at most every ``interval_s``.
    """

    def __init__(self, max_age_s: float = DELETE_CACHE[1], interval_s: float = DELETE_CACHE[0]) -> None:
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._next_sweep = 0.0  # time.monotonic() of the next sweep; 0 = at the first request

    @property
    def root(self) -> Path:
        """Where the folders go (read at call time: Gradio's folder follows ``GRADIO_TEMP_DIR``)."""
        return Path(get_upload_folder()) / RESULTS_SUBDIR

    def new(self) -> Path:
        """A fresh, empty folder for one request's files."""
        with self._lock:
            due = time.monotonic() >= self._next_sweep
            if due:
                self._next_sweep = time.monotonic() + self.interval_s
        if due:
            self.sweep()
        folder = self.root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def sweep(self) -> int:
        """Delete folders older than ``max_age_s``; returns how many were removed."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for folder in self.root.iterdir():
            try:
                if time.time() - folder.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(folder)
                    removed += 1
            except OSError as err:  # a concurrent sweep got there first, or a permission problem: next time
                logger.info("could not remove %s: %s", folder.name, type(err).__name__)
        return removed


def wipe_temp_dir(folder: Path | None = None) -> int:
    """Delete the uploads, results and cached copies that earlier runs left in the app's temporary folder.

    Gradio's ``delete_cache`` sweep does not run when the process is killed (RELIABILITY.md §6.2 item 18), so a
    restarted server would otherwise keep the previous users' photos. Only what Gradio and this app create there is
    removed: sha256-named folders, the results folder and partial uploads. Anything else is left alone, and symbolic
    links are removed without following them. Call it before the page is built (building it caches the examples).

    Args:
        folder: the folder to clean (default: Gradio's, which ``GRADIO_TEMP_DIR`` sets).

    Returns:
        How many entries were removed.
    """
    folder = Path(get_upload_folder()) if folder is None else folder
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        ours = GRADIO_HASH_FOLDER.fullmatch(entry.name) is not None or entry.name == RESULTS_SUBDIR
        partial_upload = entry.name.startswith(GRADIO_PARTIAL_UPLOAD_PREFIX) and entry.is_file()
        if not (ours or partial_upload):
            continue
        try:
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink()
            else:
                shutil.rmtree(entry)
            removed += 1
        except OSError as err:
            logger.warning("could not remove %s from the temporary folder: %s", entry.name, type(err).__name__)
    return removed


@contextmanager
def storage_errors() -> Iterator[None]:
    """Report a failure to write the result files (disk full, folder not writable) as such; the cause is logged."""
    try:
        yield
    except OSError as err:
        logger.exception("could not write the result files")
        raise PipelineError(STORAGE_MESSAGE) from err


def write_png(path: Path, image: np.ndarray) -> str:
    """Save (H, W, 3) uint8 RGB as a metadata-free PNG; returns the path as a string."""
    Image.fromarray(image).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return str(path)


def write_sweep(path: Path, frames: tuple[np.ndarray, ...]) -> str:
    """Save frames as a looping animated WebP that plays forward, then back."""
    images = [Image.fromarray(frame).resize((SWEEP_FRAME_SIZE,) * 2, Image.Resampling.LANCZOS) for frame in frames]
    loop = images + images[-2:0:-1]  # there and back again, without repeating the end frames
    loop[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=loop[1:],
        duration=SWEEP_FRAME_MS,
        loop=0,
        quality=SWEEP_WEBP_QUALITY,
    )
    return str(path)


def stage_gallery(edit: FaceEdit) -> list[tuple[np.ndarray, str]]:
    """The intermediate images of one face edit, in order, with captions."""
    prepared = edit.prepared
    return [
        (prepared.aligned.image, "1 · Aligned crop"),
        (prepared.reconstruction, f"2 · Reconstruction ({prepared.inversion})"),
        (edit.edited, "3 · Edited render"),
        (mask_overlay(prepared.aligned.image, edit.blend_mask), "4 · Neck mask"),
        (edit.refined, "5 · Refined crop"),
    ]


def notes_markdown(notes: list[str]) -> str:
    """Notes as a Markdown list (empty string when there are none)."""
    return "\n".join(["**Notes**", *(f"- {html.escape(note, quote=False)}" for note in notes)]) if notes else ""


# -- the GPU part ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuJob:
    """Everything the GPU function needs, as picklable CPU values (ZeroGPU runs it in a forked worker)."""

    settings: RemovalSettings
    face: Face  # the face to edit, in photo coordinates
    image: np.ndarray | None  # (H, W, 3) uint8 RGB photo; None when ``prepared`` is given
    prepared: PreparedFace | None  # cached alignment + inversion, or None to compute them
    user_code: np.ndarray | None = None  # (1, 18, 512) float32 W+ code from the user: skips the inversion
    sweep_frames: int = 0  # > 0: also render this many frames from strength 0 to the chosen strength


@dataclass(frozen=True)
class GpuResult:
    """What the GPU function returns (picklable CPU values)."""

    prepared: PreparedFace
    edit: FaceEdit
    sweep: tuple[np.ndarray, ...] = ()  # (1024, 1024, 3) uint8 RGB aligned crops, one per sweep frame


def gpu_seconds(job: GpuJob, progress: object = None) -> int:
    """ZeroGPU duration estimate of ``job`` (same parameters as the GPU function, as ``spaces.GPU`` requires)."""
    seconds = GPU_BASE_SECONDS + GPU_SECONDS_PER_SWEEP_FRAME * job.sweep_frames
    if job.prepared is None and job.user_code is None and job.settings.inversion == "optimise":
        seconds += GPU_SECONDS_PER_INVERSION_STEP * job.settings.inversion_steps
    if job.settings.method == "diffuse":
        seconds += GPU_SECONDS_PER_REFINE_STEP * job.settings.refine_steps
    return int(seconds)


def render_sweep(remover: DoubleChinRemover, edit: FaceEdit, settings: RemovalSettings, frames: int) -> tuple:
    """Aligned crops for strengths 0 … the edit's strength, each render blended in with the edit's neck mask.

    With the automatic strength the sweep ends at its mean per-layer step (the per-layer edit, averaged).

    Returns:
        ``frames`` (1024, 1024, 3) uint8 RGB images.
    """
    prepared = edit.prepared
    boundary = remover.boundary(settings.boundary, settings.boundary_variant)
    alpha_end = edit.auto_strength.mean_alpha if edit.auto_strength is not None else settings.strength
    codes = strength_sweep(
        prepared.w_plus,
        boundary,
        alpha_end=float(alpha_end),
        steps=frames,
        mix_layers=settings.effective_mix_layers,
        mix_ratio=settings.mix_ratio,
    )  # (frames, 18, 512)
    return tuple(
        composite(prepared.aligned.image, remover.render(code[None]), edit.blend_mask)
        for code in tqdm(codes, desc="Strength sweep", leave=False)
    )


@dataclass
class Outcome:
    """One processed face in the main process: what the outputs are made from."""

    photo: DecodedImage
    faces: list[Face]
    index: int  # which face was edited (0 = largest)
    settings: RemovalSettings
    result: GpuResult
    cached: bool  # the alignment and inversion came from the cache
    timings: dict[str, float] = field(default_factory=dict)


class RemovalApp:
    """The page's event handlers over one loaded remover (or the weights error that prevented loading it).

    Per-request data travels in arguments and return values; the only shared state is the two bounded caches
    (and the folders of output files).
    """

    def __init__(self, loaded: DoubleChinRemover | WeightsError) -> None:
        self.remover = loaded if isinstance(loaded, DoubleChinRemover) else None
        self.load_error = loaded if isinstance(loaded, WeightsError) else None
        self.device = self.remover.device if self.remover is not None else torch.device("cpu")
        self.defaults = default_settings(self.device)
        inversion_cap, refine_cap = STEP_CAPS["cuda" if self.device.type == "cuda" else "cpu"]
        self.inversion_step_cap = min(inversion_cap, MAX_STEPS)
        self.refine_step_cap = min(refine_cap, MAX_STEPS)
        self.prepared_cache: LruCache[tuple[object, ...], PreparedFace] = LruCache(CACHE_ENTRIES)
        self.face_cache: LruCache[str, list[Face]] = LruCache(FACE_CACHE_ENTRIES)
        self.folders = ResultFolders()
        # One model job at a time even outside the "model" queue slot (lazily cached examples run in their own slot):
        # dlib's detector and the models are not meant to be used by two threads at once.
        self.model_lock = threading.Lock()
        self.run_on_gpu = spaces.GPU(duration=gpu_seconds)(self.gpu_work)

    @property
    def stand_in(self) -> bool:
        """Whether the loaded weights are random stand-ins (results are not real)."""
        return self.remover is not None and self.remover.models.stand_in

    def require_remover(self) -> DoubleChinRemover:
        """The loaded remover, or a PipelineError explaining that the weights are missing."""
        if self.remover is None:
            raise PipelineError(
                f"This app is running without its model weights, so it cannot process photos. {self.load_error}"
            )
        return self.remover

    def settings_from(
        self,
        strength: float,
        auto_strength: bool,
        method: str,
        inversion: str,
        face_number: float,
        mix_layers: list[int] | None,
        inversion_steps: float,
        refine_steps: float,
        seed: float,
    ) -> RemovalSettings:
        """Validated settings from the page's controls (face numbers are 1-based on the page)."""
        layers = tuple(sorted({int(layer) for layer in mix_layers or ()}))
        if len(layers) == NUM_WS:
            raise PipelineError(
                f"Restoring all {NUM_WS} layers from the original leaves nothing to edit; "
                "leave some layers unselected."
            )
        try:
            return dataclasses.replace(
                self.defaults,
                strength=float(strength),
                auto_strength=bool(auto_strength),
                method=method,
                inversion=inversion,
                face_index=int(face_number) - 1,
                mix_layers=layers or None,
                inversion_steps=min(int(inversion_steps), self.inversion_step_cap),
                refine_steps=min(int(refine_steps), self.refine_step_cap),
                seed=int(seed),
            )
        except (TypeError, ValueError) as err:
            raise PipelineError(f"One of the settings is invalid: {err}.") from err

    def gpu_work(self, job: GpuJob, progress: gr.Progress | None = None) -> GpuResult:
        """The GPU function: alignment + inversion (unless cached), boundary edit, neck refinement, optional sweep."""
        on_stage = stage_reporter(progress)
        with user_facing_errors():  # on ZeroGPU only gr.Error crosses the process boundary intact
            remover = self.require_remover()
            prepared = job.prepared
            if prepared is None:
                assert job.image is not None, "a job without a prepared face must carry the photo"
                prepared = remover.prepare(job.image, job.face, job.settings, w_plus=job.user_code, on_stage=on_stage)
            edit = remover.edit(prepared, job.settings, on_stage=on_stage)
            remover.reconstruct(prepared, size=RECONSTRUCTION_PREVIEW_SIZE)  # for the gallery; cached with the face
            sweep: tuple[np.ndarray, ...] = ()
            if job.sweep_frames:
                on_stage("sweep")
                sweep = render_sweep(remover, edit, job.settings, job.sweep_frames)
            return GpuResult(prepared, edit, sweep)

    def process(
        self,
        photo: DecodedImage | None,
        settings: RemovalSettings,
        user_code: np.ndarray | None,
        progress: gr.Progress | None = None,
        *,
        sweep_frames: int = 0,
    ) -> Outcome:
        """Detect (cached per photo), then run the GPU function with the cached inversion when there is one."""
        remover = self.require_remover()
        if photo is None:
            raise InputImageError(NO_PHOTO_MESSAGE)
        with self.model_lock:
            return self._process_locked(remover, photo, settings, user_code, progress, sweep_frames)

    def _process_locked(
        self,
        remover: DoubleChinRemover,
        photo: DecodedImage,
        settings: RemovalSettings,
        user_code: np.ndarray | None,
        progress: gr.Progress | None,
        sweep_frames: int,
    ) -> Outcome:
        report = stage_reporter(progress)
        start = time.perf_counter()
        report("detect")
        photo_key = pixel_hash(photo.image)
        faces = self.face_cache.get(photo_key)
        if faces is None:
            faces = find_faces(photo.image)  # raises NoFaceError / FaceTooSmallError with the user's message
            self.face_cache.put(photo_key, faces)
        index = remover.select_faces(faces, settings)[0]
        key = prepared_key(photo_key, index, settings, user_code)
        timings = {"detect": time.perf_counter() - start}
        cached = self.prepared_cache.get(key)
        job = GpuJob(settings, faces[index], None if cached else photo.image, cached, user_code, sweep_frames)
        result = self.run_on_gpu(job, progress)
        if cached is None:
            self.prepared_cache.put(key, result.prepared)
            timings.update(result.prepared.timings)
        timings.update(result.edit.timings)
        return Outcome(photo, faces, index, settings, result, cached is not None, timings)

    def summary(self, outcome: Outcome, image: np.ndarray) -> dict[str, Any]:
        """The JSON summary of one result (settings, notes, timings, stand-in flag; no pixels)."""
        edit = outcome.result.edit
        notes = [*self.require_remover().models.notes, *outcome.photo.notes]
        if len(outcome.faces) > 1:
            notes.append(
                f"{len(outcome.faces)} faces were found; face {outcome.index + 1} (numbered from the largest) was "
                "edited. Choose another one with “Face”."
            )
        notes.extend(edit.notes)
        result = RemovalResult(
            image, outcome.photo.image, outcome.faces, {outcome.index: edit}, outcome.settings, self.stand_in, notes,
            outcome.timings,
        )  # fmt: skip
        summary = result.summary()
        summary["inversion_cached"] = outcome.cached
        if self.stand_in:
            summary["warning"] = STAND_IN_NOTE
        return summary

    def outputs(self, outcome: Outcome, progress: gr.Progress | None) -> tuple[Any, ...]:
        """Paste back at full size and write the files: (before/after, stages, downloads, summary, notes).

        The notes shown under the slider leave out the models' notes (the banner at the top shows them).
        """
        report = stage_reporter(progress)
        report("paste_back")
        start = time.perf_counter()
        edit = outcome.result.edit
        image = edit.prepared.aligned.paste_back(outcome.photo.image, edit.refined, edit.blend_mask)
        outcome.timings["paste_back"] = time.perf_counter() - start
        report("save")
        summary = self.summary(outcome, image)
        with storage_errors():
            folder = self.folders.new()
            before = write_png(folder / "original.png", outcome.photo.image)
            after = write_png(folder / "result.png", image)
            code_path = folder / "w_plus.npy"
            np.save(code_path, edit.prepared.w_plus)
            settings_path = folder / "settings.json"
            settings_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
        downloads = [after, str(code_path), str(settings_path)]
        shown_notes = [note for note in summary["notes"] if note not in self.require_remover().models.notes]
        return (before, after), stage_gallery(edit), downloads, summary, notes_markdown(shown_notes)

    # -- event handlers (their parameter names are the API's) --------------------------------------------------------

    def remove_double_chin(
        self,
        photo: DecodedImage | None,
        strength: float,
        auto_strength: bool,
        method: str,
        inversion: str,
        face_number: float,
        mix_layers: list[int] | None,
        inversion_steps: float,
        refine_steps: float,
        seed: float,
        w_plus_code: str | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio injects it by this default
    ) -> tuple[Any, ...]:
        """Remove the double chin of one face; returns before/after, stages, downloads, summary and notes."""
        with user_facing_errors():
            settings = self.settings_from(
                strength, auto_strength, method, inversion, face_number, mix_layers, inversion_steps, refine_steps,
                seed,
            )  # fmt: skip
            outcome = self.process(photo, settings, read_user_code(w_plus_code), progress)
            return self.outputs(outcome, progress)

    def apply_if_photo(
        self,
        photo: DecodedImage | None,
        strength: float,
        auto_strength: bool,
        method: str,
        inversion: str,
        face_number: float,
        mix_layers: list[int] | None,
        inversion_steps: float,
        refine_steps: float,
        seed: float,
        w_plus_code: str | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> tuple[Any, ...]:
        """A control changed: apply it if there is a photo (with the cached inversion), else change nothing."""
        if photo is None:
            return tuple(gr.skip() for _ in range(OUTPUT_COUNT))
        return self.remove_double_chin(
            photo, strength, auto_strength, method, inversion, face_number, mix_layers, inversion_steps, refine_steps,
            seed, w_plus_code, progress,
        )  # fmt: skip

    def strength_sweep(
        self,
        photo: DecodedImage | None,
        strength: float,
        auto_strength: bool,
        method: str,
        inversion: str,
        face_number: float,
        mix_layers: list[int] | None,
        inversion_steps: float,
        refine_steps: float,
        seed: float,
        w_plus_code: str | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> str:
        """An animated WebP of the aligned face from strength 0 to the chosen strength (uses the cached inversion)."""
        with user_facing_errors():
            settings = self.settings_from(
                strength, auto_strength, method, inversion, face_number, mix_layers, inversion_steps, refine_steps,
                seed,
            )  # fmt: skip
            outcome = self.process(photo, settings, read_user_code(w_plus_code), progress, sweep_frames=SWEEP_FRAMES)
            stage_reporter(progress)("save")
            with storage_errors():
                return write_sweep(self.folders.new() / "strength_sweep.webp", outcome.result.sweep)

    def example(self, photo: DecodedImage | None, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
        """Default settings on an example photo (used to cache the examples' results)."""
        defaults = self.defaults
        return self.remove_double_chin(
            photo, defaults.strength, defaults.auto_strength, defaults.method, defaults.inversion, 1, [],
            min(defaults.inversion_steps, self.inversion_step_cap), min(defaults.refine_steps, self.refine_step_cap),
            defaults.seed, None, progress,
        )  # fmt: skip


def prepared_key(
    photo_key: str, index: int, settings: RemovalSettings, user_code: np.ndarray | None
) -> tuple[object, ...]:
    """Cache key of an alignment + inversion: the photo, the face and only the settings that change the code."""
    if user_code is not None:
        return (photo_key, index, "user code", hashlib.sha256(user_code.tobytes()).hexdigest())
    if settings.inversion == "optimise" and settings.inversion_steps > 0:
        return (photo_key, index, "optimise", settings.inversion_steps, settings.seed)
    return (photo_key, index, "encoder")


# -- the page --------------------------------------------------------------------------------------------------------


def header_markdown(app: RemovalApp) -> str:
    """Title, what the page does, credit to the paper and the terms of use."""
    hardware = (
        "Running on a GPU."
        if app.device.type == "cuda"
        else "Running on a CPU: the defaults use the fast path (encoder + warp); the optimisation modes are slow here."
    )
    return f"""# Double-chin removal

Upload a portrait (or pick an example), press **Remove double chin** and drag the slider to compare. Only the neck
region changes; the rest of the photo is kept pixel for pixel. {hardware}

An independent implementation of [*Coarse-to-Fine: Facial Structure Editing of Portrait Images via Latent Space
Classifications*]({PAPER_URL}) by Yiqian Wu, Yong-Liang Yang, Qinjie Xiao and Xiaogang Jin (ACM TOG 40(4),
SIGGRAPH 2021; [official code]({CODE_URL})).
**Terms:** non-commercial research and personal use only — the StyleGAN2, face-parsing and landmark weights and the
example photos carry non-commercial licences (details at the bottom). Photos are processed in memory; result files
are deleted within about {DELETE_CACHE[1] // 60} minutes.
"""


def credits_markdown() -> str:
    """Licences of everything the page runs on, from the weights registry plus the method's own files."""
    lines = [
        f"- **{spec.purpose.split(',')[0].split('(')[0].strip()}** — {spec.licence}" for spec in REGISTRY.values()
    ]
    return "\n".join(
        [
            "- **Method, double-chin boundaries and example photos**: from the official Coarse-to-Fine repository, "
            "non-commercial use only (its README's terms). The photos are FFHQ images (NVIDIA, CC BY-NC-SA 4.0).",
            *lines,
            "- Credits: e4e encoder (Tov et al., SIGGRAPH 2021), StyleGAN2 (Karras et al., CVPR 2020), BiSeNet face "
            "parsing (Yu et al., ECCV 2018), dlib landmarks (King, JMLR 2009).",
        ]
    )


def weights_missing_markdown(error: WeightsError) -> str:
    """What is missing and how to provide it, for the page shown when the models could not be loaded."""
    try:
        status = format_status(weights_status())
    except (OSError, WeightsError) as err:  # the folder itself is unreadable: say so instead of crashing the page
        status = f"(the weights folder could not be inspected: {type(err).__name__})"
    return "\n".join(
        [
            "### ⚠️ The model weights are not available, so photos cannot be processed",
            "What the weights folder holds:",
            "```text",
            status,
            "```",
            "The error while loading:",
            "```text",
            str(error),
            "```",
            "**How to provide them:** put the files above into the weights folder (`C2F_WEIGHTS_DIR`, default "
            "`checkpoints/`), or run `python -m pipeline.weights download` where the Hugging Face Hub is reachable "
            "(and keep `C2F_ALLOW_DOWNLOAD` on), then restart the app. For an offline smoke test, "
            "`python -m pipeline.weights make-test-weights DIR` writes random stand-in weights "
            "(results are not real).",
        ]
    )


def status_banner(app: RemovalApp) -> None:
    """A warning for stand-in weights or degraded models, or the weights-missing panel; nothing when all is well."""
    if app.load_error is not None:
        gr.Markdown(weights_missing_markdown(app.load_error), elem_classes=["c2f-banner", "c2f-error"])
        return
    notes = list(app.require_remover().models.notes)
    if app.stand_in:
        notes = [STAND_IN_BANNER] + [note for note in notes if note != STAND_IN_NOTE]
    if notes:
        gr.Markdown("\n".join(f"⚠️ {note}" for note in notes), elem_classes=["c2f-banner", "c2f-warning"])


@dataclass
class Controls:
    """The input components, in the order of the handlers' parameters."""

    photo: SafeImage
    strength: SettingSlider
    auto_strength: SettingCheckbox
    method: SettingRadio
    inversion: SettingRadio
    face_number: SettingNumber
    mix_layers: SettingDropdown
    inversion_steps: SettingSlider
    refine_steps: SettingSlider
    seed: SettingNumber
    w_plus_code: gr.File

    def inputs(self) -> list[gr.components.Component]:
        """Every input, in handler order."""
        return [getattr(self, item.name) for item in dataclasses.fields(self)]


def build_controls(app: RemovalApp, views: Views) -> tuple[Controls, gr.Button]:
    """The photo input, its examples, the run button and every setting (bounds from :mod:`pipeline.settings`)."""
    defaults = app.defaults
    photo = SafeImage(
        label="Portrait", sources=["upload", "webcam", "clipboard"], type="numpy", height=380, elem_id="c2f-photo"
    )
    add_examples(app, photo, views.results())
    run_button = gr.Button("Remove double chin", variant="primary", elem_id="c2f-run")
    strength = SettingSlider(
        STRENGTH_MIN,
        STRENGTH_MAX,
        value=defaults.strength,
        step=0.5,
        label="Strength",
        info="More negative removes more; 0 leaves the face unchanged. Applied as soon as you let go.",
        elem_id="c2f-strength",
    )
    with gr.Row(equal_height=True):
        auto_strength = SettingCheckbox(
            value=defaults.auto_strength,
            label="Automatic strength",
            info="Per-layer steps from the boundary's scores replace the slider.",
            scale=1,
        )
        face_number = SettingNumber(
            1, label="Face (1 = largest)", precision=0, minimum=1, maximum=MAX_FACE_NUMBER, scale=0, min_width=170
        )
    with gr.Row():
        method = SettingRadio(
            [("Warp — fast", "warp"), ("Diffuse — paper quality, slow", "diffuse")],
            value=defaults.method,
            label="Neck refinement",
        )
        inversion = SettingRadio(
            [("Fast encoder", "encoder"), ("Encoder + optimisation", "optimise")],
            value=defaults.inversion,
            label="Inversion quality",
        )
    with gr.Accordion("Advanced", open=False):
        mix_layers, inversion_steps, refine_steps, seed, w_plus_code = build_advanced_controls(app)
    controls = Controls(
        photo, strength, auto_strength, method, inversion, face_number, mix_layers, inversion_steps, refine_steps,
        seed, w_plus_code,
    )  # fmt: skip
    return controls, run_button


def build_advanced_controls(
    app: RemovalApp,
) -> tuple[SettingDropdown, SettingSlider, SettingSlider, SettingNumber, gr.File]:
    """Style-mixing layers, optimisation steps, seed and an optional W+ code (step caps depend on the device)."""
    defaults = app.defaults
    mix_layers = SettingDropdown(
        list(range(NUM_WS)),
        value=[],
        multiselect=True,
        label="Layers restored from the original (style mixing)",
        info="Empty = the method's default (warp: 6–17, diffuse: 7–17).",
    )
    inversion_steps = SettingSlider(
        0,
        app.inversion_step_cap,
        value=min(defaults.inversion_steps, app.inversion_step_cap),
        step=STEP_INCREMENT,
        label="Optimisation steps (encoder + optimisation only)",
    )
    refine_steps = SettingSlider(
        0,
        app.refine_step_cap,
        value=min(defaults.refine_steps, app.refine_step_cap),
        step=STEP_INCREMENT,
        label="Diffuse refinement steps",
    )
    seed = SettingNumber(defaults.seed, label="Seed", precision=0, minimum=0, maximum=SEED_MAX)
    w_plus_code = gr.File(label="W+ code (.npy, optional: skips the inversion)", file_types=[".npy"], height=90)
    return mix_layers, inversion_steps, refine_steps, seed, w_plus_code


@dataclass
class Views:
    """The output components (made unrendered first, so the examples above them can name them)."""

    slider: gr.ImageSlider
    stages: gr.Gallery
    downloads: gr.File
    summary: gr.JSON
    notes: gr.Markdown
    sweep: gr.Image

    @classmethod
    def create(cls) -> Views:
        """Unrendered output components; place them with :meth:`render`."""
        return cls(
            slider=gr.ImageSlider(
                label="Before / after",
                type="filepath",
                format="png",
                interactive=False,
                max_height=640,
                elem_id="c2f-slider",
                render=False,
            ),
            stages=gr.Gallery(
                label="Stages", columns=5, format="jpeg", object_fit="contain", height=230, render=False
            ),
            downloads=gr.File(label="Downloads", file_count="multiple", interactive=False, render=False),
            summary=gr.JSON(label="Summary", render=False),
            notes=gr.Markdown(label="Notes", elem_classes=["c2f-notes"], render=False),
            sweep=gr.Image(label="Strength sweep", type="filepath", interactive=False, height=400, render=False),
        )

    def results(self) -> list[gr.components.Component]:
        """The outputs of a removal, in the handlers' return order."""
        return [self.slider, self.stages, self.downloads, self.summary, self.notes]

    def render(self) -> gr.Button:
        """Lay the outputs out in the current column; returns the sweep button."""
        self.slider.render()
        self.notes.render()
        with gr.Tabs():
            with gr.Tab("Stages"):
                gr.Markdown("Aligned crop → reconstruction → edited render → neck mask → refined crop (previews).")
                self.stages.render()
            with gr.Tab("Strength sweep"):
                sweep_button = gr.Button("Animate from strength 0 to the chosen strength", elem_id="c2f-sweep")
                self.sweep.render()
            with gr.Tab("Downloads"):
                gr.Markdown(
                    "`result.png` (lossless, full size) · `w_plus.npy` (the face's W+ code; upload it "
                    "under Advanced to skip the inversion) · `settings.json`."
                )
                self.downloads.render()
                self.summary.render()
        return sweep_button


def build_demo(loaded: DoubleChinRemover | WeightsError) -> gr.Blocks:
    """The page over a loaded remover, or over the weights error that stopped it from loading.

    Launch it with ``demo.queue(**QUEUE_OPTIONS).launch(**launch_options())``.
    """
    app = RemovalApp(loaded)
    with gr.Blocks(title="Double-chin removal", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(header_markdown(app))
        status_banner(app)
        views = Views.create()
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                controls, run_button = build_controls(app, views)
            with gr.Column(scale=7):
                sweep_button = views.render()
        with gr.Accordion("Credits and licences", open=False):
            gr.Markdown(credits_markdown())
        wire_events(app, controls, views, run_button, sweep_button)
    return demo


def add_examples(app: RemovalApp, photo: SafeImage, outputs: list[gr.components.Component]) -> None:
    """The reference photos; their default results are cached lazily, but only with the real weights.

    Cached results outlive the process (Gradio keeps them on disk), so results of stand-in weights are never cached.
    """
    cache = app.remover is not None and not app.stand_in
    gr.Examples(
        [[str(path)] for path in sorted(EXAMPLES_DIR.glob("*.jpg"))],
        inputs=[photo],
        outputs=outputs if cache else None,
        fn=app.example if cache else None,
        cache_examples=cache,
        cache_mode="lazy" if cache else None,
        examples_per_page=7,
        label="Examples (FFHQ test photos of the paper; non-commercial use)",
    )


def wire_events(
    app: RemovalApp, controls: Controls, views: Views, run_button: gr.Button, sweep_button: gr.Button
) -> None:
    """Connect the buttons and the controls that re-apply an edit; every model job shares one queue slot."""
    inputs, outputs = controls.inputs(), views.results()
    model_job = {"concurrency_id": "model", "concurrency_limit": 1}
    run_button.click(
        app.remove_double_chin, inputs, outputs, api_name="remove_double_chin", trigger_mode="once", **model_job
    )
    for event in (controls.strength.release, controls.method.input, controls.auto_strength.input):
        event(app.apply_if_photo, inputs, outputs, api_visibility="private", trigger_mode="always_last", **model_job)
    sweep_button.click(
        app.strength_sweep, inputs, views.sweep, api_name="strength_sweep", trigger_mode="once", **model_job
    )


if __name__ == "__main__":  # a fresh server keeps nothing of an earlier run's users (RELIABILITY.md §6.2 item 18)
    logger.info("removed %d leftovers of an earlier run from the temporary folder", wipe_temp_dir())
LOADED = load_remover_from_env()
demo = build_demo(LOADED)

if __name__ == "__main__":
    demo.queue(**QUEUE_OPTIONS).launch(**launch_options())
