"""Delivery from the journal (the durable spool) to one sink, in journal order, nothing skipped.

One ``Delivery`` thread per sink and stream (PostgreSQL/records, MQTT/records, MQTT/alarms). It reads the
oldest entries the sink has not had, hands them over, and only then moves the sink's cursor in the journal.
While the sink is down the entries simply wait in the journal; the thread retries with back-off and
reports the sink's state so the service can raise an alarm and show it in /health.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from inspector.service.mqtt import BrokerUnavailable
from inspector.service.records import Journal, StoreUnavailable

log = logging.getLogger(__name__)
SINK_ERRORS = (BrokerUnavailable, StoreUnavailable)


@dataclass
class SinkState:
    name: str  # "postgresql/records", "mqtt/records", "mqtt/alarms"
    up: bool | None = None  # None: nothing tried yet
    last_error: str = ""
    delivered: int = 0
    backlog: int = 0
    since: float = 0.0  # when ``up`` last changed


class Delivery:
    """Moves ``stream`` entries of ``journal`` to ``deliver`` (a callable that raises one of SINK_ERRORS)."""

    def __init__(self, journal: Journal, sink: str, stream: str, deliver: Callable[[list], None], *,
                 on_change: Callable[[SinkState], None] | None = None, batch: int = 100,
                 initial_backoff: float = 0.5, max_backoff: float = 5.0):
        self.journal = journal
        self.sink = sink
        self.stream = stream
        self.deliver = deliver
        self.on_change = on_change
        self.batch = batch
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.state = SinkState(name=f"{sink}/{stream}")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"deliver-{sink}-{stream}", daemon=True)
        journal.start_cursor(sink, stream)
        self.state.backlog = journal.backlog(sink, stream)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Something new is in the journal."""
        self._wake.set()

    def stop(self, flush_timeout: float = 0.0) -> None:
        """Stop, first trying for up to ``flush_timeout`` s to deliver what waits (what cannot be delivered
        stays in the journal for the next start)."""
        if flush_timeout > 0 and self._thread.is_alive():
            deadline = time.monotonic() + flush_timeout
            self._wake.set()
            while time.monotonic() < deadline and not (self._idle.is_set() and self.state.backlog == 0):
                if self.state.up is False:
                    break  # the sink is down: waiting would not help
                time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        backoff = self.initial_backoff
        while not self._stop.is_set():
            self._wake.clear()
            items = self.journal.pending(self.sink, self.stream, self.batch)
            if not items:
                self.state.backlog = 0
                self._idle.set()
                self._wake.wait(timeout=1.0)
                continue
            self._idle.clear()
            try:
                self.deliver(items)
            except SINK_ERRORS as error:
                self._set_up(False, str(error))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                self.state.backlog = self.journal.backlog(self.sink, self.stream)
                continue
            except Exception as error:  # a bug or an unexpected library error: keep the service alive, keep the data
                log.exception("delivery to %s failed unexpectedly", self.state.name)
                self._set_up(False, f"{type(error).__name__}: {error}")
                self._stop.wait(self.max_backoff)
                continue
            self.journal.advance(self.sink, self.stream, items[-1].seq)
            self.state.delivered += len(items)
            self.state.backlog = self.journal.backlog(self.sink, self.stream)
            backoff = self.initial_backoff
            self._set_up(True, "")

    def _set_up(self, up: bool, error: str) -> None:
        previous = self.state.up
        self.state.up = up
        self.state.last_error = error
        if previous is not up:
            self.state.since = time.time()
            (log.info if up else log.warning)("%s: %s", self.state.name, "delivering" if up else f"down: {error}")
            if self.on_change is not None and (previous is not None or not up):
                self.on_change(self.state)  # down, or back after being down (not the first success)
