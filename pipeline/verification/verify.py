"""Running the known-answer checks on loaded models: ``verify``, the app's start-up subset, and pins to paste.

- :func:`run_known_answers` runs every check of :mod:`pipeline.verification.known_answers` on loaded models (the
  full set, or the cheap ``subset``: one render, one parse, the boundary check).
- :func:`verify_command` is the body of ``python -m pipeline.weights verify``: load the models on the CPU, run the
  full set, print the report, say plainly when the weights are stand-ins, and, when a real file passed, print its
  size and sha256 in the registry's form (one copy-paste to pin it). Whole run on the 2-core CPU: see
  docs/first-run.md.
- :class:`StartupCheck` runs the subset in a daemon thread after the app has loaded (never blocking the page), on the
  CPU for every Space hardware (on ZeroGPU the main process has no CUDA, so it reads its own CPU copy of the
  generator and parser), and gives the page a warning when it failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from pipeline.config import BOUNDARIES_DIR, NUM_WS
from pipeline.errors import WeightsError
from pipeline.latent.editing import load_boundary
from pipeline.verification.known_answers import (
    DEFAULT_THRESHOLDS,
    ExampleSet,
    Finding,
    KnownAnswerReport,
    Renderer,
    Thresholds,
    boundary_file_problems,
    check_boundary_codes,
    check_encoder,
    check_generator,
    check_parser,
    load_examples,
)
from pipeline.weights.download import resolve_weight
from pipeline.weights.registry import REGISTRY, get_spec, resolve_weights_dir

__all__ = [
    "STARTUP_EXAMPLE",
    "CheckableModels",
    "StartupCheck",
    "pin_lines",
    "run_known_answers",
    "startup_subset",
    "verify_command",
]

logger = logging.getLogger(__name__)

STARTUP_EXAMPLE = "00016"  # the photo the start-up subset renders and parses (ours: the first example)
HASH_CHUNK_BYTES = 8 * 1024 * 1024
# Registry key → the checks that must pass before its file may be pinned.
CERTIFYING_CHECKS = {"e4e": ("generator", "encoder"), "face_parser": ("parser",), "vgg16": ("generator", "encoder")}
STARTUP_WARNING = (
    "**The model weights failed their start-up check** ({failed}): rendering the official example code did not "
    "reproduce its photo, so results may be wrong. The Space's maintainer should run "
    "`python -m pipeline.weights verify` (see docs/first-run.md)."
)


class CheckableModels(Protocol):
    """What the checks need of :class:`pipeline.models.Models` (encoder and VGG may be None)."""

    device: torch.device
    generator: torch.nn.Module
    encoder: torch.nn.Module | None
    parser: torch.nn.Module | None
    vgg: torch.nn.Module | None
    stand_in: bool


def _renderer(generator: torch.nn.Module, device: torch.device) -> Renderer:
    def render(code: np.ndarray) -> torch.Tensor:
        wp = torch.from_numpy(np.ascontiguousarray(code, dtype=np.float32)).reshape(1, NUM_WS, -1).to(device)
        return generator.synthesis(wp).float().cpu()  # type: ignore[operator]

    return render


def _boundary_finding(examples: ExampleSet, boundaries_dir: Path, thresholds: Thresholds) -> Finding:
    problems = boundary_file_problems(boundaries_dir)
    if problems:
        return Finding("boundary", False, "the boundary files are not the official ones", (), tuple(problems))
    boundary = load_boundary(boundaries_dir=boundaries_dir)
    return check_boundary_codes(examples.codes, examples.names, boundary, thresholds)


def run_known_answers(
    models: CheckableModels | None,
    *,
    examples: ExampleSet | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    boundaries_dir: Path = BOUNDARIES_DIR,
    subset: bool = False,
    missing_reason: str = "the e4e weights are not loaded",
) -> KnownAnswerReport:
    """Run the known-answer checks (module :mod:`pipeline.verification.known_answers`) on loaded models.

    Args:
        models: the loaded networks, or None to run only the boundary check (no weights needed).
        examples: the official examples (default: :func:`~pipeline.verification.known_answers.load_examples`).
        thresholds: pass marks.
        boundaries_dir: where the fine/all boundary lives.
        subset: the cheap start-up subset: one render of :data:`STARTUP_EXAMPLE` (PSNR tests against all seven
            photos, no VGG) and one parse, plus the boundary check; no encoder.
        missing_reason: why ``models`` is None, for the report.

    Returns:
        The report; ``report.passed`` is False on any failure and always on stand-in weights.
    """
    start = time.perf_counter()
    examples = examples or load_examples()
    findings = [_boundary_finding(examples, boundaries_dir, thresholds)]
    skipped: list[str] = []
    if models is None:
        skipped.append(f"generator, encoder and face parser: {missing_reason}")
        return KnownAnswerReport(tuple(findings), False, tuple(skipped), time.perf_counter() - start)
    device = models.device
    render = _renderer(models.generator, device)
    vgg = None if subset else models.vgg
    if vgg is None and not subset:
        skipped.append("VGG tests of the generator and encoder: the VGG16 weights are unavailable")
    official: dict[str, torch.Tensor] = {}
    names = [STARTUP_EXAMPLE] if subset else None
    findings.append(check_generator(render, examples, vgg, thresholds, names=names, renders_out=official))
    encoder = None if subset else models.encoder
    if encoder is not None:
        from pipeline.networks.encoder import invert_with_encoder

        def encode(photo: np.ndarray) -> np.ndarray:
            return invert_with_encoder(encoder, photo, device=device)  # type: ignore[arg-type]

        findings.append(check_encoder(encode, render, examples, official, vgg, thresholds))
    else:
        skipped.append("encoder: " + ("not part of the start-up subset (run verify)" if subset else "not loaded"))
    parser = models.parser
    if parser is None:
        skipped.append("face parser: its weights are unavailable")
    else:
        from pipeline.networks.parsing import parse_labels

        parsed = examples.subset([STARTUP_EXAMPLE]) if subset else examples
        if parsed.landmarks is None:
            parsed = parsed.with_landmarks()

        def parse(photo: np.ndarray) -> np.ndarray:
            return parse_labels(parser, photo, device=device)  # type: ignore[arg-type]

        findings.append(check_parser(parse, parsed, thresholds))
    seconds = time.perf_counter() - start
    report = KnownAnswerReport(tuple(findings), bool(models.stand_in), tuple(skipped), seconds)
    logger.info(
        "known-answer checks (%s) took %.1f s: %s",
        "start-up subset" if subset else "full",
        seconds,
        "passed" if report.passed else "FAILED " + ", ".join(report.failed_names() or ["stand-in weights"]),
    )
    return report


# -- pins --------------------------------------------------------------------------------------------------------


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def pin_lines(report: KnownAnswerReport, paths: dict[str, Path]) -> list[str]:
    """Registry lines (``size=…, sha256=…``) for each unpinned file whose certifying checks all passed.

    Args:
        report: a report of real (not stand-in) weights.
        paths: registry key → the local file that was checked.

    Returns:
        Lines to print; empty when nothing qualifies (stand-ins, a failed check, or already pinned).
    """
    if report.stand_in:
        return []
    passed = {finding.name for finding in report.findings if finding.passed}
    failed = {finding.name for finding in report.findings if not finding.passed}
    lines: list[str] = []
    for key, checks in CERTIFYING_CHECKS.items():
        spec = get_spec(key)
        path = paths.get(key)
        if spec.sha256 is not None or path is None or failed & set(checks) or not passed & set(checks):
            continue
        sha256, size = _sha256_and_size(path)
        lines += [
            f"# {key} ({spec.filename}) passed {', '.join(sorted(passed & set(checks)))}: in its WeightSpec in "
            "pipeline/weights/registry.py, replace the two None lines with",
            f"        size={size:_},",
            f'        sha256="{sha256}",',
        ]
    return lines


# -- the verify command --------------------------------------------------------------------------------------------


def _load_cpu_models(weights_dir: str | os.PathLike[str] | None) -> CheckableModels:
    from pipeline.models import load_models  # the networks: imported only when they are checked

    return load_models(weights_dir, device="cpu", allow_download=False)


def verify_command(
    weights_dir: str | os.PathLike[str] | None,
    keys: Iterable[str] | None,
    out: Callable[[str], None],
    *,
    load: Callable[[str | os.PathLike[str] | None], CheckableModels] = _load_cpu_models,
) -> int:
    """Run the known-answer checks for ``python -m pipeline.weights verify`` and print the report.

    The model checks run when ``keys`` includes ``e4e`` (the default: all keys); the boundary check always runs.

    Args:
        weights_dir: the weights folder (default: see :func:`~pipeline.weights.registry.resolve_weights_dir`).
        keys: the registry keys asked for, or None for all.
        out: prints one block of text.
        load: loads the models on the CPU (tests pass fakes).

    Returns:
        0 when every check passed on real weights; 1 on any failure, on stand-in weights, or when the models could
        not be loaded.
    """
    wanted = set(keys) if keys else set(REGISTRY)
    models: CheckableModels | None = None
    reason = "not asked for (add e4e to the keys)"
    load_failed = False
    if "e4e" in wanted:
        try:
            models = load(weights_dir)
        except WeightsError as err:
            load_failed = True
            reason = f"the weights could not be loaded: {str(err).splitlines()[0]}"
    out("")
    out("Known-answer checks (official example codes and photos; see docs/first-run.md):")
    report = run_known_answers(models, missing_reason=reason)
    out(report.text())
    out(f"({report.seconds:.0f} s)")
    if report.stand_in:
        out("FAILED: stand-in weights cannot reproduce the known answers. Use the real weights (docs/first-run.md).")
        return 1
    if not report.passed or load_failed:
        out("FAILED: " + ", ".join(report.failed_names() or ["the models could not be loaded"]))
        return 1
    if models is not None:
        directory = resolve_weights_dir(weights_dir)
        paths = {}
        for key in CERTIFYING_CHECKS:
            try:
                paths[key] = resolve_weight(key, weights_dir=directory, allow_download=False)
            except WeightsError:
                continue
        pins = pin_lines(report, paths)
        if pins:
            out("")
            out("Pin the files that passed (one copy-paste each):")
            out("\n".join(pins))
    out("PASSED: every known answer was reproduced.")
    return 0


# -- the app's start-up subset ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _SubsetModels:
    """What the start-up subset needs, on the CPU (no encoder, no VGG)."""

    device: torch.device
    generator: torch.nn.Module
    parser: torch.nn.Module | None
    stand_in: bool
    encoder: None = None
    vgg: None = None


def _cpu_subset_models(weights_dir: str | os.PathLike[str] | None) -> CheckableModels:
    """Generator and parser on the CPU, read from the local (already verified) weights files; never downloads."""
    from pipeline.models import is_stand_in
    from pipeline.networks.checkpoint_io import read_torch_checkpoint
    from pipeline.networks.parsing import load_parser
    from pipeline.networks.stylegan2 import generator_from_checkpoint

    cpu = torch.device("cpu")
    e4e_path = resolve_weight("e4e", weights_dir=weights_dir, allow_download=False)
    checkpoint = read_torch_checkpoint(e4e_path)
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{e4e_path} is not an e4e checkpoint")
    generator = generator_from_checkpoint(checkpoint, source=e4e_path.name, device=cpu)
    stand_in = is_stand_in(checkpoint)
    del checkpoint
    try:
        parser = load_parser(resolve_weight("face_parser", weights_dir=weights_dir, allow_download=False), cpu)
    except WeightsError:
        parser = None
    return _SubsetModels(cpu, generator, parser, stand_in)


def startup_subset(
    models: CheckableModels | None = None, *, weights_dir: str | os.PathLike[str] | None = None
) -> KnownAnswerReport:
    """The cheap start-up subset on the CPU, for any Space hardware.

    Uses ``models`` when they live on the CPU; otherwise (a GPU, or ZeroGPU, whose main process has no CUDA) reads a
    private CPU copy of the generator and parser from the weights files, so the app's models and GPU are never
    touched. Costs one 1024² render, one 512² parse and one dlib landmark pass: a few seconds on two CPU cores.

    Raises:
        WeightsError: the weights cannot be read on the CPU.
    """
    if models is None or models.device.type != "cpu":
        models = _cpu_subset_models(weights_dir)
    return run_known_answers(models, subset=True)


class StartupCheck:
    """The start-up subset in a daemon thread; :meth:`warning` is the page's banner text once it has failed.

    Args:
        models: the app's models (used directly when on the CPU), or None when the app has none (nothing runs).
        run: the check to run (default :func:`startup_subset`; tests pass fakes).
    """

    def __init__(
        self,
        models: CheckableModels | None,
        *,
        run: Callable[[CheckableModels | None], KnownAnswerReport] = startup_subset,
    ) -> None:
        self.report: KnownAnswerReport | None = None
        self.error: str | None = None
        self._done = threading.Event()
        self._models = models
        self._run = run
        self._thread = threading.Thread(target=self._work, name="c2f-known-answers", daemon=True)

    def start(self) -> StartupCheck:
        """Start the thread (skipped, and done at once, when there are no models or they are stand-ins)."""
        if self._models is None or self._models.stand_in:
            self._done.set()  # the page already says why there are no (real) results
            return self
        self._thread.start()
        return self

    @property
    def active(self) -> bool:
        """True when the check was started (real models), so the page should listen for its result."""
        return self._thread.ident is not None

    def _work(self) -> None:
        try:
            self.report = self._run(self._models)
        except Exception as err:  # a failed check must never take the app down; it is logged and shown
            logger.exception("the start-up known-answer check could not run")
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self._models = None  # drop the reference (a CPU copy may be large)
            self._done.set()
            if self.report is not None and not self.report.passed:
                logger.error("start-up known-answer check FAILED:\n%s", self.report.text())

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the check has finished; True if it has."""
        return self._done.wait(timeout)

    def warning(self) -> str:
        """Markdown for the page: empty while running, when passed, or when not run; the failure otherwise."""
        if not self._done.is_set():
            return ""
        if self.error is not None:
            return STARTUP_WARNING.format(failed=f"the check itself could not run: {self.error}")
        if self.report is None or self.report.passed:
            return ""
        return STARTUP_WARNING.format(failed=", ".join(self.report.failed_names()))
