"""What the page says: its header, credits, the weights-missing panel, progress labels, notes and stage captions."""

from __future__ import annotations

import html
from collections.abc import Callable

import gradio as gr
import numpy as np

from pipeline import REGISTRY, STAND_IN_NOTE, FaceEdit, WeightsError, format_status, mask_overlay, weights_status

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
    "edit": (0.6, "Moving along the double-chin boundary"),
    "mask": (0.7, "Finding the neck region"),
    "refine_warp": (0.75, "Refining the neck (warp)"),
    "refine_diffuse": (0.75, "Refining the neck (diffuse)"),
    "sweep": (0.85, "Rendering the strength sweep"),
    "paste_back": (0.9, "Pasting the face back into the photo"),
    "save": (0.95, "Saving the results"),
}

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
example photos carry non-commercial licences (details at the bottom). Photos are processed in memory; result files
are deleted within about {files_kept_s // 60} minutes.
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
