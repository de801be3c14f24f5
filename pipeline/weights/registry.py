"""The one registry of pretrained files the app needs: what each file is, where it comes from, its licence.

Sources of the registry facts: ``design/METHOD.md`` §10 (files, mirrors, licences); encoder4editing (Tov et al.,
SIGGRAPH 2021) for ``e4e_ffhq_encode.pt``; zllrunning/face-parsing.PyTorch for ``79999_iter.pth``; davisking's
dlib-models for the 68-point predictor; timm's ``vgg16.tv_in1k`` (torchvision's ImageNet VGG16).

How a file is found, downloaded and verified: :mod:`pipeline.weights.download` (resolution and the Hub) and
:mod:`pipeline.weights.checks` (local checks, ``.verified`` markers, status text). Run
``python -m pipeline.weights {list,status,verify,download,make-test-weights}`` for the command line
(:mod:`pipeline.weights.cli`).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from pipeline.config import CHECKPOINTS_DIR

WEIGHTS_DIR_ENV = "C2F_WEIGHTS_DIR"  # overrides the default weights folder
STAND_IN_MARKER = "STAND_IN_WEIGHTS.txt"  # written by `make-test-weights` beside its stand-in files (ours)
STAND_IN_KEYS = ("e4e", "face_parser", "vgg16")  # the files `make-test-weights` writes (dlib's model is the real one)
PUBLIC_HUB = "https://huggingface.co"
GIT_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")


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


def download_url(spec: WeightSpec) -> str:
    """Where ``spec``'s file is on the Hub, after the ``C2F_*_REPO`` / ``C2F_*_REVISION`` overrides."""
    return hub_download_url(resolve_repo_id(spec), resolve_revision(spec), spec.filename)
