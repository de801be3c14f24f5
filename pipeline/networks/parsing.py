"""BiSeNet face parser (19 CelebAMask-HQ classes) that loads the released ``79999_iter.pth`` weights.

Our own implementation of the network described in Yu et al., "BiSeNet: Bilateral Segmentation Network for Real-time
Semantic Segmentation" (ECCV 2018), in the variant trained by zllrunning/face-parsing.PyTorch (the parser used by the
Coarse-to-Fine code, METHOD.md §6):

* context path: a ResNet-18 trunk (outputs at 1/8, 1/16 and 1/32 of the input), a global-average "context" vector
  added to the 1/32 feature, attention refinement modules (ARM) on the 1/32 and 1/16 features, nearest up-sampling
  between the levels and a 3×3 conv-BN-ReLU head after each up-sampling;
* no separate spatial path: the ResNet 1/8 feature stands in for it;
* a feature fusion module (FFM) that concatenates the 1/8 ResNet feature with the 1/8 context feature and re-weights
  the channels with a squeeze-excitation style attention;
* a main segmentation head (3×3 conv-BN-ReLU, 1×1 conv to 19 classes) whose logits are up-sampled bilinearly with
  ``align_corners=True`` to the input size.

Parameter names and shapes are exactly those of ``79999_iter.pth`` (a plain state dict of 191 entries). The file also
holds the two auxiliary training heads ``conv_out16`` / ``conv_out32``; they are kept as modules so that strict
loading works, but inference never runs them.

Input convention (zllrunning ``test.py``): the RGB image is resized to 512² with Pillow's bilinear filter, scaled to
[0, 1] and normalised with the ImageNet mean/std. The official Coarse-to-Fine scripts pass BGR arrays by mistake; we
feed RGB (METHOD.md §6).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import nn

from pipeline.config import PARSER_INPUT_SIZE
from pipeline.errors import CheckpointFormatError, InputImageError
from pipeline.networks.checkpoint_io import load_state_dict_strict, read_torch_checkpoint

logger = logging.getLogger(__name__)

# --- Class ids of the CelebAMask-HQ parser (METHOD.md §6) ------------------------------------------------------------
BACKGROUND = 0
SKIN = 1
L_BROW = 2
R_BROW = 3
L_EYE = 4
R_EYE = 5
EYE_GLASSES = 6
L_EAR = 7
R_EAR = 8
EARRING = 9
NOSE = 10
MOUTH = 11
UPPER_LIP = 12
LOWER_LIP = 13
NECK = 14
NECKLACE = 15
CLOTH = 16
HAIR = 17
HAT = 18
NUM_CLASSES = 19  # BiSeNet(n_classes=19) of 79999_iter.pth
LABEL_NAMES = (
    "background",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "eye_glasses",
    "l_ear",
    "r_ear",
    "earring",
    "nose",
    "mouth",
    "upper_lip",
    "lower_lip",
    "neck",
    "necklace",
    "cloth",
    "hair",
    "hat",
)  # index = class id
# The warp refinement's "face" region: skin, brows, eyes, glasses, nose, mouth and lips (METHOD.md §8 step 3a).
FACE_LABELS = (SKIN, L_BROW, R_BROW, L_EYE, R_EYE, EYE_GLASSES, NOSE, MOUTH, UPPER_LIP, LOWER_LIP)

# --- Preprocessing (zllrunning test.py: PIL bilinear resize, ToTensor, Normalize) ------------------------------------
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # torchvision ImageNet mean, RGB
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)  # torchvision ImageNet std, RGB
UINT8_SCALE = np.float32(255.0)  # ToTensor divides uint8 by 255 in float32

# --- Architecture (shapes of 79999_iter.pth) -------------------------------------------------------------------------
STEM_CHANNELS = 64  # ResNet-18 7×7 stem
STEM_KERNEL = 7
STEM_STRIDE = 2
STEM_PADDING = 3
STEM_POOL_KERNEL = 3  # 3×3 stride-2 max pool after the stem
STEM_POOL_STRIDE = 2
STEM_POOL_PADDING = 1
STAGE_CHANNELS = (64, 128, 256, 512)  # ResNet-18 layer1..layer4 widths
STAGE_STRIDES = (1, 2, 2, 2)  # so layer2/3/4 sit at 1/8, 1/16, 1/32 of the input
BLOCKS_PER_STAGE = 2  # ResNet-18: two basic blocks per stage
CONTEXT_CHANNELS = 128  # width of the ARMs, the context heads and conv_avg
FUSION_CHANNELS = 256  # FFM input (128 spatial + 128 context) and output width
FUSION_REDUCTION = 4  # FFM attention bottleneck 256 -> 64 -> 256
MAIN_HEAD_CHANNELS = 256  # conv_out: 256 -> 256 -> 19
AUX_HEAD_CHANNELS = 64  # conv_out16 / conv_out32: 128 -> 64 -> 19 (training only)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free convolution with 'same' padding for odd kernels (every conv of the checkpoint has no bias)."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)


class ConvBNReLU(nn.Module):
    """Convolution, batch norm, ReLU (keys ``conv.weight``, ``bn.*``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, kernel)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W)."""
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs (the first may stride) plus an identity or 1×1 projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(in_ch, out_ch, 3, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv(out_ch, out_ch, 3)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv(in_ch, out_ch, 1, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H/stride, W/stride)."""
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18Trunk(nn.Module):
    """ResNet-18 without the classifier; returns the layer2/3/4 features (strides 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, STEM_KERNEL, stride=STEM_STRIDE, padding=STEM_PADDING, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        in_ch = STEM_CHANNELS
        for index, (out_ch, stride) in enumerate(zip(STAGE_CHANNELS, STAGE_STRIDES, strict=True), start=1):
            blocks = [BasicBlock(in_ch, out_ch, stride)]
            blocks += [BasicBlock(out_ch, out_ch, 1) for _ in range(BLOCKS_PER_STAGE - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_ch = out_ch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> feat8 (N, 128, H/8, W/8), feat16 (N, 256, H/16, W/16), feat32 (N, 512, H/32, W/32)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, STEM_POOL_KERNEL, stride=STEM_POOL_STRIDE, padding=STEM_POOL_PADDING)
        x = self.layer1(x)
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


def _global_average(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 1, 1) spatial mean."""
    return F.adaptive_avg_pool2d(x, 1)


class AttentionRefinement(nn.Module):
    """ARM: conv-BN-ReLU, then channel re-weighting by sigmoid(BN(1×1 conv(global average)))."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3)
        self.conv_atten = _conv(out_ch, out_ch, 1)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W)."""
        feat = self.conv(x)
        attention = torch.sigmoid(self.bn_atten(self.conv_atten(_global_average(feat))))  # (N, out_ch, 1, 1)
        return feat * attention


class ContextPath(nn.Module):
    """ResNet-18 trunk + global context + ARMs, merged top-down with nearest up-sampling."""

    def __init__(self) -> None:
        super().__init__()
        _, _, ch16, ch32 = STAGE_CHANNELS
        self.resnet = ResNet18Trunk()
        self.arm16 = AttentionRefinement(ch16, CONTEXT_CHANNELS)
        self.arm32 = AttentionRefinement(ch32, CONTEXT_CHANNELS)
        self.conv_head32 = ConvBNReLU(CONTEXT_CHANNELS, CONTEXT_CHANNELS, 3)
        self.conv_head16 = ConvBNReLU(CONTEXT_CHANNELS, CONTEXT_CHANNELS, 3)
        self.conv_avg = ConvBNReLU(ch32, CONTEXT_CHANNELS, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> ResNet feat8 (N, 128, H/8, W/8) and the context feature (N, 128, H/8, W/8).

        The 1/16 context feature, which only feeds the auxiliary head ``conv_out32``, is not returned.
        """
        feat8, feat16, feat32 = self.resnet(x)
        # The global context is a 1×1 map; nearest up-sampling of it to the 1/32 grid is a broadcast.
        context = self.conv_avg(_global_average(feat32))  # (N, 128, 1, 1)
        merged32 = self.arm32(feat32) + context  # (N, 128, H/32, W/32)
        context16 = self.conv_head32(F.interpolate(merged32, size=feat16.shape[-2:], mode="nearest"))
        merged16 = self.arm16(feat16) + context16  # (N, 128, H/16, W/16)
        context8 = self.conv_head16(F.interpolate(merged16, size=feat8.shape[-2:], mode="nearest"))
        return feat8, context8


class FeatureFusion(nn.Module):
    """FFM: concat, 1×1 conv-BN-ReLU, then ``feat + feat * sigmoid(conv2(relu(conv1(global average))))``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, 1)
        self.conv1 = _conv(out_ch, out_ch // FUSION_REDUCTION, 1)
        self.conv2 = _conv(out_ch // FUSION_REDUCTION, out_ch, 1)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Two (N, C_i, H, W) maps with C_1 + C_2 = in_ch -> (N, out_ch, H, W)."""
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(_global_average(feat)))))  # (N, out_ch, 1, 1)
        return feat + feat * attention


class SegmentationHead(nn.Module):
    """3×3 conv-BN-ReLU followed by a bias-free 1×1 classifier."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        self.conv_out = _conv(mid_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, num_classes, H, W) logits."""
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """The 19-class face parser; ``forward`` returns the main head's logits at the input size."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(FUSION_CHANNELS, FUSION_CHANNELS)
        self.conv_out = SegmentationHead(FUSION_CHANNELS, MAIN_HEAD_CHANNELS, num_classes)
        # Auxiliary training heads: stored in the checkpoint (so kept for strict loading), never run here.
        self.conv_out16 = SegmentationHead(CONTEXT_CHANNELS, AUX_HEAD_CHANNELS, num_classes)
        self.conv_out32 = SegmentationHead(CONTEXT_CHANNELS, AUX_HEAD_CHANNELS, num_classes)

    @staticmethod
    def _check_batch(x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"BiSeNet expects a normalised (N, 3, H, W) batch, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main-head logits.

        Args:
            x: (N, 3, H, W) float32, RGB normalised with the ImageNet mean/std (see :func:`parser_input`); H = W = 512
                for the released weights.

        Returns:
            (N, 19, H, W) float32 logits (bilinear ``align_corners=True`` up-sampling from 1/8 resolution).

        Raises:
            ValueError: if ``x`` is not a 3-channel 4-D batch.
        """
        self._check_batch(x)
        feat8, context8 = self.cp(x.contiguous(memory_format=torch.channels_last))  # oneDNN's fast layout (≈ 0.8×)
        logits8 = self.conv_out(self.ffm(feat8, context8))  # (N, 19, H/8, W/8)
        return F.interpolate(logits8, size=x.shape[-2:], mode="bilinear", align_corners=True)

    def backbone_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ResNet-18 outputs (feat8, feat16, feat32), for debugging and parity checks.

        Args:
            x: (N, 3, H, W) normalised batch, as for :meth:`forward`.

        Returns:
            (N, 128, H/8, W/8), (N, 256, H/16, W/16), (N, 512, H/32, W/32) float32.
        """
        self._check_batch(x)
        return self.cp.resnet(x)


# --- Loading ---------------------------------------------------------------------------------------------------------
_BATCH_COUNTER_SUFFIX = "num_batches_tracked"
_DATA_PARALLEL_PREFIX = "module."
_WRAPPED_STATE_KEY = "state_dict"


def _as_state_dict(content: object, *, source: str) -> dict[str, torch.Tensor]:
    """Accept a plain state dict, ``{"state_dict": …}`` or ``module.``-prefixed keys; reject anything else."""
    if isinstance(content, Mapping) and isinstance(content.get(_WRAPPED_STATE_KEY), Mapping):
        content = content[_WRAPPED_STATE_KEY]
    if not isinstance(content, Mapping):
        raise CheckpointFormatError(
            f"{source} holds a {type(content).__name__}, not a state dict of BiSeNet tensors; "
            "expected the face-parsing weights 79999_iter.pth"
        )
    not_tensors = [str(key) for key, value in content.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointFormatError(
            f"{source} is not a plain state dict: entries {', '.join(not_tensors[:5])} are not tensors; "
            "expected the face-parsing weights 79999_iter.pth"
        )
    state = {str(key): value for key, value in content.items()}
    if state and all(key.startswith(_DATA_PARALLEL_PREFIX) for key in state):
        state = {key[len(_DATA_PARALLEL_PREFIX) :]: value for key, value in state.items()}
    return state


def parser_from_state_dict(state_dict: Mapping[str, torch.Tensor], *, source: str) -> BiSeNet:
    """Build a BiSeNet on the CPU and load ``state_dict`` strictly.

    ``num_batches_tracked`` counters are unused in eval mode; if a file omits them they are filled with zeros.

    Args:
        state_dict: keys and shapes of ``79999_iter.pth`` (not modified).
        source: human-readable name of where the weights came from, used in error messages.

    Returns:
        The parser in eval mode with ``requires_grad`` off, on the CPU.

    Raises:
        CheckpointFormatError: naming any missing, unexpected or mis-shaped key.
    """
    model = BiSeNet()
    expected = model.state_dict()
    state = dict(state_dict)
    for key, value in expected.items():
        if key.endswith(_BATCH_COUNTER_SUFFIX) and key not in state:
            state[key] = torch.zeros_like(value)
    load_state_dict_strict(model, state, source=source)
    return model.eval().requires_grad_(False)


def load_parser(path: Path | str, device: torch.device | str = "cpu") -> BiSeNet:
    """Read ``79999_iter.pth`` safely and return the frozen parser on ``device``.

    Args:
        path: the zllrunning face-parsing checkpoint (a plain state dict; ``{"state_dict": …}`` and ``module.``
            prefixes are also accepted).
        device: where the model should live.

    Returns:
        A :class:`BiSeNet` in eval mode with ``requires_grad`` off.

    Raises:
        WeightsError: if the file is missing, truncated or not a torch file.
        CheckpointFormatError: if its contents are not the expected state dict (naming the offending keys).
    """
    path = Path(path)
    state = _as_state_dict(read_torch_checkpoint(path), source=str(path))
    model = parser_from_state_dict(state, source=str(path)).to(device)
    logger.info("loaded BiSeNet face parser from %s on %s", path, device)
    return model


# --- Inference -------------------------------------------------------------------------------------------------------
def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise InputImageError(f"the face parser needs an image array, got a {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputImageError(
            f"the face parser needs an RGB image of shape (H, W, 3) and dtype uint8, got shape {image.shape} and "
            f"dtype {image.dtype}; convert the photo to 8-bit RGB first"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputImageError(f"the image to parse is empty (shape {image.shape})")


def parser_input(image: np.ndarray) -> torch.Tensor:
    """Preprocess an RGB image exactly as zllrunning ``test.py`` does.

    Pillow bilinear (antialiasing) resize to 512², ``/255`` in float32, then ``(x - mean) / std`` with the ImageNet
    statistics in float32.

    Args:
        image: (H, W, 3) uint8 RGB (not modified).

    Returns:
        (1, 3, 512, 512) float32 CPU tensor in channels-last memory order (a view of the HWC array; the network runs in
        that order).

    Raises:
        InputImageError: if ``image`` is not a non-empty (H, W, 3) uint8 array.
    """
    _check_image(image)
    size = (PARSER_INPUT_SIZE, PARSER_INPUT_SIZE)
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BILINEAR)
    scaled = np.asarray(resized, dtype=np.float32) / UINT8_SCALE  # (512, 512, 3) in [0, 1]
    normalised = (scaled - IMAGENET_MEAN) / IMAGENET_STD  # (512, 512, 3) float32, C-contiguous
    return torch.from_numpy(normalised).unsqueeze(0).permute(0, 3, 1, 2)  # (1, 3, 512, 512), channels-last strides


def _checked_output_size(output_size: tuple[int, int] | None, image: np.ndarray) -> tuple[int, int]:
    if output_size is None:
        return int(image.shape[0]), int(image.shape[1])
    if (
        not isinstance(output_size, tuple | list)
        or len(output_size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in output_size)
    ):
        raise ValueError(f"output_size must be a (height, width) pair of positive integers, got {output_size!r}")
    return int(output_size[0]), int(output_size[1])


def parse_labels(
    parser: BiSeNet,
    image: np.ndarray,
    *,
    device: torch.device | str,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Per-pixel class ids of a face photo.

    The arg-max is taken at 512², then the label map is resized with pixel-centre nearest-neighbour sampling.

    Args:
        parser: a loaded :class:`BiSeNet` (see :func:`load_parser`) living on ``device``.
        image: (H, W, 3) uint8 RGB (not modified).
        device: the device the parser lives on.
        output_size: (height, width) of the returned map; defaults to the image size.

    Returns:
        (height, width) uint8 class ids in [0, 18] (see the label constants of this module).

    Raises:
        InputImageError: if ``image`` is not a non-empty (H, W, 3) uint8 array.
        ValueError: if ``output_size`` is not a pair of positive integers.
    """
    _check_image(image)
    height, width = _checked_output_size(output_size, image)
    batch = parser_input(image).to(device)
    with torch.inference_mode():
        logits = parser(batch)  # (1, 19, 512, 512)
        labels = logits[0].argmax(dim=0).to(torch.uint8).cpu().numpy()  # (512, 512)
    if labels.shape == (height, width):
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
