"""How close cheaper diffuse settings stay to the official 100-step / 1024² recipe, and what they cost on the CPU.

Usage (from the repo root)::

    .venv/bin/python -m bench.bench_diffuse_quality --generator tiny [--codes 00016 00191 …] [--json PATH]
    .venv/bin/python -m bench.bench_diffuse_quality --generator full --codes 00016 00295
    .venv/bin/python -m bench.bench_diffuse_quality --weights-dir checkpoints --tune-lambda [--tune-inversion]

``--tune-lambda`` / ``--tune-inversion`` (real weights only) print the diffuse feature weight λ and the inversion
loss weights to paste into the settings (:mod:`bench.tune_weights`, docs/first-run.md).

Fixtures: the 7 official reference photos (``examples/*.png``, FFHQ-aligned 1024²) with their official W+ codes
(``examples/codes``). For each, as the remover does it: the fine/all boundary edit at strength −5 with the diffuse
style mixing (layers 7–17 restored), the neck mask from a synthetic label map of the photo's dlib landmarks
(:func:`bench.full_size.synthetic_labels`; the random parser's labels are noise), the hard-pasted target, the
feathered blend mask, then :func:`pipeline.refinement.diffuse.diffuse_refine` and the feathered composite.

Generators: ``tiny`` is the repository's stand-in (``pipeline.weights.stand_in``), ``full`` the FFHQ config-f
architecture with seeded random weights (the real cost). VGG16 is full width with random weights scaled to He
initialisation in both cases (:func:`he_scaled_vgg`), so its features, and the feature loss, have a trained
network's magnitude.
Neither generator is the trained one, so the numbers say how far an approximation moves the optimisation's result,
not how a real face looks.

The reference is the official recipe (1024² render, VGG at 256², 100 Adam steps at lr 0.01, fp32), cached per code in
the benchmark cache. Each variant ``RENDER/FEATURE/STEPS/LR`` is compared with it inside the blend mask (pixels where
the feathered mask is > 0): PSNR (dB), the largest absolute error (grey levels), and the share of the reference's
change that the variant reproduces, ``1 − rms(variant − reference) / rms(start − reference)``, where "start" is the
composite of the un-optimised original code. ``objective_captured`` is the share of the reference's decrease of the
official loss (masked pixel MSE at 1024² + λ·VGG relu4_3 MSE at 256², evaluated on the final code) that the variant
achieves: it says how well a cheaper loop optimises the official objective, whatever the generator.

With random weights the renders are noise whose 256² and 1024² versions are unrelated, so the pixel metrics are a
harsh, pessimistic test; ``--weights-dir`` runs the same comparison with the real generator when its file is there.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from functools import partial

import numpy as np
import torch

from bench.common import Record, peak_rss_mb, row_from
from bench.full_size import cache_dir, synthetic_labels
from pipeline.config import BOUNDARIES_DIR, EXAMPLES_DIR
from pipeline.faces.align import find_faces
from pipeline.faces.decode import decode_image
from pipeline.latent.editing import edit_latent, load_boundary
from pipeline.models import load_models
from pipeline.networks.perceptual import DIFFUSE_FEATURE_TAP, VGGConfig, feature_mse
from pipeline.networks.pixels import to_uint8
from pipeline.networks.stylegan2 import (
    Generator,
    GeneratorConfig,
    generator_from_checkpoint,
    generator_from_state_dict,
)
from pipeline.networks.stylegan2 import state_dict_layout as generator_layout
from pipeline.refinement.compositing import FEATHER_DIFFUSE, composite, feather_mask
from pipeline.refinement.diffuse import DiffuseSettings, diffuse_refine
from pipeline.refinement.neck_mask import NECK_MASK_DIFFUSE, neck_mask
from pipeline.remover import cached_target_distance, diffuse_features
from pipeline.settings import MIX_LAYERS_DIFFUSE
from pipeline.weights.stand_in import random_vgg16_features, seeded_state_dict, stand_in_e4e_checkpoint

STRENGTH = -5.0  # README / main_warp.py default
REFERENCE = "1024/256/100/0.01"  # official: 1024² render, AdaptiveAvgPool2d(256) before VGG, 100 steps, Adam lr 0.01
DEFAULT_VARIANTS = (
    "256/256/100/0.01",  # the CPU path before issue 8
    "256/128/100/0.01",
    "128/128/100/0.01",
    "256/256/50/0.02",
    "256/128/50/0.02",
    "128/128/50/0.02",
)
PEAK_GREY = 255.0
BLEND_EPS = 1e-3  # pixels with a blend weight above this are "inside the mask"
HE_GAIN = math.sqrt(2.0)  # He initialisation for ReLU networks


def parse_variant(spec: str) -> DiffuseSettings:
    render, feature, steps, lr = spec.split("/")
    return DiffuseSettings(
        steps=int(steps),
        learning_rate=float(lr),
        optimise_size=int(render),
        feature_size=int(feature),
        precision="fp32",
    )


def he_scaled_vgg() -> torch.nn.Module:
    """Full-width VGG16 with the seeded random weights scaled to He initialisation (×√2 per conv).

    The repository's recipe scales each conv by 1/√fan_in, which halves the activations' second moment at every ReLU,
    so relu4_3 (10 convs deep) would be ~1000× weaker than a trained network's and the feature term would vanish
    from the loss. He scaling keeps the features O(1), as a trained VGG16's are, so the balance between the pixel
    and feature terms (λ = 0.33) is realistic.
    """
    vgg = random_vgg16_features(VGGConfig())
    with torch.no_grad():
        for layer in vgg.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.mul_(HE_GAIN)
    return vgg


def build_generator(kind: str, weights_dir: str | None) -> Generator:
    if weights_dir is not None:
        return load_models(weights_dir, device="cpu", allow_download=False).generator
    if kind == "tiny":
        return generator_from_checkpoint(stand_in_e4e_checkpoint(), source="stand-in", device="cpu")
    config = GeneratorConfig.ffhq()
    weights = seeded_state_dict(generator_layout(config))
    generator = generator_from_state_dict(weights, torch.zeros(config.w_dim), source="random weights")
    with torch.no_grad():
        z = torch.randn(4096, config.w_dim, generator=torch.Generator().manual_seed(0))
        generator.latent_avg.copy_(generator.mapping(z).mean(0))
    return generator


def scene(name: str, generator: Generator) -> dict[str, np.ndarray]:
    photo = decode_image(EXAMPLES_DIR / f"{name}.png")
    code = np.load(EXAMPLES_DIR / "codes" / f"{name}_wp.npy").astype(np.float32)
    landmarks = find_faces(photo)[0].landmarks
    region = neck_mask(synthetic_labels(landmarks, photo.shape[0]), landmarks, settings=NECK_MASK_DIFFUSE)
    boundary = load_boundary("fine", "all", boundaries_dir=BOUNDARIES_DIR)
    edited_code = edit_latent(code, boundary, strength=STRENGTH, mix_layers=MIX_LAYERS_DIFFUSE)
    with torch.inference_mode():
        edited = to_uint8(generator.synthesis(torch.from_numpy(edited_code)))
        start = to_uint8(generator.synthesis(torch.from_numpy(code)))
    blend = feather_mask(region, dilate_px=FEATHER_DIFFUSE.dilate_px, blur_px=FEATHER_DIFFUSE.blur_px)
    return {
        "photo": photo,
        "code": code,
        "target": composite(photo, edited, region.astype(np.float32)),
        "blend": blend,
        "start": composite(photo, start, blend),
    }


def refine(generator: Generator, vgg: torch.nn.Module, case: dict, options: DiffuseSettings) -> tuple[dict, float]:
    distance = cached_target_distance(
        partial(diffuse_features, vgg, size=options.feature_size), partial(feature_mse, tap=DIFFUSE_FEATURE_TAP)
    )
    start = time.perf_counter()
    result = diffuse_refine(generator, distance, case["target"], 1.0 - case["blend"], case["code"], settings=options)
    seconds = time.perf_counter() - start
    refined = composite(case["photo"], to_uint8(result.render), case["blend"])
    return {"refined": refined, "w_plus": result.w_plus, "losses": np.asarray(result.losses)}, seconds


def reference(kind: str, name: str, generator: Generator, vgg: torch.nn.Module, case: dict) -> dict:
    path = cache_dir() / "diffuse_reference" / f"{kind}_{name}_{REFERENCE.replace('/', '-')}_he-vgg.npz"
    if path.is_file():
        with np.load(path) as stored:
            return dict(stored)
    logging.getLogger(__name__).warning("computing the %s reference for %s (slow on a CPU)", REFERENCE, name)
    result, seconds = refine(generator, vgg, case, parse_variant(REFERENCE))
    result["seconds"] = np.float64(seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **result)
    return result


def official_objective(generator: Generator, vgg: torch.nn.Module, case: dict, code: np.ndarray) -> float:
    """The official diffuse loss of ``code``: masked pixel MSE at 1024² + λ·relu4_3 feature MSE at 256² (fp32)."""
    options = DiffuseSettings()
    with torch.inference_mode():
        render = generator.synthesis(torch.from_numpy(np.ascontiguousarray(code, dtype=np.float32)))
        target = torch.from_numpy(case["target"]).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        weight = torch.from_numpy(1.0 - case["blend"])[None, None]
        pixel = ((target - render) * weight).square().mean()
        features = partial(diffuse_features, vgg, size=options.feature_size)
        feature = feature_mse(features(render), features(target), tap=DIFFUSE_FEATURE_TAP)
        return float(pixel + options.feature_weight * feature)


def compare(candidate: np.ndarray, ref: np.ndarray, start: np.ndarray, blend: np.ndarray) -> dict[str, float]:
    inside = blend > BLEND_EPS
    diff = candidate[inside].astype(np.float64) - ref[inside]
    moved = start[inside].astype(np.float64) - ref[inside]
    rms, rms_moved = math.sqrt(np.mean(diff**2)), math.sqrt(np.mean(moved**2))
    return {
        "psnr_db": float("inf") if rms == 0 else 20 * math.log10(PEAK_GREY / rms),
        "max_abs": float(np.abs(diff).max()),
        "captured": 1.0 - rms / rms_moved if rms_moved > 0 else float("nan"),
    }


def tune(weights_dir: str, names: list[str], *, lambda_: bool, inversion: bool) -> None:
    """First run with the real weights: print the loss weights to paste (bench/tune_weights.py, docs/first-run.md)."""
    from bench.tune_weights import inversion_scores, lambda_report, print_inversion

    models = load_models(weights_dir, device=None, allow_download=False)
    if models.stand_in or models.vgg is None:
        raise SystemExit("tuning needs the real weights, VGG16 included (these are stand-ins or VGG16 is missing)")
    if lambda_:
        generator = models.generator.cpu() if models.device.type != "cpu" else models.generator
        lambda_report(generator, models.vgg.cpu(), {name: scene(name, generator) for name in names})
    if inversion:
        print_inversion(inversion_scores(load_models(weights_dir, allow_download=False), names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--codes", nargs="+", default=None, help="fixture names (default: all 7)")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help="RENDER/FEATURE/STEPS/LR")
    parser.add_argument("--weights-dir", default=None, help="use the generator of this weights folder (real weights)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--tune-lambda", action="store_true", help="with --weights-dir: print λ to paste (first run)")
    parser.add_argument("--tune-inversion", action="store_true", help="with --weights-dir: print loss weights")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = args.codes or sorted(path.stem for path in EXAMPLES_DIR.glob("*.png"))
    if args.tune_lambda or args.tune_inversion:
        if args.weights_dir is None:
            parser.error("--tune-lambda / --tune-inversion need --weights-dir (the real weights)")
        tune(args.weights_dir, names, lambda_=args.tune_lambda, inversion=args.tune_inversion)
        return
    generator = build_generator(args.generator, args.weights_dir)
    if args.weights_dir is not None:
        args.generator = "weights"
    vgg = he_scaled_vgg() if args.weights_dir is None else load_models(args.weights_dir).vgg
    record = Record(f"diffuse_quality/{args.generator}")
    per_variant: dict[str, dict[str, list[float]]] = {v: {} for v in ["start (no optimisation)", *args.variants]}
    reference_seconds = []
    for name in names:
        case = scene(name, generator)
        ref = reference(args.generator, name, generator, vgg, case)
        reference_seconds.append(float(ref["seconds"]))
        start_loss = official_objective(generator, vgg, case, case["code"])
        reduction = start_loss - official_objective(generator, vgg, case, ref["w_plus"])
        metrics = compare(case["start"], ref["refined"], case["start"], case["blend"]) | {"objective_captured": 0.0}
        for key, value in metrics.items():
            per_variant["start (no optimisation)"].setdefault(key, []).append(value)
        for spec in args.variants:
            result, seconds = refine(generator, vgg, case, parse_variant(spec))
            metrics = compare(result["refined"], ref["refined"], case["start"], case["blend"]) | {"seconds": seconds}
            loss = official_objective(generator, vgg, case, result["w_plus"])
            metrics["objective_captured"] = (start_loss - loss) / reduction if reduction > 0 else float("nan")
            for key, value in metrics.items():
                per_variant[spec].setdefault(key, []).append(value)
            print(f"{name} {spec:<18} {seconds:6.1f} s  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    record.rows.append(row_from(f"reference {REFERENCE} ({args.generator})", reference_seconds))
    summary = {}
    for spec, metrics in per_variant.items():
        summary[spec] = {key: statistics.median(values) for key, values in metrics.items()}
        summary[spec]["worst_psnr_db"] = min(metrics["psnr_db"])
        summary[spec]["worst_max_abs"] = max(metrics["max_abs"])
        if "seconds" in metrics:
            record.rows.append(
                row_from(
                    f"diffuse {spec} ({args.generator})",
                    metrics["seconds"],
                    note=f"PSNR vs ref {summary[spec]['psnr_db']:.1f} dB (worst {min(metrics['psnr_db']):.1f}), "
                    f"max err {max(metrics['max_abs']):.0f}, change captured {summary[spec]['captured']:.2f}, "
                    f"objective captured {summary[spec]['objective_captured']:.2f}",
                )
            )
    record.extra = {"codes": names, "reference": REFERENCE, "strength": STRENGTH, "summary": summary}
    print(f"\nmedians over {len(names)} fixtures ({args.generator} generator), compared with {REFERENCE}:")
    for spec, values in summary.items():
        print(f"  {spec:<24} " + "  ".join(f"{k} {v:.3f}" for k, v in values.items()))
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    record.write(args.json)


if __name__ == "__main__":
    main()
