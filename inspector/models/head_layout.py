"""The heads' output layouts and the numpy constants their decoding uses (no paddle).

Why a module of its own: these are plain numbers and numpy, used by the paddle heads (``head.py``,
``gfl_head.py``), their decoding (``postprocess.py``) and losses, and equally by the torch twin
(``tools/torch_twin/``) that trains the same networks on a machine without paddle. One definition here means the
twin cannot drift from the layout the exported graphs and the runtime read. The layouts themselves are described
in ``head.py`` (YOLO: per anchor ``[tx, ty, tw, th, obj, (iou,) cls...]``) and ``gfl_head.py`` (GFL: class
logits then four distributions of ``reg_max + 1`` bins).
"""
from __future__ import annotations

import numpy as np

from inspector.models.anchors import Anchor

# Channel offsets inside one anchor's group of a YOLO head map.
TX, TY, TW, TH, OBJ, IOU = 0, 1, 2, 3, 4, 5

# exp(8) ~ 3000 x the anchor: far beyond any real box, but keeps a wild logit from overflowing.
MAX_LOG_SCALE = 8.0


def channels_per_anchor(num_classes: int, iou_aware: bool) -> int:
    """K of the YOLO layout: [tx, ty, tw, th, obj, (iou,) cls_0 ... cls_{C-1}]."""
    return (6 if iou_aware else 5) + num_classes


def gfl_channels(num_classes: int, reg_max: int) -> int:
    """Channels of one GFL level's raw map: C class logits then 4 distributions of reg_max + 1 bins."""
    return num_classes + 4 * (reg_max + 1)


def level_constant_arrays(
    height: int, width: int, anchors: list[Anchor], stride: int, scale_x_y: float
) -> tuple[np.ndarray, np.ndarray]:
    """What decoding one YOLO level of ``height`` x ``width`` cells needs besides its map, float32:
    cell offsets (1, 1, 2, H*W) ``(cell index - (k - 1) / 2) * stride``, x then y, cells row-major; and half
    the anchor widths and heights (1, A, 2, 1), in input pixels (``postprocess.LevelConstants``)."""
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")  # row-major cells
    cells = np.stack([columns.reshape(-1), rows.reshape(-1)])  # (2, H*W): x, y
    offsets = (cells - (scale_x_y - 1.0) / 2.0) * stride
    half_anchors = np.asarray(anchors, dtype=np.float64).reshape(1, len(anchors), 2, 1) * 0.5
    return offsets.reshape(1, 1, 2, -1).astype(np.float32), half_anchors.astype(np.float32)


def gfl_constant_arrays(height: int, width: int, stride: int, reg_max: int) -> tuple[np.ndarray, np.ndarray]:
    """What decoding one GFL level of ``height`` x ``width`` cells needs besides its map, float32: the anchor
    points (1, 2, H*W) x then y (cell centres, row-major) and the bin distances in pixels (1, 1, R+1, 1)
    (``gfl_head.GFLLevelConstants``)."""
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    points = (np.stack([columns.reshape(-1), rows.reshape(-1)]) + 0.5) * stride
    projection = np.arange(reg_max + 1, dtype=np.float64) * stride
    return points.reshape(1, 2, -1).astype(np.float32), projection.reshape(1, 1, -1, 1).astype(np.float32)


def anchor_points(grid_sizes: list[tuple[int, int]], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """All GFL levels' anchor points (N, 2) xy input pixels and their strides (N,), in decode order."""
    points, point_strides = [], []
    for (height, width), stride in zip(grid_sizes, strides):
        level_points, _ = gfl_constant_arrays(height, width, stride, 1)
        points.append(level_points[0].T)
        point_strides.append(np.full(height * width, stride, dtype=np.float32))
    return np.concatenate(points), np.concatenate(point_strides)
