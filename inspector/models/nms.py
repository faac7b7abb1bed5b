"""Non-maximum suppression in plain numpy, shared by training-time evaluation and the runtime.

This module imports numpy only (no paddle), so the deployed runtime can turn the exported model's
decoded ``(boxes, scores)`` into detections with exactly the same code the trainer evaluates with.

Suppression methods (``NmsMethod``):

- "hard" (``nms_numpy``): classic greedy per-class NMS. A box is dropped when it overlaps a
  higher-scored box of the same class by more than ``iou_threshold``.
- "agnostic": the same greedy NMS across classes: a box is dropped when it overlaps a higher-scored
  box of *any* class. One defect is one report: a spot scored both "short" and "spur" is logged once,
  under its likelier class. It is the product's default (``DEFAULT_NMS``) because a board has one
  defect per place (of DeepPCB's 1,000 trainval boards, 2 pairs of labeled defects overlap by more
  than the metric's match IoU of 0.33), so a second call on the same place is a false call. On the
  DeepPCB validation split it raised the official AP by 0.6 pt and F by 1.3 pt over per-class NMS at
  0.5 (COCO mAP, which credits a second class hypothesis, fell 3.7 pt). The threshold, 0.33, is the
  official metric's match IoU (a box overlapping a better one by more can only count as its
  duplicate), and was the best of 0.25 / 0.33 / 0.5 on the training part (README, "Post-processing";
  ``benchmarks/nms_methods.py``).
- ``matrix_nms_numpy``: Matrix NMS (SOLOv2, used by PP-YOLO). Nothing is dropped outright; each
  box's score is decayed by how much it overlaps higher-scored boxes of its class, then boxes whose
  decayed score falls below a threshold are removed. It gives the same result as
  ``paddle.vision.ops.matrix_nms`` with ``normalized=True`` (checked by the tests).

``select_detections`` is the whole post-processing of one image: candidates above the score
threshold (one per box and class, so per-class NMS may report a box for two classes), then suppression.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

NmsMethod = Literal["hard", "agnostic", "matrix"]
NMS_METHODS: tuple[str, ...] = ("hard", "agnostic", "matrix")

# The product's post-processing, for every package it exports and every evaluation it runs (training
# validation, quantization, the runtime): one defect, one report (see above).
DEFAULT_NMS: NmsMethod = "agnostic"
DEFAULT_NMS_THRESHOLD = 0.33


def box_iou_numpy(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) between xyxy boxes (N, 4) and (M, 4); zero-area boxes have IoU 0."""
    a = np.asarray(boxes_a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float32).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def nms_numpy(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float = 0.5, max_det: int = 100
) -> np.ndarray:
    """Greedy per-class NMS; returns the kept indices (int64), highest score first, at most ``max_det``.

    Boxes of different classes never suppress each other: each class is shifted to its own region
    of the plane (an offset larger than any coordinate), which lets one greedy pass handle them all.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(f"nms_numpy: {len(boxes)} boxes, {len(scores)} scores, {len(classes)} classes; expected equal")
    if len(boxes) == 0 or max_det <= 0:
        return np.zeros(0, dtype=np.int64)
    offset = float(np.abs(boxes).max()) * 2.0 + 1.0
    shifted = boxes + (classes.astype(np.float32) * offset)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order) > 0 and len(keep) < max_det:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlaps = box_iou_numpy(shifted[best], shifted[rest])[0]
        order = rest[overlaps <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def matrix_nms_numpy(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    post_threshold: float = 0.05,
    max_det: int = 100,
    kernel: Literal["linear", "gaussian"] = "linear",
    sigma: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Matrix NMS; returns ``(kept indices, their decayed scores)``, highest decayed score first.

    For boxes sorted by score, box j's decay is the minimum over higher-scored same-class boxes i of
    ``f(iou_ij) / f(max_iou_i)`` where ``max_iou_i`` is how much i itself is overlapped by a box
    above it ("compensation": a box that is itself a duplicate should suppress less).
    Linear ``f(x) = 1 - x``; Gaussian ``f(x) = exp(-sigma * x^2)``.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(
            f"matrix_nms_numpy: {len(boxes)} boxes, {len(scores)} scores, {len(classes)} classes; expected equal"
        )
    if kernel not in ("linear", "gaussian"):
        raise ValueError(f"matrix_nms_numpy: kernel must be 'linear' or 'gaussian', got {kernel!r}")
    if len(boxes) == 0 or max_det <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    sorted_boxes, sorted_scores, sorted_classes = boxes[order], scores[order], classes[order]
    same_class = sorted_classes[:, None] == sorted_classes[None, :]
    # iou[i, j] for i above j in the ranking (strict upper triangle), same class only.
    iou = np.triu(box_iou_numpy(sorted_boxes, sorted_boxes) * same_class, k=1)
    compensation = iou.max(axis=0)  # per box: its largest overlap with a better box
    if kernel == "linear":
        decay_matrix = (1.0 - iou) / (1.0 - compensation[:, None] + 1e-12)
    else:
        decay_matrix = np.exp(-sigma * (iou**2 - compensation[:, None] ** 2))
    # Only pairs (i above j, same class) may decay j; every other entry is neutral (1).
    decay_matrix = np.where(np.triu(same_class, k=1), decay_matrix, 1.0)
    decayed = sorted_scores * np.minimum(decay_matrix.min(axis=0), 1.0)
    survivors = np.nonzero(decayed > post_threshold)[0]
    survivors = survivors[np.argsort(-decayed[survivors], kind="stable")][:max_det]
    return order[survivors].astype(np.int64), decayed[survivors].astype(np.float32)


def select_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    max_detections: int = 100,
    method: NmsMethod = "hard",
    pre_nms_top_k: int = 1000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image from decoded ``boxes`` (K, 4) xyxy and per-class ``scores`` (K, C).

    Every (box, class) pair scoring above ``score_threshold`` is a candidate; the best
    ``pre_nms_top_k`` of them go through NMS (``method`` "hard": greedy per class at ``nms_threshold``;
    "agnostic": greedy across classes, so a box keeps only its best class; "matrix": Matrix NMS, whose
    decayed scores must stay above ``score_threshold``).
    Returns ``(boxes (N, 4) float32, scores (N,) float32, classes (N,) int64)``, best first.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] != len(boxes):
        raise ValueError(f"select_detections: scores must be (K, C) with K = {len(boxes)} boxes, got {scores.shape}")
    box_index, class_index = np.nonzero(scores > score_threshold)
    candidate_scores = scores[box_index, class_index]
    if len(candidate_scores) > pre_nms_top_k:
        best = np.argsort(-candidate_scores, kind="stable")[:pre_nms_top_k]
        box_index, class_index, candidate_scores = box_index[best], class_index[best], candidate_scores[best]
    candidate_boxes = boxes[box_index]
    if method in ("hard", "agnostic"):
        nms_classes = class_index if method == "hard" else np.zeros_like(class_index)  # agnostic: one class
        keep = nms_numpy(candidate_boxes, candidate_scores, nms_classes, nms_threshold, max_detections)
        kept_scores = candidate_scores[keep]
    elif method == "matrix":
        keep, kept_scores = matrix_nms_numpy(
            candidate_boxes, candidate_scores, class_index, score_threshold, max_detections
        )
    else:
        raise ValueError(f"select_detections: method must be one of {list(NMS_METHODS)}, got {method!r}")
    return (
        candidate_boxes[keep].astype(np.float32).reshape(-1, 4),
        kept_scores.astype(np.float32),
        class_index[keep].astype(np.int64),
    )
