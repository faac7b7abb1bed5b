"""Target assignment of the PP-YOLO loss (numpy, no paddle): which anchor of which cell learns which GT box.

Each ground-truth box is compared by *shape* (IoU of width/height with centres aligned) with all anchors of all
levels. It is assigned to its best anchor and to every other anchor whose shape IoU exceeds
``cfg.anchor_match_threshold`` (0.5), in the cell of each level that contains its centre. 0.5 adds extra
positives for boxes that sit between anchors (more training signal, steadier early training) while still
keeping a thin vertical box away from a thin horizontal anchor (their shape IoU is ~0.4). When two boxes claim
the same anchor of the same cell, the better-fitting one (higher shape IoU) wins.

Why a module of its own: the loss terms (``loss.py``) need paddle, the targets do not; the torch twin
(``tools/torch_twin/yolo_loss.py``) trains on a machine without paddle and must build the very same targets,
so it imports them from here instead of keeping a copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inspector.models.anchors import shape_iou
from inspector.models.config import ModelConfig


@dataclass
class LevelTargets:
    """Training targets of one level, numpy, laid out like ``head.split_level``: (B, A, H*W[, ...])."""

    positive: np.ndarray  # float32 1 where this anchor of this cell is responsible for a GT box
    offset_x: np.ndarray  # centre offset inside the cell, [0, 1)
    offset_y: np.ndarray
    log_w: np.ndarray  # log(box width / anchor width)
    log_h: np.ndarray
    scale: np.ndarray  # 2 - w*h / input area
    classes: np.ndarray  # (B, A, H*W, C) one-hot
    boxes: np.ndarray  # (B, A, H*W, 4) the GT box, xyxy input pixels


def valid_gt_mask(gt_boxes: np.ndarray, gt_classes: np.ndarray) -> np.ndarray:
    """(B, M) bool: real boxes (class >= 0, positive width and height), not batch padding."""
    wh = gt_boxes[..., 2:] - gt_boxes[..., :2]
    return (gt_classes >= 0) & (wh[..., 0] > 0) & (wh[..., 1] > 0)


def build_targets(
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    grid_sizes: list[tuple[int, int]],
    cfg: ModelConfig,
) -> list[LevelTargets]:
    """Assign GT boxes (B, M, 4) xyxy input pixels / classes (B, M) (-1 = padding) to anchor cells.

    ``grid_sizes`` are the (H, W) of each level's output map. Vectorised over all boxes of the
    batch; the only loop is over the (three) levels.
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(len(gt_boxes), -1, 4)
    gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(len(gt_boxes), -1)
    batch, num_anchors, num_classes = len(gt_boxes), cfg.num_anchors, cfg.num_classes
    input_h = grid_sizes[0][0] * cfg.strides[0]
    input_w = grid_sizes[0][1] * cfg.strides[0]

    image_index, box_index = np.nonzero(valid_gt_mask(gt_boxes, gt_classes))
    boxes = gt_boxes[image_index, box_index]
    classes = gt_classes[image_index, box_index]
    if np.any(classes >= num_classes):
        raise ValueError(f"gt_classes: class id {int(classes.max())} out of range for num_classes={num_classes}")
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0

    anchors = np.array([a for level in cfg.anchors for a in level], dtype=np.float32)  # (L*A, 2)
    similarity = shape_iou(wh, anchors)  # (G, L*A)
    matched = similarity > cfg.anchor_match_threshold
    matched[np.arange(len(boxes)), similarity.argmax(axis=1)] = True
    gt_of_match, anchor_of_match = np.nonzero(matched)

    targets = []
    for level, (grid_h, grid_w) in enumerate(grid_sizes):
        stride = cfg.strides[level]
        in_level = anchor_of_match // num_anchors == level
        g = gt_of_match[in_level]
        a = anchor_of_match[in_level] % num_anchors
        b = image_index[g]
        cell_x = np.clip(np.floor(centre[g, 0] / stride), 0, grid_w - 1).astype(np.int64)
        cell_y = np.clip(np.floor(centre[g, 1] / stride), 0, grid_h - 1).astype(np.int64)
        cell = cell_y * grid_w + cell_x
        # Several boxes on one (image, anchor, cell): keep the best shape fit (sort by slot, then by
        # similarity, and take the last of each slot).
        slot = (b * num_anchors + a) * (grid_h * grid_w) + cell
        fit = similarity[g, anchor_of_match[in_level]]
        order = np.lexsort((fit, slot))
        last_of_slot = np.ones(len(order), dtype=bool)
        last_of_slot[:-1] = slot[order][1:] != slot[order][:-1]
        keep = order[last_of_slot]
        g, a, b, cell_x, cell_y, cell = g[keep], a[keep], b[keep], cell_x[keep], cell_y[keep], cell[keep]

        shape = (batch, num_anchors, grid_h * grid_w)
        t = LevelTargets(
            positive=np.zeros(shape, np.float32),
            offset_x=np.zeros(shape, np.float32),
            offset_y=np.zeros(shape, np.float32),
            log_w=np.zeros(shape, np.float32),
            log_h=np.zeros(shape, np.float32),
            scale=np.zeros(shape, np.float32),
            classes=np.zeros(shape + (num_classes,), np.float32),
            boxes=np.zeros(shape + (4,), np.float32),
        )
        level_anchors = np.asarray(cfg.anchors[level], dtype=np.float32)
        t.positive[b, a, cell] = 1.0
        t.offset_x[b, a, cell] = centre[g, 0] / stride - cell_x
        t.offset_y[b, a, cell] = centre[g, 1] / stride - cell_y
        t.log_w[b, a, cell] = np.log(wh[g, 0] / level_anchors[a, 0])
        t.log_h[b, a, cell] = np.log(wh[g, 1] / level_anchors[a, 1])
        t.scale[b, a, cell] = 2.0 - wh[g, 0] * wh[g, 1] / (input_w * input_h)
        t.classes[b, a, cell, classes[g]] = 1.0
        t.boxes[b, a, cell] = boxes[g]
        targets.append(t)
    return targets
