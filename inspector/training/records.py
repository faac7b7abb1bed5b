"""What a training run records and how it starts, without paddle: the validation columns of an epoch, what
``best/`` is chosen by, and the model configuration a new run fits to its data. The Paddle trainer and the
PyTorch twin that trains on a lent GPU (``tools/torch_twin/train.py``, where there is no paddle) share them."""
from __future__ import annotations

import numpy as np
from PIL import Image

from inspector.data import Dataset
from inspector.evaluation import EvalResult
from inspector.models.anchors import kmeans_anchors
from inspector.models.config import ModelConfig
from inspector.training.config import TrainConfig

# The validation numbers a training run records per evaluated epoch (metrics.csv / metrics.json columns).
# Rows of runs trained before the official DeepPCB metric lack the official_* keys.
EPOCH_METRIC_KEYS = ("map50", "map50_95", "precision", "recall", "f1_iou033", "score_threshold",
                     "official_ap", "official_f", "official_threshold")
# What ``best/`` is chosen by (``inspector.evaluation.selection``), kept with the run's resumable state.
SELECTION_KEYS = ("official_ap", "map50_95")


def epoch_metrics(result: EvalResult | dict) -> dict:
    """The ``EPOCH_METRIC_KEYS`` of a validation result (or its ``to_dict()``), for a metrics row."""
    summary = result if isinstance(result, dict) else result.to_dict()
    return {key: summary[key] for key in EPOCH_METRIC_KEYS}


def describe_validation(row: dict) -> str:
    """One log line of a validated epoch: official DeepPCB AP/F first (models are chosen by it), then COCO."""
    official = ("official AP -  F -" if row.get("official_ap") is None else
                f"official AP {row['official_ap']:.4f}  F {row['official_f']:.4f}")
    return (f"{official}  mAP@0.5 {row['map50']:.4f}  mAP@0.5:0.95 {row['map50_95']:.4f}  "
            f"F(IoU>0.33) {row['f1_iou033']:.4f}")


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


def make_model_config(cfg: TrainConfig, train_set: Dataset) -> ModelConfig:
    """Model configuration for a new run; anchors fitted to the training boxes at the input size."""
    wh = box_sizes_at_input(train_set, cfg.input_size)
    anchors = kmeans_anchors(wh, n=9, seed=cfg.seed) if len(wh) >= 9 else None
    kwargs = dict(arch=cfg.arch, num_classes=len(train_set.class_names), input_size=cfg.input_size,
                  input_mode=cfg.input_mode, head=cfg.head)
    if anchors is not None:
        kwargs["anchors"] = anchors
    return ModelConfig(**kwargs)
