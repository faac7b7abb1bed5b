"""The board of a synthetic DeepPCB-style pair: its shapes, how they are drawn, and a random layout
that keeps separate features apart (``draw_board``). ``inspector.data.synth`` is the public face.

Lengths here are pixels at DeepPCB's 640 x 640 (``REFERENCE_SIZE``) and scale with the requested size.
Everything is drawn from the given ``numpy`` generator, in a fixed order, so a seed fixes the pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

REFERENCE_SIZE = 640  # DeepPCB's image size; the lengths below are pixels at this size

# Unit steps in the eight directions a PCB router uses (0, 45, 90, ... degrees).
_DIRECTIONS = np.array([(math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)) for k in range(8)])


@dataclass
class Trace:
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


_Shape = Trace | _Disc | _RoundRect | _Hole


def pixel_coords(points: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) - offset).astype(np.int32)


def _draw_shape(canvas: np.ndarray, shape: _Shape, grow: float, offset: np.ndarray, value: int) -> None:
    """Draw ``shape`` grown by ``grow`` pixels on every side; ``offset`` is the canvas's top-left."""
    if isinstance(shape, Trace):
        thickness = max(1, int(round(shape.width + 2 * grow)))
        cv2.polylines(canvas, [pixel_coords(shape.points, offset)], False, value, thickness)  # round caps and joints
    elif isinstance(shape, (_Disc, _Hole)):
        cx, cy = pixel_coords(shape.center, offset)
        cv2.circle(canvas, (int(cx), int(cy)), max(1, int(round(shape.radius + grow))), value, -1)
    else:
        corner = shape.corner + grow
        inner = np.array(shape.half_size) + grow - corner  # rectangle whose thick outline rounds the corners
        x0, y0 = pixel_coords(shape.center - inner, offset)
        x1, y1 = pixel_coords(shape.center + inner, offset)
        cv2.rectangle(canvas, (int(x0), int(y0)), (int(x1), int(y1)), value, -1)
        if corner >= 0.5:
            cv2.rectangle(canvas, (int(x0), int(y0)), (int(x1), int(y1)), value, int(round(2 * corner)))


def _extent(shape: _Shape, grow: float) -> tuple[float, float, float, float]:
    if isinstance(shape, Trace):
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


def draw_board(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[Trace]]:
    """A random board: its copper mask (uint8, 1 = copper), its drilled holes (1 = hole), its traces."""
    # DeepPCB crops come from boards at different magnifications: scale all features together.
    zoom = size / REFERENCE_SIZE * rng.uniform(0.7, 1.7)
    clearance = max(2, int(round(rng.uniform(4, 8) * zoom)))
    copper = np.zeros((size, size), np.uint8)
    features = np.zeros((size, size), np.uint8)
    holes = np.zeros((size, size), np.uint8)
    if rng.random() < 0.45:
        cv2.fillPoly(copper, [_random_pour(rng, size)], 1)

    traces: list[Trace] = []
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
                traces.extend(shape for shape in unit if isinstance(shape, Trace))
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


def pick(rng: np.random.Generator, values: tuple[float, ...]) -> float:
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
        pad = _RoundRect(center, (radius, radius), radius * pick(rng, (0.0, 0.3)))
    if radius >= 8 * zoom and rng.random() < 0.5:
        return [pad, _Hole(center, radius * rng.uniform(0.35, 0.55))]
    return [pad]


def _random_route(rng: np.random.Generator, size: int, zoom: float) -> list[_Shape]:
    """A trace with a pad at each end that lies on the image."""
    width = pick(rng, (5, 7, 9, 12, 16, 22)) * zoom
    path = _random_path(rng, size, zoom, int(rng.integers(1, 5)))
    unit: list[_Shape] = [Trace(path, width)]
    for end in (path[0], path[-1]):
        if np.all((end > 0) & (end < size)) and rng.random() < 0.85:
            unit += _random_pad(rng, end, max(width * 0.9, rng.uniform(8, 22) * zoom), zoom)
    return unit


def _random_bus(rng: np.random.Generator, size: int, zoom: float, clearance: int) -> list[list[_Shape]]:
    """Two to six parallel traces following the same path."""
    width = pick(rng, (5, 7, 9, 12, 16)) * zoom
    pitch = width + clearance + rng.uniform(2, 12) * zoom
    path = _random_path(rng, size, zoom, int(rng.integers(2, 5)))
    count = int(rng.integers(2, 7))
    return [[Trace(_offset_path(path, (i - (count - 1) / 2) * pitch), width)] for i in range(count)]


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
            unit.insert(0, Trace(path, min(radius, pick(rng, (5, 7, 9, 12)) * zoom)))
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
