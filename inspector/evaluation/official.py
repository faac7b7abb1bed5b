"""The DeepPCB authors' own metric (``evaluation/script.py`` of the DeepPCB repository): official AP and F.

It is the number papers on DeepPCB quote (98.6 AP / 98.2 F in the dataset's paper), so it is what the
product's models are chosen by. It differs from ``deeppcb.py``'s class-aware protocol in one rule:

- Per image, ground-truth boxes are taken in their order; each is matched to the highest-ranked
  (highest-scoring) detection not yet matched whose IoU with it is > 0.33, **whatever its class**.
  The pair is correct only if the classes agree. A wrong-class detection still consumes the box: it
  is a false positive and the box stays missed, even if a lower-ranked detection of the right class
  overlaps it too. Every unmatched detection is a false positive (duplicates included).
- AP: all detections of all images and classes pooled and ranked by score; the precision at each
  correct detection, summed, over the number of ground-truth boxes (non-interpolated). 0 without
  ground truth, as in the script.
- F = 2PR/(P+R) over the detections with score >= the threshold that maximises it (the script scores
  whatever it is given; submitting the detections above that threshold gives this F).

Differences from the script, both deliberate: IoU is continuous on the float boxes (``box_iou``; the
script truncates coordinates to integers), and equal scores keep their input order (image order, then
detection order) where the script's numpy quicksort leaves it unspecified. Like the script, AP counts
every detection it is given: evaluate the model's detections down to a low score (the runtime and
training validation keep them from 0.01), not only those above a deployment threshold, which cuts
the ranked list short and lowers AP.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inspector.evaluation.deeppcb import (
    DEEPPCB_IOU_THRESHOLD,
    MatchedDetections,
    best_f1_threshold,
    box_iou,
    counts_at,
)
from inspector.evaluation.inputs import ImageDetections, ImageGT


def official_match_image(gt: ImageGT, det: ImageDetections,
                         iou_threshold: float = DEEPPCB_IOU_THRESHOLD) -> np.ndarray:
    """Correct (True) or false positive (False) for each detection of one image, in the detections' order."""
    correct = np.zeros(len(det), dtype=bool)
    if len(det) == 0 or len(gt) == 0:
        return correct
    rank_order = np.argsort(-det.scores, kind="stable")  # position -> detection index, best first
    overlaps = box_iou(gt.boxes, det.boxes[rank_order]) > iou_threshold  # (N gt, K detections by rank)
    consumed = np.zeros(len(det), dtype=bool)  # by rank
    for g in range(len(gt)):
        candidates = overlaps[g] & ~consumed
        if not candidates.any():
            continue
        ranked = int(np.argmax(candidates))  # the first True: the highest-ranked free overlapping detection
        consumed[ranked] = True
        detection = rank_order[ranked]
        correct[detection] = det.classes[detection] == gt.classes[g]
    return correct


def official_match_dataset(gts: Sequence[ImageGT], dets: Sequence[ImageDetections], num_classes: int,
                           iou_threshold: float = DEEPPCB_IOU_THRESHOLD) -> MatchedDetections:
    """Every detection pooled and ranked by score, ``hits`` meaning correct under the official rule.

    One matching serves every score threshold: a ground-truth box takes the highest-ranked free
    detection, so removing the lowest-ranked detections (raising the threshold) only un-matches the
    boxes that had taken one of them, and frees nothing a higher-ranked detection could take. Hence
    ``deeppcb.counts_at`` and ``deeppcb.best_f1_threshold`` apply to the result unchanged.
    """
    correct = [official_match_image(gt, det, iou_threshold) for gt, det in zip(gts, dets)]
    scores = np.concatenate([det.scores for det in dets]) if dets else np.zeros(0)
    classes = np.concatenate([det.classes for det in dets]) if dets else np.zeros(0, dtype=np.int64)
    hits = np.concatenate(correct) if correct else np.zeros(0, dtype=bool)
    gt_classes = np.concatenate([gt.classes for gt in gts]) if gts else np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    return MatchedDetections(scores=scores[order], classes=classes[order], hits=hits[order],
                             gt_counts=np.bincount(gt_classes, minlength=num_classes).astype(np.int64))


def official_average_precision(matched: MatchedDetections) -> float:
    """Sum of the precision at each correct detection of the ranked list, over the ground-truth count."""
    num_gt = int(matched.gt_counts.sum())
    if num_gt == 0 or len(matched.hits) == 0:
        return 0.0
    precision = np.cumsum(matched.hits) / np.arange(1, len(matched.hits) + 1)
    return float(precision[matched.hits].sum() / num_gt)


@dataclass(frozen=True)
class OfficialResult:
    """The official numbers of a data set; ``threshold`` is None when there were no detections."""

    ap: float
    f: float
    threshold: float | None
    precision: float
    recall: float


def official_metric(gts: Sequence[ImageGT], dets: Sequence[ImageDetections], num_classes: int,
                    iou_threshold: float = DEEPPCB_IOU_THRESHOLD) -> OfficialResult:
    """Official AP, and F / P / R at the F-maximising score threshold. Inputs assumed valid
    (``inputs.check_inputs``; ``metrics.evaluate`` checks them and reports these in ``EvalResult``)."""
    matched = official_match_dataset(gts, dets, num_classes, iou_threshold)
    threshold = best_f1_threshold(matched)
    counts = counts_at(matched, math.inf if threshold is None else threshold)
    return OfficialResult(ap=official_average_precision(matched), f=counts.f1, threshold=threshold,
                          precision=counts.precision, recall=counts.recall)
