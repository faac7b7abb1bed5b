"""``evaluate``: COCO mAP, the DeepPCB F-score and the official DeepPCB AP/F of a set of detections, in one result.

The training loop, the compression report and ``inspector eval`` all call this with per-image
numpy detections; ``EvalResult.to_dict()`` is what ends up in their JSON reports.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from inspector.evaluation.bootstrap import Interval, official_ap_interval
from inspector.evaluation.coco import PRCurve, average_precision, coco_precision, curves_from_precision
from inspector.evaluation.deeppcb import DEEPPCB_IOU_THRESHOLD, best_f1_threshold, counts_at, match_dataset
from inspector.evaluation.inputs import ImageDetections, ImageGT, check_inputs
from inspector.evaluation.official import official_metric


@dataclass
class ClassResult:
    """One class's numbers. AP and recall are None for a class with no ground truth (undefined)."""

    ap50: float | None
    ap50_95: float | None
    precision: float  # DeepPCB protocol, at the result's score threshold
    recall: float | None
    num_gt: int

    def to_dict(self) -> dict:
        return {"ap50": self.ap50, "ap50_95": self.ap50_95, "precision": self.precision,
                "recall": self.recall, "n_gt": self.num_gt}


@dataclass
class EvalResult:
    """Detection quality on a set of images.

    ``map50`` / ``map50_95``: COCO mAP over the classes that have ground truth (0 when none has).
    ``precision`` / ``recall`` / ``f1_iou033``: the DeepPCB protocol at ``score_threshold``
    (None only when it was chosen automatically and there were no detections to choose from).
    ``official_ap`` / ``official_f`` (``official.py``): the DeepPCB authors' script, where a detection
    of the wrong class still consumes the box; F and its P/R at ``official_threshold``, always the
    F-maximising one (None without detections). Models are chosen by ``official_ap``.
    """

    map50: float
    map50_95: float
    precision: float
    recall: float
    f1_iou033: float
    score_threshold: float | None
    true_positives: int
    false_positives: int
    false_negatives: int
    per_class: dict[str, ClassResult]
    n_images: int
    official_ap: float
    official_f: float
    official_threshold: float | None
    official_precision: float
    official_recall: float
    pr_curves: dict[str, PRCurve] = field(default_factory=dict, repr=False)  # for plots, not in to_dict()
    # How far official_ap can be trusted on these images (``bootstrap``); computed when asked for.
    official_ap_interval: Interval | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (plain floats, ints and None)."""
        return {
            "map50": self.map50,
            "map50_95": self.map50_95,
            "precision": self.precision,
            "recall": self.recall,
            "f1_iou033": self.f1_iou033,
            "score_threshold": self.score_threshold,
            "tp": self.true_positives,
            "fp": self.false_positives,
            "fn": self.false_negatives,
            "per_class": {name: result.to_dict() for name, result in self.per_class.items()},
            "n_images": self.n_images,
            "official_ap": self.official_ap,
            "official_f": self.official_f,
            "official_threshold": self.official_threshold,
            "official_precision": self.official_precision,
            "official_recall": self.official_recall,
            **({} if self.official_ap_interval is None else
               {"official_ap_interval": self.official_ap_interval.to_dict()}),
        }


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _mean_over_classes(ap: np.ndarray) -> float:
    present = ~np.isnan(ap)
    return float(ap[present].mean()) if present.any() else 0.0


def evaluate(gts: Sequence[ImageGT], dets: Sequence[ImageDetections], class_names: Sequence[str],
             score_threshold: float | None = None, max_detections: int = 100, interval: bool = False) -> EvalResult:
    """Evaluate detections against ground truth, image by image (``gts[i]`` goes with ``dets[i]``).

    mAP uses every detection given (pycocotools, up to ``max_detections`` per image and class).
    The DeepPCB numbers count detections with score >= ``score_threshold``; with None, the
    threshold that maximises the F-score is chosen and reported. The official DeepPCB numbers always
    use every detection for AP and their own F-maximising threshold for F. ``interval``: also the 95 %
    bootstrap interval of the official AP over the images (``bootstrap.official_ap_interval``).
    Raises ValueError naming the image and field when the inputs are malformed.
    """
    check_inputs(gts, dets, len(class_names))
    num_classes = len(class_names)

    precision = coco_precision(gts, dets, num_classes, max_detections)
    ap = average_precision(precision)  # (IoU thresholds, classes), NaN for classes without GT
    ap50 = ap[0]
    ap50_95 = ap.mean(axis=0)  # NaN stays NaN for classes without GT

    matched = match_dataset(gts, dets, num_classes, DEEPPCB_IOU_THRESHOLD)
    if score_threshold is None:
        score_threshold = best_f1_threshold(matched)
    # Without detections any threshold keeps nothing; +inf counts exactly that.
    threshold = math.inf if score_threshold is None else score_threshold
    overall = counts_at(matched, threshold)

    per_class = {}
    for cls, name in enumerate(class_names):
        counts = counts_at(matched, threshold, cls)
        has_gt = matched.gt_counts[cls] > 0
        per_class[name] = ClassResult(
            ap50=_optional(ap50[cls]),
            ap50_95=_optional(ap50_95[cls]),
            precision=counts.precision,
            recall=counts.recall if has_gt else None,
            num_gt=int(matched.gt_counts[cls]),
        )
    official = official_metric(gts, dets, num_classes, DEEPPCB_IOU_THRESHOLD)

    return EvalResult(
        map50=_mean_over_classes(ap50),
        map50_95=_mean_over_classes(ap50_95),
        precision=overall.precision,
        recall=overall.recall,
        f1_iou033=overall.f1,
        score_threshold=None if score_threshold is None else float(score_threshold),
        true_positives=overall.true_positives,
        false_positives=overall.false_positives,
        false_negatives=overall.false_negatives,
        per_class=per_class,
        n_images=len(gts),
        official_ap=official.ap,
        official_f=official.f,
        official_threshold=None if official.threshold is None else float(official.threshold),
        official_precision=official.precision,
        official_recall=official.recall,
        pr_curves=curves_from_precision(precision, class_names),
        official_ap_interval=official_ap_interval(gts, dets) if interval else None,
    )


def pr_curves(gts: Sequence[ImageGT], dets: Sequence[ImageDetections], class_names: Sequence[str],
              max_detections: int = 100) -> dict[str, PRCurve]:
    """Per-class precision/recall curves at IoU 0.5 (pycocotools' 101 recall points), for plotting.

    Classes with no ground truth have no curve. ``evaluate`` returns the same in ``EvalResult.pr_curves``.
    """
    check_inputs(gts, dets, len(class_names))
    return curves_from_precision(coco_precision(gts, dets, len(class_names), max_detections), class_names)
