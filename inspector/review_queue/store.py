"""The verification queue's store: one SQLite file (WAL, so a review station reads while the line writes),
every change one transaction, so nothing saved is lost on a crash."""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from inspector.review_queue.ranking import REASONS, VERDICTS, ReviewBands, ReviewError, rank

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    image_path TEXT NOT NULL,
    template_path TEXT,
    source TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    score_threshold REAL NOT NULL,
    class_names TEXT NOT NULL,
    detections TEXT NOT NULL,
    unknown_changes TEXT NOT NULL,
    rank_group INTEGER NOT NULL,
    rank_value REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    record_id TEXT,
    pictures_removed_at TEXT
);
CREATE INDEX IF NOT EXISTS items_order ON items (status, rank_group, rank_value, id);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id),
    decided_at TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    verdicts TEXT NOT NULL,
    added TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_item ON decisions (item_id, id);
"""
# Columns added since the first queues were written: added in place to an older file (NULL for its rows).
_ADDED_COLUMNS = {"record_id": "TEXT", "pictures_removed_at": "TEXT"}
# A line record is queued at most once, however often its offer is replayed after a crash.
_AFTER_MIGRATION = "CREATE UNIQUE INDEX IF NOT EXISTS items_record ON items (record_id) WHERE record_id IS NOT NULL;"


@dataclass(frozen=True)
class QueueItem:
    id: int
    created_at: str
    image_path: str
    template_path: str | None
    source: str
    model: str
    score_threshold: float
    class_names: list[str]
    detections: list[dict]  # {"box": [x1, y1, x2, y2], "score", "class_name"}
    unknown_changes: list[dict]  # {"box", "area", ...}
    reason: str
    rank_value: float
    status: str
    record_id: str | None = None  # the line record it was judged in (queues fed by the service)
    pictures_removed_at: str | None = None  # when retention removed its pictures (``retention.py``)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Decision:
    id: int
    item_id: int
    decided_at: str
    decided_by: str
    verdicts: list[dict]  # one per stored detection: {"index", "verdict", "class_name"?, "box"?}
    added: list[dict]  # {"box", "class_name"}: defects the model missed
    note: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ReviewQueue:
    """The queue in one SQLite file; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            present = {row["name"] for row in self._db.execute("PRAGMA table_info(items)")}
            for column, kind in _ADDED_COLUMNS.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE items ADD COLUMN {column} {kind}")
            self._db.executescript(_AFTER_MIGRATION)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ feeding

    def offer(self, image_path: Path | str, detections: list[dict], score_threshold: float, class_names: list[str],
              template_path: Path | str | None = None, unknown_changes: list[dict] | None = None, source: str = "",
              model: str = "", near_band: ReviewBands | float | None = None,
              record_id: str | None = None) -> int | None:
        """Queue a judged board if a review would teach something; returns its item id, or None.

        ``record_id``: the line record the board was judged in; offering it again (a replay after a crash)
        returns the item already queued for it instead of queueing it twice.

        ``near_band``: one band, or ``ReviewBands`` (per class); the default band when None. ``detections``
        should reach the widest band below the threshold (run the detector with ``score_threshold -
        ReviewBands.widest``), so barely missed defects can be confirmed.
        """
        detections = [_detection(d, class_names, f"detections[{i}]") for i, d in enumerate(detections)]
        changes = [dict(c) for c in unknown_changes or []]
        place = rank(detections, changes, score_threshold, near_band)
        if place is None:
            return None
        with self._lock:
            if record_id is not None:
                row = self._db.execute("SELECT id FROM items WHERE record_id = ?", (str(record_id),)).fetchone()
                if row is not None:
                    return int(row["id"])
            cursor = self._db.execute(
                "INSERT INTO items (created_at, image_path, template_path, source, model, score_threshold, "
                "class_names, detections, unknown_changes, rank_group, rank_value, record_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (_now(), str(image_path), None if template_path is None else str(template_path), source, model,
                 float(score_threshold), json.dumps(list(class_names)), json.dumps(detections), json.dumps(changes),
                 place[0], place[1], None if record_id is None else str(record_id)))
            return int(cursor.lastrowid)

    def item_for_record(self, record_id: str) -> int | None:
        """The item queued for line record ``record_id``, if any."""
        with self._lock:
            row = self._db.execute("SELECT id FROM items WHERE record_id = ?", (str(record_id),)).fetchone()
        return None if row is None else int(row["id"])

    def offer_detections(self, image_path: Path | str, found, score_threshold: float, class_names: list[str],
                         template_path: Path | str | None = None, source: str = "", model: str = "",
                         near_band: ReviewBands | float | None = None) -> int | None:
        """``offer`` for a runtime ``Detections`` or ``PanelDetections`` (with its unknown changes when they were
        asked for; a panel's entries keep their golden-panel box and tile, ``review_entries``)."""
        detections, changes = review_entries(found)
        return self.offer(image_path, detections, score_threshold, class_names, template_path, changes, source,
                          model, near_band)

    def change_token(self) -> tuple[int, int]:
        """A value that changes whenever the queue's file may have changed: another connection (the line, another
        station, retention) committed (SQLite's ``data_version``), or this object wrote (its connection's
        ``total_changes``). Equal tokens: nothing to read again. A window polls this instead of re-reading its
        thousands of listed boards on a quiet queue."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0]), self._db.total_changes

    # ------------------------------------------------------------------ reviewing

    def pending(self, limit: int = 50, offset: int = 0, after: int | None = None,
                through: int | None = None) -> list[QueueItem]:
        """Boards waiting for review, the most instructive first.

        ``after`` / ``through``: item ids (pending or not); only the boards ranked after the one, up to and
        including the other. Paging by the last board read, where an offset would count rows that change: a
        board decided meanwhile moves every later one up by one row (an offset page then skips one) and a new
        board ranked higher moves them down (an offset page lists one twice). An item's rank never changes, so
        the boards after it are the same whatever was decided or queued since. ``ReviewError`` for an id that
        is not in the queue."""
        where, values = ["status = 'pending'"], []
        with self._lock:
            for name, item_id, compare in (("after", after, ">"), ("through", through, "<=")):
                if item_id is not None:
                    where.append(f"(rank_group, rank_value, id) {compare} (?, ?, ?)")
                    values += self._rank_of(item_id, name)
            rows = self._db.execute(f"SELECT * FROM items WHERE {' AND '.join(where)} "
                                    "ORDER BY rank_group, rank_value, id LIMIT ? OFFSET ?",
                                    (*values, int(limit), int(offset))).fetchall()
        return [_item(row) for row in rows]

    def _rank_of(self, item_id: int, name: str) -> list:
        """(rank_group, rank_value, id) of ``item_id``, the place a page starts or ends at (lock held)."""
        row = self._db.execute("SELECT rank_group, rank_value, id FROM items WHERE id = ?",
                               (int(item_id),)).fetchone()
        if row is None:
            raise ReviewError(f"pending boards {name} item {item_id}: no such item")
        return [row["rank_group"], row["rank_value"], row["id"]]

    def get(self, item_id: int) -> QueueItem:
        with self._lock:
            row = self._db.execute("SELECT * FROM items WHERE id = ?", (int(item_id),)).fetchone()
        if row is None:
            raise ReviewError(f"review item {item_id}: no such item")
        return _item(row)

    def decide(self, item_id: int, by: str, verdicts: list[dict], added: list[dict] | None = None,
               note: str = "") -> Decision:
        """Store a reviewer's decision on every detection of ``item_id`` (and the defects it missed)."""
        item = self.get(item_id)
        if item.pictures_removed_at is not None:
            raise ReviewError(f"review item {item_id}: its pictures were removed at {item.pictures_removed_at} "
                              "(review picture retention); nothing left to decide on")
        if not by or not str(by).strip():
            raise ReviewError(f"review item {item_id}: field by: who decided is required")
        seen: dict[int, dict] = {}
        for position, verdict in enumerate(verdicts):
            where = f"review item {item_id}: verdicts[{position}]"
            if not isinstance(verdict, dict):
                raise ReviewError(f"{where}: expected an object with index and verdict")
            index = verdict.get("index")
            if not isinstance(index, int) or not 0 <= index < len(item.detections):
                raise ReviewError(f"{where}: field index: expected 0..{len(item.detections) - 1}, got {index!r}")
            if index in seen:
                raise ReviewError(f"{where}: detection {index} is decided twice")
            if verdict.get("verdict") not in VERDICTS:
                raise ReviewError(f"{where}: field verdict: expected one of {VERDICTS}, got {verdict.get('verdict')!r}")
            clean = {"index": index, "verdict": verdict["verdict"]}
            if verdict.get("class_name") is not None:
                clean["class_name"] = _class(verdict["class_name"], item.class_names, f"{where}: field class_name")
            if verdict.get("box") is not None:
                clean["box"] = _box(verdict["box"], f"{where}: field box")
            seen[index] = clean
        missing = [i for i in range(len(item.detections)) if i not in seen]
        if missing:
            raise ReviewError(f"review item {item_id}: no verdict for detection(s) {missing}: confirm or reject each")
        extra = [{"box": _box(a.get("box") if isinstance(a, dict) else None, f"review item {item_id}: added[{i}].box"),
                  "class_name": _class(a.get("class_name") if isinstance(a, dict) else None, item.class_names,
                                       f"review item {item_id}: added[{i}].class_name")}
                 for i, a in enumerate(added or [])]
        ordered = [seen[i] for i in range(len(item.detections))]
        at = _now()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT INTO decisions (item_id, decided_at, decided_by, verdicts, added, note) VALUES (?,?,?,?,?,?)",
                    (item.id, at, str(by), json.dumps(ordered), json.dumps(extra), note))
                self._db.execute("UPDATE items SET status = 'reviewed' WHERE id = ?", (item.id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Decision(int(cursor.lastrowid), item.id, at, str(by), ordered, extra, note)

    def decisions(self, item_id: int) -> list[Decision]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM decisions WHERE item_id = ? ORDER BY id", (int(item_id),)).fetchall()
        return [Decision(row["id"], row["item_id"], row["decided_at"], row["decided_by"], json.loads(row["verdicts"]),
                         json.loads(row["added"]), row["note"]) for row in rows]

    def counts(self) -> dict:
        with self._lock:
            rows = self._db.execute("SELECT status, rank_group, COUNT(*) AS n FROM items GROUP BY status, rank_group")
            result: dict = {"pending": {}, "reviewed": 0, "expired": 0}
            for row in rows.fetchall():
                if row["status"] == "pending":
                    result["pending"][REASONS[row["rank_group"]]] = row["n"]
                else:  # reviewed, or expired: pending until retention had to remove its pictures
                    result[row["status"]] += row["n"]
        return result

    # ------------------------------------------------------------------ pictures (retention.py)

    def picture_rows(self) -> list[sqlite3.Row]:
        """Every item whose pictures are still kept, with when it was last decided (NULL: pending)."""
        with self._lock:
            return self._db.execute(
                "SELECT id, status, created_at, image_path, template_path, rank_group, rank_value, "
                "(SELECT MAX(decided_at) FROM decisions WHERE item_id = items.id) AS decided_at "
                "FROM items WHERE pictures_removed_at IS NULL").fetchall()

    def template_paths_in_use(self) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT template_path FROM items WHERE pictures_removed_at IS NULL "
                                    "AND template_path IS NOT NULL").fetchall()
        return {row["template_path"] for row in rows}

    def mark_pictures_removed(self, item_id: int, expire: bool) -> None:
        """Record that ``item_id``'s picture is gone; ``expire``: a pending item leaves the queue (status expired)."""
        with self._lock:
            self._db.execute("UPDATE items SET pictures_removed_at = ?, status = CASE WHEN ? AND status = 'pending' "
                             "THEN 'expired' ELSE status END WHERE id = ?", (_now(), int(bool(expire)), int(item_id)))

    def labels(self, item_id: int) -> list[tuple[list[float], str]]:
        """The reviewed truth of a board: confirmed detections (as fixed) and the added ones."""
        item = self.get(item_id)
        decisions = self.decisions(item_id)
        if not decisions:
            raise ReviewError(f"review item {item_id}: not reviewed yet")
        latest = decisions[-1]
        truth = []
        for verdict in latest.verdicts:
            if verdict["verdict"] == "confirm":
                detection = item.detections[verdict["index"]]
                truth.append((verdict.get("box", detection["box"]), verdict.get("class_name", detection["class_name"])))
        truth += [(a["box"], a["class_name"]) for a in latest.added]
        return truth

    # ------------------------------------------------------------------ export

    def export_voc(self, out: Path | str) -> list[Path]:
        """Every reviewed board as Pascal VOC under ``out`` (Annotations/, JPEGImages/, templates/); returns
        the XML files. Re-exporting replaces a board's files with its latest decision."""
        from inspector.review_queue.voc import export_voc

        return export_voc(self, out)

    def reviewed_ids(self) -> list[int]:
        with self._lock:
            return [row["id"] for row in self._db.execute("SELECT id FROM items WHERE status = 'reviewed' ORDER BY id")]


def _item(row: sqlite3.Row) -> QueueItem:
    return QueueItem(row["id"], row["created_at"], row["image_path"], row["template_path"], row["source"], row["model"],
                     row["score_threshold"], json.loads(row["class_names"]), json.loads(row["detections"]),
                     json.loads(row["unknown_changes"]), REASONS[row["rank_group"]], row["rank_value"], row["status"],
                     row["record_id"], row["pictures_removed_at"])


def review_entries(found, ignore: Iterable[Sequence[float]] = ()) -> tuple[list[dict], list[dict]]:
    """A runtime result as the queue's detections and unknown changes. ``found``: ``Detections``, or a whole
    panel's ``PanelDetections`` / ``TiledDetections``, whose entries also carry ``template_box`` (golden-panel
    pixels) and ``tile`` (x, y, width, height of the tile that saw it, on the golden panel), so a reviewer
    can open the tile. ``ignore``: [x1, y1, x2, y2] rectangles in the image's pixels (a recipe's ignore
    regions): a detection whose centre lies in one holds nothing to review."""
    template_boxes = getattr(found, "template_boxes", None)
    tiles = getattr(found, "source_tiles", None)
    panel = tiles is not None and len(tiles) == len(found.boxes) and template_boxes is not None
    rectangles = [[float(v) for v in rect] for rect in ignore]
    detections = []
    for index, (box, score, name) in enumerate(zip(found.boxes, found.scores, found.class_names)):
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if any(x1 <= centre_x <= x2 and y1 <= centre_y <= y2 for x1, y1, x2, y2 in rectangles):
            continue
        entry = {"box": [float(v) for v in box], "score": float(score), "class_name": name}
        if panel:
            entry["template_box"] = [float(v) for v in template_boxes[index]]
            entry["tile"] = [int(v) for v in tiles[index]]
        detections.append(entry)
    return detections, [change.to_dict() for change in (getattr(found, "unknown_changes", None) or [])]


def _detection(value, class_names: list[str], where: str) -> dict:
    if not isinstance(value, dict):
        raise ReviewError(f"{where}: expected an object with box, score and class_name")
    try:
        score = float(value["score"])
    except (KeyError, TypeError, ValueError) as error:
        raise ReviewError(f"{where}: field score: expected a number") from error
    clean = {"box": _box(value.get("box"), f"{where}: field box"), "score": score,
             "class_name": _class(value.get("class_name"), class_names, f"{where}: field class_name")}
    if value.get("template_box") is not None:  # a whole panel's: where on the golden panel, which tile saw it
        clean["template_box"] = _box(value["template_box"], f"{where}: field template_box")
    if value.get("tile") is not None:
        clean["tile"] = _tile(value["tile"], f"{where}: field tile")
    return clean


def _tile(value, where: str) -> list[int]:
    try:
        tile = [int(v) for v in value]
    except (TypeError, ValueError):
        tile = []
    if len(tile) != 4 or tile[0] < 0 or tile[1] < 0 or tile[2] <= 0 or tile[3] <= 0:
        raise ReviewError(f"{where}: expected [x, y, width, height] with x, y >= 0 and a positive size, got {value!r}")
    return tile


def _box(value, where: str) -> list[float]:
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ReviewError(f"{where}: expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {value!r}")
    return box


def _class(value, class_names: list[str], where: str) -> str:
    if value not in class_names:
        raise ReviewError(f"{where}: expected one of {class_names}, got {value!r}")
    return str(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
