"""Diffuse refinement with the tiny stand-in generator: the masked loss, the optimisation, and the composite."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.networks.perceptual import DIFFUSE_FEATURE_TAP, FEATURE_LOSS_SIZE, VGGConfig, feature_mse
from pipeline.networks.pixels import downsample, to_model_range, to_uint8
from pipeline.networks.stylegan2 import Generator, ModulatedConv2d, generator_from_checkpoint
from pipeline.refinement.compositing import FEATHER_DIFFUSE, composite, feather_mask
from pipeline.refinement.diffuse import CPU_DIFFUSE, DiffuseSettings, diffuse_objective, diffuse_refine
from pipeline.weights.stand_in import random_vgg16_features, stand_in_e4e_checkpoint

SIZE = 1024
FAST = 256  # the CPU optimisation size used by the remover


@pytest.fixture(scope="module")
def generator() -> Generator:
    return generator_from_checkpoint(stand_in_e4e_checkpoint(), source="stand-in", device=torch.device("cpu"))


@pytest.fixture(scope="module")
def feature_distance():
    vgg = random_vgg16_features(VGGConfig.tiny(), seed=5)

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return feature_mse(
            vgg(downsample(a, FEATURE_LOSS_SIZE), last_tap=DIFFUSE_FEATURE_TAP),
            vgg(downsample(b, FEATURE_LOSS_SIZE), last_tap=DIFFUSE_FEATURE_TAP),
        )

    return distance


@pytest.fixture(scope="module")
def scene(generator: Generator) -> dict[str, np.ndarray]:
    """An 'original' code and render, an edit of its coarse layers, the hard neck region and the target."""
    rng = torch.Generator().manual_seed(3)
    original_code = generator.latent_avg.expand(1, 18, 512) + 0.5 * torch.randn(1, 18, 512, generator=rng)
    edited_code = original_code.clone()
    edited_code[:, :7] += 1.5 * torch.randn(1, 7, 512, generator=rng)  # layers 0–6 change, as the diffuse mixing
    with torch.no_grad():
        original = to_uint8(generator.synthesis(original_code))
        edited = to_uint8(generator.synthesis(edited_code))
    region = np.zeros((SIZE, SIZE), dtype=bool)
    region[640:900, 380:660] = True  # a "neck" below the middle of the crop
    blend = feather_mask(region, dilate_px=FEATHER_DIFFUSE.dilate_px, blur_px=FEATHER_DIFFUSE.blur_px)
    return {
        "code": original_code.numpy(),
        "original": original,
        "target": composite(original, edited, region.astype(np.float32)),
        "blend": blend,
        "outside": 1.0 - blend,
    }


def test_to_model_range() -> None:
    image = np.array([[[0, 255, 127]]], dtype=np.uint8)
    tensor = to_model_range(image, torch.device("cpu"))
    assert tensor.shape == (1, 3, 1, 1) and tensor.dtype == torch.float32
    assert tensor.flatten().tolist() == pytest.approx([-1.0, 1.0, 127 / 127.5 - 1.0])


def test_loss_decreases(generator: Generator, feature_distance, scene: dict) -> None:
    result = diffuse_refine(
        generator,
        feature_distance,
        scene["target"],
        scene["outside"],
        scene["code"],
        settings=DiffuseSettings(steps=12, optimise_size=FAST),
    )
    assert len(result.losses) == 12 and result.steps_run == 12 and not result.stopped_early
    assert result.losses[-1] < result.losses[0]
    assert np.mean(result.losses[-3:]) < 0.5 * np.mean(result.losses[:3])
    assert result.w_plus.shape == (1, 18, 512) and result.w_plus.dtype == np.float32
    assert not np.array_equal(result.w_plus, scene["code"])
    assert result.render.shape == (1, 3, SIZE, SIZE)  # the final render is full size whatever the optimise size

    # The composite (as the remover does it) leaves every pixel outside the feathered mask untouched.
    output = composite(scene["original"], to_uint8(result.render), scene["blend"])
    outside = scene["blend"] == 0
    assert np.array_equal(output[outside], scene["original"][outside])
    assert not np.array_equal(output[~outside], scene["original"][~outside])


def test_first_loss_is_the_masked_pixel_mean(generator: Generator, feature_distance, scene: dict) -> None:
    """Official L_pix: mean over all pixels of ((T − x)·m)², not normalised by the mask area."""
    result = diffuse_refine(
        generator,
        feature_distance,
        scene["target"],
        scene["outside"],
        scene["code"],
        settings=DiffuseSettings(steps=1, optimise_size=SIZE, feature_weight=0.0),
    )
    with torch.no_grad():
        render = generator.synthesis(torch.from_numpy(scene["code"])).double()
    target = torch.from_numpy(scene["target"]).permute(2, 0, 1)[None].double() / 127.5 - 1.0
    weight = torch.from_numpy(scene["outside"]).double()
    expected = float((((target - render) * weight) ** 2).mean())
    assert result.losses[0] == pytest.approx(expected, rel=1e-4)


def test_masked_out_everywhere_means_no_change(generator: Generator, feature_distance, scene: dict) -> None:
    """With no pixel weight and no feature term there is no gradient, so the code stays put."""
    result = diffuse_refine(
        generator,
        feature_distance,
        scene["target"],
        np.zeros((SIZE, SIZE), dtype=np.float32),
        scene["code"],
        settings=DiffuseSettings(steps=3, optimise_size=64, feature_weight=0.0),
    )
    assert result.losses == [0.0, 0.0, 0.0]
    assert np.array_equal(result.w_plus, scene["code"])


@pytest.mark.parametrize("size", [64, 256, 1024])
def test_render_sizes(generator: Generator, feature_distance, scene: dict, size: int) -> None:
    result = diffuse_refine(
        generator,
        feature_distance,
        scene["target"],
        scene["outside"],
        scene["code"],
        settings=DiffuseSettings(steps=2, optimise_size=size),
    )
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert result.render.shape == (1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(result.render, generator.synthesis(torch.from_numpy(result.w_plus)))


def test_render_size_must_be_a_power_of_two(generator: Generator, feature_distance, scene: dict) -> None:
    with pytest.raises(ValueError, match="power of two"):
        diffuse_refine(
            generator,
            feature_distance,
            scene["target"],
            scene["outside"],
            scene["code"],
            settings=DiffuseSettings(steps=1, optimise_size=300),
        )


def test_progress_and_stop(generator: Generator, feature_distance, scene: dict) -> None:
    calls: list[tuple[int, int, float]] = []
    code = scene["code"].copy()
    result = diffuse_refine(
        generator,
        feature_distance,
        scene["target"],
        scene["outside"],
        code,
        settings=DiffuseSettings(steps=10, optimise_size=64),
        progress=lambda *args: calls.append(args),
        should_stop=lambda: len(calls) >= 2,
    )
    assert result.stopped_early and result.steps_run == 2
    assert [(step, total) for step, total, _ in calls] == [(1, 10), (2, 10)]
    assert [loss for _, _, loss in calls] == result.losses
    assert np.array_equal(code, scene["code"])  # the caller's code is not modified
    assert np.isfinite(result.w_plus).all()


def test_bf16_autocast_stays_within_tolerance_of_fp32(generator: Generator, feature_distance, scene: dict) -> None:
    """The GPU path's reduced precision, checked on the CPU (torch autocasts to bf16 there too): the loss curve
    within 1 % and the code within 10 % of how far fp32 moved it; the final render is fp32 either way."""
    runs = {
        precision: diffuse_refine(
            generator,
            feature_distance,
            scene["target"],
            scene["outside"],
            scene["code"],
            settings=DiffuseSettings(steps=6, optimise_size=FAST, precision=precision),
        )
        for precision in ("fp32", "bf16")
    }
    reference, mixed = runs["fp32"], runs["bf16"]
    assert mixed.losses == pytest.approx(reference.losses, rel=0.01)
    moved = np.linalg.norm(reference.w_plus - scene["code"])
    assert moved > 0
    assert np.linalg.norm(mixed.w_plus - reference.w_plus) < 0.1 * moved
    assert mixed.render.dtype == torch.float32


def test_unknown_precision_is_rejected(generator: Generator, feature_distance, scene: dict) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        diffuse_refine(
            generator,
            feature_distance,
            scene["target"],
            scene["outside"],
            scene["code"],
            settings=DiffuseSettings(steps=1, optimise_size=64, precision="fp8"),  # type: ignore[arg-type]
        )


def test_cpu_recipe_is_cheaper_with_the_same_step_budget() -> None:
    official = DiffuseSettings()
    assert CPU_DIFFUSE.optimise_size < official.optimise_size
    assert CPU_DIFFUSE.feature_size < official.feature_size
    assert CPU_DIFFUSE.steps < official.steps
    # fewer, larger steps: the summed learning rate (how far Adam can move the code) stays the official one
    assert CPU_DIFFUSE.steps * CPU_DIFFUSE.learning_rate == pytest.approx(official.steps * official.learning_rate)
    assert CPU_DIFFUSE.precision == "fp32"


def test_objective_is_the_official_loss(generator: Generator, feature_distance, scene: dict) -> None:
    """``diffuse_objective(w)`` = masked pixel mean at the optimisation size + λ·feature distance, as written out."""
    settings = dataclasses.replace(CPU_DIFFUSE, feature_size=FEATURE_LOSS_SIZE)
    loss_of = diffuse_objective(generator, feature_distance, scene["target"], scene["outside"], settings)
    code = torch.from_numpy(scene["code"])
    with torch.no_grad():
        render = generator.synthesis(code, resolution=settings.optimise_size)
        target = downsample(to_model_range(scene["target"], torch.device("cpu")), settings.optimise_size)
        weight = downsample(torch.from_numpy(scene["outside"])[None, None], settings.optimise_size)
        pixel = ((target - render) * weight).square().mean()
        feature = feature_distance(render, to_model_range(scene["target"], torch.device("cpu")))
        assert float(loss_of(code)) == pytest.approx(float(pixel + settings.feature_weight * feature), rel=1e-5)


def test_layer_formulation_does_not_change_the_refinement(generator: Generator, feature_distance, scene: dict) -> None:
    """Scaling each layer's input instead of folding the style into its weight (chosen per layer for CPU speed,
    pipeline.networks.stylegan2.SCALE_INPUT_MIN_WORK) is the same computation: the CPU recipe's loss curve agrees to
    fp32 rounding (measured ≤ 4e-5 relative) and so does the final code, up to Adam's normalisation, which turns the
    rounding of near-zero gradient components into steps of up to the learning rate (measured: 4.5e-4 at most, the
    code moving 0.2; in norm 3e-4 of the move)."""
    layers = [m for m in generator.modules() if isinstance(m, ModulatedConv2d)]
    chosen = [m.scale_input_under_grad for m in layers]
    settings = dataclasses.replace(CPU_DIFFUSE, steps=10, feature_size=FEATURE_LOSS_SIZE)
    results = []
    try:
        for scale_input in (False, True):
            for layer in layers:
                layer.scale_input_under_grad = scale_input
            results.append(
                diffuse_refine(
                    generator, feature_distance, scene["target"], scene["outside"], scene["code"], settings=settings
                )
            )
    finally:
        for layer, choice in zip(layers, chosen, strict=True):
            layer.scale_input_under_grad = choice
    folded, scaled = results
    np.testing.assert_allclose(scaled.losses, folded.losses, rtol=1e-4)
    moved = np.linalg.norm(folded.w_plus - scene["code"])
    assert moved > 0
    assert np.linalg.norm(scaled.w_plus - folded.w_plus) < 1e-3 * moved
