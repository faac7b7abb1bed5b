"""Draw detections on a frame: one colour per class, the class name and score above each box."""
from __future__ import annotations

import cv2
import numpy as np

from inspector.runtime.detector import Detections

# BGR, distinct on both white board and black copper.
_PALETTE = [(0, 0, 230), (0, 160, 0), (230, 80, 0), (0, 140, 255), (200, 0, 200), (160, 160, 0), (90, 40, 160)]


def draw_detections(image: np.ndarray, detections: Detections, thickness: int = 2) -> np.ndarray:
    """A BGR copy of ``image`` with the detections drawn on it."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    for box, score, class_id, name in zip(detections.boxes, detections.scores, detections.class_ids,
                                          detections.class_names):
        colour = _PALETTE[int(class_id) % len(_PALETTE)]
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        label = f"{name} {score:.2f}"
        (width, height), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(y1 - height - baseline - 2, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + width + 2, top + height + baseline + 2), colour, cv2.FILLED)
        cv2.putText(canvas, label, (x1 + 1, top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return canvas
