"""The end-to-end double-chin remover: photo in, photo out, every intermediate kept. The one orchestrator.

Stages (METHOD.md §1): decode → detect → FFHQ-align → invert to W+ → boundary edit + style mixing → neck mask →
refine (warp or diffuse) → paste back into the full photo → write back into the photo's own form (colour profile,
bit depth, channels, alpha; :mod:`pipeline.faces.photo`). :meth:`DoubleChinRemover.__call__` runs them all; the same
steps are public methods so that a front end that must split them (the app detects in its main process, runs the
models in a GPU worker and caches the inversion) calls exactly the same code:

1. :meth:`~DoubleChinRemover.detect` (turning a sideways photo when no face is found upright) and
   :meth:`~DoubleChinRemover.select_faces`;
2. :meth:`~DoubleChinRemover.prepare`: alignment and inversion, the expensive part (cache it under
   ``(photo, face, *settings.inversion_key(w_plus))``);
3. :meth:`~DoubleChinRemover.edit`: boundary edit, neck mask and refinement (and :meth:`~DoubleChinRemover.sweep`
   for a strength animation);
4. :meth:`~DoubleChinRemover.finish`: paste back into the photo, write back into its own form, notes (the stand-in
   warning included) → :class:`RemovalResult`, whose :meth:`~RemovalResult.summary` every front end writes out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.config import ALIGNED_SIZE, BOUNDARIES_DIR, PARSER_INPUT_SIZE
from pipeline.errors import PipelineError, WeightsError
from pipeline.faces.align import AlignedFace, Face, align_face
from pipeline.faces.decode import DecodedImage, ImageSource, decode_upload
from pipeline.faces.draft import DraftSearch
from pipeline.faces.landmarks import CoarseDetections
from pipeline.faces.photo import SourcePhoto, write_back
from pipeline.faces.upright import FaceSearch, find_faces_any_turn
from pipeline.latent.editing import (
    AutoStrength,
    Boundary,
    ScoreChange,
    double_chin_score,
    edit_latent,
    edit_latent_auto,
    edited_layers,
    load_boundary,
    load_latent_code,
    strength_sweep,
)
from pipeline.latent.inversion import OptimisationSettings, optimise_latent
from pipeline.models import Models, load_models
from pipeline.networks.encoder import invert_with_encoder
from pipeline.networks.parsing import parse_labels
from pipeline.networks.perceptual import (
    DIFFUSE_FEATURE_TAP,
    FEATURE_LOSS_SIZE,
    feature_mse,
    lpips_like_distance,
)
from pipeline.networks.pixels import downsample, to_model_range, to_uint8
from pipeline.networks.stylegan2 import Window
from pipeline.refinement.compositing import FEATHER_DIFFUSE, FEATHER_WARP, composite, feather_mask
from pipeline.refinement.diffuse import CPU_DIFFUSE, CPU_RENDER_SIZE, DiffuseSettings, diffuse_refine
from pipeline.refinement.neck_mask import (
    JAW_POINTS,
    NECK_MASK_DIFFUSE,
    NECK_MASK_WARP,
    landmark_neck_mask,
    neck_mask,
)
from pipeline.refinement.warp import face_and_neck_masks, warp_edited_jaw
from pipeline.refinement.window import bounding_window, paste_window
from pipeline.settings import AUTO_STRENGTH_BOUNDARY, RemovalSettings
from pipeline.weights.stand_in import STAND_IN_NOTE

logger = logging.getLogger(__name__)

StageCallback = Callable[[str], None]  # told the name of each stage as it starts
StopCheck = Callable[[], bool]
# Every stage name ``on_stage`` is told and ``timings`` records, in pipeline order ("sweep" only for an animation).
STAGES = (
    "decode",
    "detect",
    "align",
    "invert",
    "optimise",
    "reconstruct",
    "parse",
    "mask",
    "edit",
    "refine_warp",
    "refine_diffuse",
    "sweep",
    "paste_back",
)
FACES_NOTE = "{count} faces were found; face {number} (numbered from the largest) was edited."
# After the quick search for the largest face (FaceSearch.exhaustive False): small faces were not looked for.
FACES_NOTE_QUICK = (
    "{count} large faces were found; face 1, the largest, was edited. Choose a face number to search every face."
)
STRENGTH_ZERO_NOTE = "Strength 0 leaves the photo unchanged: it is returned exactly as it was uploaded."
RECONSTRUCTION_PREVIEW_SIZE = 256  # ours: the app's stage gallery shows the reconstruction as a preview (issue 16)
# ours (issue 16): pixels added around what the refinement reads of the edited render (the neck region, its feather,
# the jaw line and the original neck) before rendering only that window; covers the warp's displacements (the edited
# jaw moves 0.6 of its shift, tens of pixels at strong edits) and the parser's view of the jaw in the edited render.
EDIT_WINDOW_MARGIN = 48


def cached_target_distance(
    extract: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    compare: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``distance(a, b) = compare(extract(a), extract(b))``, extracting ``b`` only when it is a new tensor.

    Both optimisation loops compare every render with one fixed target tensor, so its VGG features are computed once
    instead of once per step (one VGG16 forward less per step; same numbers).
    """
    cached: dict[str, object] = {}

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if cached.get("target") is not b:
            with torch.no_grad():
                cached["features"] = [feature.detach() for feature in extract(b)]
            cached["target"] = b
        return compare(extract(a), cached["features"])

    return distance


@dataclass
class PreparedFace:
    """One aligned face and its W+ code: everything the edit needs that does not depend on the strength."""

    aligned: AlignedFace  # crop, quad and affine back to the photo
    landmarks: np.ndarray  # (68, 2) float64 landmarks in aligned coordinates
    w_plus: np.ndarray  # (1, 18, 512) float32 code of the crop
    # (S, S, 3) uint8 render of ``w_plus``: None until asked for (DoubleChinRemover.reconstruct; the result does not
    # need it), S = 1024, or RECONSTRUCTION_PREVIEW_SIZE for a preview; the optimising inversion leaves its full render
    reconstruction: np.ndarray | None
    labels: np.ndarray | None  # (1024, 1024) uint8 face-parsing labels of the crop, None without the parser
    inversion: str  # "encoder", "optimise" or "user code"
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class FaceEdit:
    """The edit of one face, in aligned space."""

    prepared: PreparedFace
    w_edited: np.ndarray  # (1, 18, 512) boundary edit after style mixing
    edited: np.ndarray  # (1024, 1024, 3) uint8 render of ``w_edited`` inside ``window``, the aligned crop outside it
    neck_mask: np.ndarray  # (1024, 1024) bool: the region that is replaced
    blend_mask: np.ndarray  # (1024, 1024) float32 in [0, 1]: the feathered mask used for blending and paste-back
    refined: np.ndarray  # (1024, 1024, 3) uint8: the aligned crop with the refined neck blended in
    w_final: np.ndarray  # (1, 18, 512) code of the refined render (diffuse) or ``w_edited`` (warp)
    auto_strength: AutoStrength | None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    score: ScoreChange | None = None  # double-chin score of ``w_plus`` → ``w_edited`` (see DoubleChinRemover.score)
    window: Window | None = None  # the part of ``edited`` that was rendered (None: all of it)


@dataclass
class RemovalResult:
    """The output photo with every intermediate, the codes, the settings and per-stage timings."""

    image: np.ndarray  # (H, W, 3) uint8 sRGB model view of the result (the input's view with the faces pasted back)
    original: np.ndarray  # (H, W, 3) uint8 sRGB model view of the decoded input
    faces: list[Face]  # every detected face, largest first (coordinates in the frame turned by ``turn_degrees``)
    edits: dict[int, FaceEdit]  # face index → its edit
    settings: RemovalSettings
    stand_in: bool  # True when produced with stand-in weights: not a real result
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    photo: SourcePhoto | None = None  # the result in the input's own form (profile, depth, channels): what to save
    turn_degrees: int = 0  # clockwise turn under which the faces were found and edited (0 = upright)
    # False after the quick search for the largest face (FaceSearch.exhaustive): ``faces`` holds the large faces only
    all_faces_searched: bool = True
    faces_search: str = "every face"  # which search ran, in words (FaceSearch.description)

    def summary(self) -> dict[str, object]:
        """JSON-ready description of what was done (no pixels)."""
        return {
            "size": [int(self.image.shape[1]), int(self.image.shape[0])],
            **({"photo": self.photo.describe()} if self.photo is not None else {}),
            "turned_degrees": self.turn_degrees,
            "faces_found": len(self.faces),
            "faces_search": self.faces_search,
            "faces_edited": sorted(self.edits),
            "settings": self.settings.to_dict(),
            "stand_in_weights": self.stand_in,
            **({"warning": STAND_IN_NOTE} if self.stand_in else {}),
            "notes": list(self.notes),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "faces": {
                str(index): {
                    "inversion": edit.prepared.inversion,
                    "quad": edit.prepared.aligned.quad.round(2).tolist(),
                    "auto_strength": None
                    if edit.auto_strength is None
                    else {
                        "mean_strength": edit.auto_strength.mean_strength,
                        "already_clear": edit.auto_strength.already_clear,
                    },
                    "double_chin_score": None if edit.score is None else edit.score.to_dict(),
                    "notes": list(edit.notes),
                }
                for index, edit in self.edits.items()
            },
        }


def diffuse_features(vgg: torch.nn.Module, images: torch.Tensor, size: int = FEATURE_LOSS_SIZE) -> list[torch.Tensor]:
    """VGG16 features up to relu4_3 of (N, 3, H, W) images in [-1, 1], area-downsampled to ``size``².

    METHOD.md §7 uses 256²; CPUs use less (see :data:`pipeline.refinement.diffuse.CPU_DIFFUSE`).
    Images already that small pass as they are.
    """
    if images.shape[-1] > size or images.shape[-2] > size:
        images = downsample(images, size)
    return vgg(images, last_tap=DIFFUSE_FEATURE_TAP)


@contextmanager
def _timed(timings: dict[str, float], name: str, on_stage: StageCallback | None) -> Iterator[None]:
    if on_stage is not None:
        on_stage(name)
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _tqdm_progress(
    description: str, total: int, *, enabled: bool = True
) -> tuple[Callable[[int, int, float], None], Callable[[], None]]:
    """A progress callback feeding a tqdm bar (the app shows tqdm bars as stage progress), and its closer."""
    bar = tqdm(total=total, desc=description, leave=False, disable=total == 0 or not enabled)

    def update(step: int, _total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.refresh()

    return update, bar.close


class DoubleChinRemover:
    """Loads every model once and removes double chins from photos.

    Example:
        >>> remover = DoubleChinRemover.from_pretrained()  # downloads the weights on first use
        >>> result = remover("portrait.jpg", RemovalSettings(strength=-5.0, method="warp"))
        >>> result.image.shape == result.original.shape
        True
    """

    def __init__(self, models: Models, *, boundaries_dir: os.PathLike[str] | str = BOUNDARIES_DIR) -> None:
        self.models = models
        self.boundaries_dir = boundaries_dir
        self.progress_bars = True  # show tqdm bars for the optimisation loops (the CLI's --quiet turns them off)
        self.windowed_edit = True  # render the edit only where the refinement reads it (False: the whole 1024²)
        self._boundaries: dict[tuple[str, str], Boundary] = {}

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: os.PathLike[str] | str | None = None,
        *,
        device: str | torch.device | None = None,
        allow_download: bool = True,
        half_small_convs: bool | None = None,
    ) -> DoubleChinRemover:
        """Resolve, verify and load the weights (see :func:`pipeline.models.load_models`)."""
        models = load_models(
            weights_dir, device=device, allow_download=allow_download, half_small_convs=half_small_convs
        )
        return cls(models)

    @property
    def device(self) -> torch.device:
        """Where the networks run."""
        return self.models.device

    def boundary(self, kind: str, variant: str) -> Boundary:
        """The (cached) boundary ``kind``/``variant``."""
        key = (kind, variant)
        if key not in self._boundaries:
            self._boundaries[key] = load_boundary(kind, variant, boundaries_dir=self.boundaries_dir)
        return self._boundaries[key]

    # 1–2. Detection and alignment ----------------------------------------------------------------------------------

    def detect(
        self, image: np.ndarray, *, largest_only: bool = False, coarse: CoarseDetections | None = None
    ) -> FaceSearch:
        """Find the faces of a decoded photo (its model view), turning it when no face is found upright.

        Args:
            image: (H, W, 3) uint8 sRGB, ``DecodedImage.image``.
            largest_only: only the largest face will be edited (``__call__`` passes True unless a face number or every
                face is asked for): a large photo is first searched on a small copy (see
                :func:`pipeline.faces.upright.find_faces_any_turn`; ~0.2× the time at 12 MP), which finds the faces
                big enough to be the largest but may miss small ones.
            coarse: with ``largest_only``, that copy's detections if found already (``__call__`` searches a large
                JPEG's reduced decode while the photo decodes: :class:`pipeline.faces.draft.DraftSearch`).

        Returns:
            FaceSearch: the faces and the turn they were found under; align, edit and paste back in
            ``search.turn(image)`` and hand the search to :meth:`finish`.

        Raises:
            NoFaceError, FaceTooSmallError: see :func:`pipeline.faces.upright.find_faces_any_turn`.
        """
        return find_faces_any_turn(image, predictor=self.models.landmarks, largest_only=largest_only, coarse=coarse)

    @staticmethod
    def select_faces(faces: list[Face], settings: RemovalSettings) -> list[int]:
        """Indices of the faces to edit: all, the chosen one, or the largest."""
        if settings.all_faces:
            return list(range(len(faces)))
        index = 0 if settings.face_index is None else settings.face_index
        if index >= len(faces):
            count = f"{len(faces)} face" + ("s" if len(faces) != 1 else "")
            raise PipelineError(
                f"This photo has {count} large enough to edit, so there is no face number {index + 1}. "
                f"Choose a face between 1 and {len(faces)}."
            )
        return [index]

    # 3. Inversion ---------------------------------------------------------------------------------------------------

    def prepare(
        self,
        image: np.ndarray,
        face: Face,
        settings: RemovalSettings,
        *,
        w_plus: np.ndarray | None = None,
        on_stage: StageCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> PreparedFace:
        """Align one face and find its W+ code (e4e, optionally refined by optimisation, or a given code).

        Args:
            image: (H, W, 3) uint8 RGB photo.
            face: a face from :func:`pipeline.faces.align.find_faces` on ``image``.
            settings: only ``inversion``, ``inversion_steps`` and ``seed`` matter here.
            w_plus: a user-supplied (1, 18, 512) code; skips the inversion.
            on_stage: told each stage name as it starts.
            should_stop: polled inside the optimisation loop.
        """
        timings: dict[str, float] = {}
        models = self.models
        with _timed(timings, "align", on_stage):
            aligned = align_face(image, face, ALIGNED_SIZE)
            landmarks = aligned.to_aligned(face.landmarks)
        with _timed(timings, "invert", on_stage), torch.inference_mode():
            if w_plus is not None:
                code, how = load_latent_code(w_plus), "user code"
            else:
                code, how = invert_with_encoder(models.encoder, aligned.image, device=models.device), "encoder"
        reconstruction = None
        if w_plus is None and settings.optimises_inversion:
            with _timed(timings, "optimise", on_stage):
                code, reconstruction = self._optimise(aligned.image, code, settings, should_stop)
                how = "optimise"
        labels = None
        if models.parser is not None:
            with _timed(timings, "parse", on_stage):
                labels = parse_labels(models.parser, aligned.image, device=models.device)
        return PreparedFace(aligned, landmarks, code, reconstruction, labels, how, timings)

    def _optimise(
        self, aligned: np.ndarray, code: np.ndarray, settings: RemovalSettings, should_stop: StopCheck | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """W+ optimisation from the encoder's code; returns the code and its full-size uint8 render."""
        vgg = self._require_vgg("quality inversion (encoder + optimisation)")
        update, close = _tqdm_progress("Optimising the code", settings.inversion_steps, enabled=self.progress_bars)
        options = OptimisationSettings(steps=settings.inversion_steps)
        if self.device.type != "cuda":
            options = dataclasses.replace(options, render_size=CPU_RENDER_SIZE)
        try:
            result = optimise_latent(
                self.models.generator,
                to_model_range(aligned, self.device),
                code,
                perceptual=cached_target_distance(vgg, lambda a, b: lpips_like_distance(a, b).mean()),
                settings=options,
                seed=settings.seed,
                progress=update,
                should_stop=should_stop,
            )
        finally:
            close()
        return result.w_plus, to_uint8(result.image)

    def _require_vgg(self, what: str) -> torch.nn.Module:
        if self.models.vgg is None:
            raise WeightsError(
                f"The {what} needs the VGG16 weights, which are not available here. "
                "Use the fast encoder inversion and the warp method, or provide the weights (see README)."
            )
        return self.models.vgg

    def render(self, w_plus: np.ndarray, *, size: int | None = None) -> np.ndarray:
        """(1, 18, 512) code → (S, S, 3) uint8 RGB render with constant noise.

        S is 1024, or ``size``: the generator's RGB output at that level, a preview (at 256² about 0.55 of the work of
        a full render, measured; the levels from 64² to 256² cost as much as each higher one).
        """
        with torch.inference_mode():
            code = torch.from_numpy(np.ascontiguousarray(w_plus, dtype=np.float32)).to(self.device)
            return to_uint8(self.models.generator.synthesis(code, resolution=size))

    def render_window(self, w_plus: np.ndarray, window: Window, background: np.ndarray) -> np.ndarray:
        """The render of ``w_plus`` inside ``window``, ``background`` (1024, 1024, 3) uint8 outside it.

        Inside the window the pixels are the full render's (fp32 rounding aside; the levels from 128² up run on the
        window only, see :meth:`pipeline.networks.stylegan2.Generator.synthesis_window`).
        """
        with torch.inference_mode():
            code = torch.from_numpy(np.ascontiguousarray(w_plus, dtype=np.float32)).to(self.device)
            pixels = to_uint8(self.models.generator.synthesis_window(code, window))
        return paste_window(background, pixels, window)

    def reconstruct(self, prepared: PreparedFace, *, size: int | None = None) -> np.ndarray:
        """The render of ``prepared.w_plus`` (kept in ``prepared.reconstruction``), rendered on first use.

        Args:
            prepared: the face; its ``reconstruction`` is filled in.
            size: None for the full 1024² render, or a preview side (e.g. :data:`RECONSTRUCTION_PREVIEW_SIZE`); a
                render already there at this size or larger is returned as it is.

        Returns:
            (S, S, 3) uint8 RGB.
        """
        have = prepared.reconstruction
        wanted = ALIGNED_SIZE if size is None else size
        if have is None or have.shape[0] < wanted:
            start = time.perf_counter()
            have = prepared.reconstruction = self.render(prepared.w_plus, size=size)
            prepared.timings["reconstruct"] = prepared.timings.get("reconstruct", 0.0) + time.perf_counter() - start
        return have

    def edit_window(self, prepared: PreparedFace, settings: RemovalSettings, region: np.ndarray) -> Window | None:
        """The part of the edited render that the refinement reads, or None to render all of it.

        The neck ``region`` with the reach of its feathering, plus for the warp the jaw line and the original neck
        (where the warp finds the contours in the parse of the edited render), grown by :data:`EDIT_WINDOW_MARGIN`.
        """
        if not self.windowed_edit or not region.any():
            return None
        feather = FEATHER_DIFFUSE if settings.method == "diffuse" else FEATHER_WARP
        masks, points = [region], None
        if settings.method == "warp" and prepared.labels is not None:
            masks.append(face_and_neck_masks(prepared.labels, region.shape[0])[1])
            points = prepared.landmarks[JAW_POINTS]
        reach = (feather.dilate_px + feather.blur_px) // 2 + 1  # how far the feathered blend reaches past the region
        window = bounding_window(masks, points, margin=reach + EDIT_WINDOW_MARGIN, size=region.shape[0])
        return None if window == Window(0, 0, *region.shape) else window

    # 4–6. Edit, mask, refine ---------------------------------------------------------------------------------------

    def edit(
        self,
        prepared: PreparedFace,
        settings: RemovalSettings,
        *,
        on_stage: StageCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> FaceEdit:
        """Move the code along the boundary, render it, and blend the new neck into the aligned crop.

        A zero edit (strength 0, or an automatic strength whose every step is 0) and an empty neck region change
        nothing: ``refined`` is the aligned crop itself and ``blend_mask`` is all zero, so the paste-back and the
        write-back return the photo bit for bit.
        """
        timings: dict[str, float] = {}
        notes: list[str] = []
        inside = prepared.aligned.inside_mask() > 0
        with _timed(timings, "mask", on_stage):  # first: it tells which part of the edit to render
            preset = NECK_MASK_DIFFUSE if settings.method == "diffuse" else NECK_MASK_WARP
            if prepared.labels is not None:
                region = neck_mask(prepared.labels, prepared.landmarks, settings=preset)
            else:
                region = landmark_neck_mask(prepared.aligned.image, prepared.landmarks)
            region &= inside  # never edit reflect-padding: it is not part of the photo
        with _timed(timings, "edit", on_stage):
            boundary = self.boundary(settings.boundary, settings.boundary_variant)
            mix = {"mix_layers": settings.effective_mix_layers, "mix_ratio": settings.mix_ratio}
            auto = None
            if settings.auto_strength:
                w_edited, auto = edit_latent_auto(prepared.w_plus, boundary, **mix)
                if auto.message:
                    notes.append(auto.message)
            else:
                w_edited = edit_latent(prepared.w_plus, boundary, strength=settings.strength, **mix)
            score = self.score(prepared.w_plus, w_edited, settings, auto)
            if is_zero_edit(settings, auto):  # nothing to render: the edit is the aligned crop itself
                notes.append(STRENGTH_ZERO_NOTE)
                return unchanged_edit(
                    prepared, prepared.w_plus.copy(), prepared.aligned.image.copy(), auto, notes, timings, score
                )
            window = self.edit_window(prepared, settings, region)
            if window is None:
                edited = self.render(w_edited)
            else:
                edited = self.render_window(w_edited, window, prepared.aligned.image)
        if not region.any():
            notes.append("No neck region was found below the jaw, so the photo is returned unchanged.")
            return unchanged_edit(prepared, w_edited, edited, auto, notes, timings, score)
        refine = self._refine_diffuse if settings.method == "diffuse" else self._refine_warp
        with _timed(timings, f"refine_{settings.method}", on_stage):
            refined, blend, w_final = refine(prepared, settings, edited, w_edited, region, notes, should_stop)
        blend = np.where(inside, blend, 0.0).astype(np.float32)
        return FaceEdit(
            prepared, w_edited, edited, region, blend, refined, w_final, auto, notes, timings, score, window
        )

    def score(
        self, w_plus: np.ndarray, w_edited: np.ndarray, settings: RemovalSettings, auto: AutoStrength | None = None
    ) -> ScoreChange:
        """The double-chin score before → after an edit, over the layers the edit changes.

        Always measured on the fine/all boundary (the only one with intercepts), whichever boundary the edit walked
        along, so scores of coarse and fine edits compare. With the automatic strength, ``target`` is the mean of
        ``s_i + d_i`` over those layers: where its per-layer steps aim.

        Args:
            w_plus: (1, 18, 512) code before the edit.
            w_edited: (1, 18, 512) code after the edit and style mixing.
            settings: the mixing settings decide which layers count.
            auto: the automatic strength's steps, when it was used.
        """
        layers = edited_layers(settings.effective_mix_layers, settings.mix_ratio)
        scorer = self.boundary(*AUTO_STRENGTH_BOUNDARY)
        target = None if auto is None else float(np.mean((auto.scores + auto.steps)[list(layers)]))
        before, after = (double_chin_score(code, scorer, layers) for code in (w_plus, w_edited))
        return ScoreChange(before, after, layers, target)

    def _refine_warp(
        self,
        prepared: PreparedFace,
        settings: RemovalSettings,
        edited: np.ndarray,
        w_edited: np.ndarray,
        region: np.ndarray,
        notes: list[str],
        should_stop: StopCheck | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """METHOD.md §8: pull the edited jaw contour halfway back to the original's, then feather-blend."""
        warped = edited
        if prepared.labels is None:
            notes.append("The jaw warp needs the face parser; the edited render is blended without it.")
        else:
            # Official get_face_mask: masks on the parser's 512² grid, up-sampled bilinearly to the render (!= 0).
            size = edited.shape[0]
            original_face, original_neck = face_and_neck_masks(prepared.labels, size)
            work = (PARSER_INPUT_SIZE, PARSER_INPUT_SIZE)
            edited_labels = parse_labels(self.models.parser, edited, device=self.device, output_size=work)
            edited_face, edited_neck = face_and_neck_masks(edited_labels, size)
            result = warp_edited_jaw(
                edited,
                original_face=original_face,
                original_neck=original_neck,
                edited_face=edited_face,
                edited_neck=edited_neck,
                landmarks=prepared.landmarks,
            )
            warped = result.image
            if not result.warped:
                notes.append(f"The jaw warp was skipped ({result.reason}); the edited render is blended as is.")
        blend = feather_mask(region, dilate_px=FEATHER_WARP.dilate_px, blur_px=FEATHER_WARP.blur_px)
        return composite(prepared.aligned.image, warped, blend), blend, w_edited

    def diffuse_settings(self, settings: RemovalSettings) -> DiffuseSettings:
        """The diffuse loop's settings on this device.

        Steps and learning rate come from ``settings``; on a GPU the loop renders at the official 1024² with a 256² VGG
        input, under autocast; on a CPU it uses the smaller sizes of :data:`pipeline.refinement.diffuse.CPU_DIFFUSE`.
        """
        options = DiffuseSettings(steps=settings.refine_steps, learning_rate=settings.refine_lr)
        if self.device.type != "cuda":
            options = dataclasses.replace(
                options,
                optimise_size=CPU_DIFFUSE.optimise_size,
                feature_size=CPU_DIFFUSE.feature_size,
                precision=CPU_DIFFUSE.precision,
            )
        return options

    def _refine_diffuse(
        self,
        prepared: PreparedFace,
        settings: RemovalSettings,
        edited: np.ndarray,
        w_edited: np.ndarray,
        region: np.ndarray,
        notes: list[str],
        should_stop: StopCheck | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """METHOD.md §7: optimise from the original code towards the photo with the edited neck pasted in."""
        vgg = self._require_vgg("diffuse refinement")
        blend = feather_mask(region, dilate_px=FEATHER_DIFFUSE.dilate_px, blur_px=FEATHER_DIFFUSE.blur_px)
        target = composite(prepared.aligned.image, edited, region.astype(np.float32))
        options = self.diffuse_settings(settings)
        feature_distance = cached_target_distance(
            partial(diffuse_features, vgg, size=options.feature_size), partial(feature_mse, tap=DIFFUSE_FEATURE_TAP)
        )

        update, close = _tqdm_progress(
            "Refining the neck (diffuse)", settings.refine_steps, enabled=self.progress_bars
        )
        try:
            result = diffuse_refine(
                self.models.generator,
                feature_distance,
                target,
                1.0 - blend,
                prepared.w_plus,
                settings=options,
                progress=update,
                should_stop=should_stop,
            )
        finally:
            close()
        if result.stopped_early:
            notes.append(f"The diffuse refinement was stopped after {result.steps_run} of {options.steps} steps.")
        return composite(prepared.aligned.image, to_uint8(result.render), blend), blend, result.w_plus

    def sweep(
        self, edit: FaceEdit, settings: RemovalSettings, frames: int, *, on_stage: StageCallback | None = None
    ) -> tuple[np.ndarray, ...]:
        """Aligned crops for strengths 0 … the edit's strength, each render blended in with the edit's neck mask.

        The first frame (strength 0) is the aligned input unchanged, as :meth:`edit` returns it at strength 0.

        With the automatic strength the sweep ends at its mean per-layer step (the per-layer edit, averaged).

        Returns:
            ``frames`` (1024, 1024, 3) uint8 RGB images.
        """
        if on_stage is not None:
            on_stage("sweep")
        prepared = edit.prepared
        boundary = self.boundary(settings.boundary, settings.boundary_variant)
        end_strength = edit.auto_strength.mean_strength if edit.auto_strength is not None else settings.strength
        codes = strength_sweep(
            prepared.w_plus,
            boundary,
            end_strength=float(end_strength),
            steps=frames,
            mix_layers=settings.effective_mix_layers,
            mix_ratio=settings.mix_ratio,
        )  # (frames, 18, 512)
        later = tqdm(codes[1:], desc="Strength sweep", leave=False, disable=not self.progress_bars)
        return (  # strength 0 changes nothing (see edit): the first frame is the aligned input itself
            prepared.aligned.image,
            *(composite(prepared.aligned.image, self.render(code[None]), edit.blend_mask) for code in later),
        )

    # 7. Paste back and write back ------------------------------------------------------------------------------------

    def finish(
        self,
        decoded: DecodedImage,
        search: FaceSearch,
        edits: dict[int, FaceEdit],
        settings: RemovalSettings,
        *,
        timings: dict[str, float] | None = None,
        on_stage: StageCallback | None = None,
    ) -> RemovalResult:
        """Paste every edited face back, write the photo back into its own form, gather the notes.

        Args:
            decoded: the decoded upload (its model view, its own form and its notes).
            search: the detection the edits were made under (:meth:`detect`; its faces and their frame's turn).
            edits: face index → its edit (:meth:`edit`), pasted back in index order.
            settings: the settings the edits were made with.
            timings: seconds per stage so far (added to, with ``paste_back``).
            on_stage: told ``"paste_back"`` as it starts.

        Returns:
            The result: ``image`` is the (H, W, 3) uint8 sRGB model view (upright) and ``photo`` the result in the
            photo's own colour profile, bit depth and channels, equal to ``decoded.photo`` bit for bit outside the
            pixels the edit changed (the very same object when nothing changed).
        """
        timings = {} if timings is None else timings
        with _timed(timings, "paste_back", on_stage):
            frame = search.turn(decoded.image)
            for index in sorted(edits):
                edit = edits[index]
                frame = edit.prepared.aligned.paste_back(frame, edit.refined, edit.blend_mask)
            view = search.unturn(frame)
            # where the pastes can have changed the photo (upright frames; a turned one is compared whole)
            boxes = [edit.prepared.aligned.paste_box(edit.blend_mask) for edit in edits.values()]
            within = _union_box([box for box in boxes if box is not None]) if search.turn_degrees == 0 else None
            photo = write_back(decoded.photo, decoded.image, view, within)
        faces = search.faces
        notes = list(self.models.notes) + list(decoded.notes)
        if search.note:
            notes.append(search.note)
        if len(faces) > 1 and not settings.all_faces and len(edits) == 1:
            note = FACES_NOTE if search.exhaustive else FACES_NOTE_QUICK
            notes.append(note.format(count=len(faces), number=next(iter(edits)) + 1))
        for index in sorted(edits):
            prefix = f"Face {index + 1}: " if len(edits) > 1 else ""  # several faces: say which one a note is about
            notes.extend(prefix + note for note in edits[index].notes)
        return RemovalResult(
            view, decoded.image, faces, edits, settings, self.models.stand_in, notes, timings, photo,
            search.turn_degrees, search.exhaustive, search.description,
        )  # fmt: skip

    # The whole pipeline ---------------------------------------------------------------------------------------------

    def __call__(
        self,
        photo: ImageSource,
        settings: RemovalSettings | None = None,
        *,
        w_plus: np.ndarray | None = None,
        on_stage: StageCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> RemovalResult:
        """Remove the double chin of the largest (or chosen, or every) face of ``photo``.

        Args:
            photo: file path, encoded bytes, PIL image or (H, W, 3) uint8 RGB array.
            settings: strength, method, inversion, face choice, seed (:class:`RemovalSettings`).
            w_plus: optional (1, 18, 512) code of the (single) edited face, skipping its inversion.
            on_stage: told each stage name as it starts.
            should_stop: polled inside the optimisation loops.

        Raises:
            PipelineError: with a user-facing message (bad photo, no face, missing weights, bad code, …).
        """
        settings = RemovalSettings() if settings is None else settings
        timings: dict[str, float] = {}
        largest_only = not settings.all_faces and settings.face_index is None
        with _timed(timings, "decode", on_stage), DraftSearch(photo, enabled=largest_only) as draft:
            decoded = decode_upload(photo)  # meanwhile a large JPEG's reduced decode is searched for faces
        with _timed(timings, "detect", on_stage):
            search = self.detect(decoded.image, largest_only=largest_only, coarse=draft.detections_for(decoded))
        faces = search.faces
        indices = self.select_faces(faces, settings)
        if w_plus is not None and len(indices) != 1:
            raise PipelineError("A W+ code describes one face; choose a single face when you supply a code.")
        frame = search.turn(decoded.image)
        edits: dict[int, FaceEdit] = {}
        for index in indices:
            prepared = self.prepare(
                frame, faces[index], settings, w_plus=w_plus, on_stage=on_stage, should_stop=should_stop
            )
            edits[index] = self.edit(prepared, settings, on_stage=on_stage, should_stop=should_stop)
            add_timings(timings, prepared.timings, edits[index].timings)
        return self.finish(decoded, search, edits, settings, timings=timings, on_stage=on_stage)


def _union_box(boxes: list[tuple[slice, slice]]) -> tuple[slice, slice]:
    """The smallest (rows, columns) box holding every box (an empty box when there are none)."""
    if not boxes:
        return slice(0, 0), slice(0, 0)
    rows = slice(min(box[0].start for box in boxes), max(box[0].stop for box in boxes))
    return rows, slice(min(box[1].start for box in boxes), max(box[1].stop for box in boxes))


def add_timings(total: dict[str, float], *parts: dict[str, float]) -> dict[str, float]:
    """Add per-stage seconds of ``parts`` into ``total`` (returned)."""
    for part in parts:
        for name, seconds in part.items():
            total[name] = total.get(name, 0.0) + seconds
    return total


def is_zero_edit(settings: RemovalSettings, auto: AutoStrength | None) -> bool:
    """Whether the edit moves the code by nothing: strength 0, or an automatic strength whose steps are all 0."""
    if auto is not None:
        return not np.any(auto.steps * auto.edit_weights)
    return settings.strength == 0


def unchanged_edit(
    prepared: PreparedFace,
    w_edited: np.ndarray,
    edited: np.ndarray,
    auto: AutoStrength | None,
    notes: list[str],
    timings: dict[str, float],
    score: ScoreChange | None = None,
) -> FaceEdit:
    """A FaceEdit that changes nothing: empty neck mask, zero blend, the aligned crop as the refined crop."""
    region = np.zeros(prepared.aligned.image.shape[:2], dtype=bool)
    blank = np.zeros(region.shape, dtype=np.float32)
    unchanged = prepared.aligned.image.copy()
    return FaceEdit(
        prepared, w_edited, edited, region, blank, unchanged, prepared.w_plus.copy(), auto, notes, timings, score
    )
