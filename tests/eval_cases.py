"""Builders of hand-made evaluation cases, shared by the evaluation and official-metric tests."""
from __future__ import annotations

import numpy as np

from inspector.evaluation import ImageDetections, ImageGT

CLASSES = ["open", "short"]
SQUARE = [0, 0, 100, 100]


def gt(boxes, classes) -> ImageGT:
    return ImageGT(np.array(boxes, dtype=float), np.array(classes))


def det(boxes, scores, classes) -> ImageDetections:
    return ImageDetections(np.array(boxes, dtype=float), np.array(scores, dtype=float), np.array(classes))


def no_detections() -> ImageDetections:
    return det(np.zeros((0, 4)), [], [])
