"""Latency and throughput of the served app under N concurrent ``gradio_client`` users on loopback.

Run by hand from the repository root::

    .venv/bin/python -m bench.bench_load [--users 16] [--rounds 2] [--photos 8] [--weights-dir DIR] [--threads 2]

The app is imported as the Space imports it (``C2F_*`` environment; small random stand-in weights written to a
temporary folder unless ``--weights-dir`` is given), served on 127.0.0.1 in this process with the shipped queue and
launch options (one model job at a time, at most 16 waiting), and called through the public ``/remove_double_chin``
endpoint. Every user is a thread with its own client; all start together and send ``--rounds`` requests one after the
other, cycling through ``--photos`` distinct portraits (an example face on a coloured canvas, 360×440), so the mix has
first-time photos (detection + alignment + inversion) and repeats (cached inversion: edit + refinement only).
Latency is measured per request from submission to the downloaded result, so it includes the queue wait.

Prints the outcome counts (served / "Queue is full" / other errors), p50, p95 and max latency of served requests,
throughput (served requests per second of wall time), RSS before and after the run (also after handing freed heap back
with glibc's malloc_trim: the difference is memory glibc keeps for reuse, not a leak), peak RSS and the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import resource
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gradio_client import Client, handle_file
from PIL import Image

from bench.common import import_app
from pipeline.config import EXAMPLES_DIR
from pipeline.remover import DoubleChinRemover
from pipeline.weights.stand_in import write_stand_in_weights

KIB_PER_MIB = 1024  # ru_maxrss and VmRSS are in KiB on Linux
PHOTO_SIZE = (360, 440)  # (width, height) of the generated portraits
FACE_SIZE = 300  # side of the example face inside them
STRENGTHS = (-2.0, -4.0, -6.0)  # cycled per request
QUEUE_FULL = "Queue is full"
START_TIMEOUT_S = 120.0  # all users must be ready to start within this
PERCENTILES = (50, 95)


@dataclass
class Outcome:
    """One request: how long it took and how it ended."""

    seconds: float
    status: str  # "served", "queue full" or "error: <type>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib() -> float:
    """Current resident set size of this process (server and clients) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / KIB_PER_MIB
    return float("nan")


def release_free_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc's malloc_trim; nothing elsewhere)."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` distinct portraits: the example faces in turn, on canvases of different colours and positions."""
    examples = sorted(EXAMPLES_DIR.glob("*.png"))
    paths = []
    for index in range(count):
        width, height = PHOTO_SIZE
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        canvas[:] = (37 * index % 256, 200 - 13 * index % 200, 60 + 29 * index % 190)
        face = Image.open(examples[index % len(examples)]).convert("RGB").resize((FACE_SIZE, FACE_SIZE))
        x, y = 10 + 5 * (index % 8), 10 + 9 * (index % 8)
        canvas[y : y + FACE_SIZE, x : x + FACE_SIZE] = np.asarray(face)
        path = folder / f"portrait_{index}.png"
        Image.fromarray(canvas).save(path)
        paths.append(path)
    return paths


def run_users(url: str, photos: list[Path], users: int, rounds: int, downloads: Path) -> tuple[list[Outcome], float]:
    """Every user sends ``rounds`` requests in turn; all users start together. Returns the outcomes and wall time."""
    clients = [Client(url, verbose=False, download_files=str(downloads / f"user_{u}")) for u in range(users)]
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start_together = threading.Barrier(users + 1)

    def user(index: int) -> None:
        start_together.wait(timeout=START_TIMEOUT_S)
        for round_index in range(rounds):
            request = index + round_index * users
            photo = photos[(index + round_index) % len(photos)]
            start = time.perf_counter()
            try:
                clients[index].predict(
                    handle_file(str(photo)),
                    strength=STRENGTHS[request % len(STRENGTHS)],
                    w_plus_code=None,
                    api_name="/remove_double_chin",
                )
                status = "served"
            except Exception as err:  # a benchmark counts failures instead of stopping at the first
                status = "queue full" if QUEUE_FULL in str(err) else f"error: {type(err).__name__}"
            with lock:
                outcomes.append(Outcome(time.perf_counter() - start, status))

    threads = [threading.Thread(target=user, args=(index,), daemon=True) for index in range(users)]
    for thread in threads:
        thread.start()
    start_together.wait(timeout=START_TIMEOUT_S)
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - start
    for client in clients:
        client.close()  # stops its heartbeat thread, so the client (and what it holds) can be freed
    return outcomes, wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16, help="concurrent users (default 16 = the queue size)")
    parser.add_argument("--rounds", type=int, default=2, help="requests per user, one after the other (default 2)")
    parser.add_argument("--photos", type=int, default=8, help="distinct photos cycled through (default 8)")
    parser.add_argument("--weights-dir", type=Path, default=None, help="weights folder (default: fresh stand-ins)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_load_") as scratch_name:
        scratch = Path(scratch_name)
        weights_dir = args.weights_dir
        if weights_dir is None:
            weights_dir = scratch / "weights"
            write_stand_in_weights(weights_dir)
        app = import_app(weights_dir, scratch / "gradio")
        if not isinstance(app.LOADED, DoubleChinRemover):
            raise SystemExit(f"the models did not load: {app.LOADED}")
        photos = make_photos(scratch, args.photos)
        demo = app.build_demo(app.LOADED)
        demo.queue(**app.QUEUE_OPTIONS)
        port = free_port()
        demo.launch(
            server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.launch_options()
        )
        try:
            url = f"http://127.0.0.1:{port}"
            warm_up = Client(url, verbose=False, download_files=str(scratch / "warm_up"))
            warm_up.predict(handle_file(str(photos[0])), w_plus_code=None, api_name="/remove_double_chin")
            release_free_memory()
            rss_before = rss_mib()
            outcomes, wall_s = run_users(url, photos, args.users, args.rounds, scratch / "downloads")
            rss_after = rss_mib()
            release_free_memory()
            rss_trimmed = rss_mib()
        finally:
            demo.close()

    served = np.array([outcome.seconds for outcome in outcomes if outcome.status == "served"])
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    generator = "stand-in weights" if app.LOADED.models.stand_in else "real weights"
    print(
        f"{args.users} users × {args.rounds} rounds, {args.photos} distinct photos {PHOTO_SIZE[0]}×{PHOTO_SIZE[1]}, "
        f"{generator}, device {app.LOADED.device}, threads {torch.get_num_threads()}, queue {app.QUEUE_OPTIONS}"
    )
    print("outcomes: " + ", ".join(f"{status} {count}" for status, count in sorted(counts.items())))
    if served.size:
        p50, p95 = np.percentile(served, PERCENTILES)
        print(
            f"latency of served requests (incl. queue wait): p50 {p50:.2f} s   p95 {p95:.2f} s   "
            f"min {served.min():.2f} s   max {served.max():.2f} s"
        )
    print(f"throughput {served.size / wall_s:.3f} served requests/s ({served.size} in {wall_s:.1f} s wall time)")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB
    load = os.getloadavg()
    print(
        f"RSS before {rss_before:.0f} MiB, after {rss_after:.0f} MiB (+{rss_after - rss_before:.0f}; "
        f"+{rss_trimmed - rss_before:.0f} after gc + malloc_trim), peak {peak_mib:.0f} MiB"
    )
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
