from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import CheckpointFormatError, InputImageError, WeightsError
from pipeline.networks import parsing
from pipeline.networks.parsing import (
    FACE_LABELS,
    LABEL_NAMES,
    NECK,
    NUM_CLASSES,
    SKIN,
    BiSeNet,
    load_parser,
    parse_labels,
    parser_from_state_dict,
    parser_input,
)
from pipeline.weights.stand_in import seeded_state_dict
from tests.conftest import REFERENCE_DIR

ATOL = 1e-4  # fixture README: float64 vs float32 reference differ by ≤ 2.2e-6; threads by ≤ 1.4e-6
RTOL = 1e-4
LABEL_GAP = 1e-4  # compare labels only where top-1 and top-2 logits differ by at least this much
PHOTO = REFERENCE_DIR / "test" / "origin" / "00016.jpg"


@pytest.fixture(scope="module")
def bisenet_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "bisenet"


@pytest.fixture(scope="module")
def manifest(bisenet_dir: Path) -> dict:
    return json.loads((bisenet_dir / "bisenet_manifest.json").read_text())


@pytest.fixture(scope="module")
def seeded_weights(manifest: dict) -> dict[str, torch.Tensor]:
    return seeded_state_dict(manifest["state_dict"], random_fir_kernels=True)


@pytest.fixture(scope="module")
def weights_file(seeded_weights: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bisenet") / "79999_iter.pth"
    torch.save(seeded_weights, path)
    return path


@pytest.fixture(scope="module")
def parser(weights_file: Path) -> BiSeNet:
    return load_parser(weights_file, device="cpu")


@pytest.fixture(scope="module")
def fixture_input(bisenet_dir: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(bisenet_dir / "bisenet_input_00016.npy"))


@pytest.fixture(scope="module")
def fixture_logits(bisenet_dir: Path) -> np.ndarray:
    return np.load(bisenet_dir / "bisenet_logits_seed20210830_00016.npy")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    if not PHOTO.is_file():
        pytest.skip(f"reference photo not found at {PHOTO}")
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def _clear_label_mask(logits: np.ndarray) -> np.ndarray:
    """(1, C, H, W) logits -> (H, W) bool: pixels whose top-1/top-2 gap is at least LABEL_GAP."""
    top2 = np.sort(logits[0], axis=0)[-2:]
    return (top2[1] - top2[0]) >= LABEL_GAP


# --- Architecture and loading ----------------------------------------------------------------------------------------
def test_state_dict_layout_is_exactly_the_checkpoint(manifest: dict) -> None:
    ours = [(key, list(value.shape)) for key, value in BiSeNet().state_dict().items()]
    theirs = [(key, list(shape)) for key, shape in manifest["state_dict"]]
    assert len(theirs) == 191
    assert ours == theirs


def test_load_parser_returns_frozen_eval_model(parser: BiSeNet) -> None:
    assert not parser.training
    assert all(not module.training for module in parser.modules())
    assert all(not p.requires_grad for p in parser.parameters())
    assert {p.device.type for p in parser.parameters()} == {"cpu"}


def test_logits_match_reference_fixture(
    parser: BiSeNet, fixture_input: torch.Tensor, fixture_logits: np.ndarray, bisenet_dir: Path
) -> None:
    with torch.inference_mode():
        logits = parser(fixture_input).numpy()
    assert logits.shape == (1, NUM_CLASSES, 512, 512)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, fixture_logits, atol=ATOL, rtol=RTOL)

    reference_labels = np.load(bisenet_dir / "bisenet_labels_seed20210830_00016.npy")[0]
    clear = _clear_label_mask(fixture_logits)
    assert clear.mean() > 0.99  # the comparison below covers nearly every pixel
    np.testing.assert_array_equal(logits[0].argmax(axis=0)[clear], reference_labels[clear])


def test_backbone_features_match_debug_fixture(
    parser: BiSeNet, fixture_input: torch.Tensor, bisenet_dir: Path
) -> None:
    expected = np.load(bisenet_dir / "bisenet_debug_feats_seed20210830_00016.npz")
    with torch.inference_mode():
        feats = parser.backbone_features(fixture_input)
    for name, feat in zip(("feat8", "feat16", "feat32"), feats, strict=True):
        assert feat.shape == expected[name].shape, name
        np.testing.assert_allclose(feat.numpy(), expected[name], atol=ATOL, rtol=RTOL, err_msg=name)


def test_wrapped_and_prefixed_state_dicts_load_the_same_weights(
    seeded_weights: dict[str, torch.Tensor], parser: BiSeNet, tmp_path: Path
) -> None:
    reference = parser.state_dict()
    variants = {
        "wrapped.pth": {"state_dict": seeded_weights},
        "prefixed.pth": {"module." + key: value for key, value in seeded_weights.items()},
    }
    for name, content in variants.items():
        torch.save(content, tmp_path / name)
        loaded = load_parser(tmp_path / name).state_dict()
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[key], reference[key]) for key in reference), name


def test_missing_batch_counters_are_tolerated(seeded_weights: dict[str, torch.Tensor], parser: BiSeNet) -> None:
    without = {key: value for key, value in seeded_weights.items() if not key.endswith("num_batches_tracked")}
    assert len(without) == 191 - 31
    model = parser_from_state_dict(without, source="no-counters")
    reference = parser.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.state_dict().items())
    assert not any(key.endswith("num_batches_tracked") for key in without)  # the caller's dict was not modified


@pytest.mark.parametrize(
    ("edit", "named_key"),
    [
        ("drop", "ffm.conv1.weight"),
        ("extra", "cp.spatial.weight"),
        ("reshape", "conv_out.conv_out.weight"),
    ],
)
def test_strict_loading_errors_name_the_key(
    seeded_weights: dict[str, torch.Tensor], edit: str, named_key: str
) -> None:
    state = dict(seeded_weights)
    if edit == "drop":
        del state[named_key]
    elif edit == "extra":
        state[named_key] = torch.zeros(3)
    else:
        state[named_key] = torch.zeros(18, 256, 1, 1)
    with pytest.raises(CheckpointFormatError, match=named_key.replace(".", r"\.")) as info:
        parser_from_state_dict(state, source="edited.pth")
    assert "edited.pth" in str(info.value)


def test_truncated_file_raises_weights_error(weights_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "79999_iter.pth"
    truncated.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"79999_iter\.pth"):
        load_parser(truncated)


def test_missing_file_raises_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_parser(tmp_path / "absent.pth")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (torch.zeros(3), "not a state dict"),
        ({"cp.resnet.conv1.weight": torch.zeros(1), "epoch": 3}, "epoch"),
    ],
)
def test_non_state_dict_content_is_rejected(content: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError, match=message):
        load_parser(path)


# --- Preprocessing and inference -------------------------------------------------------------------------------------
def test_parser_input_reproduces_fixture_preprocessing(photo: np.ndarray, fixture_input: torch.Tensor) -> None:
    before = photo.copy()
    batch = parser_input(photo)
    assert batch.shape == (1, 3, 512, 512)
    assert batch.dtype == torch.float32
    np.testing.assert_array_equal(batch.numpy(), fixture_input.numpy())
    np.testing.assert_array_equal(photo, before)


def test_the_parser_runs_channels_last_end_to_end(parser: BiSeNet, photo: np.ndarray) -> None:
    """oneDNN's fast layout (issue 16): the input's strides are channels-last as PyTorch's layout choice reads them
    (a zero batch stride is not), so every layer and the logits stay channels-last (arg-max 8×, max-pool 15× faster).
    """
    batch = parser_input(photo)
    assert batch.stride() == (512 * 512 * 3, 1, 512 * 3, 3)
    with torch.inference_mode():
        stem = parser.cp.resnet.conv1(batch)
        logits = parser(batch)
        plain = parser(batch.contiguous())
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    assert logits.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(plain, logits, rtol=0, atol=1e-4)  # an NCHW input gives the same logits


def test_parse_labels_at_image_size_and_requested_size(
    parser: BiSeNet, photo: np.ndarray, fixture_logits: np.ndarray
) -> None:
    at_512 = parse_labels(parser, photo, device="cpu", output_size=(512, 512))
    assert at_512.shape == (512, 512)
    assert at_512.dtype == np.uint8
    clear = _clear_label_mask(fixture_logits)
    np.testing.assert_array_equal(at_512[clear], fixture_logits[0].argmax(axis=0)[clear])

    full = parse_labels(parser, photo, device="cpu")  # defaults to the 1024² photo size
    assert full.shape == photo.shape[:2]
    assert full.dtype == np.uint8
    np.testing.assert_array_equal(full, np.repeat(np.repeat(at_512, 2, axis=0), 2, axis=1))

    odd = parse_labels(parser, photo, device=torch.device("cpu"), output_size=(300, 200))
    assert odd.shape == (300, 200)
    assert odd.dtype == np.uint8
    assert set(np.unique(odd)) <= set(np.unique(at_512))


def test_parse_labels_accepts_small_non_square_images(parser: BiSeNet) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    labels = parse_labels(parser, image, device="cpu")
    assert labels.shape == (37, 53)
    assert labels.dtype == np.uint8
    assert labels.max() < NUM_CLASSES


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64, 3), dtype=np.float32),
        np.zeros((64, 64), dtype=np.uint8),
        np.zeros((64, 64, 4), dtype=np.uint8),
        np.zeros((0, 64, 3), dtype=np.uint8),
        [[0, 0, 0]],
    ],
    ids=["float", "gray", "rgba", "empty", "list"],
)
def test_bad_images_raise_input_image_error(parser: BiSeNet, image: object) -> None:
    with pytest.raises(InputImageError, match="image"):
        parser_input(image)  # type: ignore[arg-type]
    with pytest.raises(InputImageError, match="image"):
        parse_labels(parser, image, device="cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize("output_size", [(0, 10), (10,), (10.0, 10), "512", (True, 4), (-3, 5)])
def test_bad_output_size_raises(parser: BiSeNet, output_size: object) -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="output_size"):
        parse_labels(parser, image, device="cpu", output_size=output_size)  # type: ignore[arg-type]


def test_forward_rejects_wrong_batch_shape(parser: BiSeNet) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        parser(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        parser.backbone_features(torch.zeros(3, 64, 64))


# --- Label constants -------------------------------------------------------------------------------------------------
def test_label_constants_cover_all_classes() -> None:
    assert len(LABEL_NAMES) == NUM_CLASSES
    assert [getattr(parsing, name.upper()) for name in LABEL_NAMES] == list(range(NUM_CLASSES))
    assert (SKIN, NECK) == (1, 14)
    assert FACE_LABELS == (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)
