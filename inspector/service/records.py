"""Inspection records and where they are kept.

- ``Record``: one inspected frame (time, line, frame, verdict, defects, model, latency).
- ``Journal``: the local SQLite database under the data directory (WAL, synchronous=FULL). Every record
  is committed here first; that commit is the moment a frame counts as inspected (a hot-folder file is
  acknowledged only after it). With no ``--db`` it is also the record store the API reads. It doubles as
  the durable spool: each sink (PostgreSQL, MQTT) keeps a cursor, the last journal sequence number it has
  safely delivered, so whatever a sink missed while it was down is delivered later, in journal order.
- ``PostgresStore`` (``postgres.py``): the shared record store when ``--db postgresql://...`` names one;
  many lines write to one table, a record at most once (``record_id`` is unique).

Both stores answer the same queries (``query``, ``stats``) for the HTTP API.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

VERDICTS = ("OK", "NG", "ERROR")  # ERROR: the frame could not be judged (see Record.error)
RECORDS = "records"
ALARMS = "alarms"


def new_record_id() -> str:
    return uuid.uuid4().hex


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Record:
    """One inspected frame. ``seq`` is its position in this service's journal (the delivery order)."""

    record_id: str
    line: str
    source: str
    frame_id: str
    frame_file: Optional[str]  # the hot-folder file name; None for live sources
    file_version: Optional[str]  # "size:mtime_ns" of that file (a file replaced under the same name is new)
    captured_at: float  # time.time() when the frame was read
    verdict: str  # "OK" | "NG" | "ERROR"
    defects: list[dict[str, Any]]  # {"class_name", "class_id", "score", "box": [x1, y1, x2, y2]}
    model_name: str
    package_id: str  # sha256-derived identity of the model package's files
    latency_ms: float  # capture -> verdict (the commit follows within milliseconds)
    inference_ms: Optional[float] = None
    evidence: Optional[str] = None  # file name of the annotated JPEG in the evidence directory
    error: Optional[str] = None  # why the frame could not be judged (verdict ERROR)
    part_id: Optional[str] = None  # the board's serial from the PLC (trigger mode); None for free-running frames
    recipe: Optional[str] = None  # the active recipe's name and version when the frame was judged
    recipe_version: Optional[str] = None
    seq: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``captured_at`` as ISO 8601 UTC."""
        data = asdict(self)
        data["captured_at"] = iso(self.captured_at)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass
class Alarm:
    """Something an operator must know: camera down, NG streak, records piling up in the spool ..."""

    kind: str  # "camera_down" | "camera_restored" | "ng_streak" | "spool_backlog" | "sink_down" | ...
    level: str  # "critical" | "warning" | "info"
    message: str
    line: str
    raised_at: float = field(default_factory=time.time)
    detail: dict[str, Any] = field(default_factory=dict)
    seq: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["raised_at"] = iso(self.raised_at)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass(frozen=True)
class Page:
    total: int
    items: list[Record]


@dataclass(frozen=True)
class HourStats:
    hour: float  # start of the hour, epoch seconds
    total: int
    ok: int
    ng: int
    error: int

    @property
    def yield_fraction(self) -> Optional[float]:
        judged = self.ok + self.ng
        return None if judged == 0 else self.ok / judged


@dataclass(frozen=True)
class Stats:
    hours: list[HourStats]
    defects_per_class: dict[str, int]


class StoreUnavailable(RuntimeError):
    """The record store cannot be reached right now (the records stay in the spool)."""


# --------------------------------------------------------------------------------------------- SQLite journal

_JOURNAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    line TEXT NOT NULL,
    source TEXT NOT NULL,
    frame_id TEXT NOT NULL,
    frame_file TEXT,
    file_version TEXT,
    captured_at REAL NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NG', 'ERROR')),
    defects TEXT NOT NULL,
    n_defects INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    package_id TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    inference_ms REAL,
    evidence TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS records_captured_at ON records (captured_at);
CREATE INDEX IF NOT EXISTS records_frame_file ON records (frame_file) WHERE frame_file IS NOT NULL;
CREATE TABLE IF NOT EXISTS alarms (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL,
    kind TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    raised_at REAL NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT NOT NULL,
    stream TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (sink, stream)
);
"""

RECORD_COLUMNS = ("seq", "record_id", "line", "source", "frame_id", "frame_file", "file_version", "captured_at",
                   "verdict",
                   "defects", "model_name", "package_id", "latency_ms", "inference_ms", "evidence", "error",
                   "part_id", "recipe", "recipe_version")
# Traceability columns added after the first release: journals and tables made before get them on open.
_TRACE_COLUMNS = ("part_id", "recipe", "recipe_version")


class Journal:
    """The local SQLite database: records, alarms and each sink's delivery cursor.

    Safe to use from many threads: each thread gets its own connection (WAL lets readers run beside the
    one writer). Every write is its own transaction with synchronous=FULL, so a committed record survives
    ``kill -9`` and power loss.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        connection = self._connection()
        try:
            connection.executescript(_JOURNAL_SCHEMA)
            present = {row[1] for row in connection.execute("PRAGMA table_info(records)")}
            for column in _TRACE_COLUMNS:
                if column not in present:
                    connection.execute(f"ALTER TABLE records ADD COLUMN {column} TEXT")
            connection.execute("CREATE INDEX IF NOT EXISTS records_part_id ON records (part_id) "
                               "WHERE part_id IS NOT NULL")
        except sqlite3.DatabaseError as error:
            raise StoreUnavailable(f"records database {self.path}: {error}") from error

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.row_factory = sqlite3.Row
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                try:
                    connection.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ writing

    def append(self, record: Record) -> Record:
        """Commit ``record`` (durably); returns it with its ``seq``."""
        cursor = self._connection().execute(
            "INSERT INTO records (record_id, line, source, frame_id, frame_file, file_version, captured_at, verdict, "
            "defects, n_defects, model_name, package_id, latency_ms, inference_ms, evidence, error, part_id, recipe, "
            "recipe_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.record_id, record.line, record.source, record.frame_id, record.frame_file, record.file_version,
             record.captured_at,
             record.verdict, json.dumps(record.defects), len(record.defects), record.model_name,
             record.package_id, record.latency_ms, record.inference_ms, record.evidence, record.error,
             record.part_id, record.recipe, record.recipe_version))
        record.seq = cursor.lastrowid
        return record

    def append_alarm(self, alarm: Alarm) -> Alarm:
        cursor = self._connection().execute(
            "INSERT INTO alarms (line, kind, level, message, raised_at, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (alarm.line, alarm.kind, alarm.level, alarm.message, alarm.raised_at, json.dumps(alarm.detail)))
        alarm.seq = cursor.lastrowid
        return alarm

    def has_record(self, record_id: str) -> bool:
        """Whether the record ``record_id`` is committed (the review feed, after a crash, queues a board only
        if its record made it)."""
        row = self._connection().execute("SELECT 1 FROM records WHERE record_id = ? LIMIT 1",
                                         (str(record_id),)).fetchone()
        return row is not None

    def has_file(self, frame_file: str, file_version: str) -> bool:
        """Whether a record of this version of a hot-folder file is already committed (it was processed
        before a crash that came between the commit and the acknowledgement)."""
        row = self._connection().execute("SELECT 1 FROM records WHERE frame_file = ? AND file_version = ? LIMIT 1",
                                         (frame_file, file_version)).fetchone()
        return row is not None

    # ------------------------------------------------------------------ the spool: per-sink cursors

    def cursor(self, sink: str, stream: str) -> int:
        row = self._connection().execute("SELECT last_seq FROM cursors WHERE sink = ? AND stream = ?",
                                         (sink, stream)).fetchone()
        return 0 if row is None else int(row[0])

    def start_cursor(self, sink: str, stream: str) -> None:
        """A sink seen for the first time starts at the beginning of the journal: nothing is skipped."""
        self._connection().execute("INSERT OR IGNORE INTO cursors (sink, stream, last_seq) VALUES (?, ?, 0)",
                                   (sink, stream))

    def advance(self, sink: str, stream: str, last_seq: int) -> None:
        self._connection().execute(
            "INSERT INTO cursors (sink, stream, last_seq) VALUES (?, ?, ?) "
            "ON CONFLICT (sink, stream) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
            (sink, stream, last_seq))

    def pending(self, sink: str, stream: str, limit: int = 100) -> list[Record] | list[Alarm]:
        """The oldest ``limit`` entries of ``stream`` that ``sink`` has not delivered, in journal order."""
        after = self.cursor(sink, stream)
        if stream == RECORDS:
            rows = self._connection().execute(
                f"SELECT {', '.join(RECORD_COLUMNS)} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit)).fetchall()
            return [_record_from_row(row) for row in rows]
        rows = self._connection().execute(
            "SELECT seq, line, kind, level, message, raised_at, detail FROM alarms WHERE seq > ? ORDER BY seq "
            "LIMIT ?", (after, limit)).fetchall()
        return [Alarm(kind=row["kind"], level=row["level"], message=row["message"], line=row["line"],
                      raised_at=row["raised_at"], detail=json.loads(row["detail"]), seq=row["seq"]) for row in rows]

    def backlog(self, sink: str, stream: str) -> int:
        """How many entries of ``stream`` wait for ``sink``."""
        table = RECORDS if stream == RECORDS else ALARMS
        row = self._connection().execute(f"SELECT count(*) FROM {table} WHERE seq > ?",
                                         (self.cursor(sink, stream),)).fetchone()
        return int(row[0])

    def prune_delivered(self, sinks: list[str], older_than: float) -> int:
        """Delete records every sink has delivered and captured before ``older_than`` (PostgreSQL mode,
        where the journal is only the spool). Returns how many were deleted."""
        if not sinks:
            return 0
        delivered = min(self.cursor(sink, RECORDS) for sink in sinks)
        cursor = self._connection().execute("DELETE FROM records WHERE seq <= ? AND captured_at < ?",
                                            (delivered, older_than))
        return cursor.rowcount

    def retain(self, sinks: list[str], *, older_than: Optional[float] = None, max_bytes: Optional[int] = None,
               batch: int = 500) -> int:
        """Retention of the SQLite record store: delete records captured before ``older_than``, then the oldest
        records while the data in the database exceeds ``max_bytes`` -- but only records every one of
        ``sinks`` has delivered (none configured: all of them count as delivered). Alarms every alarm sink has
        delivered go by the same age. Returns how many records were deleted.

        The file does not shrink (SQLite keeps freed pages for reuse, which a VACUUM of a live database
        would cost minutes of blocked writes to change): ``max_bytes`` bounds the pages in use, so the file
        stops growing there."""
        connection = self._connection()
        newest = connection.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
        delivered = min([self.cursor(sink, RECORDS) for sink in sinks] or [newest])
        deleted = 0
        if older_than is not None:
            deleted += connection.execute("DELETE FROM records WHERE seq <= ? AND captured_at < ?",
                                          (delivered, older_than)).rowcount
            alarms_delivered = min([self.cursor(sink, ALARMS) for sink in sinks] or
                                   [connection.execute("SELECT coalesce(max(seq), 0) FROM alarms").fetchone()[0]])
            connection.execute("DELETE FROM alarms WHERE seq <= ? AND raised_at < ?", (alarms_delivered, older_than))
        while max_bytes is not None and self.used_bytes() > max_bytes:
            removed = connection.execute(
                "DELETE FROM records WHERE seq IN (SELECT seq FROM records WHERE seq <= ? ORDER BY seq LIMIT ?)",
                (delivered, batch)).rowcount
            if removed == 0:
                break  # what is left waits for a sink: kept, however large
            deleted += removed
        return deleted

    def used_bytes(self) -> int:
        """Bytes of the database's pages in use (its file size less the free pages)."""
        connection = self._connection()
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * page_size

    # ------------------------------------------------------------------ queries for the API

    def query(self, *, line: Optional[str] = None, since: Optional[float] = None, until: Optional[float] = None,
              verdict: Optional[str] = None, limit: int = 100, offset: int = 0, part_id: Optional[str] = None) -> Page:
        where, params = where_sql(line, since, until, verdict, "?", part_id)
        connection = self._connection()
        total = connection.execute(f"SELECT count(*) FROM records {where}", params).fetchone()[0]
        rows = connection.execute(f"SELECT {', '.join(RECORD_COLUMNS)} FROM records {where} "
                                  "ORDER BY captured_at DESC, seq DESC LIMIT ? OFFSET ?",
                                  (*params, limit, offset)).fetchall()
        return Page(total=int(total), items=[_record_from_row(row) for row in rows])

    def stats(self, *, line: Optional[str] = None, since: Optional[float] = None,
              until: Optional[float] = None) -> Stats:
        where, params = where_sql(line, since, until, None, "?")
        connection = self._connection()
        hours = connection.execute(
            "SELECT CAST(captured_at / 3600 AS INTEGER) * 3600 AS hour, count(*), "
            "sum(verdict = 'OK'), sum(verdict = 'NG'), sum(verdict = 'ERROR') "
            f"FROM records {where} GROUP BY hour ORDER BY hour", params).fetchall()
        defects = connection.execute(
            "SELECT json_extract(defect.value, '$.class_name') AS name, count(*) "
            f"FROM records, json_each(records.defects) AS defect {where} GROUP BY name ORDER BY name",
            params).fetchall()
        return Stats(hours=[HourStats(float(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))
                            for row in hours],
                     defects_per_class={str(row[0]): int(row[1]) for row in defects})

    def count(self) -> int:
        return int(self._connection().execute("SELECT count(*) FROM records").fetchone()[0])


def where_sql(line, since, until, verdict, mark: str, part_id=None) -> tuple[str, tuple]:
    clauses, params = [], []
    for column, operator, value in (("line", "=", line), ("captured_at", ">=", since), ("captured_at", "<", until),
                                    ("verdict", "=", verdict), ("part_id", "=", part_id)):
        if value is not None:
            clauses.append(f"{column} {operator} {mark}")
            params.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)


def _record_from_row(row) -> Record:
    data = dict(zip(RECORD_COLUMNS, row))
    data["defects"] = json.loads(data["defects"])
    return Record(**data)
