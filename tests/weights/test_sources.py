"""Pinned checksums, fallback Hub sources (mirrors) and the legacy torch format, against the local fake Hub.

The primary repo answers "repository not found" (or "gated") and a mirror serves the file under another path; the
file must be verified by the same rules, saved under the registry's name, and its source named in the marker, in
``status`` and in the logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
import torch

from pipeline.networks.parsing import BiSeNet, load_parser
from pipeline.weights import checks, registry
from pipeline.weights.checks import WeightState, weights_status
from pipeline.weights.download import HubFileNotFoundError, WeightsIntegrityError, resolve_weight
from pipeline.weights.registry import STAND_IN_MARKER, HubSource, get_spec
from pipeline.weights.stand_in import seeded_state_dict
from tests.weights.fake_hub import FakeHub

E4E = get_spec("e4e")
PARSER = get_spec("face_parser")
PARSER_SIZE = 53_289_463  # issue 13: the upstream 79999_iter.pth
PARSER_SHA256 = "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567"
E4E_MIRROR = HubSource("AIRI-Institute/HairFastGAN", "pretrained_models/encoder4editing/e4e_ffhq_encode.pt")
PARSER_MIRROR = HubSource("camenduru/MuseTalk", "face-parse-bisent/79999_iter.pth")


def torch_bytes(obj: object, *, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def parser_bytes() -> bytes:
    """A full-shape BiSeNet state dict in the legacy (non-zip) torch format, like the 2019 upstream file."""
    with torch.device("meta"):
        layout = [(key, tuple(value.shape)) for key, value in BiSeNet().state_dict().items()]
    return torch_bytes(seeded_state_dict(layout, seed=7, random_fir_kernels=True), legacy=True)


@pytest.fixture
def env(online_hub_environment: None) -> None:
    """Online against the fake Hub (tests/weights/conftest.py)."""


@pytest.fixture
def hub(env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        yield fake


def pin(monkeypatch: pytest.MonkeyPatch, key: str, data: bytes) -> None:
    """Register ``data``'s size and sha256 for ``key`` (the real pin cannot be matched by test bytes)."""
    entries = dict(registry.REGISTRY)
    entries[key] = dataclasses.replace(entries[key], size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType(entries))


def test_registry_pins_the_parser_and_lists_the_mirrors() -> None:
    assert (PARSER.size, PARSER.sha256) == (PARSER_SIZE, PARSER_SHA256)
    assert PARSER.mirrors == (PARSER_MIRROR,)
    assert E4E.mirrors == (E4E_MIRROR,)
    assert all(source.repo_id not in (E4E.repo_id, PARSER.repo_id) for source in E4E.mirrors + PARSER.mirrors)


def test_legacy_torch_format_loads_as_the_parser(parser_bytes: bytes, tmp_path: Path) -> None:
    assert parser_bytes[:2] == b"\x80\x02"  # a pickle, not a zip archive: torch's pre-1.6 format
    path = tmp_path / PARSER.filename
    path.write_bytes(parser_bytes)
    assert checks._sniff_problem(path, PARSER.file_format) is None
    parser = load_parser(path)
    expected = torch.load(io.BytesIO(parser_bytes), weights_only=True)
    loaded = parser.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)


def test_parser_comes_from_the_mirror_when_the_primary_repo_is_gone(
    hub: FakeHub,
    tmp_path: Path,
    parser_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pin(monkeypatch, "face_parser", parser_bytes)
    hub.add_file(PARSER_MIRROR.repo_id, PARSER_MIRROR.path, parser_bytes)  # the primary repo does not exist
    with caplog.at_level(logging.INFO, logger="pipeline.weights.download"):
        path = resolve_weight("face_parser", weights_dir=tmp_path)
    assert path == tmp_path / PARSER.filename and path.read_bytes() == parser_bytes
    assert f"primary {PARSER.repo_id}:{PARSER.filename}: the Hub has no repository" in caplog.text
    assert f"downloaded from mirror {PARSER_MIRROR.repo_id}:{PARSER_MIRROR.path}" in caplog.text
    marker = json.loads((tmp_path / (PARSER.filename + ".verified")).read_text())
    assert marker["reference"].startswith(f"registered sha256, mirror {PARSER_MIRROR.repo_id}:{PARSER_MIRROR.path}@")
    (status,) = weights_status(tmp_path, keys=["face_parser"])
    assert status.state is WeightState.VERIFIED and f"mirror {PARSER_MIRROR.repo_id}" in status.detail
    heads = [r.path for r in hub.requests if r.server == "hub" and r.method == "HEAD"]
    assert heads[0] == f"/{PARSER.repo_id}/resolve/main/{PARSER.filename}"
    assert f"/{PARSER_MIRROR.repo_id}/resolve/main/{PARSER_MIRROR.path}" in heads


def test_e4e_comes_from_the_mirror_when_the_primary_is_gated(hub: FakeHub, tmp_path: Path) -> None:
    data = torch_bytes({"state_dict": {"encoder.x": torch.zeros(2)}, "latent_avg": torch.zeros(18, 512)})
    hub.add_file(E4E.repo_id, E4E.filename, b"never served")
    hub.state.gated.add(E4E.repo_id)
    hub.add_file(E4E_MIRROR.repo_id, E4E_MIRROR.path, data)
    path = resolve_weight("e4e", weights_dir=tmp_path)
    assert path.read_bytes() == data
    assert not [r for r in hub.requests if r.server == "cdn" and "never" in r.path]


def test_a_mirror_file_is_verified_like_the_primary(
    hub: FakeHub, tmp_path: Path, parser_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin(monkeypatch, "face_parser", parser_bytes)
    hub.add_file(
        PARSER_MIRROR.repo_id, PARSER_MIRROR.path, parser_bytes[:-1] + bytes([parser_bytes[-1] ^ 0xFF])
    )  # another file (last byte always changed)
    with pytest.raises(WeightsIntegrityError, match="not the registered"):
        resolve_weight("face_parser", weights_dir=tmp_path)
    assert not (tmp_path / PARSER.filename).exists()


def test_every_source_gone_lists_each_answer(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_file("someone/else", "x.bin", b"x")
    with pytest.raises(HubFileNotFoundError) as caught:
        resolve_weight("e4e", weights_dir=tmp_path)
    first = str(caught.value).splitlines()[0]
    assert f"primary {E4E.repo_id}:{E4E.filename}: the Hub has no repository {E4E.repo_id}" in first
    assert f"mirror {E4E_MIRROR.repo_id}:{E4E_MIRROR.path}: the Hub has no repository" in first


def test_a_primary_that_is_unreachable_does_not_move_on_to_a_mirror(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_file(E4E.repo_id, E4E.filename, b"PK\x03\x04 some zip")
    hub.state.corrupt.add(E4E.filename)
    with pytest.raises(WeightsIntegrityError):
        resolve_weight("e4e", weights_dir=tmp_path)
    assert not [r for r in hub.requests if E4E_MIRROR.repo_id in r.path]


def test_the_pin_rejects_a_wrong_local_parser_but_not_a_stand_in_folder(env: None, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / PARSER.filename).write_bytes(torch_bytes({"a": torch.zeros(3)}))
    (status,) = weights_status(real, keys=["face_parser"])
    assert status.state is WeightState.CORRUPT and f"expected {PARSER_SIZE}" in status.detail

    stand_in = tmp_path / "stand_in"
    stand_in.mkdir()
    (stand_in / PARSER.filename).write_bytes(torch_bytes({"a": torch.zeros(3)}))
    (stand_in / STAND_IN_MARKER).write_text("stand-in", encoding="utf-8")
    (status,) = weights_status(stand_in, keys=["face_parser"])
    assert status.state is WeightState.STAND_IN and "not the real model" in status.detail  # status names stand-ins
    assert resolve_weight("face_parser", weights_dir=stand_in, allow_download=False) == stand_in / PARSER.filename
    (stand_in / PARSER.filename).write_bytes(b"<html>quota</html>")
    (status,) = weights_status(stand_in, keys=["face_parser"])
    assert status.state is WeightState.CORRUPT  # the format check still applies
