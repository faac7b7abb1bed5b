"""Detector necks: fuse the backbone's three feature maps (strides 8, 16, 32) top-down.

- ``PPYOLOFPN``: the teacher's neck, a YOLOv3 FPN with PP-YOLO's additions (SPP, CoordConv,
  DropBlock). Accurate but 3x3-conv heavy.
- ``LiteFPN``: the student's neck, 1x1 laterals + depthwise-separable smoothing at one common width,
  cheap enough for an ARM CPU.

Both take ``list[Tensor]`` ordered stride 8, 16, 32 and return a list in the same order, with the
per-level channel counts in ``out_channels``.
"""
from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from inspector.models.layers import SPP, ConvBNAct, CoordConv, DepthwiseSeparableConv, DropBlock


def _check_three_levels(name: str, in_channels: Sequence[int]) -> list[int]:
    if len(in_channels) != 3:
        raise ValueError(f"{name} expects 3 input levels (strides 8, 16, 32), got in_channels={list(in_channels)}")
    return [int(c) for c in in_channels]


def upsample2x(x: paddle.Tensor) -> paddle.Tensor:
    """Nearest-neighbour 2x upsampling (exact for inputs that are multiples of 32)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class PPYOLODetectionBlock(nn.Layer):
    """The YOLOv3 conv set of one FPN level, with PP-YOLO's tweaks.

    1x1 -> 3x3 -> 1x1 (or SPP on the deepest level) -> 3x3 -> DropBlock -> 1x1 "route" -> 3x3 "tip".
    The 1x1 convs work at half the level width. The route feeds the next, finer level; the tip is the
    level's output. CoordConv replaces the entry and route 1x1 convs when enabled.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spp: bool,
        coord_conv: bool,
        drop_block: bool,
        block_size: int,
        keep_prob: float,
        act: str = "leaky_relu",
    ) -> None:
        super().__init__()
        mid = out_channels // 2

        def pointwise(c_in: int, c_out: int) -> nn.Layer:
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

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        route = self.route(self.body(x))
        return route, self.tip(route)


class PPYOLOFPN(nn.Layer):
    """PP-YOLO style YOLOv3 FPN (Long et al. 2020).

    Starting from stride 32, each level runs a ``PPYOLODetectionBlock``; its route is reduced by a
    1x1 conv to the next level's half width, upsampled 2x and concatenated with the next backbone map.
    ``out_channels`` are the per-level output widths (stride 8, 16, 32); the defaults suit a ResNet18/34
    backbone (128, 256, 512) trained from scratch on a small data set on CPU. DropBlock only acts in
    training mode.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int] = (64, 128, 256),
        spp: bool = True,
        coord_conv: bool = True,
        drop_block: bool = True,
        block_size: int = 3,
        keep_prob: float = 0.9,
    ) -> None:
        super().__init__()
        in_channels = _check_three_levels("PPYOLOFPN", in_channels)
        out_channels = [int(c) for c in out_channels]
        if len(out_channels) != 3 or any(c < 2 or c % 2 for c in out_channels):
            raise ValueError(f"PPYOLOFPN out_channels must be 3 even widths, got {out_channels}")

        # Built deepest first, the order they run in; index 0 is stride 32.
        blocks, laterals = [], []
        for level in (2, 1, 0):
            block_in = in_channels[level]
            if level < 2:
                coarser_route = blocks[-1].route_channels
                lateral_out = out_channels[level] // 2
                laterals.append(ConvBNAct(coarser_route, lateral_out, 1, act="leaky_relu"))
                block_in += lateral_out
            blocks.append(
                PPYOLODetectionBlock(
                    block_in,
                    out_channels[level],
                    spp=spp and level == 2,
                    coord_conv=coord_conv,
                    drop_block=drop_block,
                    block_size=block_size,
                    keep_prob=keep_prob,
                )
            )
        self.blocks = nn.LayerList(blocks)
        self.laterals = nn.LayerList(laterals)
        self.out_channels: list[int] = out_channels

    def forward(self, feats: list[paddle.Tensor]) -> list[paddle.Tensor]:
        route, tip = self.blocks[0](feats[2])
        tips = [tip]
        for step, level in enumerate((1, 0)):
            upsampled = upsample2x(self.laterals[step](route))
            route, tip = self.blocks[step + 1](paddle.concat([upsampled, feats[level]], axis=1))
            tips.append(tip)
        return tips[::-1]  # stride 8, 16, 32


class LiteFPN(nn.Layer):
    """A light FPN (optionally PAN) for the student, all levels at one width ``out_channels``.

    1x1 ConvBNAct laterals bring every level to the common width; the top-down path upsamples and
    adds; a depthwise-separable 3x3 smooths each sum. With ``bottom_up`` (PAN, Liu et al. 2018) a
    stride-2 depthwise conv carries fine detail back up to the coarser levels, which helps localise
    small defects for a few extra depthwise layers. Only ops Paddle Lite runs fast on ARM are used.
    """

    def __init__(
        self, in_channels: Sequence[int], out_channels: int = 96, bottom_up: bool = True, act: str = "hardswish"
    ) -> None:
        super().__init__()
        in_channels = _check_three_levels("LiteFPN", in_channels)
        width = int(out_channels)
        self.laterals = nn.LayerList([ConvBNAct(c, width, 1, act=act) for c in in_channels])
        self.top_down_smooth = nn.LayerList([DepthwiseSeparableConv(width, width, 3, act=act) for _ in range(2)])
        self.bottom_up = bottom_up
        if bottom_up:
            self.downsamples = nn.LayerList(
                [ConvBNAct(width, width, 3, stride=2, groups=width, act=act) for _ in range(2)]
            )
            self.bottom_up_smooth = nn.LayerList(
                [DepthwiseSeparableConv(width, width, 3, act=act) for _ in range(2)]
            )
        self.out_channels: list[int] = [width, width, width]

    def forward(self, feats: list[paddle.Tensor]) -> list[paddle.Tensor]:
        p3, p4, p5 = (lateral(f) for lateral, f in zip(self.laterals, feats))
        # Top-down: stride 32 is already final; 16 and 8 receive the coarser context.
        p4 = self.top_down_smooth[1](p4 + upsample2x(p5))
        p3 = self.top_down_smooth[0](p3 + upsample2x(p4))
        if not self.bottom_up:
            return [p3, p4, p5]
        n4 = self.bottom_up_smooth[0](p4 + self.downsamples[0](p3))
        n5 = self.bottom_up_smooth[1](p5 + self.downsamples[1](n4))
        return [p3, n4, n5]
