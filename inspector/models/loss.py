"""The PP-YOLO training loss: the loss terms (paddle) over the targets of ``yolo_targets.py`` (numpy).

Target assignment (``build_targets``: each GT box to its best-fitting anchors by shape IoU, in the cell that
holds its centre) is numpy without paddle and lives in ``yolo_targets.py``, shared with the torch twin; its
names stay importable from here.

Loss terms, each summed over cells per image and averaged over the batch (as PP-YOLO does), for
positives unless stated:

- ``loss_xy``: binary cross-entropy between sigmoid(tx) and the centre offset mapped through the
  grid-sensitive scale k: target (offset + (k-1)/2) / k, so decoding gives back the offset exactly.
  Written as BCE minus the target's entropy, which has the same gradient and is 0 when exact.
- ``loss_wh``: L1 between tw, th and log(box / anchor).
- xy and wh are weighted by 2 - w*h / input_area: small boxes, whose pixels are few, count more.
- ``loss_iou`` (x ``cfg.iou_loss_weight`` = 2.5): 1 - IoU^2 between the decoded box and the GT,
  also scale-weighted; it ties the four coordinates together.
- ``loss_iou_aware`` (x ``cfg.iou_aware_loss_weight`` = 1): BCE (minus entropy) between the iou
  channel and the actual IoU of the decoded box (detached: a target, not a path for gradients).
- ``loss_obj``: BCE of objectness, target 1 on positives and 0 elsewhere, except that a
  non-positive prediction whose decoded box already overlaps some GT by more than
  ``cfg.ignore_threshold`` (0.7) is left out: it is a good box, just not the assigned one.
- ``loss_cls``: per-class sigmoid BCE against the one-hot class (no label smoothing).

``loss`` is the sum of these weighted components; the dict reports each one as it enters the sum.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from inspector.models.config import ModelConfig
from inspector.models.head import split_level
from inspector.models.postprocess import decode_level_boxes
from inspector.models.yolo_targets import LevelTargets, build_targets, valid_gt_mask  # noqa: F401 (re-exported)

LOSS_KEYS = ("loss_xy", "loss_wh", "loss_iou", "loss_iou_aware", "loss_obj", "loss_cls")


def soft_bce_with_logits(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Elementwise BCE for soft targets in [0, 1], minus the target's own entropy (KL divergence):
    same gradient as BCE, but exactly 0 when sigmoid(logits) equals the target."""
    eps = 1e-12  # only keeps log() finite; 0 * log(eps) = 0 at hard targets
    entropy = -(targets * paddle.log(paddle.clip(targets, min=eps)) + (1.0 - targets) * paddle.log(
        paddle.clip(1.0 - targets, min=eps)
    ))
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") - entropy


def aligned_iou(boxes_a: paddle.Tensor, boxes_b: paddle.Tensor) -> paddle.Tensor:
    """IoU of corresponding xyxy boxes (..., 4) -> (...), differentiable."""
    top_left = paddle.maximum(boxes_a[..., :2], boxes_b[..., :2])
    bottom_right = paddle.minimum(boxes_a[..., 2:], boxes_b[..., 2:])
    wh = paddle.clip(bottom_right - top_left, min=0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (boxes_a[..., 2] - boxes_a[..., 0]) * (boxes_a[..., 3] - boxes_a[..., 1])
    area_b = (boxes_b[..., 2] - boxes_b[..., 0]) * (boxes_b[..., 3] - boxes_b[..., 1])
    return inter / (area_a + area_b - inter + 1e-9)


def best_gt_iou(pred_boxes: paddle.Tensor, gt_boxes: paddle.Tensor, gt_valid: paddle.Tensor) -> paddle.Tensor:
    """For predicted boxes (B, N, 4), the largest IoU with any valid GT box (B, M, 4) -> (B, N)."""
    iou = aligned_iou(pred_boxes.unsqueeze(2), gt_boxes.unsqueeze(1))  # (B, N, M)
    return (iou * gt_valid.unsqueeze(1)).max(axis=2)


def _per_image_mean(term: paddle.Tensor) -> paddle.Tensor:
    """Sum over everything but the batch axis, then average over the batch."""
    return term.reshape([term.shape[0], -1]).sum(axis=1).mean()


def yolo_loss(
    outputs: list[paddle.Tensor],
    gt_boxes: paddle.Tensor | np.ndarray,
    gt_classes: paddle.Tensor | np.ndarray,
    cfg: ModelConfig,
) -> dict[str, paddle.Tensor]:
    """The PP-YOLO loss of raw head maps against padded GT (B, M, 4) / (B, M); see the module doc."""
    gt_boxes_np = gt_boxes.numpy() if isinstance(gt_boxes, paddle.Tensor) else np.asarray(gt_boxes)
    gt_classes_np = gt_classes.numpy() if isinstance(gt_classes, paddle.Tensor) else np.asarray(gt_classes)
    gt_boxes_np = gt_boxes_np.astype(np.float32).reshape(len(outputs[0]), -1, 4)
    gt_classes_np = gt_classes_np.astype(np.int64).reshape(len(outputs[0]), -1)
    grid_sizes = [(int(o.shape[2]), int(o.shape[3])) for o in outputs]
    targets = build_targets(gt_boxes_np, gt_classes_np, grid_sizes, cfg)
    gt_valid = paddle.to_tensor(valid_gt_mask(gt_boxes_np, gt_classes_np).astype(np.float32))
    gt_boxes_t = paddle.to_tensor(gt_boxes_np)
    shift = (cfg.scale_x_y - 1.0) / 2.0

    terms: dict[str, list[paddle.Tensor]] = {key: [] for key in LOSS_KEYS}
    for output, level_targets, anchors, stride in zip(outputs, targets, cfg.anchors, cfg.strides):
        t = {name: paddle.to_tensor(value) for name, value in vars(level_targets).items()}
        positive, scale = t["positive"], t["scale"]
        prediction = split_level(output, cfg.num_anchors, cfg.num_classes, cfg.iou_aware)
        pred_boxes = decode_level_boxes(prediction, output, anchors, stride, cfg.scale_x_y)

        target_x = (t["offset_x"] + shift) / cfg.scale_x_y  # what sigmoid(tx) must be, see above
        target_y = (t["offset_y"] + shift) / cfg.scale_x_y
        loss_xy = soft_bce_with_logits(prediction.tx, target_x) + soft_bce_with_logits(prediction.ty, target_y)
        terms["loss_xy"].append(_per_image_mean(loss_xy * scale * positive))
        loss_wh = paddle.abs(prediction.tw - t["log_w"]) + paddle.abs(prediction.th - t["log_h"])
        terms["loss_wh"].append(_per_image_mean(loss_wh * scale * positive))

        iou = aligned_iou(pred_boxes, t["boxes"])
        terms["loss_iou"].append(cfg.iou_loss_weight * _per_image_mean((1.0 - iou**2) * scale * positive))
        if prediction.iou is not None:
            loss_iou_aware = soft_bce_with_logits(prediction.iou, iou.detach())
            terms["loss_iou_aware"].append(cfg.iou_aware_loss_weight * _per_image_mean(loss_iou_aware * positive))

        if gt_boxes_np.shape[1] > 0:
            flat_boxes = pred_boxes.detach().reshape([pred_boxes.shape[0], -1, 4])
            overlap = best_gt_iou(flat_boxes, gt_boxes_t, gt_valid).reshape(positive.shape)
            not_ignored = (overlap <= cfg.ignore_threshold).astype("float32")
        else:
            not_ignored = paddle.ones_like(positive)
        loss_obj = F.binary_cross_entropy_with_logits(prediction.obj, positive, reduction="none")
        terms["loss_obj"].append(_per_image_mean(loss_obj * (positive + (1.0 - positive) * not_ignored)))

        loss_cls = F.binary_cross_entropy_with_logits(prediction.cls, t["classes"], reduction="none").sum(axis=-1)
        terms["loss_cls"].append(_per_image_mean(loss_cls * positive))

    zero = paddle.zeros([], dtype="float32")
    losses = {key: paddle.add_n(values) if values else zero for key, values in terms.items()}
    losses["loss"] = paddle.add_n([losses[key] for key in LOSS_KEYS])
    return losses
