"""Weight registry: real ``hf_hub_download`` against a local fake Hub (fake_hub.py), verification, markers,
fault injection (RELIABILITY.md §6.2 items 1-7), offline mode, overrides, status report and CLI.

How the fake Hub is wired: ``weights.download`` reads ``HF_ENDPOINT`` at call time and passes it as ``endpoint=``,
so setting the environment variable is enough. huggingface_hub reads ``HF_HUB_OFFLINE``, ``HF_HUB_ETAG_TIMEOUT``,
``HF_HUB_DOWNLOAD_TIMEOUT`` and ``HF_HUB_CACHE`` once at import, so tests patch ``huggingface_hub.constants``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

import pytest
import safetensors.torch
import torch
from huggingface_hub import constants as hf_constants

from pipeline.config import CHECKPOINTS_DIR, REPO_ROOT
from pipeline.errors import WeightsError
from pipeline.weights import checks, download, registry
from pipeline.weights.checks import WeightState, format_status, weights_status
from pipeline.weights.cli import main
from pipeline.weights.download import (
    HubFileNotFoundError,
    HubUnreachableError,
    WeightsIntegrityError,
    WeightsUnavailableError,
    resolve_weight,
    resolve_weights,
)
from pipeline.weights.registry import REGISTRY, get_spec, resolve_weights_dir
from tests.weights.fake_hub import FakeHub

E4E = get_spec("e4e")
PARSER = get_spec("face_parser")
VGG = get_spec("vgg16")
DLIB = get_spec("dlib_landmarks")
SMALL_TIMEOUT = 0.3  # seconds; per-read timeout used by the stall tests
HTTP_GET_RESUMES = 5  # huggingface_hub http_get resumes a stalled download this many times, 1 s apart
SCHEDULING_SLACK = 6.0  # seconds of tolerance for a loaded machine


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sample_files() -> dict[str, bytes]:
    """Small files in the real formats: e4e-like checkpoint, BiSeNet-like state dict, VGG safetensors."""
    gen = torch.Generator().manual_seed(0)
    e4e = {
        "state_dict": {
            "encoder.input_layer.0.weight": torch.randn(4, 3, 3, 3, generator=gen),
            "decoder.style.1.weight": torch.randn(8, 8, generator=gen),
        },
        "latent_avg": torch.randn(18, 8, generator=gen),
    }
    parser = {
        "cp.resnet.conv1.weight": torch.randn(4, 3, 3, 3, generator=gen),
        "conv_out.conv_out.bias": torch.zeros(19),
    }
    vgg = {
        "features.0.weight": torch.randn(64, 3, 3, 3, generator=gen),
        "features.0.bias": torch.randn(64, generator=gen),
    }
    return {"e4e": _torch_bytes(e4e), "face_parser": _torch_bytes(parser), "vgg16": safetensors.torch.save(vgg)}


def unpin_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift the parser's registered size/sha256, so the small sample parser file can stand for it."""
    entries = dict(registry.REGISTRY)
    entries["face_parser"] = dataclasses.replace(PARSER, size=None, sha256=None)
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType(entries))


@pytest.fixture
def hub_env(online_hub_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online (tests/weights/conftest.py), and the sample parser accepted."""
    unpin_parser(monkeypatch)


@pytest.fixture
def hub(hub_env: None, monkeypatch: pytest.MonkeyPatch, sample_files: dict[str, bytes]):
    """A running fake Hub hosting the three small files, with HF_ENDPOINT pointing at it."""
    with FakeHub() as fake:
        fake.add_file(E4E.repo_id, E4E.filename, sample_files["e4e"])  # LFS: CDN redirect, sha256 ETag
        fake.add_file(PARSER.repo_id, PARSER.filename, sample_files["face_parser"], lfs=False)  # git blob ETag
        fake.add_file(VGG.repo_id, VGG.filename, sample_files["vgg16"], revision=VGG.revision)
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        yield fake


@pytest.fixture
def weights_dir(tmp_path: Path) -> Path:
    return tmp_path / "weights"


def _leftovers(directory: Path) -> list[str]:
    """Everything in the folder except lock files (a partial download must leave nothing else behind)."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.suffix != ".lock")


def _forbid_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was hashed again although its .verified marker is valid")

    monkeypatch.setattr(checks, "_hash_file", refuse)  # the local checks; a download hashes in download.py


# -- downloads ---------------------------------------------------------------------------------------------------


def test_download_verifies_caches_and_second_call_is_silent(
    hub: FakeHub, weights_dir: Path, sample_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int | None]] = []
    path = resolve_weight("e4e", weights_dir=weights_dir, progress=lambda done, total: seen.append((done, total)))

    assert path == weights_dir / E4E.filename
    assert path.read_bytes() == sample_files["e4e"]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"state_dict", "latent_avg"}
    marker = json.loads((weights_dir / (E4E.filename + ".verified")).read_text())
    assert marker["sha256"] == hashlib.sha256(sample_files["e4e"]).hexdigest()
    assert marker["size"] == len(sample_files["e4e"])
    assert "Hub checksum" in marker["reference"]
    assert seen and seen[-1] == (len(sample_files["e4e"]), len(sample_files["e4e"]))
    assert _leftovers(weights_dir) == [E4E.filename, E4E.filename + ".verified"]
    # What huggingface_hub needed: HEADs on /resolve (ours + its own), then a GET on the CDN redirect; no /api call.
    calls = [(r.server, r.method, r.path.split("/resolve/")[0]) for r in hub.requests]
    assert ("hub", "HEAD", f"/{E4E.repo_id}") in calls
    assert ("cdn", "GET", f"/cdn/{marker['sha256']}/{E4E.filename}") in [(s, m, p) for s, m, p in calls]
    assert not [r for r in hub.requests if r.path.startswith("/api/")]

    hub.clear_log()
    _forbid_hashing(monkeypatch)
    assert resolve_weight("e4e", weights_dir=weights_dir) == path
    assert hub.request_count() == 0


def test_plain_git_file_is_verified_by_its_git_blob_id(hub: FakeHub, weights_dir: Path) -> None:
    path = resolve_weight("face_parser", weights_dir=weights_dir)
    assert set(torch.load(path, map_location="cpu", weights_only=True)) == {
        "cp.resnet.conv1.weight",
        "conv_out.conv_out.bias",
    }
    hub.clear_log()
    hub.state.corrupt.add(PARSER.filename)
    path.unlink()
    with pytest.raises(WeightsIntegrityError, match="git blob id"):
        resolve_weight("face_parser", weights_dir=weights_dir)
    assert not path.exists()


def test_pinned_revision_is_downloaded_from_that_commit(hub: FakeHub, weights_dir: Path) -> None:
    path = resolve_weight("vgg16", weights_dir=weights_dir)
    tensors = safetensors.torch.load_file(path)
    assert tensors["features.0.weight"].shape == (64, 3, 3, 3)
    assert all(VGG.revision in r.path for r in hub.requests if r.server == "hub")


@pytest.mark.parametrize("lfs", [True, False], ids=["lfs", "git"])
def test_corrupt_download_is_rejected_and_nothing_valid_looking_is_left(
    hub_env: None, monkeypatch: pytest.MonkeyPatch, weights_dir: Path, sample_files: dict[str, bytes], lfs: bool
) -> None:
    with FakeHub() as fake:
        fake.add_file(E4E.repo_id, E4E.filename, sample_files["e4e"], lfs=lfs)
        fake.state.corrupt.add(E4E.filename)
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        with pytest.raises(WeightsIntegrityError) as caught:
            resolve_weight("e4e", weights_dir=weights_dir)
    message = str(caught.value)
    assert "failed verification" in message
    assert ("its sha256 is" if lfs else "its git blob id is") in message
    assert E4E.filename in message
    assert _leftovers(weights_dir) == []


def test_html_page_served_instead_of_the_file_is_rejected(hub: FakeHub, weights_dir: Path) -> None:
    hub.state.html_instead.add(E4E.filename)
    with pytest.raises(WeightsIntegrityError, match=r"wrong size|cut short"):
        resolve_weight("e4e", weights_dir=weights_dir)
    assert _leftovers(weights_dir) == []


def test_concurrent_requests_download_once(hub: FakeHub, weights_dir: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        paths = list(pool.map(lambda _: resolve_weight("e4e", weights_dir=weights_dir), range(3)))
    assert paths == [weights_dir / E4E.filename] * 3
    assert [r.method for r in hub.requests if r.server == "cdn"] == ["GET"]


def test_stale_partial_download_is_cleared_before_downloading(hub: FakeHub, weights_dir: Path) -> None:
    stale = weights_dir / download.DOWNLOAD_SUBDIR / "e4e" / ".cache" / "huggingface" / "download" / "x.incomplete"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    resolve_weight("e4e", weights_dir=weights_dir)
    assert not stale.exists()
    assert _leftovers(weights_dir) == [E4E.filename, E4E.filename + ".verified"]


# -- network failures --------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_hub_fails_fast_with_a_full_explanation(
    hub_env: None, monkeypatch: pytest.MonkeyPatch, weights_dir: Path
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(HubUnreachableError) as caught:
        resolve_weight("e4e", weights_dir=weights_dir)
    assert time.monotonic() - start < SCHEDULING_SLACK
    message = str(caught.value)
    for expected in (
        E4E.filename,
        str(weights_dir),
        E4E.repo_id,
        f"/{E4E.repo_id}/resolve/main/{E4E.filename}",
        "C2F_WEIGHTS_DIR",
        "could not be reached",
    ):
        assert expected in message
    assert _leftovers(weights_dir) == []


def test_missing_file_repo_and_revision_give_specific_messages(
    hub: FakeHub, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.state.not_found.add(E4E.filename)
    with pytest.raises(HubFileNotFoundError, match=r"has no file e4e_ffhq_encode\.pt .*HTTP 404"):
        resolve_weight("e4e", weights_dir=weights_dir)
    monkeypatch.setenv(E4E.repo_env, "nobody/no-such-repo")
    with pytest.raises(HubFileNotFoundError, match="no repository nobody/no-such-repo"):
        resolve_weight("e4e", weights_dir=weights_dir)
    with pytest.raises(HubFileNotFoundError, match="no revision 0123"):
        resolve_weight("vgg16", weights_dir=weights_dir, revision="0123" + "0" * 36)
    assert _leftovers(weights_dir) == []


def test_stalled_metadata_request_times_out(hub: FakeHub, weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_ETAG_TIMEOUT", SMALL_TIMEOUT)
    hub.state.stall.add("HEAD")
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match="did not answer in time"):
        resolve_weight("e4e", weights_dir=weights_dir)
    assert time.monotonic() - start < SMALL_TIMEOUT + SCHEDULING_SLACK


def test_stalled_download_gives_up_within_the_documented_bound(
    hub: FakeHub, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_DOWNLOAD_TIMEOUT", SMALL_TIMEOUT)
    hub.state.stall.add("GET")
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match="did not answer in time"):
        resolve_weight("e4e", weights_dir=weights_dir)
    bound = (1 + HTTP_GET_RESUMES) * SMALL_TIMEOUT + HTTP_GET_RESUMES * 1.0
    assert time.monotonic() - start < bound + SCHEDULING_SLACK
    assert _leftovers(weights_dir) == []


# -- offline and local-only use ----------------------------------------------------------------------------------


@pytest.mark.parametrize("switch", ["environment", "huggingface_hub"])
def test_offline_mode_uses_local_files_and_never_the_network(
    hub: FakeHub, weights_dir: Path, sample_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    if switch == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_weight("e4e", weights_dir=weights_dir)
    assert "HF_HUB_OFFLINE=1" in str(caught.value)
    assert str(weights_dir) in str(caught.value)

    weights_dir.mkdir()
    (weights_dir / E4E.filename).write_bytes(sample_files["e4e"])
    assert resolve_weight("e4e", weights_dir=weights_dir) == weights_dir / E4E.filename
    assert hub.request_count() == 0


def test_downloads_disabled_means_no_request(hub: FakeHub, weights_dir: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="downloading is disabled"):
        resolve_weight("vgg16", weights_dir=weights_dir, allow_download=False)
    assert hub.request_count() == 0


def test_a_complete_local_folder_needs_zero_network_calls(
    hub: FakeHub, weights_dir: Path, sample_files: dict[str, bytes]
) -> None:
    weights_dir.mkdir()
    for key in ("e4e", "face_parser", "vgg16"):
        (weights_dir / get_spec(key).filename).write_bytes(sample_files[key])
    package_copy = checks._package_file(DLIB)
    assert package_copy is not None
    (weights_dir / DLIB.filename).symlink_to(package_copy)

    paths = resolve_weights(weights_dir=weights_dir)
    assert paths == {key: weights_dir / spec.filename for key, spec in REGISTRY.items()}
    assert hub.request_count() == 0
    states = {s.key: s.state for s in weights_status(weights_dir)}
    assert states == {
        "e4e": WeightState.PRESENT,  # no registered checksum: format checked only
        "face_parser": WeightState.PRESENT,
        "dlib_landmarks": WeightState.VERIFIED,  # hashed once by resolve_weights, marker written
        "vgg16": WeightState.PRESENT,
    }


def test_dlib_model_comes_from_the_pip_package(
    hub: FakeHub, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = resolve_weight("dlib_landmarks", weights_dir=weights_dir)
    assert path.parent.parent.name == "face_recognition_models"
    assert path.stat().st_size == DLIB.size
    assert hub.request_count() == 0
    assert "face_recognition_models" not in sys.modules  # located, never imported
    _forbid_hashing(monkeypatch)
    assert resolve_weight("dlib_landmarks", weights_dir=weights_dir) == path


def test_hub_copy_with_a_different_checksum_than_registered_is_refused_before_download(
    hub: FakeHub, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checks, "_package_file", lambda spec: None)
    monkeypatch.setattr(download, "_package_file", lambda spec: None)
    hub.add_file(DLIB.repo_id, DLIB.filename, b"\x01\x01" + bytes(100))
    with pytest.raises(WeightsIntegrityError, match="not the registered fbdc2cb8"):
        resolve_weight("dlib_landmarks", weights_dir=weights_dir)
    assert [r.method for r in hub.requests] == ["HEAD"]
    assert _leftovers(weights_dir) == []


# -- damaged local files -----------------------------------------------------------------------------------------


def test_truncated_local_file_is_moved_aside_then_downloaded_again(hub: FakeHub, weights_dir: Path) -> None:
    path = resolve_weight("e4e", weights_dir=weights_dir)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    hub.clear_log()
    with pytest.raises(WeightsIntegrityError) as caught:
        resolve_weight("e4e", weights_dir=weights_dir, allow_download=False)
    assert "truncated or replaced" in str(caught.value)
    assert "downloading is disabled" in str(caught.value)
    assert not path.exists()
    assert (weights_dir / (E4E.filename + ".corrupt")).stat().st_size == len(good) // 2
    assert hub.request_count() == 0

    assert resolve_weight("e4e", weights_dir=weights_dir).read_bytes() == good


def test_flipped_bytes_are_caught_against_the_recorded_checksum(
    hub: FakeHub, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = resolve_weight("e4e", weights_dir=weights_dir)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # make sure the mtime differs from the marker
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsIntegrityError, match="recorded when it was downloaded"):
        resolve_weight("e4e", weights_dir=weights_dir)
    assert (weights_dir / (E4E.filename + ".corrupt")).exists()


@pytest.mark.parametrize(
    ("key", "content", "hint"),
    [
        ("face_parser", b"<!DOCTYPE html><html>quota exceeded</html>", "HTML page"),
        ("vgg16", b"\x10\x00\x00\x00\x00\x00\x00\x00not json", "not a safetensors file"),
        ("dlib_landmarks", b"BZh91AY&SY" + bytes(50), "bz2-compressed"),
    ],
)
def test_wrong_content_in_the_weights_folder_is_recognised(
    hub: FakeHub, weights_dir: Path, key: str, content: bytes, hint: str
) -> None:
    spec = get_spec(key)
    weights_dir.mkdir()
    (weights_dir / spec.filename).write_bytes(content)
    status = {s.key: s for s in weights_status(weights_dir)}[key]
    assert status.state is WeightState.CORRUPT
    assert hint in status.detail
    if key == "dlib_landmarks":
        return  # the package copy would be used instead; the status above is the point
    with pytest.raises(WeightsIntegrityError, match=hint):
        resolve_weight(key, weights_dir=weights_dir, allow_download=False)
    assert (weights_dir / (spec.filename + ".corrupt")).read_bytes() == content


# -- overrides, status, CLI --------------------------------------------------------------------------------------


def test_weights_dir_and_repo_overrides(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_files: dict[str, bytes]
) -> None:
    assert resolve_weights_dir() == CHECKPOINTS_DIR
    monkeypatch.setenv("C2F_WEIGHTS_DIR", str(tmp_path / "from-env"))
    assert resolve_weights_dir() == tmp_path / "from-env"
    assert resolve_weights_dir(tmp_path / "arg") == tmp_path / "arg"

    hub.add_file("mirror/e4e-copy", E4E.filename, sample_files["e4e"])
    monkeypatch.setenv(E4E.repo_env, "mirror/e4e-copy")
    assert resolve_weight("e4e") == tmp_path / "from-env" / E4E.filename
    assert {r.path.split("/resolve/")[0] for r in hub.requests if r.server == "hub"} == {"/mirror/e4e-copy"}

    hub.clear_log()
    resolve_weight("e4e", weights_dir=tmp_path / "arg", repo_id=E4E.repo_id)  # argument beats environment
    assert {r.path.split("/resolve/")[0] for r in hub.requests if r.server == "hub"} == {f"/{E4E.repo_id}"}


def test_status_report_needs_no_network_and_explains_missing_files(
    hub: FakeHub, weights_dir: Path, sample_files: dict[str, bytes]
) -> None:
    resolve_weight("e4e", weights_dir=weights_dir)
    hub.clear_log()
    (weights_dir / VGG.filename).write_bytes(b"\x00" * 4)

    statuses = {s.key: s for s in weights_status(weights_dir)}
    assert statuses["e4e"].state is WeightState.VERIFIED
    assert statuses["face_parser"].state is WeightState.MISSING
    assert statuses["face_parser"].path is None
    assert f"/{PARSER.repo_id}/resolve/main/{PARSER.filename}" in statuses["face_parser"].detail
    assert statuses["vgg16"].state is WeightState.CORRUPT
    assert statuses["dlib_landmarks"].state is WeightState.PRESENT  # package copy, not hashed without verify=True
    assert weights_status(weights_dir, keys=["dlib_landmarks"], verify=True)[0].state is WeightState.VERIFIED
    text = format_status(statuses.values())
    assert len(text.splitlines()) == len(REGISTRY)
    assert "missing" in text
    assert hub.request_count() == 0
    assert (weights_dir / VGG.filename).exists()  # the report never moves files


def test_errors_are_weights_errors() -> None:
    for error_type in (WeightsUnavailableError, HubUnreachableError, HubFileNotFoundError, WeightsIntegrityError):
        assert issubclass(error_type, WeightsError)
    with pytest.raises(KeyError, match="known keys: e4e"):
        get_spec("stylegan")


def test_registry_entries_are_complete() -> None:
    assert list(REGISTRY) == ["e4e", "face_parser", "dlib_landmarks", "vgg16"]
    for spec in REGISTRY.values():
        assert spec.licence and spec.purpose and spec.manual_source
        assert spec.revision == "main" or spec.pinned
    assert VGG.pinned and "pinned" in VGG.revision_note
    assert "no commit is pinned" in E4E.revision_note


def test_registered_dlib_checksum_matches_the_package_copy() -> None:
    package_copy = checks._package_file(DLIB)
    if package_copy is None:
        pytest.skip("face_recognition_models is not installed")
    digest = checks._hash_file(package_copy)
    assert (digest.size, digest.sha256) == (DLIB.size, DLIB.sha256)


def test_cli_list_status_verify_download(hub: FakeHub, weights_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert all(f"{key}: " in listing for key in REGISTRY)
    assert DLIB.sha256 in listing

    assert main(["status", "--weights-dir", str(weights_dir)]) == 1
    assert "missing" in capsys.readouterr().out

    assert main(["download", "vgg16", "face_parser", "--weights-dir", str(weights_dir)]) == 0
    out = capsys.readouterr().out
    assert f"vgg16: {weights_dir / VGG.filename}" in out

    assert main(["verify", "vgg16", "dlib_landmarks", "--weights-dir", str(weights_dir)]) == 0
    assert main(["download", "e4e", "--weights-dir", str(weights_dir)]) == 0

    hub.state.not_found.add(E4E.filename)
    (weights_dir / E4E.filename).unlink()
    assert main(["download", "e4e", "--weights-dir", str(weights_dir)]) == 1
    assert "e4e: FAILED" in capsys.readouterr().err


def test_module_runs_as_a_command(tmp_path: Path) -> None:
    env = {**os.environ, "C2F_WEIGHTS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.weights", "status", "e4e"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "e4e" in result.stdout and "missing" in result.stdout


def test_weights_folder_is_not_created_by_reading(hub: FakeHub, tmp_path: Path) -> None:
    target = tmp_path / "never-created"
    weights_status(target)
    with pytest.raises(WeightsUnavailableError):
        resolve_weight("vgg16", weights_dir=target, allow_download=False)
    assert not target.exists()


def test_status_calls_stand_in_weights_stand_ins(
    stand_in_weights_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statuses = {s.key: s for s in weights_status(stand_in_weights_dir)}
    for key in ("e4e", "face_parser", "vgg16"):
        assert statuses[key].state is WeightState.STAND_IN, key
        assert "not the real model" in statuses[key].detail and "present;" not in statuses[key].detail
    assert statuses["dlib_landmarks"].state is not WeightState.STAND_IN  # the real model, from its pip package
    assert main(["status", "--weights-dir", str(stand_in_weights_dir)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert all(" stand-in " in lines[key] for key in ("e4e", "face_parser", "vgg16"))


def test_a_real_file_beside_no_marker_is_not_called_a_stand_in(
    weights_dir: Path, sample_files: dict[str, bytes]
) -> None:
    weights_dir.mkdir()
    (weights_dir / E4E.filename).write_bytes(sample_files["e4e"])
    assert weights_status(weights_dir, keys=["e4e"])[0].state is WeightState.PRESENT
