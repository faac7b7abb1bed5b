"""A whole panel in the verification queue, reviewed tile by tile (plain Python: no Qt here).

A line-scan panel (4000 px and more a side) shrinks on screen until a 30 px defect is a speck nobody can judge.
A panel's queue entries (``inspector.review_queue.review_entries``) therefore name the tile that saw each defect
best (``tile``: x, y, width, height on the golden panel) beside its box on the tested panel (``box``: the queued
picture's pixels, what ``ReviewQueue.decide`` stores) and on the golden panel (``template_box``). The window
shows one entry at a time as that tile, which fills the view (about one screen pixel per panel pixel).

The tile lies on the golden panel's grid, but the queued picture is the tested panel, which the line registered to
the golden one and may be shifted from it by tens of pixels (``inspector.runtime.panel``). So a tile's window on
the picture is the tile moved by its entries' shift (``box`` centre minus ``template_box`` centre: the registration
at that place, the tile's own correction included), and the golden panel is cut at the tile itself: both crops then
show the same board, and one box in tile pixels marks the same place on either (to within the panel's rotation over
a tile, a pixel or two). A fixtured panel has no shift: the window is the tile.

A box moves between tile and panel pixels by the window's offset alone: a box drawn or corrected in a tile is
saved in panel pixels exactly as one drawn on the whole picture, and the HTTP API sees no difference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gui.queue_review import REJECT, QueueDraft, QueueInputError, valid_box
from gui.review import MODEL, OPERATOR, ReviewBox

DETECTION, CHANGE, ADDED = "detection", "change", "added"


@dataclass(frozen=True)
class TileWindow:
    """One tile of a panel item as the reviewer sees it: ``x, y, width, height`` on the queued picture."""

    number: int  # 1-based, in reading order of the item's tiles that hold an entry
    count: int  # the item's tiles that hold an entry
    tile: tuple[int, int, int, int]  # x, y, width, height on the golden panel, as the entries name it
    x: int
    y: int
    width: int
    height: int
    shift: tuple[int, int] = (0, 0)  # picture minus golden panel here, whole pixels (the registration)

    @property
    def rect(self) -> list[float]:
        """The window as [x1, y1, x2, y2] in the picture's pixels (the whole-panel view outlines it)."""
        return [float(self.x), float(self.y), float(self.x + self.width), float(self.y + self.height)]

    def template_region(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) on the golden panel showing what the window shows on the picture."""
        return self.x - self.shift[0], self.y - self.shift[1], self.width, self.height

    def describe(self) -> str:
        """The tile's place in words, as the reviewer reads it beside the picture."""
        x, y, width, height = self.tile
        text = f"tile {self.number} of {self.count} at x {x}, y {y} ({width} × {height} px)"
        if self.shift != (0, 0):
            text += f"; on this panel at x {self.x}, y {self.y} (registration shift {self.shift[0]:+d}, " \
                    f"{self.shift[1]:+d})"
        return text

    def holds(self, box) -> bool:
        """True when a box in panel pixels overlaps the window (drawn in the tile, cut at its edge)."""
        x1, y1, x2, y2 = (float(v) for v in box)
        return x1 < self.x + self.width and x2 > self.x and y1 < self.y + self.height and y2 > self.y

    def to_tile(self, box) -> list[float]:
        """A box in panel pixels as tile pixels (the window's top left is 0, 0); not clipped: the view clips."""
        x1, y1, x2, y2 = (float(v) for v in box)
        return [x1 - self.x, y1 - self.y, x2 - self.x, y2 - self.y]

    def to_panel(self, box) -> tuple[list[float], bool]:
        """A box drawn in the tile (tile pixels) in panel pixels, clipped to the tile: ``(box, clipped)``.

        Clipped rather than refused: the reviewer sees nothing beyond the tile, so a drag past its edge is an
        overshoot (as a drag past the whole picture's edge ends at that edge today) and the part inside is what
        was boxed; refusing it would make the reviewer redraw for nothing. ``clipped`` lets the window say so,
        since a defect that really runs on past the tile has to be boxed in the whole-panel view. A box with less
        than a pixel inside the tile holds nothing the reviewer saw and is refused (``QueueInputError``).
        """
        x1, y1, x2, y2 = valid_box(box, pixels=" in tile pixels")
        inside = [min(max(x1, 0.0), self.width), min(max(y1, 0.0), self.height),
                  min(max(x2, 0.0), self.width), min(max(y2, 0.0), self.height)]
        if inside[2] - inside[0] < 1 or inside[3] - inside[1] < 1:
            raise QueueInputError(f"box {[x1, y1, x2, y2]} lies outside the tile ({self.width}x{self.height}): "
                                  "draw it on the defect inside the tile, or in the whole-panel view")
        clipped = inside != [x1, y1, x2, y2]
        return [inside[0] + self.x, inside[1] + self.y, inside[2] + self.x, inside[3] + self.y], clipped


@dataclass(frozen=True)
class Stop:
    """One entry the reviewer steps to: a detection or an unknown change of the item, in its tile."""

    kind: str  # DETECTION or CHANGE
    index: int  # in the item's detections or unknown_changes
    window: TileWindow


@dataclass(frozen=True)
class PanelTiles:
    """The tiles of one panel item (``windows``, reading order) and its entries tile by tile (``stops``)."""

    windows: list[TileWindow]
    stops: list[Stop]

    def stop_of(self, kind: str, index: int) -> int | None:
        """Position in ``stops`` of the item's detection (or change) ``index``; None when it names no tile."""
        return next((position for position, stop in enumerate(self.stops)
                     if stop.kind == kind and stop.index == index), None)


def _tile(entry: dict) -> tuple[int, int, int, int] | None:
    tile = entry.get("tile")
    if not isinstance(tile, (list, tuple)) or len(tile) != 4:
        return None
    return int(tile[0]), int(tile[1]), int(tile[2]), int(tile[3])


def _shift(entry: dict) -> tuple[float, float] | None:
    """``box`` centre minus ``template_box`` centre: where the picture is, relative to the golden panel, here."""
    box, template_box = entry.get("box"), entry.get("template_box")
    if not isinstance(box, (list, tuple)) or not isinstance(template_box, (list, tuple)):
        return None
    return ((box[0] + box[2]) / 2 - (template_box[0] + template_box[2]) / 2,
            (box[1] + box[3]) / 2 - (template_box[1] + template_box[3]) / 2)


def _window(tile: tuple[int, int, int, int], shift: tuple[int, int], image_size: tuple[int, int]) -> tuple:
    """(x, y, width, height) of the shifted tile kept on the picture (at least one pixel, whatever the entry says)."""
    width, height = image_size
    x1 = min(max(tile[0] + shift[0], 0), width - 1)
    y1 = min(max(tile[1] + shift[1], 0), height - 1)
    x2 = min(max(tile[0] + shift[0] + tile[2], x1 + 1), width)
    y2 = min(max(tile[1] + shift[1] + tile[3], y1 + 1), height)
    return x1, y1, x2 - x1, y2 - y1


def panel_tiles(detections: list[dict], changes: list[dict], image_size: tuple[int, int]) -> PanelTiles | None:
    """The tiles of an item whose entries name one (a whole panel's), or None (a single board: no tile anywhere).

    One window per distinct tile, moved by the median shift of the entries it holds (one window for the
    tile's entries, robust to one odd box). ``stops``: the tiles in reading order (top row first), in each
    its detections, then its unknown changes (an unknown-change panel may have no detection at all).
    ``image_size``: (width, height) of the queued picture; a window never leaves it.
    """
    named = [(DETECTION, index, entry) for index, entry in enumerate(detections)]
    named += [(CHANGE, index, entry) for index, entry in enumerate(changes)]
    named = [(kind, index, entry, _tile(entry)) for kind, index, entry in named if isinstance(entry, dict)]
    named = [row for row in named if row[3] is not None]
    if not named:
        return None
    tiles = sorted({row[3] for row in named}, key=lambda t: (t[1], t[0], t[3], t[2]))
    windows: dict[tuple, TileWindow] = {}
    for number, tile in enumerate(tiles, start=1):
        shifts = [s for s in (_shift(row[2]) for row in named if row[3] == tile) if s is not None]
        shift = (int(np.floor(np.median([s[0] for s in shifts]) + 0.5)),  # half up, never to even
                 int(np.floor(np.median([s[1] for s in shifts]) + 0.5))) if shifts else (0, 0)
        windows[tile] = TileWindow(number, len(tiles), tile, *_window(tile, shift, image_size), shift=shift)
    order = {tile: position for position, tile in enumerate(tiles)}
    stops = [Stop(kind, index, windows[tile]) for kind, index, _, tile in
             sorted(named, key=lambda row: (order[row[3]], row[0] != DETECTION, row[1]))]
    return PanelTiles([windows[tile] for tile in tiles], stops)


def cut(picture: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
    """``picture``'s region (x, y, width, height): a numpy view of it (no copy) when the region lies inside;
    else a tile-sized copy with black where the picture ends, so a pixel of the crop is the same tile pixel on
    the picture and on the golden panel. Never a copy of the whole panel."""
    rows, columns = picture.shape[:2]
    if x >= 0 and y >= 0 and x + width <= columns and y + height <= rows:
        return picture[y:y + height, x:x + width]
    out = np.zeros((height, width) + picture.shape[2:], picture.dtype)
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + width, columns), min(y + height, rows)
    if right > left and bottom > top:
        out[top - y:bottom - y, left - x:right - x] = picture[top:bottom, left:right]
    return out


@dataclass
class Scene:
    """What the picture shows of a draft: boxes in the shown picture's pixels and where each came from."""

    boxes: list[ReviewBox]  # detections first, then the added boxes
    sources: list[tuple[str, int]]  # per box: (DETECTION, index in the item) or (ADDED, index in draft.added)
    verdicts: list[str | None]  # per shown detection, in order
    changes: list[dict]  # unknown changes ({"box", ...}) in the shown picture's pixels
    focus: list[float] | None = None  # the box of the entry being looked at


def draft_scene(draft: QueueDraft, window: TileWindow | None = None, focus: Stop | None = None) -> Scene:
    """The draft's boxes on the whole picture (``window`` None: every box, as stored) or in one tile (only the
    boxes that overlap it, in tile pixels); ``focus``: the entry to ring, where it is shown."""
    def place(box) -> list[float] | None:
        if window is None:
            return [float(v) for v in box]
        return window.to_tile(box) if window.holds(box) else None

    boxes, sources, verdicts = [], [], []
    for index, detection in enumerate(draft.item.detections):
        shown = place(draft.boxes[index])
        if shown is not None:
            boxes.append(ReviewBox(tuple(shown), draft.classes[index], MODEL, float(detection["score"]),
                                   false_call=draft.verdicts[index] == REJECT))
            sources.append((DETECTION, index))
            verdicts.append(draft.verdicts[index])
    for index, added in enumerate(draft.added):
        shown = place(added["box"])
        if shown is not None:
            boxes.append(ReviewBox(tuple(shown), added["class_name"], OPERATOR))
            sources.append((ADDED, index))
    changes = []
    for change in draft.item.unknown_changes:
        if isinstance(change.get("box"), (list, tuple)):
            shown = place(change["box"])
            if shown is not None:
                changes.append({**change, "box": shown})
    ringed = None
    if focus is not None:
        box = draft.boxes[focus.index] if focus.kind == DETECTION else draft.item.unknown_changes[focus.index]["box"]
        ringed = place(box)
    return Scene(boxes, sources, verdicts, changes, ringed)
