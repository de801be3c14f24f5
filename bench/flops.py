"""FLOPs of every network stage (counted with ``torch.utils.flop_counter``) and the GPU times they imply.

Usage (from the repo root; no GPU and no weights needed, everything runs on the meta device in seconds)::

    .venv/bin/python -m bench.flops [--json PATH] [--markdown PATH]

The networks are built at full size (e4e IR-SE-50, StyleGAN2 FFHQ config-f, BiSeNet, VGG16) on PyTorch's meta
device, so only shapes flow: ``FlopCounterMode`` counts the FLOPs of convolutions and matrix products (2 per
multiply-add), forward and backward, which is where all the time goes at these sizes. Element-wise work is not
counted; it is memory-bound and adds roughly 10–30 % on a GPU.

Expected times use the peak dense throughputs from NVIDIA's data sheets (:data:`GPUS`) and an assumed achieved
fraction of that peak (:data:`ACHIEVED`): batch-1 convolutions with 16–512 channels rarely get near peak, and
the StyleGAN2 layers mix large convolutions with small element-wise kernels. Treat the figures as estimates to be
replaced by ``bench/bench_gpu.py`` measurements.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import ENCODER_INPUT_SIZE, NUM_WS, PARSER_INPUT_SIZE, W_DIM
from pipeline.networks.encoder import Encoder4Editing, EncoderConfig
from pipeline.networks.parsing import BiSeNet
from pipeline.networks.perceptual import FEATURE_LOSS_SIZE, TAP_NAMES, VGG16Features, VGGConfig
from pipeline.networks.stylegan2 import Generator, GeneratorConfig
from pipeline.refinement.diffuse import CPU_DIFFUSE

META = torch.device("meta")
TERA = 1e12
GIGA = 1e9
DIFFUSE_FEATURE_TAP = "relu4_3"


@dataclass(frozen=True)
class Gpu:
    """Peak dense throughput in TFLOP/s (no structured sparsity)."""

    name: str
    fp32: float  # what an fp32 convolution gets: CUDA cores (T4) or TF32 tensor cores (Ampere+, see below)
    half: float  # fp16/bf16 tensor cores (fp32 accumulate where the data sheet distinguishes)
    source: str


# PyTorch lets cuDNN run fp32 convolutions on TF32 tensor cores by default (torch.backends.cudnn.allow_tf32 = True),
# so on Ampere and newer the "fp32" column uses the TF32 tensor peak; the T4 (Turing) has no TF32.
GPUS = (
    Gpu("T4", 8.1, 65.0, "NVIDIA T4 data sheet: 8.1 TFLOPS FP32 (no TF32), 65 TFLOPS mixed-precision FP16"),
    Gpu(
        "A10G",
        62.5,
        125.0,
        "NVIDIA A10 data sheet: 62.5 TFLOPS TF32, 125 TFLOPS BF16/FP16 tensor, dense (the A10G of AWS and HF Spaces "
        "is a variant of this GA102 board with no separate NVIDIA sheet: treat as upper bounds)",
    ),
    Gpu("L4", 60.0, 121.0, "NVIDIA L4 data sheet: 60 TFLOPS TF32, 121 TFLOPS FP16/BF16 tensor, dense"),
    Gpu("A100", 156.0, 312.0, "NVIDIA A100 data sheet: 156 TFLOPS TF32, 312 TFLOPS FP16/BF16 tensor, dense"),
)
ACHIEVED = 0.35  # assumed share of peak reached by batch-1 convolutions (ours; cuDNN typically 25–50 % here)


def count(run: Callable[[], object]) -> int:
    """FLOPs of ``run()`` (forward and, if it calls backward, backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops()


def stages() -> dict[str, tuple[int, str]]:
    """Stage name → (FLOPs, what it is)."""
    with META:
        encoder = Encoder4Editing(EncoderConfig()).eval().requires_grad_(False)
        generator = Generator(GeneratorConfig.ffhq()).eval().requires_grad_(False)
        parser = BiSeNet().eval().requires_grad_(False)
        vgg = VGG16Features(VGGConfig()).eval().requires_grad_(False)

    def code(grad: bool = False) -> torch.Tensor:
        return torch.zeros(1, NUM_WS, W_DIM, device=META, requires_grad=grad)

    def image(size: int, grad: bool = False) -> torch.Tensor:
        return torch.zeros(1, 3, size, size, device=META, requires_grad=grad)

    def inference(run: Callable[[], object]) -> int:
        with torch.inference_mode():
            return count(run)

    def diffuse_step(render_size: int, feature_size: int) -> int:
        def run() -> None:
            wp = code(grad=True)
            render = generator.synthesis(wp, resolution=render_size)
            small = torch.nn.functional.adaptive_avg_pool2d(render, feature_size)
            features = vgg(small, last_tap=DIFFUSE_FEATURE_TAP)[-1]
            (render.square().mean() + features.square().mean()).backward()

        return count(run)

    def inversion_step(render_size: int) -> int:
        def run() -> None:
            wp = code(grad=True)
            render = generator.synthesis(wp, resolution=render_size)
            small = torch.nn.functional.adaptive_avg_pool2d(render, FEATURE_LOSS_SIZE)
            features = vgg(small, last_tap=TAP_NAMES[-1])
            sum(f.square().mean() for f in features).backward()

        return count(run)

    cpu_render, cpu_features = CPU_DIFFUSE.optimise_size, CPU_DIFFUSE.feature_size
    return {
        "encoder": (inference(lambda: encoder(image(ENCODER_INPUT_SIZE))), "e4e forward, 256² input"),
        "render 1024²": (inference(lambda: generator.synthesis(code())), "StyleGAN2 synthesis, batch 1"),
        "parse": (inference(lambda: parser(image(PARSER_INPUT_SIZE))), "BiSeNet forward, 512² input"),
        "VGG16 to relu4_3, 256²": (
            inference(lambda: vgg(image(FEATURE_LOSS_SIZE), last_tap=DIFFUSE_FEATURE_TAP)),
            "forward only (target features, computed once)",
        ),
        "diffuse step (GPU: 1024² render, VGG 256²)": (
            diffuse_step(1024, FEATURE_LOSS_SIZE),
            "forward + backward to the code",
        ),
        f"diffuse step (CPU: {cpu_render}² render, VGG {cpu_features}²)": (
            diffuse_step(cpu_render, cpu_features),
            "forward + backward to the code",
        ),
        "inversion step (GPU: 1024² render)": (inversion_step(1024), "forward + backward, LPIPS taps at 256²"),
        "inversion step (CPU: 256² render)": (inversion_step(256), "forward + backward, LPIPS taps at 256²"),
    }


def expected_ms(flops: float, gpu: Gpu, *, half: bool) -> float:
    """Milliseconds at :data:`ACHIEVED` of the peak."""
    peak = gpu.half if half else gpu.fp32
    return flops / (peak * TERA * ACHIEVED) * 1e3


def totals(per_stage: dict[str, tuple[int, str]]) -> dict[str, int]:
    """FLOPs of whole requests (GPU recipes: diffuse 100 steps, optimisation 200 steps as the GPU defaults)."""
    flops = {name: value for name, (value, _) in per_stage.items()}
    fast = flops["encoder"] + 2 * flops["render 1024²"] + 2 * flops["parse"]  # recon + edit renders, two parses
    diffuse = flops["VGG16 to relu4_3, 256²"] + 100 * flops["diffuse step (GPU: 1024² render, VGG 256²)"]
    optimise = 200 * flops["inversion step (GPU: 1024² render)"]
    return {
        "fast path (encoder + 2 renders + 2 parses)": fast,
        "diffuse refinement, 100 steps": diffuse + flops["render 1024²"],
        "optimisation inversion, 200 steps": optimise + flops["render 1024²"],
        "GPU defaults (optimise 200 + diffuse 100 + fast path)": fast + diffuse + optimise + 2 * flops["render 1024²"],
    }


def markdown(per_stage: dict[str, tuple[int, str]], whole: dict[str, int]) -> str:
    """The tables of docs/performance.md."""
    header = "| stage | GFLOP | " + " | ".join(f"{g.name} fp32 / half (ms)" for g in GPUS) + " |"
    lines = [header, "|" + "---|" * (2 + len(GPUS))]
    rows = [(name, value, note) for name, (value, note) in per_stage.items()]
    rows += [(name, value, "") for name, value in whole.items()]
    for name, value, note in rows:
        times = " | ".join(
            f"{expected_ms(value, g, half=False):,.0f} / {expected_ms(value, g, half=True):,.0f}" for g in GPUS
        )
        label = f"{name} — {note}" if note else f"**{name}**"
        lines.append(f"| {label} | {value / GIGA:,.1f} | {times} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the counts and estimates here")
    parser.add_argument("--markdown", default=None, help="write the Markdown table here")
    args = parser.parse_args()
    per_stage = stages()
    whole = totals(per_stage)
    table = markdown(per_stage, whole)
    print(table)
    print(f"\nassumed achieved share of peak: {ACHIEVED:.0%}")
    for gpu in GPUS:
        print(f"- {gpu.name}: {gpu.source}")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    if args.json:
        data = {
            "flops": {name: value for name, (value, _) in per_stage.items()} | whole,
            "achieved_share_of_peak": ACHIEVED,
            "gpus": [g.__dict__ for g in GPUS],
            "expected_ms": {
                name: {
                    g.name: {"fp32": expected_ms(v, g, half=False), "half": expected_ms(v, g, half=True)} for g in GPUS
                }
                for name, v in ({n: v for n, (v, _) in per_stage.items()} | whole).items()
            },
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
