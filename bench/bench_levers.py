"""Issue 16's levers, each measured against what it replaces, interleaved in one process (robust to other load).

Usage (from the repo root)::

    .venv/bin/python -m bench.bench_levers [--rounds 5] [--json PATH]

Full-size random weights in the real formats and the 12 MP photo of :mod:`bench.full_size`, with the synthetic label
map (so the neck mask is non-empty and the warp runs). Each lever runs its "before" and "after" alternately
``--rounds`` times, so a change in the machine's load hits both alike; the table gives both medians and the ratio of
their process CPU times. By default torch runs one thread: on a shared machine two threads spin while waiting for
each other, which inflates CPU time by the load, while one thread's CPU time is the work itself.

- **edit render**: the whole 1024² render of the edited code against the window the refinement reads
  (:meth:`pipeline.remover.DoubleChinRemover.edit_window`, :meth:`~pipeline.remover.DoubleChinRemover.render_window`);
  also the largest difference inside the window (uint8 grey levels).
- **slider change**: ``remover.edit`` + paste back with ``windowed_edit`` off and on.
- **reconstruction**: the full render the fast path used to make against the 256² preview the app now shows.
- **fast path**: the whole request before (full edit render, eager full reconstruction) and after.
- **align resampling**: the QUAD transform to 4096² + Lanczos to 1024² in one call against two threaded bands (the
  same CPU work; compare the wall-clock ratio).
- **bf16**: a 1024² render under CPU autocast to bfloat16 against fp32, with its PSNR against fp32.

The allocator setting is process-wide, so it is measured in separate processes (``bench.run_all`` with and without
``--glibc-defaults``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from bench.bench_end_to_end import load_remover, prepare_once, slider_change
from bench.common import Record, Samples, format_row, psnr, reference_forward_s, timed
from bench.full_size import full_size_weights_dir, twelve_mp_jpeg
from pipeline.allocator import keep_freed_memory
from pipeline.faces.align import quad_resample
from pipeline.networks.pixels import to_uint8
from pipeline.remover import RECONSTRUCTION_PREVIEW_SIZE
from pipeline.settings import default_settings


def interleaved(before: Callable[[], object], after: Callable[[], object], rounds: int) -> tuple[Samples, Samples]:
    """Wall and process CPU seconds of ``before`` and ``after`` run alternately (one untimed warm-up of each first)."""
    before(), after()
    samples = (Samples(), Samples())
    for _ in range(rounds):
        for run_once, bucket in zip((before, after), samples, strict=True):
            timed(run_once, bucket)
    return samples


def add_lever(record: Record, name: str, samples: tuple[Samples, Samples], forward: float, **extra: object) -> None:
    """Rows for both sides; the ratio uses process CPU time (with one thread: the work, whatever the load)."""
    before, after = (statistics.median(s.cpu) for s in samples)
    record.rows.append(samples[0].row(f"{name}: before", forward_s=forward))
    record.rows.append(samples[1].row(f"{name}: after", forward_s=forward, note=f"CPU {after / before:.2f}× before"))
    wall = [statistics.median(s.wall) for s in samples]
    record.extra[name] = {"before_cpu_s": before, "after_cpu_s": after, "cpu_ratio": after / before}
    record.extra[name] |= {"wall_ratio": wall[1] / wall[0], **extra}


def run(args: argparse.Namespace, record: Record) -> None:
    remover, parser = load_remover("synthetic")
    settings = default_settings(torch.device("cpu"))
    photo, prepared = prepare_once(remover, parser, settings)
    forward = reference_forward_s(remover.models.generator)
    record.extra["forward_s"] = forward
    changed = dataclasses.replace(settings, strength=-5.0)
    edit = remover.edit(prepared, changed)
    window = edit.window
    if window is None:
        raise RuntimeError("the benchmark face gave no edit window (empty neck mask?)")
    record.extra["window"] = dataclasses.asdict(window)
    record.extra["window_share"] = window.height * window.width / float(prepared.aligned.image.shape[0] ** 2)

    full = remover.render(edit.w_edited)
    part = remover.render_window(edit.w_edited, window, prepared.aligned.image)
    inside = (slice(window.top, window.bottom), slice(window.left, window.right))
    max_diff = int(np.abs(full[inside].astype(np.int16) - part[inside].astype(np.int16)).max())
    times = interleaved(
        lambda: remover.render(edit.w_edited),
        lambda: remover.render_window(edit.w_edited, window, prepared.aligned.image),
        args.rounds,
    )
    add_lever(record, "edit render (window)", times, forward, max_grey_difference_in_window=max_diff)

    def slider(windowed: bool) -> Callable[[], object]:
        def change() -> object:
            remover.windowed_edit = windowed
            return slider_change(remover, photo.image, prepared, changed)

        return change

    add_lever(record, "slider change", interleaved(slider(False), slider(True), args.rounds), forward)
    remover.windowed_edit = True

    times = interleaved(
        lambda: remover.render(prepared.w_plus),
        lambda: remover.render(prepared.w_plus, size=RECONSTRUCTION_PREVIEW_SIZE),
        args.rounds,
    )
    add_lever(record, "reconstruction (full → 256² preview)", times, forward)

    photo_path = str(twelve_mp_jpeg())

    def fast_path(new: bool) -> Callable[[], object]:
        def request() -> object:
            if parser is not None:
                parser.reset()
            remover.windowed_edit = new
            result = remover(photo_path, settings)
            if not new:  # the old prepare rendered the full reconstruction eagerly
                for face_edit in result.edits.values():
                    remover.reconstruct(face_edit.prepared)
            return result

        return request

    times = interleaved(fast_path(False), fast_path(True), args.rounds)
    add_lever(record, "fast path (12 MP, e4e + warp)", times, forward)
    remover.windowed_edit = True

    source = Image.fromarray(prepared.aligned.image)  # any RGB image: the work does not depend on the pixels
    quad = np.array([[40.0, 60.0], [60.0, 980.0], [980.0, 960.0], [960.0, 40.0]])
    size = prepared.aligned.image.shape[0]
    times = interleaved(
        lambda: quad_resample(source, quad, 4 * size, size, bands=1),
        lambda: quad_resample(source, quad, 4 * size, size),
        args.rounds,
    )
    add_lever(record, "align resampling (1 → 2 threaded bands; see the wall ratio)", times, forward)

    generator = remover.models.generator
    code = torch.from_numpy(prepared.w_plus).float()

    def render_bf16() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return generator.synthesis(code)

    with torch.inference_mode():
        reference = to_uint8(generator.synthesis(code))
    quality = psnr(to_uint8(render_bf16().float()), reference)
    times = interleaved(lambda: remover.render(prepared.w_plus), render_bf16, args.rounds)
    add_lever(record, "1024² render (fp32 → bf16 autocast)", times, forward, psnr_db=quality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each side (default 5)")
    parser.add_argument("--glibc-defaults", action="store_true", help="skip the start-up allocator setting")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: CPU time then measures work, not waiting)"
    )
    parser.add_argument("--json", default=None, help="write the record here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.glibc_defaults:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    full_size_weights_dir()
    record = Record("levers")
    run(args, record)
    for row in record.rows:
        print(format_row(row))
    for key, value in record.extra.items():
        print(f"{key}: {value}")
    record.write(args.json)


if __name__ == "__main__":
    main()
