"""Command line: remove double chins from photo files with the same options as the app.

``python -m pipeline IMAGE [IMAGE ...] -o OUTDIR [options]`` runs :class:`pipeline.remover.DoubleChinRemover` (Wu et
al., "Coarse-to-Fine: Facial Structure Editing of Portrait Images via Latent Space Classifications", SIGGRAPH 2021;
METHOD.md §1) on every photo. The models are loaded once, on one device, for all photos.

For an input ``<stem>.<ext>`` it writes into OUTDIR:

- ``<stem>_no_double_chin.png``: the full-size result, a lossless PNG in the photo's own form (its ICC profile, bit
  depth, grey or colour, alpha; equal to the input outside the edited neck) without other metadata;
- ``<stem>_w_plus.npy``: (F, 18, 512) float32, the final W+ code of each edited face (F = number of faces edited;
  row order in the summary's ``w_plus_rows``);
- ``<stem>_summary.json``: :meth:`RemovalResult.summary` plus the input name, the output files and the stand-in flag;
- with ``--save-stages``: ``<stem>_face<N>_{aligned,reconstruction,edited,mask,refined}.png`` per edited face
  (N counts from 1, largest face first).

Safety: an output path that is one of the inputs is refused, existing outputs are kept unless ``--overwrite``, and
a photo's files are written under temporary names and renamed only once all of them are complete, so a failure
leaves nothing half-written.

Exit status: 0 when every photo was done; 1 when any photo failed (one ``<name>: <message>`` line each on stderr) or
the models or the ``--code`` file could not be loaded; 2 for usage errors. Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pipeline.allocator import keep_freed_memory
from pipeline.config import NUM_WS
from pipeline.device import select_device
from pipeline.errors import InputImageError, LatentCodeError, PipelineError
from pipeline.faces.photo import encode_png
from pipeline.latent.editing import BOUNDARY_VARIANTS, ScoreChange, load_latent_code
from pipeline.remover import DoubleChinRemover, FaceEdit, RemovalResult
from pipeline.settings import (
    INVERSIONS,
    MAX_STEPS,
    METHODS,
    SEED_MAX,
    STRENGTH_MAX,
    STRENGTH_MIN,
    RemovalSettings,
    default_settings,
)
from pipeline.threads import single_threaded_numpy_blas
from pipeline.weights.stand_in import STAND_IN_NOTE

logger = logging.getLogger(__name__)

PROG = "python -m pipeline"
EXIT_OK = 0
EXIT_FAILED = 1  # a photo failed, or the models / the --code file could not be loaded
EXIT_USAGE = 2  # argparse's status for command-line errors
EXIT_INTERRUPTED = 130  # shell convention for Ctrl-C (128 + SIGINT)

RESULT_SUFFIX = "_no_double_chin.png"
CODES_SUFFIX = "_w_plus.npy"
SUMMARY_SUFFIX = "_summary.json"
STAGE_NAMES = ("aligned", "reconstruction", "edited", "mask", "refined")
STAGE_FILE_PATTERN = r"_face\d+_(?:" + "|".join(STAGE_NAMES) + r")\.png"
OUTPUT_FILE_MODE = 0o644  # rw-r--r--, like a file written with the default umask (temporary files start at 0600)
DEFAULT_VARIANT = {"fine": "all", "coarse": "psi_0.8"}  # fine/all: official commands; coarse: ours (ψ=0.8 SVM has
# the higher logged validation accuracy, 88.9 % vs 86.7 %; METHOD.md §4)
PLAIN_OPTIONS = ("method", "inversion", "boundary_variant", "mix_layers", "seed")  # option = RemovalSettings field
LAYER_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
STAND_IN_WARNING = f"WARNING: {STAND_IN_NOTE} Download the real weights to remove double chins (see README)."


class UsageError(Exception):
    """The command line asks for something that cannot be done (reported like an argparse error, exit 2)."""


class OutputConflictError(UsageError):
    """The planned outputs clash with files on disk: reported as just the message (the usage text would not help)."""


@dataclass(frozen=True)
class OutputPlan:
    """Where the outputs of one input photo go."""

    source: Path  # the input photo, as given on the command line
    result: Path  # <stem>_no_double_chin.png
    codes: Path  # <stem>_w_plus.npy
    summary: Path  # <stem>_summary.json

    @property
    def name(self) -> str:
        """The input as the user typed it (used in messages)."""
        return str(self.source)

    def stage(self, face_index: int, stage: str) -> Path:
        """Path of one stage image of the face with 0-based index ``face_index``."""
        return self.result.with_name(f"{self.stem}_face{face_index + 1}_{stage}.png")

    @property
    def stem(self) -> str:
        """Common prefix of this photo's output files."""
        return self.result.name[: -len(RESULT_SUFFIX)]


# ---------------------------------------------------------------------------------------------------------------------
# Argument parsing


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected a number from {STRENGTH_MAX:g} to {STRENGTH_MIN:g}, got {text!r}"
        ) from err
    if not math.isfinite(value) or not STRENGTH_MIN <= value <= STRENGTH_MAX:
        hint = f" (removal strengths are negative, e.g. {-value:g})" if value > 0 else ""
        raise argparse.ArgumentTypeError(f"must be from {STRENGTH_MAX:g} to {STRENGTH_MIN:g}, got {text}{hint}")
    return value


def _non_negative_int(text: str, upper: int) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from err
    if not 0 <= value <= upper:
        raise argparse.ArgumentTypeError(f"must be from 0 to {upper}, got {value}")
    return value


def _steps(text: str) -> int:
    return _non_negative_int(text, MAX_STEPS)


def _seed(text: str) -> int:
    return _non_negative_int(text, SEED_MAX)


def _face_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a face number (1 = largest face), got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"face numbers start at 1 (the largest face), got {value}")
    return value


def parse_layers(text: str) -> tuple[int, ...]:
    """Parse a W+ layer list such as ``"7-17"``, ``"6,8-17"`` or ``"none"`` into sorted unique indices 0–17.

    Raises:
        argparse.ArgumentTypeError: on anything else.
    """
    if text.strip().lower() == "none":
        return ()
    layers: set[int] = set()
    for part in text.split(","):
        match = LAYER_RANGE.match(part.strip())
        if match is None:
            raise argparse.ArgumentTypeError(f'expected layers like "7-17" or "6,8-17" or "none", got {text!r}')
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if not 0 <= first <= last < NUM_WS:
            raise argparse.ArgumentTypeError(f"layers must be ranges within 0-{NUM_WS - 1}, got {part.strip()!r}")
        layers.update(range(first, last + 1))
    return tuple(sorted(layers))


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pipeline``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Remove the double chin from portrait photos (Coarse-to-Fine, SIGGRAPH 2021). Defaults follow the "
        "paper's code; the device decides the method when none is given (diffuse on a GPU, warp on a CPU).",
        epilog=f"Outputs per photo: <stem>{RESULT_SUFFIX}, <stem>{CODES_SUFFIX}, <stem>{SUMMARY_SUFFIX}. "
        "Exit status: 0 all done, 1 some photo failed, 2 usage error.",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos to edit (JPEG, PNG, WebP, …)")
    parser.add_argument("-o", "--outdir", type=Path, required=True, help="folder for the outputs (created if needed)")

    edit = parser.add_argument_group("edit")
    how_strong = edit.add_mutually_exclusive_group()
    how_strong.add_argument(
        "--strength",
        type=_strength,
        metavar="S",
        help=f"edit strength from {STRENGTH_MAX:g} (no change) to {STRENGTH_MIN:g} (strongest); default "
        f"{RemovalSettings().strength:g}",
    )
    how_strong.add_argument(
        "--auto", action="store_true", help="automatic per-layer strength from the boundary intercepts (fine/all only)"
    )
    edit.add_argument("--method", choices=METHODS, help="refinement: warp (fast) or diffuse (slow, optimisation)")
    edit.add_argument("--boundary", choices=tuple(BOUNDARY_VARIANTS), help="fine (default, keeps identity) or coarse")
    edit.add_argument(
        "--boundary-variant",
        choices=sorted({v for variants in BOUNDARY_VARIANTS.values() for v in variants}),
        help="fine: all (default), psi_0.5, psi_0.8; coarse: psi_0.5, psi_0.8 (default)",
    )
    edit.add_argument(
        "--mix-layers",
        type=parse_layers,
        metavar="LAYERS",
        help='W+ layers taken back from the original code, e.g. "7-17", "6,8-17" or "none"; '
        "default 7-17 for diffuse, 6-17 for warp",
    )

    quality = parser.add_argument_group("inversion and refinement")
    quality.add_argument(
        "--inversion", choices=INVERSIONS, help="encoder (fast) or optimise (encoder, then W+ optimisation)"
    )
    quality.add_argument(
        "--inversion-steps", type=_steps, metavar="N", help="W+ optimisation steps (implies --inversion optimise)"
    )
    quality.add_argument(
        "--refine-steps", type=_steps, metavar="N", help="diffuse refinement steps (implies --method diffuse)"
    )
    quality.add_argument(
        "--code",
        type=Path,
        metavar="FILE",
        help="use this (1, 18, 512) W+ code (.npy, or .pt/.pth from a projector) instead of inverting (one IMAGE)",
    )
    quality.add_argument("--seed", type=_seed, help="seed of every random choice (default 0): equal runs repeat")

    faces = parser.add_argument_group("faces").add_mutually_exclusive_group()
    faces.add_argument("--face", type=_face_number, metavar="N", help="edit face N (1 = largest; default 1)")
    faces.add_argument("--all-faces", action="store_true", help="edit every face found")

    output = parser.add_argument_group("output")
    output.add_argument("--save-stages", action="store_true", help="also write every intermediate of each face")
    output.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs never)")

    runtime = parser.add_argument_group("runtime")
    runtime.add_argument(
        "--weights-dir", type=Path, metavar="DIR", help="weights folder (default: $C2F_WEIGHTS_DIR or checkpoints/)"
    )
    runtime.add_argument("--device", type=_device, default="auto", help="auto (default: CUDA if present), cpu, cuda")
    runtime.add_argument("--no-download", action="store_true", help="never download weights; fail if missing")
    runtime.add_argument("--debug", action="store_true", help="debug logging and tracebacks for failures")
    runtime.add_argument("--quiet", action="store_true", help="no progress bars and no per-photo lines on stdout")
    return parser


def settings_from_args(args: argparse.Namespace, device: torch.device) -> RemovalSettings:
    """The run's settings: :func:`default_settings` for ``device`` with the options given on the command line.

    Raises:
        UsageError: contradictory options (e.g. ``--refine-steps`` with ``--method warp``).
        ValueError: values :class:`RemovalSettings` rejects (e.g. ``--auto`` with the coarse boundary).
    """
    if args.refine_steps is not None and args.method not in (None, "diffuse"):
        raise UsageError("--refine-steps sets the diffuse refinement; it does nothing with --method warp")
    if args.code is not None and (args.inversion is not None or args.inversion_steps is not None):
        raise UsageError("--code replaces the inversion; leave out --inversion and --inversion-steps")
    if args.inversion_steps is not None and args.inversion not in (None, "optimise"):
        raise UsageError("--inversion-steps sets the W+ optimisation; it does nothing with --inversion encoder")
    changes: dict[str, object] = {}
    if args.auto:
        changes["auto_strength"] = True
    elif args.strength is not None:
        changes["strength"] = args.strength
    if args.refine_steps is not None:  # implies the diffuse method
        changes.update(method="diffuse", refine_steps=args.refine_steps)
    if args.inversion_steps is not None:  # implies the optimised inversion
        changes.update(inversion="optimise", inversion_steps=args.inversion_steps)
    if args.boundary is not None:
        changes.update(boundary=args.boundary, boundary_variant=DEFAULT_VARIANT[args.boundary])
    if args.face is not None:
        changes["face_index"] = args.face - 1
    if args.all_faces:
        changes["all_faces"] = True
    changes.update({name: getattr(args, name) for name in PLAIN_OPTIONS if getattr(args, name) is not None})
    return dataclasses.replace(default_settings(device), **changes)


# ---------------------------------------------------------------------------------------------------------------------
# Output planning and writing


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (after resolving links; hard links too when both exist)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def plan_outputs(
    images: Sequence[Path], outdir: Path, *, save_stages: bool = False, overwrite: bool = False
) -> list[OutputPlan]:
    """Decide every output path and refuse plans that would overwrite an input or (without ``overwrite``) an output.

    Raises:
        OutputConflictError: OUTDIR is a file, two inputs share a stem, an output would be an input, or an output
            exists and ``overwrite`` is False.
    """
    if outdir.exists() and not outdir.is_dir():
        raise OutputConflictError(f"the output folder {outdir} is a file")
    plans: list[OutputPlan] = []
    stems: dict[str, Path] = {}
    for image in images:
        stem = image.stem
        if stem in stems:
            raise OutputConflictError(
                f"{stems[stem]} and {image} would write the same outputs ({stem}{RESULT_SUFFIX}, …)"
            )
        stems[stem] = image
        plans.append(
            OutputPlan(
                source=image,
                result=outdir / f"{stem}{RESULT_SUFFIX}",
                codes=outdir / f"{stem}{CODES_SUFFIX}",
                summary=outdir / f"{stem}{SUMMARY_SUFFIX}",
            )
        )
    for plan in plans:
        planned = [plan.result, plan.codes, plan.summary]
        for image in images:
            if any(_same_file(path, image) for path in planned) or (
                save_stages
                and re.fullmatch(re.escape(plan.stem) + STAGE_FILE_PATTERN, image.name)
                and _same_file(image.parent, outdir)
            ):
                raise OutputConflictError(
                    f"the outputs of {plan.name} would overwrite the input {image}; choose another -o"
                )
        if overwrite:
            continue
        existing = [path for path in planned if path.exists()]
        if save_stages and outdir.is_dir():
            pattern = re.compile(re.escape(plan.stem) + STAGE_FILE_PATTERN)
            existing += sorted(path for path in outdir.iterdir() if pattern.fullmatch(path.name))
        if existing:
            raise OutputConflictError(
                f"{existing[0]} already exists; pass --overwrite to replace the outputs of {plan.name}, "
                "or choose another -o"
            )
    return plans


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG of a (H, W, 3) uint8 RGB or (H, W) uint8 grey image, without metadata chunks."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """The array as a .npy file (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_files_atomically(files: dict[Path, bytes], *, overwrite: bool) -> None:
    """Write every file under a temporary name in its folder, then rename them all; on failure remove the temporaries.

    Raises:
        FileExistsError: a target appeared meanwhile and ``overwrite`` is False (nothing of this batch is renamed
            after that point; files renamed before it stay complete).
        OSError: writing failed.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data in files.items():
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            temporary = Path(name)
            staged.append((temporary, target))
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            temporary.chmod(OUTPUT_FILE_MODE)
        for temporary, target in staged:
            if not overwrite and target.exists():
                raise FileExistsError(f"{target} appeared while the photo was processed; it was left as it is")
            temporary.replace(target)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def _stage_images(edit: FaceEdit) -> dict[str, np.ndarray]:
    mask = np.rint(np.clip(edit.blend_mask, 0.0, 1.0) * 255.0).astype(np.uint8)
    images = {
        "aligned": edit.prepared.aligned.image,
        "reconstruction": edit.prepared.reconstruction,
        "edited": edit.edited,
        "mask": mask,
        "refined": edit.refined,
    }
    assert tuple(images) == STAGE_NAMES
    return images


def result_files(
    result: RemovalResult, plan: OutputPlan, *, save_stages: bool, seconds: float
) -> tuple[dict[Path, bytes], dict[str, object]]:
    """Encode a result into its output files (path → bytes) and return them with the JSON summary."""
    indices = sorted(result.edits)
    files: dict[Path, bytes] = {
        plan.result: png_bytes(result.image) if result.photo is None else encode_png(result.photo)
    }
    codes = np.concatenate([result.edits[i].w_final.reshape(1, NUM_WS, -1) for i in indices]).astype(np.float32)
    files[plan.codes] = npy_bytes(codes)
    stage_names: dict[str, dict[str, str]] = {}
    if save_stages:
        for index in indices:
            stage_names[str(index)] = {}
            for stage, image in _stage_images(result.edits[index]).items():
                path = plan.stage(index, stage)
                files[path] = png_bytes(image)
                stage_names[str(index)][stage] = path.name
    summary: dict[str, object] = {"input": plan.source.name, **result.summary()}
    summary["total_s"] = round(seconds, 3)
    summary["w_plus_rows"] = {str(index): row for row, index in enumerate(indices)}
    summary["outputs"] = {
        "image": plan.result.name,
        "w_plus": plan.codes.name,
        "summary": plan.summary.name,
        **({"stages": stage_names} if save_stages else {}),
    }
    files[plan.summary] = (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return files, summary


# ---------------------------------------------------------------------------------------------------------------------
# Running


def _err(text: str) -> None:
    tqdm.write(text, file=sys.stderr)


def _out(text: str) -> None:
    tqdm.write(text, file=sys.stdout)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _configure_logging(args: argparse.Namespace) -> int:
    """Log the package's messages at the level the flags ask for; returns the previous level (restored by main)."""
    package = logging.getLogger("pipeline")
    previous = package.level
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    package.setLevel(logging.DEBUG if args.debug else logging.ERROR if args.quiet else logging.WARNING)
    return previous


def process_photo(
    remover: DoubleChinRemover,
    plan: OutputPlan,
    settings: RemovalSettings,
    *,
    code: np.ndarray | None,
    save_stages: bool,
    overwrite: bool,
    bar: tqdm | None = None,
) -> dict[str, object]:
    """Edit one photo and write its outputs; returns the JSON summary.

    Raises:
        PipelineError: the photo could not be edited (message for the user); nothing was written.
        OSError: the outputs could not be written; nothing half-written was left.
    """
    start = time.perf_counter()
    if not plan.source.exists():
        raise InputImageError("no such file")
    if not plan.source.is_file():
        raise InputImageError("this is not a file")

    def on_stage(stage: str) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{plan.source.name}: {stage}")

    result = remover(plan.source, settings, w_plus=code, on_stage=on_stage)
    if save_stages:
        for edit in result.edits.values():
            remover.reconstruct(edit.prepared)  # rendered only when asked for (not needed by the result)
    files, summary = result_files(result, plan, save_stages=save_stages, seconds=time.perf_counter() - start)
    plan.result.parent.mkdir(parents=True, exist_ok=True)  # created with the first output, so failures leave none
    write_files_atomically(files, overwrite=overwrite)
    return summary


def score_text(summary: dict[str, object]) -> str:
    """`` (double-chin score 2.1 → −2.9)`` per edited face, from a summary (empty when it has none)."""
    parts = []
    for index, face in summary.get("faces", {}).items():  # type: ignore[union-attr]
        score = face.get("double_chin_score")
        if score:
            change = ScoreChange(score["before"], score["after"], tuple(score["layers"]))
            parts.append(f"face {int(index) + 1}: {change.arrow()}" if len(summary["faces"]) > 1 else change.arrow())
    return f" (double-chin score {'; '.join(parts)})" if parts else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous_level = _configure_logging(args)
    keep_freed_memory()  # process-wide glibc tuning: renders reuse their memory (docs/performance.md)
    single_threaded_numpy_blas()  # spinning BLAS threads would slow the renders (docs/performance.md)
    try:
        return _run(parser, args)
    except KeyboardInterrupt:
        _err("interrupted; the photo in progress was not written")
        return EXIT_INTERRUPTED
    finally:
        logging.getLogger("pipeline").setLevel(previous_level)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        device = select_device(args.device)
        settings = settings_from_args(args, device)
        if args.code is not None and (len(args.images) != 1 or args.all_faces):
            raise UsageError("--code is the W+ code of one face: give a single IMAGE and leave out --all-faces")
        plans = plan_outputs(args.images, args.outdir, save_stages=args.save_stages, overwrite=args.overwrite)
    except OutputConflictError as err:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {err}\n")  # the message alone, without the usage text
    except (UsageError, ValueError) as err:
        parser.error(str(err))  # exits with EXIT_USAGE

    code = None
    if args.code is not None:
        try:
            code = load_latent_code(args.code)
        except LatentCodeError as err:
            _err(f"error: {err}")
            return EXIT_FAILED
    try:
        remover = DoubleChinRemover.from_pretrained(
            args.weights_dir, device=device, allow_download=not args.no_download
        )
    except PipelineError as err:
        if args.debug:
            logger.exception("loading the models failed")
        _err(f"error: {err}")
        return EXIT_FAILED
    remover.progress_bars = not args.quiet
    if remover.models.stand_in:
        _err(STAND_IN_WARNING)

    failed = 0
    bar = tqdm(total=len(plans), desc="Photos", unit="photo", disable=args.quiet, file=sys.stderr)
    try:
        for plan in plans:
            try:
                summary = process_photo(
                    remover,
                    plan,
                    settings,
                    code=code,
                    save_stages=args.save_stages,
                    overwrite=args.overwrite,
                    bar=bar,
                )
            except (PipelineError, OSError) as err:
                failed += 1
                if args.debug:
                    logger.exception("%s failed", plan.name)
                _err(f"{plan.name}: {_one_line(err)}")
            except Exception as err:  # a bug, not a bad photo: say so, keep going with the other photos
                failed += 1
                if args.debug:
                    logger.exception("%s failed", plan.name)
                detail = _one_line(f"{type(err).__name__}: {err}")
                _err(f"{plan.name}: unexpected error ({detail}); run again with --debug for the traceback")
            else:
                if not args.quiet:
                    _out(f"{plan.name} -> {plan.result}{score_text(summary)}")
            bar.update(1)
    finally:
        bar.close()
    if not args.quiet:
        done = len(plans) - failed
        _out(f"{done} of {len(plans)} photos done" + (f"; outputs in {args.outdir}" if done else ""))
    return EXIT_FAILED if failed else EXIT_OK
