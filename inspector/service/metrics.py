"""The service's Prometheus metrics (prometheus-client), in a registry of its own per service instance."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Capture -> record committed, in seconds: from a fast model on a fast box to a slow one falling behind.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class ServiceMetrics:
    def __init__(self, line: str):
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"line": line}
        r = self.registry
        self.frames = Counter("inspector_frames_total", "Frames inspected and recorded, by verdict",
                              ["line", "verdict"], registry=r)
        self.dropped = Counter("inspector_frames_dropped_total", "Frames dropped because inference fell behind "
                               "(the oldest waiting frame is dropped; never for hot folders)", ["line"], registry=r)
        self.corrupt = Counter("inspector_frames_corrupt_total", "Unreadable frames or files skipped", ["line"],
                               registry=r)
        self.reconnects = Counter("inspector_camera_reconnects_total", "Times the source was re-opened after a "
                                  "failure", ["line"], registry=r)
        self.latency = Histogram("inspector_latency_seconds", "Capture to record committed", ["line"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("inspector_inference_seconds", "Detector time per frame (pre-processing, "
                                   "network, NMS)", ["line"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("inspector_queue_depth", "Frames waiting for inference", ["line"], registry=r)
        self.camera_up = Gauge("inspector_camera_up", "1 while the source delivers frames", ["line"], registry=r)
        self.spool_backlog = Gauge("inspector_spool_backlog", "Entries waiting in the local spool for a sink",
                                   ["line", "sink"], registry=r)
        self.sink_up = Gauge("inspector_sink_up", "1 while the sink accepts deliveries", ["line", "sink"], registry=r)
        self.evidence_failures = Counter("inspector_evidence_failures_total", "NG evidence images that could not be "
                                         "written (the record is kept, without its image)", ["line"], registry=r)
        self.alarms = Counter("inspector_alarms_total", "Alarms raised, by kind", ["line", "kind"], registry=r)
        self._line = line
        for verdict in ("OK", "NG", "ERROR"):
            self.frames.labels(line=line, verdict=verdict)  # exported as 0 from the start
        self.dropped = self.dropped.labels(**labels)
        self.corrupt = self.corrupt.labels(**labels)
        self.evidence_failures = self.evidence_failures.labels(**labels)
        self.reconnects = self.reconnects.labels(**labels)
        self.latency = self.latency.labels(**labels)
        self.inference = self.inference.labels(**labels)
        self.queue_depth = self.queue_depth.labels(**labels)
        self.camera_up = self.camera_up.labels(**labels)

    def frame(self, verdict: str) -> None:
        self.frames.labels(line=self._line, verdict=verdict).inc()

    def sink(self, name: str, up: bool | None, backlog: int) -> None:
        self.spool_backlog.labels(line=self._line, sink=name).set(backlog)
        self.sink_up.labels(line=self._line, sink=name).set(1 if up else 0)

    def alarm(self, kind: str) -> None:
        self.alarms.labels(line=self._line, kind=kind).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
