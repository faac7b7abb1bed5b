"""Whole panels, unknown-change flags: each tile's flags (``changes.find_unknown_changes`` on the tile pair)
moved to panel coordinates and stitched, remembering the tile each came from.

Tiles overlap, so a change in the overlap is flagged by both tiles, and a change crossing a seam shows as
one fragment per tile. Fragments from different tiles whose template boxes intersect are one change: its
box covers them all, its area is the largest fragment's (the tiles measured the same pixels twice), and
it keeps the tile of that fragment, the one a reviewer opens to see it whole. Flags of one tile are never
merged with each other (the tile already separated them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inspector.runtime.changes import UnknownChange
from inspector.runtime.panel_tiles import IgnoreRegions, Tile, map_boxes


@dataclass(frozen=True)
class PanelChange(UnknownChange):
    """An unknown change on a panel: ``box`` in the tested panel's pixels, ``template_box`` in the golden
    panel's, ``tile`` the (x, y, width, height) on the golden panel of the tile that flagged it."""

    template_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    tile: tuple[int, int, int, int] = (0, 0, 0, 0)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "template_box": [round(float(v), 2) for v in self.template_box],
                "tile": [int(v) for v in self.tile]}


def tile_of(tile: Tile) -> tuple[int, int, int, int]:
    return int(tile.x), int(tile.y), int(tile.width), int(tile.height)


def stitch_changes(per_tile: list[tuple[Tile, np.ndarray, list[UnknownChange]]],
                   ignore: IgnoreRegions | None, panel_size: tuple[int, int]) -> tuple[list[PanelChange], int]:
    """``per_tile``: (tile, its tile pixel -> panel pixel map, its flags in tile pixels). Returns the panel's
    flags, largest first, and how many fell in ignore regions (template pixels, as detections)."""
    fragments = []  # (template box, panel box, change, tile index)
    for index, (tile, used, changes) in enumerate(per_tile):
        for change in changes:
            box = np.asarray(change.box, np.float32)
            fragments.append((box + [tile.x, tile.y, tile.x, tile.y], map_boxes(used, box[None])[0], change, index))
    parent = list(range(len(fragments)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (box_i, _, _, tile_i) in enumerate(fragments):
        for j in range(i + 1, len(fragments)):
            box_j, tile_j = fragments[j][0], fragments[j][3]
            if tile_i != tile_j and _intersect(box_i, box_j):
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(fragments)):
        groups.setdefault(find(i), []).append(i)
    width, height = panel_size
    stitched = []
    for members in groups.values():
        largest = max(members, key=lambda i: (fragments[i][2].area, -i))
        template_box = _union([fragments[i][0] for i in members])
        panel_box = np.clip(_union([fragments[i][1] for i in members]), 0, [width, height, width, height])
        kinds = {fragments[i][2].kind for i in members}
        change = fragments[largest][2]
        stitched.append(PanelChange(tuple(float(v) for v in panel_box), int(change.area),
                                    kinds.pop() if len(kinds) == 1 else "mixed",
                                    max(float(fragments[i][2].coverage) for i in members),
                                    tuple(float(v) for v in template_box), tile_of(per_tile[fragments[largest][3]][0])))
    ignored = 0
    if ignore and stitched:
        covered = ignore.covers(np.array([c.template_box for c in stitched], np.float32))
        ignored = int(covered.sum())
        stitched = [c for c, hit in zip(stitched, covered) if not hit]
    stitched.sort(key=lambda c: -c.area)
    return stitched, ignored


def _intersect(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))


def _union(boxes: list[np.ndarray]) -> np.ndarray:
    stacked = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.concatenate([stacked[:, :2].min(axis=0), stacked[:, 2:].max(axis=0)])
