"""Resolving a registered weight file: the weights folder, the pip package copy, else the Hugging Face Hub.

Where a file comes from, in order:

1. the weights folder (argument, else ``$C2F_WEIGHTS_DIR``, else :data:`pipeline.config.CHECKPOINTS_DIR`), with the
   file named exactly as in the registry (:mod:`pipeline.weights.registry`);
2. for the dlib landmark model, the ``face_recognition_models`` pip package (:mod:`pipeline.weights.checks`);
3. the Hugging Face Hub, with ``huggingface_hub.hf_hub_download`` into a staging folder inside the weights folder.
   The file is verified there and only then renamed into place, so a partial or corrupt download never looks valid.

Verification of a download: a registered size/sha256 when known (dlib); otherwise the Hub's own checksum. For an LFS
file the ``X-Linked-Etag``/``ETag`` of ``HEAD {endpoint}/{repo}/resolve/{revision}/{file}`` is the sha256 of the
content, and for a plain git file it is the git blob sha1; ``get_hf_file_metadata`` returns it.

Network: none when every file is local. ``HF_HUB_OFFLINE=1`` (read at call time, and huggingface_hub's own flag) means
no request at all. ``HF_ENDPOINT`` is read at call time and passed as ``endpoint=``, so a mirror or a test server
works without patching huggingface_hub. Timeouts are huggingface_hub's ``HF_HUB_ETAG_TIMEOUT`` (metadata) and
``HF_HUB_DOWNLOAD_TIMEOUT`` (per read), both read by huggingface_hub when it is imported. A server that stops sending
mid-download fails after ``http_get``'s bounded resumes: at most (1 + 5) read timeouts plus 5 s of pauses. Our own
metadata request is made once, without retries; only if the server dies between it and ``hf_hub_download``'s own
HEAD does huggingface_hub's retry policy (60 s timeout, a few backoff retries) apply. The resolve protocol is the one
huggingface_hub 2.4 implements (``file_download.py``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx2
from filelock import Timeout as LockTimeout
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import WeakFileLock

from pipeline.errors import WeightsError
from pipeline.weights.checks import (
    WeightState,
    _check_local,
    _hash_file,
    _marker_path,
    _package_file,
    _quarantine,
    _sniff_problem,
    _write_marker,
)
from pipeline.weights.registry import (
    GIT_SHA1_RE,
    REGISTRY,
    WEIGHTS_DIR_ENV,
    WeightSpec,
    get_spec,
    hub_download_url,
    resolve_repo_id,
    resolve_revision,
    resolve_weights_dir,
)

logger = logging.getLogger(__name__)

OFFLINE_ENV = "HF_HUB_OFFLINE"  # huggingface_hub's switch; also honoured when set after it was imported
ENDPOINT_ENV = "HF_ENDPOINT"  # huggingface_hub's endpoint override (mirror or test server)
DOWNLOAD_SUBDIR = ".c2f-download"  # staging area inside the weights folder (same volume => atomic rename)
DOWNLOAD_LOCK_TIMEOUT_S = 1800.0  # longest wait for another process downloading the same file (1.2 GB on a slow link)
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NOT_AVAILABLE = " is not available: "  # separates the file from the reason in the first line of every failure
TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})  # how huggingface_hub parses boolean environment variables

ProgressCallback = Callable[[int, "int | None"], None]
"""Called during a download with (bytes written so far, total bytes or None)."""


class WeightsUnavailableError(WeightsError):
    """The file is not in the weights folder and may not be downloaded (offline mode or downloads disabled)."""


class HubUnreachableError(WeightsError):
    """The Hub (or ``HF_ENDPOINT``) could not be reached, timed out, or answered with a server error."""


class HubFileNotFoundError(WeightsError):
    """The Hub answered that the repository, revision or file does not exist (HTTP 404/401)."""


class WeightsIntegrityError(WeightsError):
    """A file's size, checksum or format does not match what was expected."""


def _hub_endpoint() -> str:
    return os.environ.get(ENDPOINT_ENV, "").strip().rstrip("/") or hf_constants.ENDPOINT


def _hub_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().upper() in TRUE_VALUES or hf_constants.is_offline_mode()


# -- resolution --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """Everything needed to fetch one file and to explain a failure."""

    spec: WeightSpec
    weights_dir: Path
    repo_id: str
    revision: str
    endpoint: str
    prior_problem: str | None = None  # e.g. "the local copy was corrupt ... and was moved to ...", told in errors
    remote_path: str | None = None  # the file's path in repo_id when it differs from spec.filename (a mirror)
    mirror: bool = False  # repo_id is one of spec.mirrors, not the primary repo

    @property
    def remote_filename(self) -> str:
        return self.remote_path or self.spec.filename

    @property
    def source_label(self) -> str:
        """Where the file comes from, for logs, markers and ``status`` (e.g. ``mirror camenduru/MuseTalk:…``)."""
        kind = "mirror" if self.mirror else "primary"
        return f"{kind} {self.repo_id}:{self.remote_filename}"

    @property
    def local_path(self) -> Path:
        return self.weights_dir / self.spec.filename

    @property
    def marker_path(self) -> Path:
        return _marker_path(self.weights_dir, self.spec.filename)

    def failure(self, error_type: type[WeightsError], reason: str) -> WeightsError:
        """Build an error naming the file, where it was looked for, the Hub repo, and how to provide it."""
        spec = self.spec
        places = str(self.weights_dir) + (f" and the '{spec.package}' pip package" if spec.package else "")
        expected = []
        if spec.size is not None:
            expected.append(f"{spec.size} bytes")
        if spec.sha256 is not None:
            expected.append(f"sha256 {spec.sha256}")
        lines = [
            f"Weight file '{spec.filename}' ({spec.purpose}){NOT_AVAILABLE}"
            + (f"{self.prior_problem}; then " if self.prior_problem else "")
            + f"{reason}.",
            f"Looked in: {places}.",
            f"Hub repo: {self.repo_id} (revision {self.revision}) at {self.endpoint}.",
            *([f"Expected: {', '.join(expected)}."] if expected else []),
            f"To fix: download {hub_download_url(self.repo_id, self.revision, self.remote_filename, self.endpoint)} "
            "and put "
            f"it in {self.weights_dir} (named {spec.filename}), or set {WEIGHTS_DIR_ENV} to a folder that contains "
            f"it, or set {spec.repo_env} to another Hub repo that has it. Other sources: {spec.manual_source}.",
        ]
        return error_type("\n".join(lines))


def resolve_weight(
    key: str,
    *,
    weights_dir: str | os.PathLike[str] | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    allow_download: bool = True,
    progress: ProgressCallback | None = None,
) -> Path:
    """Return the path of a verified copy of a registered weight file, downloading it if needed.

    Order: ``<weights_dir>/<filename>`` (accepted from its ``.verified`` marker without hashing, else checked by
    registered size/sha256 or by format), then the pip package copy (dlib), then the Hub. No network call is made
    when a usable local copy exists. A local copy that fails its check is renamed to ``<filename>.corrupt``.

    Args:
        key: registry key (``"e4e"``, ``"face_parser"``, ``"dlib_landmarks"``, ``"vgg16"``).
        weights_dir: the weights folder (default: ``$C2F_WEIGHTS_DIR``, else ``pipeline.config.CHECKPOINTS_DIR``).
        repo_id: Hub repo override (default: the spec's ``C2F_*_REPO`` variable, else the registry).
        revision: revision override (default: the spec's ``C2F_*_REVISION`` variable, else the registry).
        allow_download: if False, never touch the network.
        progress: called as ``progress(bytes_done, bytes_total_or_None)`` while downloading.

    Returns:
        Path of the file (inside ``weights_dir``, or inside the pip package for the dlib model).

    Raises:
        WeightsUnavailableError: not available locally and offline mode is on or ``allow_download`` is False.
        HubUnreachableError: the Hub could not be reached, timed out or failed with a server error.
        HubFileNotFoundError: the Hub has no such repository, revision or file.
        WeightsIntegrityError: the downloaded file does not match its size/checksum/format, or the local copy is
            corrupt (moved aside) and no replacement may be downloaded.
        KeyError: ``key`` is not registered.
    """
    spec = get_spec(key)
    target = _Target(
        spec=spec,
        weights_dir=resolve_weights_dir(weights_dir),
        repo_id=resolve_repo_id(spec, repo_id),
        revision=resolve_revision(spec, revision),
        endpoint=_hub_endpoint(),
    )
    found, corrupt_note = _find_local(target)
    if found is not None:
        return found
    target = replace(target, prior_problem=corrupt_note)
    # A corrupt local copy that cannot be replaced is an integrity failure; a file that was never there is not.
    unavailable = WeightsIntegrityError if corrupt_note else WeightsUnavailableError
    if _hub_offline():
        raise target.failure(
            unavailable, f"it is not in the weights folder and Hub access is disabled ({OFFLINE_ENV}=1)"
        )
    if not allow_download:
        raise target.failure(unavailable, "it is not in the weights folder and downloading is disabled")
    lock_dir = target.weights_dir / DOWNLOAD_SUBDIR
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise target.failure(WeightsUnavailableError, f"the weights folder cannot be created ({err})") from err
    lock_path = lock_dir / f"{spec.filename}.lock"
    try:
        with WeakFileLock(lock_path, timeout=DOWNLOAD_LOCK_TIMEOUT_S):
            # Another process or thread may have finished the same download while we waited for the lock.
            found, _ = _find_local(target)
            if found is not None:
                return found
            return _download_first_available(target, progress)
    except LockTimeout as err:
        raise target.failure(
            WeightsUnavailableError,
            f"another process has been downloading it for over {DOWNLOAD_LOCK_TIMEOUT_S:.0f} s (lock {lock_path}); "
            "if no other process is running, delete the lock file",
        ) from err


def resolve_weights(
    keys: Iterable[str] | None = None,
    *,
    weights_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
    progress: ProgressCallback | None = None,
) -> dict[str, Path]:
    """Resolve several registered files (default: all) with :func:`resolve_weight`; the first failure raises."""
    return {
        key: resolve_weight(key, weights_dir=weights_dir, allow_download=allow_download, progress=progress)
        for key in (keys if keys is not None else REGISTRY)
    }


def _find_local(target: _Target) -> tuple[Path | None, str | None]:
    """A usable local copy (weights folder, then pip package) and a note if a corrupt copy was moved aside."""
    spec = target.spec
    check = _check_local(target.local_path, spec, target.marker_path, allow_hashing=True)
    if check.state in (WeightState.VERIFIED, WeightState.PRESENT):
        logger.debug("weight %s: %s", spec.key, check.detail)
        return target.local_path, None
    note = None
    if check.state is WeightState.CORRUPT:
        try:
            moved = _quarantine(target.local_path, target.marker_path)
        except OSError as err:
            raise target.failure(
                WeightsIntegrityError, f"the local copy is corrupt ({check.detail}) and cannot be moved aside ({err})"
            ) from err
        note = f"the local copy was corrupt ({check.detail}) and was moved to {moved}"
        logger.warning("weight %s: %s", spec.key, note)
    package_copy = _package_file(spec)
    if package_copy is not None:
        package_check = _check_local(package_copy, spec, target.marker_path, allow_hashing=True)
        if package_check.state in (WeightState.VERIFIED, WeightState.PRESENT):
            logger.debug("weight %s: using the %s package copy: %s", spec.key, spec.package, package_check.detail)
            return package_copy, None
        logger.warning("weight %s: ignoring the %s package copy: %s", spec.key, spec.package, package_check.detail)
    return None, note


# -- download ----------------------------------------------------------------------------------------------------


def _download_first_available(target: _Target, progress: ProgressCallback | None) -> Path:
    """Download from the primary repo, else from each mirror in order while the earlier ones are not found / gated.

    Raises:
        HubFileNotFoundError: every source is gone (the message lists each one's answer).
        WeightsError: any other failure of a source (unreachable, corrupt download), which stops the search.
    """
    sources = [target] + [
        replace(target, repo_id=mirror.repo_id, revision=mirror.revision, remote_path=mirror.path, mirror=True)
        for mirror in target.spec.mirrors
    ]
    gone: list[str] = []
    for index, source in enumerate(sources):
        try:
            return _download(source, progress)
        except HubFileNotFoundError as err:
            if len(sources) == 1:
                raise
            why = _first_line(err).partition(NOT_AVAILABLE)[2].rstrip(".") or _first_line(err)
            gone.append(f"{source.source_label}: {why}")
            if index + 1 < len(sources):
                logger.warning("weight %s: %s; trying the next source", target.spec.key, gone[-1])
    raise target.failure(HubFileNotFoundError, "no Hub source has it (" + "; ".join(gone) + ")")


def _download(target: _Target, progress: ProgressCallback | None) -> Path:
    """Ask the Hub for the file's checksum, download it into the staging folder, verify it, then move it in place."""
    spec = target.spec
    expected_sha256, expected_git_sha1, expected_size, commit = _hub_expectations(target)
    staging = target.weights_dir / DOWNLOAD_SUBDIR / spec.key
    if staging.exists():
        logger.info("removing a partial download left by an earlier run: %s", staging)
        shutil.rmtree(staging, ignore_errors=True)
    try:
        logger.info("downloading %s from %s (%s@%s)", spec.filename, target.endpoint, target.source_label, commit[:12])
        downloaded = _hub_download(target, commit, staging, progress)
        digest = _hash_file(downloaded, git_blob=expected_sha256 is None and expected_git_sha1 is not None)
        problems = []
        if expected_size is not None and digest.size != expected_size:
            problems.append(f"it has {digest.size} bytes, expected {expected_size}")
        if expected_sha256 is not None and digest.sha256 != expected_sha256:
            problems.append(f"its sha256 is {digest.sha256}, expected {expected_sha256}")
        if expected_git_sha1 is not None and digest.git_sha1 not in (None, expected_git_sha1):
            problems.append(f"its git blob id is {digest.git_sha1}, expected {expected_git_sha1}")
        format_problem = _sniff_problem(downloaded, spec.file_format)
        if format_problem is not None:
            problems.append(format_problem)
        if problems:
            raise target.failure(
                WeightsIntegrityError,
                "the downloaded file failed verification (" + "; ".join(problems) + "); it was deleted",
            )
        if spec.sha256 is not None:
            source = "registered sha256"
        elif expected_sha256 is not None or expected_git_sha1 is not None:
            source = "Hub checksum"
        else:
            source = "Hub size only (the Hub sent no checksum)"
        reference = f"{source}, {target.source_label}@{commit}"
        # Marker first (it names the final path), then the atomic rename: no moment where the file looks valid
        # without having been verified.
        _write_marker(target.marker_path, downloaded, digest.sha256, reference, recorded_path=target.local_path)
        downloaded.replace(target.local_path)
        logger.info("weight %s downloaded from %s and verified: %s", spec.key, target.source_label, target.local_path)
        return target.local_path
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _hub_expectations(target: _Target) -> tuple[str | None, str | None, int | None, str]:
    """HEAD the resolve URL: (expected sha256, expected git blob id, expected size, commit id)."""
    spec = target.spec
    url = hf_hub_url(target.repo_id, target.remote_filename, revision=target.revision, endpoint=target.endpoint)
    try:
        metadata = get_hf_file_metadata(url, timeout=hf_constants.HF_HUB_ETAG_TIMEOUT, endpoint=target.endpoint)
    except (httpx2.HTTPError, OSError) as err:  # huggingface_hub's errors are OSError subclasses
        raise _classify_hub_error(target, err) from err
    if metadata.commit_hash is None or metadata.etag is None:
        raise target.failure(
            HubUnreachableError,
            f"{target.endpoint} answered without the X-Repo-Commit/ETag headers of a Hugging Face Hub (a proxy or "
            "captive portal?)",
        )
    etag = metadata.etag.lower()
    hub_sha256 = etag if SHA256_RE.match(etag) else None
    hub_git_sha1 = etag if GIT_SHA1_RE.match(etag) else None
    if spec.sha256 is not None and hub_sha256 is not None and hub_sha256 != spec.sha256:
        raise target.failure(
            WeightsIntegrityError,
            f"the Hub's copy has sha256 {hub_sha256}, not the registered {spec.sha256} (the repo holds a different "
            "file; point the repo variable at a copy of the expected file)",
        )
    if spec.size is not None and metadata.size is not None and metadata.size != spec.size:
        raise target.failure(
            WeightsIntegrityError,
            f"the Hub's copy has {metadata.size} bytes, not the registered {spec.size} (the repo holds a different "
            "file)",
        )
    expected_sha256 = spec.sha256 or hub_sha256
    expected_git_sha1 = None if expected_sha256 else hub_git_sha1
    expected_size = spec.size if spec.size is not None else metadata.size
    return expected_sha256, expected_git_sha1, expected_size, metadata.commit_hash


def _hub_download(target: _Target, commit: str, staging: Path, progress: ProgressCallback | None) -> Path:
    """``hf_hub_download`` of the exact commit that was checked into ``staging`` (errors -> WeightsError)."""
    try:
        downloaded = hf_hub_download(
            target.repo_id,
            target.remote_filename,
            revision=commit,
            local_dir=staging,
            endpoint=target.endpoint,
            etag_timeout=hf_constants.HF_HUB_ETAG_TIMEOUT,
            tqdm_class=_progress_relay(progress) if progress is not None else None,  # type: ignore[arg-type]
        )
    except (httpx2.HTTPError, OSError) as err:  # huggingface_hub's errors are OSError subclasses
        raise _classify_hub_error(target, err) from err
    return Path(downloaded)


def _classify_hub_error(target: _Target, err: httpx2.HTTPError | OSError) -> WeightsError:
    """Turn a huggingface_hub / httpx2 exception into one of this module's errors with a full explanation."""
    if isinstance(err, OfflineModeIsEnabled):
        return target.failure(WeightsUnavailableError, "Hub access is disabled (offline mode)")
    if isinstance(err, GatedRepoError | DisabledRepoError):
        return target.failure(
            HubFileNotFoundError, f"the Hub repository {target.repo_id} is gated or disabled ({_first_line(err)})"
        )
    if isinstance(err, RepositoryNotFoundError):
        return target.failure(HubFileNotFoundError, f"the Hub has no repository {target.repo_id} (HTTP 404/401)")
    if isinstance(err, RevisionNotFoundError):
        return target.failure(
            HubFileNotFoundError, f"the Hub repo {target.repo_id} has no revision {target.revision} (HTTP 404)"
        )
    if isinstance(err, RemoteEntryNotFoundError):
        return target.failure(
            HubFileNotFoundError,
            f"the Hub repo {target.repo_id} has no file {target.remote_filename} at revision {target.revision} "
            "(HTTP 404)",
        )
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        if status == 404:
            return target.failure(HubFileNotFoundError, f"the Hub answered 404 Not Found for {target.spec.filename}")
        return target.failure(HubUnreachableError, f"the Hub answered HTTP {status} ({_first_line(err)})")
    if isinstance(err, httpx2.TimeoutException):
        return target.failure(
            HubUnreachableError,
            f"the Hub at {target.endpoint} did not answer in time (timeouts: metadata "
            f"{hf_constants.HF_HUB_ETAG_TIMEOUT} s, download {hf_constants.HF_HUB_DOWNLOAD_TIMEOUT} s per read; "
            "raise HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT on a slow network)",
        )
    if isinstance(err, (httpx2.HTTPError, LocalEntryNotFoundError)):
        return target.failure(
            HubUnreachableError,
            f"the Hub at {target.endpoint} could not be reached ({type(err).__name__}: {_first_line(err)})",
        )
    if isinstance(err, OSError) and "Consistency check failed" in str(err):
        return target.failure(
            WeightsIntegrityError, f"the download was cut short or has the wrong size ({_first_line(err)})"
        )
    return target.failure(WeightsUnavailableError, f"the download failed ({type(err).__name__}: {_first_line(err)})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _ProgressRelay:
    """Stands in for the tqdm class huggingface_hub instantiates; forwards byte counts to a callback.

    Having ``update_transfer`` makes huggingface_hub's Xet path use a single bar, so bytes are not counted twice.
    """

    callback: ProgressCallback

    def __init__(self, *, total: int | None = None, initial: int = 0, **_display_options: object) -> None:
        self.total = total
        self.n = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        type(self).callback(self.n, self.total)

    def update_transfer(self, n: int) -> None:
        """Network bytes (before decompression/dedup): not reported."""

    def set_postfix_str(self, *args: object, **kwargs: object) -> None:
        """Display-only; ignored."""

    def set_transfer_postfix_str(self, *args: object, **kwargs: object) -> None:
        """Display-only; ignored."""

    def refresh(self) -> None:
        """Display-only; ignored."""

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> _ProgressRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _progress_relay(callback: ProgressCallback) -> type[_ProgressRelay]:
    """A relay class bound to ``callback`` (huggingface_hub wants a class, which it instantiates per bar)."""
    return type("_BoundProgressRelay", (_ProgressRelay,), {"callback": staticmethod(callback)})
