"""Whole panels, tiling and stitching: the tile grid, the seam-aware merge of tile detections, ignore regions.

Tiles overlap by ``overlap`` pixels on the template's (golden panel's) grid. A defect cut by a tile border
shows as a fragment touching that border; ``merge_tile_detections`` drops it when a neighbouring tile saw
the defect whole, merges the fragments of a defect longer than the overlap, then removes duplicates with
the package's NMS (per class, or across classes). Ignore regions (recipe masks) are in template
coordinates, which stay fixed from panel to panel. Used by ``inspector.runtime.panel`` (the inspector)
and ``panel_registration`` (the sample tiles).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.models.nms import nms_numpy

DEFAULT_TILE_SIZE = 640  # DeepPCB's image side: the shipped packages were trained on such tiles, letterboxed
DEFAULT_OVERLAP = 64  # covers whole ~90% of DeepPCB's defects (median side 38 px, 90th percentile 59 px)
SEAM_MARGIN = 3.0  # a box edge this close (px) to an inner tile border is taken to be cut by it
MERGE_CONTAINMENT = 0.5  # a cut fragment this much inside a whole same-class box of another tile is dropped
FRAGMENT_OVERLAP = 0.3  # two cut fragments sharing this much of the smaller one are one defect


@dataclass(frozen=True)
class Tile:
    """One tile of the grid, on the template's pixel grid."""

    x: int
    y: int
    width: int
    height: int
    inner_edges: tuple[bool, bool, bool, bool]  # left, top, right, bottom borders lie inside the panel (seams)



def tile_grid(width: int, height: int, tile_size: int, overlap: int) -> list[Tile]:
    """Tiles covering ``width`` x ``height``: stride ``tile_size - overlap``, the last row/column flush
    with the far edge (so no tile hangs over it); a side shorter than a tile gets one tile of its length."""
    if tile_size < 32:
        raise ValueError(f"tile_size: expected at least 32 pixels, got {tile_size}")
    if not 0 <= overlap < tile_size // 2:
        raise ValueError(f"overlap: expected 0 <= overlap < tile_size / 2 = {tile_size // 2}, got {overlap}")

    def starts(length: int) -> list[int]:
        if length <= tile_size:
            return [0]
        stride = tile_size - overlap
        positions = list(range(0, length - tile_size, stride))
        return positions + [length - tile_size]

    tiles = []
    for y in starts(height):
        for x in starts(width):
            w, h = min(tile_size, width), min(tile_size, height)
            tiles.append(Tile(x, y, w, h, (x > 0, y > 0, x + w < width, y + h < height)))
    return tiles


class IgnoreRegions:
    """Recipe masks in golden-panel (template) pixels: a uint8/bool mask (non-zero = ignore), polygons
    (each a sequence of (x, y) vertices), or both. A detection whose box centre lies inside is dropped."""

    def __init__(self, mask: np.ndarray | None = None, polygons: Sequence[Sequence[Sequence[float]]] = ()) -> None:
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise ValueError(f"ignore mask: expected a 2-D (H, W) array in template pixels, got shape {mask.shape}")
        self.mask = mask
        self.polygons = []
        for index, polygon in enumerate(polygons):
            points = np.asarray(polygon, np.float32)
            if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
                raise ValueError(f"ignore polygon {index}: expected at least 3 (x, y) vertices, got shape {points.shape}")
            self.polygons.append(points.reshape(-1, 1, 2))

    def __bool__(self) -> bool:
        return self.mask is not None or bool(self.polygons)

    def covers(self, boxes: np.ndarray) -> np.ndarray:
        """(N,) bool: which boxes (template pixels) have their centre in an ignore region."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        hit = np.zeros(len(boxes), bool)
        if self.mask is not None and len(boxes):
            height, width = self.mask.shape
            cx = np.clip(centres[:, 0].astype(int), 0, width - 1)
            cy = np.clip(centres[:, 1].astype(int), 0, height - 1)
            hit |= self.mask[cy, cx] != 0
        for polygon in self.polygons:
            hit |= np.array([cv2.pointPolygonTest(polygon, (float(x), float(y)), False) >= 0 for x, y in centres],
                            bool).reshape(-1)
        return hit



def merge_tile_detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, tile_ids: np.ndarray,
                          cut: np.ndarray, nms_threshold: float, class_agnostic: bool = False
                          ) -> tuple[list[list[int]], int]:
    """Seam-aware suppression of tile detections already in panel coordinates.

    ``cut[i]``: detection i touches an inner border of its tile, so that border may have cut its defect.

    - A cut detection lying mostly (``MERGE_CONTAINMENT`` of its area) inside a larger uncut detection
      of the same class from another tile is a fragment of a defect that tile saw whole: it is dropped
      and the whole box stands.
    - Two cut detections of the same class from different tiles that share ``FRAGMENT_OVERLAP`` of the
      smaller one are the two parts of a defect larger than the tiles' overlap: they are merged into the
      box covering both (merges chain), with the better score.
    - Then per-class NMS at ``nms_threshold``: a defect seen whole by two tiles is reported once.

    ``class_agnostic`` (a package whose NMS is "agnostic"): "of the same class" above becomes "of any
    class", as within a tile, and the NMS runs across classes; a kept group reports its best member's class.

    Uncut detections are never merged with each other (two real defects side by side stay two).
    Returns ``(groups, merges)``: per kept detection, best first, the indices of the detections it
    stands for (its own first; a group of several is a merged defect), and how many fragments were
    dropped or merged into another detection.
    """
    count = len(boxes)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.zeros(count, np.int64) if class_agnostic else np.asarray(classes, np.int64).reshape(-1)
    parent = np.arange(count)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    dropped = np.zeros(count, bool)
    for i in np.nonzero(cut)[0]:
        width = np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0])
        height = np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1])
        inter = np.maximum(width, 0) * np.maximum(height, 0)
        shared = inter / np.maximum(np.minimum(areas[i], areas), 1e-6)
        related = (classes == classes[i]) & (tile_ids != tile_ids[i])
        if np.any(related & ~cut & (areas >= areas[i]) & (inter >= MERGE_CONTAINMENT * max(areas[i], 1e-6))):
            dropped[i] = True
            continue
        for j in np.nonzero(related & cut & (shared >= FRAGMENT_OVERLAP))[0]:
            root_i, root_j = find(int(i)), find(int(j))
            if root_i != root_j:
                parent[root_j] = root_i
    groups: dict[int, list[int]] = {}
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if not dropped[i]:
            groups.setdefault(find(int(i)), []).append(int(i))
    members = list(groups.values())
    merges = count - len(members)
    if not members:
        return [], merges
    union = np.array([[boxes[m, 0].min(), boxes[m, 1].min(), boxes[m, 2].max(), boxes[m, 3].max()] for m in members],
                     np.float32)
    best = np.array([m[0] for m in members])
    keep = nms_numpy(union, np.asarray(scores)[best], np.asarray(classes)[best], nms_threshold, max_det=len(members))
    return [members[k] for k in keep], merges


def cut_by_seam(boxes: np.ndarray, tile: Tile) -> np.ndarray:
    """(N,) bool: boxes (tile pixels) touching one of the tile's inner borders, so possibly cut by it."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    left, top, right, bottom = tile.inner_edges
    return ((left & (boxes[:, 0] <= SEAM_MARGIN)) | (top & (boxes[:, 1] <= SEAM_MARGIN))
            | (right & (boxes[:, 2] >= tile.width - SEAM_MARGIN)) | (bottom & (boxes[:, 3] >= tile.height - SEAM_MARGIN)))


def map_boxes(matrix: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """xyxy boxes through an affine map: the box around the four moved corners."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1)
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1).astype(np.float32)


def invert_map(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))

