"""The anchor-free GFL head (PP-PicoDet / PP-YOLOE family) and its in-graph decoding.

Why: the YOLOv3 head ranks boxes by objectness x class and regresses offsets of k-means anchors.
The GFL family (Li et al., Generalized Focal Loss, 2020; PP-PicoDet and PP-YOLOE build on it) drops the
anchors: every cell centre of a level ("anchor point") predicts

- per class, one *quality* logit: trained towards the IoU of the box it predicts (varifocal or quality
  focal loss), so the score that ranks detections already says how well the box fits;
- per box side (left, top, right, bottom), a distribution over ``reg_max + 1`` bins for the distance
  from the point to that side, in strides: the expectation is the distance, and the spread says how
  sure the head is (trained with the distribution focal loss, ``gfl_loss.py``; a teacher's distributions
  are what localization distillation transfers).

Output layout (the same contract as ``head.py``: one raw map per stride, all logits): per level a map of
shape (B, C + 4 * (reg_max + 1), H, W), channels

    [cls_0 ... cls_{C-1}, left_0 ... left_R, top_0 ... top_R, right_0 ... right_R, bottom_0 ... bottom_R]

with R = reg_max. Classification and distribution come out of one 1x1 prediction conv per level
(``head.predictions.{level}``, PicoDet's shared cls/reg branch), behind a per-level tower
(``head.blocks.{level}``) of ``cfg.gfl_tower_depth`` layers with ``cfg.gfl_tower_kernel`` kernels:
depthwise-separable for the student, plain convs at the neck's width for a teacher. The default, one
3x3 layer, costs what the YOLO head's block costs (an A/B of the heads at equal latency; measured on 2
cores, head forward+backward at batch 8, input 256: YOLO 0.33 s, GFL 3x3 x1 0.32 s, 3x3 x2 0.56 s,
PicoDet-S's 5x5 x2 0.88 s; Lite x86, 2 threads, input 320, the whole untrained student: 1.02-1.04 x the
YOLO student's latency, frame by frame alternately); deeper or wider towers are a setting. The names
match ``head.py``, so the pipeline's ``qat_skip_layers`` default (``head.predictions``) keeps the
prediction convs in FP32 for either head.

Decoding (``decode_gfl_outputs``, part of every exported graph): sigmoid of the class logits is the score;
softmax over each side's bins, times the bin distances ``0..R`` scaled by the stride (a constant
"projection" per level), summed: the side's distance in input pixels; the box is the anchor point
minus left/top, plus right/bottom. Only reshape, split, transpose, softmax, sigmoid, reduce-sum, concat
and elementwise arithmetic: operators Paddle Inference and Paddle Lite 2.13 both run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.base.layer_helper import LayerHelper
from paddle.framework import in_dynamic_or_pir_mode
from paddle.nn.initializer import Normal

from inspector.models.config import ModelConfig
from inspector.models.head_layout import anchor_points, gfl_channels, gfl_constant_arrays  # noqa: F401 (re-exported)
from inspector.models.layers import ConvBNAct, DepthwiseSeparableConv, sigmoid

# ``gfl_channels`` (the channels of one level's map), ``gfl_constant_arrays`` and ``anchor_points`` are numpy
# without paddle and live in ``head_layout.py`` (shared with the torch twin); importable from here as before.


class GFLHead(nn.Layer):
    """Per level: a conv tower (``blocks.{level}``), then one 1x1 conv (``predictions.{level}``) to
    C + 4 * (reg_max + 1) channels (see the module docstring for the layout).

    ``block``: ``"depthwise"`` (student: depthwise ``kernel`` x ``kernel`` + pointwise 1x1) or ``"conv"``
    (teacher: ``kernel`` x ``kernel`` ConvBNAct), ``depth`` of them. ``hidden_channels`` (one per level)
    defaults to the input channels.
    The class bias starts at logit(``prior_prob``): the thousands of background points begin near 0 and
    do not swamp the first steps (as in ``head.YOLOHead``); the distribution bias starts at 0, a uniform
    distribution, i.e. every side at reg_max / 2 strides.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        reg_max: int,
        block: Literal["depthwise", "conv"] = "depthwise",
        hidden_channels: list[int] | None = None,
        act: str = "hardswish",
        prior_prob: float = 0.01,
        depth: int = 1,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        hidden_channels = list(hidden_channels or in_channels)
        if len(hidden_channels) != len(in_channels):
            raise ValueError(f"hidden_channels {hidden_channels} must have one entry per level {in_channels}")
        if block not in ("depthwise", "conv"):
            raise ValueError(f"block must be 'depthwise' or 'conv', got {block!r}")
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.out_channels = gfl_channels(num_classes, reg_max)
        self.blocks = nn.LayerList()
        self.predictions = nn.LayerList()
        for in_c, hidden in zip(in_channels, hidden_channels):
            layers, channels = [], in_c
            for _ in range(depth):
                if block == "depthwise":
                    layers.append(DepthwiseSeparableConv(channels, hidden, kernel, act=act))
                else:
                    layers.append(ConvBNAct(channels, hidden, kernel, act=act))
                channels = hidden
            self.blocks.append(nn.Sequential(*layers))
            prediction = nn.Conv2D(channels, self.out_channels, 1, weight_attr=ParamAttr(initializer=Normal(0.0, 0.01)))
            bias = np.zeros(self.out_channels, dtype=np.float32)
            bias[:num_classes] = np.log(prior_prob / (1.0 - prior_prob))
            prediction.bias.set_value(bias)
            self.predictions.append(prediction)

    def forward(self, features: list[paddle.Tensor]) -> list[paddle.Tensor]:
        if len(features) != len(self.blocks):
            raise ValueError(f"GFLHead expects {len(self.blocks)} feature maps, got {len(features)}")
        return [prediction(block(x)) for x, block, prediction in zip(features, self.blocks, self.predictions)]


# --------------------------------------------------------------------------- anchor points and decoding


def reduce_sum(x: paddle.Tensor, axis: int) -> paddle.Tensor:
    """``paddle.sum(x, axis)`` that also works while exporting a legacy program: Paddle 3.3's Python
    ``paddle.sum`` accepts only dygraph tensors and PIR values there (see ``layers._unary_op``), so the
    ``reduce_sum`` operator is appended directly."""
    if in_dynamic_or_pir_mode():
        return paddle.sum(x, axis=axis)
    helper = LayerHelper("reduce_sum")
    out = helper.create_variable_for_type_inference(x.dtype)
    helper.append_op(type="reduce_sum", inputs={"X": [x]}, outputs={"Out": [out]},
                     attrs={"dim": [axis], "keep_dim": False, "reduce_all": False})
    return out


@dataclass
class GFLLevelConstants:
    """What decoding one level needs besides its map.

    ``points`` (1, 2, H*W): the cell centres ``(index + 0.5) * stride``, x then y, cells row-major;
    ``projection`` (1, 1, reg_max + 1, 1): the bin distances ``0..reg_max`` times the stride, in pixels.
    """

    points: paddle.Tensor
    projection: paddle.Tensor


def split_gfl_level(output: paddle.Tensor, num_classes: int, reg_max: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """A raw map (B, C + 4(R+1), H, W) -> class logits (B, H*W, C) and distribution logits (B, H*W, 4, R+1)."""
    flat = paddle.reshape(output, [0, gfl_channels(num_classes, reg_max), -1])
    cls, dist = paddle.split(flat, [num_classes, 4 * (reg_max + 1)], axis=1)
    cls = paddle.transpose(cls, [0, 2, 1])
    dist = paddle.transpose(paddle.reshape(dist, [0, 4, reg_max + 1, -1]), [0, 3, 1, 2])
    return cls, dist


def decode_gfl_level(output: paddle.Tensor, constants: GFLLevelConstants, cfg: ModelConfig
                     ) -> tuple[paddle.Tensor, paddle.Tensor]:
    """One level's raw map -> boxes (B, H*W, 4) xyxy input pixels and scores (B, H*W, C)."""
    bins = cfg.reg_max + 1
    flat = paddle.reshape(output, [0, gfl_channels(cfg.num_classes, cfg.reg_max), -1])  # (B, C + 4*bins, HW)
    cls, dist = paddle.split(flat, [cfg.num_classes, 4 * bins], axis=1)
    probabilities = F.softmax(paddle.reshape(dist, [0, 4, bins, -1]), axis=2)  # (B, 4, bins, HW)
    distances = reduce_sum(probabilities * constants.projection, 2)  # (B, 4, HW) pixels
    left_top, right_bottom = paddle.split(distances, 2, axis=1)
    corners = paddle.concat([constants.points - left_top, constants.points + right_bottom], axis=1)
    boxes = paddle.transpose(corners, [0, 2, 1])
    scores = paddle.transpose(sigmoid(cls), [0, 2, 1])
    return boxes, scores


def gfl_level_constants(output: paddle.Tensor, stride: int, reg_max: int) -> GFLLevelConstants:
    """``GFLLevelConstants`` for a map whose shape is known (dygraph); an export uses the detector's buffers."""
    points, projection = gfl_constant_arrays(int(output.shape[2]), int(output.shape[3]), stride, reg_max)
    return GFLLevelConstants(paddle.to_tensor(points), paddle.to_tensor(projection))


def decode_gfl_outputs(outputs: list[paddle.Tensor], cfg: ModelConfig,
                       constants: list[GFLLevelConstants] | None = None) -> tuple[paddle.Tensor, paddle.Tensor]:
    """All levels' raw maps -> ``(boxes (B, K, 4) xyxy input pixels, scores (B, K, C))``, K = sum of H*W,
    level by level, cells row-major (the order of ``anchor_points``)."""
    if constants is None:
        constants = [gfl_level_constants(o, stride, cfg.reg_max) for o, stride in zip(outputs, cfg.strides)]
    decoded = [decode_gfl_level(o, c, cfg) for o, c in zip(outputs, constants)]
    return paddle.concat([b for b, _ in decoded], axis=1), paddle.concat([s for _, s in decoded], axis=1)
