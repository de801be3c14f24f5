"""The Space (app.py) end to end: gradio_client against the app served on 127.0.0.1 with stand-in weights.

One server per module, launched in this process with the shipped queue/launch options, so the tests can count how
often the encoder and the optimiser run (``pipeline.remover.invert_with_encoder`` / ``optimise_latent`` are wrapped).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from page import files as page_files
from pipeline.config import EXAMPLES_DIR, REPO_ROOT
from pipeline.errors import WeightsError
from pipeline.faces.decode import decode_upload
from pipeline.remover import DoubleChinRemover
from pipeline.settings import RemovalSettings
from pipeline.weights.stand_in import STAND_IN_NOTE
from tests.serving import (
    EXAMPLE,
    TEST_PHOTO_SIZE,
    WARP_SKIPPED,
    Served,
    default_inputs,
    launch,
    make_landscape,
    make_test_photo,
    rgb,
)

EXAMPLE_CODE = EXAMPLES_DIR / "codes" / "00016_wp.npy"
PILLOW_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's default decompression-bomb threshold


# -- shared helpers (the browser test imports them) -----------------------------------------------------------------


# -- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_photo(tmp_path_factory.mktemp("photos") / "portrait.jpg")


def remove(client: Client, photo: str | Path, **settings: object) -> tuple:
    settings.setdefault("w_plus_code", None)
    return client.predict(handle_file(str(photo)), api_name="/remove_double_chin", **settings)


# -- the API --------------------------------------------------------------------------------------------------------


def test_only_the_photo_is_required_by_the_api(client: Client) -> None:
    for endpoint in ("/remove_double_chin", "/strength_sweep"):
        parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"][endpoint]["parameters"]
        required = [item["parameter_name"] for item in parameters if not item["parameter_has_default"]]
        assert required == ["photo"], endpoint  # w_plus_code too may be left out (None: the server inverts)


def test_photo_in_result_of_the_same_size_out(client: Client, photo: Path) -> None:
    (before, after), stages, downloads, summary, notes, score = remove(client, photo, strength=-5.0)
    original, result = rgb(before), rgb(after)
    expected = rgb(photo)
    assert original.shape == result.shape == expected.shape == (TEST_PHOTO_SIZE[1], TEST_PHOTO_SIZE[0], 3)
    np.testing.assert_array_equal(original, decode_upload(photo).image)  # "before" is the decoded upload, lossless
    changed = np.any(result != original, axis=2)
    assert 0 < changed.mean() < 0.25, "only the neck region may change"
    assert changed[: TEST_PHOTO_SIZE[1] // 4].sum() == 0, "the top of the photo (hair, forehead) is untouched"
    with Image.open(after) as png:
        assert png.format == "PNG"
        assert not set(png.info) - {"dpi"}, f"no metadata in the result: {png.info}"

    assert [Path(item["image"]).suffix for item in stages] == [".jpeg"] * 5
    assert [item["caption"].split(" · ")[1] for item in stages] == [
        "Aligned crop",
        "Reconstruction (encoder)",
        "Edited render",
        "Neck mask",
        "Refined crop",
    ]
    names = sorted(Path(path).name for path in downloads)
    assert names == ["result.png", "settings.json", "w_plus.npy"]
    files = {Path(path).name: path for path in downloads}
    np.testing.assert_array_equal(rgb(files["result.png"]), result)
    assert np.load(files["w_plus.npy"]).shape == (1, 18, 512)
    assert json.loads(Path(files["settings.json"]).read_text(encoding="utf-8")) == summary
    assert summary["size"] == list(TEST_PHOTO_SIZE)
    assert summary["stand_in_weights"] is True
    assert summary["warning"] == STAND_IN_NOTE
    assert summary["settings"]["strength"] == -5.0
    assert STAND_IN_NOTE in summary["notes"]
    assert STAND_IN_NOTE not in notes, (
        "the banner shows the models' notes; the notes under the result do not repeat it"
    )
    written = summary["faces"]["0"]["double_chin_score"]  # the score, in the API result and settings.json
    assert written["after"] == pytest.approx(written["before"] - 5.0, abs=1e-3) and written["boundary"] == "fine/all"
    assert score.startswith("**Double-chin score: ") and "positive = double-chin side" in score
    assert "stand-in weights the code is random" in score


def test_another_strength_or_method_reuses_the_cached_inversion(
    served: Served, client: Client, tmp_path: Path
) -> None:
    photo = make_test_photo(tmp_path / "another.png", EXAMPLES_DIR / "00295.png")  # not cached by other tests
    encoder_runs = served.calls["invert_with_encoder"]
    first = remove(client, photo, strength=-5.0)
    assert served.calls["invert_with_encoder"] == encoder_runs + 1
    assert first[3]["inversion_cached"] is False
    assert "invert" in first[3]["timings_s"]

    second = remove(client, photo, strength=-2.0)
    third = remove(client, photo, strength=-2.0, method="diffuse", refine_steps=2)
    assert served.calls["invert_with_encoder"] == encoder_runs + 1, "the encoder ran again"
    for result in (second, third):
        assert result[3]["inversion_cached"] is True
        assert "invert" not in result[3]["timings_s"] and "align" not in result[3]["timings_s"]
    assert third[3]["settings"]["method"] == "diffuse"
    assert np.any(rgb(first[0][1]) != rgb(second[0][1])), "a new strength must change the result"


def test_optimised_inversion_is_cached_per_steps_and_seed(served: Served, client: Client, photo: Path) -> None:
    runs = served.calls["optimise_latent"]
    first = remove(client, photo, inversion="optimise", inversion_steps=10, seed=3)
    remove(client, photo, inversion="optimise", inversion_steps=10, seed=3, strength=-1.0)
    assert served.calls["optimise_latent"] == runs + 1
    assert first[3]["faces"]["0"]["inversion"] == "optimise"
    remove(client, photo, inversion="optimise", inversion_steps=10, seed=4)
    assert served.calls["optimise_latent"] == runs + 2, "another seed is another inversion"


def test_a_photo_without_a_face_gets_its_message(served: Served, client: Client, tmp_path: Path) -> None:
    encoder_runs = served.calls["invert_with_encoder"]
    with pytest.raises(AppError, match=r"^No face was found in this photo\. Please use a photo where one face"):
        remove(client, make_landscape(tmp_path / "landscape.png"))
    assert served.calls["invert_with_encoder"] == encoder_runs


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"<html><body>not a photo</body></html>", "page.jpg", r"^This file could not be read as a photo\."),
        (b"%PDF-1.4\n%binary", "document.png", r"^This PDF file is not supported\."),
        (b"", "empty.jpg", r"^The uploaded file is empty\."),
    ],
)
def test_unreadable_uploads_get_our_message(
    client: Client, tmp_path: Path, content: bytes, name: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AppError, match=message):
        remove(client, path)


def test_face_number_beyond_the_faces_found(client: Client, photo: Path) -> None:
    with pytest.raises(AppError, match=r"has 1 face large enough to edit, so there is no face number 3\."):
        remove(client, photo, face_number=3)


def test_all_layers_restored_is_refused(client: Client, photo: Path) -> None:
    with pytest.raises(AppError, match=r"^Restoring all 18 layers from the original leaves nothing to edit"):
        remove(client, photo, mix_layers=list(range(18)))


def test_user_code_skips_the_inversion(served: Served, client: Client, tmp_path: Path) -> None:
    encoder_runs = served.calls["invert_with_encoder"]
    result = remove(client, EXAMPLE, w_plus_code=handle_file(str(EXAMPLE_CODE)))
    assert served.calls["invert_with_encoder"] == encoder_runs
    assert result[3]["faces"]["0"]["inversion"] == "user code"
    downloads = {Path(path).name: path for path in result[2]}
    np.testing.assert_array_equal(np.load(downloads["w_plus.npy"]), np.load(EXAMPLE_CODE))

    bad = tmp_path / "<b>bold<i>.npy"
    np.save(bad, np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(
        AppError, match=r"^The latent code has shape \(2, 2\); expected a W\+ code of shape \(1, 18, 512\)"
    ) as error:
        remove(client, EXAMPLE, w_plus_code=handle_file(str(bad)))
    assert "bold" not in str(error.value), "the user's file name never appears in a message"


def test_unexpected_failures_get_a_generic_message(
    client: Client, photo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_edit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk /srv/secret/weights exploded")

    monkeypatch.setattr(DoubleChinRemover, "edit", broken_edit)
    with pytest.raises(AppError) as error:
        remove(client, photo)
    message = str(error.value)
    assert message.startswith("Something went wrong on our side")
    assert "secret" not in message and "RuntimeError" not in message
    assert "disk /srv/secret/weights exploded" in caplog.text, "the real cause is logged on the server"
    monkeypatch.undo()
    remove(client, photo)  # and the server keeps working


def test_strength_sweep_animates_with_the_cached_inversion(served: Served, client: Client, photo: Path) -> None:
    remove(client, photo, strength=-6.0)
    encoder_runs = served.calls["invert_with_encoder"]
    path = client.predict(handle_file(str(photo)), strength=-6.0, w_plus_code=None, api_name="/strength_sweep")
    assert served.calls["invert_with_encoder"] == encoder_runs
    app = served.app
    with Image.open(path) as animation:
        assert animation.format == "WEBP"
        assert animation.size == (page_files.SWEEP_FRAME_SIZE, page_files.SWEEP_FRAME_SIZE)
        assert animation.n_frames == 2 * app.SWEEP_FRAMES - 2  # forward, then back without repeating the ends
        frames = []
        for index in (0, app.SWEEP_FRAMES - 1):
            animation.seek(index)
            frames.append(np.asarray(animation.convert("RGB"), dtype=np.int16))
    assert np.abs(frames[0] - frames[1]).mean() > 0.1, "strength 0 and −6 must look different"


# -- public-service configuration -------------------------------------------------------------------------------------


def test_public_service_settings_are_in_force(served: Served) -> None:
    url = served.url
    assert httpx.post(f"{url}/gradio_api/run/remove_double_chin", json={"data": []}).status_code == 404  # api_open
    assert httpx.get(f"{url}/monitoring/summary").status_code in (403, 404)
    assert httpx.get(f"{url}/gradio_api/file=/etc/passwd").status_code == 403
    too_big = httpx.post(f"{url}/gradio_api/upload", files={"files": ("big.jpg", b"0" * (11 * 1024 * 1024))})
    assert too_big.status_code == 413
    config = served.demo.config
    assert served.demo.delete_cache == served.app.DELETE_CACHE
    assert served.demo._queue.max_size == served.app.QUEUE_MAX_SIZE
    endpoints = {dep["api_name"]: dep for dep in config["dependencies"] if dep.get("api_name")}
    assert endpoints["remove_double_chin"]["api_visibility"] == "public"
    assert endpoints["strength_sweep"]["api_visibility"] == "public"
    private = [dep for dep in config["dependencies"] if dep.get("api_visibility") == "private" and dep["targets"]]
    assert {target[1] for dep in private for target in dep["targets"]} >= {"release", "input"}
    model_names = {"remove_double_chin", "apply_if_photo", "strength_sweep"}
    model_jobs = [fn for fn in served.demo.fns.values() if getattr(fn.fn, "__name__", None) in model_names]
    assert len(model_jobs) == 7  # run, five re-apply events (strength, method, auto, boundary, every face), sweep
    assert all(fn.concurrency_id == "model" and fn.concurrency_limit == 1 for fn in model_jobs)
    slider = next(
        block["id"] for block in config["components"] if block.get("props", {}).get("elem_id") == "c2f-slider"
    )
    run = endpoints["remove_double_chin"]
    assert run["show_progress_on"] == [slider]  # one progress bar, over the result, not over every output


def test_page_shows_the_stand_in_warning_and_credits(served: Served) -> None:
    texts = [block.get("props", {}).get("value") for block in served.demo.config["components"]]
    markdown = "\n".join(text for text in texts if isinstance(text, str))
    assert f"**{STAND_IN_NOTE}**" in markdown  # the banner shows the one stand-in note
    assert "Coarse-to-Fine: Facial Structure Editing of Portrait Images via Latent Space" in markdown
    assert "non-commercial" in markdown and "NVIDIA Source Code License-NC" in markdown


def test_examples_are_cached_lazily_only_with_real_weights(
    app_module: ModuleType, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_module
    cache_dir = tmp_path / "cached_examples"
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(cache_dir))
    encoder_runs = served.calls["invert_with_encoder"]
    Client(served.url, verbose=False, download_files=str(tmp_path / "stand_in")).predict(0, api_name="/load_example")
    assert served.calls["invert_with_encoder"] == encoder_runs, "stand-in results are never cached"

    real = DoubleChinRemover(dataclasses.replace(app.LOADED.models, stand_in=False, notes=()))  # pretends to be real
    prepared: list[object] = []
    monkeypatch.setattr(
        real, "prepare", lambda *args, **kwargs: prepared.append(1) or DoubleChinRemover.prepare(real, *args, **kwargs)
    )
    demo = app.build_demo(real)
    url = launch(app, demo)
    try:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        first = client.predict(0, api_name="/load_example")
        assert len(prepared) == 1  # first use: computed and cached
        second = client.predict(0, api_name="/load_example")
        assert len(prepared) == 1  # then served from the cache
        assert second[3] == first[3] and "warning" not in first[3]
        # The examples start from the authors' own W+ codes, not the encoder.
        assert first[3]["faces"]["0"]["inversion"] == app.AUTHORS_CODE_INVERSION
        assert served.calls["invert_with_encoder"] == encoder_runs
        assert any(cache_dir.iterdir())
    finally:
        demo.close()


def test_importing_the_app_changes_nothing_outside_it(app_module: ModuleType) -> None:
    app_module.build_demo(app_module.LOADED)
    stubs = sorted(REPO_ROOT.glob("*.pyi")) + sorted((REPO_ROOT / "page").glob("*.pyi"))
    assert not stubs, "a gr.Image subclass makes Gradio write a .pyi stub next to its module"
    # Uploads are bounded by pipeline.faces.decode; Pillow's process-wide default stays as it is.
    assert Image.MAX_IMAGE_PIXELS == PILLOW_MAX_IMAGE_PIXELS


# -- without weights ------------------------------------------------------------------------------------------------


def test_without_weights_the_app_starts_and_says_what_is_missing(
    app_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_module
    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setenv("C2F_WEIGHTS_DIR", str(empty))
    monkeypatch.setenv("C2F_ALLOW_DOWNLOAD", "0")
    loaded = app.load_remover_from_env()
    assert isinstance(loaded, WeightsError)
    assert "e4e_ffhq_encode.pt" in str(loaded)

    demo = app.build_demo(loaded)
    texts = [block.get("props", {}).get("value") for block in demo.config["components"]]
    panel = next(text for text in texts if isinstance(text, str) and "weights are not available" in text)
    assert "e4e_ffhq_encode.pt" in panel and str(empty) in panel  # format_status(weights_status()) of that folder
    assert "missing" in panel and "python -m pipeline.weights download" in panel

    url = launch(app, demo)
    try:
        with pytest.raises(AppError, match=r"running without its model weights") as error:
            remove(Client(url, verbose=False), EXAMPLE)
        assert "e4e_ffhq_encode.pt" in str(error.value)
    finally:
        demo.close()


# -- the pieces, in process -----------------------------------------------------------------------------------------


def test_gpu_function_takes_and_returns_picklable_cpu_values(app_module: ModuleType) -> None:
    app = app_module
    handlers = app.RemovalApp(app.LOADED)
    assert handlers.run_on_gpu == handlers.gpu_work, "off Spaces, spaces.GPU must leave the function as it is"
    photo = decode_upload(EXAMPLE)
    faces = app.LOADED.detect(photo.image).faces
    job = app.GpuJob(RemovalSettings(strength=-3.0), faces[0], photo.image, None, sweep_frames=2)
    result = handlers.run_on_gpu(pickle.loads(pickle.dumps(job)))
    copy = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(copy.edit.refined, result.edit.refined)
    np.testing.assert_array_equal(copy.prepared.w_plus, result.prepared.w_plus)
    assert len(copy.sweep) == 2 and copy.sweep[0].shape == (1024, 1024, 3)


def test_the_page_runs_the_jaw_warp_with_synthetic_labels(
    app_module: ModuleType, synthetic_label_remover: DoubleChinRemover, photo: Path
) -> None:
    page = app_module.RemovalApp(synthetic_label_remover)
    decoded = decode_upload(photo)
    (before, after), _, _, summary, notes, score = page.remove_double_chin(decoded, *default_inputs(None)[1:])
    assert WARP_SKIPPED not in notes and not any(note.startswith(WARP_SKIPPED) for note in summary["notes"])
    assert "refine_warp" in summary["timings_s"] and "Double-chin score" in score
    changed = np.any(rgb(after) != rgb(before), axis=2)
    assert changed.any() and not changed[: changed.shape[0] // 4].any()


def test_the_readme_client_snippet_runs_verbatim(
    served: Served, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- api-start -->")[1].split("<!-- api-end -->")[0]
    code = section.split("```python\n")[1].split("```")[0]
    code = code.replace('"http://127.0.0.1:7860"', repr(served.url)).replace('"portrait.jpg"', repr(str(photo)))
    exec(compile(code, "README.md", "exec"), {})  # our own README's example
    printed = capsys.readouterr().out
    assert "result.png" in printed and "'before':" in printed and "'after':" in printed


def test_a_failed_start_up_check_warns_on_the_page(app_module: ModuleType) -> None:
    from pipeline.verification.known_answers import Finding, KnownAnswerReport
    from pipeline.verification.verify import StartupCheck

    assert app_module.STARTUP_CHECK.warning() == ""  # stand-in weights: not run (the stand-in banner says why)
    assert not [fn for fn in app_module.demo.fns.values() if fn.name == "show"]  # so the page does not listen
    models = app_module.LOADED.models
    failed = KnownAnswerReport((Finding("generator", False, "rendered codes do not match their photos"),))
    check = StartupCheck(dataclasses.replace(models, stand_in=False), run=lambda _m: failed).start()
    assert check.wait(30)
    demo = app_module.build_demo(app_module.LOADED, check)
    (load,) = [fn for fn in demo.fns.values() if fn.name == "show"]
    shown = load.fn()
    assert shown.visible and "failed their start-up check** (generator)" in shown.value
    assert "python -m pipeline.weights verify" in shown.value
