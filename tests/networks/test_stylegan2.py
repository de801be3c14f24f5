from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import CheckpointFormatError, WeightsError
from pipeline.networks.stylegan2 import (
    LRELU_GAIN,
    Generator,
    GeneratorConfig,
    ModulatedConv2d,
    generator_from_checkpoint,
    generator_from_state_dict,
    load_generator,
    state_dict_layout,
)
from pipeline.weights.stand_in import seeded_state_dict
from tests.conftest import REFERENCE_DIR

PARITY_TOLERANCE = 1e-4  # fixture README: max|ours − ref| / std(ref) below 1e-4 (op order alone gives ~1e-6…1e-5)
SAME_MATH_TOLERANCE = 1e-5  # two formulations of the same computation in float32 (batched vs per-sample)
CODE_00016 = REFERENCE_DIR / "test" / "code" / "00016_wp.npy"
SMALL = GeneratorConfig(size=32, style_dim=16, n_mlp=2, channels=(8, 8, 6, 4))  # for fast behaviour checks


def normalised_error(ours: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(ours - ref).max() / ref.std())


def manifest_layout(fixtures_dir: Path, size: int) -> list:
    manifest = json.loads((fixtures_dir / "stylegan2" / f"rosinality_g{size}_manifest.json").read_text())
    return manifest["state_dict"]


def random_latent_avg(dim: int = 512) -> torch.Tensor:
    return torch.randn(dim, generator=torch.Generator().manual_seed(3))


def random_generator(config: GeneratorConfig, seed: int = 1) -> Generator:
    weights = seeded_state_dict(state_dict_layout(config), seed=seed)
    return generator_from_state_dict(weights, random_latent_avg(config.w_dim), source="test weights")


def save_rosinality_format(path: Path, state_dict: dict, latent_avg: torch.Tensor) -> Path:
    torch.save({"g_ema": state_dict, "latent_avg": latent_avg, "d": {"convs.0.0.weight": torch.zeros(2)}}, path)
    return path


def save_e4e_format(path: Path, state_dict: dict, latent_avg: torch.Tensor, num_ws: int) -> Path:
    merged = {
        "encoder.input_layer.0.weight": torch.zeros(64, 3, 3, 3),
        "encoder.input_layer.1.num_batches_tracked": torch.tensor(0),
        "encoder.styles.0.linear.weight": torch.zeros(512, 512),
    }
    merged.update({f"decoder.{key}": value for key, value in state_dict.items()})
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "start_from_latent_avg": True}
    torch.save({"state_dict": merged, "latent_avg": latent_avg.repeat(num_ws, 1), "opts": opts}, path)
    return path


def official_code(num_ws: int) -> torch.Tensor:
    return torch.from_numpy(np.load(CODE_00016)[:, :num_ws].astype(np.float32))


# --------------------------------------------------------------------------------------------- parity with fixtures


@pytest.fixture(scope="module")
def g256_weights(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    return seeded_state_dict(manifest_layout(fixtures_dir, 256), random_fir_kernels=False)


@pytest.fixture(scope="module")
def g256(g256_weights: dict, tmp_path_factory: pytest.TempPathFactory) -> Generator:
    path = tmp_path_factory.mktemp("g256") / "stylegan2-256.pt"
    return load_generator(save_rosinality_format(path, g256_weights, random_latent_avg()))


@pytest.mark.parametrize("size", [256, 1024])
def test_layout_matches_the_community_checkpoint(fixtures_dir: Path, size: int) -> None:
    config = GeneratorConfig.from_channel_multiplier(size, channel_multiplier=2)
    expected = [(key, tuple(shape)) for key, shape in manifest_layout(fixtures_dir, size)]
    assert state_dict_layout(config) == expected
    assert config.num_ws == {256: 14, 1024: 18}[size]


def test_ffhq_and_tiny_configs() -> None:
    ffhq = GeneratorConfig.ffhq()
    assert ffhq == GeneratorConfig.from_channel_multiplier(1024, channel_multiplier=2)
    assert (ffhq.num_ws, ffhq.w_dim, ffhq.resolution) == (18, 512, 1024)
    assert ffhq.channels == (512, 512, 512, 512, 512, 256, 128, 64, 32)
    tiny = GeneratorConfig.tiny()
    assert (tiny.num_ws, tiny.w_dim, tiny.resolution, tiny.n_mlp) == (18, 512, 1024, 8)
    assert max(tiny.channels) <= 16
    with pytest.raises(AttributeError):
        ffhq.size = 512  # frozen


def test_g256_matches_fixture(g256: Generator, fixtures_dir: Path) -> None:
    ref = np.load(fixtures_dir / "stylegan2" / "rosinality_g256_seed20210830_00016.npy")
    with torch.inference_mode():
        image = g256.synthesis(official_code(14))
    assert image.shape == (1, 3, 256, 256)
    assert image.dtype == torch.float32
    assert normalised_error(image[0], ref) < PARITY_TOLERANCE


def test_g256_mapping_matches_fixture(g256: Generator, fixtures_dir: Path) -> None:
    z = torch.from_numpy(np.load(fixtures_dir / "stylegan2" / "rosinality_g256_z_seed7.npy"))
    ref = np.load(fixtures_dir / "stylegan2" / "rosinality_g256_seed20210830_mapping_w_z7.npy")
    with torch.inference_mode():
        w = g256.mapping(z)
    assert w.shape == (4, 512)
    assert normalised_error(w, ref) < PARITY_TOLERANCE


def test_g256_e4e_layout_gives_the_same_generator(g256: Generator, g256_weights: dict, tmp_path: Path) -> None:
    path = save_e4e_format(tmp_path / "e4e.pt", g256_weights, random_latent_avg(), num_ws=14)
    from_e4e = load_generator(path)
    torch.testing.assert_close(from_e4e.latent_avg, random_latent_avg(), rtol=0, atol=0)
    wp = official_code(14)
    with torch.inference_mode():
        assert normalised_error(from_e4e.synthesis(wp), g256.synthesis(wp)) < SAME_MATH_TOLERANCE


@pytest.mark.slow
def test_g1024_matches_fixture_in_both_file_formats(fixtures_dir: Path, tmp_path: Path) -> None:
    weights = seeded_state_dict(manifest_layout(fixtures_dir, 1024), random_fir_kernels=False)
    real = load_generator(
        save_rosinality_format(tmp_path / "stylegan2-ffhq-config-f.pt", weights, random_latent_avg())
    )
    e4e = load_generator(save_e4e_format(tmp_path / "e4e_ffhq_encode.pt", weights, random_latent_avg(), num_ws=18))
    del weights
    assert real.config == GeneratorConfig.ffhq()
    assert e4e.config == GeneratorConfig.ffhq()
    fixtures = fixtures_dir / "stylegan2"
    ref_image = np.load(fixtures / "rosinality_g1024_seed20210830_00016.npy")
    z = torch.from_numpy(np.load(fixtures / "rosinality_g1024_z_seed7.npy"))
    ref_w = np.load(fixtures / "rosinality_g1024_seed20210830_mapping_w_z7.npy")
    wp = official_code(18)
    with torch.inference_mode():
        image = real.synthesis(wp)
        assert image.shape == (1, 3, 1024, 1024)
        assert normalised_error(image[0], ref_image) < PARITY_TOLERANCE
        assert normalised_error(real.mapping(z), ref_w) < PARITY_TOLERANCE
        assert normalised_error(e4e.synthesis(wp), image) < SAME_MATH_TOLERANCE
        assert normalised_error(e4e.mapping(z), ref_w) < PARITY_TOLERANCE
    torch.testing.assert_close(e4e.latent_avg, real.latent_avg, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ loading and errors


def test_loaded_generator_is_frozen_and_on_device(g256: Generator) -> None:
    assert not g256.training
    assert all(not p.requires_grad for p in g256.parameters())
    assert g256.latent_avg.shape == (512,)
    torch.testing.assert_close(g256.latent_avg, random_latent_avg(), rtol=0, atol=0)
    assert {p.device.type for p in g256.state_dict().values()} == {"cpu"}
    assert "latent_avg" not in g256.state_dict()  # stored next to the state dict, not in it


@pytest.fixture(scope="module")
def small_weights() -> dict[str, torch.Tensor]:
    return seeded_state_dict(state_dict_layout(SMALL))


@pytest.mark.parametrize("prefix_format", ["g_ema", "e4e"])
@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("missing", "convs.3.noise.weight"),
        ("extra", "convs.3.surplus"),
        ("shape", "to_rgbs.1.bias"),
        ("architecture", "style.1.weight"),
    ],
)
def test_strict_loading_names_the_offending_key(
    small_weights: dict, tmp_path: Path, prefix_format: str, edit: str, named: str
) -> None:
    weights = dict(small_weights)
    if edit in ("missing", "architecture"):
        del weights[named]
    elif edit == "extra":
        weights[named] = torch.zeros(3)
    else:
        weights[named] = torch.zeros(1, 4, 1, 1)
    if prefix_format == "g_ema":
        path = save_rosinality_format(tmp_path / "g.pt", weights, random_latent_avg(16))
    else:
        path = save_e4e_format(tmp_path / "e4e.pt", weights, random_latent_avg(16), num_ws=SMALL.num_ws)
    with pytest.raises(CheckpointFormatError) as info:
        load_generator(path)
    message = str(info.value)
    assert named in message
    assert str(path) in message
    if prefix_format == "e4e" and edit != "architecture":
        assert f"decoder.{named}" in message
    if edit == "shape":
        assert "(1, 4, 1, 1)" in message
        assert "(1, 3, 1, 1)" in message


def test_non_checkpoint_files_are_weights_errors(small_weights: dict, tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="could not be read"):
        load_generator(text)

    good = save_rosinality_format(tmp_path / "good.pt", small_weights, random_latent_avg(16))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_generator(truncated)

    with pytest.raises(WeightsError, match="does not exist"):
        load_generator(tmp_path / "absent.pt")


def test_wrong_top_level_keys_say_what_was_expected(small_weights: dict, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": small_weights, "epoch": 3}, path)
    with pytest.raises(WeightsError) as info:
        load_generator(path)
    message = str(info.value)
    for expected in ("'g_ema'", "'latent_avg'", "'state_dict'", "'epoch'", "'model'"):
        assert expected in message

    with pytest.raises(CheckpointFormatError, match="not a StyleGAN2 generator checkpoint"):
        generator_from_checkpoint([1, 2, 3], source="a list")  # type: ignore[arg-type]


def test_e4e_latent_avg_rows_must_agree(small_weights: dict) -> None:
    merged = {f"decoder.{key}": value for key, value in small_weights.items()}
    rows = torch.randn(SMALL.num_ws, SMALL.w_dim)  # not a repeated average
    with pytest.raises(CheckpointFormatError, match="rows of 'latent_avg'"):
        generator_from_checkpoint({"state_dict": merged, "latent_avg": rows}, source="e4e dict")
    no_decoder = {"state_dict": {"encoder.x": torch.zeros(1)}, "latent_avg": rows[0]}
    with pytest.raises(CheckpointFormatError, match="decoder"):
        generator_from_checkpoint(no_decoder, source="e4e dict")
    with pytest.raises(CheckpointFormatError, match="latent_avg has shape"):
        generator_from_checkpoint({"g_ema": small_weights, "latent_avg": torch.zeros(7)}, source="g dict")


def test_checkpoint_dict_is_not_modified(small_weights: dict) -> None:
    checkpoint = {"g_ema": dict(small_weights), "latent_avg": random_latent_avg(16)}
    before = {key: value.clone() for key, value in checkpoint["g_ema"].items()}
    generator = generator_from_checkpoint(checkpoint, source="dict")
    assert checkpoint["g_ema"].keys() == before.keys()
    assert all(torch.equal(checkpoint["g_ema"][key], before[key]) for key in before)
    assert generator.latent_avg.data_ptr() != checkpoint["latent_avg"].data_ptr()


# ------------------------------------------------------------------------------------------- configuration inference


@pytest.mark.parametrize(
    "config",
    [
        GeneratorConfig.tiny(),
        GeneratorConfig(size=1024, style_dim=512, n_mlp=8, channels=(16, 16, 12, 12, 8, 8, 8, 8, 8)),
        GeneratorConfig(size=64, style_dim=32, n_mlp=3, channels=(16, 12, 8, 8, 4)),
        GeneratorConfig(size=4, style_dim=8, n_mlp=1, channels=(4,)),
        SMALL,
    ],
    ids=["tiny", "1024-narrow", "64", "4", "small"],
)
def test_config_is_inferred_from_state_dict(config: GeneratorConfig) -> None:
    weights = seeded_state_dict(state_dict_layout(config))
    assert GeneratorConfig.from_state_dict(weights) == config
    generator = generator_from_state_dict(weights, random_latent_avg(config.w_dim), source="round trip")
    assert generator.config == config
    wp = torch.randn(1, config.num_ws, config.w_dim)
    with torch.inference_mode():
        image = generator.synthesis(wp)
    assert image.shape == (1, 3, config.size, config.size)
    assert torch.isfinite(image).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 48, "channels": (8, 8, 8, 8)},
        {"size": 2, "channels": ()},
        {"size": 32, "channels": (8, 8, 8)},
        {"size": 32, "channels": (8, 8, 0, 8)},
        {"size": 32, "n_mlp": 0, "channels": (8, 8, 8, 8)},
    ],
)
def test_config_rejects_impossible_architectures(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GeneratorConfig(**kwargs)


# ---------------------------------------------------------------------------------------------------- behaviour


@pytest.fixture(scope="module")
def tiny() -> Generator:
    return random_generator(GeneratorConfig.tiny())


def test_batch_equals_single_calls(tiny: Generator) -> None:
    wp = torch.randn(2, 18, 512, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        batched = tiny.synthesis(wp)
        single = torch.cat([tiny.synthesis(wp[:1]), tiny.synthesis(wp[1:])])
        assert normalised_error(batched, single) < SAME_MATH_TOLERANCE
        assert normalised_error(
            tiny.mapping(wp[:, 0]), torch.cat([tiny.mapping(wp[i : i + 1, 0]) for i in (0, 1)])
        ) < (SAME_MATH_TOLERANCE)
    assert normalised_error(batched[0], batched[1]) > 1e-2  # the two samples really differ


def test_gradient_flows_into_wp_only(tiny: Generator) -> None:
    wp = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    loss = tiny.synthesis(wp).square().mean()
    loss.backward()
    assert wp.grad is not None
    assert torch.isfinite(wp.grad).all()
    assert wp.grad.abs().sum(dim=2).min() > 0  # every W+ row influences the image
    assert all(p.grad is None for p in tiny.parameters())


def test_gradient_matches_finite_differences() -> None:
    config = GeneratorConfig(size=16, style_dim=4, n_mlp=1, channels=(3, 3, 2))
    generator = random_generator(config).double()
    probe = torch.randn(3, 16, 16, dtype=torch.float64)  # project the image to a few numbers: fewer backward passes

    def projected(codes: torch.Tensor) -> torch.Tensor:
        return (generator.synthesis(codes) * probe).sum(dim=(2, 3))

    for batch in (1, 2):
        wp = torch.randn(batch, config.num_ws, config.w_dim, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(projected, (wp,), fast_mode=True)


def test_noise_modes(tiny: Generator) -> None:
    wp = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        const_a, const_b = tiny.synthesis(wp), tiny.synthesis(wp, "const")
        rand_a = tiny.synthesis(wp, "random", generator=torch.Generator().manual_seed(1))
        rand_b = tiny.synthesis(wp, "random", generator=torch.Generator().manual_seed(1))
        rand_c = tiny.synthesis(wp, "random", generator=torch.Generator().manual_seed(2))
    assert torch.equal(const_a, const_b)
    assert torch.equal(rand_a, rand_b)
    assert normalised_error(rand_a, const_a) > 1e-3
    assert normalised_error(rand_a, rand_c) > 1e-3
    with pytest.raises(ValueError, match="noise_mode"):
        tiny.synthesis(wp, "none")  # type: ignore[arg-type]


def test_early_exit_resolution_equals_smaller_generator(tiny: Generator) -> None:
    small_config = GeneratorConfig(size=256, style_dim=512, n_mlp=8, channels=tiny.config.channels[:7])
    full_weights = tiny.state_dict()
    small_weights = {key: full_weights[key] for key, _ in state_dict_layout(small_config)}
    small = generator_from_state_dict(small_weights, tiny.latent_avg, source="first levels")
    wp = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        early = tiny.synthesis(wp, resolution=256)
        assert early.shape == (1, 3, 256, 256)
        torch.testing.assert_close(early, small.synthesis(wp[:, :14]), rtol=0, atol=0)
        with pytest.raises(ValueError, match="resolution"):
            tiny.synthesis(wp, resolution=300)


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (torch.zeros(1, 17, 512), r"shape \(N, 18, 512\)"),
        (torch.zeros(18, 512), r"shape \(N, 18, 512\)"),
        (torch.zeros(0, 18, 512), r"shape \(N, 18, 512\)"),
        (torch.zeros(1, 18, 512, dtype=torch.int64), "floating-point"),
        (np.zeros((1, 18, 512), np.float32), "torch.Tensor"),
    ],
)
def test_bad_wp_is_a_value_error(tiny: Generator, codes: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny.synthesis(codes)  # type: ignore[arg-type]


def test_mapping_validates_and_inputs_are_not_mutated(tiny: Generator) -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 512\)"):
        tiny.mapping(torch.zeros(2, 18, 512))
    z = torch.randn(3, 512, dtype=torch.float64)
    z_before = z.clone()
    wp = torch.randn(1, 18, 512)
    wp_before = wp.clone()
    with torch.inference_mode():
        w = tiny.mapping(z)
        tiny.synthesis(wp)
    assert w.dtype == torch.float32
    assert torch.equal(z, z_before)
    assert torch.equal(wp, wp_before)


def test_optimisation_path_equals_the_inference_path() -> None:
    """A code that needs a gradient makes the wide layers scale their input (no weight gradient in the backward)
    instead of folding the style into the weight; both formulations give the same image and the same gradient."""
    config = GeneratorConfig(size=32, style_dim=512, n_mlp=1, channels=(512, 512, 256, 16))
    generator = random_generator(config)
    convs = [m for m in generator.modules() if isinstance(m, ModulatedConv2d)]
    assert any(m.scale_input_under_grad for m in convs) and not all(m.scale_input_under_grad for m in convs)
    wp = torch.randn(1, config.num_ws, 512, generator=torch.Generator().manual_seed(9))
    probe = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(10))

    def image_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        codes = wp.clone().requires_grad_(True)
        image = generator.synthesis(codes)
        (image * probe).sum().backward()
        assert codes.grad is not None
        return image.detach(), codes.grad

    with torch.inference_mode():
        folded_image = generator.synthesis(wp)
    scaled_image, scaled_grad = image_and_gradient()
    for module in convs:  # force the folded formulation under autograd too
        module.scale_input_under_grad = False
    folded_under_grad, folded_grad = image_and_gradient()
    assert normalised_error(scaled_image, folded_image) < SAME_MATH_TOLERANCE
    assert normalised_error(folded_under_grad, folded_image) < SAME_MATH_TOLERANCE
    assert normalised_error(scaled_grad, folded_grad) < SAME_MATH_TOLERANCE


@pytest.mark.parametrize(("kernel", "upsample"), [(3, False), (3, True), (1, False)])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("batch", [1, 2])
def test_gain_scales_the_whole_output_in_every_formulation(
    kernel: int, upsample: bool, demodulate: bool, batch: int
) -> None:
    """``gain`` (the styled convolutions pass the leaky ReLU's √2) multiplies the result, bias included, whether the
    style is folded into the weight or the input is scaled, with or without a gradient; and every formulation is the
    plain modulated convolution (1×1 layers run as a matrix product)."""
    torch.manual_seed(11)
    layer = ModulatedConv2d(8, 6, kernel, 16, demodulate=demodulate, upsample=upsample).requires_grad_(False)
    x = torch.randn(batch, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    codes, bias = torch.randn(batch, 16), torch.randn(6)
    for scale_input in (False, True):
        layer.scale_input_under_grad = scale_input
        for needs_grad in (False, True):
            w = codes.clone().requires_grad_(needs_grad)
            plain, scaled = layer(x, w, bias), layer(x, w, bias, gain=LRELU_GAIN)
            assert scaled.shape == (batch, 6, 10 if upsample else 5, 10 if upsample else 5)
            assert normalised_error(scaled.detach(), LRELU_GAIN * plain.detach()) < SAME_MATH_TOLERANCE
            assert normalised_error(plain.detach(), reference_modulated_conv(layer, x, codes, bias)) < 1e-5


def reference_modulated_conv(
    layer: ModulatedConv2d, x: torch.Tensor, codes: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """The modulated convolution written out per sample in float64 (the port's formulation: modulated weight,
    demodulation, grouped convolution; transposed + FIR blur when up-sampling)."""
    outputs = []
    for sample in range(x.shape[0]):
        style = layer.modulation(codes[sample : sample + 1]).double()[0] * layer.scale
        weight = layer.weight[0].double() * style[None, :, None, None]
        if layer.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(1, 2, 3)) + 1e-8)[:, None, None, None]
        features = x[sample : sample + 1].double()
        if layer.upsample:
            out = torch.nn.functional.conv_transpose2d(features, weight.transpose(0, 1), stride=2)
            kernel = layer.blur.kernel.double().flip(0, 1).expand(out.shape[1], 1, 4, 4)
            out = torch.nn.functional.conv2d(out, kernel, padding=1, groups=out.shape[1])
        else:
            out = torch.nn.functional.conv2d(features, weight, padding=layer.padding)
        outputs.append(out + bias.double()[None, :, None, None])
    return torch.cat(outputs)


def test_demodulation_follows_changes_of_the_weight() -> None:
    """The demodulation's weight energy is computed once per weight, and again when the weight changes (in place or
    replaced); computed under inference mode it still serves a later backward pass."""
    torch.manual_seed(12)
    layer = ModulatedConv2d(4, 5, 3, 8).requires_grad_(False)
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1, 8)

    def fresh_result() -> torch.Tensor:
        twin = ModulatedConv2d(4, 5, 3, 8).requires_grad_(False)
        twin.load_state_dict(layer.state_dict())
        with torch.inference_mode():
            return twin(x, w)

    with torch.inference_mode():
        layer(x, w)
    codes = w.clone().requires_grad_(True)
    layer(x, codes).square().sum().backward()
    assert codes.grad is not None and torch.isfinite(codes.grad).all()
    with torch.no_grad():
        layer.weight[:, :, 0] *= 3.0  # one input channel: changes the demodulation (a global scale would not)
    with torch.inference_mode():
        assert normalised_error(layer(x, w), fresh_result()) < SAME_MATH_TOLERANCE
    layer.weight = torch.nn.Parameter(torch.randn(1, 5, 4, 3, 3), requires_grad=False)
    with torch.inference_mode():
        assert normalised_error(layer(x, w), fresh_result()) < SAME_MATH_TOLERANCE
    doubled = ModulatedConv2d(4, 5, 3, 8).requires_grad_(False)
    doubled.load_state_dict(layer.state_dict())
    with torch.inference_mode():
        single = doubled(x, w)
        assert normalised_error(doubled.double()(x.double(), w.double()), single) < SAME_MATH_TOLERANCE


@pytest.mark.parametrize("scale_input", [False, True])
def test_upsampling_layer_gradients_match_finite_differences(scale_input: bool) -> None:
    """Both formulations of the up-sampling layer (gain and bias folded in) give the exact gradient for features, code
    and bias."""
    torch.manual_seed(13)
    layer = ModulatedConv2d(3, 2, 3, 4, upsample=True).double().requires_grad_(False)
    layer.scale_input_under_grad = scale_input
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    inputs = (x.requires_grad_(True), torch.randn(1, 4, dtype=torch.float64, requires_grad=True))
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w, b: layer(f, w, b, gain=LRELU_GAIN), (*inputs, bias))
