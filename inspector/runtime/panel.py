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
   (``panel_registration.py``)
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
   both tiles see fragments, which become one box covering both. Then the package's NMS (per class,
   or across classes for an "agnostic" package) removes the duplicates of defects seen whole by two
   tiles. Boxes are finally mapped to the tested panel's pixels through the map of the tile that saw
   each defect best, which is kept (``source_tiles``) so the verification queue can show a reviewer
   that tile. (``panel_tiles.py``)
4. **Ignore regions** (recipe masks: fiducials, labels, a board outline) are given in template
   coordinates, the golden panel's, which stay fixed from panel to panel; a detection whose centre
   lies in one is dropped (and counted).
5. **Unknown changes** (``unknown_changes=True``): each tile pair is also compared for differences no
   detection explains, and the flags are stitched like the defects, each with its tile (``panel_changes.py``).

Images no larger than a tile (``tile_size * SMALL_FRAME_SLACK`` per side) take the ordinary
``Detector.detect`` path unchanged. The runtime's rule holds: no training code is imported here.
"""
from __future__ import annotations

import queue
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from inspector.data.transforms import gray_plane
from inspector.runtime.alignment import AlignmentError
from inspector.runtime.changes import ChangeSettings, UnknownChange
from inspector.runtime.detector import Detections, Detector, Timing
from inspector.runtime.panel_changes import PanelChange, stitch_changes, tile_of
from inspector.runtime.panel_registration import (IDENTITY_REGISTRATION, MOTIONS, PanelRegistration,
                                                  is_binarised, register_panel, residual_shift, sample_tile,
                                                  shifted_map, tile_map)
from inspector.runtime.panel_tiles import (DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, IgnoreRegions, Tile, cut_by_seam,
                                           invert_map, map_boxes, merge_tile_detections, tile_grid)

# The names tests and tools import from here since before the split.
_is_binarised, _sample_tile, _tile_map = is_binarised, sample_tile, tile_map

SMALL_FRAME_SLACK = 1.25  # frames up to 25% larger than a tile are letterboxed whole, as before
_MAX_LOCAL_SHIFT = 12.0  # px: a tile's own correction beyond this is distrusted (the global map is kept)
_RIGID_RMS_PX = 0.3  # px: sample tiles fitting the global map this well mean a rigid panel (no per-tile refinement)
_MIN_LOCAL_SHIFT = 0.5  # px: residuals below this are measurement noise; the tile keeps the global map


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
    # (N, 4) int: the tile (x, y, width, height on the golden panel) that saw each defect best; the whole
    # frame for a small frame. A reviewer opens that tile to see the defect as the model saw it.
    source_tiles: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64), repr=False)
    unknown_changes: list[UnknownChange] | None = None  # when asked for: PanelChange on a panel

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
        return TiledDetections(self.boxes, self.scores, self.class_ids, list(self.class_names), self.image_size,
                               timing, unknown_changes=self.unknown_changes, template_boxes=self.template_boxes,
                               source_tiles=self.source_tiles)

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
            "source_tiles": [[int(v) for v in tile] for tile in self.source_tiles],
            **({} if self.unknown_changes is None else
               {"unknown_changes": [change.to_dict() for change in self.unknown_changes]}),
        }


@dataclass
class TiledDetections(Detections):
    """A panel's result as ``Detections`` (``PanelDetections.as_detections``), keeping where each defect is
    on the golden panel and which tile saw it, for the verification queue (``review_queue.review_entries``)."""

    template_boxes: np.ndarray | None = None  # (N, 4) golden-panel pixels
    source_tiles: np.ndarray | None = None  # (N, 4) x, y, width, height of the tile on the golden panel


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
                nms_threshold: float | None = None, max_detections: int | None = None,
                unknown_changes: bool | ChangeSettings = False) -> PanelDetections:
        """Defects of ``image`` (BGR or grey uint8) against ``template`` (the golden panel, for image+template models).

        A tile-sized frame goes through ``Detector.detect`` exactly as before (``align`` applies to it).
        A panel is registered (when ``register``), tiled, inspected and stitched; ``max_detections``
        applies per tile. ``ignore``: regions in template pixels (panel pixels for a model without template).
        ``unknown_changes``: also flag template differences no detection explains (``Detector.detect``'s), tile
        by tile on a panel, stitched in panel pixels with the tile each came from (``panel_changes``); needs
        the template, which a model of input mode 'image' then uses for the flags only.
        Not re-entrant: one panel at a time per inspector.
        """
        if unknown_changes is not False and template is None:
            raise ValueError("unknown_changes needs the golden panel to compare the panel with")
        if not self.is_panel(image):
            return self._frame(image, template, align, ignore, score_threshold, nms_threshold, max_detections,
                               unknown_changes)
        return self._panel(image, template, ignore, score_threshold, nms_threshold, max_detections, unknown_changes)

    # ---------------------------------------------------------------- small frames: today's path

    def _frame(self, image, template, align, ignore, score_threshold, nms_threshold, max_detections,
               unknown_changes=False) -> PanelDetections:
        if image.ndim == 2 and (template is None or template.ndim == 2):  # a panel reader's grey frame
            colour = getattr(getattr(self.detector, "layout", None), "color", "RGB") != "GRAY"
            image, template = _as_model_frame(image, colour), None if template is None else _as_model_frame(template,
                                                                                                              colour)
        found = self.detector.detect(image, template, align=align, score_threshold=score_threshold,
                                     nms_threshold=nms_threshold, max_detections=max_detections,
                                     **({"unknown_changes": unknown_changes} if unknown_changes is not False else {}))
        template_boxes = found.boxes
        if found.alignment is not None:
            template_boxes = map_boxes(invert_map(found.alignment.template_to_frame), found.boxes)
        keep = np.ones(len(found), bool) if not ignore else ~ignore.covers(template_boxes)
        timing = {"total": found.timing.total_ms, "infer": found.timing.infer_ms}
        return PanelDetections(found.boxes[keep], template_boxes[keep], found.scores[keep], found.class_ids[keep],
                               [n for n, k in zip(found.class_names, keep) if k], found.image_size, 1, None, timing,
                               ignored=int((~keep).sum()), tile_size=self.tile_size, frame=found,
                               source_tiles=np.tile(np.int64([0, 0, *found.image_size]), (int(keep.sum()), 1)),
                               unknown_changes=found.unknown_changes)

    # ---------------------------------------------------------------- panels

    def _panel(self, panel, template, ignore, score_threshold, nms_threshold, max_detections,
               unknown_changes=False) -> PanelDetections:
        start = time.perf_counter()
        detector = self.detector
        if detector.needs_template and template is None:
            raise ValueError("this model compares each tile with its golden template (input mode 'image+template'): "
                             "pass the golden panel")
        if not detector.needs_template and template is not None and unknown_changes is False:
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
        if unknown_changes is not False:
            thresholds["unknown_changes"] = unknown_changes
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
        cut = np.concatenate([cut_by_seam(r.boxes, r.tile) for r in results]).astype(bool)
        tile_ids = np.concatenate([np.full(len(r.boxes), i, np.int64) for i, r in enumerate(results)])
        groups, merges = merge_tile_detections(boxes, scores, classes, tile_ids, cut, nms,
                                               class_agnostic=detector.manifest.postprocess.nms == "agnostic")
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
            panel_boxes.append(map_boxes(result.used, box[None] - [result.tile.x, result.tile.y] * 2)[0])
        height, width = panel.shape[:2]
        panel_boxes = np.clip(np.array(panel_boxes, np.float32).reshape(-1, 4), 0, [width, height, width, height])
        source_tiles = np.int64([tile_of(results[tile_ids[b]].tile) for b in best]).reshape(-1, 4)
        changes = None
        if unknown_changes is not False:
            changes, ignored_changes = stitch_changes([(r.tile, r.used, r.changes or []) for r in results], ignore,
                                                      (int(width), int(height)))
            ignored += ignored_changes
        done = time.perf_counter()
        timing = {"register": (registered - start) * 1e3, "tiles": sum(r.cut_ms for r in results),
                  "infer": sum(r.infer_ms for r in results), "stitch": (done - inferred) * 1e3,
                  "total": (done - start) * 1e3}
        names = detector.manifest.class_names
        return PanelDetections(panel_boxes.astype(np.float32), template_boxes, kept_scores, kept_classes,
                               [names[int(c)] for c in kept_classes], (int(width), int(height)), len(results),
                               registration, timing, seam_merges=merges, ignored=ignored,
                               refined_tiles=sum(r.refined for r in results), tile_size=self.tile_size,
                               source_tiles=source_tiles, unknown_changes=changes)

    def _inspect_tile(self, tile: Tile, panel: np.ndarray, template: np.ndarray | None, matrix: np.ndarray,
                      refine: bool, thresholds: dict) -> "_TileResult":
        """Cut one tile pair (resampled through the map, locally refined if asked) and run a free engine on it."""
        begin = time.perf_counter()
        golden = None if template is None else template[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]
        refined = False
        if template is None:
            tested, used = panel[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width], tile_map(np.eye(2, 3), tile)
        else:
            binarised = is_binarised(golden)
            tested, used = sample_tile(panel, tile_map(matrix, tile), tile.width, tile.height, golden, binarised)
            if refine:
                measured = residual_shift(gray_plane(golden), gray_plane(tested), max_shift=_MAX_LOCAL_SHIFT)
                if measured is not None and np.abs(measured).max() >= _MIN_LOCAL_SHIFT:
                    tested, used = sample_tile(panel, shifted_map(used, measured), tile.width, tile.height, golden,
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
                           found.timing.total_ms, found.unknown_changes)


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
    changes: list[UnknownChange] | None = None  # tile pixels, when asked for


def _as_model_frame(image: np.ndarray, colour: bool) -> np.ndarray:
    """A tile as BGR for a colour model, grey for a grey one."""
    if colour and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if not colour and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image



__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE_SIZE", "AlignmentError", "IgnoreRegions", "PanelChange", "PanelDetections",
           "PanelInspector", "PanelRegistration", "Tile", "TiledDetections", "merge_tile_detections", "register_panel",
           "tile_grid"]


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
