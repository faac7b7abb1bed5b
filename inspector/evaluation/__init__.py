"""Detection evaluation on plain numpy: COCO mAP (pycocotools), the DeepPCB F-score protocol and the
official DeepPCB AP/F (the dataset authors' script), by which models are chosen.

    from inspector.evaluation import ImageGT, ImageDetections, evaluate
    result = evaluate([ImageGT(s.boxes, s.classes) for s in samples],
                      [ImageDetections(*model_output) for model_output in outputs], class_names)
    result.to_dict()  # map50, map50_95, precision, recall, f1_iou033, score_threshold, per_class,
                      # official_ap, official_f, official_threshold, ...

Modules, read in this order: ``inputs`` (the per-image structures), ``coco`` (mAP via
pycocotools), ``deeppcb`` (IoU > 0.33 matching and the F-maximising threshold), ``official`` (the
authors' rule: a wrong-class detection consumes the box; non-interpolated AP), ``bootstrap`` (how far an
official AP, or a difference of two on the same images, can be trusted), ``metrics`` (``evaluate`` and
``EvalResult``), ``selection`` (which model is best: official AP, then mAP@0.5:0.95),
``protocol`` (the thresholds every evaluation keeps detections at, and the loop from a model's
predictions to ``evaluate``: shared by training validation, quantization, export and the runtime).
"""
from inspector.evaluation.bootstrap import Interval, official_ap_difference_interval, official_ap_interval
from inspector.evaluation.coco import PRCurve
from inspector.evaluation.deeppcb import DEEPPCB_IOU_THRESHOLD, box_iou
from inspector.evaluation.inputs import ImageDetections, ImageGT, load_detections, save_detections
from inspector.evaluation.metrics import ClassResult, EvalResult, evaluate, pr_curves
from inspector.evaluation.official import OfficialResult, official_metric
from inspector.evaluation.protocol import (
    EVAL_THRESHOLDS,
    EvalThresholds,
    evaluate_samples,
    ground_truth,
    predict_batches,
    recipe_thresholds,
    select_decoded,
)
from inspector.evaluation.selection import best_index, improves, selection_basis

__all__ = [
    "DEEPPCB_IOU_THRESHOLD",
    "EVAL_THRESHOLDS",
    "ClassResult",
    "EvalResult",
    "EvalThresholds",
    "ImageDetections",
    "ImageGT",
    "Interval",
    "OfficialResult",
    "PRCurve",
    "best_index",
    "box_iou",
    "evaluate",
    "evaluate_samples",
    "ground_truth",
    "improves",
    "load_detections",
    "official_ap_difference_interval",
    "official_ap_interval",
    "official_metric",
    "pr_curves",
    "predict_batches",
    "recipe_thresholds",
    "save_detections",
    "select_decoded",
    "selection_basis",
]
