"""W+ optimisation on a tiny seeded generator: it reconstructs a known code's render better, repeatably."""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pytest
import torch

from pipeline.latent.inversion import (
    SYNC_EVERY,
    LossLog,
    MixedPrecision,
    OptimisationSettings,
    autocast_dtype,
    latent_noise_std,
    learning_rate_at,
    optimise_latent,
    w_spread,
)
from pipeline.networks.perceptual import VGGConfig, perceptual_distance
from pipeline.networks.pixels import downsample
from pipeline.networks.stylegan2 import MAPPING_LR_MUL, Generator, GeneratorConfig
from pipeline.weights.stand_in import random_vgg16_features, seeded_state_dict

FAST = 64  # render size for the tests of determinism and control flow (the loop is the same at any size)


def tiny_generator(seed: int = 7) -> Generator:
    """GeneratorConfig.tiny() with seeded weights; mapping weights stored at trained scale (÷ lr_mul), so W has a
    realistic spread (the raw recipe maps every z to almost the same w)."""
    generator = Generator(GeneratorConfig.tiny())
    layout = [(key, tuple(value.shape)) for key, value in generator.state_dict().items()]
    state = seeded_state_dict(layout, seed=seed)
    for key in state:
        if key.startswith("style.") and key.endswith(".weight"):
            state[key] = state[key] / MAPPING_LR_MUL
    generator.load_state_dict(state)
    generator = generator.eval().requires_grad_(False)
    with torch.no_grad():
        z = torch.randn(2048, 512, generator=torch.Generator().manual_seed(seed))
        generator.latent_avg.copy_(generator.mapping(z).mean(0))
    return generator


@pytest.fixture(scope="module")
def generator() -> Generator:
    return tiny_generator()


@pytest.fixture(scope="module")
def perceptual() -> partial:
    return partial(perceptual_distance, random_vgg16_features(VGGConfig.tiny(), seed=11))


@pytest.fixture(scope="module")
def known(generator: Generator) -> dict[str, torch.Tensor | np.ndarray]:
    """A known W+ code (mapped z plus per-layer variation), its 1024² render, and a perturbed starting code."""
    rng = torch.Generator().manual_seed(1)
    with torch.no_grad():
        w = generator.mapping(torch.randn(1, 512, generator=rng))
    code = w[:, None, :].expand(1, 18, 512) + 0.3 * torch.randn(1, 18, 512, generator=rng)
    with torch.no_grad():
        target = generator.synthesis(code)
    start = (code + 0.5 * torch.randn(1, 18, 512, generator=rng)).numpy()
    return {"code": code, "target": target, "start": start}


def reconstruction_errors(
    generator: Generator, perceptual: partial, code: np.ndarray, target: torch.Tensor
) -> tuple[float, float, float]:
    """Full-size MSE, MSE at the 256² loss resolution, and the perceptual distance at 256²."""
    with torch.no_grad():
        image = generator.synthesis(torch.from_numpy(code))
        small, target_small = downsample(image, 256), downsample(target, 256)
        return (
            float((image - target).square().mean()),
            float((small - target_small).square().mean()),
            float(perceptual(small, target_small)),
        )


def test_schedule_ramps_up_holds_and_ramps_down() -> None:
    settings = OptimisationSettings(learning_rate=0.02)
    total = 100
    rates = [learning_rate_at(step, total, settings) for step in range(total)]
    assert rates[0] == 0.0  # linear ramp-up from 0 over the first 5 %
    assert rates[2] == pytest.approx(0.02 * 2 / 5)
    assert rates[5:75] == pytest.approx([0.02] * 70)  # flat in the middle
    assert all(a > b for a, b in itertools.pairwise(rates[75:]))  # cosine ramp-down over the last 25 %
    assert rates[-1] == pytest.approx(0.02 * (0.5 - 0.5 * np.cos(np.pi * 0.04)))
    noise = [latent_noise_std(step, total, settings, w_spread=10.0) for step in range(total)]
    assert noise[0] == pytest.approx(10.0 * settings.noise_scale)
    assert noise[30] == pytest.approx(10.0 * settings.noise_scale * (1 - 0.3 / 0.75) ** 2)
    assert noise[75:] == [0.0] * 25


def test_w_spread_scales_with_the_mapping_output(generator: Generator) -> None:
    spread = w_spread(generator, samples=2000)
    assert spread > 1.0
    bigger = tiny_generator()
    last = bigger.style[-1]
    with torch.no_grad():  # leaky ReLU is positively homogeneous: doubling the last layer doubles every w
        for tensor in last.parameters():
            tensor.mul_(2.0)
    assert w_spread(bigger, samples=2000) == pytest.approx(2.0 * spread, rel=1e-4)


def test_optimisation_reconstructs_a_known_code_better(generator: Generator, perceptual: partial, known: dict) -> None:
    before = reconstruction_errors(generator, perceptual, known["start"], known["target"])
    result = optimise_latent(
        generator,
        known["target"],
        known["start"],
        perceptual=perceptual,
        settings=OptimisationSettings(steps=16, render_size=None),
        seed=0,
    )
    after = reconstruction_errors(generator, perceptual, result.w_plus, known["target"])
    full_mse, small_mse, distance = after
    assert full_mse < 0.6 * before[0], (before, after)
    assert small_mse < 0.6 * before[1], (before, after)
    assert distance < 0.9 * before[2], (before, after)
    losses = result.losses
    assert len(losses) == 16 and result.steps_run == 16 and not result.stopped_early
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4])
    assert losses[-1] < losses[0]
    # The returned image is the full-size render of the returned code.
    with torch.no_grad():
        expected = generator.synthesis(torch.from_numpy(result.w_plus))
    assert torch.equal(result.image, expected)
    assert result.w_plus.shape == (1, 18, 512) and result.w_plus.dtype == np.float32


def run_fast(generator: Generator, perceptual: partial, known: dict, **kwargs: object):
    options = {"steps": 8, "render_size": FAST, "loss_size": FAST, "noise_scale": 0.05}
    options |= kwargs.pop("options", {})
    return optimise_latent(
        generator,
        known["target"],
        known["start"],
        perceptual=perceptual,
        settings=OptimisationSettings(**options),
        **kwargs,
    )


def test_same_seed_same_result_other_seed_differs(generator: Generator, perceptual: partial, known: dict) -> None:
    first = run_fast(generator, perceptual, known, seed=5)
    again = run_fast(generator, perceptual, known, seed=5)
    other = run_fast(generator, perceptual, known, seed=6)
    assert np.array_equal(first.w_plus, again.w_plus)
    assert first.losses == again.losses
    assert not np.array_equal(first.w_plus, other.w_plus)
    assert first.losses[1:] != other.losses[1:]
    # Without latent noise nothing is random, so the seed does not matter.
    quiet = {"noise_scale": 0.0}
    assert np.array_equal(
        run_fast(generator, perceptual, known, seed=5, options=quiet).w_plus,
        run_fast(generator, perceptual, known, seed=6, options=quiet).w_plus,
    )


def test_progress_is_called_after_every_step(generator: Generator, perceptual: partial, known: dict) -> None:
    calls: list[tuple[int, int, float]] = []
    result = run_fast(generator, perceptual, known, seed=0, progress=lambda *args: calls.append(args))
    assert [(step, total) for step, total, _ in calls] == [(step, 8) for step in range(1, 9)]
    assert [loss for _, _, loss in calls] == result.losses


def test_should_stop_ends_early_with_a_valid_code(generator: Generator, perceptual: partial, known: dict) -> None:
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > 3

    start = known["start"].copy()
    result = run_fast(generator, perceptual, known, seed=0, should_stop=should_stop)
    assert result.stopped_early and result.steps_run == 3 and len(result.losses) == 3
    assert result.w_plus.shape == (1, 18, 512) and result.w_plus.dtype == np.float32
    assert np.isfinite(result.w_plus).all()
    assert not np.array_equal(result.w_plus, known["start"])  # steps 2 and 3 moved it (step 1 has lr 0)
    assert np.array_equal(known["start"], start)  # the caller's code is not modified
    assert result.image.shape == (1, 3, 1024, 1024)


def test_zero_steps_returns_the_start_and_its_render(generator: Generator, perceptual: partial, known: dict) -> None:
    result = run_fast(generator, perceptual, known, seed=0, options={"steps": 0})
    assert np.array_equal(result.w_plus, known["start"])
    assert result.losses == [] and not result.stopped_early
    with torch.no_grad():
        assert torch.equal(result.image, generator.synthesis(torch.from_numpy(known["start"])))


def test_autocast_dtype_by_device_and_choice() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None  # "auto" keeps fp32 on CPUs
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    assert autocast_dtype(cpu, "fp16") == torch.float16
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype(cpu, "int8")  # type: ignore[arg-type]


def test_loss_log_reads_the_device_only_every_few_steps() -> None:
    """On an accelerator the losses are copied (and progress reported) every SYNC_EVERY steps and after the last
    step; on the CPU after every step. Nothing is lost either way. (Only the device type matters here.)"""
    total = 2 * SYNC_EVERY + 3
    for device, expected_steps in (
        (torch.device("cuda"), [SYNC_EVERY, 2 * SYNC_EVERY, total]),
        (torch.device("cpu"), list(range(1, total + 1))),
    ):
        calls: list[tuple[int, int, float]] = []
        log = LossLog(device, total, lambda *args, calls=calls: calls.append(args))
        for step in range(1, total + 1):
            log.add(step, torch.tensor(float(step)))
        log.flush(total)  # a second flush with nothing pending reports nothing
        assert [step for step, _, _ in calls] == expected_steps
        assert all(loss == float(step) and count == total for step, count, loss in calls)
        assert log.values == [float(step) for step in range(1, total + 1)]


def test_stopping_early_flushes_the_pending_losses(generator: Generator, perceptual: partial, known: dict) -> None:
    log = LossLog(torch.device("cuda"), 8, None)
    for step in (1, 2, 3):
        log.add(step, torch.tensor(0.5 * step))
    assert log.values == []
    log.flush(3)
    assert log.values == [0.5, 1.0, 1.5]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_stays_close_to_fp32(
    generator: Generator, perceptual: partial, known: dict, precision: str
) -> None:
    """Autocast (bf16; fp16 with the on-device loss scaler and fused Adam) follows the fp32 optimisation: same loss
    curve within 2 %, same code within 10 % of how far the code moved. Run on the CPU, where torch autocasts too."""
    quiet = {"noise_scale": 0.0, "steps": 6}
    reference = run_fast(generator, perceptual, known, options=quiet | {"precision": "fp32"})
    mixed = run_fast(generator, perceptual, known, options=quiet | {"precision": precision})
    assert mixed.steps_run == 6 and np.isfinite(mixed.w_plus).all()
    assert mixed.losses == pytest.approx(reference.losses, rel=0.02)
    moved = np.linalg.norm(reference.w_plus - known["start"])
    assert moved > 0
    assert np.linalg.norm(mixed.w_plus - reference.w_plus) < 0.1 * moved
    assert mixed.image.dtype == torch.float32  # the final render is always fp32


def test_fp16_scaler_skips_an_overflowing_step_on_the_device() -> None:
    """An inf gradient must not reach the code: the step is skipped and the scale halves."""
    precision = MixedPrecision(torch.device("cpu"), "fp16")
    code = torch.ones(3, requires_grad=True)
    optimiser = precision.adam(code, 0.1)
    scale = precision.scaler.get_scale()
    precision.step((code * torch.tensor([1.0, float("inf"), 1.0])).sum(), optimiser)
    assert torch.equal(code.detach(), torch.ones(3))
    assert precision.scaler.get_scale() == scale / 2
    precision.step((code * 2.0).sum(), optimiser)
    assert torch.all(code.detach() < 1.0)  # a finite step goes through
