"""The DeepPCB benchmark protocol: precision, recall and F-score at a score threshold.

A detection is a hit when its IoU with a ground-truth box of the same class is greater than 0.33
and that box is not already taken by a higher-scored detection (greedy, by descending score, per
image). Every other detection is a false positive; every ground-truth box left unmatched is a miss.
F-score = 2PR / (P + R). IoU is continuous (no "+1" pixel convention), as in pycocotools.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inspector.evaluation.inputs import ImageDetections, ImageGT

DEEPPCB_IOU_THRESHOLD = 0.33


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every pair of xyxy boxes, shape (len(boxes_a), len(boxes_b)); 0 for empty boxes."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def match_image(gt: ImageGT, det: ImageDetections, iou_threshold: float = DEEPPCB_IOU_THRESHOLD) -> np.ndarray:
    """Hit (True) or false positive (False) for each detection of one image, in the detections' order.

    Detections claim ground-truth boxes in descending score order (ties: input order); each takes the
    unclaimed same-class box it overlaps most, provided IoU > ``iou_threshold``.
    """
    hits = np.zeros(len(det), dtype=bool)
    if len(det) == 0 or len(gt) == 0:
        return hits
    iou = box_iou(det.boxes, gt.boxes)
    # A box of another class can never be claimed: give it an IoU no threshold accepts.
    iou[det.classes[:, None] != gt.classes[None, :]] = -1.0
    claimed = np.zeros(len(gt), dtype=bool)
    for d in np.argsort(-det.scores, kind="stable"):
        overlaps = np.where(claimed, -1.0, iou[d])
        best = int(np.argmax(overlaps))
        if overlaps[best] > iou_threshold:
            claimed[best] = True
            hits[d] = True
    return hits


@dataclass
class MatchedDetections:
    """Every detection of a data set, sorted by descending score, with its hit status."""

    scores: np.ndarray  # (K,) float64, descending
    classes: np.ndarray  # (K,) int64
    hits: np.ndarray  # (K,) bool
    gt_counts: np.ndarray  # (num_classes,) int64: ground-truth boxes per class


def match_dataset(gts: Sequence[ImageGT], dets: Sequence[ImageDetections], num_classes: int,
                  iou_threshold: float = DEEPPCB_IOU_THRESHOLD) -> MatchedDetections:
    """Match every image once; the result answers the protocol for any score threshold.

    Why once is enough: a detection's hit status depends only on the detections of its image that
    come before it in score order (they may have claimed its box), never on lower-scored ones.
    Raising the threshold only drops a suffix of that order, so the status of each detection that
    stays is unchanged, and the hits at threshold t are exactly the hits among detections >= t.
    """
    hits = [match_image(gt, det, iou_threshold) for gt, det in zip(gts, dets)]
    scores = np.concatenate([det.scores for det in dets]) if dets else np.zeros(0)
    classes = np.concatenate([det.classes for det in dets]) if dets else np.zeros(0, dtype=np.int64)
    all_hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    gt_classes = np.concatenate([gt.classes for gt in gts]) if gts else np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    return MatchedDetections(
        scores=scores[order],
        classes=classes[order],
        hits=all_hits[order],
        gt_counts=np.bincount(gt_classes, minlength=num_classes).astype(np.int64),
    )


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and misses at one score threshold."""

    true_positives: int
    false_positives: int
    false_negatives: int

    # A ratio with nothing to count (no detections kept, no ground truth) is reported as 0.
    @property
    def precision(self) -> float:
        kept = self.true_positives + self.false_positives
        return self.true_positives / kept if kept else 0.0

    @property
    def recall(self) -> float:
        total = self.true_positives + self.false_negatives
        return self.true_positives / total if total else 0.0

    @property
    def f1(self) -> float:
        # 2PR/(P+R) written in counts: 2TP / (detections kept + ground-truth boxes); no 0/0 for P = R = 0.
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else 0.0


def counts_at(matched: MatchedDetections, score_threshold: float, class_id: int | None = None) -> Counts:
    """Counts over the detections with score >= ``score_threshold``, for one class or (None) all classes."""
    kept = matched.scores >= score_threshold
    num_gt = int(matched.gt_counts.sum())
    if class_id is not None:
        kept &= matched.classes == class_id
        num_gt = int(matched.gt_counts[class_id])
    true_positives = int(np.count_nonzero(matched.hits & kept))
    return Counts(true_positives, int(np.count_nonzero(kept)) - true_positives, num_gt - true_positives)


def best_f1_threshold(matched: MatchedDetections) -> float | None:
    """The score threshold (one of the detections' scores) with the highest F-score; None without detections.

    O(K) after the sort in ``match_dataset``: cutting the score-sorted list after position i keeps
    i + 1 detections, of which cumsum(hits)[i] are hits. Among equally good thresholds the highest
    (fewest detections) wins.
    """
    if len(matched.scores) == 0:
        return None
    true_positives = np.cumsum(matched.hits)
    kept = np.arange(1, len(matched.scores) + 1)
    f1 = 2 * true_positives / (kept + matched.gt_counts.sum())
    # A threshold keeps all detections of equal score or none, so only the last of a run is a valid cut.
    last_of_run = np.append(matched.scores[1:] != matched.scores[:-1], True)
    f1[~last_of_run] = -1.0
    return float(matched.scores[int(np.argmax(f1))])
