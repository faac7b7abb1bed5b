"""ReconnectingSource: keeps a live source going through unplugged cameras and dropped streams."""
from __future__ import annotations

import threading
import time
from typing import Callable

from inspector.capture.base import CorruptFrame, Frame, FrameSource, SourceEnded, SourceError

StateCallback = Callable[[str, "str | None"], None]


class ReconnectingSource(FrameSource):
    """Wraps a FrameSource; when it fails, closes it and reopens it with exponential back-off.

    ``state`` is "connecting" (first open not yet done), "connected", "reconnecting" or "closed";
    ``reconnects`` counts the successful reopenings after a failure, ``last_error`` is the latest failure.
    ``on_state(state, error)`` is called on every change of state and after every failed attempt (error is
    None when connected or closed); it runs on the thread that noticed the change (the reader's, mostly).

    ack() never raises SourceError either: an acknowledgement the failed source cannot take (a hot folder
    whose share dropped) is kept and handed over once the source is open again.

    read() never raises SourceError for a failed source: it returns None while the source is down, each
    call waiting at most until the next attempt is due (so a consumer loop does not spin). The back-off
    starts at ``initial_backoff`` seconds and doubles up to ``max_backoff``; it resets once a frame comes
    through again. CorruptFrame (one bad frame) and SourceEnded (a video that played to its end) pass through.
    close(), from any thread, ends a waiting read() at once.
    """

    def __init__(self, source: FrameSource, initial_backoff: float = 0.5, max_backoff: float = 30.0,
                 on_state: StateCallback | None = None):
        if not 0 < initial_backoff <= max_backoff:
            raise ValueError(f"need 0 < initial_backoff <= max_backoff, got {initial_backoff}, {max_backoff}")
        self.source = source
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.on_state = on_state
        self.state = "connecting"
        self.reconnects = 0
        self.last_error: str | None = None
        self.backoff = initial_backoff  # the wait before the next attempt
        self._next_attempt = 0.0  # time.monotonic() when the next open() is due
        self._has_connected = False
        self._pending_acks: list[Frame] = []  # acks the source could not take while it was down
        self._closed = threading.Event()
        self._source_lock = threading.Lock()  # open/read/close of the wrapped source, never held while waiting

    @property
    def spec(self) -> str:
        return self.source.spec

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def droppable(self) -> bool:
        return self.source.droppable

    @property
    def name(self) -> str:
        return self.source.name

    def open(self) -> None:
        """Try to open the source once; if that fails, read() keeps trying (a camera plugged in later works)."""
        self._closed.clear()
        self._set_state("connecting", None)
        self._next_attempt = time.monotonic()
        self.backoff = self.initial_backoff
        self._attempt()

    def read(self) -> Frame | None:
        if self._closed.is_set():
            return None
        if self.state != "connected":
            delay = self._next_attempt - time.monotonic()
            if delay > 0 and self._closed.wait(delay):
                return None
            if not self._attempt():
                return None
        try:
            with self._source_lock:
                if self._closed.is_set():
                    return None
                frame = self.source.read()
        except (CorruptFrame, SourceEnded):
            raise
        except SourceError as error:
            self._failed(error, "reconnecting")
            return None
        if frame is not None:
            self.backoff = self.initial_backoff  # the source works again: the next outage starts from scratch
        return frame

    def ack(self, frame: Frame) -> None:
        failure = None
        with self._source_lock:
            if self.state == "connected":
                try:
                    self.source.ack(frame)
                    return
                except SourceError as error:  # e.g. the ledger's disk went away: reopen the source
                    failure = error
            self._pending_acks.append(frame)
        if failure is not None:
            self._failed(failure, "reconnecting")

    @property
    def pending_acks(self) -> int:
        """Acknowledgements waiting for the source to come back."""
        return len(self._pending_acks)

    def close(self) -> None:
        self._closed.set()  # first: a read() waiting for its next attempt returns now
        with self._source_lock:
            self.source.close()
        self._set_state("closed", None)

    def _attempt(self) -> bool:
        """One open() of the wrapped source; on failure schedules the next one."""
        with self._source_lock:
            if self._closed.is_set():
                return False
            try:
                self.source.open()
            except SourceError as error:
                failure = error
            else:
                failure = None
        if failure is not None:
            self._failed(failure, "reconnecting" if self._has_connected else "connecting")
            return False
        if self._has_connected:
            self.reconnects += 1
        self._has_connected = True
        self._set_state("connected", None)
        return self._flush_pending_acks()

    def _flush_pending_acks(self) -> bool:
        """Hand over the acks kept while the source was down; False when it failed again meanwhile."""
        while self._pending_acks:
            try:
                with self._source_lock:
                    self.source.ack(self._pending_acks[0])
            except SourceError as error:
                self._failed(error, "reconnecting")
                return False
            self._pending_acks.pop(0)
        return True

    def _failed(self, error: SourceError, state: str) -> None:
        """Close the failed source and schedule the next attempt, ``backoff`` seconds away (then double it)."""
        with self._source_lock:
            try:
                self.source.close()
            except Exception:  # noqa: BLE001 -- a broken source may fail to close too; we reopen it anyway
                pass
        self.last_error = str(error)
        self._next_attempt = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, self.max_backoff)
        self._set_state(state, self.last_error, always=True)

    def _set_state(self, state: str, error: str | None, always: bool = False) -> None:
        if state == self.state and not always:
            return
        self.state = state
        if self.on_state is not None:
            self.on_state(state, error)
