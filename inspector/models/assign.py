"""Task-aligned assignment (TAL; Feng et al., TOOD, 2021; PP-YOLOE's assigner) for the anchor-free GFL head.

Which anchor points learn which ground-truth box is decided from the head's *current* predictions, so that
the points that both classify and localise a box best are the ones trained on it:

1. alignment ``t = s^alpha * IoU^beta`` for every (GT box, point): ``s`` the predicted score of the GT's
   class at the point, IoU that of the point's predicted box with the GT box (alpha 1, beta 6: PP-YOLOE);
2. candidates: the points whose centre lies inside the GT box; for a box that holds none, the points within
   ``center_radius`` strides of its centre (YOLOX's centre prior; ours). DeepPCB's defects are 12-23 px
   at input 320 and thin ones narrower, so a box can hold a single stride-8 centre or none, and a box
   without candidates would never be learned. Only as a fallback: a point outside its box cannot predict
   it (side distances are >= 0), so such targets are unreachable and would put a floor under the loss;
3. positives: the ``topk`` candidates of each GT box with the largest alignment;
4. a point claimed by several boxes keeps the one its predicted box overlaps most;
5. soft targets: per GT box, the alignments of its positives rescaled so that the best one equals the
   best IoU among them (``t / max t * max IoU``). This is the classification target (a quality score, not
   1) and the weight of the point's box losses.

Plain numpy on detached predictions: it decides targets, it is not differentiated. Vectorised over the
batch; (B, M, N) arrays, M the padded number of GT boxes, N the anchor points (1,344 at input 320,
8,400 at 640).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Assignment:
    """Targets for every anchor point: ``gt_index`` (B, N) int64, -1 for background; ``boxes`` (B, N, 4)
    xyxy input pixels of the assigned GT (0 for background); ``scores`` (B, N, C) the soft class targets
    (the normalised alignment at the GT's class, 0 elsewhere)."""

    gt_index: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @property
    def positive(self) -> np.ndarray:
        """(B, N) bool: points assigned to some GT box."""
        return self.gt_index >= 0


def valid_gt(gt_boxes: np.ndarray, gt_classes: np.ndarray) -> np.ndarray:
    """(B, M) bool: real boxes (class >= 0, positive width and height), not batch padding."""
    wh = gt_boxes[..., 2:] - gt_boxes[..., :2]
    return (gt_classes >= 0) & (wh[..., 0] > 0) & (wh[..., 1] > 0)


def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box of (B, M, 4) with every box of (B, N, 4), xyxy -> (B, M, N)."""
    a = boxes_a[:, :, None, :]
    b = boxes_b[:, None, :, :]
    wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def task_aligned_assign(
    pred_scores: np.ndarray,
    pred_boxes: np.ndarray,
    points: np.ndarray,
    strides: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    topk: int = 13,
    alpha: float = 1.0,
    beta: float = 6.0,
    center_radius: float = 2.5,
) -> Assignment:
    """Assign GT boxes (B, M, 4) / classes (B, M) (-1 = padding) to anchor points (see the module doc).

    ``pred_scores`` (B, N, C) probabilities and ``pred_boxes`` (B, N, 4) xyxy input pixels are the head's
    detached predictions; ``points`` (N, 2) the anchor points, ``strides`` (N,) their levels' strides.
    """
    pred_scores = np.asarray(pred_scores, dtype=np.float64)
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64)
    batch, num_points, num_classes = pred_scores.shape
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(batch, -1, 4)
    gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(batch, -1)
    gt_index = np.full((batch, num_points), -1, dtype=np.int64)
    target_boxes = np.zeros((batch, num_points, 4), dtype=np.float32)
    target_scores = np.zeros((batch, num_points, num_classes), dtype=np.float32)
    valid = valid_gt(gt_boxes, gt_classes)
    if not valid.any():
        return Assignment(gt_index, target_boxes, target_scores)
    if gt_classes[valid].max() >= num_classes:
        raise ValueError(f"gt_classes: class id {int(gt_classes[valid].max())} out of range for "
                         f"num_classes={num_classes}")
    num_gt = gt_boxes.shape[1]

    ious = pairwise_iou(gt_boxes, pred_boxes)  # (B, M, N)
    classes = np.clip(gt_classes, 0, num_classes - 1)
    class_scores = np.take_along_axis(pred_scores.transpose(0, 2, 1), classes[:, :, None], axis=1)  # (B, M, N)
    alignment = class_scores**alpha * ious**beta

    x, y = points[None, None, :, 0], points[None, None, :, 1]
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))
    inside = (x > x1) & (x < x2) & (y > y1) & (y < y2)
    reach = center_radius * strides[None, None, :]
    near_centre = (np.abs(x - (x1 + x2) / 2) < reach) & (np.abs(y - (y1 + y2) / 2) < reach)
    candidate = np.where(inside.any(axis=2, keepdims=True), inside, near_centre) & valid[:, :, None]

    k = min(topk, num_points)
    ranked = np.where(candidate, alignment, -1.0)
    # Ties (early in training many candidates align 0) go to the lowest point index: a stable sort, not
    # argpartition's arbitrary pick, so the torch twin's assignment (tools/torch_twin/assign.py) is this one.
    top = np.argsort(-ranked, axis=2, kind="stable")[:, :, :k]
    in_top = np.zeros_like(candidate)
    np.put_along_axis(in_top, top, True, axis=2)
    positive = in_top & candidate  # (B, M, N)

    # A point claimed by several boxes keeps the one its predicted box overlaps most.
    claimed = positive.any(axis=1)  # (B, N)
    best = np.argmax(np.where(positive, ious, -1.0), axis=1)  # (B, N)
    positive &= np.arange(num_gt)[None, :, None] == best[:, None, :]
    positive &= claimed[:, None, :]

    # Soft targets: each box's alignments rescaled so that its best positive scores its best IoU.
    aligned = np.where(positive, alignment, 0.0)
    max_alignment = aligned.max(axis=2, keepdims=True)
    max_iou = np.where(positive, ious, 0.0).max(axis=2, keepdims=True)
    ratio = np.divide(aligned, max_alignment, out=np.zeros_like(aligned), where=max_alignment > 0)
    quality = (ratio * max_iou).max(axis=1)  # (B, N): only the kept box is non-zero

    image, point = np.nonzero(claimed)
    gt = best[image, point]
    gt_index[image, point] = gt
    target_boxes[image, point] = gt_boxes[image, gt]
    target_scores[image, point, gt_classes[image, gt]] = quality[image, point]
    return Assignment(gt_index, target_boxes, target_scores)
