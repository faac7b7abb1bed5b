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
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from inspector.capture import CorruptFrame, FrameSource, ReconnectingSource, SourceEnded, SourceError, open_source
from inspector.service.audit import AuditLog
from inspector.service.config import ServiceConfig
from inspector.service.delivery import Delivery
from inspector.service.errors import ServiceError
from inspector.service.evidence import EvidenceStore
from inspector.service.frame_queue import FrameQueue
from inspector.service.inference import DetectorProcess, DetectorStartError
from inspector.service.inspection import LATEST_FRAME_MAX_SIDE, InspectionMixin, _Latest
from inspector.service.metrics import ServiceMetrics
from inspector.service.parts import PartsMixin
from inspector.service.postgres import PostgresStore
from inspector.service.records import ALARMS, RECORDS, Alarm, Journal, Record
from inspector.service.status import DAY_S, StatusMixin

__all__ = ["Service", "ServiceError", "RecordObserver", "LATEST_FRAME_MAX_SIDE", "DAY_S"]
log = logging.getLogger(__name__)
HOT_FOLDER_POLL_S = 0.1
AUDIT_FILE = "audit.sqlite3"
RecordObserver = Callable[[Record, float], None]  # (committed record, capture -> commit seconds)


class Service(InspectionMixin, PartsMixin, StatusMixin):
    """The line service. Its work is split by responsibility: judging frames (``inspection.py``), PLC trigger
    mode and traceability (``parts.py``), alarms, monitor and health (``status.py``); life cycle and capture
    are here."""

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
            from inspector.review_queue import ReviewError
            from inspector.review_queue.retention import GIB, PictureRetention
            from inspector.service.review_feed import ReviewFeed

            def gigabytes(value: Optional[float]) -> Optional[int]:
                return None if value is None else int(value * GIB)

            try:
                retention = PictureRetention(max_age_days=config.review_picture_max_age_days,
                                             max_bytes=gigabytes(config.review_picture_max_gb),
                                             hard_cap_bytes=gigabytes(config.review_picture_hard_cap_gb))
                self.review = ReviewFeed(config.data_dir, self.metrics.registry, config.line, config.review_near_band,
                                         config.review_max_pending, config.review_near_band_per_class, retention,
                                         committed=self.journal.has_record)
                self.review.check_classes(list(self.detector.manifest.class_names))
            except ReviewError as error:  # a band or limit that cannot hold: named by its setting
                raise ServiceError(f"review: {error}") from error
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
