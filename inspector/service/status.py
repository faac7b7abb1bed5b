"""Alarms, the monitor thread (spool backlog, registry following, retention) and what the API shows
(``/health``, the latest frame).

A mixin of ``Service`` (``inspector/service/service.py``).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

import cv2

from inspector.redaction import redact, redact_all
from inspector.service.delivery import Delivery
from inspector.service.records import ALARMS, RECORDS, Alarm

log = logging.getLogger("inspector.service.service")
DAY_S = 24 * 3600.0


class StatusMixin:
    """Alarms, health, the source's state, the monitor loop and retention."""

    def _set_stalled(self, error: Optional[str]) -> None:
        """/health shows a source whose reads keep failing as stalled (degraded), and one alarm says so."""
        if error is not None and self._stalled is None:
            self.raise_alarm("source_stalled", "critical", f"source {self.source.name}: reading failed ({error}); "
                             "retrying every second", error=error)
        elif error is None and self._stalled is not None:
            self.raise_alarm("source_restored", "info", f"source {self.source.name} is read again")
        self._stalled = error

    def _on_source_state(self, state: str, error: str | None) -> None:
        self.metrics.camera_up.set(1 if state == "connected" else 0)
        if state == "connected":
            if self.source.reconnects > self._reconnects_counted:
                self.metrics.reconnects.inc(self.source.reconnects - self._reconnects_counted)
                self._reconnects_counted = self.source.reconnects
            if self._camera_alarmed:
                self._camera_alarmed = False
                self.raise_alarm("camera_restored", "info", f"source {self.source.name} is delivering again "
                                 f"(reconnect {self.source.reconnects})")
        elif state in ("connecting", "reconnecting") and error and not self._camera_alarmed \
                and not self._stop_capture.is_set():
            self._camera_alarmed = True
            self.raise_alarm("camera_down", "critical", f"source {self.source.name}: {error}; retrying with "
                             "back-off", error=error)


    def raise_alarm(self, kind: str, level: str, message: str, **detail: Any) -> Alarm:
        alarm = Alarm(kind=kind, level=level, message=redact(message), line=self.line, detail=redact_all(detail))
        (log.info if level == "info" else log.warning)("ALARM %s: %s", kind, message)
        self.metrics.alarm(kind)
        try:
            self.journal.append_alarm(alarm)
        except Exception as error:  # the alarm is still logged and shown in /health
            log.error("alarm %s not stored: %s", kind, error)
        self.recent_alarms.append(alarm)
        for delivery in self.deliveries:
            if delivery.stream == ALARMS:
                delivery.notify()
        return alarm

    def _on_sink_change(self, state) -> None:
        if state.name.endswith("/alarms"):
            return  # the alarm channel itself: its records twin reports the same broker
        if state.up:
            self.raise_alarm("sink_restored", "info", f"{state.name} delivering again", sink=state.name)
        else:
            self.raise_alarm("sink_down", "warning", f"{state.name} unavailable, records kept in the local spool: "
                             f"{state.last_error}", sink=state.name, error=state.last_error)

    def _monitor_loop(self) -> None:
        last_prune = 0.0
        while not self._stop_monitor.wait(1.0):
            for delivery in self.deliveries:
                state = delivery.state
                self.metrics.sink(state.name, state.up, state.backlog)
                if delivery.stream != RECORDS:
                    continue
                if state.backlog >= self.config.spool_alarm and state.name not in self._spool_alarmed:
                    self._spool_alarmed.add(state.name)
                    self.raise_alarm("spool_backlog", "warning", f"{state.backlog} records wait in the local spool "
                                     f"for {state.name}", sink=state.name, backlog=state.backlog)
                elif state.backlog < self.config.spool_alarm // 2:
                    self._spool_alarmed.discard(state.name)
            if self.recipes is not None:  # a recipe with model registry:DIR follows its promotions and rollbacks
                try:
                    self.recipes.follow_registry()
                except Exception as error:
                    log.warning("following the model registry failed: %s", error)
            if time.monotonic() - last_prune > 60:
                last_prune = time.monotonic()
                try:
                    self.apply_retention()
                except Exception as error:
                    log.warning("pruning delivered records failed: %s", error)

    def apply_retention(self) -> int:
        """Delete local records past their time or size, never one a sink still waits for. PostgreSQL mode:
        the journal is only the spool (``spool_keep_hours``); SQLite mode: it is the record store
        (``records_keep_days``, ``records_max_bytes``; none set: kept for ever). Returns how many went."""
        sinks = [d.sink for d in self.deliveries if d.stream == RECORDS]
        if self.postgres is not None:
            return self.journal.prune_delivered(sinks, time.time() - self.config.spool_keep_hours * 3600)
        keep_days, max_bytes = self.config.records_keep_days, self.config.records_max_bytes
        if keep_days is None and max_bytes is None:
            return 0
        deleted = self.journal.retain(sinks, older_than=None if keep_days is None else time.time() - keep_days * DAY_S,
                                      max_bytes=max_bytes)
        if deleted:
            log.info("retention: %d delivered records deleted from %s", deleted, self.journal.path)
        return deleted

    # ------------------------------------------------------------------ what the API shows

    def health(self) -> dict[str, Any]:
        # One reading of the capture thread's state (before its last_error, which it sets first): read twice, a
        # change in between showed a degraded status beside a camera still "connected".
        source_state = self.source.state
        camera = {"state": "ended" if self.source_ended else source_state, "kind": self.source.kind,
                  "source": self.source.name, "reconnects": self.source.reconnects,
                  "last_error": self.source.last_error}
        sinks = [{"name": d.state.name, "up": d.state.up, "backlog": self._backlog(d), "last_error": d.state.last_error}
                 for d in self.deliveries]
        if self._stalled is not None:
            camera.update(state="stalled", last_error=self._stalled)
        camera_ok = source_state == "connected" and not self.source_ended and self._stalled is None
        ready = self.state == "running" and self.worker_alive and camera_ok
        degraded = not ready or any(d.state.up is False for d in self.deliveries) or self._evidence_error is not None
        status = self.state if self.state != "running" else ("degraded" if degraded else "ok")
        return redact_all({  # /health answers without a token: nothing in it may show a secret
            "status": status, "live": True, "ready": ready, "line": self.line,
            "camera": camera, "queue": {"depth": len(self.queue), "capacity": self.queue.capacity},
            "sinks": sinks,
            "model": {"name": self.model_name, "package_id": self.package_id, "engine": self.detector.info.engine,
                      "precision": self.detector.info.precision},
            "recent_alarms": [alarm.to_dict() for alarm in self.recent_alarms],
            "evidence": None if self.evidence is None else {
                "directory": str(self.evidence.directory), "ok": self._evidence_error is None,
                "last_error": self._evidence_error, "files": self.evidence.count},
            "uptime_s": round(time.time() - self.started_at, 3) if self.started_at else 0.0,
        })

    def _backlog(self, delivery: Delivery) -> int:
        """Entries waiting for this sink, read from the journal now: the delivery thread's own figure is
        only updated after each batch, and read 0 while freshly raised alarms were still waiting."""
        try:
            return self.journal.backlog(delivery.sink, delivery.stream)
        except Exception as error:  # the journal is busy or broken: the last figure the delivery saw
            log.warning("backlog of %s not readable: %s", delivery.state.name, error)
            return delivery.state.backlog

    def latest_jpeg(self) -> Optional[bytes]:
        """The last inspected frame with its defects drawn, as JPEG; None before the first one."""
        latest = self._latest
        if latest is None:
            return None
        cached = self._latest_jpeg
        if cached is not None and cached[0] == latest.record.record_id:
            return cached[1]
        image = latest.image
        if latest.detections is not None and len(latest.detections):
            from inspector.runtime.draw import draw_detections

            image = draw_detections(image, latest.detections)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return None
        data = encoded.tobytes()
        self._latest_jpeg = (latest.record.record_id, data)
        return data
