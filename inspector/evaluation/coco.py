"""COCO-style average precision, computed by pycocotools on in-memory data.

pycocotools is the reference implementation everyone's mAP numbers come from, so we feed it our
numpy boxes rather than re-implementing its 101-point interpolation. Everything it prints is
swallowed; only its ``eval['precision']`` array is used.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from inspector.evaluation.inputs import ImageDetections, ImageGT

# pycocotools' own thresholds (COCOeval.Params), named here so callers can index the arrays below.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
# One "all sizes" area range: DeepPCB defects are all small/medium, COCO's size buckets add nothing.
_ALL_AREAS = [0.0, 1e10]


@dataclass
class PRCurve:
    """Interpolated precision of one class at IoU 0.5, sampled at pycocotools' 101 recall points."""

    recall: np.ndarray  # (101,) 0.00, 0.01, ..., 1.00
    precision: np.ndarray  # (101,) 0 beyond the highest recall reached


def _annotations(boxes: np.ndarray, classes: np.ndarray, image_id: int, first_id: int,
                 scores: np.ndarray | None = None) -> list[dict]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    annotations = []
    for row, (x1, y1, w, h, cls) in enumerate(zip(boxes[:, 0].tolist(), boxes[:, 1].tolist(), widths.tolist(),
                                                   heights.tolist(), classes.tolist())):
        annotation = {
            # Ids start at 1: COCOeval records a match by storing the matched id, and 0 means "unmatched".
            "id": first_id + row,
            "image_id": image_id,
            "category_id": cls + 1,
            "bbox": [x1, y1, w, h],  # COCO boxes are xywh
            "area": w * h,
            "iscrowd": 0,
        }
        if scores is not None:
            annotation["score"] = float(scores[row])
        annotations.append(annotation)
    return annotations


def _coco_object(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    coco.createIndex()
    return coco


def coco_precision(gts: Sequence[ImageGT], dets: Sequence[ImageDetections], num_classes: int,
                   max_detections: int = 100) -> np.ndarray:
    """pycocotools' interpolated precision, shape (10 IoU thresholds, 101 recall points, num_classes).

    A class without any ground-truth box has -1 everywhere (COCO leaves it out of the mean).
    ``max_detections`` is per image and class; DeepPCB has up to ~20 defects per image.
    The inputs are assumed valid (see ``inputs.check_inputs``).
    """
    images = [{"id": index + 1} for index in range(len(gts))]
    categories = [{"id": cls + 1, "name": str(cls)} for cls in range(num_classes)]
    gt_annotations: list[dict] = []
    det_annotations: list[dict] = []
    for index, (gt, det) in enumerate(zip(gts, dets)):
        gt_annotations += _annotations(gt.boxes, gt.classes, index + 1, len(gt_annotations) + 1)
        det_annotations += _annotations(det.boxes, det.classes, index + 1, len(det_annotations) + 1, det.scores)

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_object(images, categories, gt_annotations)
        # Built directly rather than with COCO.loadRes, which fails on an empty detection list.
        coco_det = _coco_object(images, categories, det_annotations)
        evaluator = COCOeval(coco_gt, coco_det, iouType="bbox")
        evaluator.params.maxDets = [max_detections]
        evaluator.params.areaRng = [_ALL_AREAS]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    # (T, R, K, areas, maxDets) -> (T, R, K) for our single area range and maxDets value.
    return evaluator.eval["precision"][:, :, :, 0, 0]


def average_precision(precision: np.ndarray) -> np.ndarray:
    """AP per IoU threshold and class, shape (T, K): the mean over recall points; NaN where a class has no GT."""
    ap = precision.mean(axis=1)
    ap[precision[:, 0, :] < 0] = np.nan
    return ap


def curves_from_precision(precision: np.ndarray, class_names: Sequence[str]) -> dict[str, PRCurve]:
    """Per-class PR curves at IoU 0.5; classes with no ground truth have no curve."""
    return {
        name: PRCurve(recall=COCO_RECALL_THRESHOLDS.copy(), precision=precision[0, :, cls].copy())
        for cls, name in enumerate(class_names)
        if precision[0, 0, cls] >= 0
    }
