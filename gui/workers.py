"""The threads behind the window: capture, inference, evidence. The GUI thread only shows results.

    CaptureThread --FrameSlot (latest frame wins)--> InferenceThread --queue--> EvidenceThread
         |                                               |                          |
    source state (banner)                      Inspection (signal)       saved / failed (signal)

- Capture reads the source through ``ReconnectingSource`` (back-off reconnects) and puts each frame
  into a one-frame slot. A live source's frame that the model has not taken yet is replaced by the
  newer one and counted as dropped: a slow model shows fewer frames, never older ones. A hot folder's
  frames are never dropped: capture waits for the slot instead.
- Inference hands each frame to the model's own child process (``inference_process``: Paddle Lite holds
  the GIL while it runs, which would stall the window in a thread) and loads models there, so a load
  never blocks the window; a package that fails to load leaves the previous model running, and a
  crashed child is restarted with the model it had.
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

import numpy as np
from PySide6.QtCore import QThread, Signal

from gui.evidence import EvidenceStore
from gui.inference_process import (DetectResult, InferenceCancelled, InferenceClient, InferenceCrashed,
                                   ModelLoadError, ModelSummary)
from gui.session import NG, Inspection, Thresholds
from inspector.capture import (CorruptFrame, Frame, FrameSource, ReconnectingSource, SourceEnded, SourceError,
                               open_source)
from inspector.service.serial_codes import DEFAULT_CODE_FORMATS, serial_reader

IDLE_POLL_S = 0.005  # how long capture sleeps when the source has nothing ready


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
class InferenceOptions:
    """What the GUI sets and the inference thread reads for each frame (replaced as a whole, never edited)."""

    thresholds: Thresholds
    golden: np.ndarray | None = None  # template for frames that carry none
    align: bool = True  # register frames to ``golden`` first
    overlay: bool = False  # compute the template-edge overlay
    unknown_changes: bool = False  # flag template differences no detection explains (inspector.runtime.changes)
    part_id: str = ""  # the board under the camera, as the operator or a barcode scanner entered it
    read_serial_code: bool = False  # read the board's serial from a code in the frame when part_id is ""
    serial_code_formats: tuple[str, ...] = DEFAULT_CODE_FORMATS  # which codes, in priority order (serial_codes)
    recipe: str = ""  # "name version" of the active recipe, written into each record


@dataclass
class _LoadRequest:
    path: str | None
    backend: str
    threads: int
    options: InferenceOptions | None = None  # a recipe's: applied with the model, before the next frame


def serial_from_code(image: np.ndarray, formats: tuple[str, ...] = DEFAULT_CODE_FORMATS) -> str:
    """The board's serial from a code of ``formats`` in the frame ("" when there is none): the service's own
    reader (``inspector.service.serial_codes``), so the same board gets the same id at the line and here."""
    return serial_reader(tuple(formats)).read(image) or ""


class InferenceThread(QThread):
    """Takes frames from the slot, has the model child process judge them, hands the result on.

    The thread owns the ``InferenceClient`` (one caller at a time); while the child computes, this
    thread waits on a pipe and the GUI thread has the interpreter to itself.
    """

    inspected = Signal(object)  # Inspection
    model_loading = Signal(str)  # package path ("" = the shipped default)
    model_loaded = Signal(object)  # ModelSummary
    model_failed = Signal(str, str)  # package path, error
    crashed = Signal(str)  # the model process died; it is being restarted with the model it had

    def __init__(self, slot: FrameSlot, options: InferenceOptions, evidence: "EvidenceThread | None" = None) -> None:
        super().__init__()
        self.slot = slot
        self.options = options
        self.evidence = evidence
        self.capture: CaptureThread | None = None  # where frames come from: acknowledged once stored
        self.model: ModelSummary | None = None
        self.client: InferenceClient | None = None
        self._loaded: _LoadRequest | None = None  # reloaded into a restarted child
        self._requests: queue.Queue[_LoadRequest] = queue.Queue()
        self._stop = threading.Event()
        self._cancel = threading.Event()

    def load_model(self, path: str | None, backend: str = "lite", threads: int = 1,
                   options: InferenceOptions | None = None) -> None:
        """Load a package (the previous model keeps running until it is ready). With ``options`` (a recipe
        switch), they replace the current ones in the same step as the model, between two frames, and only
        if the model loads: no frame is judged by the new model with the old thresholds or the reverse."""
        self._requests.put(_LoadRequest(path or None, backend, threads, options))  # picked up within 0.1 s

    def stop(self) -> None:
        self._stop.set()
        self._cancel.set()
        if self.client is not None:
            self.client.cancel.set()
        self.slot.close()

    def run(self) -> None:
        try:
            self.client = InferenceClient()
            if self._cancel.is_set():
                self.client.cancel.set()
            while not self._stop.is_set():
                self._load_requested()
                frame = self.slot.take(timeout=0.1)
                if frame is None:
                    continue
                try:
                    if self.model is None or self._stop.is_set():
                        continue  # no model yet: the frame is dropped (the banner says why)
                    inspection = self.inspect(frame, self.options)
                    if self.evidence is not None:
                        self.evidence.submit(inspection, frame, self.capture)
                    self.inspected.emit(inspection)
                except InferenceCrashed as crash:
                    self._recover(crash)
                finally:
                    self.slot.finished()
        except InferenceCancelled:
            pass
        finally:
            if self.client is not None:
                self.client.close()

    def _load_requested(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            self.model_loading.emit(request.path or "")
            try:
                summary = self.client.load(request.path, request.backend, request.threads)
            except ModelLoadError as error:
                self.model_failed.emit(request.path or "", str(error))
            except InferenceCrashed as crash:
                self._recover(crash)
                self.model_failed.emit(request.path or "", f"loading it crashed the inference process ({crash})")
            else:
                if request.options is not None:
                    self.options = request.options
                self.model, self._loaded = summary, _LoadRequest(request.path, request.backend, request.threads)
                self.model_loaded.emit(summary)

    def _recover(self, crash: InferenceCrashed) -> None:
        """A new child process, with the model that was running (if it loads again)."""
        self.model = None
        self.crashed.emit(str(crash))
        self.client.restart()
        if self._loaded is not None:
            self._requests.put(self._loaded)

    def inspect(self, frame: Frame, options: InferenceOptions) -> Inspection:
        """One frame through the model and judged; a frame that cannot be compared is NOT JUDGED with the reason."""
        model = self.model
        template, align = None, False
        if model.needs_template:
            if frame.template is not None:
                template = frame.template  # the source's own pair: already registered
            elif options.golden is not None:
                template, align = options.golden, options.align
        if model.needs_template and template is None:
            result = DetectResult(None, "this model compares each board with its golden template: load one "
                                        "(Golden template…, T)", None)
        else:
            result = self.client.detect(frame.image, template, align=align,
                                        score_floor=options.thresholds.candidate_floor(), overlay=options.overlay,
                                        unknown_changes=options.unknown_changes)
        part_id = options.part_id or (serial_from_code(frame.image, options.serial_code_formats)
                                      if options.read_serial_code else "")
        return Inspection.judged(
            part_id=part_id, recipe=options.recipe, frame_id=frame.frame_id, source=frame.source, captured_at=frame.captured_at,
            captured_monotonic=frame.captured_monotonic, image=frame.image, template=template,
            candidates=result.candidates, thresholds=options.thresholds, package_id=model.package_id,
            error=result.error, overlay=result.overlay, sequence=frame.sequence, judged_monotonic=time.monotonic())


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
        store = self.store  # the window may point it at another folder meanwhile: one folder per frame
        try:
            record = inspection.record()
            if inspection.verdict == NG:
                path = store.save_ng(
                    frame_id=inspection.frame_id, captured_at=inspection.captured_at, source=inspection.source,
                    image=inspection.image, template=inspection.template, defects=inspection.defects,
                    thresholds=inspection.thresholds.to_dict(), package_id=inspection.package_id,
                    part_id=inspection.part_id, recipe=inspection.recipe)
                record["evidence"] = str(path)
                self.saved.emit(inspection.frame_id, str(path))
            store.record(record, durable=durable)
        except OSError as error:
            self.failed.emit(f"evidence for {inspection.frame_id} not written to {store.root}: {error}")
            return  # not acknowledged: a hot-folder file is inspected again after a restart
        if capture is not None:
            try:
                capture.ack(frame)
            except (SourceError, OSError, ValueError) as error:
                self.failed.emit(f"could not mark {inspection.frame_id} as done: {error}")
