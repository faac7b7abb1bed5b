"""The PP-YOLO training loss: target assignment (numpy) and the loss terms (paddle).

Target assignment (``build_targets``). Each ground-truth box is compared by *shape* (IoU of
width/height with centres aligned) with all anchors of all levels. It is assigned to its best
anchor and to every other anchor whose shape IoU exceeds ``cfg.anchor_match_threshold`` (0.5),
in the cell of each level that contains its centre. 0.5 adds extra positives for boxes that sit
between anchors (more training signal, steadier early training) while still keeping a thin
vertical box away from a thin horizontal anchor (their shape IoU is ~0.4). When two boxes claim
the same anchor of the same cell, the better-fitting one (higher shape IoU) wins.

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

from dataclasses import dataclass

import numpy as np
import paddle
import paddle.nn.functional as F

from inspector.models.anchors import shape_iou
from inspector.models.config import ModelConfig
from inspector.models.head import split_level
from inspector.models.postprocess import decode_level_boxes

LOSS_KEYS = ("loss_xy", "loss_wh", "loss_iou", "loss_iou_aware", "loss_obj", "loss_cls")


@dataclass
class LevelTargets:
    """Training targets of one level, numpy, laid out like ``split_level``: (B, A, H*W[, ...])."""

    positive: np.ndarray  # float32 1 where this anchor of this cell is responsible for a GT box
    offset_x: np.ndarray  # centre offset inside the cell, [0, 1)
    offset_y: np.ndarray
    log_w: np.ndarray  # log(box width / anchor width)
    log_h: np.ndarray
    scale: np.ndarray  # 2 - w*h / input area
    classes: np.ndarray  # (B, A, H*W, C) one-hot
    boxes: np.ndarray  # (B, A, H*W, 4) the GT box, xyxy input pixels


def valid_gt_mask(gt_boxes: np.ndarray, gt_classes: np.ndarray) -> np.ndarray:
    """(B, M) bool: real boxes (class >= 0, positive width and height), not batch padding."""
    wh = gt_boxes[..., 2:] - gt_boxes[..., :2]
    return (gt_classes >= 0) & (wh[..., 0] > 0) & (wh[..., 1] > 0)


def build_targets(
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    grid_sizes: list[tuple[int, int]],
    cfg: ModelConfig,
) -> list[LevelTargets]:
    """Assign GT boxes (B, M, 4) xyxy input pixels / classes (B, M) (-1 = padding) to anchor cells.

    ``grid_sizes`` are the (H, W) of each level's output map. Vectorised over all boxes of the
    batch; the only loop is over the (three) levels.
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(len(gt_boxes), -1, 4)
    gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(len(gt_boxes), -1)
    batch, num_anchors, num_classes = len(gt_boxes), cfg.num_anchors, cfg.num_classes
    input_h = grid_sizes[0][0] * cfg.strides[0]
    input_w = grid_sizes[0][1] * cfg.strides[0]

    image_index, box_index = np.nonzero(valid_gt_mask(gt_boxes, gt_classes))
    boxes = gt_boxes[image_index, box_index]
    classes = gt_classes[image_index, box_index]
    if np.any(classes >= num_classes):
        raise ValueError(f"gt_classes: class id {int(classes.max())} out of range for num_classes={num_classes}")
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0

    anchors = np.array([a for level in cfg.anchors for a in level], dtype=np.float32)  # (L*A, 2)
    similarity = shape_iou(wh, anchors)  # (G, L*A)
    matched = similarity > cfg.anchor_match_threshold
    matched[np.arange(len(boxes)), similarity.argmax(axis=1)] = True
    gt_of_match, anchor_of_match = np.nonzero(matched)

    targets = []
    for level, (grid_h, grid_w) in enumerate(grid_sizes):
        stride = cfg.strides[level]
        in_level = anchor_of_match // num_anchors == level
        g = gt_of_match[in_level]
        a = anchor_of_match[in_level] % num_anchors
        b = image_index[g]
        cell_x = np.clip(np.floor(centre[g, 0] / stride), 0, grid_w - 1).astype(np.int64)
        cell_y = np.clip(np.floor(centre[g, 1] / stride), 0, grid_h - 1).astype(np.int64)
        cell = cell_y * grid_w + cell_x
        # Several boxes on one (image, anchor, cell): keep the best shape fit (sort by slot, then by
        # similarity, and take the last of each slot).
        slot = (b * num_anchors + a) * (grid_h * grid_w) + cell
        fit = similarity[g, anchor_of_match[in_level]]
        order = np.lexsort((fit, slot))
        last_of_slot = np.ones(len(order), dtype=bool)
        last_of_slot[:-1] = slot[order][1:] != slot[order][:-1]
        keep = order[last_of_slot]
        g, a, b, cell_x, cell_y, cell = g[keep], a[keep], b[keep], cell_x[keep], cell_y[keep], cell[keep]

        shape = (batch, num_anchors, grid_h * grid_w)
        t = LevelTargets(
            positive=np.zeros(shape, np.float32),
            offset_x=np.zeros(shape, np.float32),
            offset_y=np.zeros(shape, np.float32),
            log_w=np.zeros(shape, np.float32),
            log_h=np.zeros(shape, np.float32),
            scale=np.zeros(shape, np.float32),
            classes=np.zeros(shape + (num_classes,), np.float32),
            boxes=np.zeros(shape + (4,), np.float32),
        )
        level_anchors = np.asarray(cfg.anchors[level], dtype=np.float32)
        t.positive[b, a, cell] = 1.0
        t.offset_x[b, a, cell] = centre[g, 0] / stride - cell_x
        t.offset_y[b, a, cell] = centre[g, 1] / stride - cell_y
        t.log_w[b, a, cell] = np.log(wh[g, 0] / level_anchors[a, 0])
        t.log_h[b, a, cell] = np.log(wh[g, 1] / level_anchors[a, 1])
        t.scale[b, a, cell] = 2.0 - wh[g, 0] * wh[g, 1] / (input_w * input_h)
        t.classes[b, a, cell, classes[g]] = 1.0
        t.boxes[b, a, cell] = boxes[g]
        targets.append(t)
    return targets


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
