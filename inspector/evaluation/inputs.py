"""The inputs of every metric here: per-image ground truth and detections as plain numpy.

Both are in the same pixel ``xyxy`` coordinates (those of the image file on disk); class ids are
0-based indices into the ``class_names`` passed to the metric. ``ImageDetections(*outputs)``
accepts one image of ``YOLODetector.postprocess`` output as is, since the field order matches.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _as_array(value: object, dtype: type, empty_shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    # An empty list/array of any shape means "nothing in this image".
    return array.reshape(empty_shape) if array.size == 0 else array


@dataclass
class ImageGT:
    """The ground-truth boxes of one image."""

    boxes: np.ndarray  # (N, 4) float64, pixel xyxy
    classes: np.ndarray  # (N,) int64, 0-based class ids

    def __post_init__(self) -> None:
        self.boxes = _as_array(self.boxes, np.float64, (0, 4))
        self.classes = _as_array(self.classes, np.int64, (0,))

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class ImageDetections:
    """The detections of one image (any score threshold and NMS already applied by the model)."""

    boxes: np.ndarray  # (K, 4) float64, pixel xyxy
    scores: np.ndarray  # (K,) float64
    classes: np.ndarray  # (K,) int64, 0-based class ids

    def __post_init__(self) -> None:
        self.boxes = _as_array(self.boxes, np.float64, (0, 4))
        self.scores = _as_array(self.scores, np.float64, (0,))
        self.classes = _as_array(self.classes, np.int64, (0,))

    def __len__(self) -> int:
        return len(self.boxes)


def _check_boxes(where: str, boxes: np.ndarray, classes: np.ndarray, num_classes: int) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: boxes have shape {boxes.shape}, expected (N, 4) pixel xyxy")
    if classes.shape != (len(boxes),):
        raise ValueError(f"{where}: classes have shape {classes.shape}, expected ({len(boxes)},), one per box")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{where}: boxes contain NaN or infinite coordinates")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        row = int(np.flatnonzero(inverted)[0])
        raise ValueError(f"{where}: box {row} is {boxes[row].tolist()}, expected xyxy with x2 >= x1 and y2 >= y1")
    outside = (classes < 0) | (classes >= num_classes)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{where}: box {row} has class {int(classes[row])}, expected 0..{num_classes - 1} "
                         f"({num_classes} class names)")


def check_inputs(gts: Sequence[ImageGT], dets: Sequence[ImageDetections], num_classes: int) -> None:
    """Raise ValueError naming the image (its index) and field when the inputs can't be evaluated."""
    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} ground-truth images but {len(dets)} detection images; expected one each")
    if num_classes < 1:
        raise ValueError("class_names is empty; expected at least one class")
    for index, (gt, det) in enumerate(zip(gts, dets)):
        _check_boxes(f"image {index}: ground truth", gt.boxes, gt.classes, num_classes)
        _check_boxes(f"image {index}: detections", det.boxes, det.classes, num_classes)
        if det.scores.shape != (len(det.boxes),):
            raise ValueError(f"image {index}: detections: scores have shape {det.scores.shape}, "
                             f"expected ({len(det.boxes)},), one per box")
        if not np.isfinite(det.scores).all():
            raise ValueError(f"image {index}: detections: scores contain NaN or infinite values")


def save_detections(path, dets: Sequence[ImageDetections]) -> None:
    """Write the detections of a data set, image by image, to one ``.npz`` file (``load_detections`` reads it):
    kept so that two models' detections on the same images can be compared later (``bootstrap``)."""
    counts = np.array([len(det) for det in dets], dtype=np.int64)
    np.savez_compressed(
        path, counts=counts,
        boxes=np.concatenate([det.boxes for det in dets]) if dets else np.zeros((0, 4)),
        scores=np.concatenate([det.scores for det in dets]) if dets else np.zeros(0),
        classes=np.concatenate([det.classes for det in dets]) if dets else np.zeros(0, dtype=np.int64))


def load_detections(path) -> list[ImageDetections]:
    """The detections ``save_detections`` wrote, one ``ImageDetections`` per image in the original order."""
    with np.load(path) as saved:
        counts, boxes, scores, classes = saved["counts"], saved["boxes"], saved["scores"], saved["classes"]
    if int(counts.sum()) != len(boxes):
        raise ValueError(f"{path}: {int(counts.sum())} detections counted, {len(boxes)} stored")
    ends = np.cumsum(counts)
    return [ImageDetections(boxes[end - count:end], scores[end - count:end], classes[end - count:end])
            for count, end in zip(counts, ends)]
