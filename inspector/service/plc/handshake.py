"""The one PLC handshake, shared by the OPC UA and the Modbus TCP front ends.

A PLC drives a reject gate: it must know, for each board, when the station is ready, when a verdict is
there, and that the verdict belongs to the board it asked about. The handshake is the usual line protocol
(LandingEdge, MERLIC, Cognex: Trigger -> Busy -> Result -> Ack):

    state   READY --Trigger--> BUSY --result--> RESULT --Ack--> READY
    Busy         0               1                0              0
    ResultValid  0               0                1              0

- **Trigger** (PLC writes 1, the service clears it again as soon as it has read it: a self-clearing
  command, so no edge is missed or counted twice). Accepted in READY only: the PartId written before it is
  latched, Verdict/DefectCount are cleared, Busy goes 1 and the next frame is captured and judged.
- **Trigger while not READY** (BUSY, or RESULT before the Ack): refused. The part in progress goes on
  untouched, no record is written for the refused trigger, ``TriggersRejected`` counts up and an alarm
  ``plc_trigger_rejected`` is raised: the PLC should treat that board as not inspected.
- **Result**: Verdict (``OK``/``NG``/``ERROR``) and DefectCount are written first, then ResultValid 1, then
  Busy 0. The record committed to the journal carries the same PartId (it is committed before the PLC sees
  ResultValid, so every verdict the PLC saw is in the records).
- **Ack** (PLC writes 1, self-clearing like Trigger): in RESULT, ResultValid goes 0 and the station is
  READY. An Ack in any other state is ignored (logged).
- **Missing Ack**: ``ack_timeout_s`` after ResultValid the station clears ResultValid by itself, raises
  ``plc_ack_missing`` and is READY again; the line never hangs on a PLC that forgot to acknowledge.
- **Capture timeout**: no frame within the capture timeout -> the part is recorded and reported as
  ``ERROR`` (``CaptureTimeout``) with alarm ``capture_timeout`` (see plc/capture.py).
- **Result timeout** (a detector that hangs): ``result_timeout_s`` after the trigger the PLC gets ``ERROR``
  and alarm ``plc_result_timeout``; a verdict that comes later is still recorded, but not shown to the PLC.
- **Heartbeat** counts up once a second while the service runs: a PLC that sees it stand still knows the
  station is gone.

Front ends call ``trigger``/``ack`` and listen to ``Outputs`` snapshots; the service calls ``result``.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

log = logging.getLogger(__name__)

READY, BUSY, RESULT = "READY", "BUSY", "RESULT"
VERDICT_CODES = {"": 0, "OK": 1, "NG": 2, "ERROR": 3}  # Modbus: the verdict as a number
PART_ID_MAX = 64


@dataclass
class PartRequest:
    """One accepted trigger: which board, when, and where its verdict goes."""

    part_id: str
    triggered_monotonic: float
    number: int  # 1, 2, 3 ... per service run
    answered: bool = False


@dataclass(frozen=True)
class Outputs:
    """What the PLC reads. ``part_id`` is the id the current/last result belongs to."""

    state: str = READY
    part_id: str = ""
    busy: bool = False
    result_valid: bool = False
    verdict: str = ""
    defect_count: int = 0
    recipe: str = ""
    recipe_version: str = ""
    heartbeat: int = 0
    triggers_rejected: int = 0
    alarm: str = ""
    recipe_status: str = ""  # "" | "accepted" | "refused: <reason>"

    @property
    def ready(self) -> bool:
        return self.state == READY


Listener = Callable[[Outputs], None]


@dataclass
class HandshakeTimings:
    ack_timeout_s: float = 10.0
    result_timeout_s: float = 30.0
    heartbeat_s: float = 1.0


class Handshake:
    """The state machine. Thread-safe: front ends call from their event loops, the service from its worker.

    ``inspect(request)`` is called (under no lock) for every accepted trigger and must not block;
    ``alarm(kind, level, message, **detail)`` raises a service alarm. Listeners are called with every new
    ``Outputs`` in order, under the handshake's lock: they must only hand the values on (no blocking).
    """

    def __init__(self, inspect: Callable[[PartRequest], None], alarm: Callable[..., object],
                 timings: HandshakeTimings | None = None):
        self._inspect = inspect
        self._alarm = alarm
        self.timings = timings or HandshakeTimings()
        self._lock = threading.RLock()
        self._outputs = Outputs()
        self._listeners: list[Listener] = []
        self._current: Optional[PartRequest] = None
        self._state_since = time.monotonic()
        self._numbers = 0
        self._between_parts: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick_loop, name="plc-handshake", daemon=True)

    # ------------------------------------------------------------------ life cycle, listeners

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)
            listener(self._outputs)

    @property
    def outputs(self) -> Outputs:
        return self._outputs

    @property
    def state(self) -> str:
        return self._outputs.state

    def _publish(self, **changes) -> None:
        """Under the lock: the new outputs go to every listener, in order."""
        if "state" in changes:
            self._state_since = time.monotonic()
        self._outputs = replace(self._outputs, **changes)
        for listener in self._listeners:
            try:
                listener(self._outputs)
            except Exception:  # a broken front end must not stop the other one, nor the handshake
                log.exception("PLC front end listener failed")

    # ------------------------------------------------------------------ PLC inputs

    def trigger(self, part_id: str) -> bool:
        """The PLC asks for one inspection of board ``part_id``. Returns whether it was accepted."""
        part_id = _clean_part_id(part_id)
        with self._lock:
            if self._outputs.state != READY:
                rejected = self._outputs.triggers_rejected + 1
                message = (f"trigger for part {part_id or '(no PartId)'} refused: the station is "
                           f"{self._outputs.state} with part {self._outputs.part_id or '(no PartId)'}; "
                           "wait for ResultValid and acknowledge it before the next trigger")
                self._publish(triggers_rejected=rejected, alarm=message)
                refused = True
            else:
                self._numbers += 1
                request = PartRequest(part_id=part_id, triggered_monotonic=time.monotonic(), number=self._numbers)
                self._current = request
                self._publish(state=BUSY, part_id=part_id, verdict="", defect_count=0, busy=True,
                              result_valid=False)
                refused = False
        if refused:
            self._alarm("plc_trigger_rejected", "warning", message, part_id=part_id)
            return False
        self._inspect(request)
        return True

    def ack(self) -> None:
        with self._lock:
            if self._outputs.state != RESULT:
                log.info("PLC Ack ignored: the station is %s, no result waits for an acknowledgement",
                         self._outputs.state)
                return
            self._publish(state=READY, result_valid=False)
            self._run_between_parts()

    # ------------------------------------------------------------------ from the service

    def result(self, request: PartRequest, verdict: str, defect_count: int) -> bool:
        """The verdict of ``request``'s board (its record is committed). False when it came too late: the
        PLC was already told ERROR by the result timeout."""
        with self._lock:
            if request is not self._current or request.answered:
                log.warning("late verdict %s for part %s (trigger %d) not shown to the PLC: it was answered ERROR "
                            "on the result timeout", verdict, request.part_id, request.number)
                return False
            request.answered = True
            self._publish(state=RESULT, verdict=verdict, defect_count=int(defect_count), result_valid=True,
                          busy=False)
            return True

    def set_recipe(self, name: str, version: str) -> None:
        with self._lock:
            self._publish(recipe=name, recipe_version=version)

    def set_recipe_status(self, status: str) -> None:
        with self._lock:
            self._publish(recipe_status=status)

    def between_parts(self, action: Callable[[], None]) -> None:
        """Run ``action`` now if no part is in progress, else right after the current part's Ack (or Ack
        timeout): a recipe switch never lands in the middle of a part."""
        with self._lock:
            if self._outputs.state == READY:
                action()
            else:
                self._between_parts.append(action)

    def _run_between_parts(self) -> None:
        actions, self._between_parts = self._between_parts, []
        for action in actions:
            try:
                action()
            except Exception:
                log.exception("deferred action between parts failed")

    # ------------------------------------------------------------------ timeouts and heartbeat

    def _tick_loop(self) -> None:
        next_beat = time.monotonic() + self.timings.heartbeat_s
        while not self._stop.wait(0.05):
            now = time.monotonic()
            alarms = []
            with self._lock:
                if now >= next_beat:
                    next_beat += self.timings.heartbeat_s
                    self._publish(heartbeat=(self._outputs.heartbeat + 1) & 0xFFFFFFFF)
                waited = now - self._state_since
                outputs = self._outputs
                if outputs.state == RESULT and waited > self.timings.ack_timeout_s:
                    message = (f"no Ack from the PLC for part {outputs.part_id or '(no PartId)'} within "
                               f"{self.timings.ack_timeout_s:g} s; ResultValid cleared, the station is READY")
                    self._publish(state=READY, result_valid=False, alarm=message)
                    alarms.append(("plc_ack_missing", "warning", message, outputs.part_id))
                    self._run_between_parts()
                elif outputs.state == BUSY and waited > self.timings.result_timeout_s and self._current is not None:
                    self._current.answered = True
                    message = (f"no verdict for part {outputs.part_id or '(no PartId)'} within "
                               f"{self.timings.result_timeout_s:g} s; reported ERROR")
                    self._publish(state=RESULT, verdict="ERROR", defect_count=0, result_valid=True, busy=False,
                                  alarm=message)
                    alarms.append(("plc_result_timeout", "critical", message, outputs.part_id))
            for kind, level, message, part_id in alarms:
                self._alarm(kind, level, message, part_id=part_id)


def _clean_part_id(part_id) -> str:
    """A PartId as it goes into records: printable, at most PART_ID_MAX characters, no NULs (Modbus pads)."""
    text = "" if part_id is None else str(part_id)
    text = text.replace("\x00", "").strip()
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text[:PART_ID_MAX]
