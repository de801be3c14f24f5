from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import pipeline.networks.perceptual as perceptual
from pipeline.errors import CheckpointFormatError, WeightsError
from pipeline.networks.perceptual import (
    CONV_INDICES,
    TAP_NAMES,
    VGG16Features,
    VGGConfig,
    feature_mse,
    load_vgg16_features,
    lpips_like_distance,
    perceptual_distance,
)
from pipeline.weights.stand_in import random_vgg16_features, save_vgg16_features

# the real file's classifier keys, with tiny shapes and deliberately odd dtypes: they must never be read
CLASSIFIER_KEYS = {
    "pre_logits.fc1.weight": torch.zeros(7, 3, 2, 2, dtype=torch.int8),
    "pre_logits.fc1.bias": torch.zeros(7, dtype=torch.int16),
    "pre_logits.fc2.weight": torch.zeros(5, 7, dtype=torch.uint8),
    "pre_logits.fc2.bias": torch.zeros(5, dtype=torch.bool),
    "head.fc.weight": torch.zeros(10, 5, dtype=torch.float16),
    "head.fc.bias": torch.zeros(3, dtype=torch.int64),  # mis-shaped on purpose
}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "model.safetensors"
    save_vgg16_features(random_vgg16_features(VGGConfig.tiny()), path, extra_tensors=CLASSIFIER_KEYS)
    return path


@pytest.fixture(scope="module")
def vgg(stand_in: Path) -> VGG16Features:
    return load_vgg16_features(stand_in)


def images(seed: int, size: int = 64, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen) * 2 - 1


def test_stand_in_file_has_the_real_key_layout(stand_in: Path) -> None:
    keys = set(load_file(stand_in).keys())
    expected = {f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")} | set(CLASSIFIER_KEYS)
    assert keys == expected
    assert len(expected) == 26 + 6


def test_loaded_module_is_frozen_and_matches_the_file(stand_in: Path, vgg: VGG16Features) -> None:
    assert not vgg.training
    assert all(not p.requires_grad for p in vgg.parameters())
    assert vgg.config == VGGConfig.tiny()
    tensors = load_file(stand_in)
    for key, value in vgg.state_dict().items():
        torch.testing.assert_close(value, tensors[key], rtol=0, atol=0)
    assert set(vgg.state_dict()) == {k for k in tensors if k.startswith("features.")}


def test_tap_shapes_for_a_256_input(vgg: VGG16Features) -> None:
    widths = VGGConfig.tiny().widths
    feats = vgg(images(0, size=256, batch=1))
    assert len(feats) == len(TAP_NAMES)
    expected = [(1, widths[1], 256, 256), (1, widths[3], 128, 128), (1, widths[6], 64, 64)]
    expected += [(1, widths[9], 32, 32), (1, widths[12], 16, 16)]
    assert [tuple(f.shape) for f in feats] == expected
    assert all((f >= 0).all() for f in feats)  # ReLU outputs
    relu4_3 = vgg(images(0, size=256, batch=1), last_tap="relu4_3")
    assert len(relu4_3) == 4
    torch.testing.assert_close(relu4_3[3], feats[3], rtol=0, atol=0)


def test_full_size_widths_give_512_channels_at_relu4_3() -> None:
    feats = VGG16Features()(torch.zeros(1, 3, 32, 32), last_tap="relu4_3")
    assert tuple(feats[-1].shape) == (1, 512, 4, 4)


def test_imagenet_normalisation_of_minus_one_to_one_input() -> None:
    module = VGG16Features(VGGConfig.tiny())
    first = module.features[0]
    seen = {}
    first.register_forward_hook(lambda _m, inputs, _out: seen.update(x=inputs[0]))
    module(torch.full((1, 3, 4, 4), -1.0), last_tap="relu1_2")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen["x"], ((torch.zeros(1, 3, 4, 4) - mean) / std))
    module(torch.ones(1, 3, 4, 4), last_tap="relu1_2")
    torch.testing.assert_close(seen["x"], ((torch.ones(1, 3, 4, 4) - mean) / std))


def test_distance_is_zero_for_identical_and_positive_otherwise(vgg: VGG16Features) -> None:
    a, b = images(1), images(2)
    fa, fb = vgg(a), vgg(b)
    same = lpips_like_distance(fa, vgg(a.clone()))
    assert same.shape == (2,)
    torch.testing.assert_close(same, torch.zeros(2))
    different = lpips_like_distance(fa, fb)
    assert (different > 0).all()
    assert (different <= 4 * len(TAP_NAMES)).all()  # each tap compares unit vectors: at most 4
    torch.testing.assert_close(different, lpips_like_distance(fb, fa))  # symmetric
    assert feature_mse(fa, fa) == 0
    assert feature_mse(fa, fb) > 0
    torch.testing.assert_close(feature_mse(fa, fb), ((fa[3] - fb[3]) ** 2).mean())
    torch.testing.assert_close(feature_mse(fa, fb, tap="relu1_2"), ((fa[0] - fb[0]) ** 2).mean())


def test_distance_is_a_per_image_sum_over_taps() -> None:
    a = [torch.tensor([[[[3.0]], [[4.0]]]]), torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])]
    b = [torch.tensor([[[[4.0]], [[3.0]]]]), torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]]]])]
    # tap 1: unit vectors (0.6, 0.8) vs (0.8, 0.6) → 0.08; tap 2: (1, 0) vs (0, 1) at one of two positions → 2 / 2
    torch.testing.assert_close(lpips_like_distance(a, b), torch.tensor([0.08 + 1.0]))


def test_gradient_flows_to_the_input(vgg: VGG16Features) -> None:
    x = images(3, batch=1).requires_grad_(True)
    target = images(4, batch=1)
    with torch.enable_grad():
        loss = perceptual_distance(vgg, x, target) + feature_mse(vgg(x), vgg(target))
        loss.backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_all_zero_features_have_finite_gradients() -> None:
    a = torch.zeros(1, 3, 2, 2, requires_grad=True)
    lpips_like_distance([a], [torch.ones(1, 3, 2, 2)]).sum().backward()
    assert a.grad is not None
    assert torch.isfinite(a.grad).all()


def test_perceptual_distance_works_as_a_two_image_callable(vgg: VGG16Features) -> None:
    distance = functools.partial(perceptual_distance, vgg)
    a, b = images(5), images(6)
    value = distance(a, b)
    assert value.ndim == 0
    torch.testing.assert_close(value, lpips_like_distance(vgg(a), vgg(b)).mean())


def test_bad_arguments_are_rejected(vgg: VGG16Features) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        vgg(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="last_tap must be one of"):
        vgg(torch.zeros(1, 3, 16, 16), last_tap="conv4_3")
    feats = vgg(torch.zeros(1, 3, 16, 16), last_tap="relu2_2")
    with pytest.raises(ValueError, match="stop before relu4_3"):
        feature_mse(feats, feats)
    with pytest.raises(ValueError, match="equally long"):
        lpips_like_distance(feats, feats[:1])


def test_classifier_keys_are_never_read(stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []

    class SpyHandle:
        def __init__(self, handle: object) -> None:
            self._handle = handle

        def __enter__(self) -> SpyHandle:
            self._handle.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.__exit__(*exc)

        def keys(self) -> list[str]:
            return self._handle.keys()

        def get_tensor(self, key: str) -> torch.Tensor:
            read.append(key)
            return self._handle.get_tensor(key)

    monkeypatch.setattr(perceptual, "safe_open", lambda *a, **k: SpyHandle(safe_open(*a, **k)))
    load_vgg16_features(stand_in)
    assert len(read) == 26
    assert all(key.startswith("features.") for key in read)


def write_state(path: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture
def tiny_state() -> dict[str, torch.Tensor]:
    return dict(random_vgg16_features(VGGConfig.tiny()).state_dict())


def test_missing_feature_key_is_named(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    del tiny_state["features.21.bias"]
    path = write_state(tmp_path / "vgg.safetensors", tiny_state)
    with pytest.raises(CheckpointFormatError, match=r"missing VGG16 feature keys: features\.21\.bias"):
        load_vgg16_features(path)


def test_mis_shaped_feature_key_is_named(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    tiny_state["features.10.weight"] = torch.zeros(8, 5, 3, 3)  # conv3_1 must take conv2_2's 6 channels
    path = write_state(tmp_path / "vgg.safetensors", tiny_state)
    with pytest.raises(CheckpointFormatError, match=r"features\.10\.weight has shape \(8, 5, 3, 3\)"):
        load_vgg16_features(path)
    tiny_state["features.10.weight"] = torch.zeros(8, 6, 3, 3)
    tiny_state["features.10.bias"] = torch.zeros(9)
    path = write_state(tmp_path / "vgg.safetensors", tiny_state)
    with pytest.raises(CheckpointFormatError, match=r"features\.10\.bias has shape \(9,\); expected \(8,\)"):
        load_vgg16_features(path)


def test_integer_feature_weights_are_rejected(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    tiny_state["features.0.bias"] = torch.zeros(4, dtype=torch.int32)
    path = write_state(tmp_path / "vgg.safetensors", tiny_state)
    with pytest.raises(CheckpointFormatError, match=r"features\.0\.bias has dtype torch\.int32"):
        load_vgg16_features(path)


def test_batch_norm_layout_is_rejected(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    tiny_state["features.1.weight"] = torch.ones(4)
    path = write_state(tmp_path / "vgg.safetensors", tiny_state)
    with pytest.raises(CheckpointFormatError, match=r"features\.1\.weight"):
        load_vgg16_features(path)


def test_expected_config_is_enforced(stand_in: Path) -> None:
    with pytest.raises(CheckpointFormatError, match="conv widths"):
        load_vgg16_features(stand_in, config=VGGConfig())
    assert load_vgg16_features(stand_in, config=VGGConfig.tiny()).config == VGGConfig.tiny()


def test_half_precision_file_loads_as_float32(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    path = write_state(tmp_path / "vgg.safetensors", {k: v.half() for k, v in tiny_state.items()})
    module = load_vgg16_features(path)
    assert all(p.dtype == torch.float32 for p in module.parameters())


def test_unreadable_files_are_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_vgg16_features(tmp_path / "absent.safetensors")
    pickled = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, pickled)
    with pytest.raises(WeightsError, match=r"vgg16\.pth could not be read as safetensors"):
        load_vgg16_features(pickled)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="could not be read as safetensors"):
        load_vgg16_features(text)


def test_random_stand_in_is_seeded() -> None:
    a = random_vgg16_features(VGGConfig.tiny(), seed=1).state_dict()
    b = random_vgg16_features(VGGConfig.tiny(), seed=1).state_dict()
    c = random_vgg16_features(VGGConfig.tiny(), seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_save_refuses_to_overwrite_features_with_extras(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would overwrite"):
        save_vgg16_features(
            random_vgg16_features(), tmp_path / "x.safetensors", extra_tensors={"features.0.bias": torch.zeros(4)}
        )


def test_channels_last_layout_gives_the_same_features(stand_in: Path) -> None:
    """The module keeps its conv weights channels-last (also after loading a file); the features equal those of a
    plain contiguous copy."""
    module = load_vgg16_features(stand_in)
    conv = module.features[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = VGG16Features(module.config)
    plain.features.to(memory_format=torch.contiguous_format)
    plain.load_state_dict(module.state_dict())
    assert plain.features[0].weight.is_contiguous()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        for ours, reference in zip(module(images), plain(images), strict=True):
            assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-6)
