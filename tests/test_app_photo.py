"""The page and the web API return the photo in its own form (issue 11), through the served app.

Stand-in weights: the edit is not real, but which pixels may change and what the files carry do not depend on them.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from pipeline.faces.decode import decode_upload
from pipeline.faces.photo import SourcePhoto, encode_png, read_png
from pipeline.faces.upright import turn_clockwise
from pipeline.settings import RemovalSettings
from tests.photos import colord_profile
from tests.serving import EXAMPLE, Served

pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


@pytest.fixture(scope="module")
def deep_photo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SourcePhoto]:
    """The example face at 560² in a 16-bit RGBA PNG with the Adobe RGB profile and a half-transparent corner."""
    face = np.asarray(Image.open(EXAMPLE).convert("RGB").resize((560, 560), Image.Resampling.LANCZOS))
    colour = np.pad(face, ((20, 60), (40, 40), (0, 0)), mode="edge").astype(np.uint16) * 257 + 77
    alpha = np.full(colour.shape[:2], 65535, np.uint16)
    alpha[:30, :30] = 20000
    photo = SourcePhoto(np.dstack([colour, alpha]), colord_profile("AdobeRGB1998.icc"))
    path = tmp_path_factory.mktemp("photos") / "deep.png"
    path.write_bytes(encode_png(photo))
    return path, photo


def remove(client: Client, photo: Path, **settings: object) -> tuple:
    settings.setdefault("w_plus_code", None)
    return client.predict(handle_file(str(photo)), api_name="/remove_double_chin", **settings)


def test_result_keeps_profile_depth_and_alpha(client: Client, deep_photo: tuple[Path, SourcePhoto]) -> None:
    path, photo = deep_photo
    (before, after), _, downloads, summary, _, _ = remove(client, path, strength=-5.0)
    original, result = read_png(Path(before).read_bytes()), read_png(Path(after).read_bytes())
    np.testing.assert_array_equal(original.pixels, photo.pixels)  # "before" is the upload in its own form
    assert result.icc_profile == photo.icc_profile and result.pixels.dtype == np.uint16
    assert result.pixels.shape == photo.pixels.shape
    np.testing.assert_array_equal(result.pixels[..., 3], photo.pixels[..., 3])
    changed = np.any(result.pixels != photo.pixels, axis=2)
    assert changed.any() and changed.mean() < 0.3
    assert summary["photo"] == {
        "size": [640, 640],
        "bit_depth": 16,
        "channels": "RGBA",
        "grey": False,
        "icc_profile": "Compatible with Adobe RGB (1998)",  # colord-data's description
    }
    assert any(Path(item).name == "result.png" for item in downloads)


def test_strength_zero_returns_the_upload_bit_for_bit(client: Client, deep_photo: tuple[Path, SourcePhoto]) -> None:
    path, photo = deep_photo
    (_, after), _, _, _, notes, _ = remove(client, path, strength=0.0)
    np.testing.assert_array_equal(read_png(Path(after).read_bytes()).pixels, photo.pixels)
    assert "exactly as it was uploaded" in notes


def test_a_sideways_photo_is_edited_and_keeps_its_orientation(client: Client, tmp_path: Path) -> None:
    face = np.asarray(Image.open(EXAMPLE).convert("RGB").resize((400, 400), Image.Resampling.LANCZOS))
    sideways = turn_clockwise(np.pad(face, ((20, 80), (30, 30), (0, 0)), mode="edge"), 90)
    path = tmp_path / "sideways.png"
    Image.fromarray(sideways).save(path)
    (_, after), _, _, summary, notes, _ = remove(client, path, strength=-5.0)
    result = read_png(Path(after).read_bytes()).pixels
    assert result.shape == sideways.shape
    assert summary["turned_degrees"] == 270 and "turning the photo 270° clockwise" in notes
    changed = np.any(result != sideways, axis=2)
    assert changed.any() and changed.mean() < 0.3


def test_the_sweep_starts_at_the_input(app_module: ModuleType) -> None:
    handlers = app_module.RemovalApp(app_module.LOADED)
    photo = decode_upload(EXAMPLE)
    search = handlers.require_remover().detect(photo.image)
    job = app_module.GpuJob(RemovalSettings(strength=-3.0), search.faces[0], photo.image, None, sweep_frames=3)
    result = handlers.run_on_gpu(job)
    assert len(result.sweep) == 3
    np.testing.assert_array_equal(result.sweep[0], result.prepared.aligned.image)
    assert not np.array_equal(result.sweep[-1], result.prepared.aligned.image)


def test_the_strength_help_says_what_zero_does(served: Served) -> None:
    config = served.demo.get_config_file()
    strength = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "c2f-strength")
    assert "0 returns the photo exactly as uploaded" in strength["props"]["info"]
