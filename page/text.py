"""What the page says: its header, credits, the weights-missing panel, progress labels, notes and stage captions."""

from __future__ import annotations

import html
import json
from collections.abc import Callable

import gradio as gr
import numpy as np

from pipeline import (
    REGISTRY,
    STAND_IN_NOTE,
    FaceEdit,
    ScoreChange,
    WeightsError,
    format_status,
    mask_overlay,
    weights_status,
)

STAND_IN_BANNER = (
    f"**{STAND_IN_NOTE}** They exist to test the app offline; point `C2F_WEIGHTS_DIR` at the real weights (or let "
    "the app download them) for real results."
)
STAGE_PROGRESS = {  # pipeline stage → (fraction done when it starts, label shown to the user)
    "decode": (0.01, "Reading the photo"),
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

STALE_NOTES = (
    "**The last run failed** (its message is shown above), so the results of the run before it were cleared: "
    "nothing here belongs to the current photo and settings."
)
AUTHORS_CODE_NOTE = (
    "This example photo was edited from the authors' own W+ code (their StyleGAN2 projector's inversion), so the "
    "result follows the paper's inversion. Untick “Examples: use the authors' W+ codes” to run the encoder instead."
)
SCORE_EXPLANATION = (
    "Where the face's W+ code lies relative to the authors' fine double-chin boundary, averaged over the layers the "
    "edit changes: **positive = double-chin side, negative = no double chin**; the edit moves it by the strength. "
    "A rough guide measured on the code, not a verdict on the photo."
)

PAPER_URL = "https://doublechinremoval.github.io/"
CODE_URL = (
    "https://github.com/oneThousand1000/Facial-Structure-Editing-of-Portrait-Images-via-Latent-Space-Classifications"
)


def header_markdown(on_gpu: bool, files_kept_s: int) -> str:
    """Title, what the page does, credit to the paper and the terms of use."""
    hardware = (
        "Running on a GPU."
        if on_gpu
        else "Running on a CPU: the defaults use the fast path (encoder + warp); the optimisation modes are slow here."
    )
    return f"""# Double-chin removal

Upload a portrait (or pick an example), press **Remove double chin** and drag the slider to compare. Only the neck
region changes; the rest of the photo is kept pixel for pixel. {hardware}

An independent implementation of [*Coarse-to-Fine: Facial Structure Editing of Portrait Images via Latent Space
Classifications*]({PAPER_URL}) by Yiqian Wu, Yong-Liang Yang, Qinjie Xiao and Xiaogang Jin (ACM TOG 40(4),
SIGGRAPH 2021; [official code]({CODE_URL})).
**Terms:** non-commercial research and personal use only — the StyleGAN2, face-parsing and landmark weights and the
example photos carry non-commercial licences (details at the bottom). Photos are processed in memory; uploads,
result files and share links are deleted within about {files_kept_s // 60} minutes.
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


def stage_reporter(progress: gr.Progress | None) -> Callable[[str], None]:
    """An ``on_stage`` callback showing each stage's name (and a rough fraction) in Gradio's progress bar."""

    def report(stage: str) -> None:
        if progress is not None:
            fraction, label = STAGE_PROGRESS.get(stage, (None, stage.replace("_", " ").capitalize()))
            progress(fraction, desc=label)

    return report


def stage_gallery(edits: dict[int, FaceEdit]) -> list[tuple[np.ndarray, str]]:
    """The intermediate images of each face edit, in order, with captions (prefixed by the face when several)."""
    items = []
    for index, edit in sorted(edits.items()):
        prepared = edit.prepared
        face = f"Face {index + 1} · " if len(edits) > 1 else ""
        items += [
            (prepared.aligned.image, f"{face}1 · Aligned crop"),
            (prepared.reconstruction, f"{face}2 · Reconstruction ({prepared.inversion})"),
            (edit.edited, f"{face}3 · Edited render"),
            (mask_overlay(prepared.aligned.image, edit.blend_mask), f"{face}4 · Neck mask"),
            (edit.refined, f"{face}5 · Refined crop"),
        ]
    return items


def share_markdown(files_kept_s: int) -> str:
    """What a share link keeps, and for how long (the same promise as the privacy note in the header)."""
    minutes = files_kept_s // 60
    return (
        f"<small>The link opens this page as it is now (photo, settings, results) for anyone who has it. Like every "
        f"upload and result, its files are deleted about {minutes} minutes after the run; after that the link opens "
        "an empty page that says it has expired.</small>"
    )


def expired_markdown(files_kept_s: int) -> str:
    """Shown when a share link is opened after its files were deleted."""
    return (
        f"**This shared link has expired.** Its photo and results were deleted about {files_kept_s // 60} minutes "
        "after the run, as the note at the top says. Upload the photo again to redo the edit."
    )


def score_markdown(scores: dict[int, ScoreChange], stand_in: bool) -> str:
    """The double-chin score readout: "Double-chin score 2.1 → −2.9" per edited face, with what it means.

    Args:
        scores: face index (0-based) → its score change.
        stand_in: the weights are stand-ins (the encoder's code, and so the score, means nothing).
    """
    if not scores:
        return ""
    lines = []
    for index, score in sorted(scores.items()):
        face = f" (face {index + 1})" if len(scores) > 1 else ""
        aim = "" if score.target is None else f"; the automatic strength aimed for {score.target:.1f}"
        layers = layer_list(score.layers)
        lines.append(f"**Double-chin score{face}: {score.arrow()}** ({layers}{aim.replace('-', '−')})")
    caveat = " With stand-in weights the code is random, so the score means nothing here." if stand_in else ""
    return "  \n".join(lines) + f"\n\n<small>{SCORE_EXPLANATION}{caveat}</small>"


def layer_list(layers: tuple[int, ...]) -> str:
    """How W+ layers read on the page: “layers 0–5” for a run, “layers 0, 2, 5” otherwise, “layer 3” for one."""
    if len(layers) == 1:
        return f"layer {layers[0]}"
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}–{layers[-1]}"
    return "layers " + ", ".join(str(layer) for layer in layers)


def notes_markdown(notes: list[str]) -> str:
    """Notes as a Markdown list (empty string when there are none)."""
    return "\n".join(["**Notes**", *(f"- {html.escape(note, quote=False)}" for note in notes)]) if notes else ""


def expired_link_js(expired_notes: str) -> str:
    """The page-load function that empties a shared page whose files have expired (runs in the browser).

    It takes and returns the values of (photo, faces preview, before/after, stages, downloads, summary, notes,
    score): unchanged while ``summary["files_expire_at"]`` lies ahead (or there is no summary), else all empty with
    ``expired_notes`` in the Notes. A restored summary can arrive as text (Gradio 6.31 writes a gr.JSON value into
    the link's state as ``str(JsonData)``, a Python repr), so the time is read from the value's text.
    """
    return f"""
(...values) => {{
  const summary = values[5];
  const text = typeof summary === "string" ? summary : JSON.stringify(summary ?? null);
  const found = /files_expire_at['"]\\s*:\\s*['"]([^'"]+)['"]/.exec(text);
  if (!found || !(Date.now() >= Date.parse(found[1]))) return values;
  return [null, null, null, [], null, null, {json.dumps(expired_notes)}, ""];
}}
"""
