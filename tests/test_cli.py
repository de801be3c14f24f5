"""``python -m pipeline``: end to end with the stand-in weights, failures, and the overwrite guards."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from pipeline.cli import (
    STAND_IN_WARNING,
    UsageError,
    build_parser,
    main,
    parse_layers,
    plan_outputs,
    settings_from_args,
    write_files_atomically,
)
from pipeline.config import EXAMPLES_DIR, REPO_ROOT
from pipeline.faces.photo import SourcePhoto, encode_png, read_png
from pipeline.latent.editing import edit_latent, load_boundary
from pipeline.remover import DoubleChinRemover
from pipeline.settings import MIX_LAYERS_WARP
from tests.serving import WARP_SKIPPED

PHOTO = EXAMPLES_DIR / "00016.png"
CODE = EXAMPLES_DIR / "codes" / "00016_wp.npy"
SUMMARY_KEYS = {
    "input",
    "size",
    "photo",  # bit depth, channels, grey, ICC profile of the output (issue 11)
    "turned_degrees",
    "faces_found",
    "faces_search",
    "faces_edited",
    "settings",
    "stand_in_weights",
    "warning",
    "notes",
    "timings_s",
    "faces",
    "total_s",
    "w_plus_rows",
    "outputs",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk_types(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    types, offset = [], len(PNG_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        types.append(data[offset + 4 : offset + 8].decode("ascii"))
        offset += 12 + length
    return types


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_args(weights_dir: Path) -> list[str]:
    return ["--weights-dir", str(weights_dir), "--no-download", "--device", "cpu"]


def read_summary(outdir: Path, stem: str) -> dict[str, object]:
    return json.loads((outdir / f"{stem}_summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def off_centre_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """00016 scaled down and placed off-centre in a 900×760 PNG (so the output size is a real check)."""
    face = Image.open(PHOTO).convert("RGB").resize((700, 700), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (900, 760), (118, 112, 105))
    canvas.paste(face, (150, 40))
    path = tmp_path_factory.mktemp("photos") / "portrait.png"
    canvas.save(path)
    return path


def test_warp_end_to_end(stand_in_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sha256(PHOTO)
    outdir = tmp_path / "out"
    status = main(
        [str(PHOTO), "-o", str(outdir), "--method", "warp", "--save-stages", *weights_args(stand_in_weights_dir)]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert STAND_IN_WARNING in captured.err
    assert f"{PHOTO} -> {outdir / '00016_no_double_chin.png'}" in captured.out
    assert "1 of 1 photos done" in captured.out
    assert sha256(PHOTO) == before  # the input is untouched

    result = outdir / "00016_no_double_chin.png"
    with Image.open(PHOTO) as source, Image.open(result) as output:
        assert output.size == source.size and output.mode == "RGB"
    assert png_chunk_types(result) == ["IHDR", *["IDAT"] * (len(png_chunk_types(result)) - 2), "IEND"]  # no metadata

    summary = read_summary(outdir, "00016")
    assert set(summary) == SUMMARY_KEYS
    assert summary["input"] == "00016.png"
    assert summary["stand_in_weights"] is True and "NOT a real" in summary["warning"]
    assert summary["settings"]["method"] == "warp" and summary["settings"]["inversion"] == "encoder"
    assert summary["faces"]["0"]["inversion"] == "encoder"
    score = summary["faces"]["0"]["double_chin_score"]
    assert score["after"] == pytest.approx(score["before"] - 5.0, abs=1e-3) and score["layers"] == list(range(6))
    arrow = " → ".join(f"{value:.1f}".replace("-", "−") for value in (score["before"], score["after"]))
    assert f"(double-chin score {arrow})" in captured.out
    assert summary["faces_edited"] == [0] and summary["w_plus_rows"] == {"0": 0}
    assert {"detect", "align", "invert", "edit", "mask", "refine_warp", "paste_back"} <= set(summary["timings_s"])
    stages = {
        stage: f"00016_face1_{stage}.png" for stage in ("aligned", "reconstruction", "edited", "mask", "refined")
    }
    assert summary["outputs"] == {
        "image": result.name,
        "w_plus": "00016_w_plus.npy",
        "summary": "00016_summary.json",
        "stages": {"0": stages},
    }
    codes = np.load(outdir / "00016_w_plus.npy")
    assert codes.shape == (1, 18, 512) and codes.dtype == np.float32 and np.isfinite(codes).all()
    for name in stages.values():
        with Image.open(outdir / name) as stage:
            assert stage.size == (1024, 1024)
    assert sorted(path.name for path in outdir.iterdir()) == sorted(
        [result.name, "00016_w_plus.npy", "00016_summary.json", *stages.values()]
    )  # and no temporary files are left

    # A second run into the same folder refuses to overwrite, unless asked to.
    with pytest.raises(SystemExit) as refused:
        main([str(PHOTO), "-o", str(outdir), *weights_args(stand_in_weights_dir)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "already exists; pass --overwrite" in err
    assert err.startswith("python -m pipeline: error: ") and "usage:" not in err  # just the message


def test_diffuse_with_optimisation(
    stand_in_weights_dir: Path, off_centre_photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--method", "diffuse", "--refine-steps", "2", "--inversion-steps", "2", "--seed", "3", "--quiet"]
    status = main([str(off_centre_photo), "-o", str(tmp_path), *args, *weights_args(stand_in_weights_dir)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out == ""  # --quiet
    assert captured.err.strip() == STAND_IN_WARNING  # the stand-in warning is never silenced
    with Image.open(tmp_path / "portrait_no_double_chin.png") as output:
        assert output.size == (900, 760)
    summary = read_summary(tmp_path, "portrait")
    assert summary["settings"]["method"] == "diffuse" and summary["settings"]["refine_steps"] == 2
    assert summary["settings"]["inversion"] == "optimise" and summary["settings"]["inversion_steps"] == 2
    assert summary["settings"]["seed"] == 3
    assert summary["faces"]["0"]["inversion"] == "optimise"
    assert {"optimise", "refine_diffuse"} <= set(summary["timings_s"])
    assert summary["stand_in_weights"] is True


def test_user_code_skips_inversion(
    stand_in_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--code", str(CODE), "--strength", "-3", "--quiet", *weights_args(stand_in_weights_dir)]
    status = main([str(PHOTO), "-o", str(tmp_path), *args])
    assert status == 0, capsys.readouterr().err
    summary = read_summary(tmp_path, "00016")
    assert summary["faces"]["0"]["inversion"] == "user code"
    assert summary["settings"]["strength"] == -3.0
    # Warp keeps the edited code: the official code moved by α = −3 along fine/all, layers 6–17 restored.
    expected = edit_latent(np.load(CODE), load_boundary("fine", "all"), strength=-3.0, mix_layers=MIX_LAYERS_WARP)
    assert np.array_equal(np.load(tmp_path / "00016_w_plus.npy"), expected)


def test_photo_form_and_pytorch_code(
    stand_in_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 16-bit RGBA PNG with a profile comes back 16-bit RGBA with the profile; a .pt code is used as given."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # any RGB profile will do here
    colour = np.asarray(Image.open(PHOTO).convert("RGB")).astype(np.uint16) * 257 + 100
    alpha = np.full(colour.shape[:2], 65535, np.uint16)
    alpha[:50, :50] = 1000
    photo = SourcePhoto(np.dstack([colour, alpha]), icc)
    source = tmp_path / "deep.png"
    source.write_bytes(encode_png(photo))
    code = tmp_path / "code.pt"
    torch.save({"latent": torch.from_numpy(np.load(CODE))}, code)
    args = ["--code", str(code), "--strength", "-3", "--quiet", *weights_args(stand_in_weights_dir)]
    status = main([str(source), "-o", str(tmp_path / "out"), *args])
    assert status == 0, capsys.readouterr().err
    summary = read_summary(tmp_path / "out", "deep")
    assert summary["faces"]["0"]["inversion"] == "user code"
    assert summary["photo"]["bit_depth"] == 16 and summary["photo"]["channels"] == "RGBA"
    result = read_png((tmp_path / "out" / "deep_no_double_chin.png").read_bytes())
    assert result.icc_profile == icc and result.pixels.dtype == np.uint16 and result.pixels.shape == photo.pixels.shape
    np.testing.assert_array_equal(result.pixels[..., 3], alpha)
    changed = np.any(result.pixels != photo.pixels, axis=2)
    assert changed.any() and changed.mean() < 0.3


def test_failures_are_one_line_each(stand_in_weights_dir: Path, tmp_path: Path) -> None:
    """Run as a real process: non-face image, unreadable file and missing file fail; exit 1; no traceback."""
    gradient = np.linspace(0, 255, 320, dtype=np.float32)
    landscape = np.stack(
        [np.tile(gradient, (240, 1)), np.tile(gradient[:240, None], (1, 320)), np.full((240, 320), 90)]
    )
    Image.fromarray(landscape.transpose(1, 2, 0).astype(np.uint8)).save(tmp_path / "landscape.png")
    (tmp_path / "broken.jpg").write_bytes(b"this is not a photo at all")
    outdir = tmp_path / "out"
    names = [str(tmp_path / "landscape.png"), str(tmp_path / "broken.jpg"), str(tmp_path / "missing.jpg")]
    command = [
        sys.executable,
        "-m",
        "pipeline",
        *names,
        "-o",
        str(outdir),
        "--quiet",
        *weights_args(stand_in_weights_dir),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == STAND_IN_WARNING
    assert len(lines) == 4, lines
    assert lines[1].startswith(f"{names[0]}: No face was found in this photo.")
    assert lines[2].startswith(f"{names[1]}: This file could not be read as a photo.")
    assert lines[3] == f"{names[2]}: no such file"
    assert done.stdout == ""
    assert not outdir.exists()  # nothing half-written (the folder is made with the first output)


def test_missing_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "no-weights"
    empty.mkdir()
    status = main([str(PHOTO), "-o", str(tmp_path / "out"), *weights_args(empty)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("error: Weight file 'e4e_ffhq_encode.pt'")
    assert f"Looked in: {empty}" in err and "To fix: download" in err
    assert "Traceback" not in err


def test_bad_code_file(stand_in_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "w.npy"
    np.save(bad, np.zeros(512, dtype=np.float32))
    status = main([str(PHOTO), "-o", str(tmp_path / "out"), "--code", str(bad), *weights_args(stand_in_weights_dir)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.strip() == (
        "error: latent code file 'w.npy' has shape (512,); expected a W+ code of shape (1, 18, 512) or (18, 512). "
        "This looks like a single W vector: repeat it for the 18 layers (numpy.tile) to make a W+ code."
    )
    assert not (tmp_path / "out").exists()


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_output_that_is_an_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "me.png"
    earlier = tmp_path / "me_no_double_chin.png"
    for path in (photo, earlier):
        Image.new("RGB", (64, 64)).save(path)
    before = sha256(earlier)
    err = usage_error([str(photo), str(earlier), "-o", str(tmp_path), "--overwrite"], capsys)
    assert f"would overwrite the input {earlier}" in err and "usage:" not in err
    assert sha256(earlier) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strength", "5"], "removal strengths are negative, e.g. -5"),
        (["--strength", "-9"], "must be from 0 to -8"),
        (["--strength", "-4", "--auto"], "not allowed with argument"),
        (["--face", "0"], "face numbers start at 1"),
        (["--face", "2", "--all-faces"], "not allowed with argument"),
        (["--method", "warp", "--refine-steps", "10"], "does nothing with --method warp"),
        (["--inversion", "encoder", "--inversion-steps", "10"], "does nothing with --inversion encoder"),
        (["--auto", "--boundary", "coarse"], "automatic strength needs the fine/all boundary"),
        (["--boundary", "coarse", "--boundary-variant", "all"], "coarse boundary has the variants"),
        (["--mix-layers", "7-18"], "within 0-17"),
        (["--mix-layers", "0-17"], "nothing would be edited"),
        (["--refine-steps", "5000"], "must be from 0 to 1000"),
        (["--device", "tpu"], "expected auto, cpu, cuda"),
        (["--code", str(CODE), "--all-faces"], "--code is the W+ code of one face"),
        (["--code", str(CODE), "--inversion", "optimise"], "--code replaces the inversion"),
    ],
)
def test_usage_errors(extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error([str(PHOTO), "-o", str(tmp_path), *extra], capsys)
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_code_needs_a_single_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = EXAMPLES_DIR / "00191.png"
    assert "give a single IMAGE" in usage_error(
        [str(PHOTO), str(other), "-o", str(tmp_path), "--code", str(CODE)], capsys
    )


def test_same_stem_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="would write the same outputs"):
        plan_outputs([Path("a/x.jpg"), Path("b/x.png")], tmp_path)


def test_existing_stage_outputs_count_as_outputs(tmp_path: Path) -> None:
    (tmp_path / "x_face2_mask.png").write_bytes(b"earlier run")
    assert plan_outputs([Path("x.jpg")], tmp_path)  # stage files matter only with --save-stages
    with pytest.raises(UsageError, match=r"x_face2_mask\.png already exists"):
        plan_outputs([Path("x.jpg")], tmp_path, save_stages=True)
    assert plan_outputs([Path("x.jpg")], tmp_path, save_stages=True, overwrite=True)


def test_settings_from_args_defaults_and_implications() -> None:
    parser = build_parser()
    cpu = torch.device("cpu")

    def settings(*extra: str):
        return settings_from_args(parser.parse_args(["x.jpg", "-o", "out", *extra]), cpu)

    assert settings() == settings_from_args(parser.parse_args(["x.jpg", "-o", "out"]), cpu)
    default = settings()
    assert (default.method, default.inversion, default.strength) == ("warp", "encoder", -5.0)
    assert settings("--refine-steps", "7").method == "diffuse"
    assert settings("--inversion-steps", "9").inversion == "optimise"
    coarse = settings("--boundary", "coarse")
    assert (coarse.boundary, coarse.boundary_variant) == ("coarse", "psi_0.8")
    assert settings("--face", "3").face_index == 2
    assert settings("--auto").auto_strength
    assert settings("--mix-layers", "none").mix_layers == ()
    gpu = settings_from_args(parser.parse_args(["x.jpg", "-o", "out"]), torch.device("cuda"))
    assert (gpu.method, gpu.inversion) == ("diffuse", "optimise")


def test_parse_layers() -> None:
    assert parse_layers("7-17") == tuple(range(7, 18))
    assert parse_layers("6, 8-9,3") == (3, 6, 8, 9)
    assert parse_layers("none") == ()
    for bad in ("7-", "a", "9-3", "18", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_layers(bad)


def test_atomic_writes_leave_nothing_on_failure(tmp_path: Path) -> None:
    files = {tmp_path / "a.png": b"first", tmp_path / "missing-folder" / "b.json": b"second"}
    with pytest.raises(OSError):
        write_files_atomically(files, overwrite=False)
    assert list(tmp_path.iterdir()) == []  # the first file was written to a temporary name, then removed
    write_files_atomically({tmp_path / "a.png": b"first"}, overwrite=False)
    with pytest.raises(FileExistsError):
        write_files_atomically({tmp_path / "a.png": b"second"}, overwrite=False)
    assert (tmp_path / "a.png").read_bytes() == b"first"
    assert [path.name for path in tmp_path.iterdir()] == ["a.png"]
    write_files_atomically({tmp_path / "a.png": b"second"}, overwrite=True)
    assert (tmp_path / "a.png").read_bytes() == b"second"
    assert oct((tmp_path / "a.png").stat().st_mode & 0o777) == "0o644"


class FailingRemover:
    """Stands in for the loaded remover to inject failures the real models do not produce on demand."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.models = types.SimpleNamespace(stand_in=False)
        self.progress_bars = True

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise self.error


@pytest.mark.parametrize("debug", [False, True])
def test_unexpected_errors_are_one_line_unless_debug(
    debug: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    remover = FailingRemover(RuntimeError("boom\nsecond line"))
    monkeypatch.setattr(DoubleChinRemover, "from_pretrained", lambda *args, **kwargs: remover)
    status = main([str(PHOTO), "-o", str(tmp_path), "--quiet", *(["--debug"] if debug else [])])
    err = capsys.readouterr().err
    assert status == 1
    line = f"{PHOTO}: unexpected error (RuntimeError: boom second line); run again with --debug for the traceback"
    assert line in err.splitlines()
    assert "Traceback" not in err
    # --debug logs the traceback (a real process logs to stderr; pytest captures the records).
    assert any(record.exc_info for record in caplog.records) == debug
    assert list(tmp_path.iterdir()) == []


def test_interrupt_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    remover = FailingRemover(KeyboardInterrupt())
    monkeypatch.setattr(DoubleChinRemover, "from_pretrained", lambda *args, **kwargs: remover)
    assert main([str(PHOTO), "-o", str(tmp_path), "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_cli_runs_the_jaw_warp_with_synthetic_labels(
    synthetic_label_remover: DoubleChinRemover, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        DoubleChinRemover, "from_pretrained", classmethod(lambda cls, *a, **k: synthetic_label_remover)
    )
    outdir = tmp_path / "out"
    assert main([str(PHOTO), "-o", str(outdir), "--method", "warp", "--quiet"]) == 0
    summary = read_summary(outdir, "00016")
    assert not any(note.startswith(WARP_SKIPPED) for note in summary["notes"]), summary["notes"]
    assert "refine_warp" in summary["timings_s"]
    with Image.open(PHOTO) as source, Image.open(outdir / "00016_no_double_chin.png") as result:
        assert np.any(np.asarray(result) != np.asarray(source.convert("RGB")))
