"""Decoding the raw head maps into boxes and scores (in-graph, exportable), then NMS (numpy).

Decoding, PP-YOLO style, for the anchor (pw, ph) at cell (i, j) of a level with stride s:

    cx = (sigmoid(tx) * k - (k - 1) / 2 + i) * s        k = scale_x_y (1.05, "grid sensitive":
    cy = (sigmoid(ty) * k - (k - 1) / 2 + j) * s        centres can reach the cell borders)
    w  = exp(tw) * pw,   h = exp(th) * ph
    score_c = obj^(1 - a) * iou^a * cls_c               a = iou_aware_factor (IoU-aware score)

``decode_outputs`` uses only ops that Paddle Inference and Paddle Lite both run (reshape, slice,
transpose, concat, sigmoid, exp, pow, clip, elementwise arithmetic, range on the runtime shape), no
Python branching on tensor values, so ``paddle.jit.save`` exports it with the network.
The NMS itself is numpy (``inspector.models.nms``), shared with the runtime.
"""
from __future__ import annotations

import numpy as np
import paddle

from inspector.models.anchors import Anchor
from inspector.models.config import ModelConfig
from inspector.models.head import LevelPrediction, split_level
from inspector.models.layers import exp, sigmoid  # legacy-program-safe (export for Paddle Lite)
from inspector.models.nms import NmsMethod, select_detections

# exp(8) ~ 3000 x the anchor: far beyond any real box, but keeps a wild logit from overflowing.
MAX_LOG_SCALE = 8.0


def level_grid(output: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Cell column and row indices (1, 1, H*W), row-major like ``split_level``, from the runtime shape."""
    shape = paddle.shape(output)
    columns = paddle.arange(shape[3], dtype="float32").reshape([1, -1])
    rows = paddle.arange(shape[2], dtype="float32").reshape([-1, 1])
    # Broadcasting a column against a row builds the (H, W) grids without meshgrid.
    grid_x = (rows * 0.0 + columns).reshape([1, 1, -1])
    grid_y = (rows + columns * 0.0).reshape([1, 1, -1])
    return grid_x, grid_y


def decode_level_boxes(
    prediction: LevelPrediction,
    output: paddle.Tensor,
    anchors: list[Anchor],
    stride: int,
    scale_x_y: float,
) -> paddle.Tensor:
    """Boxes (B, A, H*W, 4) xyxy in input pixels from one level's split prediction."""
    grid_x, grid_y = level_grid(output)
    shift = (scale_x_y - 1.0) / 2.0
    centre_x = (sigmoid(prediction.tx) * scale_x_y - shift + grid_x) * stride
    centre_y = (sigmoid(prediction.ty) * scale_x_y - shift + grid_y) * stride
    # Anchor sizes enter as plain Python floats, one anchor slice at a time (a ``scale`` op each):
    # a constant tensor would be exported as an assign_value op whose attribute type Paddle Lite
    # 2.13 cannot parse.
    scale_w = exp(paddle.clip(prediction.tw, max=MAX_LOG_SCALE))
    scale_h = exp(paddle.clip(prediction.th, max=MAX_LOG_SCALE))
    half_w = paddle.concat([scale_w[:, a : a + 1] * (w * 0.5) for a, (w, _) in enumerate(anchors)], axis=1)
    half_h = paddle.concat([scale_h[:, a : a + 1] * (h * 0.5) for a, (_, h) in enumerate(anchors)], axis=1)
    return paddle.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1)


def level_scores(prediction: LevelPrediction, iou_aware_factor: float) -> paddle.Tensor:
    """Per-class scores (B, A, H*W, C): objectness (blended with the predicted IoU) times class."""
    confidence = sigmoid(prediction.obj)
    if prediction.iou is not None:
        confidence = paddle.pow(confidence, 1.0 - iou_aware_factor) * paddle.pow(
            sigmoid(prediction.iou), iou_aware_factor
        )
    return confidence.unsqueeze(-1) * sigmoid(prediction.cls)


def decode_outputs(outputs: list[paddle.Tensor], cfg: ModelConfig) -> tuple[paddle.Tensor, paddle.Tensor]:
    """All levels' raw maps -> ``(boxes (B, K, 4) xyxy input pixels, scores (B, K, C))``.

    K = sum over levels of A * H * W, ordered level by level, then anchor, then cell row-major.
    """
    all_boxes, all_scores = [], []
    for output, anchors, stride in zip(outputs, cfg.anchors, cfg.strides):
        prediction = split_level(output, cfg.num_anchors, cfg.num_classes, cfg.iou_aware)
        boxes = decode_level_boxes(prediction, output, anchors, stride, cfg.scale_x_y)
        scores = level_scores(prediction, cfg.iou_aware_factor)
        all_boxes.append(paddle.reshape(boxes, [0, -1, 4]))
        all_scores.append(paddle.reshape(scores, [0, -1, cfg.num_classes]))
    return paddle.concat(all_boxes, axis=1), paddle.concat(all_scores, axis=1)


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
