"""The YOLO detection head: per output level, a small conv block then a 1x1 prediction conv.

Output layout (the same for teacher and student, so response distillation can pair the maps
channel for channel): one map per stride of shape (B, A * K, H, W), where A is the number of
anchors per level and each anchor owns K consecutive channels

    [tx, ty, tw, th, obj, iou, cls_0 ... cls_{C-1}]      K = 6 + C   (iou-aware)
    [tx, ty, tw, th, obj, cls_0 ... cls_{C-1}]           K = 5 + C   (without the iou channel)

All are raw logits: tx/ty go through a sigmoid to the box centre inside its cell, tw/th are log
scales of the anchor, obj/iou/cls go through sigmoids (see ``postprocess.decode_level``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import paddle
import paddle.nn as nn
from paddle import ParamAttr
from paddle.nn.initializer import Normal

from inspector.models.head_layout import IOU, OBJ, TH, TW, TX, TY, channels_per_anchor
from inspector.models.layers import ConvBNAct, DepthwiseSeparableConv

# The channel offsets inside one anchor's group and ``channels_per_anchor`` (K in the layout above) live in the
# paddle-free ``head_layout.py``; importable from here as before.


@dataclass
class LevelPrediction:
    """One level's raw map split into its fields; every field is (B, A, H*W), ``cls`` (B, A, H*W, C)."""

    tx: paddle.Tensor
    ty: paddle.Tensor
    tw: paddle.Tensor
    th: paddle.Tensor
    obj: paddle.Tensor
    iou: paddle.Tensor | None  # None without the iou-aware channel
    cls: paddle.Tensor


def split_level(output: paddle.Tensor, num_anchors: int, num_classes: int, iou_aware: bool) -> LevelPrediction:
    """Split a raw head map (B, A*K, H, W) into its fields, flattening the H x W cells row-major.

    Only reshape / slice / transpose, with the batch and spatial sizes taken at run time, so this
    exports for any input size.
    """
    per_anchor = channels_per_anchor(num_classes, iou_aware)
    grouped = paddle.reshape(output, [0, num_anchors, per_anchor, -1])  # (B, A, K, H*W)
    first_class = 6 if iou_aware else 5
    return LevelPrediction(
        tx=grouped[:, :, TX],
        ty=grouped[:, :, TY],
        tw=grouped[:, :, TW],
        th=grouped[:, :, TH],
        obj=grouped[:, :, OBJ],
        iou=grouped[:, :, IOU] if iou_aware else None,
        cls=paddle.transpose(grouped[:, :, first_class:], [0, 1, 3, 2]),
    )


class YOLOHead(nn.Layer):
    """Per level: an optional conv block, then a 1x1 conv to ``num_anchors * K`` channels.

    ``block`` picks the per-level conv block in front of the prediction:
    - ``"conv"``: a 3x3 ConvBNAct to ``hidden_channels``;
    - ``"depthwise"``: depthwise 3x3 + pointwise 1x1 (the light student head, ~9x fewer weights);
    - ``"none"``: the prediction conv reads the neck directly; right after PP-YOLO's FPN, whose
      levels already end in a 3x3 "tip" conv, exactly as in PP-YOLO.
    ``hidden_channels`` (one per level) defaults to the input channels.

    The prediction conv starts with small weights and an objectness bias of logit(``prior_prob``):
    every cell first predicts "almost surely background", so the thousands of empty cells do not
    swamp the first steps of training with a huge objectness loss (Lin et al., RetinaNet, 2017).
    """

    def __init__(
        self,
        in_channels: list[int],
        num_anchors: int,
        num_classes: int,
        iou_aware: bool = True,
        block: Literal["conv", "depthwise", "none"] = "conv",
        hidden_channels: list[int] | None = None,
        act: str = "leaky_relu",
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        hidden_channels = list(hidden_channels or in_channels)
        if len(hidden_channels) != len(in_channels):
            raise ValueError(f"hidden_channels {hidden_channels} must have one entry per level {in_channels}")
        if block not in ("conv", "depthwise", "none"):
            raise ValueError(f"block must be 'conv', 'depthwise' or 'none', got {block!r}")
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.iou_aware = iou_aware
        self.out_channels = num_anchors * channels_per_anchor(num_classes, iou_aware)
        self.blocks = nn.LayerList()
        self.predictions = nn.LayerList()
        for in_c, hidden in zip(in_channels, hidden_channels):
            if block == "conv":
                self.blocks.append(ConvBNAct(in_c, hidden, 3, act=act))
            elif block == "depthwise":
                self.blocks.append(DepthwiseSeparableConv(in_c, hidden, 3, act=act))
            else:
                self.blocks.append(nn.Identity())
                hidden = in_c
            prediction = nn.Conv2D(hidden, self.out_channels, 1, weight_attr=ParamAttr(initializer=Normal(0.0, 0.01)))
            prediction.bias.set_value(self._initial_bias(prior_prob))
            self.predictions.append(prediction)

    def _initial_bias(self, prior_prob: float) -> np.ndarray:
        bias = np.zeros((self.num_anchors, channels_per_anchor(self.num_classes, self.iou_aware)), dtype=np.float32)
        bias[:, OBJ] = np.log(prior_prob / (1.0 - prior_prob))
        return bias.reshape(-1)

    def forward(self, features: list[paddle.Tensor]) -> list[paddle.Tensor]:
        if len(features) != len(self.blocks):
            raise ValueError(f"YOLOHead expects {len(self.blocks)} feature maps, got {len(features)}")
        return [prediction(block(x)) for x, block, prediction in zip(features, self.blocks, self.predictions)]
