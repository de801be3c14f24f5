"""The page's files: per-request result folders, the start-up wipe of Gradio's temporary folder, and the writers.

Results go under Gradio's cache so that Gradio serves and sweeps them (``delete_cache``); what that sweep misses when
the process is killed is removed here (RELIABILITY.md §1.3, §6.2 item 18).
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image

from pipeline import RemovalResult, SourcePhoto, encode_png

logger = logging.getLogger(__name__)

SWEEP_FRAME_SIZE = 384  # side of each animation frame in pixels (the aligned crop is 1024²)
SWEEP_FRAME_MS = 220  # display time of each frame
SWEEP_WEBP_QUALITY = 85
RESULTS_SUBDIR = "c2f-results"  # per-request folders under Gradio's cache
# Gradio writes each share link's page state to <upload folder>/deep_links/<id>/state.json (gradio/routes.py,
# the /gradio_api/deep_link route) and never deletes it; the sweeps below give links the lifetime of the results.
DEEP_LINKS_SUBDIR = "deep_links"
OUR_SUBDIRS = (RESULTS_SUBDIR, DEEP_LINKS_SUBDIR)
# What earlier runs leave in Gradio's temporary folder (wiped at start, see wipe_temp_dir): Gradio keeps each uploaded
# or cached file in a folder named after its sha256 (gradio/processing_utils.py::hash_file, route_utils.upload_fn) and
# streams uploads into NamedTemporaryFile()s ("tmp…") in the folder itself.
GRADIO_HASH_FOLDER = re.compile(r"[0-9a-f]{64}")
GRADIO_PARTIAL_UPLOAD_PREFIX = "tmp"
SERVER_LOCK_NAME = ".c2f-server.lock"  # ours: each running server holds it shared (claim_temp_dir)


class ResultFolders:
    """Per-request folders for the output files, under Gradio's cache so that Gradio serves and sweeps them.

    Gradio's ``delete_cache`` sweep deletes old files but leaves their folders, and it does not run when the process is
    killed (RELIABILITY.md §6.2 item 18), so old folders are also removed here, at most every ``interval_s``.
    """

    def __init__(self, max_age_s: float, interval_s: float) -> None:
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
        """Delete result folders and share links older than ``max_age_s``; returns how many were removed."""
        removed = 0
        for root in (self.root, self.root.parent / DEEP_LINKS_SUBDIR):
            removed += self._sweep(root)
        return removed

    def _sweep(self, root: Path) -> int:
        if not root.is_dir():
            return 0
        removed = 0
        for folder in root.iterdir():
            try:
                if time.time() - folder.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(folder)
                    removed += 1
            except OSError as err:  # a concurrent sweep got there first, or a permission problem: next time
                logger.info("could not remove %s: %s", folder.name, type(err).__name__)
        return removed


@dataclass
class TempDirClaim:
    """This server's hold on Gradio's temporary folder (see :func:`claim_temp_dir`); keep it for the process's life."""

    folder: Path
    lock: IO[str]  # the open lock file: a shared flock while the server runs
    removed: int | None  # entries wiped at start, or None when another live server was using the folder


def claim_temp_dir(folder: Path | None = None) -> TempDirClaim:
    """Wipe earlier runs' files from the temporary folder, unless another live server is using the same folder.

    Every server holds a shared ``flock`` on ``<folder>/.c2f-server.lock`` while it runs; the kernel drops it when the
    process ends, however it ends. A starting server wipes (:func:`wipe_temp_dir`) only if it can take that lock
    exclusively, i.e. no other running server of this app shares the folder (two servers with one
    ``GRADIO_TEMP_DIR`` would otherwise delete each other's uploads and results); then it holds the lock shared.

    Args:
        folder: the folder (default: Gradio's, which ``GRADIO_TEMP_DIR`` sets); created if missing.
    """
    folder = Path(get_upload_folder()) if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    lock = (folder / SERVER_LOCK_NAME).open("a", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        removed = None
        logger.info("another server is using %s: its files are left alone", folder)
    else:
        removed = wipe_temp_dir(folder)
    fcntl.flock(lock, fcntl.LOCK_SH)  # held until the process ends
    return TempDirClaim(folder, lock, removed)


def wipe_temp_dir(folder: Path | None = None) -> int:
    """Delete the uploads, results and cached copies that earlier runs left in the app's temporary folder.

    Gradio's ``delete_cache`` sweep does not run when the process is killed (RELIABILITY.md §6.2 item 18), so a
    restarted server would otherwise keep the previous users' photos. Only what Gradio and this app create there is
    removed: sha256-named folders, the results folder, share links and partial uploads. Anything else is left alone,
    and symbolic links are removed without following them. Call it before the page is built (building it caches the
    examples).

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
        ours = GRADIO_HASH_FOLDER.fullmatch(entry.name) is not None or entry.name in OUR_SUBDIRS
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


def write_png(path: Path, photo: SourcePhoto) -> str:
    """Save a photo in its own form (profile, depth, channels) as a PNG without other metadata; returns the path."""
    path.write_bytes(encode_png(photo))
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


def write_result(
    folder: Path, original: SourcePhoto, result: RemovalResult, summary: dict[str, object]
) -> dict[str, str]:
    """Write the before/after PNGs (each in the photo's own form), each edited face's W+ code and the summary.

    One edited face gives ``w_plus.npy``; several give ``w_plus_face<N>.npy`` (N counted from 1, largest first),
    each a (1, 18, 512) code that the page's W+ upload accepts.

    Returns:
        name → path of each file written ("original", "result", the codes, "settings").
    """
    assert result.photo is not None, "DoubleChinRemover.finish always writes the result back into the photo's form"
    paths = {
        "original": write_png(folder / "original.png", original),
        "result": write_png(folder / "result.png", result.photo),
    }
    for index, edit in sorted(result.edits.items()):
        name = "w_plus" if len(result.edits) == 1 else f"w_plus_face{index + 1}"
        paths[name] = str(folder / f"{name}.npy")
        np.save(paths[name], edit.prepared.w_plus)
    paths["settings"] = str(folder / "settings.json")
    Path(paths["settings"]).write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return paths
