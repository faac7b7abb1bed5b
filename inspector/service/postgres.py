"""The shared record store in PostgreSQL, when ``--db postgresql://...`` names one: many lines write to one
table, a record at most once (``record_id`` is unique). It answers the same queries as the journal."""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Optional

from inspector.service.records import RECORD_COLUMNS, HourStats, Page, Record, Stats, StoreUnavailable, where_sql

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS inspection_records (
    id BIGSERIAL PRIMARY KEY,
    record_id TEXT NOT NULL UNIQUE,
    line TEXT NOT NULL,
    seq BIGINT NOT NULL,
    source TEXT NOT NULL,
    frame_id TEXT NOT NULL,
    frame_file TEXT,
    file_version TEXT,
    captured_at TIMESTAMPTZ NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NG', 'ERROR')),
    defects JSONB NOT NULL,
    n_defects INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    package_id TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    inference_ms DOUBLE PRECISION,
    evidence TEXT,
    error TEXT,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS inspection_records_line_time ON inspection_records (line, captured_at);
ALTER TABLE inspection_records ADD COLUMN IF NOT EXISTS part_id TEXT;
ALTER TABLE inspection_records ADD COLUMN IF NOT EXISTS recipe TEXT;
ALTER TABLE inspection_records ADD COLUMN IF NOT EXISTS recipe_version TEXT;
CREATE INDEX IF NOT EXISTS inspection_records_part_id ON inspection_records (part_id) WHERE part_id IS NOT NULL;
"""
_SCHEMA_LOCK = 7_147_001  # advisory lock: many lines may create the schema at the same moment


class PostgresStore:
    """The shared record store in PostgreSQL (psycopg 3). One connection, re-opened after a failure.

    Every method raises ``StoreUnavailable`` when the server cannot be reached or refuses.
    """

    def __init__(self, url: str, connect_timeout: float = 5.0):
        self.url = url
        self.connect_timeout = connect_timeout
        self._connection = None
        self._lock = threading.Lock()  # one connection, used by the delivery thread and the API

    def _connect(self):
        import psycopg

        if self._connection is not None and not self._connection.closed:
            return self._connection
        try:
            connection = psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout)),
                                         autocommit=False)
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                connection.execute(_POSTGRES_SCHEMA)
        except psycopg.Error as error:
            raise StoreUnavailable(f"PostgreSQL {_hide_password(self.url)}: {_first_line(error)}") from error
        self._connection = connection
        return connection

    def _run(self, work):
        import psycopg

        with self._lock:
            connection = self._connect()
            try:
                with connection.transaction():
                    return work(connection)
            except psycopg.Error as error:
                connection.close()  # a broken connection is replaced on the next call
                self._connection = None
                raise StoreUnavailable(f"PostgreSQL {_hide_password(self.url)}: {_first_line(error)}") from error

    def check(self) -> None:
        self._run(lambda connection: connection.execute("SELECT 1"))

    def insert(self, records: list[Record]) -> None:
        """Store ``records`` in one transaction, in order; a record already stored is skipped (re-delivery
        after a crash between the commit here and the cursor update in the journal)."""
        from psycopg.types.json import Jsonb

        rows = [(r.record_id, r.line, r.seq, r.source, r.frame_id, r.frame_file, r.file_version,
                 datetime.fromtimestamp(r.captured_at, timezone.utc), r.verdict, Jsonb(r.defects), len(r.defects),
                 r.model_name, r.package_id, r.latency_ms, r.inference_ms, r.evidence, r.error, r.part_id, r.recipe,
                 r.recipe_version) for r in records]

        def work(connection):
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO inspection_records (record_id, line, seq, source, frame_id, frame_file, file_version, "
                    "captured_at, verdict, defects, n_defects, model_name, package_id, latency_ms, inference_ms, "
                    "evidence, error, part_id, recipe, recipe_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (record_id) DO NOTHING", rows)

        self._run(work)

    def query(self, *, line: Optional[str] = None, since: Optional[float] = None, until: Optional[float] = None,
              verdict: Optional[str] = None, limit: int = 100, offset: int = 0, part_id: Optional[str] = None) -> Page:
        where, params = where_sql(line, _pg_time(since), _pg_time(until), verdict, "%s", part_id)
        columns = ", ".join(RECORD_COLUMNS).replace("captured_at", "extract(epoch FROM captured_at)")

        def work(connection):
            total = connection.execute(f"SELECT count(*) FROM inspection_records {where}", params).fetchone()[0]
            rows = connection.execute(f"SELECT {columns} FROM inspection_records {where} "
                                      "ORDER BY captured_at DESC, id DESC LIMIT %s OFFSET %s",
                                      (*params, limit, offset)).fetchall()
            return total, rows

        total, rows = self._run(work)
        items = []
        for row in rows:
            data = dict(zip(RECORD_COLUMNS, row))
            data["captured_at"] = float(data["captured_at"])
            items.append(Record(**data))
        return Page(total=int(total), items=items)

    def stats(self, *, line: Optional[str] = None, since: Optional[float] = None,
              until: Optional[float] = None) -> Stats:
        where, params = where_sql(line, _pg_time(since), _pg_time(until), None, "%s")

        def work(connection):
            hours = connection.execute(
                "SELECT extract(epoch FROM date_trunc('hour', captured_at AT TIME ZONE 'UTC')) AS hour, count(*), "
                "count(*) FILTER (WHERE verdict = 'OK'), count(*) FILTER (WHERE verdict = 'NG'), "
                f"count(*) FILTER (WHERE verdict = 'ERROR') FROM inspection_records {where} "
                "GROUP BY hour ORDER BY hour", params).fetchall()
            defects = connection.execute(
                "SELECT defect->>'class_name' AS name, count(*) FROM inspection_records, "
                f"jsonb_array_elements(defects) AS defect {where} GROUP BY name ORDER BY name", params).fetchall()
            return hours, defects

        hours, defects = self._run(work)
        return Stats(hours=[HourStats(float(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))
                            for row in hours],
                     defects_per_class={str(row[0]): int(row[1]) for row in defects})

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _pg_time(timestamp: Optional[float]):
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _hide_password(url: str) -> str:
    from inspector.redaction import redact

    return redact(url)
