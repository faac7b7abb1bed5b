"""The training loss of the GFL head: task-aligned targets (``assign.py``), then three terms.

- ``loss_cls`` (x ``cfg.gfl_cls_weight``): every point, every class, against the soft targets of the
  assignment (the normalised alignment, an IoU-like quality; 0 for background):
  - ``vfl``, varifocal loss (Zhang et al., VarifocalNet, 2021; PP-YOLOE): BCE weighted by the target on
    positives and by ``0.75 * p^2`` on negatives, so easy background fades and good boxes count most;
  - ``qfl``, quality focal loss (Li et al., GFL, 2020; PicoDet v1): BCE weighted by ``|q - p|^2``.
  The focal weights are constants of the step (detached), as in the focal-loss papers.
- ``loss_iou`` (x ``cfg.gfl_iou_weight``): 1 - GIoU of the decoded box with its GT box, per positive;
- ``loss_dfl`` (x ``cfg.gfl_dfl_weight``): distribution focal loss: each side's distance in strides ``d``
  (clipped below reg_max) is split between its two neighbouring bins, ``floor(d)`` with weight
  ``ceil - d`` and ``floor(d) + 1`` with ``d - floor``, and the side's distribution is trained by
  cross-entropy towards that pair: its expectation is then exactly ``d``, and its mass stays near it.
Normalisation, as PicoDet does (GFL's ``avg_factor``): ``loss_cls`` is summed over the batch and divided by
the number of positive points (at least 1); the box terms are means over the batch's positives weighted by
their soft targets (well-aligned points count most). So ``loss_iou`` reads as the average 1 - GIoU and falls
as boxes improve. (PP-YOLOE divides all three by the sum of the soft targets instead; those start near 0
while predicted boxes are poor, so its loss first rises as it learns, and the box gradients start small.)

``loss`` is the weighted sum; the dict reports each term as it enters the sum.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from inspector.models.assign import task_aligned_assign
from inspector.models.config import ModelConfig
from inspector.models.gfl_head import anchor_points, split_gfl_level

GFL_LOSS_KEYS = ("loss_cls", "loss_iou", "loss_dfl")
VFL_ALPHA, VFL_GAMMA = 0.75, 2.0
QFL_BETA = 2.0


def giou(boxes_a: paddle.Tensor, boxes_b: paddle.Tensor, eps: float = 1e-9) -> paddle.Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of corresponding xyxy boxes (..., 4) -> (...), in [-1, 1]."""
    top_left = paddle.maximum(boxes_a[..., :2], boxes_b[..., :2])
    bottom_right = paddle.minimum(boxes_a[..., 2:], boxes_b[..., 2:])
    wh = paddle.clip(bottom_right - top_left, min=0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (boxes_a[..., 2] - boxes_a[..., 0]) * (boxes_a[..., 3] - boxes_a[..., 1])
    area_b = (boxes_b[..., 2] - boxes_b[..., 0]) * (boxes_b[..., 3] - boxes_b[..., 1])
    union = area_a + area_b - inter
    hull_wh = paddle.maximum(boxes_a[..., 2:], boxes_b[..., 2:]) - paddle.minimum(boxes_a[..., :2], boxes_b[..., :2])
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / (union + eps) - (hull - union) / (hull + eps)


def distribution_focal_loss(logits: paddle.Tensor, targets: paddle.Tensor | np.ndarray) -> paddle.Tensor:
    """DFL of distribution logits (..., R+1) against distances ``targets`` (...) in bins, within [0, R)."""
    bins = int(logits.shape[-1])
    targets = paddle.to_tensor(targets, dtype="float32") if not isinstance(targets, paddle.Tensor) else targets
    left = paddle.floor(targets)
    weight_left = left + 1.0 - targets
    weight_right = targets - left
    left_hot = F.one_hot(left.astype("int64"), bins)
    right_hot = F.one_hot(paddle.clip(left + 1.0, max=bins - 1).astype("int64"), bins)
    soft = left_hot * weight_left.unsqueeze(-1) + right_hot * weight_right.unsqueeze(-1)
    return -(F.log_softmax(logits, axis=-1) * soft).sum(axis=-1)


def varifocal_loss(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Elementwise varifocal loss of class logits against soft targets in [0, 1] (0 = background)."""
    p = F.sigmoid(logits).detach()
    positive = (targets > 0).astype("float32")
    weight = VFL_ALPHA * p**VFL_GAMMA * (1.0 - positive) + targets * positive
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight


def quality_focal_loss(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Elementwise quality focal loss of class logits against soft targets in [0, 1]."""
    p = F.sigmoid(logits).detach()
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * paddle.abs(targets - p) ** QFL_BETA


def flatten_outputs(outputs: list[paddle.Tensor], cfg: ModelConfig) -> tuple[paddle.Tensor, paddle.Tensor]:
    """All levels' maps -> class logits (B, N, C) and distribution logits (B, N, 4, R+1), in decode order."""
    split = [split_gfl_level(o, cfg.num_classes, cfg.reg_max) for o in outputs]
    return paddle.concat([c for c, _ in split], axis=1), paddle.concat([d for _, d in split], axis=1)


def distances_to_boxes(distances: paddle.Tensor, points: paddle.Tensor, strides: paddle.Tensor) -> paddle.Tensor:
    """Side distances (B, N, 4) in strides around points (N, 2) with strides (N,) -> xyxy (B, N, 4) pixels."""
    scaled = distances * strides.unsqueeze(-1)
    return paddle.concat([points - scaled[..., :2], points + scaled[..., 2:]], axis=-1)


def gfl_loss(
    outputs: list[paddle.Tensor],
    gt_boxes: paddle.Tensor | np.ndarray,
    gt_classes: paddle.Tensor | np.ndarray,
    cfg: ModelConfig,
) -> dict[str, paddle.Tensor]:
    """The GFL loss of raw head maps against padded GT (B, M, 4) xyxy input pixels / (B, M); see the module doc."""
    batch = int(outputs[0].shape[0])
    gt_boxes_np = gt_boxes.numpy() if isinstance(gt_boxes, paddle.Tensor) else np.asarray(gt_boxes)
    gt_classes_np = gt_classes.numpy() if isinstance(gt_classes, paddle.Tensor) else np.asarray(gt_classes)
    gt_boxes_np = gt_boxes_np.astype(np.float32).reshape(batch, -1, 4)
    gt_classes_np = gt_classes_np.astype(np.int64).reshape(batch, -1)

    grid_sizes = [(int(o.shape[2]), int(o.shape[3])) for o in outputs]
    points_np, strides_np = anchor_points(grid_sizes, cfg.strides)
    points, strides = paddle.to_tensor(points_np), paddle.to_tensor(strides_np)
    cls_logits, dist_logits = flatten_outputs(outputs, cfg)
    bins = paddle.arange(cfg.reg_max + 1, dtype="float32")
    distances = (F.softmax(dist_logits, axis=-1) * bins).sum(axis=-1)  # (B, N, 4) strides
    pred_boxes = distances_to_boxes(distances, points, strides)

    assignment = task_aligned_assign(
        F.sigmoid(cls_logits).numpy(), pred_boxes.detach().numpy(), points_np, strides_np, gt_boxes_np,
        gt_classes_np, topk=cfg.tal_topk, alpha=cfg.tal_alpha, beta=cfg.tal_beta,
        center_radius=cfg.tal_center_radius,
    )
    target_scores = paddle.to_tensor(assignment.scores)
    image, point = np.nonzero(assignment.positive)

    element_loss = varifocal_loss if cfg.gfl_cls_loss == "vfl" else quality_focal_loss
    loss_cls = element_loss(cls_logits, target_scores).sum() / max(len(image), 1)

    weights = assignment.scores[image, point].sum(axis=-1)  # (P,) each positive's soft target
    if len(image) and weights.sum() > 0:
        normaliser = float(weights.sum())
        index = paddle.to_tensor(np.stack([image, point], axis=1))
        weight = paddle.to_tensor(weights)
        gt = assignment.boxes[image, point]  # (P, 4)
        loss_iou = (weight * (1.0 - giou(paddle.gather_nd(pred_boxes, index), paddle.to_tensor(gt)))).sum()
        centre = points_np[point]
        side_distances = np.concatenate([centre - gt[:, :2], gt[:, 2:] - centre], axis=1) / strides_np[point, None]
        side_distances = np.clip(side_distances, 0.0, cfg.reg_max - 0.01).astype(np.float32)
        dfl = distribution_focal_loss(paddle.gather_nd(dist_logits, index), side_distances).mean(axis=-1)
        loss_iou, loss_dfl = loss_iou / normaliser, (weight * dfl).sum() / normaliser
    else:  # no GT in the batch (or no overlap at all yet): nothing to localise; zeros that stay in the graph
        loss_iou = loss_dfl = dist_logits.sum() * 0.0

    losses = {
        "loss_cls": cfg.gfl_cls_weight * loss_cls,
        "loss_iou": cfg.gfl_iou_weight * loss_iou,
        "loss_dfl": cfg.gfl_dfl_weight * loss_dfl,
    }
    losses["loss"] = paddle.add_n([losses[key] for key in GFL_LOSS_KEYS])
    return losses
