"""Windowed synthesis: the window's pixels equal the full render's (normalised error < 1e-4, issue 16)."""

from __future__ import annotations

import pytest
import torch

from pipeline.networks import stylegan2
from pipeline.networks.stylegan2 import Generator, GeneratorConfig, Window
from tests.networks.test_stylegan2 import normalised_error, official_code, random_generator

WINDOW_TOLERANCE = 1e-4  # issue 16: max|window − full| / std(full) below 1e-4 (fp32 rounding gives ~1e-6)
NECK_WINDOW = Window(420, 200, 1024, 830)  # where the neck region and the jaw band of an FFHQ crop lie
WINDOWS = (
    NECK_WINDOW,
    Window(0, 0, 100, 1024),  # top border, full width
    Window(511, 3, 517, 1000),  # a thin strip, odd offsets
    Window(301, 299, 700, 701),  # interior only, odd sizes
    Window(900, 900, 1024, 1024),  # bottom-right corner
)


@pytest.fixture(scope="module")
def tiny() -> Generator:
    return random_generator(GeneratorConfig.tiny(), seed=5)


@pytest.fixture(scope="module")
def ffhq() -> Generator:
    return random_generator(GeneratorConfig.ffhq(), seed=6)


def crop(image: torch.Tensor, window: Window) -> torch.Tensor:
    return image[:, :, window.top : window.bottom, window.left : window.right]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_window_equals_the_full_render(tiny: Generator, window: Window) -> None:
    code = official_code(18)
    with torch.inference_mode():
        full = tiny.synthesis(code)
        part = tiny.synthesis_window(code, window)
    assert part.shape == (1, 3, window.height, window.width) and part.is_contiguous()
    assert normalised_error(part, crop(full, window)) < WINDOW_TOLERANCE


@pytest.mark.parametrize("full_resolution", [4, 32, 256])
def test_any_level_can_start_the_window(tiny: Generator, full_resolution: int) -> None:
    code = official_code(18)
    with torch.inference_mode():
        full = tiny.synthesis(code)
        part = tiny.synthesis_window(code, NECK_WINDOW, full_resolution=full_resolution)
    assert normalised_error(part, crop(full, NECK_WINDOW)) < WINDOW_TOLERANCE


def test_full_size_generator_window(ffhq: Generator) -> None:
    code = official_code(18)
    with torch.inference_mode():
        full = ffhq.synthesis(code)
        part = ffhq.synthesis_window(code, NECK_WINDOW)
    assert normalised_error(part, crop(full, NECK_WINDOW)) < WINDOW_TOLERANCE


def test_batch_and_random_noise_follow_the_full_render(tiny: Generator) -> None:
    codes = torch.randn(2, 18, 512, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        full = tiny.synthesis(codes, "random", generator=torch.Generator().manual_seed(9))
        part = tiny.synthesis_window(codes, NECK_WINDOW, "random", generator=torch.Generator().manual_seed(9))
    assert normalised_error(part, crop(full, NECK_WINDOW)) < WINDOW_TOLERANCE


def test_the_window_gradient_flows_to_the_code(tiny: Generator) -> None:
    code = official_code(18).requires_grad_(True)
    tiny.synthesis_window(code, Window(600, 400, 700, 600)).square().mean().backward()
    assert code.grad is not None and code.grad.abs().sum() > 0


def test_without_the_halo_the_window_is_wrong(tiny: Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The halo is what makes the window exact: with none, the crop edges spoil the window's border pixels."""
    monkeypatch.setattr(stylegan2, "WINDOW_HALO", 0)
    window = Window(301, 299, 700, 701)
    code = official_code(18)
    with torch.inference_mode():
        full = tiny.synthesis(code)
        part = tiny.synthesis_window(code, window)
    assert normalised_error(part, crop(full, window)) > 1e-2


def test_the_whole_image_as_window_is_the_full_render(tiny: Generator) -> None:
    code = official_code(18)
    with torch.inference_mode():
        assert torch.equal(tiny.synthesis_window(code, Window(0, 0, 1024, 1024)), tiny.synthesis(code))


@pytest.mark.parametrize("window", [Window(0, 0, 0, 10), Window(-1, 0, 10, 10), Window(0, 0, 10, 1025)], ids=str)
def test_bad_windows_are_rejected(tiny: Generator, window: Window) -> None:
    with pytest.raises(ValueError, match="non-empty rectangle inside the 1024² image"):
        tiny.synthesis_window(official_code(18), window)


def test_bad_full_resolution_is_rejected(tiny: Generator) -> None:
    with pytest.raises(ValueError, match="full_resolution must be a power of two"):
        tiny.synthesis_window(official_code(18), NECK_WINDOW, full_resolution=48)


def test_needed_below_grows_by_the_halo_and_halves() -> None:
    assert Window(420, 200, 1024, 830).needed_below(1024, halo=8) == Window(206, 96, 512, 419)
    assert Window(0, 0, 4, 4).needed_below(8, halo=8) == Window(0, 0, 4, 4)  # clipped to the image
