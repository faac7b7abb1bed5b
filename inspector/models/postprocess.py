"""Decoding the raw head maps into boxes and scores (in-graph, exportable), then NMS (numpy).

Decoding, PP-YOLO style, for the anchor (pw, ph) at cell (i, j) of a level with stride s:

    cx = (sigmoid(tx) * k - (k - 1) / 2 + i) * s        k = scale_x_y (1.05, "grid sensitive":
    cy = (sigmoid(ty) * k - (k - 1) / 2 + j) * s        centres can reach the cell borders)
    w  = exp(tw) * pw,   h = exp(th) * ph
    score_c = obj^(1 - a) * iou^a * cls_c               a = iou_aware_factor (IoU-aware score)

The decode is part of every exported graph, so it is written for a small graph: x and y (and w
and h) are decoded together as one (B, A, 2, H*W) tensor, and the cell offsets and anchor sizes
come in as constant tensors (``LevelConstants``) instead of being rebuilt from the map's shape.
About 25 operators per level instead of ~70 with per-field slicing: on the DeepPCB student the INT8
ARM ``.nb`` went from 1.53 to 1.44 MB and Paddle Lite x86 ran 0.3-0.7 ms faster per frame (p50, 2
cores). Only operators that Paddle Inference and Paddle Lite both run (reshape, split, transpose,
concat, sigmoid, exp, sqrt, clip, elementwise arithmetic), no Python branching on tensor values, so
``paddle.jit.save`` exports it with the network.
The NMS itself is numpy (``inspector.models.nms``), shared with the runtime.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle

from inspector.models.anchors import Anchor
from inspector.models.config import ModelConfig
from inspector.models.head import LevelPrediction
from inspector.models.head_layout import MAX_LOG_SCALE, channels_per_anchor, level_constant_arrays
from inspector.models.layers import exp, sigmoid, sqrt  # legacy-program-safe (export for Paddle Lite)
from inspector.models.nms import NmsMethod, select_detections


@dataclass
class LevelConstants:
    """What decoding one level needs besides its map, as tensors.

    ``offsets`` (1, 1, 2, H*W): ``(cell index - (k - 1) / 2) * stride`` for x then y, cells row-major;
    ``half_anchors`` (1, A, 2, 1): half the anchor widths and heights, in input pixels.
    """

    offsets: paddle.Tensor
    half_anchors: paddle.Tensor


def level_constants(output: paddle.Tensor, anchors: list[Anchor], stride: int, scale_x_y: float) -> LevelConstants:
    """``LevelConstants`` for a map whose shape is known (dygraph); an export uses the detector's buffers."""
    offsets, half_anchors = level_constant_arrays(int(output.shape[2]), int(output.shape[3]), anchors, stride,
                                                  scale_x_y)
    return LevelConstants(paddle.to_tensor(offsets), paddle.to_tensor(half_anchors))


def box_corners(
    xy_logits: paddle.Tensor, wh_logits: paddle.Tensor, constants: LevelConstants, stride: int, scale_x_y: float
) -> paddle.Tensor:
    """Boxes (B, A, 4, H*W) as x1, y1, x2, y2 rows, from (B, A, 2, H*W) xy and wh logits."""
    centres = sigmoid(xy_logits) * (scale_x_y * stride) + constants.offsets
    half_sizes = exp(paddle.clip(wh_logits, max=MAX_LOG_SCALE)) * constants.half_anchors
    return paddle.concat([centres - half_sizes, centres + half_sizes], axis=2)


def decode_level_boxes(
    prediction: LevelPrediction, output: paddle.Tensor, anchors: list[Anchor], stride: int, scale_x_y: float
) -> paddle.Tensor:
    """Boxes (B, A, H*W, 4) xyxy in input pixels from a ``head.LevelPrediction`` (what the loss uses)."""
    xy = paddle.stack([prediction.tx, prediction.ty], axis=2)
    wh = paddle.stack([prediction.tw, prediction.th], axis=2)
    corners = box_corners(xy, wh, level_constants(output, anchors, stride, scale_x_y), stride, scale_x_y)
    return paddle.transpose(corners, [0, 1, 3, 2])


def decode_level(
    output: paddle.Tensor, constants: LevelConstants, stride: int, cfg: ModelConfig
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """One level's raw map (B, A*K, H, W) -> boxes (B, A*H*W, 4) and scores (B, A*H*W, C)."""
    per_anchor = channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    grouped = paddle.reshape(output, [0, cfg.num_anchors, per_anchor, -1])  # (B, A, K, H*W)
    sections = [2, 2, 1] + ([1] if cfg.iou_aware else []) + [cfg.num_classes]
    xy, wh, obj, *rest = paddle.split(grouped, sections, axis=2)
    corners = box_corners(xy, wh, constants, stride, cfg.scale_x_y)
    confidence = sigmoid(obj)
    if cfg.iou_aware:
        iou, cls = rest
        a = cfg.iou_aware_factor
        if a == 0.5:  # the default: sqrt, because Paddle Lite 2.13's multi-threaded ARM pow kernel races
            confidence = sqrt(confidence * sigmoid(iou))  # (deploy/arm/README.md, "Threads")
        else:
            confidence = paddle.pow(confidence, 1.0 - a) * paddle.pow(sigmoid(iou), a)
    else:
        (cls,) = rest
    scores = confidence * sigmoid(cls)  # (B, A, C, H*W)
    boxes = paddle.reshape(paddle.transpose(corners, [0, 1, 3, 2]), [0, -1, 4])
    scores = paddle.reshape(paddle.transpose(scores, [0, 1, 3, 2]), [0, -1, cfg.num_classes])
    return boxes, scores


def decode_outputs(
    outputs: list[paddle.Tensor], cfg: ModelConfig, constants: list[LevelConstants] | None = None
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """All levels' raw maps -> ``(boxes (B, K, 4) xyxy input pixels, scores (B, K, C))``.

    K = sum over levels of A * H * W, ordered level by level, then anchor, then cell row-major.
    ``constants``: one ``LevelConstants`` per level (an exported graph's buffers); built from the
    maps' shapes when omitted.
    """
    if constants is None:
        constants = [level_constants(o, anchors, stride, cfg.scale_x_y)
                     for o, anchors, stride in zip(outputs, cfg.anchors, cfg.strides)]
    decoded = [decode_level(o, c, stride, cfg) for o, c, stride in zip(outputs, constants, cfg.strides)]
    return paddle.concat([b for b, _ in decoded], axis=1), paddle.concat([s for _, s in decoded], axis=1)


def postprocess(
    outputs: list[paddle.Tensor],
    cfg: ModelConfig,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    max_detections: int = 100,
    method: NmsMethod = "hard",
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image ``(boxes (N, 4) float32 input-pixel xyxy, scores (N,) float32, classes (N,) int64)``.

    Decodes in paddle, then runs ``nms.select_detections`` on numpy: the very code the runtime runs
    on an exported model's output, so evaluation during training matches the deployed detector.
    """
    boxes, scores = decode_outputs(outputs, cfg)
    boxes_np, scores_np = boxes.numpy(), scores.numpy()
    return [
        select_detections(b, s, score_threshold, nms_threshold, max_detections, method)
        for b, s in zip(boxes_np, scores_np)
    ]
