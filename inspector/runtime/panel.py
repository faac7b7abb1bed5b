"""Whole panels: register a large scan to its golden panel, inspect it tile by tile, stitch the defects.

A line-scan camera delivers the whole panel (DeepPCB's 640 px boards are tiles cut from ~16,000 px
scans at 48 px/mm), and the golden template is the panel too. Letterboxing such an image into the
model's 320 px input would shrink a 30 px defect to half a pixel, so ``PanelInspector`` runs the model
where it was trained: on tiles of its native size (``tile_size``, 640 px for the DeepPCB packages), one
``Detector.detect(tile, template_tile)`` call each.

1. **Registration** (``register_panel``): the global template->panel map is estimated on a downscaled
   overview of both by ``alignment.align_to_template`` (ORB + RANSAC, then ECC; it refuses a wrong or
   unreadable panel), then refined at full resolution: the residual shift of up to 8 x 8 sample tiles
   (phase correlation) gives template->panel point pairs, and a robust fit to them (``motion``:
   similarity by default, i.e. shift, rotation and scale; or euclidean, or affine) is the final map.
   The RMS residual of that fit is reported: it measures how far the panel is from rigid.
2. **Tiles**: a grid of ``tile_size`` tiles overlapping by ``overlap`` pixels on the template's grid.
   Each tested tile is sampled from the panel through the map: a plain crop when the map's rotation and
   scale move no tile pixel more than ``_SNAP_PX`` (no resampling blur), bilinear otherwise. Where the
   fit's RMS says the panel is not rigid (stretch, a bowed board), each tile's own residual shift is
   measured and applied too. Tiles are streamed (``workers`` at once, each worker with its own engine):
   only the panel, the template and a few tile pairs are in memory, so a 16k x 16k greyscale panel needs
   ~2 x 256 MB plus the engines (808 MB peak RSS measured, ``benchmarks/panel_throughput.py``).
3. **Stitching** (``merge_tile_detections``): tile detections are moved to template (golden panel)
   coordinates. A defect cut by a tile border shows as a fragment touching that border; when the
   neighbouring tile saw it whole, the fragment is dropped; when the defect is longer than the overlap,
   both tiles see fragments, which become one box covering both. Then per-class NMS removes the
   duplicates of defects seen whole by two tiles. Boxes are finally mapped to the tested panel's pixels
   through the map of the tile that saw each defect best.
4. **Ignore regions** (recipe masks: fiducials, labels, a board outline) are given in template
   coordinates, the golden panel's, which stay fixed from panel to panel; a detection whose centre
   lies in one is dropped (and counted).

Images no larger than a tile (``tile_size * SMALL_FRAME_SLACK`` per side) take the ordinary
``Detector.detect`` path unchanged. The runtime's rule holds: no training code is imported here.
"""
from __future__ import annotations

import functools
import math
import queue
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from inspector.models.nms import nms_numpy
from inspector.runtime.alignment import AlignmentError, align_to_template
from inspector.runtime.detector import Detections, Detector, Timing

DEFAULT_TILE_SIZE = 640  # DeepPCB's image side: the shipped packages were trained on such tiles, letterboxed
DEFAULT_OVERLAP = 64  # covers whole ~90% of DeepPCB's defects (median side 38 px, 90th percentile 59 px)
SMALL_FRAME_SLACK = 1.25  # frames up to 25% larger than a tile are letterboxed whole, as before
SEAM_MARGIN = 3.0  # a box edge this close (px) to an inner tile border is taken to be cut by it
MERGE_CONTAINMENT = 0.5  # a cut fragment this much inside a whole same-class box of another tile is dropped
FRAGMENT_OVERLAP = 0.3  # two cut fragments sharing this much of the smaller one are one defect
_OVERVIEW_SIDE = 1600  # the global estimate runs on both images shrunk to at most this many pixels a side
_SAMPLE_GRID = 8  # the global refinement measures at most this many x this many sample tiles
_MIN_RESPONSE = 0.15  # phase-correlation peak below this: a blank or ambiguous tile, not measured
_MAX_LOCAL_SHIFT = 12.0  # px: a tile's own correction beyond this is distrusted (the global map is kept)
_RIGID_RMS_PX = 0.3  # px: sample tiles fitting the global map this well mean a rigid panel (no per-tile refinement)
_MIN_LOCAL_SHIFT = 0.5  # px: residuals below this are measurement noise; the tile keeps the global map
_GREY_SHARE = 0.02  # a golden tile with fewer pixels than this between black and white is a binarised scan
_SNAP_PX = 0.5  # px: a tile map whose rotation/scale moves no pixel further than this is a plain crop
TILE_INTERPOLATION = cv2.INTER_LINEAR  # rotated tiles: bilinear (nearest measured no better: -1.0 vs -0.8 pt official AP)
MOTIONS = ("euclidean", "similarity", "affine")  # shift + rotation; + uniform scale; + shear


@dataclass(frozen=True)
class PanelRegistration:
    """The tested panel registered to its golden panel."""

    template_to_panel: np.ndarray  # (2, 3): template pixel (x, y) is seen at panel pixel M @ (x, y, 1)
    correlation: float  # of the overview after the global estimate (alignment.align_to_template)
    overlap: float  # fraction of the template covered by the panel (overview)
    sample_tiles: int  # sample tiles whose residual shift agreed with the fitted map (RANSAC inliers)
    fit_rms_px: float  # RMS residual of all measured sample tiles against the fitted map (non-rigidity + noise)
    motion: str

    @property
    def rotation_deg(self) -> float:
        """Counter-clockwise turn of the panel as seen on screen (``cv2.getRotationMatrix2D``'s sense)."""
        return math.degrees(math.atan2(-self.template_to_panel[1, 0], self.template_to_panel[0, 0]))

    @property
    def scale(self) -> float:
        """Mean linear scale of the panel relative to the template (1 = same resolution)."""
        return math.sqrt(abs(float(np.linalg.det(self.template_to_panel[:, :2]))))

    @property
    def shift(self) -> tuple[float, float]:
        """Where the template's origin lands in the panel, pixels."""
        return float(self.template_to_panel[0, 2]), float(self.template_to_panel[1, 2])

    def to_dict(self) -> dict:
        return {"rotation_deg": round(self.rotation_deg, 4), "scale": round(self.scale, 6),
                "shift": [round(v, 3) for v in self.shift],
                "template_to_panel": [[round(float(v), 6) for v in row] for row in self.template_to_panel],
                "correlation": round(self.correlation, 4), "overlap": round(self.overlap, 4),
                "sample_tiles": self.sample_tiles, "fit_rms_px": round(self.fit_rms_px, 3), "motion": self.motion}


IDENTITY_REGISTRATION = PanelRegistration(np.eye(2, 3), 1.0, 1.0, 0, 0.0, "none")


@dataclass(frozen=True)
class Tile:
    """One tile of the grid, on the template's pixel grid."""

    x: int
    y: int
    width: int
    height: int
    inner_edges: tuple[bool, bool, bool, bool]  # left, top, right, bottom borders lie inside the panel (seams)


@dataclass
class PanelDetections:
    """The defects of a whole panel, best first, with where they are on the tested and the golden panel."""

    boxes: np.ndarray  # (N, 4) float32 xyxy in pixels of the tested panel (the image passed in)
    template_boxes: np.ndarray  # (N, 4) float32 xyxy in pixels of the golden panel
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64
    class_names: list[str]
    image_size: tuple[int, int]  # (width, height) of the tested panel
    tiles: int  # model calls made (1 for a frame that took the ordinary path)
    registration: PanelRegistration | None  # None when no template or ``register=False``
    timing_ms: dict[str, float]  # register, tiles (cut + refine), infer, stitch, total
    seam_merges: int = 0  # fragments merged into a defect seen across a tile border
    ignored: int = 0  # detections dropped by ignore regions
    refined_tiles: int = 0  # tiles that got their own local correction on top of the global map
    tile_size: int = DEFAULT_TILE_SIZE
    frame: Detections | None = field(default=None, repr=False)  # the ordinary path's result, for small frames

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def is_panel(self) -> bool:
        return self.frame is None

    def as_detections(self) -> Detections:
        """The result as a plain ``Detections`` (boxes in the tested panel's pixels), for code written for
        frames (the service's records, recipes, evidence drawing): the frame's own result for a small frame."""
        if self.frame is not None:
            return self.frame
        timing = Timing(self.timing_ms.get("register", 0.0) + self.timing_ms.get("tiles", 0.0),
                        self.timing_ms.get("infer", 0.0), self.timing_ms.get("stitch", 0.0))
        return Detections(self.boxes, self.scores, self.class_ids, list(self.class_names), self.image_size, timing)

    def to_dict(self) -> dict:
        """JSON-ready; the same ``detections`` entries as ``Detections.to_dict`` plus each one's template box."""
        return {
            "image_size": list(self.image_size),
            "panel": self.is_panel,
            "tiles": self.tiles,
            "tile_size": self.tile_size,
            "detections": [
                {"box": [round(float(v), 2) for v in box], "template_box": [round(float(v), 2) for v in tbox],
                 "score": round(float(score), 4), "class_id": int(cid), "class_name": name}
                for box, tbox, score, cid, name in zip(self.boxes, self.template_boxes, self.scores, self.class_ids,
                                                       self.class_names)
            ],
            "timing_ms": {k: round(v, 3) for k, v in self.timing_ms.items()},
            "registration": None if self.registration is None else self.registration.to_dict(),
            "alignment": None if self.frame is None or self.frame.alignment is None else self.frame.alignment.to_dict(),
            "seam_merges": self.seam_merges,
            "ignored": self.ignored,
            "refined_tiles": self.refined_tiles,
        }


# ------------------------------------------------------------------------------------------ tiling


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


# ------------------------------------------------------------------------------------------ registration


def register_panel(panel: np.ndarray, template: np.ndarray, *, motion: str = "similarity",
                   tile_size: int = DEFAULT_TILE_SIZE, min_correlation: float = 0.8,
                   min_overlap: float = 0.9) -> PanelRegistration:
    """Estimate the template->panel map of a whole panel (see the module docstring); AlignmentError when the
    panel cannot be registered (wrong panel, out of the field of view, unreadable)."""
    if motion not in MOTIONS:
        raise ValueError(f"motion: expected one of {MOTIONS}, got {motion!r}")
    scale = min(1.0, _OVERVIEW_SIDE / max(panel.shape[:2] + template.shape[:2]))
    coarse = align_to_template(_overview(panel, scale), _overview(template, scale),
                               motion="euclidean" if motion == "euclidean" else "affine",
                               min_correlation=min_correlation, min_overlap=min_overlap)
    matrix = coarse.template_to_frame.astype(np.float64).copy()
    matrix[:, 2] /= scale

    height, width = template.shape[:2]
    tiles = tile_grid(width, height, tile_size, 0)
    picks = _spread(len({t.x for t in tiles}), _SAMPLE_GRID), _spread(len({t.y for t in tiles}), _SAMPLE_GRID)
    xs, ys = sorted({t.x for t in tiles}), sorted({t.y for t in tiles})
    sources, targets = [], []
    for y in (ys[i] for i in picks[1]):
        for x in (xs[i] for i in picks[0]):
            tile = Tile(x, y, min(tile_size, width), min(tile_size, height), (False,) * 4)
            tested, used = _sample_tile(panel, _tile_map(matrix, tile), tile.width, tile.height)
            shift = _residual_shift(_gray(template[y:y + tile.height, x:x + tile.width]), _gray(tested),
                                    max_shift=tile_size / 8)
            if shift is None:
                continue
            centre = np.array([tile.width / 2, tile.height / 2])
            sources.append(centre + (x, y))
            targets.append(_apply(used, centre + shift))  # tested(u) ~ template(u - shift)
    rms, used = 0.0, 0
    if len(sources) >= 3:
        source, target = np.float64(sources), np.float64(targets)
        fit = cv2.estimateAffine2D if motion == "affine" else cv2.estimateAffinePartial2D
        refined, inliers = fit(source, target, method=cv2.RANSAC, ransacReprojThreshold=1.5, refineIters=20)
        used = 0 if refined is None else int(inliers.sum())
        if used < 3:
            # No three tiles agree to 1.5 px: a panel far from rigid. The least-squares map over all of them is
            # the best global start; each tile's own correction (``refine_tiles``) does the rest.
            refined, used = _least_squares(source, target, motion), 0
        refined = refined.astype(np.float64)
        if motion == "euclidean":  # a similarity fit may carry a scale the motion does not have
            refined[:, :2] /= math.sqrt(abs(np.linalg.det(refined[:, :2])))
        # Over every measured tile, outliers included: tiles the global map does not fit are what
        # makes a panel non-rigid (and what per-tile refinement is for).
        residual = np.array([_apply(refined, p) for p in source]) - target
        rms, matrix = float(np.sqrt((residual ** 2).sum(axis=1).mean())), refined
    return PanelRegistration(matrix, coarse.correlation, coarse.overlap, used, rms, motion)


def _least_squares(source: np.ndarray, target: np.ndarray, motion: str) -> np.ndarray:
    """The (2, 3) map minimising the squared distances source -> target: affine, or similarity
    (``x' = a x - b y + tx``, ``y' = b x + a y + ty``) for the other motions."""
    ones, zeros = np.ones(len(source)), np.zeros(len(source))
    if motion == "affine":
        design = np.column_stack([source, ones])
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        return solution.T
    x, y = source[:, 0], source[:, 1]
    design = np.vstack([np.column_stack([x, -y, ones, zeros]), np.column_stack([y, x, zeros, ones])])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, np.concatenate([target[:, 0], target[:, 1]]), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def _overview(image: np.ndarray, scale: float) -> np.ndarray:
    """A grey copy shrunk by ``scale`` (INTER_AREA: thin traces fade rather than vanish); resized before
    the colour conversion so a colour panel is never copied at full size."""
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    return _gray(small)


def _spread(count: int, most: int) -> list[int]:
    """At most ``most`` indices of ``range(count)``, evenly spread, ends included."""
    if count <= most:
        return list(range(count))
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, most)})


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image.reshape(image.shape[:2])


def _apply(matrix: np.ndarray, point: np.ndarray) -> np.ndarray:
    return matrix[:, :2] @ point + matrix[:, 2]


def _residual_shift(template_tile: np.ndarray, tested_tile: np.ndarray, max_shift: float) -> np.ndarray | None:
    """How far the tested tile's content sits from the template's, ``d`` with tested(x) ~ template(x - d);
    None when the tile has too little structure to tell (phase-correlation peak below ``_MIN_RESPONSE``).

    Measured at half resolution: the ~0.1 px it gives is what a model seeing tiles at half scale needs,
    at a twentieth of the full-resolution cost."""
    if min(template_tile.shape) < 32:
        return None
    half = [cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA).astype(np.float32)
            for im in (template_tile, tested_tile)]
    window = _hanning(half[0].shape[1], half[0].shape[0])
    (dx, dy), response = cv2.phaseCorrelate(half[0], half[1], window)
    shift = np.array([dx, dy]) * 2.0
    if response < _MIN_RESPONSE or not np.all(np.isfinite(shift)) or np.abs(shift).max() > max_shift:
        return None
    return shift


@functools.lru_cache(maxsize=8)
def _hanning(width: int, height: int) -> np.ndarray:
    """The phase-correlation window (tapers the tile's borders, which would otherwise dominate), made once per size."""
    window = cv2.createHanningWindow((width, height), cv2.CV_32F)
    window.setflags(write=False)
    return window


def _tile_map(matrix: np.ndarray, tile: Tile) -> np.ndarray:
    """The map from a tile's own pixels (0..w, 0..h) to panel pixels under the global ``matrix``."""
    local = matrix.astype(np.float64).copy()
    local[:, 2] = _apply(matrix, np.array([tile.x, tile.y], np.float64))
    return local


def _shifted(local: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``local`` moved so that tile pixel u is sampled where ``local`` sampled u + shift."""
    moved = local.copy()
    moved[:, 2] = _apply(local, shift)
    return moved


def _sample_tile(panel: np.ndarray, local: np.ndarray, width: int, height: int,
                 fill: np.ndarray | None = None, binarised: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The tested panel seen through ``local`` (tile pixel -> panel pixel) as a ``width`` x ``height`` tile,
    and the map actually used.

    When the map's rotation/scale moves no tile pixel more than ``_SNAP_PX`` from a pure shift, the tile
    is a plain crop at the shift rounded to whole pixels (so at most ~1 px off): no resampling blur on the
    binarised scan, which the model never saw in training (DeepPCB's own pairs are registered to about a
    pixel, and the model was trained on them). Otherwise
    it is resampled (bilinear), and, for a ``binarised`` scan, thresholded back to black and white: the
    grey edges of interpolation are a look the model never saw (on 192 validation boards in panels turned
    0.3 deg it cost 1.1 points of official F; thresholded, 0.4). Pixels the panel does not show are taken
    from ``fill`` (the template tile) when given: no difference there, so no made-up defect."""
    panel_height, panel_width = panel.shape[:2]
    offset = np.round(local[:, 2])
    deviation = np.abs(local[:, :2] - np.eye(2)).sum(axis=1).max() * max(width, height)  # beyond the rounding
    x0, y0 = int(offset[0]), int(offset[1])
    if deviation <= _SNAP_PX and x0 >= 0 and y0 >= 0 and x0 + width <= panel_width and y0 + height <= panel_height:
        return panel[y0:y0 + height, x0:x0 + width], np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])
    warped = cv2.warpAffine(panel, local.astype(np.float32), (width, height),
                            flags=TILE_INTERPOLATION | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    if binarised:
        cv2.threshold(warped, 127, 255, cv2.THRESH_BINARY, dst=warped)
    if fill is not None:
        corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]],
                           np.float64) @ local[:, :2].T + local[:, 2]
        if corners.min() < 0 or np.any(corners.max(axis=0) > [panel_width - 1, panel_height - 1]):
            columns, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
            px = local[0, 0] * columns + local[0, 1] * rows + local[0, 2]
            py = local[1, 0] * columns + local[1, 1] * rows + local[1, 2]
            outside = (px < 0) | (py < 0) | (px > panel_width - 1) | (py > panel_height - 1)
            source = fill if fill.ndim == warped.ndim else (cv2.cvtColor(fill, cv2.COLOR_GRAY2BGR)
                                                            if warped.ndim == 3 else _gray(fill))
            warped[outside] = source[outside]
    return warped, local


# ------------------------------------------------------------------------------------------ ignore regions


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


# ------------------------------------------------------------------------------------------ stitching


def merge_tile_detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, tile_ids: np.ndarray,
                          cut: np.ndarray, nms_threshold: float) -> tuple[list[list[int]], int]:
    """Seam-aware suppression of tile detections already in panel coordinates.

    ``cut[i]``: detection i touches an inner border of its tile, so that border may have cut its defect.

    - A cut detection lying mostly (``MERGE_CONTAINMENT`` of its area) inside a larger uncut detection
      of the same class from another tile is a fragment of a defect that tile saw whole: it is dropped
      and the whole box stands.
    - Two cut detections of the same class from different tiles that share ``FRAGMENT_OVERLAP`` of the
      smaller one are the two parts of a defect larger than the tiles' overlap: they are merged into the
      box covering both (merges chain), with the better score.
    - Then per-class NMS at ``nms_threshold``: a defect seen whole by two tiles is reported once.

    Uncut detections are never merged with each other (two real defects side by side stay two).
    Returns ``(groups, merges)``: per kept detection, best first, the indices of the detections it
    stands for (its own first; a group of several is a merged defect), and how many fragments were
    dropped or merged into another detection.
    """
    count = len(boxes)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
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


# ------------------------------------------------------------------------------------------ the inspector


class PanelInspector:
    """Inspect frames of any size with one ``Detector``: tiles for a panel, the ordinary path for a tile-sized frame.

    ``tile_size``: the model's native tile (what one ``detect`` call sees best; 640 for DeepPCB packages).
    ``overlap``: pixels shared by neighbouring tiles; a defect smaller than it is seen whole in some tile.
    ``register``: estimate the panel's misregistration against the template (False: it is fixtured, pixel
    for pixel; nothing is resampled). ``refine_tiles``: with ``register``, correct each tile's local shift
    too where the panel is not rigid (the global fit left more than ``_RIGID_RMS_PX`` RMS on the samples).
    ``workers``: tiles inspected at once, each worker thread with its own engine (engines are not
    thread-safe): the first is ``detector``, the others are loaded from its package with its backend and
    thread count. A Python thread beside a running Lite engine keeps running (the engine lets go of the
    interpreter), and on the 2-core machine, busy with other jobs, two one-thread workers beat one two-thread
    engine in each of three runs (23.5 vs 55.6, 37.0 vs 79.1, 47.0 vs 94.3 ms a tile).
    """

    def __init__(self, detector: Detector, tile_size: int = DEFAULT_TILE_SIZE, overlap: int = DEFAULT_OVERLAP,
                 register: bool = True, refine_tiles: bool = True, motion: str = "similarity",
                 workers: int = 1) -> None:
        tile_grid(tile_size, tile_size, tile_size, overlap)  # validates tile_size and overlap
        if motion not in MOTIONS:
            raise ValueError(f"motion: expected one of {MOTIONS}, got {motion!r}")
        if workers < 1:
            raise ValueError(f"workers: expected at least 1, got {workers}")
        self.detector = detector
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.register = register
        self.refine_tiles = refine_tiles
        self.motion = motion
        self.workers = int(workers)
        self._engines: queue.SimpleQueue[Detector] = queue.SimpleQueue()
        self._engines.put(detector)
        for _ in range(self.workers - 1):
            self._engines.put(Detector.load(detector.info.package, backend=detector.info.backend,
                                            threads=detector.info.threads))

    def is_panel(self, image: np.ndarray) -> bool:
        """True when ``image`` is larger than a tile (with ``SMALL_FRAME_SLACK``): it is inspected in tiles."""
        return max(image.shape[:2]) > self.tile_size * SMALL_FRAME_SLACK

    def inspect(self, image: np.ndarray, template: np.ndarray | None = None, *, align: bool = False,
                ignore: IgnoreRegions | None = None, score_threshold: float | None = None,
                nms_threshold: float | None = None, max_detections: int | None = None) -> PanelDetections:
        """Defects of ``image`` (BGR or grey uint8) against ``template`` (the golden panel, for image+template models).

        A tile-sized frame goes through ``Detector.detect`` exactly as before (``align`` applies to it).
        A panel is registered (when ``register``), tiled, inspected and stitched; ``max_detections``
        applies per tile. ``ignore``: regions in template pixels (panel pixels for a model without template).
        Not re-entrant: one panel at a time per inspector.
        """
        if not self.is_panel(image):
            return self._frame(image, template, align, ignore, score_threshold, nms_threshold, max_detections)
        return self._panel(image, template, ignore, score_threshold, nms_threshold, max_detections)

    # ---------------------------------------------------------------- small frames: today's path

    def _frame(self, image, template, align, ignore, score_threshold, nms_threshold, max_detections) -> PanelDetections:
        if image.ndim == 2 and (template is None or template.ndim == 2):  # a panel reader's grey frame
            colour = getattr(getattr(self.detector, "layout", None), "color", "RGB") != "GRAY"
            image, template = _as_model_frame(image, colour), None if template is None else _as_model_frame(template,
                                                                                                              colour)
        found = self.detector.detect(image, template, align=align, score_threshold=score_threshold,
                                     nms_threshold=nms_threshold, max_detections=max_detections)
        template_boxes = found.boxes
        if found.alignment is not None:
            template_boxes = _map_boxes(_invert(found.alignment.template_to_frame), found.boxes)
        keep = np.ones(len(found), bool) if not ignore else ~ignore.covers(template_boxes)
        timing = {"total": found.timing.total_ms, "infer": found.timing.infer_ms}
        return PanelDetections(found.boxes[keep], template_boxes[keep], found.scores[keep], found.class_ids[keep],
                               [n for n, k in zip(found.class_names, keep) if k], found.image_size, 1, None, timing,
                               ignored=int((~keep).sum()), tile_size=self.tile_size, frame=found)

    # ---------------------------------------------------------------- panels

    def _panel(self, panel, template, ignore, score_threshold, nms_threshold, max_detections) -> PanelDetections:
        start = time.perf_counter()
        detector = self.detector
        if detector.needs_template and template is None:
            raise ValueError("this model compares each tile with its golden template (input mode 'image+template'): "
                             "pass the golden panel")
        if not detector.needs_template and template is not None:
            raise ValueError("this model looks at the panel alone (input mode 'image'): it takes no template")
        registration = None
        if template is not None:
            if self.register:
                registration = register_panel(panel, template, motion=self.motion, tile_size=self.tile_size)
            elif template.shape[:2] != panel.shape[:2]:
                raise ValueError(f"the golden panel is {template.shape[1]}x{template.shape[0]} but the panel is "
                                 f"{panel.shape[1]}x{panel.shape[0]}: register it (register=True)")
            else:
                registration = IDENTITY_REGISTRATION
        matrix = registration.template_to_panel if registration is not None else np.eye(2, 3)
        refine = (self.refine_tiles and self.register and registration is not None
                  and registration.fit_rms_px > _RIGID_RMS_PX)
        grid_height, grid_width = (template if template is not None else panel).shape[:2]
        tiles = tile_grid(grid_width, grid_height, self.tile_size, self.overlap)
        registered = time.perf_counter()

        thresholds = dict(score_threshold=score_threshold, nms_threshold=nms_threshold, max_detections=max_detections)
        results: list[_TileResult] = []
        if self.workers == 1:
            results = [self._inspect_tile(tile, panel, template, matrix, refine, thresholds) for tile in tiles]
        else:
            # Streamed: at most two tiles per worker in flight, so memory stays that of a few tile pairs.
            with ThreadPoolExecutor(self.workers, thread_name_prefix="panel-tile") as pool:
                pending: deque[Future] = deque()
                for tile in tiles:
                    if len(pending) >= 2 * self.workers:
                        results.append(pending.popleft().result())
                    pending.append(pool.submit(self._inspect_tile, tile, panel, template, matrix, refine, thresholds))
                results += [future.result() for future in pending]
        inferred = time.perf_counter()

        nms = detector.manifest.postprocess.nms_threshold if nms_threshold is None else nms_threshold
        boxes = np.concatenate([r.boxes + [r.tile.x, r.tile.y, r.tile.x, r.tile.y] for r in results]
                               ).reshape(-1, 4).astype(np.float32)
        scores = np.concatenate([r.scores for r in results]).astype(np.float32)
        classes = np.concatenate([r.class_ids for r in results]).astype(np.int64)
        cut = np.concatenate([_cut_by_seam(r.boxes, r.tile) for r in results]).astype(bool)
        tile_ids = np.concatenate([np.full(len(r.boxes), i, np.int64) for i, r in enumerate(results)])
        groups, merges = merge_tile_detections(boxes, scores, classes, tile_ids, cut, nms)
        template_boxes = np.array([[boxes[g, 0].min(), boxes[g, 1].min(), boxes[g, 2].max(), boxes[g, 3].max()]
                                   for g in groups], np.float32).reshape(-1, 4)
        best = np.array([g[0] for g in groups], np.int64)
        kept_scores, kept_classes = scores[best], classes[best]
        ignored = 0
        if ignore and len(template_boxes):
            keep = ~ignore.covers(template_boxes)
            ignored = int((~keep).sum())
            template_boxes, best, kept_scores, kept_classes = (template_boxes[keep], best[keep], kept_scores[keep],
                                                               kept_classes[keep])
        # Tested-panel pixels through the map of the tile that saw each defect best (its local correction included).
        panel_boxes = []
        for b, box in zip(best, template_boxes):
            result = results[tile_ids[b]]
            panel_boxes.append(_map_boxes(result.used, box[None] - [result.tile.x, result.tile.y] * 2)[0])
        height, width = panel.shape[:2]
        panel_boxes = np.clip(np.array(panel_boxes, np.float32).reshape(-1, 4), 0, [width, height, width, height])
        done = time.perf_counter()
        timing = {"register": (registered - start) * 1e3, "tiles": sum(r.cut_ms for r in results),
                  "infer": sum(r.infer_ms for r in results), "stitch": (done - inferred) * 1e3,
                  "total": (done - start) * 1e3}
        names = detector.manifest.class_names
        return PanelDetections(panel_boxes.astype(np.float32), template_boxes, kept_scores, kept_classes,
                               [names[int(c)] for c in kept_classes], (int(width), int(height)), len(results),
                               registration, timing, seam_merges=merges, ignored=ignored,
                               refined_tiles=sum(r.refined for r in results), tile_size=self.tile_size)

    def _inspect_tile(self, tile: Tile, panel: np.ndarray, template: np.ndarray | None, matrix: np.ndarray,
                      refine: bool, thresholds: dict) -> "_TileResult":
        """Cut one tile pair (resampled through the map, locally refined if asked) and run a free engine on it."""
        begin = time.perf_counter()
        golden = None if template is None else template[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]
        refined = False
        if template is None:
            tested, used = panel[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width], _tile_map(np.eye(2, 3), tile)
        else:
            binarised = _is_binarised(golden)
            tested, used = _sample_tile(panel, _tile_map(matrix, tile), tile.width, tile.height, golden, binarised)
            if refine:
                measured = _residual_shift(_gray(golden), _gray(tested), max_shift=_MAX_LOCAL_SHIFT)
                if measured is not None and np.abs(measured).max() >= _MIN_LOCAL_SHIFT:
                    tested, used = _sample_tile(panel, _shifted(used, measured), tile.width, tile.height, golden,
                                                binarised)
                    refined = True
        engine = self._engines.get()
        try:
            # A panel may be held grey (a third of the memory); each tile goes in the colour format the model takes.
            colour = getattr(getattr(engine, "layout", None), "color", "RGB") != "GRAY"
            cut_ms = (time.perf_counter() - begin) * 1e3
            found = engine.detect(_as_model_frame(np.ascontiguousarray(tested), colour),
                                  None if golden is None else _as_model_frame(golden, colour), **thresholds)
        finally:
            self._engines.put(engine)
        return _TileResult(tile, used, refined, found.boxes, found.scores, found.class_ids, cut_ms,
                           found.timing.total_ms)


@dataclass
class _TileResult:
    tile: Tile
    used: np.ndarray  # tile pixel -> panel pixel, as the tile was sampled
    refined: bool  # got its own local correction
    boxes: np.ndarray  # tile pixels
    scores: np.ndarray
    class_ids: np.ndarray
    cut_ms: float
    infer_ms: float


def _is_binarised(image: np.ndarray) -> bool:
    """True for a black-and-white scan like DeepPCB's: under ``_GREY_SHARE`` of the pixels (of one plane)
    lie between the two (JPEG ringing stays near the ends)."""
    plane = image if image.ndim == 2 else image[..., 0]
    grey = cv2.inRange(plane, 33, 222)
    return cv2.countNonZero(grey) < _GREY_SHARE * plane.size


def _as_model_frame(image: np.ndarray, colour: bool) -> np.ndarray:
    """A tile as BGR for a colour model, grey for a grey one."""
    if colour and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if not colour and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def _cut_by_seam(boxes: np.ndarray, tile: Tile) -> np.ndarray:
    """(N,) bool: boxes (tile pixels) touching one of the tile's inner borders, so possibly cut by it."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    left, top, right, bottom = tile.inner_edges
    return ((left & (boxes[:, 0] <= SEAM_MARGIN)) | (top & (boxes[:, 1] <= SEAM_MARGIN))
            | (right & (boxes[:, 2] >= tile.width - SEAM_MARGIN)) | (bottom & (boxes[:, 3] >= tile.height - SEAM_MARGIN)))


def _map_boxes(matrix: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """xyxy boxes through an affine map: the box around the four moved corners."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1)
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1).astype(np.float32)


def _invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE_SIZE", "AlignmentError", "IgnoreRegions", "PanelDetections",
           "PanelInspector", "PanelRegistration", "Tile", "merge_tile_detections", "register_panel", "tile_grid"]


_PALETTE = [(0, 0, 230), (0, 160, 0), (230, 80, 0), (0, 140, 255), (200, 0, 200), (160, 160, 0), (90, 40, 160)]


def draw_overview(panel: np.ndarray, detections: PanelDetections, max_side: int = 2000) -> tuple[np.ndarray, float]:
    """A BGR overview of ``panel`` shrunk to at most ``max_side`` pixels a side, each defect boxed in its class's
    colour (boxes at least a few pixels wide, so a 30 px defect on a 16k panel stays visible), numbered
    as in ``detections``. Returns the image and its scale (overview pixel = panel pixel * scale)."""
    scale = min(1.0, max_side / max(panel.shape[:2]))
    small = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else panel.copy()
    canvas = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR) if small.ndim == 2 else small
    for number, (box, class_id) in enumerate(zip(detections.boxes, detections.class_ids), start=1):
        colour = _PALETTE[int(class_id) % len(_PALETTE)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half_w, half_h = max((x2 - x1) / 2, 4), max((y2 - y1) / 2, 4)
        cv2.rectangle(canvas, (int(cx - half_w), int(cy - half_h)), (int(cx + half_w), int(cy + half_h)), colour, 2)
        cv2.putText(canvas, str(number), (int(cx + half_w + 2), int(cy - half_h)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    return canvas, scale
