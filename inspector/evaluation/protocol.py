"""How a detector is scored, whatever runs it: the thresholds detections are kept at, and the loop from
predictions to an ``EvalResult``.

Every evaluation of the project goes through here, so their numbers compare:

- training validation (``inspector.training.validate``: the dygraph model, per batch),
- quantization (``inspector.compression.quantization.measure``: a saved FP32 / INT8 program in Paddle
  Inference, per image),
- the runtime (``inspector.runtime.evaluate``: a package through ``Detector``, as in production), which
  ``inspector eval`` on a package and ``inspector export --eval-data`` use.

``EVAL_THRESHOLDS`` keeps detections down to a low score so mAP sees the whole precision-recall curve; the
DeepPCB F-score then picks its own threshold. Its NMS is the one packages ship with (``inspector.models.nms.
DEFAULT_NMS``: across classes, at the official metric's match IoU), so a checkpoint is chosen by the numbers
its package will measure. A recipe may choose another (``TrainConfig.nms``): ``recipe_thresholds`` gives a
model's training, pruning, quantization and checkpoint evaluation that one, and its package runs it too. A
package is evaluated with its own manifest's NMS (``inspector.runtime.evaluate``); its deployment score
threshold is the manifest's, not this one.
No paddle here: the runtime imports this module.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from inspector.data.transforms import unletterbox_boxes
from inspector.evaluation.inputs import ImageDetections, ImageGT
from inspector.evaluation.metrics import EvalResult, evaluate
from inspector.models.nms import DEFAULT_NMS, DEFAULT_NMS_THRESHOLD, NmsMethod, select_detections


@dataclass(frozen=True)
class EvalThresholds:
    """The post-processing of every evaluation."""

    score_threshold: float = 0.01
    nms_threshold: float = DEFAULT_NMS_THRESHOLD
    max_detections: int = 100
    nms: NmsMethod = DEFAULT_NMS


EVAL_THRESHOLDS = EvalThresholds()


def recipe_thresholds(train_config: Mapping | None) -> EvalThresholds:
    """``EVAL_THRESHOLDS`` with the NMS a model was trained to be judged by (its ``TrainConfig``'s ``nms`` and
    ``nms_threshold``, as saved in a run or checkpoint): pruning, quantization and ``inspector eval`` of that
    model then rank and measure it the way its training chose its best checkpoint. A recipe saved before those
    fields existed gets the product's default."""
    if not train_config:
        return EVAL_THRESHOLDS
    return replace(EVAL_THRESHOLDS, nms=train_config.get("nms", EVAL_THRESHOLDS.nms),
                   nms_threshold=float(train_config.get("nms_threshold", EVAL_THRESHOLDS.nms_threshold)))

# One image's detections in network-input (letterboxed) pixels: (boxes (K, 4), scores (K,), classes (K,)).
InputDetections = tuple[np.ndarray, np.ndarray, np.ndarray]


def select_decoded(boxes: np.ndarray, scores: np.ndarray, thresholds: EvalThresholds = EVAL_THRESHOLDS
                   ) -> InputDetections:
    """One image's decoded model output (boxes (K, 4), per-class scores (K, C)) kept at ``thresholds``:
    what a saved program's outputs need (the dygraph model's ``postprocess`` does the same)."""
    return select_detections(boxes, scores, thresholds.score_threshold, thresholds.nms_threshold,
                             thresholds.max_detections, thresholds.nms)


def predict_batches(loader: Iterable, predict: Callable[[np.ndarray], Sequence[InputDetections]],
                    progress: bool = True, desc: str = "evaluate") -> dict[str, ImageDetections]:
    """Detections per sample key, in original image pixels.

    ``loader`` yields letterboxed batches (``inspector.data.loader.BatchLoader``, evaluation mode);
    ``predict(images (B, C, S, S))`` returns one ``InputDetections`` per image, mapped back here with the
    batch's letterbox scale and padding.
    """
    results: dict[str, ImageDetections] = {}
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        per_image = predict(batch.images)
        for key, scale, pad, (boxes, scores, classes) in zip(batch.keys, batch.scales, batch.pads, per_image):
            results[key] = ImageDetections(unletterbox_boxes(boxes, float(scale), (float(pad[0]), float(pad[1]))),
                                           scores, classes)
    return results


def ground_truth(samples: Sequence) -> list[ImageGT]:
    """The labels of dataset samples as the evaluation takes them, one ``ImageGT`` per sample in order."""
    return [ImageGT(s.boxes, s.classes) for s in samples]


def evaluate_samples(samples: Sequence, detections: Mapping[str, ImageDetections] | Sequence[ImageDetections],
                     class_names: list[str], score_threshold: float | None = None,
                     interval: bool = False) -> EvalResult:
    """COCO mAP, the DeepPCB protocol and the official DeepPCB AP/F of ``detections`` against ``samples``'
    labels. ``detections``: by sample key (``predict_batches``), or one per sample in order.
    ``score_threshold`` fixes the DeepPCB F-score's threshold; None picks the F-maximising one. ``interval``: also
    the bootstrap interval of the official AP (``EvalResult.official_ap_interval``)."""
    dets = [detections[s.key] for s in samples] if isinstance(detections, Mapping) else list(detections)
    if len(dets) != len(samples):
        raise ValueError(f"evaluate_samples: {len(dets)} detections for {len(samples)} samples")
    return evaluate(ground_truth(samples), dets, class_names, score_threshold=score_threshold, interval=interval)
