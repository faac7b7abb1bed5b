"""Synthetic DeepPCB-style boards: a defect-free template, a tested image, and its labelled defects.

They let the tests and the demo run with no outside data. A board looks like a binarised DeepPCB
scan: black copper on a white board, with straight and 45-degree traces of a few widths, parallel
buses, round and square pads, drilled holes, and copper pours with a clearance gap cut around the
traces and pads that cross them. The tested image is the template plus defects of the six DeepPCB
types, each drawn where it makes sense:

    open       a gap cut across a trace            short    copper bridging a gap between two features
    mousebite  bites taken out of a copper edge    spur     a thin protrusion from a copper edge
    copper     a spurious blob on the bare board   pin-hole a small hole inside copper

A box is the bounding box of the pixels its defect changed, plus a margin, widened to a minimum
side like DeepPCB's own boxes; boxes are kept apart. So every label sits on a real change and no
change lies outside the labels. Everything is drawn from the given ``numpy`` generator, so a seed
fixes the pixels and the labels.

Lengths in this module are pixels at DeepPCB's 640 x 640 and scale with the requested size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from inspector.data.structures import DEEPPCB_CLASSES

REFERENCE_SIZE = 640  # DeepPCB's image size; the lengths below are pixels at this size
OPEN, SHORT, MOUSEBITE, SPUR, COPPER, PIN_HOLE = range(len(DEEPPCB_CLASSES))

# Unit steps in the eight directions a PCB router uses (0, 45, 90, ... degrees).
_DIRECTIONS = np.array([(math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)) for k in range(8)])
_JPEG_QUALITY = 95  # high enough that the binarised edges stay crisp (ringing of a few grey levels)
_PAIRS_PER_GROUP = 100  # DeepPCB's folders hold up to a few hundred pairs; the stem's last 3 digits index them


@dataclass
class SynthPair:
    """A defect-free template, the same board with defects, and the defects' labels."""

    template: np.ndarray  # (H, W, 3) uint8 BGR
    tested: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray  # (N, 4) float32 pixel xyxy (whole numbers, so they survive a DeepPCB text file)
    classes: np.ndarray  # (N,) int64, index into DEEPPCB_CLASSES


def generate_pair(rng: np.random.Generator, size: int = 640, n_defects: tuple[int, int] = (2, 8)) -> SynthPair:
    """Draw one board and a copy of it with between ``n_defects[0]`` and ``n_defects[1]`` defects.

    (Fewer only if a board has no room left for another well-separated defect.)
    """
    if size < 160:
        raise ValueError(f"size must be at least 160 pixels for defects to fit, got {size}")
    low, high = n_defects
    if not 0 <= low <= high:
        raise ValueError(f"n_defects must be (low, high) with 0 <= low <= high, got {n_defects}")
    template_copper, holes, traces = _draw_board(rng, size)
    tested_copper, boxes, classes = _add_defects(rng, template_copper, holes, traces,
                                                 int(rng.integers(low, high + 1)))
    return SynthPair(_to_bgr(template_copper), _to_bgr(tested_copper),
                     np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64))


def write_deeppcb(out_dir: Path | str, n: int, seed: int, size: int = 640, test_fraction: float = 0.2) -> Path:
    """Write ``n`` synthetic pairs in DeepPCB's layout under ``out_dir`` and return it.

    ``groupGGGGG/GGGGG/<stem>_test.jpg`` and ``_temp.jpg``, ``groupGGGGG/GGGGG_not/<stem>.txt``
    (``x1 y1 x2 y2 type`` lines, type 1..6), and the lists ``trainval.txt`` and ``test.txt``
    (a seeded ``test_fraction`` of the pairs).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    list_lines = []
    for index in tqdm(range(n), desc="synthetic boards", unit="pair", disable=n <= 50):
        group = f"{index // _PAIRS_PER_GROUP:05d}"
        stem = f"{group}{index % _PAIRS_PER_GROUP:03d}"
        image_dir = out_dir / f"group{group}" / group
        label_dir = out_dir / f"group{group}" / f"{group}_not"
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)

        pair = generate_pair(rng, size)
        jpeg = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
        cv2.imwrite(str(image_dir / f"{stem}_test.jpg"), pair.tested, jpeg)
        cv2.imwrite(str(image_dir / f"{stem}_temp.jpg"), pair.template, jpeg)
        labels = "".join(f"{x1} {y1} {x2} {y2} {c + 1}\n"
                         for (x1, y1, x2, y2), c in zip(pair.boxes.astype(int).tolist(), pair.classes.tolist()))
        (label_dir / f"{stem}.txt").write_text(labels, encoding="utf-8")
        list_lines.append(f"group{group}/{group}/{stem}.jpg group{group}/{group}_not/{stem}.txt\n")

    n_test = int(round(n * test_fraction))
    is_test = np.zeros(n, bool)
    is_test[rng.permutation(n)[:n_test]] = True
    (out_dir / "trainval.txt").write_text("".join(l for l, t in zip(list_lines, is_test) if not t), encoding="utf-8")
    (out_dir / "test.txt").write_text("".join(l for l, t in zip(list_lines, is_test) if t), encoding="utf-8")
    return out_dir


def _to_bgr(copper: np.ndarray) -> np.ndarray:
    """Copper mask (1 = copper) -> DeepPCB look: black copper on a white board, 3-channel."""
    _, gray = cv2.threshold(copper, 0, 255, cv2.THRESH_BINARY_INV)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


# ---------------------------------------------------------------------------------------------
# The board: shapes, how they are drawn, and a layout that keeps separate features apart.


@dataclass
class _Trace:
    points: np.ndarray  # (K, 2) float polyline, may run off the image
    width: float


@dataclass
class _Disc:
    center: np.ndarray
    radius: float


@dataclass
class _RoundRect:
    center: np.ndarray
    half_size: tuple[float, float]
    corner: float  # 0 for a square-cornered pad


@dataclass
class _Hole:  # a drilled hole: bare board inside a pad
    center: np.ndarray
    radius: float


_Shape = _Trace | _Disc | _RoundRect | _Hole


def _ints(points: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) - offset).astype(np.int32)


def _draw_shape(canvas: np.ndarray, shape: _Shape, grow: float, offset: np.ndarray, value: int) -> None:
    """Draw ``shape`` grown by ``grow`` pixels on every side; ``offset`` is the canvas's top-left."""
    if isinstance(shape, _Trace):
        thickness = max(1, int(round(shape.width + 2 * grow)))
        cv2.polylines(canvas, [_ints(shape.points, offset)], False, value, thickness)  # round caps and joints
    elif isinstance(shape, (_Disc, _Hole)):
        cx, cy = _ints(shape.center, offset)
        cv2.circle(canvas, (int(cx), int(cy)), max(1, int(round(shape.radius + grow))), value, -1)
    else:
        corner = shape.corner + grow
        inner = np.array(shape.half_size) + grow - corner  # rectangle whose thick outline rounds the corners
        x0, y0 = _ints(shape.center - inner, offset)
        x1, y1 = _ints(shape.center + inner, offset)
        cv2.rectangle(canvas, (int(x0), int(y0)), (int(x1), int(y1)), value, -1)
        if corner >= 0.5:
            cv2.rectangle(canvas, (int(x0), int(y0)), (int(x1), int(y1)), value, int(round(2 * corner)))


def _extent(shape: _Shape, grow: float) -> tuple[float, float, float, float]:
    if isinstance(shape, _Trace):
        reach = shape.width / 2 + grow + 1
        (x0, y0), (x1, y1) = shape.points.min(0), shape.points.max(0)
    elif isinstance(shape, (_Disc, _Hole)):
        reach = shape.radius + grow + 1
        (x0, y0), (x1, y1) = shape.center, shape.center
    else:
        reach = grow + 1
        (x0, y0), (x1, y1) = shape.center - shape.half_size, shape.center + shape.half_size
    return x0 - reach, y0 - reach, x1 + reach, y1 + reach


def _place(copper: np.ndarray, features: np.ndarray, holes: np.ndarray, unit: list[_Shape], clearance: int) -> bool:
    """Draw ``unit`` (a trace with its pads, say) unless it comes within ``clearance`` of earlier features.

    ``features`` holds the traces and pads drawn so far; a pour is not in it, since features may
    cross a pour: they get a clearance gap cut around them, as on real boards.
    """
    size = copper.shape[0]
    boxes = np.array([_extent(shape, clearance) for shape in unit])
    x0, y0 = np.clip(np.floor(boxes[:, :2].min(0)), 0, size).astype(int)
    x1, y1 = np.clip(np.ceil(boxes[:, 2:].max(0)), 0, size).astype(int)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return False  # (almost) entirely off the image
    offset = np.array([x0, y0], float)
    keep_out = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for shape in unit:
        if not isinstance(shape, _Hole):
            _draw_shape(keep_out, shape, clearance, offset, 1)
    if np.any(keep_out & features[y0:y1, x0:x1]):
        return False
    copper_view, features_view = copper[y0:y1, x0:x1], features[y0:y1, x0:x1]
    copper_view[keep_out > 0] = 0  # the clearance gap, visible where the unit crosses a pour
    for shape in unit:
        if not isinstance(shape, _Hole):
            _draw_shape(copper_view, shape, 0, offset, 1)
            _draw_shape(features_view, shape, 0, offset, 1)
    for shape in unit:
        if isinstance(shape, _Hole):
            _draw_shape(copper_view, shape, 0, offset, 0)
            _draw_shape(holes[y0:y1, x0:x1], shape, 0, offset, 1)
    return True


def _draw_board(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[_Trace]]:
    """A random board: its copper mask (uint8, 1 = copper), its drilled holes (1 = hole), its traces."""
    # DeepPCB crops come from boards at different magnifications: scale all features together.
    zoom = size / REFERENCE_SIZE * rng.uniform(0.7, 1.7)
    clearance = max(2, int(round(rng.uniform(4, 8) * zoom)))
    copper = np.zeros((size, size), np.uint8)
    features = np.zeros((size, size), np.uint8)
    holes = np.zeros((size, size), np.uint8)
    if rng.random() < 0.45:
        cv2.fillPoly(copper, [_random_pour(rng, size)], 1)

    traces: list[_Trace] = []
    target, placed = int(rng.integers(8, 24)), 0
    for _ in range(8 * target):
        if placed >= target:
            break
        kind = rng.random()
        if kind < 0.4:
            units = [_random_route(rng, size, zoom)]
        elif kind < 0.65:
            units = _random_bus(rng, size, zoom, clearance)
        elif kind < 0.85:
            units = _random_pad_row(rng, size, zoom)
        else:
            units = _random_big_pads(rng, size, zoom)
        for unit in units:
            if _place(copper, features, holes, unit, clearance):
                placed += 1
                traces.extend(shape for shape in unit if isinstance(shape, _Trace))
    return copper, holes, traces


def _random_pour(rng: np.random.Generator, size: int) -> np.ndarray:
    """A large copper area: a rectangle with 45-degree chamfers, or a big disc; may run off the image."""
    if rng.random() < 0.25:
        center = rng.uniform(-0.2, 1.2, 2) * size
        radius = rng.uniform(0.4, 0.9) * size
        return cv2.ellipse2Poly((int(center[0]), int(center[1])), (int(radius), int(radius)), 0, 0, 360, 4)
    x0, y0 = rng.uniform(-0.3, 0.5, 2) * size
    x1, y1 = x0 + rng.uniform(0.4, 1.0) * size, y0 + rng.uniform(0.4, 1.0) * size
    c = rng.uniform(0.0, 0.3) * min(x1 - x0, y1 - y0)
    return np.array([(x0 + c, y0), (x1 - c, y0), (x1, y0 + c), (x1, y1 - c), (x1 - c, y1), (x0 + c, y1),
                     (x0, y1 - c), (x0, y0 + c)], np.int32)


def _pick(rng: np.random.Generator, values: tuple[float, ...]) -> float:
    """One of ``values``, uniformly (Generator.choice is slow for the many small picks made here)."""
    return float(values[int(rng.integers(len(values)))])


def _random_path(rng: np.random.Generator, size: int, zoom: float, segments: int) -> np.ndarray:
    """A polyline of axis-aligned and diagonal segments, turning 45 (sometimes 90) degrees."""
    direction = 2 * int(rng.integers(4)) + (1 if rng.random() < 0.3 else 0)
    points = [rng.uniform(-0.1, 1.1, 2) * size]
    for _ in range(segments):
        points.append(points[-1] + _DIRECTIONS[direction] * rng.uniform(40, 280) * zoom)
        turn = 1 if rng.random() < 0.8 else 2
        direction = (direction + turn * (1 if rng.random() < 0.5 else -1)) % 8
    return np.array(points)


def _random_pad(rng: np.random.Generator, center: np.ndarray, radius: float, zoom: float) -> list[_Shape]:
    """A round or square pad, drilled (with a hole) about half the time."""
    if rng.random() < 0.6:
        pad: _Shape = _Disc(center, radius)
    else:
        pad = _RoundRect(center, (radius, radius), radius * _pick(rng, (0.0, 0.3)))
    if radius >= 8 * zoom and rng.random() < 0.5:
        return [pad, _Hole(center, radius * rng.uniform(0.35, 0.55))]
    return [pad]


def _random_route(rng: np.random.Generator, size: int, zoom: float) -> list[_Shape]:
    """A trace with a pad at each end that lies on the image."""
    width = _pick(rng, (5, 7, 9, 12, 16, 22)) * zoom
    path = _random_path(rng, size, zoom, int(rng.integers(1, 5)))
    unit: list[_Shape] = [_Trace(path, width)]
    for end in (path[0], path[-1]):
        if np.all((end > 0) & (end < size)) and rng.random() < 0.85:
            unit += _random_pad(rng, end, max(width * 0.9, rng.uniform(8, 22) * zoom), zoom)
    return unit


def _random_bus(rng: np.random.Generator, size: int, zoom: float, clearance: int) -> list[list[_Shape]]:
    """Two to six parallel traces following the same path."""
    width = _pick(rng, (5, 7, 9, 12, 16)) * zoom
    pitch = width + clearance + rng.uniform(2, 12) * zoom
    path = _random_path(rng, size, zoom, int(rng.integers(2, 5)))
    count = int(rng.integers(2, 7))
    return [[_Trace(_offset_path(path, (i - (count - 1) / 2) * pitch), width)] for i in range(count)]


def _offset_path(points: np.ndarray, offset: float) -> np.ndarray:
    """The polyline shifted sideways by ``offset``, with mitred corners (so a bus stays parallel)."""
    steps = np.diff(points, axis=0)
    steps /= np.linalg.norm(steps, axis=1, keepdims=True)
    normals = np.stack([-steps[:, 1], steps[:, 0]], axis=1)
    shifted = [points[0] + normals[0] * offset]
    for i in range(1, len(points) - 1):
        miter = (normals[i - 1] + normals[i]) / (1 + normals[i - 1] @ normals[i])
        shifted.append(points[i] + miter * offset)
    shifted.append(points[-1] + normals[-1] * offset)
    return np.array(shifted)


def _random_pad_row(rng: np.random.Generator, size: int, zoom: float) -> list[list[_Shape]]:
    """A component footprint: a row of pads, some with a short trace leaving them."""
    radius = rng.uniform(8, 24) * zoom
    count = int(rng.integers(2, 7))
    along = _DIRECTIONS[2 * int(rng.integers(2))]  # rows run along x or y
    pitch = 2 * radius + rng.uniform(10, 40) * zoom
    start = rng.uniform(0.05, 0.95, 2) * size
    units = []
    for i in range(count):
        center = start + along * pitch * i
        unit = _random_pad(rng, center, radius, zoom)
        if rng.random() < 0.5:
            out = _DIRECTIONS[(2 * int(rng.integers(4)) + int(rng.integers(2))) % 8]
            bend = center + out * rng.uniform(radius + 10 * zoom, 120 * zoom)
            turn = _DIRECTIONS[(int(np.argmax(_DIRECTIONS @ out)) + int(rng.integers(-1, 2))) % 8]
            path = np.array([center, bend, bend + turn * rng.uniform(20, 200) * zoom])
            unit.insert(0, _Trace(path, min(radius, _pick(rng, (5, 7, 9, 12)) * zoom)))
        units.append(unit)
    return units


def _random_big_pads(rng: np.random.Generator, size: int, zoom: float) -> list[list[_Shape]]:
    """Large features seen at high magnification: a big drilled land, or a row of edge fingers."""
    if rng.random() < 0.5:
        radius = rng.uniform(40, 130) * zoom
        center = rng.uniform(0.0, 1.0, 2) * size
        unit: list[_Shape] = [_Disc(center, radius)]
        if rng.random() < 0.6:
            unit.append(_Hole(center, radius * rng.uniform(0.3, 0.6)))
        return [unit]
    half = (rng.uniform(18, 40) * zoom, rng.uniform(60, 200) * zoom)
    corner = min(half) * rng.uniform(0.2, 0.6)
    pitch = 2 * half[0] + rng.uniform(15, 60) * zoom
    start = rng.uniform(0.0, 1.0, 2) * size
    return [[_RoundRect(start + np.array([pitch * i, 0.0]), half, corner)] for i in range(int(rng.integers(1, 5)))]


# ---------------------------------------------------------------------------------------------
# Defects. Each maker proposes a shape to add (copper) or remove (board) near a suitable spot, or
# None when the spot it drew doesn't suit; _add_defects keeps the proposals that change enough
# pixels and whose box stays clear of the other boxes.


@dataclass
class _Scene:
    """What the defect makers look at. Distances come from the template; ``copper`` changes as
    defects are drawn, but boxes are kept apart, so what one defect changed never matters to another."""

    copper: np.ndarray  # uint8, 1 = copper, the tested board so far
    inside: np.ndarray  # float32: distance from a copper pixel to the nearest board pixel (0 on the board)
    outside: np.ndarray  # float32: distance from a board pixel to the nearest copper pixel (0 on copper)
    holes: np.ndarray  # uint8, 1 inside a drilled hole: defects there would make no sense
    edge_pixels: np.ndarray  # flat indices of copper pixels that touch the board, away from the image border
    traces: list[_Trace]
    scale: float  # size / 640
    border: float  # defect spots stay this far from the image border, so their boxes fit


@dataclass
class _Proposal:
    origin: np.ndarray  # (x, y) of the mask's top-left pixel in the image
    mask: np.ndarray  # uint8, 1 where the shape is
    add_copper: bool


def _add_defects(rng: np.random.Generator, template: np.ndarray, holes: np.ndarray, traces: list[_Trace],
                 count: int) -> tuple[np.ndarray, list[list[float]], list[int]]:
    size = template.shape[0]
    scale = size / REFERENCE_SIZE
    inside = cv2.distanceTransform(template, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - template, cv2.DIST_L2, 5)
    border = 36 * scale
    lo, hi = int(math.ceil(border)), int(size - border)
    edge_mask = np.zeros_like(template)
    edge_mask[lo:hi, lo:hi] = (inside[lo:hi, lo:hi] > 0) & (inside[lo:hi, lo:hi] < 1.5)
    scene = _Scene(template.copy(), inside, outside, holes, np.flatnonzero(edge_mask), traces, scale, border)

    # Classes in shuffled rounds of all six, so each pair and the set as a whole stay balanced.
    wanted = np.concatenate([rng.permutation(len(DEEPPCB_CLASSES)) for _ in range(count // 6 + 1)])[:count]
    boxes: list[list[float]] = []
    classes: list[int] = []
    for class_id in wanted:
        # A board may have no spot for the wanted type (no trace to open, say): fall back to others.
        for candidate in [int(class_id)] + [int(c) for c in rng.permutation(len(DEEPPCB_CLASSES))]:
            box = _try_defect(rng, scene, candidate, boxes)
            if box is not None:
                boxes.append(box)
                classes.append(candidate)
                break
    return scene.copper, boxes, classes


def _try_defect(rng: np.random.Generator, scene: _Scene, class_id: int, boxes: list[list[float]],
                attempts: int = 25) -> list[float] | None:
    """Draw one defect of ``class_id`` onto ``scene.copper`` and return its box, or None if none fits."""
    size = scene.copper.shape[0]
    min_changed = max(4, int(round(10 * scene.scale ** 2)))
    gap = 6 * scene.scale  # between boxes
    for _ in range(attempts):
        proposal = _MAKERS[class_id](rng, scene)
        if proposal is None:
            continue
        (x0, y0), (h, w) = proposal.origin, proposal.mask.shape
        x0, y0 = int(x0), int(y0)
        # Clip the proposal to the image.
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        shape = proposal.mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] > 0
        board = scene.copper[cy0:cy1, cx0:cx1]
        changed = shape & (board == 0) if proposal.add_copper else shape & (board > 0)
        if changed.sum() < min_changed:
            continue
        ys, xs = np.nonzero(changed)
        box = _label_box(rng, (xs.min() + cx0, ys.min() + cy0, xs.max() + cx0 + 1, ys.max() + cy0 + 1),
                         scene.scale, size)
        if box is None or any(_near(box, other, gap) for other in boxes):
            continue
        board[changed] = 1 if proposal.add_copper else 0
        return box
    return None


def _label_box(rng: np.random.Generator, changed: tuple[int, int, int, int], scale: float,
               size: int) -> list[float] | None:
    """The changed pixels' bounds plus a margin, widened to DeepPCB's typical minimum side; whole pixels."""
    x0, y0, x1, y1 = (float(v) for v in changed)
    margin = rng.uniform(3, 8) * scale
    x0, y0, x1, y1 = x0 - margin, y0 - margin, x1 + margin, y1 + margin
    min_side = rng.uniform(22, 34) * scale
    if x1 - x0 < min_side:
        extra = min_side - (x1 - x0)
        share = rng.uniform(0.3, 0.7)
        x0, x1 = x0 - extra * share, x1 + extra * (1 - share)
    if y1 - y0 < min_side:
        extra = min_side - (y1 - y0)
        share = rng.uniform(0.3, 0.7)
        y0, y1 = y0 - extra * share, y1 + extra * (1 - share)
    box = [max(0.0, math.floor(x0)), max(0.0, math.floor(y0)), min(float(size), math.ceil(x1)),
           min(float(size), math.ceil(y1))]
    if max(box[2] - box[0], box[3] - box[1]) > 80 * scale:
        return None  # larger than DeepPCB's defects
    return box


def _near(a: list[float], b: list[float], gap: float) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _value(image: np.ndarray, point: np.ndarray) -> float:
    """The pixel under ``point``; -1 off the image (fails every 'far enough' test)."""
    x, y = int(round(point[0])), int(round(point[1]))
    if 0 <= x < image.shape[1] and 0 <= y < image.shape[0]:
        return float(image[y, x])
    return -1.0


def _in_bounds(scene: _Scene, point: np.ndarray) -> bool:
    size = scene.copper.shape[0]
    return bool(np.all((point >= scene.border) & (point <= size - scene.border)))


def _canvas(center: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A blank mask of side 2*radius around ``center`` and its top-left image position."""
    side = int(math.ceil(2 * radius)) + 1
    origin = np.floor(center - radius)
    return np.zeros((side, side), np.uint8), origin


def _edge_spot(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray] | None:
    """A point on a copper edge and the outward normal there; mostly on traces, where defects mostly are."""
    if scene.traces and rng.random() < 0.6:
        trace = scene.traces[int(rng.integers(len(scene.traces)))]
        i = int(rng.integers(len(trace.points) - 1))
        a, b = trace.points[i], trace.points[i + 1]
        direction = (b - a) / max(np.linalg.norm(b - a), 1e-6)
        normal = np.array([-direction[1], direction[0]]) * _pick(rng, (-1.0, 1.0))
        point = a + (b - a) * rng.uniform(0.1, 0.9) + normal * trace.width / 2
        # The edge must really be there: not under a pad, not merged with a neighbour.
        if _value(scene.inside, point - normal * 1.5) <= 0 or _value(scene.outside, point + normal * 1.5) <= 0:
            return None
    else:
        if len(scene.edge_pixels) == 0:
            return None
        y, x = divmod(int(scene.edge_pixels[rng.integers(len(scene.edge_pixels))]), scene.copper.shape[1])
        if not (2 <= x < scene.copper.shape[1] - 2 and 2 <= y < scene.copper.shape[0] - 2):
            return None
        # Signed distance (positive on the board) rises along the outward normal.
        def signed(u: int, v: int) -> float:
            return float(scene.outside[v, u]) - float(scene.inside[v, u])

        normal = np.array([signed(x + 2, y) - signed(x - 2, y), signed(x, y + 2) - signed(x, y - 2)])
        length = np.linalg.norm(normal)
        if length < 1.0:
            return None
        normal /= length
        point = np.array([x, y], float) + normal * 0.5
    if not _in_bounds(scene, point) or _value(scene.holes, point + normal * 2) > 0:
        return None  # the edge of a drilled hole: a bridge across it or a bite into it is no DeepPCB defect
    return point, normal


def _clear_ahead(scene: _Scene, point: np.ndarray, direction: np.ndarray, normal: np.ndarray, reach: float) -> bool:
    """No copper ahead of an edge out to ``reach``, other than the edge itself (assumed straight)."""
    for distance in np.linspace(2.0, reach, 8):
        ahead = point + direction * distance
        if _value(scene.outside, ahead) < distance * float(direction @ normal) - 1.5:
            return False
    return True


def _make_open(rng: np.random.Generator, scene: _Scene) -> _Proposal | None:
    """A gap cut across a trace, its sides a little ragged, like an etched-through crack."""
    s = scene.scale
    candidates = [t for t in scene.traces if t.width <= 40 * s]
    if not candidates:
        return None
    trace = candidates[int(rng.integers(len(candidates)))]
    i = int(rng.integers(len(trace.points) - 1))
    a, b = trace.points[i], trace.points[i + 1]
    length = float(np.linalg.norm(b - a))
    keep = trace.width + 12 * s  # stay off the corners and the pads at the ends
    if length < 2 * keep + 1:
        return None
    along = (b - a) / length
    across = np.array([-along[1], along[0]])
    center = a + along * rng.uniform(keep, length - keep)
    half = trace.width / 2
    if not _in_bounds(scene, center) or _value(scene.inside, center) < half - 2:
        return None  # under a pad, or the trace isn't intact here
    if min(_value(scene.outside, center + across * (half + 3)), _value(scene.outside, center - across * (half + 3))) < 2:
        return None  # another feature right beside the trace: the cut would reach it
    gap = rng.uniform(3, 11) * s
    reach = half + 2.5
    corners = [center + across * side * reach + along * (side * rng.uniform(-0.4, 0.4) * gap + end * gap / 2)
               for side, end in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    mask, origin = _canvas(center, reach + gap + 4)
    cv2.fillPoly(mask, [_ints(np.array(corners), origin)], 1)
    return _Proposal(origin, mask, add_copper=False)


def _make_short(rng: np.random.Generator, scene: _Scene) -> _Proposal | None:
    """A copper bridge from an edge across the board to the next copper feature."""
    s = scene.scale
    spot = _edge_spot(rng, scene)
    if spot is None:
        return None
    point, normal = spot
    gap = None
    for distance in np.arange(2.0, 30 * s, 1.0):
        if _value(scene.inside, point + normal * distance) > 0:
            gap = distance
            break
        if _value(scene.outside, point + normal * distance) < 0:
            return None  # ran off the image
    if gap is None or gap < 3 * s:
        return None
    thickness = max(2, int(round(rng.uniform(3, 8) * s)))
    sideways = np.array([-normal[1], normal[0]]) * rng.uniform(-1, 1) * thickness
    path = np.array([point - normal * 2, point + normal * gap / 2 + sideways, point + normal * (gap + 2)])
    mask, origin = _canvas(point + normal * gap / 2, gap / 2 + thickness + 6)
    cv2.polylines(mask, [_ints(path, origin)], False, 1, thickness)
    return _Proposal(origin, mask, add_copper=True)


def _make_mousebite(rng: np.random.Generator, scene: _Scene) -> _Proposal | None:
    """One to three small bites out of a copper edge, none deep enough to cut the copper through."""
    s = scene.scale
    spot = _edge_spot(rng, scene)
    if spot is None:
        return None
    point, normal = spot
    radius = rng.uniform(3, 8) * s
    if _value(scene.inside, point - normal * (radius + 2)) < radius + 1:
        return None  # copper too thin here: this would be an open
    if not _clear_ahead(scene, point, normal, normal, 2 * radius + 5):
        return None  # another feature just beyond the edge, within reach of the bite
    tangent = np.array([-normal[1], normal[0]])
    mask, origin = _canvas(point, 4 * radius + 4)
    for k in range(int(rng.integers(1, 4))):
        bite = radius * rng.uniform(0.6, 1.0)
        center = point + tangent * (k - 1) * radius * rng.uniform(0.9, 1.4) - normal * rng.uniform(0, 0.5) * bite
        # Swept outwards past the edge, so the bite opens onto the board and leaves no sliver of copper.
        cv2.line(mask, tuple(int(v) for v in _ints(center, origin)),
                 tuple(int(v) for v in _ints(center + normal * (bite + 2), origin)), 1, max(2, int(round(2 * bite))))
    return _Proposal(origin, mask, add_copper=False)


def _make_spur(rng: np.random.Generator, scene: _Scene) -> _Proposal | None:
    """A thin, slightly bent, tapering protrusion from a copper edge into clear board."""
    s = scene.scale
    spot = _edge_spot(rng, scene)
    if spot is None:
        return None
    point, normal = spot
    length = rng.uniform(10, 28) * s
    angle = rng.uniform(-0.6, 0.6)  # radians off the normal
    direction = np.array([normal[0] * math.cos(angle) - normal[1] * math.sin(angle),
                          normal[0] * math.sin(angle) + normal[1] * math.cos(angle)])
    if _value(scene.inside, point - normal * 1.5) <= 0 or not _clear_ahead(scene, point, direction, normal,
                                                                            length + 6 * s):
        return None
    thickness = rng.uniform(2.5, 5) * s
    bend = np.array([-direction[1], direction[0]]) * rng.uniform(-0.25, 0.25) * length
    middle = point + direction * length * 0.5 + bend * 0.5
    tip = point + direction * length + bend
    mask, origin = _canvas(point, length + thickness + 4)
    cv2.line(mask, tuple(int(v) for v in _ints(point - normal * 2, origin)), tuple(int(v) for v in _ints(middle, origin)),
             1, max(1, int(round(thickness * 1.4))))
    cv2.line(mask, tuple(int(v) for v in _ints(middle, origin)), tuple(int(v) for v in _ints(tip, origin)),
             1, max(1, int(round(thickness))))
    return _Proposal(origin, mask, add_copper=True)


def _random_blob(rng: np.random.Generator, mask: np.ndarray, center: np.ndarray, radius: float,
                 scale: float) -> None:
    """An irregular blob or a short curly stroke within ``radius`` of the mask's ``center``."""
    if rng.random() < 0.5:
        angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(5, 9))))
        radii = radius * rng.uniform(0.45, 1.0, len(angles))
        points = center + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    else:
        thickness = max(2, int(round(rng.uniform(3, 7) * scale)))
        reach = max(1.0, radius - thickness / 2)
        heading = rng.uniform(0, 2 * math.pi)
        points = [center - reach * np.array([math.cos(heading), math.sin(heading)])]
        for _ in range(int(rng.integers(2, 4))):
            heading += rng.uniform(-1.2, 1.2)
            points.append(points[-1] + reach * rng.uniform(0.6, 1.0) * np.array([math.cos(heading), math.sin(heading)]))
        points = np.clip(np.array(points), center - reach, center + reach)
        cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 1, thickness)


def _random_spot(rng: np.random.Generator, scene: _Scene, distance: np.ndarray, needed: float) -> np.ndarray | None:
    """A point inside the border where ``distance`` (to copper, or to board) is at least ``needed``."""
    size = scene.copper.shape[0]
    for _ in range(10):
        point = rng.uniform(scene.border, size - scene.border, 2)
        if _value(distance, point) >= needed:
            return point
    return None


def _make_copper(rng: np.random.Generator, scene: _Scene) -> _Proposal | None:
    """A spurious blob of copper on bare board, clear of every feature."""
    s = scene.scale
    radius = rng.uniform(5, 15) * s
    center = _random_spot(rng, scene, scene.outside, radius + 6 * s)
    if center is None or _value(scene.holes, center) > 0:
        return None
    mask, origin = _canvas(center, radius + 2)
    _random_blob(rng, mask, center - origin, radius, s)
    return _Proposal(origin, mask, add_copper=True)


def _make_pin_hole(rng: np.random.Generator, scene: _Scene) -> _Proposal | None:
    """A small hole (a dot, or a short scratch) well inside copper."""
    s = scene.scale
    radius = rng.uniform(2.5, 8) * s
    center = _random_spot(rng, scene, scene.inside, radius + 4 * s)
    if center is None:
        return None
    mask, origin = _canvas(center, radius + 2)
    if radius < 4 * s or rng.random() < 0.4:
        cx, cy = _ints(center, origin)
        cv2.circle(mask, (int(cx), int(cy)), max(1, int(round(radius * 0.7))), 1, -1)
    else:
        _random_blob(rng, mask, center - origin, radius, s * 0.6)
    return _Proposal(origin, mask, add_copper=False)


_MAKERS = {OPEN: _make_open, SHORT: _make_short, MOUSEBITE: _make_mousebite, SPUR: _make_spur,
           COPPER: _make_copper, PIN_HOLE: _make_pin_hole}
