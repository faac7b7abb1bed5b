"""Test panels: a grid of DeepPCB-style tiles assembled into one large scan, with panel-coordinate labels.

On a line the camera delivers the whole panel and the golden template is the whole panel too; these
panels let the tiled inspection (``inspector.runtime.panel``) be tested and measured against the
same tiles inspected one by one. A panel is built from tile pairs (real DeepPCB pairs from a folder,
or synthetic boards from ``synth.generate_pair``) laid out ``cols`` x ``rows`` with an optional
bare-board margin around them. The tested panel may then be misregistered by a known global map
(shift, rotation about the panel centre, scale), as a panel lying a little off in the scanner would be;
its labels are moved with it (the box around each moved box), so they stay in the tested panel's pixels.

``write_panel_dataset`` writes panels in DeepPCB's layout (so ``load_dataset``/``inspector eval`` read
them: ``<stem>_test.jpg``, ``<stem>_temp.jpg``, ``<id>_not/<stem>.txt`` with ``x1 y1 x2 y2 type`` in panel
pixels, ``trainval.txt``) plus ``panels.json``: per panel, the source tile of every grid cell and the
template->panel map that was applied.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.data.structures import Sample

BOARD_VALUE = 255  # bare board in a DeepPCB scan: white
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class Misregistration:
    """A global template->panel map: rotation (degrees, counter-clockwise on screen) and scale about the
    panel centre, then a shift in pixels."""

    shift_x: float = 0.0
    shift_y: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0

    def matrix(self, width: int, height: int) -> np.ndarray:
        """(2, 3) float64: template pixel (x, y) lands at panel pixel M @ (x, y, 1)."""
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), self.rotation_deg, self.scale).astype(np.float64)
        matrix[:, 2] += (self.shift_x, self.shift_y)
        return matrix

    @property
    def is_identity(self) -> bool:
        return self.shift_x == 0 and self.shift_y == 0 and self.rotation_deg == 0 and self.scale == 1


@dataclass
class PanelPair:
    """A golden panel, the tested panel, and the tested panel's labels."""

    template: np.ndarray  # (H, W) uint8 grey
    tested: np.ndarray  # (H', W') uint8 grey: the same size unless the panel was scaled
    boxes: np.ndarray  # (N, 4) float32 xyxy in tested-panel pixels
    classes: np.ndarray  # (N,) int64
    template_to_panel: np.ndarray  # (2, 3) the misregistration applied (identity if none)
    tile_origins: list[tuple[int, int]]  # (x, y) of each grid cell on the template, row by row


def assemble_panel(tiles: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], cols: int, rows: int,
                   margin: int = 0, misregistration: Misregistration | None = None) -> PanelPair:
    """Lay ``cols * rows`` tile pairs ``(template, tested, boxes, classes)`` out row by row, all of one size.

    ``margin``: bare board around the grid (a real panel's frame; it also keeps a rotated panel's
    content inside the image). ``misregistration``: applied to the tested panel and its labels.
    """
    if cols < 1 or rows < 1:
        raise ValueError(f"cols and rows: expected at least 1 each, got {cols} x {rows}")
    if len(tiles) != cols * rows:
        raise ValueError(f"a {cols} x {rows} panel needs {cols * rows} tile pairs, got {len(tiles)}")
    if margin < 0:
        raise ValueError(f"margin: expected >= 0 pixels, got {margin}")
    tile_h, tile_w = tiles[0][0].shape[:2]
    width, height = cols * tile_w + 2 * margin, rows * tile_h + 2 * margin
    template = np.full((height, width), BOARD_VALUE, np.uint8)
    tested = np.full((height, width), BOARD_VALUE, np.uint8)
    boxes, classes, origins = [], [], []
    for index, (tile_template, tile_tested, tile_boxes, tile_classes) in enumerate(tiles):
        for name, image in (("template", tile_template), ("tested", tile_tested)):
            if image.shape[:2] != (tile_h, tile_w):
                raise ValueError(f"tile {index} {name} is {image.shape[1]}x{image.shape[0]}, the first tile "
                                 f"{tile_w}x{tile_h}: panel tiles must all have one size")
        x, y = margin + (index % cols) * tile_w, margin + (index // cols) * tile_h
        template[y:y + tile_h, x:x + tile_w] = _grey(tile_template)
        tested[y:y + tile_h, x:x + tile_w] = _grey(tile_tested)
        boxes.append(np.asarray(tile_boxes, np.float32).reshape(-1, 4) + np.float32([x, y, x, y]))
        classes.append(np.asarray(tile_classes, np.int64).reshape(-1))
        origins.append((x, y))
    all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    all_classes = np.concatenate(classes) if classes else np.zeros(0, np.int64)
    matrix = np.eye(2, 3)
    if misregistration is not None and not misregistration.is_identity:
        matrix = misregistration.matrix(width, height)
        tested = cv2.warpAffine(tested, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=BOARD_VALUE)
        all_boxes = _move_boxes(all_boxes, matrix, width, height)
    return PanelPair(template, tested, all_boxes, all_classes, matrix, origins)


def pairs_from_samples(samples: Sequence[Sample]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Tile pairs from labeled samples with templates (e.g. DeepPCB pairs read by ``load_dataset``)."""
    pairs = []
    for sample in samples:
        template = sample.load_template()
        if template is None:
            raise ValueError(f"{sample.source or sample.image_path}: a panel tile needs its golden template")
        pairs.append((template, sample.load_image(), sample.boxes, sample.classes))
    return pairs


def synthetic_pairs(count: int, seed: int, size: int = 640) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` synthetic board pairs (``synth.generate_pair``), reproducible from ``seed``."""
    from inspector.data.synth import generate_pair

    rng = np.random.default_rng(seed)
    return [(p.template, p.tested, p.boxes, p.classes) for p in (generate_pair(rng, size) for _ in range(count))]


def write_panel_dataset(out_dir: Path | str, panels: Sequence[tuple[str, PanelPair, list[str]]]) -> Path:
    """Write ``(stem, panel, source tile names)`` panels in DeepPCB's layout under ``out_dir`` (see the module)."""
    out_dir = Path(out_dir)
    image_dir, label_dir = out_dir / "panels" / "panels", out_dir / "panels" / "panels_not"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
    lines, described = [], {}
    for stem, panel, sources in panels:
        cv2.imwrite(str(image_dir / f"{stem}_test.jpg"), panel.tested, jpeg)
        cv2.imwrite(str(image_dir / f"{stem}_temp.jpg"), panel.template, jpeg)
        (label_dir / f"{stem}.txt").write_text(
            "".join(f"{x1} {y1} {x2} {y2} {c + 1}\n" for (x1, y1, x2, y2), c in
                    zip(_whole_pixels(panel.boxes).tolist(), panel.classes.tolist())), encoding="utf-8")
        lines.append(f"panels/panels/{stem}.jpg panels/panels_not/{stem}.txt\n")
        described[stem] = {"size": [int(panel.tested.shape[1]), int(panel.tested.shape[0])],
                           "template_to_panel": [[float(v) for v in row] for row in panel.template_to_panel],
                           "tiles": [{"source": source, "origin": list(origin)}
                                     for source, origin in zip(sources, panel.tile_origins)]}
    (out_dir / "trainval.txt").write_text("".join(lines), encoding="utf-8")
    (out_dir / "panels.json").write_text(json.dumps(described, indent=2), encoding="utf-8")
    return out_dir


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def _move_boxes(boxes: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """The box around each box's four corners moved by ``matrix``, clipped to the panel."""
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1)
    moved = corners.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    out = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)
    return np.clip(out, 0, [width, height, width, height]).astype(np.float32)


def _whole_pixels(boxes: np.ndarray) -> np.ndarray:
    """Boxes rounded outwards to whole pixels (DeepPCB label files hold integers)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([np.floor(boxes[:, :2]), np.ceil(boxes[:, 2:])], axis=1).astype(int)


def rotation_of(matrix: np.ndarray) -> float:
    """Degrees, counter-clockwise on screen, of a (2, 3) map (the convention of ``Misregistration``)."""
    return math.degrees(math.atan2(-matrix[1, 0], matrix[0, 0]))


def build_panel_dataset(out_dir: Path | str, n_panels: int, cols: int, rows: int, seed: int = 0,
                        tiles_from: Path | str | None = None, split_file: Path | str | None = None,
                        split: str = "val", margin: int = 0,
                        misregistration: Misregistration | None = None) -> Path:
    """``n_panels`` panels of ``cols`` x ``rows`` tiles written by ``write_panel_dataset``.

    Tiles: labeled pairs from ``tiles_from`` (any format ``load_dataset`` reads, with templates), taken in
    sorted key order, ``cols * rows`` consecutive pairs per panel; with ``split_file`` (a run's or
    package's ``split.json``) only its ``split`` part ("val" or "train"). Without ``tiles_from``,
    synthetic boards drawn from ``seed``. Every panel gets the same ``misregistration``.
    """
    from inspector.data.readers import load_dataset
    from inspector.data.split import load_split, relative_key

    if n_panels < 1:
        raise ValueError(f"n_panels: expected at least 1, got {n_panels}")
    needed = n_panels * cols * rows
    if tiles_from is None:
        tiles = synthetic_pairs(needed, seed)
        names = [f"synthetic seed {seed} #{i}" for i in range(needed)]
    else:
        dataset = load_dataset(Path(tiles_from))
        if split_file is not None:
            if split not in ("train", "val"):
                raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
            train_set, val_set = load_split(dataset, split_file)
            dataset = val_set if split == "val" else train_set
        samples = sorted(dataset.samples, key=lambda sample: sample.key)
        if len(samples) < needed:
            raise ValueError(f"{tiles_from}: {n_panels} panels of {cols} x {rows} tiles need {needed} labeled pairs, "
                             f"found {len(samples)}" + (f" in its {split} split" if split_file is not None else ""))
        samples = samples[:needed]
        tiles = pairs_from_samples(samples)
        names = [relative_key(sample.key, dataset.root) for sample in samples]
    per_panel = cols * rows
    panels = []
    for index in range(n_panels):
        chunk = slice(index * per_panel, (index + 1) * per_panel)
        panel = assemble_panel(tiles[chunk], cols, rows, margin, misregistration)
        panels.append((f"panel{index:03d}", panel, names[chunk]))
    return write_panel_dataset(out_dir, panels)
