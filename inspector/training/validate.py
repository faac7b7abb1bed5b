"""Run a Paddle (dygraph) detector over a dataset and score it (the records of an epoch: ``records``)."""
from __future__ import annotations

import numpy as np
import paddle

from inspector.data.loader import BatchLoader
from inspector.evaluation import (EVAL_THRESHOLDS, EvalResult, EvalThresholds, ImageDetections, evaluate_samples,
                                  predict_batches)

@paddle.no_grad()
def predict_loader(model: paddle.nn.Layer, loader: BatchLoader,
                   score_threshold: float = EVAL_THRESHOLDS.score_threshold,
                   nms_threshold: float = EVAL_THRESHOLDS.nms_threshold,
                   max_detections: int = EVAL_THRESHOLDS.max_detections,
                   nms: str = EVAL_THRESHOLDS.nms,
                   progress: bool = True) -> dict[str, ImageDetections]:
    """Detections per sample key, in original image pixels (``inspector.evaluation.protocol``)."""
    model.eval()

    def predict(images: np.ndarray) -> list:
        outputs = model(paddle.to_tensor(images))
        return model.postprocess(outputs, score_threshold, nms_threshold, max_detections, nms)

    return predict_batches(loader, predict, progress=progress, desc="validate")


def validate(model: paddle.nn.Layer, loader: BatchLoader, class_names: list[str],
             score_threshold: float | None = None, progress: bool = True,
             thresholds: EvalThresholds = EVAL_THRESHOLDS, interval: bool = False) -> EvalResult:
    """COCO mAP and the DeepPCB F-score of `model` on the loader's (whole, un-augmented) dataset, its detections
    kept at ``thresholds`` (a recipe's NMS: ``inspector.evaluation.recipe_thresholds``); ``interval``: also the
    official AP's bootstrap interval."""
    detections = predict_loader(model, loader, thresholds.score_threshold, thresholds.nms_threshold,
                                thresholds.max_detections, thresholds.nms, progress=progress)
    return evaluate_samples(loader.dataset.samples, detections, class_names, score_threshold=score_threshold,
                            interval=interval)

