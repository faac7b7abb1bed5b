"""Detection evaluation on plain numpy: COCO mAP (pycocotools) and the DeepPCB F-score protocol.

    from inspector.evaluation import ImageGT, ImageDetections, evaluate
    result = evaluate([ImageGT(s.boxes, s.classes) for s in samples],
                      [ImageDetections(*model_output) for model_output in outputs], class_names)
    result.to_dict()  # map50, map50_95, precision, recall, f1_iou033, score_threshold, per_class, ...

Modules, read in this order: ``inputs`` (the per-image structures), ``coco`` (mAP via
pycocotools), ``deeppcb`` (IoU > 0.33 matching and the F-maximising threshold), ``metrics``
(``evaluate`` and ``EvalResult``).
"""
from inspector.evaluation.coco import PRCurve
from inspector.evaluation.deeppcb import DEEPPCB_IOU_THRESHOLD, box_iou
from inspector.evaluation.inputs import ImageDetections, ImageGT
from inspector.evaluation.metrics import ClassResult, EvalResult, evaluate, pr_curves

__all__ = [
    "DEEPPCB_IOU_THRESHOLD",
    "ClassResult",
    "EvalResult",
    "ImageDetections",
    "ImageGT",
    "PRCurve",
    "box_iou",
    "evaluate",
    "pr_curves",
]
