"""How far an official AP measured on a validation split can be trusted: intervals from resampling its boards.

Why: the validation split is 200 DeepPCB boards. Two QAT runs of one recipe scored 0.8902 and 0.8877 on it, the
epochs of one run 0.880-0.888; a difference of a few tenths of a point between two models (the QAT drop, a
distillation gain) may be the boards drawn, not the models. The percentile bootstrap over boards answers that:
draw as many boards as the split has, with replacement, score the draw, repeat; the middle 95 % of the scores is
the interval. For a difference between two models on the same boards (``official_ap_difference_interval``) both
are scored on the *same* draws (a paired bootstrap), which cancels the boards' own difficulty and is much tighter
than comparing two single intervals.

The official matching is per board (``official.official_match_image``), so each board's detections are matched
once; a draw only repeats boards. Within a draw, detections of equal score keep the original board order (the
metric's own rule orders ties by input order; a draw's input order is arbitrary anyway).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inspector.evaluation.deeppcb import DEEPPCB_IOU_THRESHOLD
from inspector.evaluation.inputs import ImageDetections, ImageGT
from inspector.evaluation.official import official_match_image

RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A percentile-bootstrap interval of an official AP (or of a difference of two)."""

    low: float
    high: float
    confidence: float
    resamples: int

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "confidence": self.confidence, "resamples": self.resamples}

    def text(self, points: bool = False) -> str:
        """'95 % interval 0.871-0.912' (``points``: in AP points, signed, for differences)."""
        if points:
            return (f"{self.confidence:.0%} interval {100 * self.low:+.2f} to {100 * self.high:+.2f} pt "
                    f"(paired, {self.resamples} resamples of the boards)")
        return f"{self.confidence:.0%} interval {self.low:.4f}-{self.high:.4f} ({self.resamples} resamples of the boards)"


class _RankedBoards:
    """Every detection of a data set matched once, sorted by score, with the board it came from."""

    def __init__(self, gts: Sequence[ImageGT], dets: Sequence[ImageDetections], iou_threshold: float):
        if len(gts) != len(dets):
            raise ValueError(f"bootstrap: {len(dets)} detection sets for {len(gts)} ground-truth sets")
        hits = [official_match_image(gt, det, iou_threshold) for gt, det in zip(gts, dets)]
        scores = np.concatenate([det.scores for det in dets]) if dets else np.zeros(0)
        boards = np.concatenate([np.full(len(det), index) for index, det in enumerate(dets)]) if dets else \
            np.zeros(0, dtype=np.int64)
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        self.hits = (np.concatenate(hits) if hits else np.zeros(0, dtype=bool))[order]
        self.boards = boards.astype(np.int64)[order]
        self.gt_per_board = np.array([len(gt) for gt in gts], dtype=np.int64)

    def average_precision(self, copies: np.ndarray) -> float:
        """The official AP of the draw in which board ``i`` appears ``copies[i]`` times."""
        ground_truth = int((copies * self.gt_per_board).sum())
        if ground_truth == 0:
            return 0.0
        hits = np.repeat(self.hits, copies[self.boards])  # each detection as often as its board was drawn
        if not hits.any():
            return 0.0
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        return float(precision[hits].sum() / ground_truth)


def official_ap_resamples(gts: Sequence[ImageGT], detection_sets: Sequence[Sequence[ImageDetections]],
                          resamples: int = RESAMPLES, seed: int = 0,
                          iou_threshold: float = DEEPPCB_IOU_THRESHOLD) -> np.ndarray:
    """(sets, resamples) official APs: every detection set scored on the same ``resamples`` draws of the boards."""
    if resamples < 1:
        raise ValueError(f"bootstrap: resamples must be at least 1, got {resamples}")
    ranked = [_RankedBoards(gts, dets, iou_threshold) for dets in detection_sets]
    rng = np.random.default_rng(seed)
    values = np.zeros((len(ranked), resamples))
    for draw in range(resamples):
        copies = np.bincount(rng.integers(0, len(gts), size=len(gts)), minlength=len(gts)) if len(gts) else \
            np.zeros(0, dtype=np.int64)
        for index, boards in enumerate(ranked):
            values[index, draw] = boards.average_precision(copies)
    return values


def official_ap_interval(gts: Sequence[ImageGT], dets: Sequence[ImageDetections], resamples: int = RESAMPLES,
                         confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """The interval of the official AP of ``dets`` over draws of the boards."""
    return _interval(official_ap_resamples(gts, [dets], resamples, seed)[0], confidence)


def official_ap_difference_interval(gts: Sequence[ImageGT], dets_a: Sequence[ImageDetections],
                                    dets_b: Sequence[ImageDetections], resamples: int = RESAMPLES,
                                    confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """The interval of official AP(a) - AP(b), both scored on the same draws of the boards (paired)."""
    values = official_ap_resamples(gts, [dets_a, dets_b], resamples, seed)
    return _interval(values[0] - values[1], confidence)


def _interval(values: np.ndarray, confidence: float) -> Interval:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap: confidence must be between 0 and 1, got {confidence}")
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(float(low), float(high), confidence, len(values))
