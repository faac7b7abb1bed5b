"""The production-line service: capture -> bounded queue -> one detector -> verdict -> record -> sinks.

Threads:
- capture: reads the source (wrapped in ReconnectingSource: an unplugged camera or dropped stream is
  re-opened with back-off), puts frames into the FrameQueue (live sources drop the oldest frame when it
  is full; a hot folder waits instead);
- inference worker: hands each frame to the one Detector, which runs in a child process of its own
  (``inference.DetectorProcess``: the engines hold the GIL, and would starve the capture thread), then
  the verdict, the evidence JPEG, the record committed to the journal, the hot-folder acknowledgement,
  and the sinks are woken;
- one delivery thread per sink (PostgreSQL, MQTT records, MQTT alarms) reading the journal (the spool);
- monitor: spool backlog alarms, metrics gauges, pruning of delivered records in PostgreSQL mode.

``Service(config).start()`` runs it in-process (the CLI, tests and the benchmark all do that);
``stop(drain=True)`` stops reading, finishes every frame already queued and commits it, then stops.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import cv2
import numpy as np

from inspector.capture import (CorruptFrame, Frame, FrameSource, ReconnectingSource, SourceEnded, SourceError, open_source,
                               printable_name)
from inspector.redaction import redact, redact_all
from inspector.service.audit import AuditLog
from inspector.service.config import ServiceConfig
from inspector.service.delivery import Delivery
from inspector.service.evidence import EvidenceStore
from inspector.service.frame_queue import FrameQueue
from inspector.service.inference import DetectorCrashed, DetectorProcess, DetectorStartError, InspectionError
from inspector.service.metrics import ServiceMetrics
from inspector.service.records import ALARMS, RECORDS, Alarm, Journal, PostgresStore, Record, new_record_id

log = logging.getLogger(__name__)
HOT_FOLDER_POLL_S = 0.1
AUDIT_FILE = "audit.sqlite3"
DAY_S = 24 * 3600.0
# The latest frame is kept for /frames/latest.jpg: no more than this many pixels on its long side, so a
# large board does not hold a second full-size copy in memory (and the JPEG stays small for a screen).
LATEST_FRAME_MAX_SIDE = 1600
RecordObserver = Callable[[Record, float], None]  # (committed record, capture -> commit seconds)


class ServiceError(RuntimeError):
    """The service cannot start; the message names the setting or file at fault."""


@dataclass
class _Latest:
    image: np.ndarray  # at most LATEST_FRAME_MAX_SIDE on its long side
    detections: Any  # boxes, scores, class_ids, class_names scaled to ``image``; None when not judged
    record: Record


class Service:
    def __init__(self, config: ServiceConfig, *, source: FrameSource | None = None, detector=None):
        """Load the model, open the journal and the source: every start-up error is raised here, as
        ServiceError naming the setting. ``source``/``detector`` replace the configured ones (tests)."""
        self.config = config
        self.line = config.line
        self.metrics = ServiceMetrics(config.line)
        self._owns_detector = detector is None
        self.detector = detector if detector is not None else _load_detector(config)
        try:
            self._set_up(config, source)
        except BaseException:
            if self._owns_detector:
                self.detector.close()  # no orphaned detector process after a start-up error
            raise

    def _set_up(self, config: ServiceConfig, source: FrameSource | None) -> None:
        self.model_name = self.detector.manifest.name
        self.package_id = self.detector.manifest.package_id
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            self.journal = Journal(config.records_path)
        except OSError as error:
            raise ServiceError(f"data_dir: cannot use {config.data_dir} ({error.strerror or error})") from error
        except Exception as error:
            raise ServiceError(f"data_dir: records database {config.records_path}: {error}") from error
        try:
            self.audit = AuditLog(config.data_dir / AUDIT_FILE)  # who changed what: inspector/service/audit.py
        except Exception as error:
            raise ServiceError(f"data_dir: audit trail {config.data_dir / AUDIT_FILE}: {error}") from error
        self.postgres = PostgresStore(config.db) if config.db else None
        self.store = self.postgres or self.journal  # what the API reads
        self.evidence = None
        if config.evidence is not None:
            try:
                self.evidence = EvidenceStore(config.evidence, config.evidence_max_files, config.evidence_max_bytes)
            except OSError as error:
                raise ServiceError(f"evidence: cannot write into {config.evidence} ({error.strerror or error}); "
                                   "give a writable directory, or no evidence setting") from error

        self.review = None  # the verification queue's feed (review: true)
        if config.review:
            from inspector.service.review_feed import ReviewFeed

            try:
                self.review = ReviewFeed(config.data_dir, self.metrics.registry, config.line, config.review_near_band,
                                         config.review_max_pending)
            except Exception as error:  # OSError, sqlite3.Error: the folder or the database cannot be used
                raise ServiceError(f"review: the verification queue in {config.data_dir} cannot be used "
                                   f"({getattr(error, 'strerror', None) or error})") from error

        raw_source = source if source is not None else _open_configured_source(config)
        if self.detector.needs_template and raw_source.kind in ("camera", "stream", "video") \
                and config.template is None and getattr(raw_source, "template", None) is None:
            raise ServiceError(f"template: the model {self.model_name} compares each frame with its golden "
                               f"template, and a {raw_source.kind} source has none; set template: (file) or "
                               "INSPECTOR_TEMPLATE to the golden board image")
        self.source = ReconnectingSource(raw_source, config.reconnect_initial_s, config.reconnect_max_s,
                                         on_state=self._on_source_state)
        self.queue = FrameQueue(config.queue_size)
        self._set_up_plc(config)

        self.mqtt = None
        self.deliveries: list[Delivery] = []
        if self.postgres is not None:
            self.deliveries.append(Delivery(self.journal, "postgresql", RECORDS, self.postgres.insert,
                                            on_change=self._on_sink_change))
        if config.mqtt:
            from inspector.service.mqtt import MqttPublisher

            try:
                self.mqtt = MqttPublisher(config.mqtt, config.line, client_id=config.mqtt_client_id, ca=config.mqtt_ca,
                                          cert=config.mqtt_cert, key=config.mqtt_key)
            except (OSError, ValueError) as error:  # ssl.SSLError: a certificate or key that cannot be used
                raise ServiceError(f"mqtt_ca/mqtt_cert/mqtt_key: cannot set up TLS ({error})") from error
            self.deliveries.append(Delivery(self.journal, "mqtt", RECORDS, self.mqtt.publish,
                                            on_change=self._on_sink_change))
            self.deliveries.append(Delivery(self.journal, "mqtt", ALARMS, self.mqtt.publish,
                                            on_change=self._on_sink_change))

        self.observers: list[RecordObserver] = []
        self.started_at = 0.0
        self.state = "starting"  # "starting" | "running" | "stopping" | "stopped"
        self.source_ended = False
        self.recent_alarms: deque[Alarm] = deque(maxlen=20)
        self._latest: Optional[_Latest] = None
        self._latest_jpeg: tuple[str, bytes] | None = None
        self._ng_streak = 0
        self._spool_alarmed: set[str] = set()
        self._camera_alarmed = False
        self._stalled: Optional[str] = None  # the source's last read raised unexpectedly: why
        self._evidence_error: Optional[str] = None  # the last evidence image could not be written: why
        self._reconnects_counted = 0
        self._stop_capture = threading.Event()
        self._stop_monitor = threading.Event()
        self._capture_thread = threading.Thread(target=self._capture_loop, name="capture", daemon=True)
        self._worker_thread = threading.Thread(target=self._worker_loop, name="inference", daemon=True)
        self._monitor_thread = threading.Thread(target=self._monitor_loop, name="monitor", daemon=True)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        self.started_at = time.time()
        try:
            self.audit.compare_settings(self._audited_settings())
        except Exception:  # the trail must not stop the line; the failure is logged loudly
            log.exception("audit trail %s: the settings comparison at start-up failed", self.audit.path)
        if self.mqtt is not None:
            self.mqtt.start()
        for delivery in self.deliveries:
            delivery.start()
        self.source.open()  # one attempt; when it fails the capture thread keeps trying with back-off
        self._worker_thread.start()
        self._capture_thread.start()
        self._monitor_thread.start()
        self.state = "running"
        if self.plc_link is not None:
            self.plc_link.start()  # ServiceError when a PLC port cannot be bound (run.py then stops the rest)
        log.info("line %s: inspecting %s with %s (%s, %s) -> %s", self.line, self.source.name, self.model_name,
                 self.detector.info.engine, self.detector.info.precision, self.config.db and "PostgreSQL" or
                 self.config.records_path)

    def stop(self, drain: bool = True, flush_timeout: float = 5.0) -> None:
        """Stop reading; with ``drain`` finish and commit every frame already queued (up to
        ``drain_timeout_s``), give the sinks ``flush_timeout`` s to catch up, then close everything."""
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        if self.plc_link is not None:
            self.plc_link.stop()
        self._stop_capture.set()
        self._capture_thread.join(timeout=2.0)
        if self._capture_thread.is_alive():
            self.source.close()  # interrupts a read waiting for its next reconnect attempt
            self._capture_thread.join(timeout=5.0)
        if not drain:
            while self.queue.get(timeout=0) is not None:
                pass  # not acknowledged: a hot folder yields these files again after the restart
        self.queue.close()
        self._worker_thread.join(timeout=self.config.drain_timeout_s if drain else 5.0)
        if self._worker_thread.is_alive():
            log.warning("the queue did not drain within %.0f s; unprocessed hot-folder files are processed "
                        "after the restart", self.config.drain_timeout_s)
        self.source.close()
        if self._owns_detector and not self._worker_thread.is_alive():
            self.detector.close()
        self._stop_monitor.set()
        self._monitor_thread.join(timeout=5.0)
        for delivery in self.deliveries:
            delivery.stop(flush_timeout=flush_timeout)
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.postgres is not None:
            self.postgres.close()
        if not self._worker_thread.is_alive():
            self.journal.close()
            if self.review is not None:
                self.review.close()
        self.state = "stopped"
        log.info("line %s: stopped", self.line)

    def _audited_settings(self) -> dict[str, Any]:
        """Settings that decide verdicts or access: a change between two starts goes into the audit trail."""
        from inspector.service.auth import users_from_config

        try:
            users = sorted(f"{user.name}:{user.role}" for user in users_from_config(self.config))
        except ValueError:
            users = None  # refused by run.py before the API starts
        return {"model": f"{self.model_name} ({self.package_id})", "score_threshold": self.config.score_threshold,
                "users": users}

    @property
    def worker_alive(self) -> bool:
        return self._worker_thread.is_alive()

    # ------------------------------------------------------------------ capture thread

    def _capture_loop(self) -> None:
        if self.trigger_mode:
            from inspector.service.plc.capture import triggered_capture_loop

            return triggered_capture_loop(self)
        source = self.source
        while not self._stop_capture.is_set():
            try:
                frame = source.read()
            except SourceEnded as ended:
                log.info("%s", ended)
                self.source_ended = True
                return
            except CorruptFrame as corrupt:
                self.metrics.corrupt.inc()
                log.warning("skipped an unreadable frame: %s", corrupt)
                if not source.droppable and corrupt.frame_id is not None:
                    # A hot-folder board that cannot be read is still a board: it gets an ERROR record.
                    self._commit_unjudged_file(corrupt)
                continue
            except Exception as error:  # a bug in a source must not end capture for good: log it and go on
                log.exception("reading %s failed", source.name)
                self._set_stalled(f"{type(error).__name__}: {error}")
                self._stop_capture.wait(1.0)
                continue
            self._set_stalled(None)
            if frame is None:
                if not source.droppable:
                    self._stop_capture.wait(HOT_FOLDER_POLL_S)
                continue
            if source.droppable:
                if self.queue.put_dropping_oldest(frame) is not None:
                    self.metrics.dropped.inc()
            elif not self.queue.put_waiting(frame, self._stop_capture):
                return  # stopping: the file was not acknowledged and is read again after the restart
            self.metrics.queue_depth.set(len(self.queue))

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

    # ------------------------------------------------------------------ inference worker

    def _worker_loop(self) -> None:
        while True:
            frame = self.queue.get(timeout=0.5)
            self.metrics.queue_depth.set(len(self.queue))
            if frame is None:
                if self.queue.closed:
                    return
                continue
            try:
                self._inspect(frame)
            except Exception:  # never let one frame kill the worker; the frame stays unacknowledged
                log.exception("inspecting %s failed", frame.frame_id)

    def _inspect(self, frame: Frame) -> None:
        part = self.parts.pop(frame.frame_id, None)  # the PLC's part this frame was captured for (trigger mode)
        file_name, file_version = None, None
        if not self.source.droppable and frame.path is not None:
            file_name, file_version = printable_name(frame.path.name), _file_version(frame.path)
            if file_version is not None and self.journal.has_file(file_name, file_version):
                # Committed before a crash that came ahead of the acknowledgement: never inspect twice.
                log.info("%s was recorded before the restart; acknowledging it", file_name)
                self._ack(frame)
                return
        detections, error = None, None
        active = self.recipes.active if self.recipes is not None else None  # one read: no switch splits a frame
        detector = self.detector if active is None else active.detector
        template = frame.template if detector.needs_template else None
        if template is None and active is not None and detector.needs_template:
            template = active.recipe.template
        threshold = self.config.score_threshold if active is None or active.recipe.lowest_threshold() is None \
            else active.recipe.lowest_threshold()
        candidates, decision_threshold = None, None  # with review: every detection a review may want
        try:
            if detector.needs_template and template is None:
                raise ValueError("no golden template for this frame: name the files X_test.jpg + X_temp.jpg, "
                                 "or set template: in the configuration")
            if self.review is None:
                detections = detector.detect(frame.image, template, align=self.config.align, score_threshold=threshold)
            else:
                # Asked for near_band below the threshold, so a barely missed defect can be confirmed; the
                # record keeps only what reaches the threshold, exactly as without review.
                decision_threshold = threshold if threshold is not None else \
                    float(detector.manifest.postprocess.score_threshold)
                changes = {"unknown_changes": True} if self.config.review_unknown_changes and template is not None \
                    else {}
                lowered = max(0.0, decision_threshold - self.config.review_near_band)
                candidates = detector.detect(frame.image, template, align=self.config.align, score_threshold=lowered,
                                             **changes)
                detections = _at_least(candidates, decision_threshold)
            if active is not None:
                detections = active.recipe.keep(detections)  # per-class thresholds, ignore regions
        except DetectorCrashed as failure:
            error = f"DetectorCrashed: {failure}"
            self.raise_alarm("detector_crashed", "critical", f"the detector process died on {frame.frame_id}; "
                             "restarted, the frame is recorded as ERROR", frame_id=frame.frame_id)
        except Exception as failure:  # AlignmentError, a frame the model cannot take ...: recorded, not fatal
            error = str(failure) if isinstance(failure, InspectionError) else f"{type(failure).__name__}: {failure}"
            log.warning("%s: not judged: %s", frame.frame_id, error)
        verdict = "ERROR" if detections is None else ("NG" if len(detections) else "OK")
        record = Record(
            record_id=new_record_id(), line=self.line, source=self.source.name, frame_id=frame.frame_id,
            frame_file=file_name, file_version=file_version, captured_at=frame.captured_at, verdict=verdict,
            defects=[] if detections is None else _defects(detections), model_name=detector.manifest.name,
            package_id=detector.manifest.package_id,
            latency_ms=round((time.monotonic() - frame.captured_monotonic) * 1e3, 3),
            inference_ms=None if detections is None else round(detections.timing.total_ms, 3), error=error,
            **self._trace(part, active, self._serial_from_code(frame, part)))
        if verdict == "NG" and self.evidence is not None:
            record.evidence = self._save_evidence(frame, detections, record)
        self._commit(record)
        if part is not None:
            self.plc.result(part, record.verdict, len(record.defects))  # committed first, then shown to the PLC
        self._ack(frame)
        if candidates is not None:
            try:
                self._offer_for_review(frame, template, candidates, decision_threshold, record, detector, active)
            except Exception:  # the record is committed; the review is extra and never stops what follows
                self.review.failures.inc()
                log.exception("%s: not offered for review", frame.frame_id)
        latency = time.monotonic() - frame.captured_monotonic
        self.metrics.latency.observe(latency)
        if detections is not None:
            self.metrics.inference.observe(detections.timing.total_ms / 1e3)
        self._latest = _latest_frame(frame.image, detections, record)
        self._after_commit(record, latency)

    def _offer_for_review(self, frame: Frame, template, candidates, threshold: float, record: Record,
                          detector, active) -> None:
        """Hand the judged board to the verification queue's writer (in memory; it never blocks the line).
        A recipe's ignore regions hold nothing to review; its per-class thresholds are not the band's
        reference (``threshold`` is the lowest one the detector was asked for)."""
        ignore = [] if active is None else list(active.recipe.spec.ignore_regions)
        detections = [{"box": [float(v) for v in box], "score": float(score), "class_name": name}
                      for box, score, name in zip(candidates.boxes, candidates.scores, candidates.class_names)
                      if not any(x1 <= (box[0] + box[2]) / 2 <= x2 and y1 <= (box[1] + box[3]) / 2 <= y2
                                 for x1, y1, x2, y2 in ignore)]
        changes = [change.to_dict() for change in (getattr(candidates, "unknown_changes", None) or [])]
        self.review.offer(record.record_id, frame.frame_id, frame.image, template, detections, changes, threshold,
                          list(detector.manifest.class_names), f"{record.model_name} ({record.package_id})",
                          file=frame.path if record.file_version is not None else None,
                          file_version=record.file_version)

    def _commit(self, record: Record) -> None:
        """Append to the journal; retried until it works (a full disk is an alarm, not a lost record)."""
        if record.error is not None:
            record.error = redact(record.error)  # errors quote URLs and settings; records leave the box
        wait = 0.5
        alarmed = False
        while True:
            try:
                self.journal.append(record)
                return
            except Exception as error:
                if not alarmed:
                    alarmed = True
                    log.error("cannot commit record %s: %s", record.record_id, error)
                    self.raise_alarm("storage_error", "critical", f"records database {self.journal.path}: {error}")
                time.sleep(wait)
                wait = min(wait * 2, 10.0)

    def _ack(self, frame: Frame) -> None:
        if self.source.droppable:
            return
        try:
            self.source.ack(frame)
        except (SourceError, ValueError) as error:
            # The record is committed; after a restart the file comes back and is recognised as done.
            log.warning("could not acknowledge %s: %s", frame.frame_id, error)

    def _commit_unjudged_file(self, corrupt: CorruptFrame, part=None) -> None:
        record = Record(record_id=new_record_id(), line=self.line, source=self.source.name,
                        frame_id=corrupt.frame_id, frame_file=corrupt.frame_id, file_version=None,
                        captured_at=time.time(), verdict="ERROR", defects=[], model_name=self.model_name,
                        package_id=self.package_id, latency_ms=0.0, error=f"CorruptFrame: {corrupt}",
                        **self._trace(part))
        self._commit(record)
        if part is not None:
            self.plc.result(part, "ERROR", 0)
        self._after_commit(record, 0.0)

    # ------------------------------------------------------------------ PLC trigger mode (plc/)

    def _set_up_plc(self, config: ServiceConfig) -> None:
        """With a PLC front end configured (OPC UA, Modbus TCP) frames are captured on trigger only."""
        from inspector.service.plc import PlcLink

        self.recipe_name: Optional[str] = None
        self.recipe_version: Optional[str] = None
        self.triggers: queue.Queue = queue.Queue()
        self.parts: dict[str, Any] = {}  # frame_id -> PartRequest, between capture and inspection
        self.plc_link = PlcLink.from_config(self, config)
        self.plc = None if self.plc_link is None else self.plc_link.handshake
        self.trigger_mode = self.plc_link is not None
        self.recipes = None
        if config.recipes is not None:
            from inspector.service.recipes import STATE_FILE, RecipeError, RecipeManager

            self.recipes = RecipeManager(self, config.recipes, config.data_dir / STATE_FILE)
            try:
                self.recipes.load_initial(config.recipe)
            except RecipeError as error:
                raise ServiceError(f"recipe: {error}") from error

    def request_inspection(self, request) -> None:
        """An accepted PLC trigger: the capture thread takes the next frame for this part."""
        self.triggers.put(request)

    def commit_unjudged_part(self, request, error: str) -> Record:
        """A triggered part that got no frame: an ERROR record with its PartId, and ERROR to the PLC."""
        record = Record(record_id=new_record_id(), line=self.line, source=self.source.name,
                        frame_id=f"part:{request.part_id}:{request.number}", frame_file=None, file_version=None,
                        captured_at=time.time(), verdict="ERROR", defects=[], model_name=self.model_name,
                        package_id=self.package_id,
                        latency_ms=round((time.monotonic() - request.triggered_monotonic) * 1e3, 3), error=error,
                        **self._trace(request))
        self._commit(record)
        self.plc.result(request, "ERROR", 0)
        self._after_commit(record, 0.0)
        return record

    def _trace(self, part, active=None, serial: Optional[str] = None) -> dict[str, Any]:
        """Traceability fields of a record: the PLC's PartId (else the serial read from the board's code) and
        the recipe the frame was judged with."""
        name, version = (self.recipe_name, self.recipe_version) if active is None else \
            (active.recipe.name, active.recipe.version)
        part_id = None if part is None else (part.part_id or None)
        return {"part_id": part_id or serial, "recipe": name, "recipe_version": version}

    def _serial_from_code(self, frame: Frame, part) -> Optional[str]:
        """With ``read_serial_code``: the board's serial from a QR code in the frame (OpenCV's detector),
        when the PLC gave none. None when off, when the PLC named the part, or when no code is readable."""
        if not self.config.read_serial_code or (part is not None and part.part_id):
            return None
        try:
            text, _, _ = cv2.QRCodeDetector().detectAndDecode(frame.image)
        except cv2.error as error:
            log.warning("%s: QR code not read: %s", frame.frame_id, error)
            return None
        from inspector.service.plc.handshake import _clean_part_id

        return _clean_part_id(text) or None

    def _after_commit(self, record: Record, latency: float) -> None:
        self.metrics.frame(record.verdict)
        for delivery in self.deliveries:
            if delivery.stream == RECORDS:
                delivery.notify()
        if record.verdict == "NG":
            self._ng_streak += 1
            if self._ng_streak == self.config.ng_streak_alarm:
                self.raise_alarm("ng_streak", "warning", f"{self._ng_streak} NG boards in a row on line {self.line} "
                                 "(process drift? dirty template?)", streak=self._ng_streak,
                                 last_record_id=record.record_id)
        elif record.verdict == "OK":
            self._ng_streak = 0
        for observer in self.observers:
            observer(record, latency)

    def _save_evidence(self, frame: Frame, detections, record: Record) -> Optional[str]:
        from inspector.runtime.draw import draw_detections

        try:
            name = self.evidence.save(draw_detections(frame.image, detections), record.captured_at, record.record_id)
        except OSError as error:
            # The record is kept (without its image); the loss is counted, alarmed once and shown in /health.
            message = f"{self.evidence.directory}: {error.strerror or error}"
            log.warning("evidence for %s not saved: %s", record.record_id, message)
            self.metrics.evidence_failures.inc()
            if self._evidence_error is None:
                self.raise_alarm("evidence_error", "critical", f"NG evidence images cannot be written ({message}); "
                                 "records are kept without their image", error=message)
            self._evidence_error = message
            return None
        if self._evidence_error is not None:
            self._evidence_error = None
            self.raise_alarm("evidence_restored", "info", f"NG evidence images are written again to "
                             f"{self.evidence.directory}")
        return name

    # ------------------------------------------------------------------ alarms, sinks, monitor

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
        camera = {"state": "ended" if self.source_ended else self.source.state, "kind": self.source.kind,
                  "source": self.source.name, "reconnects": self.source.reconnects,
                  "last_error": self.source.last_error}
        sinks = [{"name": d.state.name, "up": d.state.up, "backlog": self._backlog(d), "last_error": d.state.last_error}
                 for d in self.deliveries]
        if self._stalled is not None:
            camera.update(state="stalled", last_error=self._stalled)
        camera_ok = self.source.state == "connected" and not self.source_ended and self._stalled is None
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


def _latest_frame(image: np.ndarray, detections, record: Record) -> _Latest:
    """What /frames/latest.jpg shows, scaled down to LATEST_FRAME_MAX_SIDE (boxes with it): a bounded copy."""
    scale = min(1.0, LATEST_FRAME_MAX_SIDE / max(image.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if detections is not None:
            detections = SimpleNamespace(boxes=np.asarray(detections.boxes) * scale, scores=detections.scores,
                                         class_ids=detections.class_ids, class_names=detections.class_names)
    return _Latest(image, detections, record)


def _at_least(detections, threshold: float):
    """The detections scoring ``threshold`` or more (same type back): what the record and verdict see."""
    from dataclasses import replace

    keep = np.flatnonzero(np.asarray(detections.scores, np.float64) >= threshold)
    return replace(detections, boxes=detections.boxes[keep], scores=detections.scores[keep],
                   class_ids=detections.class_ids[keep], class_names=[detections.class_names[i] for i in keep],
                   unknown_changes=None)


def _load_detector(config: ServiceConfig) -> DetectorProcess:
    try:
        return DetectorProcess(config.model, backend=config.backend, threads=config.threads)
    except DetectorStartError as error:
        where = f"model {config.model}" if config.model is not None else "model (the shipped default package)"
        raise ServiceError(f"{where}: {error}") from error


def _open_configured_source(config: ServiceConfig) -> FrameSource:
    try:
        fps = config.fps
        if fps is None and config.source == "demo" and (config.opcua or config.modbus):
            fps = 1000.0  # triggered: the PLC sets the pace, the demo only hands out the next board
        return open_source(config.source, fps=fps, loop=True, state_dir=config.source_state_dir,
                           template=config.template, max_image_pixels=config.max_image_pixels,
                           max_file_bytes=config.max_file_bytes, abandon_seconds=config.incomplete_file_timeout_s)
    except SourceError as error:
        raise ServiceError(f"source: {error}") from error


def _defects(detections) -> list[dict[str, Any]]:
    return [{"class_name": name, "class_id": int(class_id), "score": round(float(score), 4),
             "box": [round(float(v), 1) for v in box]}
            for box, score, class_id, name in zip(detections.boxes, detections.scores, detections.class_ids,
                                                  detections.class_names)]


def _file_version(path: Path) -> Optional[str]:
    """Size and modification time: the hot folder's own identity of one version of a file."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"
