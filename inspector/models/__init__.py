"""Detector models: ``ModelConfig`` -> ``build_model`` -> ``YOLODetector`` (see ARCHITECTURE.md).

Modules, top-down:
- ``config``: ``ModelConfig`` and the architecture names; ``anchors``: default and k-means anchors;
  ``nms``: numpy NMS; ``head_layout``: the heads' channel layouts and numpy decoding constants;
  ``yolo_targets``: the PP-YOLO loss's target assignment (numpy); ``assign``: task-aligned assignment (numpy).
  These need no paddle, so the runtime (and the torch twin, ``tools/torch_twin/``) can use them on their own.
- ``layers``, ``backbones``, ``necks``: ResNet-vd / MobileNetV3 and the PP-YOLO / light FPNs.
- ``head``: the YOLO head and its output layout; ``postprocess``: decoding and NMS;
  ``loss``: the PP-YOLO loss; ``detector``: ``YOLODetector``, ``build_model``.
- ``gfl_head``: the anchor-free GFL head (``ModelConfig.head == "gfl"``) and its decoding;
  ``gfl_loss``: varifocal/quality focal, GIoU and DFL.

Importing this package does not import paddle: the paddle-based names below are loaded on first
use, so ``from inspector.models import ModelConfig, nms_numpy`` stays light for the runtime.
"""
from __future__ import annotations

import importlib
from typing import Any

from inspector.models.anchors import default_anchors, kmeans_anchors
from inspector.models.config import ARCH_NAMES, ModelConfig, parse_arch
from inspector.models.nms import matrix_nms_numpy, nms_numpy, select_detections

# Public names that need paddle, and the module each lives in.
_PADDLE_NAMES = {
    "YOLODetector": "inspector.models.detector",
    "DecodedDetector": "inspector.models.detector",
    "build_model": "inspector.models.detector",
    "count_parameters": "inspector.models.detector",
    "YOLOHead": "inspector.models.head",
    "yolo_loss": "inspector.models.loss",
    "GFLHead": "inspector.models.gfl_head",
    "gfl_loss": "inspector.models.gfl_loss",
    "decode_outputs": "inspector.models.postprocess",
}

__all__ = [
    "ARCH_NAMES",
    "ModelConfig",
    "parse_arch",
    "default_anchors",
    "kmeans_anchors",
    "nms_numpy",
    "matrix_nms_numpy",
    "select_detections",
    *_PADDLE_NAMES,
]


def __getattr__(name: str) -> Any:
    """Load a paddle-based public name from its module the first time it is asked for (PEP 562)."""
    if name in _PADDLE_NAMES:
        return getattr(importlib.import_module(_PADDLE_NAMES[name]), name)
    raise AttributeError(f"module 'inspector.models' has no attribute {name!r}")
