"""Re-tune the loss weights on the real weights and print the lines to paste (docs/first-run.md, steps 3).

Called by ``bench.bench_diffuse_quality --weights-dir DIR --tune-lambda`` and ``--tune-inversion``.

- **Diffuse feature weight λ.** The official loss ``L_pix + 1e-4·L_feat`` uses idinvert's Caffe-style VGG16 (input
  in [0, 255] minus the Caffe means); ours feeds torchvision's VGG16 ImageNet-normalised input in [0, 1], which the
  default λ = 0.33 compensates by the input scale alone (≈ 57.6², pipeline/networks/perceptual.py). With the real
  VGG16, :func:`lambda_report` measures what the input scale really does to ``L_feat``: the relu4_3 feature MSE
  between the diffuse target and the start render, once with our preprocessing and once with Caffe-style input fed to
  the same network (RGB order kept, so only magnitude and offset differ). λ = 1e-4 × the median ratio. What it cannot
  measure is the difference between the Caffe and torchvision trainings of VGG16.
- **Inversion loss weights.** :func:`inversion_scores` runs the optimisation inversion from the e4e code for a few
  (pixel, perceptual) weight pairs and scores each result with the known-answer measures
  (:mod:`pipeline.verification.known_answers`): face-box PSNR to the photo and the PSNR margin over the other photos.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import numpy as np
import torch

from pipeline.latent.inversion import OptimisationSettings, optimise_latent
from pipeline.networks.encoder import invert_with_encoder
from pipeline.networks.perceptual import DIFFUSE_FEATURE_TAP, IMAGENET_MEAN, IMAGENET_STD, perceptual_distance
from pipeline.refinement.diffuse import DiffuseSettings
from pipeline.remover import diffuse_features
from pipeline.verification.known_answers import face_region, load_examples, psnr_matrix

OFFICIAL_FEATURE_WEIGHT = 1e-4  # main_diffuse.py default λ (METHOD.md §7)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # idinvert / Caffe VGG16 channel means (given BGR there), in RGB order
CAFFE_SCALE = 255.0  # Caffe-style input is in [0, 255]
DEFAULT_INVERSION_PAIRS = ((1.0, 1.0), (1.0, 0.5), (1.0, 2.0), (0.0, 1.0))  # (pixel, perceptual); first = current


def caffe_style_input(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] re-expressed so that :class:`VGG16Features`' own normalisation yields Caffe-style input.

    VGG16Features computes ``((x + 1)/2 − mean)/std``; this returns the x for which that equals ``255·p − caffe_mean``
    (p the pixel in [0, 1]), so the first conv sees idinvert's input magnitudes.
    """
    pixels = (images + 1.0) / 2.0
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    caffe_mean = torch.tensor(CAFFE_MEAN_RGB, device=images.device).view(1, 3, 1, 1)
    wanted = CAFFE_SCALE * pixels - caffe_mean
    return 2.0 * (wanted * std + mean) - 1.0


def lambda_report(generator: torch.nn.Module, vgg: torch.nn.Module, cases: dict[str, dict]) -> float:
    """Measure the input-scale factor of ``L_feat`` on each case, print the figures and the line to paste.

    Args:
        generator: the real generator (renders the start code).
        vgg: the real VGG16 features.
        cases: name → a ``bench.bench_diffuse_quality.scene`` dict (``target``, ``blend``, ``code``).

    Returns:
        The tuned λ (1e-4 × median factor).
    """
    current = DiffuseSettings().feature_weight
    factors = []
    with torch.inference_mode():
        for name, case in cases.items():
            render = generator.synthesis(torch.from_numpy(np.ascontiguousarray(case["code"], dtype=np.float32)))
            render = render.float().cpu()
            target = torch.from_numpy(case["target"]).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            weight = torch.from_numpy(1.0 - case["blend"])[None, None]
            pixel = float(((target - render) * weight).square().mean())
            ours = _feature_mse(vgg, render, target)
            caffe = _feature_mse(vgg, caffe_style_input(render), caffe_style_input(target))
            factor = caffe / ours if ours > 0 else float("nan")
            factors.append(factor)
            share = current * ours / (pixel + current * ours) if pixel + current * ours > 0 else float("nan")
            tuned_share = OFFICIAL_FEATURE_WEIGHT * caffe / (pixel + OFFICIAL_FEATURE_WEIGHT * caffe)
            print(
                f"{name}: L_pix {pixel:.4g}, L_feat ours {ours:.4g}, Caffe-style {caffe:.4g} (×{factor:,.0f}); "
                f"share of the feature term at step 0: {share:.2f} now, {tuned_share:.2f} official-equivalent"
            )
    factor = statistics.median(factors)
    tuned = OFFICIAL_FEATURE_WEIGHT * factor
    print(
        f"\ncurrent feature_weight {current:g} (estimate 1e-4 × 57.6²); measured factor {factor:,.0f} "
        f"(median over {len(factors)} photos, {DIFFUSE_FEATURE_TAP}, 256²)"
    )
    print(f"feature_weight: float = {tuned:.3g}  # paste into DiffuseSettings in pipeline/refinement/diffuse.py")
    return tuned


def _feature_mse(vgg: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> float:
    fa = diffuse_features(vgg, a)[-1]
    fb = diffuse_features(vgg, b)[-1]
    return float((fa.float() - fb.float()).square().mean())


def inversion_scores(
    models: object,
    names: Sequence[str],
    pairs: Sequence[tuple[float, float]] = DEFAULT_INVERSION_PAIRS,
    settings: OptimisationSettings | None = None,
) -> dict[tuple[float, float], list[tuple[float, float]]]:
    """For each (pixel, perceptual) weight pair: per photo, (face-box PSNR to the photo, margin over other photos)."""
    examples = load_examples()
    device = models.device  # type: ignore[attr-defined]
    photos = face_region(torch.from_numpy(examples.photos).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    base = settings or OptimisationSettings()
    perceptual = partial(perceptual_distance, models.vgg)  # type: ignore[attr-defined]
    scores: dict[tuple[float, float], list[tuple[float, float]]] = {pair: [] for pair in pairs}
    for name in names:
        index = examples.names.index(name)
        photo = examples.photos[index]
        start = invert_with_encoder(models.encoder, photo, device=device)  # type: ignore[attr-defined]
        target = (torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 127.5 - 1.0).to(device)
        for pixel, feature in pairs:
            options = replace(base, pixel_weight=pixel, perceptual_weight=feature)
            result = optimise_latent(models.generator, target, start, perceptual=perceptual, settings=options)  # type: ignore[attr-defined]
            with torch.inference_mode():
                render = models.generator.synthesis(torch.from_numpy(result.w_plus).to(device)).float().cpu()  # type: ignore[attr-defined]
            psnr = psnr_matrix(face_region(render), photos)[0]
            own = float(psnr[index])
            margin = own - max(float(v) for j, v in enumerate(psnr) if j != index)
            scores[(pixel, feature)].append((own, margin))
            print(f"{name} pixel {pixel:g} perceptual {feature:g}: PSNR {own:.2f} dB, margin {margin:+.2f} dB")
    return scores


def print_inversion(scores: dict[tuple[float, float], list[tuple[float, float]]]) -> tuple[float, float]:
    """Print the medians per pair and the lines to paste; returns the best pair (highest median PSNR)."""
    medians = {pair: statistics.median(psnr for psnr, _ in values) for pair, values in scores.items()}
    for (pixel, feature), value in medians.items():
        print(f"pixel_weight {pixel:g}, perceptual_weight {feature:g}: median face-box PSNR {value:.2f} dB")
    best = max(medians, key=lambda pair: medians[pair])
    print("# paste into OptimisationSettings in pipeline/latent/inversion.py (best median PSNR to the photos):")
    print(f"pixel_weight: float = {best[0]:g}")
    print(f"perceptual_weight: float = {best[1]:g}")
    return best
