"""The page's layout: the input controls (in the handlers' parameter order) and the output views."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from page.inputs import (
    CodeFile,
    SafeImage,
    SettingCheckbox,
    SettingDropdown,
    SettingNumber,
    SettingRadio,
    SettingSlider,
)
from page.text import share_markdown
from pipeline import BOUNDARY_VARIANTS, NUM_WS, SEED_MAX, STRENGTH_MAX, STRENGTH_MIN, RemovalSettings, StartupCheck

MAX_FACE_NUMBER = 15  # "too many faces (>15)" bound of RELIABILITY.md §2.3 (a CodeFormer Space derivative)
STEP_INCREMENT = 10
BOUNDARY_NAMES = {"fine": "Fine (W+, one per layer)", "coarse": "Coarse (W, one for all layers)"}
VARIANT_NAMES = {"all": "all data", "psi_0.5": "ψ 0.5", "psi_0.8": "ψ 0.8"}  # training data truncation (METHOD §4)

# The strength control and the keyboard: Enter in the slider's number box applies the typed value (Gradio's Slider
# dispatches "release" on blur and has no submit event, so Enter blurs the box), a value typed beyond the range is
# clamped first (Gradio would send it unclamped), and a slider moved with the keys applies when the key is let go.
STRENGTH_KEYS_JS = """
() => {
  document.addEventListener("keydown", (event) => {
    const box = event.target;
    if ((event.key === "Enter" || event.key === "Tab") && box instanceof HTMLInputElement && box.type === "number"
        && box.closest("#c2f-strength")) {
      const typed = Number(box.value);
      const low = box.min === "" ? -Infinity : Number(box.min);
      const high = box.max === "" ? Infinity : Number(box.max);
      if (box.value !== "" && (typed < low || typed > high)) {  // run at the value the box shows, not the typed one
        box.value = String(Math.min(high, Math.max(low, typed)));
        box.dispatchEvent(new Event("input", {bubbles: true}));
      }
      if (event.key === "Enter") {
        box.blur();
      }
    }
  });
  // Gradio's slider applies ("release") only on a pointer release; a keyboard change applies when its key is let go.
  const sliderKeys = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End", "PageUp", "PageDown"];
  document.addEventListener("keyup", (event) => {
    const range = event.target;
    if (sliderKeys.includes(event.key) && range instanceof HTMLInputElement && range.type === "range"
        && range.closest("#c2f-strength")) {
      range.dispatchEvent(new PointerEvent("pointerup", {bubbles: true}));
    }
  });
}
"""


def boundary_choices() -> list[tuple[str, str]]:
    """(label, value) of every boundary the authors ship; the value is ``"kind/variant"``."""
    return [
        (f"{BOUNDARY_NAMES[kind]} · {VARIANT_NAMES[variant]}", f"{kind}/{variant}")
        for kind in ("fine", "coarse")
        for variant in BOUNDARY_VARIANTS[kind]
    ]


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
    w_plus_code: CodeFile
    all_faces: SettingCheckbox
    boundary: SettingRadio
    authors_codes: SettingCheckbox

    def inputs(self) -> list[gr.components.Component]:
        """Every input, in handler order."""
        return [getattr(self, item.name) for item in dataclasses.fields(self)]


def build_controls(
    defaults: RemovalSettings, step_caps: tuple[int, int], add_examples: Callable[[SafeImage], None]
) -> tuple[Controls, gr.Button, gr.Image]:
    """The photo input, its examples, the run button and every setting (bounds from :mod:`pipeline.settings`).

    Args:
        defaults: the settings the controls start at.
        step_caps: the most (inversion, diffuse refinement) steps a user may ask for here.
        add_examples: places the examples under the photo input.

    Returns:
        The controls, the run button and the preview of the detected faces (numbered boxes).
    """
    photo = SafeImage(
        label="Portrait", sources=["upload", "webcam", "clipboard"], type="numpy", height=380, elem_id="c2f-photo"
    )
    add_examples(photo)
    authors_codes = SettingCheckbox(
        value=True,
        label="Examples: use the authors' W+ codes",
        info="The example photos come with the authors' own inversions; untick to run the encoder on them instead.",
        elem_id="c2f-authors-codes",
    )
    run_button = gr.Button("Remove double chin", variant="primary", elem_id="c2f-run")
    strength = SettingSlider(
        STRENGTH_MIN,
        STRENGTH_MAX,
        value=defaults.strength,
        step=0.5,
        label="Strength",
        info=(
            "More negative removes more; 0 returns the photo exactly as uploaded. "
            "Applied when you let go (or press Enter)."
        ),
        elem_id="c2f-strength",
    )
    auto_strength = SettingCheckbox(
        value=defaults.auto_strength,
        label="Automatic strength",
        info="Per-layer steps from the boundary's scores replace the slider.",
    )
    with gr.Row(equal_height=True, elem_id="c2f-face-row"):
        face_number = SettingNumber(
            1, label="Face (1 = largest)", precision=0, minimum=1, maximum=MAX_FACE_NUMBER, scale=1, min_width=140
        )
        all_faces = SettingCheckbox(
            value=False,
            label="Every face",
            info="Edit all faces found, like the CLI's --all-faces.",
            scale=1,
            min_width=140,
            elem_id="c2f-all-faces",
        )
    face_preview = gr.Image(
        label="Faces found", type="numpy", interactive=False, visible=False, height=240, elem_id="c2f-faces"
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
        boundary = SettingRadio(
            boundary_choices(),
            value=f"{defaults.boundary}/{defaults.boundary_variant}",
            label="Double-chin boundary",
            info="The paper compares a coarse W-space boundary with the fine per-layer W+ one (the default). "
            "Automatic strength needs fine · all data.",
            elem_id="c2f-boundary",
        )
        mix_layers, inversion_steps, refine_steps, seed, w_plus_code = build_advanced_controls(defaults, step_caps)
    controls = Controls(
        photo, strength, auto_strength, method, inversion, face_number, mix_layers, inversion_steps, refine_steps,
        seed, w_plus_code, all_faces, boundary, authors_codes,
    )  # fmt: skip
    return controls, run_button, face_preview


def build_advanced_controls(
    defaults: RemovalSettings, step_caps: tuple[int, int]
) -> tuple[SettingDropdown, SettingSlider, SettingSlider, SettingNumber, gr.File]:
    """Style-mixing layers, optimisation steps, seed and an optional W+ code (step caps depend on the device)."""
    inversion_step_cap, refine_step_cap = step_caps
    mix_layers = SettingDropdown(
        list(range(NUM_WS)),
        value=[],
        multiselect=True,
        label="Layers restored from the original (style mixing)",
        info="Empty = the method's default (warp: 6–17, diffuse: 7–17).",
    )
    inversion_steps = SettingSlider(
        0,
        inversion_step_cap,
        value=min(defaults.inversion_steps, inversion_step_cap),
        step=STEP_INCREMENT,
        label="Optimisation steps (encoder + optimisation only)",
    )
    refine_steps = SettingSlider(
        0,
        refine_step_cap,
        value=min(defaults.refine_steps, refine_step_cap),
        step=STEP_INCREMENT,
        label="Diffuse refinement steps",
    )
    seed = SettingNumber(defaults.seed, label="Seed", precision=0, minimum=0, maximum=SEED_MAX)
    w_plus_code = CodeFile(
        label="W+ code (.npy or .pt, optional: skips the inversion)",
        file_types=[".npy", ".pt", ".pth"],
        elem_id="c2f-code",
    )
    return mix_layers, inversion_steps, refine_steps, seed, w_plus_code


@dataclass
class Views:
    """The output components (made unrendered first, so the examples above them can name them)."""

    slider: gr.ImageSlider
    stages: gr.Gallery
    downloads: gr.File
    summary: gr.JSON
    notes: gr.Markdown
    score: gr.Markdown
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
                label="Stages",
                columns=5,
                format="jpeg",
                object_fit="contain",
                height=260,
                elem_id="c2f-stages",
                render=False,
            ),
            downloads=gr.File(label="Downloads", file_count="multiple", interactive=False, render=False),
            summary=gr.JSON(label="Summary", render=False),
            notes=gr.Markdown(label="Notes", elem_classes=["c2f-notes"], elem_id="c2f-notes", render=False),
            score=gr.Markdown(elem_id="c2f-score", render=False),
            sweep=gr.Image(label="Strength sweep", type="filepath", interactive=False, height=400, render=False),
        )

    def results(self) -> list[gr.components.Component]:
        """The outputs of a removal, in the handlers' return order."""
        return [self.slider, self.stages, self.downloads, self.summary, self.notes, self.score]

    def render(self, files_kept_s: int) -> gr.Button:
        """Lay the outputs out in the current column; returns the sweep button.

        Args:
            files_kept_s: how long result files are kept (what the share link's note promises).
        """
        self.slider.render()
        self.score.render()
        with gr.Row(equal_height=False, elem_id="c2f-share-row"):
            gr.DeepLinkButton("Copy a share link", "Link copied", size="md", scale=0, min_width=190)
            gr.Markdown(share_markdown(files_kept_s), elem_id="c2f-share-note")
        self.notes.render()
        with gr.Tabs():  # short names, Downloads first: all three fit a 390-px phone screen
            with gr.Tab("Downloads"):
                gr.Markdown(
                    "`result.png` (lossless, full size) · `w_plus.npy` (the face's W+ code; upload it "
                    "under Advanced to skip the inversion) · `settings.json`."
                )
                self.downloads.render()
                self.summary.render()
            with gr.Tab("Stages"):
                gr.Markdown("Aligned crop → reconstruction → edited render → neck mask → refined crop (previews).")
                self.stages.render()
            with gr.Tab("Sweep"):
                sweep_button = gr.Button("Animate from strength 0 to the chosen strength", elem_id="c2f-sweep")
                self.sweep.render()
        return sweep_button


def startup_check_banner(demo: gr.Blocks, check: StartupCheck | None) -> None:
    """A warning shown on page load once the start-up known-answer check (a background thread) has failed."""
    if check is None or not check.active:  # no models, or stand-ins (the stand-in banner already says why)
        return
    banner = gr.Markdown(visible=False, elem_classes=["c2f-banner", "c2f-warning"])

    def show() -> gr.Markdown:
        text = check.warning()
        return gr.Markdown(f"⚠️ {text}" if text else "", visible=bool(text))

    demo.load(show, None, banner, api_visibility="private", queue=False)
