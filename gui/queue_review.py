"""Deciding one board of the line's verification queue (``inspector.review_queue``) in the window.

``QueueDraft`` holds what the reviewer has said so far about one ``QueueItem``: a verdict (confirm or reject)
and possibly a corrected class per stored detection, and the defects the model missed. Its ``payload()``
is the decision in the same shape the service's ``POST /review/items/{id}/decision`` passes to
``ReviewQueue.decide`` (``inspector/service/review_api.py``), so a board decided here and one decided over
HTTP are the same data. Boxes are checked against the picture here, since the store does not know its size.
"""
from __future__ import annotations

import getpass
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from inspector.review_queue import VERDICTS, QueueItem, ReviewError, ReviewQueue

CONFIRM, REJECT = VERDICTS


class QueueInputError(ValueError):
    """A reviewer's entry that cannot be stored; the message names the field and what was expected."""


def open_queue(path: str | Path) -> ReviewQueue:
    """The queue the line service writes (``<data_dir>/review.sqlite3``); a missing or unreadable file is a
    ``QueueInputError`` naming it (an empty queue is never created by mistake at a mistyped path)."""
    path = Path(path).expanduser()
    if not str(path).strip() or str(path) == ".":
        raise QueueInputError("no verification queue file is set: choose the service's <data_dir>/review.sqlite3")
    if not path.is_file():
        raise QueueInputError(f"verification queue {path}: no such file (the line service writes it as "
                              "<data_dir>/review.sqlite3)")
    try:
        # read-only first: ReviewQueue would add its tables to any SQLite file (the audit trail, a recipe db)
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            probe.close()
        if not {"items", "decisions"} <= tables:
            raise QueueInputError(f"verification queue {path}: not a verification queue (it has no items and "
                                  "decisions tables); the line service's is <data_dir>/review.sqlite3")
        queue = ReviewQueue(path)
        queue.counts()  # reads the tables: a damaged file fails here, not on the first click
    except (sqlite3.Error, OSError, ReviewError) as error:
        raise QueueInputError(f"verification queue {path} cannot be opened: {error}") from error
    return queue


def reviewer_name(engineer: str | None, operator_name: str = "") -> str:
    """Who decides: the engineer logged in, else the operator named in the settings, else the login name."""
    if engineer:
        return engineer
    if operator_name.strip():
        return operator_name.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user entry for the process (containers): no name to record
        return ""


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x1, y1, x2, y2"`` (commas or spaces) as four numbers."""
    parts = [part for part in text.replace(",", " ").split() if part]
    try:
        values = [float(part) for part in parts]
    except ValueError as error:
        raise QueueInputError(f"box {text!r}: expected four numbers x1, y1, x2, y2 in image pixels") from error
    if len(values) != 4:
        raise QueueInputError(f"box {text!r}: expected four numbers x1, y1, x2, y2, got {len(values)}")
    return values[0], values[1], values[2], values[3]


def valid_box(box, what: str = "box", pixels: str = "") -> tuple[float, float, float, float]:
    """``box`` as four finite numbers x1 < x2, y1 < y2 (``pixels``: whose, for the message), or QueueInputError
    naming it and what was expected."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError) as error:
        raise QueueInputError(f"{what} {box!r}: expected four numbers x1, y1, x2, y2{pixels}") from error
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise QueueInputError(f"{what} {[x1, y1, x2, y2]}: expected finite numbers")
    if x2 <= x1 or y2 <= y1:
        raise QueueInputError(f"{what} {[x1, y1, x2, y2]}: expected x2 > x1 and y2 > y1")
    return x1, y1, x2, y2


def check_box(box, size: tuple[int, int], what: str = "box") -> list[float]:
    """``box`` as [x1, y1, x2, y2] if it lies inside a (width, height) picture and has an area."""
    width, height = size
    x1, y1, x2, y2 = valid_box(box, what)
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise QueueInputError(f"{what} {[x1, y1, x2, y2]} lies outside the image ({width}x{height}): expected "
                              f"0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height}")
    return [x1, y1, x2, y2]


@dataclass
class QueueDraft:
    """The reviewer's decision on one queued board, being made."""

    item: QueueItem
    image_size: tuple[int, int]  # (width, height) of its picture
    verdicts: list[str | None] = field(default_factory=list)  # per stored detection; None: not decided yet
    classes: list[str] = field(default_factory=list)  # per stored detection: its class as the reviewer says
    boxes: list[list[float]] = field(default_factory=list)  # per stored detection: its box as the reviewer says
    added: list[dict] = field(default_factory=list)  # {"box", "class_name"}: defects the model missed

    def __post_init__(self) -> None:
        count = len(self.item.detections)
        self.verdicts = self.verdicts or [None] * count
        self.classes = self.classes or [d["class_name"] for d in self.item.detections]
        self.boxes = self.boxes or [[float(v) for v in d["box"]] for d in self.item.detections]

    @property
    def class_names(self) -> list[str]:
        return list(self.item.class_names)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.item.detections):
            raise QueueInputError(f"detection {index}: item {self.item.id} has detections 0.."
                                  f"{len(self.item.detections) - 1}")

    def _check_class(self, class_name: str, what: str) -> str:
        if class_name not in self.item.class_names:
            raise QueueInputError(f"{what}: unknown class {class_name!r}; expected one of "
                                  f"{', '.join(self.item.class_names)}")
        return class_name

    def set_verdict(self, index: int, verdict: str | None) -> None:
        self._check_index(index)
        if verdict is not None and verdict not in VERDICTS:
            raise QueueInputError(f"detection {index}: verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
        self.verdicts[index] = verdict

    def set_class(self, index: int, class_name: str) -> None:
        """Confirm detection ``index`` as ``class_name`` (the model found a defect, but named it wrong)."""
        self._check_index(index)
        self.classes[index] = self._check_class(class_name, f"detection {index}")

    def set_box(self, index: int, box) -> list[float]:
        """Confirm detection ``index`` at ``box`` (the model found the defect, but boxed it badly)."""
        self._check_index(index)
        self.boxes[index] = check_box(box, self.image_size, f"detection {index}: box")
        return self.boxes[index]

    def add_missed(self, box, class_name: str) -> dict:
        entry = {"box": check_box(box, self.image_size, f"added box {len(self.added)}"),
                 "class_name": self._check_class(class_name, f"added box {len(self.added)}")}
        self.added.append(entry)
        return entry

    def remove_added(self, index: int) -> None:
        del self.added[index]

    def undecided(self) -> list[int]:
        return [i for i, verdict in enumerate(self.verdicts) if verdict is None]

    def payload(self) -> tuple[list[dict], list[dict]]:
        """``(verdicts, added)`` for ``ReviewQueue.decide``, as the HTTP API sends them: a verdict carries
        ``class_name`` and ``box`` only when the reviewer changed them."""
        missing = self.undecided()
        if missing:
            raise QueueInputError(f"item {self.item.id}: no verdict for detection(s) {missing}: confirm or reject "
                                  "each")
        verdicts = []
        for index, (verdict, class_name, box) in enumerate(zip(self.verdicts, self.classes, self.boxes)):
            entry = {"index": index, "verdict": verdict}
            stored = self.item.detections[index]
            if class_name != stored["class_name"]:
                entry["class_name"] = class_name
            if box != [float(v) for v in stored["box"]]:
                entry["box"] = list(box)
            verdicts.append(entry)
        return verdicts, [dict(entry) for entry in self.added]

    def save(self, queue: ReviewQueue, by: str, note: str = ""):
        """Store the decision through ``ReviewQueue.decide`` (the store checks it again); the ``Decision``."""
        if not by or not by.strip():
            raise QueueInputError("who decided is unknown: log in as an engineer or set operator_name in the "
                                  "GUI settings")
        verdicts, added = self.payload()
        try:
            return queue.decide(self.item.id, by.strip(), verdicts, added, note)
        except ReviewError as error:
            raise QueueInputError(str(error)) from error
        except sqlite3.Error as error:  # e.g. the file locked by another writer for too long
            raise QueueInputError(f"verification queue {queue.path}: decision not saved: {error}") from error
