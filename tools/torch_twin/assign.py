"""``inspector.models.assign.task_aligned_assign`` on the predictions' device: the same targets, without the CPU.

Why: the numpy assignment takes ~120 ms for a batch of 32 boards at input 320 on one core (2,100 anchor points,
(B, M, N) float64 arrays), which caps a GPU job near 270 boards/s whatever the GPU. Here every step is the numpy
one in torch, in float64, in the same order, including its tie rules (top-k by a stable sort: the lowest point
index among equal alignments; a point claimed twice keeps the first box among equal IoUs), so on the CPU the
assignment is the numpy one exactly (``tests/tools/test_torch_twin_assign.py``). On CUDA, ``pow`` may differ
from the C library's in the last bit, which can only reorder candidates whose alignments agree to ~1e-16.

The result is the numpy ``Assignment`` (arrays on the CPU): the loss reads a few hundred positives from it.
"""
from __future__ import annotations

import numpy as np
import torch

from inspector.models.assign import Assignment


def pairwise_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """``inspector.models.assign.pairwise_iou``: (B, M, 4) x (B, N, 4) xyxy -> (B, M, N)."""
    a = boxes_a[:, :, None, :]
    b = boxes_b[:, None, :, :]
    wh = torch.clamp(torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2]), min=0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / torch.clamp(union, min=1e-12), torch.zeros_like(union))


@torch.no_grad()
def task_aligned_assign(
    pred_scores: torch.Tensor,
    pred_boxes: torch.Tensor,
    points: np.ndarray,
    strides: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    topk: int = 13,
    alpha: float = 1.0,
    beta: float = 6.0,
    center_radius: float = 2.5,
) -> Assignment:
    """The numpy function's arguments, with ``pred_scores`` (B, N, C) and ``pred_boxes`` (B, N, 4) as tensors on
    the device the work is done on."""
    device = pred_scores.device
    pred_scores = pred_scores.detach().to(torch.float64)
    pred_boxes = pred_boxes.detach().to(torch.float64)
    batch, num_points, num_classes = pred_scores.shape
    gt_boxes_np = np.asarray(gt_boxes, dtype=np.float64).reshape(batch, -1, 4)
    gt_classes_np = np.asarray(gt_classes, dtype=np.int64).reshape(batch, -1)
    wh = gt_boxes_np[..., 2:] - gt_boxes_np[..., :2]
    valid_np = (gt_classes_np >= 0) & (wh[..., 0] > 0) & (wh[..., 1] > 0)
    if not valid_np.any():
        return Assignment(np.full((batch, num_points), -1, dtype=np.int64),
                          np.zeros((batch, num_points, 4), dtype=np.float32),
                          np.zeros((batch, num_points, num_classes), dtype=np.float32))
    if gt_classes_np[valid_np].max() >= num_classes:
        raise ValueError(f"gt_classes: class id {int(gt_classes_np[valid_np].max())} out of range for "
                         f"num_classes={num_classes}")
    num_gt = gt_boxes_np.shape[1]
    gt = torch.as_tensor(gt_boxes_np, device=device)
    gt_classes_t = torch.as_tensor(gt_classes_np, device=device)
    valid = torch.as_tensor(valid_np, device=device)

    ious = pairwise_iou(gt, pred_boxes)  # (B, M, N)
    classes = torch.clamp(gt_classes_t, 0, num_classes - 1)
    class_scores = torch.gather(pred_scores.transpose(1, 2), 1, classes[:, :, None].expand(-1, -1, num_points))
    alignment = class_scores ** alpha * ious ** beta

    # numpy compares the float32 points with the float64 boxes in float64, and the reach in float32
    points_t = torch.as_tensor(np.asarray(points), device=device).to(torch.float64)
    x, y = points_t[None, None, :, 0], points_t[None, None, :, 1]
    x1, y1, x2, y2 = (gt[..., i, None] for i in range(4))
    inside = (x > x1) & (x < x2) & (y > y1) & (y < y2)
    reach = torch.as_tensor(center_radius * np.asarray(strides), device=device).to(torch.float64)[None, None, :]
    near_centre = (torch.abs(x - (x1 + x2) / 2) < reach) & (torch.abs(y - (y1 + y2) / 2) < reach)
    candidate = torch.where(inside.any(dim=2, keepdim=True), inside, near_centre) & valid[:, :, None]

    k = min(topk, num_points)
    ranked = torch.where(candidate, alignment, torch.full_like(alignment, -1.0))
    top = torch.sort(-ranked, dim=2, stable=True).indices[:, :, :k]
    in_top = torch.zeros_like(candidate).scatter_(2, top, True)
    positive = in_top & candidate  # (B, M, N)

    claimed = positive.any(dim=1)  # (B, N)
    best = torch.argmax(torch.where(positive, ious, torch.full_like(ious, -1.0)), dim=1)  # (B, N), first of ties
    positive &= torch.arange(num_gt, device=device)[None, :, None] == best[:, None, :]
    positive &= claimed[:, None, :]

    aligned = torch.where(positive, alignment, torch.zeros_like(alignment))
    max_alignment = aligned.max(dim=2, keepdim=True).values
    max_iou = torch.where(positive, ious, torch.zeros_like(ious)).max(dim=2, keepdim=True).values
    ratio = torch.where(max_alignment > 0, aligned / torch.where(max_alignment > 0, max_alignment,
                                                                 torch.ones_like(max_alignment)),
                        torch.zeros_like(aligned))
    quality = (ratio * max_iou).max(dim=1).values  # (B, N)

    image, point = torch.nonzero(claimed, as_tuple=True)
    assigned = best[image, point]
    gt_index = torch.full((batch, num_points), -1, dtype=torch.int64, device=device)
    gt_index[image, point] = assigned
    target_boxes = torch.zeros((batch, num_points, 4), dtype=torch.float32, device=device)
    target_boxes[image, point] = gt[image, assigned].to(torch.float32)
    target_scores = torch.zeros((batch, num_points, num_classes), dtype=torch.float32, device=device)
    target_scores[image, point, gt_classes_t[image, assigned]] = quality[image, point].to(torch.float32)
    return Assignment(gt_index.cpu().numpy(), target_boxes.cpu().numpy(), target_scores.cpu().numpy())
