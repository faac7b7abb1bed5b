"""PyTorch mirror of ``inspector.models`` (backbones, necks, heads, detector, decoding, post-processing).

Every class here mirrors the Paddle layer of the same name in ``inspector/models/`` (``layers.py``,
``backbones.py``, ``necks.py``, ``gfl_head.py``, ``head.py``, ``detector.py``): the same sub-module
attribute names, so ``state_dict`` keys equal the Paddle names except BatchNorm's buffers (Paddle
``X._mean`` / ``X._variance`` are torch ``X.running_mean`` / ``X.running_var``; torch's
``num_batches_tracked`` has no Paddle counterpart and is not exchanged). ``to_paddle_arrays`` and
``load_paddle_arrays`` move weights across that boundary as plain numpy arrays.

Behaviour that differs between the two frameworks by default and is pinned here to Paddle's:

- BatchNorm: Paddle's ``momentum=0.9`` means ``running = 0.9 * running + 0.1 * batch`` (torch's
  ``momentum=0.1``), and Paddle updates the running variance with the *biased* batch variance where torch
  uses the unbiased one, so ``PaddleBatchNorm2d`` updates its running statistics itself.
- Initialisation: Kaiming-normal (fan-in, ReLU gain) convolutions, BatchNorm gamma 1 (0 where a residual
  branch must start as the identity) and beta 0, zero conv biases (Paddle's default bias initialiser),
  N(0, 0.01) prediction convs with the prior-probability class / objectness bias.
- Hard-sigmoid: Paddle's ``F.hardsigmoid`` (slope 0.1666667, offset 0.5) is torch's ``x / 6 + 0.5`` to
  within 4e-8 * |x|.

Deformable convolutions (``ppyolo-r50-dcn``) are not mirrored; ``build_torch_model`` says so.

Only torch, numpy and the paddle-free parts of ``inspector`` are imported, so this runs where paddle is
not installed.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from inspector.models.config import ModelConfig
from inspector.models.head_layout import (  # noqa: F401 (anchor_points re-exported for the twin's callers)
    MAX_LOG_SCALE, OBJ, anchor_points, channels_per_anchor, gfl_channels, gfl_constant_arrays, level_constant_arrays,
)
from inspector.models.nms import NmsMethod, select_detections

# The constants of ``inspector.models.detector`` / ``necks`` / ``layers`` (those modules import paddle). The heads'
# layouts and decoding constants are not copied: they come from the paddle-free ``inspector.models.head_layout``.
PPYOLO_FPN_WIDTHS = {18: (64, 128, 256), 34: (64, 128, 256), 50: (128, 256, 512)}
LITE_FPN_WIDTH = 96
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "hardswish", "none")
PADDLE_BN_MOMENTUM = 0.9  # paddle.nn.BatchNorm2D defaults
PADDLE_BN_EPSILON = 1e-5

# ----------------------------------------------------------------------------------------------------- layers


def make_divisible(value: float, divisor: int = 8) -> int:
    """``layers.make_divisible``: round to a multiple of ``divisor``, never below 90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def make_activation(name: str) -> nn.Module:
    """``layers.make_activation``: the activation layer called ``name``."""
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1)
    if name == "hardswish":
        return nn.Hardswish()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def kaiming_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Paddle's ``KaimingNormal()``: N(0, 2 / fan_in), fan_in = in/groups * k * k (as torch computes it)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)  # Paddle's default bias initialiser
    return conv


class PaddleBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with Paddle's running-statistics update.

    Paddle: ``running = momentum * running + (1 - momentum) * batch`` with momentum 0.9, and the running
    variance takes the *biased* batch variance; torch's own update uses the unbiased one, which would
    drift from Paddle by n / (n - 1) on small maps. Normalisation in train mode uses the biased batch
    statistics in both frameworks, so only the running statistics are updated by hand (from the batch's
    biased statistics, in float32 also under autocast).
    (``nn.SyncBatchNorm.convert_sync_batchnorm`` would swap this class for torch's own update.)
    """

    def __init__(self, channels: int, zero_gamma: bool = False, momentum: float = PADDLE_BN_MOMENTUM,
                 eps: float = PADDLE_BN_EPSILON) -> None:
        super().__init__(channels, eps=eps, momentum=1.0 - momentum)
        self.paddle_momentum = momentum
        nn.init.constant_(self.weight, 0.0 if zero_gamma else 1.0)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        # Batch statistics normalise; the running statistics follow Paddle's blend of the *biased* batch variance
        # (torch's would blend the unbiased one). They are updated apart from the graph: torch's fused kernel
        # keeps the running buffers for its backward pass, so an in-place fix-up afterwards breaks autograd.
        out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x.detach().float(), dim=(0, 2, 3), unbiased=False)  # fp32 under AMP
            self.running_mean.mul_(self.paddle_momentum).add_(mean, alpha=1.0 - self.paddle_momentum)
            self.running_var.mul_(self.paddle_momentum).add_(var, alpha=1.0 - self.paddle_momentum)
            self.num_batches_tracked.add_(1)
        return out


class ConvBNAct(nn.Module):
    """``layers.ConvBNAct``: conv (no bias, "same" padding) -> BatchNorm -> activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: str = "relu", zero_gamma: bool = False) -> None:
        super().__init__()
        self.conv = kaiming_conv(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                           padding=kernel_size // 2, groups=groups, bias=False))
        self.bn = PaddleBatchNorm2d(out_channels, zero_gamma)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Module):
    """``layers.DepthwiseSeparableConv``: depthwise k x k ConvBNAct then pointwise 1x1 ConvBNAct."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 act: str = "hardswish") -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """``layers.coordinate_channels``: x then y pixel-centre positions in (-1, 1), shaped (B, 2, H, W)."""
    batch, _, height, width = x.shape
    xs = (torch.arange(width, dtype=torch.float32, device=x.device) + 0.5) / float(width) * 2.0 - 1.0
    ys = (torch.arange(height, dtype=torch.float32, device=x.device) + 0.5) / float(height) * 2.0 - 1.0
    grid_x = xs.view(1, 1, 1, width).expand(batch, 1, height, width)
    grid_y = ys.view(1, 1, height, 1).expand(batch, 1, height, width)
    return torch.cat([grid_x, grid_y], dim=1).to(x.dtype)


class CoordConv(nn.Module):
    """``layers.CoordConv``: ConvBNAct over the input plus two coordinate channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 act: str = "leaky_relu") -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels + 2, out_channels, kernel_size, stride, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, coordinate_channels(x)], dim=1))


class DropBlock(nn.Module):
    """``layers.DropBlock``: in train mode zero random ``block_size`` squares; identity in eval mode.

    Same gamma (block-centre rate), same growth of centres by a stride-1 max-pool and the same rescale
    (element count over kept count, over the whole batch), so the masks follow Paddle's distribution;
    the draws themselves come from torch's generator.
    """

    def __init__(self, block_size: int = 3, keep_prob: float = 0.9) -> None:
        super().__init__()
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"DropBlock block_size must be a positive odd number, got {block_size}")
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"DropBlock keep_prob must be in (0, 1], got {keep_prob}")
        self.block_size = block_size
        self.keep_prob = keep_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep_prob == 1.0:
            return x
        height, width = x.shape[2], x.shape[3]
        valid_h = max(height - self.block_size + 1, 1)
        valid_w = max(width - self.block_size + 1, 1)
        gamma = (1.0 - self.keep_prob) / self.block_size**2 * (height * width) / (valid_h * valid_w)
        centres = torch.bernoulli(torch.full_like(x, min(gamma, 1.0)))
        dropped = F.max_pool2d(centres, self.block_size, stride=1, padding=self.block_size // 2)
        keep = 1.0 - dropped
        scale = float(keep.numel()) / torch.clamp(keep.sum(), min=1.0)
        return x * keep * scale


class SPP(nn.Module):
    """``layers.SPP``: stride-1 max-pools (5, 9, 13) concatenated with the input, fused by a 1x1 ConvBNAct."""

    def __init__(self, in_channels: int, out_channels: int, pool_sizes: tuple[int, ...] = (5, 9, 13),
                 act: str = "leaky_relu") -> None:
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        self.fuse = ConvBNAct(in_channels * (len(self.pool_sizes) + 1), out_channels, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [F.max_pool2d(x, size, stride=1, padding=size // 2) for size in self.pool_sizes]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class SqueezeExcite(nn.Module):
    """``layers.SqueezeExcite``: avg-pool -> 1x1 + ReLU -> 1x1 -> hard-sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeezed = make_divisible(channels / reduction, 8)
        self.reduce = kaiming_conv(nn.Conv2d(channels, squeezed, 1))
        self.expand = kaiming_conv(nn.Conv2d(squeezed, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = F.relu(self.reduce(gate))
        gate = F.hardsigmoid(self.expand(gate))
        return x * gate


# -------------------------------------------------------------------------------------------------- backbones


class VdShortcut(nn.Module):
    """``backbones.VdShortcut``: 2x2 average pool (when downsampling) before the 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        # Paddle's AvgPool2D is "exclusive" (border windows average what they cover); so is torch's
        # ceil-mode window clipped at the border without padding.
        self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.project = ConvBNAct(in_channels, out_channels, 1, act="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.pool(x))


def _check_no_dcn(deformable: bool) -> None:
    if deformable:
        raise ValueError("the torch twin does not mirror deformable convolutions (ppyolo-r50-dcn)")


class BasicBlock(nn.Module):
    """``backbones.BasicBlock``: two 3x3 convs (the last with zero gamma) plus a shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, deformable: bool = False) -> None:
        super().__init__()
        _check_no_dcn(deformable)
        out_channels = channels * self.expansion
        self.conv1 = ConvBNAct(in_channels, channels, 3, stride, act="relu")
        self.conv2 = ConvBNAct(channels, out_channels, 3, 1, act="none", zero_gamma=True)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = VdShortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """``backbones.Bottleneck``: 1x1 -> 3x3 (stride) -> 1x1 x4 (zero gamma), plus a shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, deformable: bool = False) -> None:
        super().__init__()
        _check_no_dcn(deformable)
        out_channels = channels * self.expansion
        self.conv1 = ConvBNAct(in_channels, channels, 1, act="relu")
        self.conv2 = ConvBNAct(channels, channels, 3, stride, act="relu")
        self.conv3 = ConvBNAct(channels, out_channels, 1, act="none", zero_gamma=True)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = VdShortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


RESNET_LAYOUTS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
RESNET_STAGE_WIDTHS = (64, 128, 256, 512)


class ResNetVd(nn.Module):
    """``backbones.ResNetVd``: three-conv stem, four stages; returns stages 2-4 (strides 8, 16, 32)."""

    def __init__(self, depth: int = 18, in_channels: int = 3, dcn_last_stage: bool = False) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNetVd depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        _check_no_dcn(dcn_last_stage)
        block, blocks_per_stage = RESNET_LAYOUTS[depth]
        self.depth = depth
        self.stem = nn.Sequential(
            ConvBNAct(in_channels, 32, 3, stride=2),
            ConvBNAct(32, 32, 3),
            ConvBNAct(32, 64, 3),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        channels_in = 64
        for index, (width, num_blocks) in enumerate(zip(RESNET_STAGE_WIDTHS, blocks_per_stage)):
            first_stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(num_blocks):
                blocks.append(block(channels_in, width, first_stride if block_index == 0 else 1))
                channels_in = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels: list[int] = [width * block.expansion for width in RESNET_STAGE_WIDTHS[1:]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index >= 1:
                outputs.append(x)
        return outputs


RE, HS = "relu", "hardswish"
# (kernel, expanded, out, use_se, act, stride): backbones.MOBILENETV3_LARGE / _SMALL.
MOBILENETV3_LARGE = (
    (3, 16, 16, False, RE, 1), (3, 64, 24, False, RE, 2), (3, 72, 24, False, RE, 1),
    (5, 72, 40, True, RE, 2), (5, 120, 40, True, RE, 1), (5, 120, 40, True, RE, 1),
    (3, 240, 80, False, HS, 2), (3, 200, 80, False, HS, 1), (3, 184, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1), (3, 480, 112, True, HS, 1), (3, 672, 112, True, HS, 1),
    (5, 672, 160, True, HS, 2), (5, 960, 160, True, HS, 1), (5, 960, 160, True, HS, 1),
)
MOBILENETV3_SMALL = (
    (3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
    (5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1),
    (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1), (5, 288, 96, True, HS, 2),
    (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1),
)
MOBILENETV3_VARIANTS = {"large": MOBILENETV3_LARGE, "small": MOBILENETV3_SMALL}


class InvertedResidual(nn.Module):
    """``backbones.InvertedResidual``: [1x1 expand] -> depthwise -> [SE] -> linear 1x1, residual if same shape."""

    def __init__(self, in_channels: int, expanded: int, out_channels: int, kernel_size: int, stride: int,
                 use_se: bool, act: str) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvBNAct(in_channels, expanded, 1, act=act))
        layers.append(ConvBNAct(expanded, expanded, kernel_size, stride, groups=expanded, act=act))
        if use_se:
            layers.append(SqueezeExcite(expanded))
        layers.append(ConvBNAct(expanded, out_channels, 1, act="none", zero_gamma=self.use_residual))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


class MobileNetV3(nn.Module):
    """``backbones.MobileNetV3``: returns the last block output at strides 8, 16 and 32."""

    def __init__(self, variant: str = "small", width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if variant not in MOBILENETV3_VARIANTS:
            raise ValueError(f"MobileNetV3 variant must be one of {sorted(MOBILENETV3_VARIANTS)}, got {variant!r}")
        if width <= 0:
            raise ValueError(f"MobileNetV3 width must be positive, got {width}")
        self.variant = variant
        stem_channels = make_divisible(16 * width)
        self.stem = ConvBNAct(in_channels, stem_channels, 3, stride=2, act=HS)
        blocks: list[nn.Module] = []
        block_strides: list[int] = []
        block_channels: list[int] = []
        channels, stride = stem_channels, 2
        for kernel_size, expanded_base, out_base, use_se, act, block_stride in MOBILENETV3_VARIANTS[variant]:
            out = make_divisible(out_base * width)
            expanded = make_divisible(expanded_base * width)
            blocks.append(InvertedResidual(channels, expanded, out, kernel_size, block_stride, use_se, act))
            channels, stride = out, stride * block_stride
            block_strides.append(stride)
            block_channels.append(out)
        self.blocks = nn.ModuleList(blocks)
        self.output_indices: list[int] = [
            max(i for i, s in enumerate(block_strides) if s == wanted) for wanted in (8, 16, 32)
        ]
        self.out_channels: list[int] = [block_channels[i] for i in self.output_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.output_indices:
                outputs.append(x)
        return outputs


# ------------------------------------------------------------------------------------------------------ necks


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """``necks.upsample2x``: nearest-neighbour 2x."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _check_three_levels(name: str, in_channels: Sequence[int]) -> list[int]:
    if len(in_channels) != 3:
        raise ValueError(f"{name} expects 3 input levels (strides 8, 16, 32), got in_channels={list(in_channels)}")
    return [int(c) for c in in_channels]


class PPYOLODetectionBlock(nn.Module):
    """``necks.PPYOLODetectionBlock``: the YOLOv3 conv set (SPP, CoordConv, DropBlock) -> (route, tip)."""

    def __init__(self, in_channels: int, out_channels: int, spp: bool, coord_conv: bool, drop_block: bool,
                 block_size: int, keep_prob: float, act: str = "leaky_relu") -> None:
        super().__init__()
        mid = out_channels // 2

        def pointwise(c_in: int, c_out: int) -> nn.Module:
            return CoordConv(c_in, c_out, 1, act=act) if coord_conv else ConvBNAct(c_in, c_out, 1, act=act)

        self.body = nn.Sequential(
            pointwise(in_channels, mid),
            ConvBNAct(mid, out_channels, 3, act=act),
            SPP(out_channels, mid, act=act) if spp else ConvBNAct(out_channels, mid, 1, act=act),
            ConvBNAct(mid, out_channels, 3, act=act),
            DropBlock(block_size, keep_prob) if drop_block else nn.Identity(),
        )
        self.route = pointwise(out_channels, mid)
        self.tip = ConvBNAct(mid, out_channels, 3, act=act)
        self.route_channels = mid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        route = self.route(self.body(x))
        return route, self.tip(route)


class PPYOLOFPN(nn.Module):
    """``necks.PPYOLOFPN``: top-down from stride 32; returns the tips ordered stride 8, 16, 32."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int] = (64, 128, 256), spp: bool = True,
                 coord_conv: bool = True, drop_block: bool = True, block_size: int = 3,
                 keep_prob: float = 0.9) -> None:
        super().__init__()
        in_channels = _check_three_levels("PPYOLOFPN", in_channels)
        out_channels = [int(c) for c in out_channels]
        if len(out_channels) != 3 or any(c < 2 or c % 2 for c in out_channels):
            raise ValueError(f"PPYOLOFPN out_channels must be 3 even widths, got {out_channels}")
        blocks: list[PPYOLODetectionBlock] = []
        laterals: list[nn.Module] = []
        for level in (2, 1, 0):
            block_in = in_channels[level]
            if level < 2:
                lateral_out = out_channels[level] // 2
                laterals.append(ConvBNAct(blocks[-1].route_channels, lateral_out, 1, act="leaky_relu"))
                block_in += lateral_out
            blocks.append(PPYOLODetectionBlock(block_in, out_channels[level], spp=spp and level == 2,
                                               coord_conv=coord_conv, drop_block=drop_block,
                                               block_size=block_size, keep_prob=keep_prob))
        self.blocks = nn.ModuleList(blocks)
        self.laterals = nn.ModuleList(laterals)
        self.out_channels: list[int] = out_channels

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        route, tip = self.blocks[0](feats[2])
        tips = [tip]
        for step, level in enumerate((1, 0)):
            upsampled = upsample2x(self.laterals[step](route))
            route, tip = self.blocks[step + 1](torch.cat([upsampled, feats[level]], dim=1))
            tips.append(tip)
        return tips[::-1]


class LiteFPN(nn.Module):
    """``necks.LiteFPN``: 1x1 laterals, top-down add + depthwise-separable smoothing, optional PAN."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 96, bottom_up: bool = True,
                 act: str = "hardswish") -> None:
        super().__init__()
        in_channels = _check_three_levels("LiteFPN", in_channels)
        width = int(out_channels)
        self.laterals = nn.ModuleList([ConvBNAct(c, width, 1, act=act) for c in in_channels])
        self.top_down_smooth = nn.ModuleList([DepthwiseSeparableConv(width, width, 3, act=act) for _ in range(2)])
        self.bottom_up = bottom_up
        if bottom_up:
            self.downsamples = nn.ModuleList(
                [ConvBNAct(width, width, 3, stride=2, groups=width, act=act) for _ in range(2)])
            self.bottom_up_smooth = nn.ModuleList(
                [DepthwiseSeparableConv(width, width, 3, act=act) for _ in range(2)])
        self.out_channels: list[int] = [width, width, width]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = (lateral(f) for lateral, f in zip(self.laterals, feats))
        p4 = self.top_down_smooth[1](p4 + upsample2x(p5))
        p3 = self.top_down_smooth[0](p3 + upsample2x(p4))
        if not self.bottom_up:
            return [p3, p4, p5]
        n4 = self.bottom_up_smooth[0](p4 + self.downsamples[0](p3))
        n5 = self.bottom_up_smooth[1](p5 + self.downsamples[1](n4))
        return [p3, n4, n5]


# ------------------------------------------------------------------------------------------------------ heads


def _prediction_conv(in_channels: int, out_channels: int, bias: np.ndarray) -> nn.Conv2d:
    """A 1x1 prediction conv: N(0, 0.01) weights (Paddle ``Normal(0.0, 0.01)``) and the given bias."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, 0.0, 0.01)
    with torch.no_grad():
        conv.bias.copy_(torch.from_numpy(bias))
    return conv


class GFLHead(nn.Module):
    """``gfl_head.GFLHead``: per level a tower (``blocks``) and one 1x1 conv (``predictions``)."""

    def __init__(self, in_channels: list[int], num_classes: int, reg_max: int, block: str = "depthwise",
                 hidden_channels: list[int] | None = None, act: str = "hardswish", prior_prob: float = 0.01,
                 depth: int = 1, kernel: int = 3) -> None:
        super().__init__()
        hidden_channels = list(hidden_channels or in_channels)
        if len(hidden_channels) != len(in_channels):
            raise ValueError(f"hidden_channels {hidden_channels} must have one entry per level {in_channels}")
        if block not in ("depthwise", "conv"):
            raise ValueError(f"block must be 'depthwise' or 'conv', got {block!r}")
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.out_channels = gfl_channels(num_classes, reg_max)
        self.blocks = nn.ModuleList()
        self.predictions = nn.ModuleList()
        for in_c, hidden in zip(in_channels, hidden_channels):
            layers: list[nn.Module] = []
            channels = in_c
            for _ in range(depth):
                if block == "depthwise":
                    layers.append(DepthwiseSeparableConv(channels, hidden, kernel, act=act))
                else:
                    layers.append(ConvBNAct(channels, hidden, kernel, act=act))
                channels = hidden
            self.blocks.append(nn.Sequential(*layers))
            bias = np.zeros(self.out_channels, dtype=np.float32)
            bias[:num_classes] = np.log(prior_prob / (1.0 - prior_prob))
            self.predictions.append(_prediction_conv(channels, self.out_channels, bias))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.blocks):
            raise ValueError(f"GFLHead expects {len(self.blocks)} feature maps, got {len(features)}")
        return [prediction(block(x)) for x, block, prediction in zip(features, self.blocks, self.predictions)]


class YOLOHead(nn.Module):
    """``head.YOLOHead``: per level an optional conv block, then a 1x1 conv to A * K channels."""

    def __init__(self, in_channels: list[int], num_anchors: int, num_classes: int, iou_aware: bool = True,
                 block: str = "conv", hidden_channels: list[int] | None = None, act: str = "leaky_relu",
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        hidden_channels = list(hidden_channels or in_channels)
        if len(hidden_channels) != len(in_channels):
            raise ValueError(f"hidden_channels {hidden_channels} must have one entry per level {in_channels}")
        if block not in ("conv", "depthwise", "none"):
            raise ValueError(f"block must be 'conv', 'depthwise' or 'none', got {block!r}")
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.iou_aware = iou_aware
        per_anchor = channels_per_anchor(num_classes, iou_aware)
        self.out_channels = num_anchors * per_anchor
        bias = np.zeros((num_anchors, per_anchor), dtype=np.float32)
        bias[:, OBJ] = np.log(prior_prob / (1.0 - prior_prob))
        self.blocks = nn.ModuleList()
        self.predictions = nn.ModuleList()
        for in_c, hidden in zip(in_channels, hidden_channels):
            if block == "conv":
                self.blocks.append(ConvBNAct(in_c, hidden, 3, act=act))
            elif block == "depthwise":
                self.blocks.append(DepthwiseSeparableConv(in_c, hidden, 3, act=act))
            else:
                self.blocks.append(nn.Identity())
                hidden = in_c
            self.predictions.append(_prediction_conv(hidden, self.out_channels, bias.reshape(-1)))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.blocks):
            raise ValueError(f"YOLOHead expects {len(self.blocks)} feature maps, got {len(features)}")
        return [prediction(block(x)) for x, block, prediction in zip(features, self.blocks, self.predictions)]


# --------------------------------------------------------------------------------------------------- detector


class TorchDetector(nn.Module):
    """``detector.YOLODetector``: backbone -> neck -> head, with the config it was built from."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.cfg = cfg

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Neck outputs, one per stride (what feature distillation compares)."""
        return self.neck(self.backbone(images))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw head maps, one per stride: (B, A*K, H, W) (yolo) or (B, C + 4(R+1), H, W) (gfl)."""
        return self.head(self.features(images))

    def decode(self, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``decode(outputs, self.cfg)``."""
        return decode(outputs, self.cfg)

    def postprocess(self, outputs: list[torch.Tensor], score_threshold: float = 0.05, nms_threshold: float = 0.5,
                    max_detections: int = 100, method: NmsMethod = "hard"
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``postprocess(outputs, self.cfg, ...)``."""
        return postprocess(outputs, self.cfg, score_threshold, nms_threshold, max_detections, method)


def build_torch_model(cfg: ModelConfig) -> TorchDetector:
    """``detector.build_model`` in torch: the detector named by ``cfg.arch`` / ``cfg.head`` for
    ``cfg.in_channels`` input channels (the input layout's channel count)."""
    spec = cfg.arch_spec
    if spec.family == "ppyolo":
        if spec.dcn:
            raise ValueError(f"arch: {cfg.arch!r}: the torch twin does not mirror deformable convolutions; "
                             f"use ppyolo-r18, ppyolo-r34 or ppyolo-r50")
        backbone: nn.Module = ResNetVd(spec.resnet_depth, in_channels=cfg.in_channels)
        neck: nn.Module = PPYOLOFPN(backbone.out_channels, out_channels=PPYOLO_FPN_WIDTHS[spec.resnet_depth])
    else:
        backbone = MobileNetV3(spec.mobilenet_variant, width=spec.width, in_channels=cfg.in_channels)
        neck = LiteFPN(backbone.out_channels, out_channels=LITE_FPN_WIDTH)
    head: nn.Module
    if cfg.head == "gfl":
        if spec.family == "ppyolo":
            head = GFLHead(neck.out_channels, cfg.num_classes, cfg.reg_max, block="conv", act="leaky_relu",
                           depth=cfg.gfl_tower_depth, kernel=cfg.gfl_tower_kernel)
        else:
            head = GFLHead(neck.out_channels, cfg.num_classes, cfg.reg_max, block="depthwise", act="hardswish",
                           depth=cfg.gfl_tower_depth, kernel=cfg.gfl_tower_kernel)
    elif spec.family == "ppyolo":
        head = YOLOHead(neck.out_channels, cfg.num_anchors, cfg.num_classes, cfg.iou_aware, block="none")
    else:
        head = YOLOHead(neck.out_channels, cfg.num_anchors, cfg.num_classes, cfg.iou_aware, block="depthwise",
                        act="hardswish")
    return TorchDetector(backbone, neck, head, cfg)


# -------------------------------------------------------------------------------------------- weight exchange

_TORCH_TO_PADDLE_BUFFER = {"running_mean": "_mean", "running_var": "_variance"}
_PADDLE_TO_TORCH_BUFFER = {paddle: torch_name for torch_name, paddle in _TORCH_TO_PADDLE_BUFFER.items()}


def _paddle_name(torch_name: str) -> str | None:
    """The Paddle ``state_dict`` key of a torch one; None for torch-only entries (``num_batches_tracked``)."""
    prefix, _, leaf = torch_name.rpartition(".")
    if leaf == "num_batches_tracked":
        return None
    leaf = _TORCH_TO_PADDLE_BUFFER.get(leaf, leaf)
    return f"{prefix}.{leaf}" if prefix else leaf


def unwrap(model: nn.Module) -> nn.Module:
    """The detector inside ``torch.compile`` (``_orig_mod``) and (Distributed)DataParallel (``module``)
    wrappers, whose ``state_dict`` keys carry the wrapper's prefix."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def paddle_state_names(model: nn.Module) -> dict[str, str]:
    """Paddle key -> torch key for every exchanged entry of ``model.state_dict()`` (wrappers unwrapped)."""
    model = unwrap(model)
    names = {}
    for torch_name in model.state_dict():
        paddle_name = _paddle_name(torch_name)
        if paddle_name is not None:
            names[paddle_name] = torch_name
    return names


def to_paddle_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's weights and BatchNorm running statistics as float32 numpy arrays keyed by the Paddle
    ``state_dict`` names, in Paddle layout (conv weights share torch's (out, in/groups, kh, kw) layout and
    there are no ``nn.Linear`` layers, so no array is transposed). Wrappers are unwrapped (``unwrap``)."""
    model = unwrap(model)
    state = model.state_dict()
    return {paddle_name: state[torch_name].detach().to("cpu", torch.float32).numpy().copy()
            for paddle_name, torch_name in paddle_state_names(model).items()}


def load_paddle_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray], strict: bool = True) -> None:
    """Copy Paddle-named arrays (``to_paddle_arrays`` or a Paddle ``state_dict`` as numpy) into ``model``.

    A shape mismatch always raises; with ``strict`` so do missing and unexpected keys. The ValueError
    names every offending key (with both shapes for a mismatch). Values are cast to each tensor's dtype
    and device; ``num_batches_tracked`` is left as it is. Wrappers are unwrapped (``unwrap``).
    """
    model = unwrap(model)
    names = paddle_state_names(model)
    state = model.state_dict()
    missing = sorted(set(names) - set(arrays))
    unexpected = sorted(set(arrays) - set(names))
    mismatched = []
    for paddle_name in sorted(set(names) & set(arrays)):
        expected = tuple(state[names[paddle_name]].shape)
        got = tuple(np.shape(arrays[paddle_name]))
        if expected != got:
            mismatched.append(f"{paddle_name}: expected shape {expected}, got {got}")
    problems = []
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched))
    if strict and missing:
        problems.append(f"missing keys: {missing}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if problems:
        raise ValueError("load_paddle_arrays: " + " | ".join(problems))
    with torch.no_grad():
        for paddle_name in sorted(set(names) & set(arrays)):
            target = state[names[paddle_name]]
            target.copy_(torch.as_tensor(np.asarray(arrays[paddle_name])).to(target.device, target.dtype))


def intersection_and_union(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union areas of corresponding xyxy boxes (..., 4) -> (...), (...), differentiable: the
    common part of the YOLO loss's IoU (``yolo_loss.aligned_iou``) and the GFL loss's GIoU (``losses.giou``)."""
    top_left = torch.maximum(boxes_a[..., :2], boxes_b[..., :2])
    bottom_right = torch.minimum(boxes_a[..., 2:], boxes_b[..., 2:])
    wh = torch.clamp(bottom_right - top_left, min=0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (boxes_a[..., 2] - boxes_a[..., 0]) * (boxes_a[..., 3] - boxes_a[..., 1])
    area_b = (boxes_b[..., 2] - boxes_b[..., 0]) * (boxes_b[..., 3] - boxes_b[..., 1])
    return inter, area_a + area_b - inter


def as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor (on any device) or an array -> a CPU numpy array: the losses build their targets with the numpy
    assigners of ``inspector.models`` (``yolo_targets``, ``assign``), shared with Paddle."""
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


# ----------------------------------------------------------------------------------------------------- decoding


@functools.lru_cache(maxsize=64)
def gfl_constant_tensors(height: int, width: int, stride: int, reg_max: int, device: torch.device | str = "cpu"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``gfl_head.gfl_constant_arrays`` as tensors: points (1, 2, H*W) x then y, projection (1, 1, R+1, 1).
    Cached per shape and device (validation decodes the same shapes every batch); never modified."""
    points, projection = gfl_constant_arrays(height, width, stride, reg_max)
    return torch.from_numpy(points).to(device), torch.from_numpy(projection).to(device)


def decode_gfl_outputs(outputs: list[torch.Tensor], cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``gfl_head.decode_gfl_outputs``: boxes (B, K, 4) xyxy input pixels, scores (B, K, C); K = sum H*W,
    level by level, cells row-major."""
    bins = cfg.reg_max + 1
    all_boxes, all_scores = [], []
    for output, stride in zip(outputs, cfg.strides):
        batch, _, height, width = output.shape
        points, projection = gfl_constant_tensors(height, width, stride, cfg.reg_max, str(output.device))
        flat = output.reshape(batch, gfl_channels(cfg.num_classes, cfg.reg_max), -1)
        cls, dist = torch.split(flat, [cfg.num_classes, 4 * bins], dim=1)
        probabilities = F.softmax(dist.reshape(batch, 4, bins, -1), dim=2)
        distances = (probabilities * projection.to(probabilities.dtype)).sum(dim=2)  # (B, 4, HW)
        left_top, right_bottom = torch.split(distances, 2, dim=1)
        corners = torch.cat([points - left_top, points + right_bottom], dim=1)
        all_boxes.append(corners.transpose(1, 2))
        all_scores.append(torch.sigmoid(cls).transpose(1, 2))
    return torch.cat(all_boxes, dim=1), torch.cat(all_scores, dim=1)


@functools.lru_cache(maxsize=64)
def level_constant_tensors(height: int, width: int, anchors: tuple[tuple[float, float], ...], stride: int,
                           scale_x_y: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``postprocess.level_constant_arrays`` as tensors: offsets (1, 1, 2, H*W), half anchors (1, A, 2, 1).
    Cached per shape, anchors and device; never modified."""
    offsets, half_anchors = level_constant_arrays(height, width, list(anchors), stride, scale_x_y)
    return torch.from_numpy(offsets).to(device), torch.from_numpy(half_anchors).to(device)


def decode_yolo_outputs(outputs: list[torch.Tensor], cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``postprocess.decode_outputs``: boxes (B, K, 4), scores (B, K, C); K ordered level, anchor, cell."""
    per_anchor = channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    sections = [2, 2, 1] + ([1] if cfg.iou_aware else []) + [cfg.num_classes]
    all_boxes, all_scores = [], []
    for output, anchors, stride in zip(outputs, cfg.anchors, cfg.strides):
        batch, _, height, width = output.shape
        offsets, half_anchors = level_constant_tensors(height, width, tuple(map(tuple, anchors)), stride,
                                                       cfg.scale_x_y, str(output.device))
        grouped = output.reshape(batch, cfg.num_anchors, per_anchor, -1)
        xy, wh, obj, *rest = torch.split(grouped, sections, dim=2)
        centres = torch.sigmoid(xy) * (cfg.scale_x_y * stride) + offsets
        half_sizes = torch.exp(torch.clamp(wh, max=MAX_LOG_SCALE)) * half_anchors
        corners = torch.cat([centres - half_sizes, centres + half_sizes], dim=2)
        confidence = torch.sigmoid(obj)
        if cfg.iou_aware:
            iou, cls = rest
            a = cfg.iou_aware_factor
            if a == 0.5:  # as inspector.models.postprocess (a sqrt, for Paddle Lite's ARM threads)
                confidence = torch.sqrt(confidence * torch.sigmoid(iou))
            else:
                confidence = torch.pow(confidence, 1.0 - a) * torch.pow(torch.sigmoid(iou), a)
        else:
            (cls,) = rest
        scores = confidence * torch.sigmoid(cls)
        all_boxes.append(corners.transpose(2, 3).reshape(batch, -1, 4))
        all_scores.append(scores.transpose(2, 3).reshape(batch, -1, cfg.num_classes))
    return torch.cat(all_boxes, dim=1), torch.cat(all_scores, dim=1)


def decode(outputs: list[torch.Tensor], cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``YOLODetector.decode``: ``(boxes (B, K, 4) xyxy input pixels, scores (B, K, C))`` for either head."""
    if cfg.head == "gfl":
        return decode_gfl_outputs(outputs, cfg)
    return decode_yolo_outputs(outputs, cfg)


def _torchvision_nms():
    try:
        from torchvision.ops import batched_nms
    except ImportError:  # the CPU test venv may lack torchvision
        return None
    return batched_nms


def select_detections_torch(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float = 0.05,
                            nms_threshold: float = 0.5, max_detections: int = 100, pre_nms_top_k: int = 1000
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``nms.select_detections`` with hard NMS, on the tensors' device with ``torchvision.ops.batched_nms``.

    The same candidates (every (box, class) above ``score_threshold``, row-major; the best
    ``pre_nms_top_k`` by a stable sort), the same per-class greedy suppression (a box goes when its IoU
    with a better one of its class exceeds ``nms_threshold``), best first, at most ``max_detections``.
    Falls back to the numpy ``select_detections`` when torchvision is absent.
    """
    batched_nms = _torchvision_nms()
    if batched_nms is None:
        return select_detections(boxes.detach().float().cpu().numpy(), scores.detach().float().cpu().numpy(),
                                 score_threshold, nms_threshold, max_detections, "hard", pre_nms_top_k)
    boxes = boxes.detach().float().reshape(-1, 4)
    scores = scores.detach().float()
    box_index, class_index = torch.nonzero(scores > score_threshold, as_tuple=True)
    candidate_scores = scores[box_index, class_index]
    if candidate_scores.numel() > pre_nms_top_k:
        best = torch.sort(candidate_scores, descending=True, stable=True).indices[:pre_nms_top_k]
        box_index, class_index, candidate_scores = box_index[best], class_index[best], candidate_scores[best]
    candidate_boxes = boxes[box_index]
    keep = batched_nms(candidate_boxes, candidate_scores, class_index, nms_threshold)[:max(max_detections, 0)]
    return (candidate_boxes[keep].cpu().numpy().astype(np.float32).reshape(-1, 4),
            candidate_scores[keep].cpu().numpy().astype(np.float32),
            class_index[keep].cpu().numpy().astype(np.int64))


def postprocess(outputs: list[torch.Tensor], cfg: ModelConfig, score_threshold: float = 0.05,
                nms_threshold: float = 0.5, max_detections: int = 100, method: NmsMethod = "hard"
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``YOLODetector.postprocess``: per image numpy ``(boxes (N, 4) float32, scores (N,) float32,
    classes (N,) int64)`` after NMS, in input pixels, with Paddle's defaults (score 0.05, hard NMS at IoU
    0.5, 100 detections, 1000 candidates before NMS). Hard NMS runs on the outputs' device (torchvision);
    the other methods ("agnostic", "matrix") run the numpy NMS of ``inspector.models.nms``, as Paddle does."""
    with torch.no_grad():
        boxes, scores = decode(outputs, cfg)
    if method == "hard":
        return [select_detections_torch(b, s, score_threshold, nms_threshold, max_detections)
                for b, s in zip(boxes, scores)]
    return [select_detections(b, s, score_threshold, nms_threshold, max_detections, method)
            for b, s in zip(boxes.float().cpu().numpy(), scores.float().cpu().numpy())]
