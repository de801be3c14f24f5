"""The Hugging Face Space: a one-page Gradio app that removes double chins from portraits.

A thin UI shell over :mod:`pipeline` (the hysts Space pattern: ``demo`` at module level, ``launch`` only under
``__main__``). Method: Wu, Yang, Xiao and Jin, "Coarse-to-Fine: Facial Structure Editing of Portrait Images via Latent
Space Classifications" (SIGGRAPH 2021). Public-service settings follow design/RELIABILITY.md (§0, §1.3, §2.2).

How one request runs, every step a :class:`pipeline.DoubleChinRemover` method (the same ones the CLI runs):

1. The photo input (:class:`page.inputs.SafeImage`) decodes the upload with :func:`pipeline.decode_upload`
   (allow-listed formats, size limits, EXIF orientation once) instead of Gradio's unrestricted Pillow call, so a bad
   file gets our message.
2. ``detect`` and ``select_faces`` run in the main process on the CPU (a photo without a face never reaches the GPU).
3. The one ``@spaces.GPU`` function runs ``prepare`` (alignment and inversion, unless cached), ``edit`` and, for the
   animation, ``sweep``. Its argument and result are picklable CPU values: ZeroGPU runs it in a forked worker.
4. The main process runs ``finish`` (paste back at full size, notes) and writes the outputs. The page keeps the
   prepared face in a small LRU cache keyed by the photo's pixels and ``RemovalSettings.inversion_key``, so moving the
   strength slider or switching the method re-runs only the edit, never the inversion.

Environment: ``C2F_WEIGHTS_DIR`` (weights folder), ``C2F_DEVICE`` (auto / cpu / cuda), ``C2F_ALLOW_DOWNLOAD``
(default 1: fetch missing weights from the Hub), and Gradio's own ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` /
``GRADIO_TEMP_DIR``. ``python app.py`` first removes what earlier runs left in that temporary folder (uploads and
results of their users). Hazards, faults and the tests that check them: docs/reliability.md.
"""

from __future__ import annotations

import spaces  # isort: skip  (first: on ZeroGPU it must patch torch before anything else imports it)

# isort: split
import dataclasses
import inspect
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import gradio as gr
import numpy as np
import torch
from starlette.middleware import Middleware

from page.cache import LruCache, pixel_hash
from page.environment import ALLOW_DOWNLOAD_ENV, device_from_env, env_flag
from page.errors import storage_errors, user_facing_errors
from page.examples import AUTHORS_CODE_INVERSION, ExampleCodes, example_photos
from page.faces import faces_label, faces_overview
from page.files import ResultFolders, claim_temp_dir, write_result, write_sweep
from page.http_guard import RequestBodyLimit
from page.inputs import (
    MAX_FILE_SIZE_MB,
    MAX_REQUEST_BYTES,
    NO_PHOTO_MESSAGE,
    SafeImage,
    read_user_code,
    same_parameters_as,
)
from page.layout import STRENGTH_KEYS_JS, Controls, Views, build_controls, startup_check_banner
from page.text import (
    AUTHORS_CODE_NOTE,
    STALE_NOTES,
    STAND_IN_BANNER,
    credits_markdown,
    expired_link_js,
    expired_markdown,
    header_markdown,
    notes_markdown,
    score_markdown,
    stage_gallery,
    stage_reporter,
    weights_missing_markdown,
)
from pipeline import (
    CHECKPOINTS_DIR,
    MAX_STEPS,
    NUM_WS,
    RECONSTRUCTION_PREVIEW_SIZE,
    STAND_IN_NOTE,
    DecodedImage,
    DoubleChinRemover,
    Face,
    FaceEdit,
    FaceSearch,
    InputImageError,
    PipelineError,
    PreparedFace,
    RemovalSettings,
    StartupCheck,
    WeightsError,
    add_timings,
    default_settings,
    keep_freed_memory,
    resolve_weights_dir,
    single_threaded_numpy_blas,
)

logger = logging.getLogger(__name__)

if __name__ == "__main__":  # before the models load at import, so their log lines are shown
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # process-wide glibc tuning: renders reuse their memory (docs/performance.md)
    single_threaded_numpy_blas()  # spinning BLAS threads would slow the renders (docs/performance.md)

# -- configuration ---------------------------------------------------------------------------------------------------


QUEUE_MAX_SIZE = 16  # waiting requests beyond this get "Queue is full" (RELIABILITY.md §0 item 4: peers use 4–25)
DELETE_CACHE = (600, 1800)  # sweep temporary files every 10 min, deleting those older than 30 min (§1.3)
CACHE_ENTRIES = 8  # prepared faces kept in memory (~7 MB each: 1024² crop, reconstruction, parsing labels)
FACE_CACHE_ENTRIES = 8  # detection results kept per photo
# Optimisation steps a user may ask for here, bounded so one request cannot hold the queue for long
# (RELIABILITY.md §0 item 12): device type → (inversion steps, diffuse refinement steps); never above MAX_STEPS.
STEP_CAPS = {"cuda": (500, 300), "cpu": (100, 100)}
SWEEP_FRAMES = 6  # frames of the strength-sweep animation, strength 0 … chosen strength
OUTPUT_COUNT = 6  # slider, stages, downloads, summary, notes, score
FACE_CHOICE_HINT = "Choose another face with “Face”, or tick “Every face”."
FACE_PREVIEW_WAIT_S = 5.0  # the face preview waits this long for a running job, then stays hidden (ours)
# ZeroGPU time budget of one GPU call, in seconds: a base for model transfer, alignment, encoder, parsing and the
# warp, plus per-step costs of the optimisation loops. Estimates for a ZeroGPU slice (not measured here: no GPU).
GPU_BASE_SECONDS = 20
GPU_SECONDS_PER_INVERSION_STEP = 0.15
GPU_SECONDS_PER_REFINE_STEP = 0.15
GPU_SECONDS_PER_SWEEP_FRAME = 1.0

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="pink", neutral_hue="slate")
CSS = """
.c2f-banner {border-radius: 8px; padding: 10px 14px !important}
.c2f-warning {background: #fff7e6; border: 1px solid #f0a020}
.c2f-error {background: #fdecec; border: 1px solid #d93030}
.c2f-notes {font-size: 0.92em}
#c2f-score {font-size: 0.95em}
#c2f-share-note {font-size: 0.9em}
#c2f-share-row {align-items: center}
@media (max-width: 640px) {#c2f-share-row {flex-direction: column; align-items: stretch}}
#c2f-stages .caption-label {white-space: normal; max-width: 100%; font-size: 0.8em; line-height: 1.2}
"""

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
        "app_kwargs": {"middleware": [Middleware(RequestBodyLimit, max_bytes=MAX_REQUEST_BYTES)]},
        "js": STRENGTH_KEYS_JS,
    }


# -- model loading ---------------------------------------------------------------------------------------------------


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
    if job.prepared is None and job.user_code is None and job.settings.optimises_inversion:
        seconds += GPU_SECONDS_PER_INVERSION_STEP * job.settings.inversion_steps
    if job.settings.method == "diffuse":
        seconds += GPU_SECONDS_PER_REFINE_STEP * job.settings.refine_steps
    return int(seconds)


@dataclass
class Outcome:
    """The processed faces in the main process, before paste-back: what the outputs are made from."""

    photo: DecodedImage
    search: FaceSearch  # the faces and the turn they were found under (the edits ran in that frame)
    gpu: dict[int, GpuResult]  # face index (0 = largest) → its GPU result, in edit order
    settings: RemovalSettings
    cached: bool  # every alignment and inversion came from the cache
    authors_code: bool = False  # an example photo edited from the authors' W+ code
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
        self.face_cache: LruCache[str, FaceSearch] = LruCache(FACE_CACHE_ENTRIES)
        self.folders = ResultFolders(max_age_s=DELETE_CACHE[1], interval_s=DELETE_CACHE[0])
        # One model job at a time even outside the "model" queue slot (lazily cached examples run in their own slot):
        # dlib's detector and the models are not meant to be used by two threads at once.
        self.model_lock = threading.Lock()
        self.run_on_gpu = spaces.GPU(duration=gpu_seconds)(self.gpu_work)
        self.example_codes = ExampleCodes()

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
        self, controls: Sequence[Any], *, all_faces: bool = False, boundary: str = "fine/all"
    ) -> RemovalSettings:
        """Validated settings from the page's controls: the handlers' inputs from ``strength`` to ``seed``.

        Face numbers are 1-based on the page; step counts are capped for this device. ``boundary`` is
        ``"kind/variant"`` (e.g. ``"coarse/psi_0.8"``).
        """
        strength, auto_strength, method, inversion, face_number, mix_layers, inversion_steps, refine_steps, seed = (
            controls
        )
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
                all_faces=bool(all_faces),
                boundary=str(boundary).partition("/")[0],
                boundary_variant=str(boundary).partition("/")[2],
            )
        except (TypeError, ValueError) as err:
            raise PipelineError(f"One of the settings is invalid: {err}.") from err

    def gpu_work(self, job: GpuJob, progress: gr.Progress | None = None) -> GpuResult:
        """The GPU function: ``prepare`` (unless cached), ``edit`` and, when asked, ``sweep``."""
        on_stage = stage_reporter(progress)
        with user_facing_errors():  # on ZeroGPU only gr.Error crosses the process boundary intact
            remover = self.require_remover()
            prepared = job.prepared
            if prepared is None:
                assert job.image is not None, "a job without a prepared face must carry the photo"
                prepared = remover.prepare(job.image, job.face, job.settings, w_plus=job.user_code, on_stage=on_stage)
            edit = remover.edit(prepared, job.settings, on_stage=on_stage)
            remover.reconstruct(prepared, size=RECONSTRUCTION_PREVIEW_SIZE)  # for the gallery; cached with the face
            sweep = remover.sweep(edit, job.settings, job.sweep_frames, on_stage=on_stage) if job.sweep_frames else ()
            return GpuResult(prepared, edit, sweep)

    def detected_faces(self, remover: DoubleChinRemover, image: np.ndarray, photo_key: str) -> FaceSearch:
        """``detect``, cached per photo (call with ``model_lock`` held); turns a sideways photo if it must."""
        search = self.face_cache.get(photo_key)
        if search is None:
            search = remover.detect(image)  # raises NoFaceError / FaceTooSmallError with the user's message
            self.face_cache.put(photo_key, search)
        return search

    def process(
        self,
        photo: DecodedImage | None,
        settings: RemovalSettings,
        user_code: np.ndarray | None,
        progress: gr.Progress | None = None,
        *,
        sweep_frames: int = 0,
        authors_codes: bool = False,
    ) -> Outcome:
        """``detect`` (cached per photo) and ``select_faces``, then the GPU function per face (cached inversions).

        With ``authors_codes``, an example photo's largest face is edited from the authors' W+ code (unless the user
        gave a code). The sweep, when asked for, animates the first edited face.
        """
        remover = self.require_remover()
        if photo is None:
            raise InputImageError(NO_PHOTO_MESSAGE)
        with self.model_lock:
            stage_reporter(progress)("detect")
            start = time.perf_counter()
            photo_key = pixel_hash(photo.image)
            search = self.detected_faces(remover, photo.image, photo_key)
            faces = search.faces
            frame = search.turn(photo.image)  # the photo as the faces were found (upright or turned)
            indices = remover.select_faces(faces, settings)
            if user_code is not None and len(indices) != 1:
                raise PipelineError("A W+ code describes one face; untick “Every face” to use the uploaded code.")
            timings = {"detect": time.perf_counter() - start}
            use_authors = authors_codes and user_code is None and 0 in indices
            authors = self.example_codes.code_for(photo_key) if use_authors else None
            results: dict[int, GpuResult] = {}
            all_cached = True
            for order, index in enumerate(indices):
                code = authors if index == 0 and authors is not None else user_code
                key = (photo_key, index, *settings.inversion_key(code))
                cached = self.prepared_cache.get(key)
                frames = sweep_frames if order == 0 else 0
                job = GpuJob(settings, faces[index], None if cached else frame, cached, code, frames)
                result = self.run_on_gpu(job, progress)
                if cached is None:
                    if code is authors and authors is not None:
                        result.prepared.inversion = AUTHORS_CODE_INVERSION  # the edit shares this object
                    self.prepared_cache.put(key, result.prepared)
                    add_timings(timings, result.prepared.timings)
                add_timings(timings, result.edit.timings)
                results[index] = result
                all_cached = all_cached and cached is not None
            return Outcome(photo, search, results, settings, all_cached, authors is not None, timings)

    def outputs(self, outcome: Outcome, progress: gr.Progress | None) -> tuple[Any, ...]:
        """``finish`` (paste back, notes), then the widgets: before/after, stages, downloads, summary, notes, score.

        The notes shown under the slider leave out the models' notes (the banner at the top shows them). The summary
        (also ``settings.json``) says when the files will be deleted (``files_expire_at``, UTC).
        """
        remover = self.require_remover()
        report = stage_reporter(progress)
        edits = {index: result.edit for index, result in outcome.gpu.items()}
        result = remover.finish(
            outcome.photo, outcome.search, edits, outcome.settings, timings=outcome.timings, on_stage=report
        )
        report("save")
        summary = result.summary()
        summary["inversion_cached"] = outcome.cached
        expires = datetime.now(UTC) + timedelta(seconds=DELETE_CACHE[1])
        summary["files_expire_at"] = expires.isoformat(timespec="seconds")
        with storage_errors():
            files = write_result(self.folders.new(), outcome.photo.photo, result, summary)
        shown_notes = [note for note in result.notes if note not in remover.models.notes]
        if outcome.authors_code:
            shown_notes.insert(0, AUTHORS_CODE_NOTE)
        if len(result.faces) > 1 and not outcome.settings.all_faces:
            shown_notes.append(FACE_CHOICE_HINT)
        downloads = [files["result"], *(path for name, path in files.items() if name.startswith("w_plus"))]
        downloads.append(files["settings"])
        before_after = (files["original"], files["result"])
        scores = {index: edit.score for index, edit in edits.items() if edit.score is not None}
        score = score_markdown(scores, self.stand_in)
        return before_after, stage_gallery(edits), downloads, summary, notes_markdown(shown_notes), score

    def cleared(self, notes: str) -> tuple[Any, ...]:
        """Every result output emptied, with ``notes`` in the Notes."""
        return None, [], None, None, notes, ""

    def failed(self) -> tuple[Any, ...]:
        """After a failed run or re-apply: nothing of an earlier result stays on the page as if it were current."""
        return self.cleared(STALE_NOTES)

    def show_faces(self, photo: DecodedImage | None) -> dict[str, Any]:
        """The detected faces as numbered boxes over the photo; hidden without a photo, a face or the models."""
        hidden = gr.update(value=None, visible=False)
        if photo is None or self.remover is None or not self.model_lock.acquire(timeout=FACE_PREVIEW_WAIT_S):
            return hidden
        try:
            search = self.detected_faces(self.remover, photo.image, pixel_hash(photo.image))
        except PipelineError:  # no face, or too small: the run explains it
            return hidden
        finally:
            self.model_lock.release()
        overview = faces_overview(search.turn(photo.image), search.faces)  # drawn in the frame they were found in
        return gr.update(value=overview, label=faces_label(len(search.faces)), visible=True)

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
        w_plus_code: str | None = None,
        all_faces: bool = False,
        boundary: str = "fine/all",
        authors_codes: bool = True,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio injects it by this default
    ) -> tuple[Any, ...]:
        """Remove the double chin of one face (or every face).

        Returns:
            before/after, stages, downloads, summary, notes and the double-chin score readout.
        """
        with user_facing_errors():
            controls = (strength, auto_strength, method, inversion, face_number, mix_layers, inversion_steps)
            settings = self.settings_from((*controls, refine_steps, seed), all_faces=all_faces, boundary=boundary)
            code = read_user_code(w_plus_code)
            outcome = self.process(photo, settings, code, progress, authors_codes=bool(authors_codes))
            return self.outputs(outcome, progress)

    @same_parameters_as(remove_double_chin)
    def apply_if_photo(self, photo: DecodedImage | None, *values: Any) -> tuple[Any, ...]:
        """A control changed: apply it if there is a photo (with the cached inversion), else clear the outputs.

        Values, not ``gr.skip()``: after a property update Gradio keeps a copy of the component under a new id for
        the session, and a share link then restores later results into a component the page does not have.
        """
        if photo is None:
            return self.cleared("")
        return self.remove_double_chin(photo, *values)

    @same_parameters_as(remove_double_chin)
    def strength_sweep(self, photo: DecodedImage | None, *values: Any) -> str:
        """An animated WebP of the (first) edited face from strength 0 to the chosen strength (cached inversion)."""
        bound = inspect.signature(self.remove_double_chin).bind(photo, *values)
        bound.apply_defaults()
        args = bound.arguments
        with user_facing_errors():
            controls = [args[name] for name in list(args)[1:10]]  # strength … seed
            settings = self.settings_from(controls, all_faces=args["all_faces"], boundary=args["boundary"])
            outcome = self.process(
                photo, settings, read_user_code(args["w_plus_code"]), args["progress"], sweep_frames=SWEEP_FRAMES,
                authors_codes=bool(args["authors_codes"]),
            )  # fmt: skip
            stage_reporter(args["progress"])("save")
            with storage_errors():
                frames = next(iter(outcome.gpu.values())).sweep
                return write_sweep(self.folders.new() / "strength_sweep.webp", frames)

    def example(self, photo: DecodedImage | None, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
        """Default settings on an example photo (used to cache the examples' results)."""
        defaults = self.defaults
        return self.remove_double_chin(
            photo, defaults.strength, defaults.auto_strength, defaults.method, defaults.inversion, 1, [],
            min(defaults.inversion_steps, self.inversion_step_cap), min(defaults.refine_steps, self.refine_step_cap),
            defaults.seed, None, False, f"{defaults.boundary}/{defaults.boundary_variant}", True, progress,
        )  # fmt: skip


# -- the page --------------------------------------------------------------------------------------------------------


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


def build_demo(loaded: DoubleChinRemover | WeightsError, startup_check: StartupCheck | None = None) -> gr.Blocks:
    """The page over a loaded remover, or over the weights error that stopped it from loading.

    Launch it with ``demo.queue(**QUEUE_OPTIONS).launch(**launch_options())``.
    """
    app = RemovalApp(loaded)
    with gr.Blocks(title="Double-chin removal", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(header_markdown(app.device.type == "cuda", DELETE_CACHE[1]))
        status_banner(app)
        startup_check_banner(demo, startup_check)
        views = Views.create()
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                controls, run_button, face_preview = build_controls(
                    app.defaults,
                    (app.inversion_step_cap, app.refine_step_cap),
                    lambda photo: add_examples(app, photo, views.results()),
                )
            with gr.Column(scale=7):
                sweep_button = views.render(DELETE_CACHE[1])
        with gr.Accordion("Credits and licences", open=False):
            gr.Markdown(credits_markdown())
        wire_events(app, controls, views, run_button, sweep_button)
        controls.photo.change(
            app.show_faces, controls.photo, face_preview, api_visibility="private", show_progress="hidden"
        )
        # A share link restores the outputs, whose files live about DELETE_CACHE[1] s (the summary's
        # files_expire_at): past that, the page opens empty with a note instead of broken images and downloads.
        # In the browser (no server round trip), so a restored page keeps its components as they were.
        restored = [controls.photo, face_preview, *views.results()]
        demo.load(None, restored, restored, js=expired_link_js(expired_markdown(DELETE_CACHE[1])))
    return demo


def add_examples(app: RemovalApp, photo: SafeImage, outputs: list[gr.components.Component]) -> None:
    """The reference photos; their default results are cached lazily, but only with the real weights.

    Cached results outlive the process (Gradio keeps them on disk), so results of stand-in weights are never cached.
    """
    cache = app.remover is not None and not app.stand_in
    gr.Examples(
        [[str(path)] for path in example_photos()],
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
    # The progress bar is drawn over the before/after slider only, not over every output and the Notes.
    model_job = {"concurrency_id": "model", "concurrency_limit": 1, "show_progress_on": views.slider}
    private = {"api_visibility": "private", "show_progress": "hidden"}
    run = run_button.click(
        app.remove_double_chin, inputs, outputs, api_name="remove_double_chin", trigger_mode="once", **model_job
    )
    run.failure(app.failed, None, outputs, **private)
    for event in (
        controls.strength.release, controls.method.input, controls.auto_strength.input, controls.boundary.input,
        controls.all_faces.input,
    ):  # fmt: skip
        applied = event(
            app.apply_if_photo, inputs, outputs, api_visibility="private", trigger_mode="always_last", **model_job
        )
        applied.failure(app.failed, None, outputs, **private)
    sweep = sweep_button.click(
        app.strength_sweep, inputs, views.sweep, api_name="strength_sweep", trigger_mode="once",
        **{**model_job, "show_progress_on": views.sweep},
    )  # fmt: skip
    sweep.failure(lambda: None, None, views.sweep, **private)


if __name__ == "__main__":  # a fresh server keeps nothing of an earlier run's users (RELIABILITY.md §6.2 item 18)
    TEMP_DIR_CLAIM = claim_temp_dir()  # held while the server runs; another live server's files are never wiped
    if TEMP_DIR_CLAIM.removed is not None:
        logger.info("removed %d leftovers of an earlier run from the temporary folder", TEMP_DIR_CLAIM.removed)
LOADED = load_remover_from_env()
# Known answers on the CPU in a background thread: never delays the page; a failure shows a warning (docs/first-run.md)
STARTUP_CHECK = StartupCheck(LOADED.models if isinstance(LOADED, DoubleChinRemover) else None).start()
demo = build_demo(LOADED, STARTUP_CHECK)

if __name__ == "__main__":
    demo.queue(**QUEUE_OPTIONS).launch(**launch_options())
