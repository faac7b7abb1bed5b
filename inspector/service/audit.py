"""The audit trail: who changed what, when, from which value to which, kept durably and readable by admins.

Entries are appended to ``<data_dir>/audit.sqlite3`` (WAL, fsync on commit: an entry survives ``kill -9``
and power loss), never updated or deleted by the service, and logged (so journald/syslog forwarding gets
them too). Three ways in:

- every HTTP request that changes something (not GET/HEAD/OPTIONS) is recorded by the API's middleware:
  the user, the method and path, the request body as the new value, the answer's status; an endpoint that
  knows the value it replaces puts it in ``request.state.audit_old`` (and a better target/new value in
  ``request.state.audit_target`` / ``audit_new``);
- code that changes a setting outside HTTP (the GUI, a PLC recipe switch) calls ``AuditLog.record``;
- at start-up, settings that decide verdicts (model, score threshold, users and roles) are compared with
  the last start's, and each difference is recorded with who = "configuration".
"""
from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from inspector.redaction import redact

log = logging.getLogger(__name__)
MAX_VALUE_CHARS = 4000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    role TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    old TEXT,
    new TEXT,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS settings_snapshot (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    who: str
    role: Optional[str]
    action: str
    target: str
    old: Optional[str]
    new: Optional[str]
    outcome: Optional[str]

    def to_dict(self) -> dict[str, Any]:
        from inspector.service.records import iso

        return {**asdict(self), "at": iso(self.at)}


class AuditLog:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def record(self, who: str, action: str, target: str, old: Any = None, new: Any = None, *,
               role: Optional[str] = None, outcome: Optional[str] = None) -> None:
        """Append one entry durably (values are stored as text, credentials redacted, at most 4,000 chars)."""
        entry = (time.time(), who, role, action, target, _text(old), _text(new), outcome)
        with self._lock:
            self._db.execute("INSERT INTO audit (at, who, role, action, target, old, new, outcome) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", entry)
        log.info("AUDIT %s (%s) %s %s: %s -> %s [%s]", who, role or "-", action, target, entry[5], entry[6],
                 outcome or "-")

    def entries(self, limit: int = 100, offset: int = 0) -> tuple[int, list[AuditEntry]]:
        """(total, entries newest first)."""
        with self._lock:
            total = self._db.execute("SELECT count(*) FROM audit").fetchone()[0]
            rows = self._db.execute("SELECT seq, at, who, role, action, target, old, new, outcome FROM audit "
                                    "ORDER BY seq DESC LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return total, [AuditEntry(*row) for row in rows]

    def export_csv(self) -> str:
        """Every entry, oldest first, as CSV (for a quality system or a spreadsheet)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, at, who, role, action, target, old, new, outcome FROM audit "
                                    "ORDER BY seq").fetchall()
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["seq", "at", "who", "role", "action", "target", "old", "new", "outcome"])
        for row in rows:
            writer.writerow([AuditEntry(*row).to_dict()[name] for name in
                             ("seq", "at", "who", "role", "action", "target", "old", "new", "outcome")])
        return out.getvalue()

    def compare_settings(self, settings: dict[str, Any]) -> None:
        """Record each setting that differs from the last start's (who: "configuration"), then remember these."""
        with self._lock:
            before = dict(self._db.execute("SELECT key, value FROM settings_snapshot").fetchall())
        for key, value in settings.items():
            text = _text(json.dumps(value, sort_keys=True, default=str))  # "null" for None: always a value
            if key in before and before[key] != text:
                self.record("configuration", "change setting at start-up", key, before[key], text)
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO settings_snapshot (key, value) VALUES (?, ?)", (key, text))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = redact(text)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"
