"""End to end on the CPU with full-size networks: one 1024² face in a 12 MP photo, a slider change, diffuse.

Usage (from the repo root)::

    .venv/bin/python -m bench.bench_end_to_end --case end-to-end [--runs 5] [--labels synthetic] [--json PATH]
    .venv/bin/python -m bench.bench_end_to_end --case slider [--runs 7]
    .venv/bin/python -m bench.bench_end_to_end --case diffuse [--runs 1] [--refine-steps N]

The weights are full-size random stand-ins in the real file formats (:mod:`bench.full_size`: IR-SE-50 e4e + FFHQ
config-f generator, BiSeNet, VGG16), so every stage costs what it costs with the real weights; the photo is a
4000×3000 JPEG with the reference face ``examples/00016.png`` at 1280² (aligned crop ≈ a 0.8× downscale).

Cases (each a separate process when run by :mod:`bench.run_all`, so peak RSS is per case):

- ``end-to-end``: ``remover(photo_path, settings)`` with the CPU defaults (encoder inversion, warp refinement):
  decode → detect → align → encoder → reconstruct → parse → edit → mask → warp → paste back.
- ``slider``: a strength change on a cached :class:`~pipeline.remover.PreparedFace`: ``remover.edit`` plus the paste
  back into the 12 MP photo (what the app does when the slider moves).
- ``diffuse``: ``remover.edit`` with ``method="diffuse"`` on the cached face with the CPU recipe
  (:data:`pipeline.refinement.diffuse.CPU_DIFFUSE`: 50 steps at lr 0.02, 256² render, VGG at 128²), plus paste
  back.

``--float32-encoder``: every encoder weight in float32, instead of the CPU default's float16 weights for the small
style convolutions (:data:`pipeline.networks.encoder.HALF_SMALL_CONVS_ON_CPU`), to measure what that default saves.

``--labels``: the random BiSeNet labels pixels at random, so the neck mask is usually empty and the warp is skipped
(``model``: what the random weights give, the fast fallback path). ``synthetic`` (the default) runs the full BiSeNet
and then substitutes a plausible label map drawn from the landmarks (:class:`bench.full_size.SyntheticLabelParser`),
so the mask is non-empty and the jaw warp / diffuse refinement really run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from bench.common import Record, Samples, format_row, peak_rss_mb, reference_forward_s, resident_file_mb, timed
from bench.full_size import SyntheticLabelParser, full_size_weights_dir, twelve_mp_jpeg
from pipeline.allocator import keep_freed_memory
from pipeline.config import ALIGNED_SIZE
from pipeline.faces.align import align_face, find_faces
from pipeline.faces.decode import decode_upload
from pipeline.faces.upright import find_faces_any_turn
from pipeline.refinement.diffuse import CPU_DIFFUSE
from pipeline.remover import STAGES, DoubleChinRemover, PreparedFace
from pipeline.settings import RemovalSettings, default_settings
from pipeline.threads import single_threaded_numpy_blas

TARGETS = {  # issue 8: CPU budget of the default path
    "end-to-end": 12.0,
    "slider": 4.0,
    "diffuse": 90.0,
}
RSS_TARGET_MB = 6 * 1024  # issue 8: peak RSS ≤ 6 GB
SLIDER_STRENGTHS = (-2.0, -3.5, -5.0, -6.5, -8.0)  # timed slider positions, in turn
FLOAT32_LABEL = ", float32 encoder"  # row label of --float32-encoder
STAGE_ORDER = STAGES  # the remover's stage names, in pipeline order


def load_remover(
    labels: str, *, half_small_convs: bool | None = None
) -> tuple[DoubleChinRemover, SyntheticLabelParser | None]:
    remover = DoubleChinRemover.from_pretrained(
        full_size_weights_dir(), device="cpu", allow_download=False, half_small_convs=half_small_convs
    )
    remover.progress_bars = False
    if labels == "model":
        return remover, None
    parser = SyntheticLabelParser(remover.models.parser)
    return DoubleChinRemover(dataclasses.replace(remover.models, parser=parser)), parser


def time_reference(remover: DoubleChinRemover, record: Record) -> tuple[float, float | None]:
    """Peak RSS so far, then one 1024² generator forward timed twice in this process (their mean is the unit).

    Called after the timed runs: a whole 1024² render needs more memory than the windowed path, so the peak RSS of
    the path itself is read first and recorded in its row (``bench.run_all`` keeps a row's own figure), with the
    file-backed part of the resident memory at that moment (the memory-mapped weights and the libraries).
    """
    rss, file_backed = peak_rss_mb(), resident_file_mb()
    for _ in range(2):
        record.extra.setdefault("forward_s", []).append(reference_forward_s(remover.models.generator))
    return rss, file_backed


def aligned_landmarks(photo_path: str) -> np.ndarray:
    """(68, 2) landmarks of the photo's largest face in its aligned frame, found as the fast path finds them.

    Computed in a child process, so that decoding and aligning the 12 MP photo for the synthetic labels leaves none of
    its memory in this process (the peak RSS of the end-to-end row is the request's own).
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_aligned_landmarks, photo_path).result()


def _aligned_landmarks(photo_path: str) -> np.ndarray:
    image = decode_upload(photo_path).image
    face = find_faces_any_turn(image, largest_only=True).faces[0]
    return align_face(image, face, ALIGNED_SIZE).to_aligned(face.landmarks)


def stage_rows(record: Record, name: str, per_stage: dict[str, list[float]]) -> None:
    for stage in STAGE_ORDER:
        if per_stage.get(stage):
            record.rows.append(Samples(wall=per_stage[stage]).row(f"  {name}: {stage}"))


def run_end_to_end(args: argparse.Namespace, record: Record) -> None:
    remover, parser = load_remover(args.labels, half_small_convs=False if args.float32_encoder else None)
    photo_path = str(twelve_mp_jpeg())
    settings = default_settings(torch.device("cpu"))
    if parser is not None:
        parser.set_landmarks(aligned_landmarks(photo_path), ALIGNED_SIZE)
    samples, per_stage, notes = Samples(), {}, set()
    for index in range(args.warmup + args.runs):
        if parser is not None:
            parser.reset()
        result = timed(lambda: remover(photo_path, settings), samples if index >= args.warmup else Samples())
        if index >= args.warmup:
            for stage, seconds in result.timings.items():
                per_stage.setdefault(stage, []).append(seconds)
        notes.update(note for note in result.notes if "stand-in" not in note)
    rss, file_backed = time_reference(remover, record)
    warp = "warp ran" if not any("skipped" in note or "unchanged" in note for note in notes) else "warp fallback"
    record.rows.append(
        samples.row(
            f"end-to-end 12 MP ({args.labels} labels{FLOAT32_LABEL if args.float32_encoder else ''})",
            peak_rss_mb=rss,
            rss_file_mb=file_backed,
            target_s=TARGETS["end-to-end"],
            target_rss_mb=RSS_TARGET_MB,
            note=warp,
        )
    )
    stage_rows(record, "e2e", per_stage)
    record.extra["notes"] = sorted(notes)
    record.extra["settings"] = settings.to_dict()


def prepare_once(remover: DoubleChinRemover, parser: SyntheticLabelParser | None, settings: RemovalSettings):
    photo = decode_upload(str(twelve_mp_jpeg()))
    face = find_faces(photo.image)[0]
    if parser is not None:
        parser.set_landmarks(align_face(photo.image, face, ALIGNED_SIZE).to_aligned(face.landmarks), ALIGNED_SIZE)
    return photo, remover.prepare(photo.image, face, settings)


def slider_change(remover: DoubleChinRemover, photo: np.ndarray, prepared: PreparedFace, settings: RemovalSettings):
    edit = remover.edit(prepared, settings)
    start = time.perf_counter()
    prepared.aligned.paste_back(photo, edit.refined, edit.blend_mask)
    edit.timings["paste_back"] = time.perf_counter() - start
    return edit


def run_slider(args: argparse.Namespace, record: Record) -> None:
    remover, parser = load_remover(args.labels, half_small_convs=False if args.float32_encoder else None)
    settings = default_settings(torch.device("cpu"))
    photo, prepared = prepare_once(remover, parser, settings)
    samples, per_stage, notes = Samples(), {}, set()
    for index in range(args.warmup + args.runs):
        changed = dataclasses.replace(settings, strength=SLIDER_STRENGTHS[index % len(SLIDER_STRENGTHS)])
        edit = timed(
            lambda changed=changed: slider_change(remover, photo.image, prepared, changed),
            samples if index >= args.warmup else Samples(),
        )
        if index >= args.warmup:
            for stage, seconds in edit.timings.items():
                per_stage.setdefault(stage, []).append(seconds)
        notes.update(edit.notes)
    rss, file_backed = time_reference(remover, record)
    warp = "warp ran" if not any("skipped" in note or "unchanged" in note for note in notes) else "warp fallback"
    record.rows.append(
        samples.row(
            f"slider change, cached inversion ({args.labels} labels)",
            peak_rss_mb=rss,
            rss_file_mb=file_backed,
            target_s=TARGETS["slider"],
            target_rss_mb=RSS_TARGET_MB,
            note=warp,
        )
    )
    stage_rows(record, "slider", per_stage)
    record.extra["notes"] = sorted(notes)


def run_diffuse(args: argparse.Namespace, record: Record) -> None:
    remover, parser = load_remover(args.labels, half_small_convs=False if args.float32_encoder else None)
    settings = dataclasses.replace(
        default_settings(torch.device("cpu")),
        method="diffuse",
        refine_steps=CPU_DIFFUSE.steps if args.refine_steps is None else args.refine_steps,
        refine_lr=CPU_DIFFUSE.learning_rate if args.refine_lr is None else args.refine_lr,
    )
    photo, prepared = prepare_once(remover, parser, settings)
    samples, steps, notes = Samples(), [], set()
    for index in range(args.warmup + args.runs):
        edit = timed(
            lambda: slider_change(remover, photo.image, prepared, settings),
            samples if index >= args.warmup else Samples(),
        )
        if index >= args.warmup:
            steps.append(edit.timings.get("refine_diffuse", float("nan")))
        notes.update(edit.notes)
    rss, file_backed = time_reference(remover, record)
    ran = "diffuse ran" if not any("unchanged" in note for note in notes) else "empty mask: nothing refined"
    record.rows.append(
        samples.row(
            f"diffuse refinement, CPU recipe ({settings.refine_steps} steps, lr {settings.refine_lr:g})",
            peak_rss_mb=rss,
            rss_file_mb=file_backed,
            target_s=TARGETS["diffuse"],
            target_rss_mb=RSS_TARGET_MB,
            note=ran,
        )
    )
    record.rows.append(Samples(wall=steps).row("  diffuse: refine_diffuse"))
    record.extra["notes"] = sorted(notes)
    record.extra["settings"] = settings.to_dict()


CASES = {"end-to-end": run_end_to_end, "slider": run_slider, "diffuse": run_diffuse}
DEFAULT_RUNS = {"end-to-end": 5, "slider": 7, "diffuse": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="end-to-end")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default: 5, 7 or 1 by case)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--labels", choices=("synthetic", "model"), default="synthetic", help="see the module doc")
    parser.add_argument("--refine-steps", type=int, default=None, help="diffuse: steps (default: the CPU recipe's)")
    parser.add_argument("--refine-lr", type=float, default=None, help="diffuse: learning rate (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--keep-freed-memory", action="store_true", help="mallopt: keep freed memory (see docs)")
    parser.add_argument(
        "--float32-encoder", action="store_true", help="all encoder weights in float32 (default: see the module doc)"
    )
    parser.add_argument("--json", default=None, help="write the record here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    single_threaded_numpy_blas()  # as the app and the CLI run (pipeline.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.runs is None:
        args.runs = DEFAULT_RUNS[args.case]
    if args.case == "diffuse" and args.warmup == 1 and args.runs == 1:
        args.warmup = 0  # one long run: the first steps are its own warm-up
    record = Record(f"end_to_end/{args.case}")
    start = time.perf_counter()
    full_size_weights_dir()
    record.extra["weights_ready_s"] = round(time.perf_counter() - start, 2)
    CASES[args.case](args, record)
    forward = statistics.mean(record.extra["forward_s"])
    for row in record.rows:
        row.forward_s = forward
    for row in record.rows:
        print(format_row(row))
    for note in record.extra.get("notes", []):
        print(f"note: {note}")
    data = record.to_dict()
    print(f"load average before {data['load_before']}, after {data['load_after']}; machine {data['machine']}")
    record.write(args.json)


if __name__ == "__main__":
    main()
