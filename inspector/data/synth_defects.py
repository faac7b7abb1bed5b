"""The defects of a synthetic pair, painted onto a copy of the board (``add_defects``): the six DeepPCB
types, each where it makes sense (see ``inspector.data.synth``), with a label box per defect.

Each maker proposes a shape to add (copper) or remove (board) near a suitable spot, or None when the spot
it drew doesn't suit; ``add_defects`` keeps the proposals that change enough pixels and whose box stays
clear of the other boxes. Lengths are pixels at ``REFERENCE_SIZE`` and scale with the board.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.data.structures import DEEPPCB_CLASSES
from inspector.data.synth_board import REFERENCE_SIZE, Trace, pick, pixel_coords

OPEN, SHORT, MOUSEBITE, SPUR, COPPER, PIN_HOLE = range(len(DEEPPCB_CLASSES))


@dataclass
class _Scene:
    """What the defect makers look at. Distances come from the template; ``copper`` changes as
    defects are drawn, but boxes are kept apart, so what one defect changed never matters to another."""

    copper: np.ndarray  # uint8, 1 = copper, the tested board so far
    inside: np.ndarray  # float32: distance from a copper pixel to the nearest board pixel (0 on the board)
    outside: np.ndarray  # float32: distance from a board pixel to the nearest copper pixel (0 on copper)
    holes: np.ndarray  # uint8, 1 inside a drilled hole: defects there would make no sense
    edge_pixels: np.ndarray  # flat indices of copper pixels that touch the board, away from the image border
    traces: list[Trace]
    scale: float  # size / 640
    border: float  # defect spots stay this far from the image border, so their boxes fit


@dataclass
class _Proposal:
    origin: np.ndarray  # (x, y) of the mask's top-left pixel in the image
    mask: np.ndarray  # uint8, 1 where the shape is
    add_copper: bool


def add_defects(rng: np.random.Generator, template: np.ndarray, holes: np.ndarray, traces: list[Trace],
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


def _pixel(point: np.ndarray, origin: np.ndarray) -> tuple[int, int]:
    """``point`` as the (x, y) pixel of a canvas whose top-left is at ``origin`` (what cv2.line takes)."""
    x, y = pixel_coords(point, origin)
    return int(x), int(y)


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
        normal = np.array([-direction[1], direction[0]]) * pick(rng, (-1.0, 1.0))
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
    beside = half + 3
    if min(_value(scene.outside, center + across * beside), _value(scene.outside, center - across * beside)) < 2:
        return None  # another feature right beside the trace: the cut would reach it
    gap = rng.uniform(3, 11) * s
    reach = half + 2.5
    corners = [center + across * side * reach + along * (side * rng.uniform(-0.4, 0.4) * gap + end * gap / 2)
               for side, end in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    mask, origin = _canvas(center, reach + gap + 4)
    cv2.fillPoly(mask, [pixel_coords(np.array(corners), origin)], 1)
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
    cv2.polylines(mask, [pixel_coords(path, origin)], False, 1, thickness)
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
        cv2.line(mask, _pixel(center, origin), _pixel(center + normal * (bite + 2), origin), 1,
                 max(2, int(round(2 * bite))))
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
    cv2.line(mask, _pixel(point - normal * 2, origin), _pixel(middle, origin), 1, max(1, int(round(thickness * 1.4))))
    cv2.line(mask, _pixel(middle, origin), _pixel(tip, origin), 1, max(1, int(round(thickness))))
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
        cx, cy = pixel_coords(center, origin)
        cv2.circle(mask, (int(cx), int(cy)), max(1, int(round(radius * 0.7))), 1, -1)
    else:
        _random_blob(rng, mask, center - origin, radius, s * 0.6)
    return _Proposal(origin, mask, add_copper=False)


_MAKERS = {OPEN: _make_open, SHORT: _make_short, MOUSEBITE: _make_mousebite, SPUR: _make_spur,
           COPPER: _make_copper, PIN_HOLE: _make_pin_hole}
