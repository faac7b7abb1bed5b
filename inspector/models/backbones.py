"""Detector backbones: ResNet-vd (the teacher) and MobileNetV3 (the student).

Both take an image tensor (B, C, H, W) with H and W multiples of 32 and C = 3 (image) or 6 (image and
its defect-free template stacked), and return three feature maps at strides 8, 16 and 32, in that
order; ``out_channels`` lists their channel counts. Nothing is pretrained: initialisation is set up
for training from scratch (see ``layers.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import paddle
import paddle.nn as nn

from inspector.models.layers import (
    ConvBNAct,
    DeformableConvBNAct,
    SqueezeExcite,
    make_divisible,
)

# ----------------------------------------------------------------------------------------------
# ResNet-vd
# ----------------------------------------------------------------------------------------------


def conv3x3_bn(
    in_channels: int, out_channels: int, stride: int, act: str, zero_gamma: bool = False, deformable: bool = False
) -> nn.Layer:
    """A 3x3 ConvBNAct, or its deformable (DCNv2) counterpart when ``deformable``."""
    if deformable:
        return DeformableConvBNAct(in_channels, out_channels, 3, stride, act=act, zero_gamma=zero_gamma)
    return ConvBNAct(in_channels, out_channels, 3, stride, act=act, zero_gamma=zero_gamma)


class VdShortcut(nn.Layer):
    """The ResNet-D shortcut: when downsampling, average-pool 2x2 *before* the 1x1 projection.

    The original ResNet projects with a strided 1x1 conv, which simply ignores three quarters of
    the input; pooling first lets every activation contribute ("Bag of Tricks", He et al. 2019).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2D(2, stride=2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.project = ConvBNAct(in_channels, out_channels, 1, act="none")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.project(self.pool(x))


class BasicBlock(nn.Layer):
    """Two 3x3 convs plus a shortcut (ResNet-18/34). The last BN starts at zero, so the block starts
    as the identity and a deep stack trains like a shallow one at first (Goyal et al. 2017)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, deformable: bool = False) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv3x3_bn(in_channels, channels, stride, act="relu", deformable=deformable)
        self.conv2 = conv3x3_bn(channels, out_channels, 1, act="none", zero_gamma=True, deformable=deformable)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = VdShortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Layer):
    """1x1 reduce -> 3x3 (carries the stride, ResNet-B) -> 1x1 expand x4, plus a shortcut (ResNet-50).
    The last BN starts at zero, as in ``BasicBlock``."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, deformable: bool = False) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = ConvBNAct(in_channels, channels, 1, act="relu")
        self.conv2 = conv3x3_bn(channels, channels, stride, act="relu", deformable=deformable)
        self.conv3 = ConvBNAct(channels, out_channels, 1, act="none", zero_gamma=True)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = VdShortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


# depth -> (block type, blocks per stage); stage widths are always 64, 128, 256, 512.
RESNET_LAYOUTS: dict[int, tuple[type[nn.Layer], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
RESNET_STAGE_WIDTHS = (64, 128, 256, 512)


class ResNetVd(nn.Layer):
    """ResNet-vd ("Bag of Tricks" ResNet-D) returning stages 2-4 (strides 8, 16, 32).

    Differences from the original ResNet: the 7x7 stem is three 3x3 convs (32, 32, 64 channels,
    cheaper for the same receptive field), the stride of a bottleneck sits in its 3x3 conv, and
    downsampling shortcuts average-pool before projecting. With ``dcn_last_stage`` every 3x3 conv
    of the last stage is deformable, which helps with irregular defect shapes at little cost since
    that stage runs at 1/32 resolution.
    """

    def __init__(self, depth: int = 18, in_channels: int = 3, dcn_last_stage: bool = False) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNetVd depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        block, blocks_per_stage = RESNET_LAYOUTS[depth]
        self.depth = depth
        self.stem = nn.Sequential(
            ConvBNAct(in_channels, 32, 3, stride=2),
            ConvBNAct(32, 32, 3),
            ConvBNAct(32, 64, 3),
            nn.MaxPool2D(3, stride=2, padding=1),
        )
        stages = []
        channels_in = 64
        for index, (width, num_blocks) in enumerate(zip(RESNET_STAGE_WIDTHS, blocks_per_stage)):
            is_last = index == len(RESNET_STAGE_WIDTHS) - 1
            first_stride = 1 if index == 0 else 2  # the stem already brought us to stride 4
            blocks = []
            for block_index in range(num_blocks):
                stride = first_stride if block_index == 0 else 1
                blocks.append(block(channels_in, width, stride, deformable=dcn_last_stage and is_last))
                channels_in = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.LayerList(stages)
        self.out_channels: list[int] = [width * block.expansion for width in RESNET_STAGE_WIDTHS[1:]]

    def forward(self, x: paddle.Tensor) -> list[paddle.Tensor]:
        x = self.stem(x)
        outputs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index >= 1:  # stages 2, 3, 4 -> strides 8, 16, 32
                outputs.append(x)
        return outputs


# ----------------------------------------------------------------------------------------------
# MobileNetV3
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvertedResidualSpec:
    """One row of the MobileNetV3 paper's architecture tables (Howard et al. 2019, Tables 1 and 2)."""

    kernel_size: int
    expanded: int  # "exp size"
    out: int  # "#out"
    use_se: bool  # "SE"
    act: str  # "NL": relu ("RE") or hardswish ("HS")
    stride: int


def _rows(*rows: tuple[int, int, int, bool, str, int]) -> tuple[InvertedResidualSpec, ...]:
    return tuple(InvertedResidualSpec(*row) for row in rows)


RE, HS = "relu", "hardswish"
# The bneck rows between the 3x3/2 16-channel stem and the final 1x1 conv (which we do not use:
# detection takes the last block output at each stride instead).
MOBILENETV3_LARGE = _rows(
    (3, 16, 16, False, RE, 1),
    (3, 64, 24, False, RE, 2),
    (3, 72, 24, False, RE, 1),
    (5, 72, 40, True, RE, 2),
    (5, 120, 40, True, RE, 1),
    (5, 120, 40, True, RE, 1),
    (3, 240, 80, False, HS, 2),
    (3, 200, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 480, 112, True, HS, 1),
    (3, 672, 112, True, HS, 1),
    (5, 672, 160, True, HS, 2),
    (5, 960, 160, True, HS, 1),
    (5, 960, 160, True, HS, 1),
)
MOBILENETV3_SMALL = _rows(
    (3, 16, 16, True, RE, 2),
    (3, 72, 24, False, RE, 2),
    (3, 88, 24, False, RE, 1),
    (5, 96, 40, True, HS, 2),
    (5, 240, 40, True, HS, 1),
    (5, 240, 40, True, HS, 1),
    (5, 120, 48, True, HS, 1),
    (5, 144, 48, True, HS, 1),
    (5, 288, 96, True, HS, 2),
    (5, 576, 96, True, HS, 1),
    (5, 576, 96, True, HS, 1),
)
MOBILENETV3_VARIANTS = {"large": MOBILENETV3_LARGE, "small": MOBILENETV3_SMALL}


class InvertedResidual(nn.Layer):
    """MobileNetV3 "bneck": 1x1 expand -> k x k depthwise (carries the stride) -> optional SE ->
    1x1 linear projection, with a residual add when shape is preserved. The expansion is skipped
    when it would not change the width (the first row of both tables)."""

    def __init__(
        self,
        in_channels: int,
        expanded: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        use_se: bool,
        act: str,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Layer] = []
        if expanded != in_channels:
            layers.append(ConvBNAct(in_channels, expanded, 1, act=act))
        layers.append(ConvBNAct(expanded, expanded, kernel_size, stride, groups=expanded, act=act))
        if use_se:
            layers.append(SqueezeExcite(expanded))
        # Linear bottleneck (no activation); zero gamma makes residual blocks start as the identity.
        layers.append(ConvBNAct(expanded, out_channels, 1, act="none", zero_gamma=self.use_residual))
        self.body = nn.Sequential(*layers)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


class MobileNetV3(nn.Layer):
    """MobileNetV3 (Howard et al. 2019) returning the last block output at strides 8, 16 and 32.

    ``width`` scales every channel count, rounded with ``make_divisible(.., 8)``. Outputs for
    width 1.0: small (24, 48, 96), large (40, 112, 160).
    """

    def __init__(self, variant: str = "small", width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if variant not in MOBILENETV3_VARIANTS:
            raise ValueError(f"MobileNetV3 variant must be one of {sorted(MOBILENETV3_VARIANTS)}, got {variant!r}")
        if width <= 0:
            raise ValueError(f"MobileNetV3 width must be positive, got {width}")
        self.variant = variant
        stem_channels = make_divisible(16 * width)
        self.stem = ConvBNAct(in_channels, stem_channels, 3, stride=2, act=HS)

        blocks: list[nn.Layer] = []
        block_strides: list[int] = []  # total stride after each block
        block_channels: list[int] = []
        channels, stride = stem_channels, 2
        for spec in MOBILENETV3_VARIANTS[variant]:
            out = make_divisible(spec.out * width)
            expanded = make_divisible(spec.expanded * width)
            blocks.append(
                InvertedResidual(channels, expanded, out, spec.kernel_size, spec.stride, spec.use_se, spec.act)
            )
            channels, stride = out, stride * spec.stride
            block_strides.append(stride)
            block_channels.append(out)
        self.blocks = nn.LayerList(blocks)

        # Output after the last block at each of the strides 8, 16, 32.
        self.output_indices: list[int] = [
            max(i for i, s in enumerate(block_strides) if s == wanted) for wanted in (8, 16, 32)
        ]
        self.out_channels: list[int] = [block_channels[i] for i in self.output_indices]

    def forward(self, x: paddle.Tensor) -> list[paddle.Tensor]:
        x = self.stem(x)
        outputs = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.output_indices:
                outputs.append(x)
        return outputs
