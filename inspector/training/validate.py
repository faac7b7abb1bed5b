"""Run a Paddle (dygraph) detector over a dataset and score it; helpers for anchor fitting."""
from __future__ import annotations

import numpy as np
import paddle
from PIL import Image

from inspector.data import Dataset
from inspector.data.loader import BatchLoader
from inspector.evaluation import EVAL_THRESHOLDS, EvalResult, ImageDetections, evaluate_samples, predict_batches

# The validation numbers a training run records per evaluated epoch (metrics.csv / metrics.json columns).
# Rows of runs trained before the official DeepPCB metric lack the official_* keys.
EPOCH_METRIC_KEYS = ("map50", "map50_95", "precision", "recall", "f1_iou033", "score_threshold",
                     "official_ap", "official_f", "official_threshold")
# What ``best/`` is chosen by (``inspector.evaluation.selection``), kept with the run's resumable state.
SELECTION_KEYS = ("official_ap", "map50_95")


def epoch_metrics(result: EvalResult) -> dict:
    """The ``EPOCH_METRIC_KEYS`` of a validation result, for a metrics row."""
    summary = result.to_dict()
    return {key: summary[key] for key in EPOCH_METRIC_KEYS}


def describe_validation(row: dict) -> str:
    """One log line of a validated epoch: official DeepPCB AP/F first (models are chosen by it), then COCO."""
    official = ("official AP -  F -" if row.get("official_ap") is None else
                f"official AP {row['official_ap']:.4f}  F {row['official_f']:.4f}")
    return (f"{official}  mAP@0.5 {row['map50']:.4f}  mAP@0.5:0.95 {row['map50_95']:.4f}  "
            f"F(IoU>0.33) {row['f1_iou033']:.4f}")


@paddle.no_grad()
def predict_loader(model: paddle.nn.Layer, loader: BatchLoader,
                   score_threshold: float = EVAL_THRESHOLDS.score_threshold,
                   nms_threshold: float = EVAL_THRESHOLDS.nms_threshold,
                   max_detections: int = EVAL_THRESHOLDS.max_detections,
                   progress: bool = True) -> dict[str, ImageDetections]:
    """Detections per sample key, in original image pixels (``inspector.evaluation.protocol``)."""
    model.eval()

    def predict(images: np.ndarray) -> list:
        outputs = model(paddle.to_tensor(images))
        return model.postprocess(outputs, score_threshold, nms_threshold, max_detections)

    return predict_batches(loader, predict, progress=progress, desc="validate")


def validate(model: paddle.nn.Layer, loader: BatchLoader, class_names: list[str],
             score_threshold: float | None = None, progress: bool = True) -> EvalResult:
    """COCO mAP and the DeepPCB F-score of `model` on the loader's (whole, un-augmented) dataset."""
    detections = predict_loader(model, loader, progress=progress)
    return evaluate_samples(loader.dataset.samples, detections, class_names, score_threshold=score_threshold)


def box_sizes_at_input(dataset: Dataset, input_size: int) -> np.ndarray:
    """(N, 2) widths and heights of every box after letterboxing its image to `input_size`."""
    sizes = []
    for sample in dataset.samples:
        if len(sample) == 0:
            continue
        if sample.width and sample.height:
            width, height = sample.width, sample.height
        else:
            with Image.open(sample.image_path) as image:  # reads the header only
                width, height = image.size
        scale = input_size / max(width, height)
        wh = (sample.boxes[:, 2:] - sample.boxes[:, :2]) * scale
        sizes.append(wh)
    return np.concatenate(sizes).astype(np.float32) if sizes else np.zeros((0, 2), np.float32)
