"""Local checks of the weight files: hashing, ``.verified`` markers, format sniffing, and the status report.

Verification: a registered size/sha256 when known (dlib); otherwise the checksum recorded in the file's
``<file>.verified`` JSON marker when it was downloaded (:mod:`pipeline.weights.download`). A successful check is cached
in that marker (size, mtime, sha256), so a 1.2 GB file is hashed once, not at every start. A local file that fails its
check is renamed to ``<file>.corrupt`` and is never returned. Nothing here touches the network.

The dlib landmark model may also come from the ``face_recognition_models`` pip package (located with
``importlib.util.find_spec``, never imported: its ``__init__`` needs ``pkg_resources``).
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import json
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.weights.registry import (
    REGISTRY,
    STAND_IN_KEYS,
    STAND_IN_MARKER,
    FileFormat,
    WeightSpec,
    download_url,
    get_spec,
    resolve_weights_dir,
)

logger = logging.getLogger(__name__)

VERIFIED_SUFFIX = ".verified"  # marker: this exact file (size + mtime) was hashed and matched its reference
CORRUPT_SUFFIX = ".corrupt"  # a file that failed verification is moved aside under this name
MARKER_VERSION = 1
HASH_CHUNK_BYTES = 8 * 1024 * 1024
SNIFF_BYTES = 16  # bytes read from the start of a file to recognise its format
STAND_IN_DETAIL = (
    f"a random stand-in for tests (this folder carries {STAND_IN_MARKER}, written by `make-test-weights`), not the "
    "real model: results made with it are not real"
)


class WeightState(enum.Enum):
    """What is known about a weight file without touching the network."""

    VERIFIED = "verified"  # size/sha256 matched a trusted reference (registry or Hub checksum)
    PRESENT = "present"  # exists and looks like the right format, but has not been (or cannot be) hashed
    STAND_IN = "stand-in"  # present in a folder written by `make-test-weights`: random test weights, not the model
    CORRUPT = "corrupt"  # exists but fails its size, checksum or format check
    MISSING = "missing"


@dataclass(frozen=True)
class WeightStatus:
    """The state of one registered file, as reported by :func:`weights_status`."""

    key: str
    filename: str
    state: WeightState
    path: Path | None  # the file that was examined (None when missing)
    detail: str  # one sentence for people


@dataclass(frozen=True)
class _Marker:
    """Content of a ``<file>.verified`` marker."""

    path: str  # resolved path of the verified file
    size: int
    mtime_ns: int
    sha256: str
    reference: str  # what the sha256 was checked against
    version: int = MARKER_VERSION


@dataclass(frozen=True)
class _LocalCheck:
    state: WeightState
    detail: str


def _package_file(spec: WeightSpec) -> Path | None:
    """The copy shipped in a pip package, found without importing the package."""
    if spec.package is None or spec.package_path is None:
        return None
    try:
        module_spec = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        return None
    if module_spec is None or not module_spec.submodule_search_locations:
        return None
    for location in module_spec.submodule_search_locations:
        candidate = Path(location) / spec.package_path
        if candidate.is_file():
            return candidate
    return None


# -- hashing, markers and format sniffing ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Digest:
    size: int
    sha256: str
    git_sha1: str | None  # git blob id, computed only when asked


def _hash_file(path: Path, *, git_blob: bool = False) -> _Digest:
    """Hash a file in chunks (sha256, and the git blob sha1 when asked)."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % size) if git_blob else None
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            sha256.update(chunk)
            if git is not None:
                git.update(chunk)
    return _Digest(size=size, sha256=sha256.hexdigest(), git_sha1=git.hexdigest() if git is not None else None)


def _marker_path(weights_dir: Path, filename: str) -> Path:
    return weights_dir / (filename + VERIFIED_SUFFIX)


def _read_marker(marker_path: Path) -> _Marker | None:
    try:
        raw = json.loads(marker_path.read_text(encoding="utf-8"))
        marker = _Marker(**raw)
    except (OSError, ValueError, TypeError):
        return None
    return marker if marker.version == MARKER_VERSION else None


def _write_marker(
    marker_path: Path, file_path: Path, sha256: str, reference: str, *, recorded_path: Path | None = None
) -> None:
    """Record that ``file_path`` (as it is now) matched ``sha256``; failure to write only costs a re-hash later.

    ``recorded_path`` is the path the marker names when the file is about to be renamed there (size and mtime
    survive a rename).
    """
    stat = file_path.stat()
    marker = _Marker(
        path=str((recorded_path or file_path).resolve()),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        sha256=sha256,
        reference=reference,
    )
    temporary = marker_path.with_name(marker_path.name + ".tmp")
    try:
        marker_path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(asdict(marker), indent=1), encoding="utf-8")
        temporary.replace(marker_path)
    except OSError as err:
        logger.warning("could not write verification marker %s (%s); the file will be hashed again", marker_path, err)


def _sniff_problem(path: Path, file_format: FileFormat) -> str | None:
    """Describe why the file is clearly not a ``file_format`` file, or None if its first bytes look right."""
    try:
        size = path.stat().st_size
        with path.open("rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if size == 0:
        return "it is empty"
    if head.startswith(b"BZh"):
        return "it is still bz2-compressed (decompress it with bunzip2 first)"
    if head.startswith(b"\x1f\x8b"):
        return "it is still gzip-compressed (decompress it first)"
    if head.lstrip().startswith((b"<", b"{")) and file_format is not FileFormat.SAFETENSORS:
        return "it is a text/HTML page (probably an error or quota page saved instead of the file)"
    if file_format is FileFormat.TORCH and not head.startswith((b"PK\x03\x04", b"\x80\x02")):
        return "it is not a PyTorch checkpoint (neither a torch zip archive nor a legacy torch pickle)"
    if file_format is FileFormat.SAFETENSORS:
        if len(head) < 9:
            return "it is too short to be a safetensors file"
        (header_length,) = struct.unpack("<Q", head[:8])
        if head[8:9] != b"{" or 8 + header_length > size:
            return "it is not a safetensors file (bad header)"
    return None


# -- local checks ------------------------------------------------------------------------------------------------


def _check_local(path: Path, spec: WeightSpec, marker_path: Path, *, allow_hashing: bool) -> _LocalCheck:
    """Decide, without network, whether ``path`` is a good copy of ``spec``'s file."""
    if not path.is_file():
        return _LocalCheck(WeightState.MISSING, f"{path} does not exist")
    stat = path.stat()
    if spec.sha256 is not None and (path.parent / STAND_IN_MARKER).is_file():
        # A make-test-weights folder: its files are seeded random stand-ins, which can never match a pinned checksum.
        problem = _sniff_problem(path, spec.file_format)
        if problem is not None:
            return _LocalCheck(WeightState.CORRUPT, f"{path}: {problem}")
        return _LocalCheck(
            WeightState.PRESENT,
            f"{path} present in a stand-in weights folder ({STAND_IN_MARKER}): the registered checksum is not "
            "applied, and these are not the real weights",
        )
    if spec.size is not None and stat.st_size != spec.size:
        return _LocalCheck(
            WeightState.CORRUPT,
            f"{path} has {stat.st_size} bytes, expected {spec.size}" + _sniff_suffix(path, spec.file_format),
        )
    marker = _read_marker(marker_path)
    if marker is not None and marker.path != str(path.resolve()):
        marker = None  # the marker belongs to another copy of the file
    reference = spec.sha256 or (marker.sha256 if marker is not None else None)
    if (
        marker is not None
        and marker.sha256 == reference
        and (marker.size, marker.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    ):
        return _LocalCheck(WeightState.VERIFIED, f"{path} verified ({marker.reference})")
    if marker is not None and spec.sha256 is None and marker.size != stat.st_size:
        return _LocalCheck(
            WeightState.CORRUPT,
            f"{path} has {stat.st_size} bytes but had {marker.size} when it was verified (truncated or replaced; "
            f"if you replaced it on purpose, delete {marker_path.name})",
        )
    problem = _sniff_problem(path, spec.file_format)
    if reference is None:
        if problem is not None:
            return _LocalCheck(WeightState.CORRUPT, f"{path}: {problem}")
        return _LocalCheck(
            WeightState.PRESENT, f"{path} present; no checksum is registered, so only its format was checked"
        )
    if not allow_hashing:
        return _LocalCheck(WeightState.PRESENT, f"{path} present, not verified yet")
    digest = _hash_file(path)
    if digest.sha256 != reference:
        origin = "registered" if spec.sha256 else "recorded when it was downloaded"
        return _LocalCheck(
            WeightState.CORRUPT,
            f"{path} has sha256 {digest.sha256}, expected {reference} ({origin})"
            + (f"; {problem}" if problem else "")
            + ("" if spec.sha256 else f"; if you replaced it on purpose, delete {marker_path.name}"),
        )
    _write_marker(marker_path, path, digest.sha256, marker.reference if marker else "registered sha256")
    return _LocalCheck(WeightState.VERIFIED, f"{path} verified (sha256 matches)")


def _sniff_suffix(path: Path, file_format: FileFormat) -> str:
    problem = _sniff_problem(path, file_format)
    return f"; {problem}" if problem else ""


def _quarantine(path: Path, marker_path: Path) -> Path:
    """Move a bad file aside as ``<file>.corrupt`` so it can never be loaded."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    path.replace(target)
    marker_path.unlink(missing_ok=True)
    return target


# -- status ------------------------------------------------------------------------------------------------------


def weights_status(
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    keys: Iterable[str] | None = None,
    verify: bool = False,
) -> list[WeightStatus]:
    """Report which registered files are verified, present, corrupt or missing, without any network call.

    Args:
        weights_dir: the weights folder (default: see :func:`resolve_weights_dir`).
        keys: registry keys to report (default: all, in registry order).
        verify: hash files that have a reference checksum but no valid ``.verified`` marker (slow for big files);
            without it only sizes, markers and format bytes are checked. Nothing is moved or deleted.

    Returns:
        One :class:`WeightStatus` per key.
    """
    directory = resolve_weights_dir(weights_dir)
    statuses = []
    for key in keys if keys is not None else REGISTRY:
        spec = get_spec(key)
        marker_path = _marker_path(directory, spec.filename)
        local = directory / spec.filename
        check = _check_local(local, spec, marker_path, allow_hashing=verify)
        path: Path | None = local
        if check.state is WeightState.MISSING:
            package_copy = _package_file(spec)
            if package_copy is not None:
                check = _check_local(package_copy, spec, marker_path, allow_hashing=verify)
                path = package_copy
            else:
                path = None
                check = _LocalCheck(WeightState.MISSING, _missing_detail(spec, directory))
        if check.state is WeightState.PRESENT and key in STAND_IN_KEYS and (directory / STAND_IN_MARKER).is_file():
            check = _LocalCheck(WeightState.STAND_IN, f"{path}: {STAND_IN_DETAIL}")
        statuses.append(WeightStatus(key, spec.filename, check.state, path, check.detail))
    return statuses


def _missing_detail(spec: WeightSpec, directory: Path) -> str:
    where = f"not in {directory}" + (f" nor in the {spec.package} package" if spec.package else "")
    url = download_url(spec)
    return f"{where}; download {url} into that folder"


def format_status(statuses: Iterable[WeightStatus]) -> str:
    """One line per file: key, state, detail (for logs, the CLI and the app's maintenance banner)."""
    return "\n".join(f"{s.key:<15} {s.state.value:<8} {s.filename}: {s.detail}" for s in statuses)
