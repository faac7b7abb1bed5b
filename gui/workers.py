"""The threads behind the window: capture, inference, evidence. The GUI thread only shows results.

    CaptureThread --FrameSlot (latest frame wins)--> InferenceThread --queue--> EvidenceThread
         |                                               |                          |
    source state (banner)                      Inspection (signal)       saved / failed (signal)

- Capture reads the source through ``ReconnectingSource`` (back-off reconnects) and puts each frame
  into a one-frame slot. A live source's frame that the model has not taken yet is replaced by the
  newer one and counted as dropped: a slow model shows fewer frames, never older ones. A hot folder's
  frames are never dropped: capture waits for the slot instead.
- Inference owns the one ``Detector`` (engines are not thread-safe) and loads models itself, so a load
  never blocks the window; a package that fails to load leaves the previous model running.
- Evidence writes the NG frames and the inspection record, then acknowledges hot-folder files: a file
  counts as done only once its result is on disk.

Qt signals carry results to the GUI thread (queued across threads).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QThread, Signal

from gui.evidence import EvidenceStore
from gui.session import NG, Inspection, Thresholds
from inspector.capture import (CorruptFrame, Frame, FrameSource, ReconnectingSource, SourceEnded, SourceError,
                               open_source)
from inspector.runtime import AlignmentError, BackendError, Detector, PackageError

IDLE_POLL_S = 0.005  # how long capture sleeps when the source has nothing ready
OVERLAY_RGBA = (0, 200, 255, 200)  # template edges over the frame: cyan, visible on copper and on substrate


class FrameSlot:
    """Hands frames from capture to inference; the newest frame wins.

    ``put`` replaces a frame nobody has taken yet (counted in ``dropped``), unless ``droppable`` is
    False: then it waits until the slot is empty (hot folder: every file is inspected).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._in_hand = 0  # frames taken and not yet finished()
        self.dropped = 0

    def put(self, frame: Frame, droppable: bool = True) -> bool:
        """False when the slot was closed before the frame could be placed."""
        with self._condition:
            if not droppable:
                self._condition.wait_for(lambda: self._frame is None or self._closed)
            if self._closed:
                return False
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._condition.notify_all()
            return True

    def take(self, timeout: float) -> Frame | None:
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            self._in_hand += frame is not None
            self._condition.notify_all()
            return frame

    def finished(self) -> None:
        """The taker is done with the frame it took (handed on or discarded)."""
        with self._condition:
            self._in_hand = max(0, self._in_hand - 1)

    def idle(self) -> bool:
        """No frame waiting and none being worked on."""
        with self._condition:
            return self._frame is None and self._in_hand == 0

    def close(self) -> None:
        """Wake every waiter; the slot takes no more frames until ``reopen``."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def reopen(self) -> None:
        with self._condition:
            self._closed = False
            self._frame = None
            self._in_hand = 0


class CaptureThread(QThread):
    """Reads one source until stopped; reports its state for the banner."""

    state_changed = Signal(str, str, int)  # state, error ("" when none), reconnects so far
    frame_skipped = Signal(str)  # a corrupt frame or file, skipped
    failed = Signal(str)  # the source cannot be used at all (bad spec) or ended

    def __init__(self, spec: str, slot: FrameSlot, *, fps: float | None = None,
                 source: FrameSource | None = None, initial_backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        super().__init__()
        self.spec = spec
        self.slot = slot
        self.fps = fps
        self._inner = source  # tests pass a FrameSource; otherwise open_source(spec) builds it
        self._backoff = (initial_backoff, max_backoff)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self.source: ReconnectingSource | None = None
        self.frames_read = 0

    def run(self) -> None:
        try:
            inner = self._inner if self._inner is not None else open_source(self.spec, fps=self.fps)
        except SourceError as error:
            self.failed.emit(str(error))
            return
        source = ReconnectingSource(inner, *self._backoff, on_state=self._report)
        self.source = source
        if self._stop.is_set():
            return
        source.open()
        try:
            while not self._stop.is_set():
                if self._paused.is_set():
                    self._stop.wait(0.01)
                    continue
                try:
                    frame = source.read()
                except SourceEnded as end:
                    self.failed.emit(str(end))
                    break
                except CorruptFrame as bad:
                    self.frame_skipped.emit(str(bad))
                    continue
                if frame is None:
                    self._stop.wait(IDLE_POLL_S)
                    continue
                self.frames_read += 1
                if not self.slot.put(frame, droppable=source.droppable):
                    break
        finally:
            source.close()

    @property
    def droppable(self) -> bool:
        return self.source.droppable if self.source is not None else True

    def ack(self, frame: Frame) -> None:
        """The frame's result is stored (hot folder: the file is done)."""
        if self.source is not None:
            self.source.ack(frame)

    def _report(self, state: str, error: str | None) -> None:
        reconnects = self.source.reconnects if self.source is not None else 0
        self.state_changed.emit(state, error or "", reconnects)

    def pause(self) -> None:
        """Read no more frames but keep the source open (frames in flight can still be acknowledged)."""
        self._paused.set()

    def stop(self) -> None:
        """Ask the thread to end (a waiting read or put returns at once); join with wait()."""
        self._stop.set()
        if self.source is not None:
            self.source.close()


@dataclass
class ModelSummary:
    """What the model panel shows, read from the loaded detector."""

    path: str
    name: str
    class_names: list[str]
    needs_template: bool
    default_threshold: float
    package_id: str
    files: dict[str, str]  # file name -> sha256
    metrics: dict
    runtime: dict  # RuntimeInfo.to_dict(): backend, precision, threads that really run
    load_seconds: float

    @classmethod
    def of(cls, detector: Detector, load_seconds: float) -> "ModelSummary":
        manifest = detector.manifest
        return cls(path=detector.info.package, name=manifest.name, class_names=list(manifest.class_names),
                   needs_template=detector.needs_template,
                   default_threshold=float(manifest.postprocess.score_threshold),
                   package_id=detector.info.package_id,
                   files={name: entry.sha256 for name, entry in sorted(manifest.files.items())},
                   metrics=dict(manifest.metrics or {}), runtime=detector.info.to_dict(), load_seconds=load_seconds)


@dataclass
class InferenceOptions:
    """What the GUI sets and the inference thread reads for each frame (replaced as a whole, never edited)."""

    thresholds: Thresholds
    golden: np.ndarray | None = None  # template for frames that carry none
    align: bool = True  # register frames to ``golden`` first
    overlay: bool = False  # compute the template-edge overlay


@dataclass
class _LoadRequest:
    path: str | None
    backend: str
    threads: int


class InferenceThread(QThread):
    """Takes frames from the slot, runs the model, judges, hands the result on. Owns the Detector."""

    inspected = Signal(object)  # Inspection
    model_loading = Signal(str)  # package path ("" = the shipped default)
    model_loaded = Signal(object)  # ModelSummary
    model_failed = Signal(str, str)  # package path, error

    def __init__(self, slot: FrameSlot, options: InferenceOptions, evidence: "EvidenceThread | None" = None) -> None:
        super().__init__()
        self.slot = slot
        self.options = options
        self.evidence = evidence
        self.capture: CaptureThread | None = None  # where frames come from: acknowledged once stored
        self.detector: Detector | None = None
        self._requests: queue.Queue[_LoadRequest] = queue.Queue()
        self._stop = threading.Event()

    def load_model(self, path: str | None, backend: str = "lite", threads: int = 1) -> None:
        """Load a package in this thread (the previous model keeps running until it is ready)."""
        self._requests.put(_LoadRequest(path or None, backend, threads))  # picked up within 0.1 s

    def stop(self) -> None:
        self._stop.set()
        self.slot.close()

    def run(self) -> None:
        while not self._stop.is_set():
            self._load_requested()
            frame = self.slot.take(timeout=0.1)
            if frame is None:
                continue
            try:
                if self.detector is None or self._stop.is_set():
                    continue  # no model yet: the frame is dropped (the banner says why)
                inspection = self.inspect(frame, self.detector, self.options)
                if self.evidence is not None:
                    self.evidence.submit(inspection, frame, self.capture)
                self.inspected.emit(inspection)
            finally:
                self.slot.finished()

    def _load_requested(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            self.model_loading.emit(request.path or "")
            started = time.monotonic()
            try:
                detector = Detector.load(request.path, backend=request.backend, threads=request.threads)
            except (PackageError, BackendError, ValueError, OSError) as error:
                self.model_failed.emit(request.path or "", str(error))
            except Exception as error:  # noqa: BLE001 -- any engine failure must leave the old model running
                self.model_failed.emit(request.path or "", f"{type(error).__name__}: {error}")
            else:
                self.detector = detector
                self.model_loaded.emit(ModelSummary.of(detector, time.monotonic() - started))

    @staticmethod
    def inspect(frame: Frame, detector: Detector, options: InferenceOptions) -> Inspection:
        """One frame through the model and judged; a frame that cannot be compared is NOT JUDGED with the reason."""
        template, align = None, False
        if detector.needs_template:
            if frame.template is not None:
                template = frame.template  # the source's own pair: already registered
            elif options.golden is not None:
                template, align = options.golden, options.align
        error, candidates = "", None
        if detector.needs_template and template is None:
            error = "this model compares each board with its golden template: load one (Template button)"
        else:
            try:
                candidates = detector.detect(frame.image, template, align=align,
                                             score_threshold=options.thresholds.candidate_floor())
            except AlignmentError as refused:
                error = f"not aligned to the golden template: {refused}"
            except ValueError as bad:
                error = str(bad)
        overlay = None
        if options.overlay and template is not None and (candidates is not None or not align):
            overlay = template_overlay(template, frame.image.shape[:2],
                                       None if candidates is None or candidates.alignment is None
                                       else candidates.alignment.template_to_frame)
        return Inspection.judged(
            frame_id=frame.frame_id, source=frame.source, captured_at=frame.captured_at,
            captured_monotonic=frame.captured_monotonic, image=frame.image, template=template,
            candidates=candidates, thresholds=options.thresholds, package_id=detector.info.package_id,
            error=error, overlay=overlay, sequence=frame.sequence, judged_monotonic=time.monotonic())


def template_overlay(template: np.ndarray, frame_shape: tuple[int, int],
                     template_to_frame: np.ndarray | None) -> np.ndarray:
    """RGBA layer the size of the frame: the template's edges where the alignment puts them.

    Copper edges that do not sit on the frame's edges show a misregistration (or a defect) at a glance.
    """
    grey = cv2.cvtColor(template, cv2.COLOR_BGR2GRAY) if template.ndim == 3 else template
    edges = cv2.dilate(cv2.Canny(grey, 60, 180), np.ones((3, 3), np.uint8))  # thick enough to see when scaled down
    height, width = frame_shape
    if template_to_frame is not None:
        edges = cv2.warpAffine(edges, template_to_frame.astype(np.float32), (width, height), flags=cv2.INTER_NEAREST)
    elif edges.shape[:2] != (height, width):
        edges = cv2.resize(edges, (width, height), interpolation=cv2.INTER_NEAREST)
    layer = np.zeros((height, width, 4), np.uint8)
    layer[edges > 0] = OVERLAY_RGBA
    return layer


class EvidenceThread(QThread):
    """Writes NG evidence and the inspection record, then acknowledges hot-folder frames."""

    saved = Signal(str, str)  # frame_id, evidence image path
    failed = Signal(str)  # what could not be written

    QUEUE_SIZE = 32  # inference waits when the disk falls this far behind: evidence is never dropped

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.store = EvidenceStore(Path(root))
        self._jobs: queue.Queue[tuple[Inspection, Frame, CaptureThread | None] | None] = queue.Queue(self.QUEUE_SIZE)

    def submit(self, inspection: Inspection, frame: Frame, capture: CaptureThread | None) -> None:
        self._jobs.put((inspection, frame, capture))

    def stop(self) -> None:
        """Finish what is queued, then end."""
        self._jobs.put(None)

    def idle(self) -> bool:
        """Everything submitted has been written (and acknowledged)."""
        return self._jobs.unfinished_tasks == 0

    def run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            try:
                self._write(*job)
            finally:
                self._jobs.task_done()

    def _write(self, inspection: Inspection, frame: Frame, capture: CaptureThread | None) -> None:
        durable = capture is not None and not capture.droppable
        try:
            record = inspection.record()
            if inspection.verdict == NG:
                path = self.store.save_ng(
                    frame_id=inspection.frame_id, captured_at=inspection.captured_at, source=inspection.source,
                    image=inspection.image, template=inspection.template, defects=inspection.defects,
                    thresholds=inspection.thresholds.to_dict(), package_id=inspection.package_id)
                record["evidence"] = str(path)
                self.saved.emit(inspection.frame_id, str(path))
            self.store.record(record, durable=durable)
        except OSError as error:
            self.failed.emit(f"evidence for {inspection.frame_id} not written to {self.store.root}: {error}")
            return  # not acknowledged: a hot-folder file is inspected again after a restart
        if capture is not None:
            try:
                capture.ack(frame)
            except (SourceError, OSError, ValueError) as error:
                self.failed.emit(f"could not mark {inspection.frame_id} as done: {error}")
