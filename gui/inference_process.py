"""The model runs in a child process, so the window's Python never waits for it.

Paddle Lite's Python binding holds the GIL for the whole of a ``run()`` (measured: a thread ticking every
2 ms got the interpreter once per inference, ~60 ms apart, while another thread ran the model). In a
thread of the GUI process every inference would freeze the window for its duration. In a child
process the GUI process only waits on a pipe, which releases the GIL.

    client = InferenceClient()                      # starts the child (no Qt in it)
    summary = client.load(path, "lite", threads)    # ModelSummary, or raises ModelLoadError; old model kept
    result = client.detect(image, template, align=..., score_floor=..., overlay=...)   # DetectResult
    client.close()

A child that dies (an engine crash) raises ``InferenceCrashed`` in the caller; ``InferenceClient.restart``
starts a new one. This module imports no Qt: the child imports only it and the runtime.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import cv2
import numpy as np

from inspector.runtime import AlignmentError, BackendError, Detections, Detector, PackageError

OVERLAY_RGBA = (0, 200, 255, 200)  # template edges over the frame: cyan, visible on copper and on substrate
POLL_S = 0.1  # how often a waiting caller checks whether it should give up


class ModelLoadError(Exception):
    """The package could not be loaded; the child keeps the model it had."""


class InferenceCrashed(Exception):
    """The child process ended without answering."""


class InferenceCancelled(Exception):
    """The caller asked to stop while waiting for an answer."""


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
class DetectResult:
    candidates: Detections | None  # None when the frame could not be judged
    error: str  # why not
    overlay: np.ndarray | None  # RGBA template edges on the frame, when asked for


def detect(detector: Detector, image: np.ndarray, template: np.ndarray | None, *, align: bool,
           score_floor: float, overlay: bool, unknown_changes: bool = False) -> DetectResult:
    """One frame through the model; a frame that cannot be compared gets the reason instead of detections.
    ``unknown_changes``: also flag template differences no detection explains (needs a template)."""
    candidates, error = None, ""
    try:
        candidates = detector.detect(image, template, align=align, score_threshold=score_floor,
                                     unknown_changes=unknown_changes and template is not None)
    except AlignmentError as refused:
        error = f"not aligned to the golden template: {refused}"
    except ValueError as bad:
        error = str(bad)
    layer = None
    if overlay and template is not None and (candidates is not None or not align):
        motion = None if candidates is None or candidates.alignment is None else candidates.alignment.template_to_frame
        layer = template_overlay(template, image.shape[:2], motion)
    if candidates is not None and candidates.alignment is not None:
        # the registered copy of the frame is not needed past the model: do not ship it through the pipe
        candidates.alignment = dataclasses.replace(candidates.alignment, aligned=None)
    return DetectResult(candidates, error, layer)


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


# ---------------------------------------------------------------------------------------------- the child


def serve(connection: Connection) -> None:
    """The child's loop: answer load and detect requests until told to quit or the parent goes away."""
    detector: Detector | None = None
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        kind = request[0]
        if kind == "quit":
            return
        if kind == "load":
            _, path, backend, threads = request
            started = time.monotonic()
            try:
                loaded = Detector.load(path, backend=backend, threads=threads)
            except (PackageError, BackendError, ValueError, OSError) as error:
                connection.send(("load_failed", str(error)))
            except Exception as error:  # noqa: BLE001 -- any engine failure must leave the old model running
                connection.send(("load_failed", f"{type(error).__name__}: {error}"))
            else:
                detector = loaded
                connection.send(("loaded", ModelSummary.of(detector, time.monotonic() - started)))
        elif kind == "detect":
            _, image, template, options = request
            if detector is None:
                connection.send(("detected", DetectResult(None, "no model loaded", None)))
            else:
                connection.send(("detected", detect(detector, image, template, **options)))


# ---------------------------------------------------------------------------------------------- the parent


def _context() -> multiprocessing.context.BaseContext:
    """forkserver where there is one (a clean server process forks each child in milliseconds, with the
    runtime already imported), else spawn. Never plain fork: the GUI process has threads and Qt state."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["gui.inference_process"])
        return context
    return multiprocessing.get_context("spawn")


class InferenceClient:
    """The parent's handle on the child. One caller thread at a time (the inference thread)."""

    def __init__(self) -> None:
        self._process = None
        self._connection: Connection | None = None
        self.cancel = threading.Event()  # set to make a waiting call give up (shutdown)
        self.start()

    def start(self) -> None:
        context = _context()
        parent_end, child_end = context.Pipe(duplex=True)
        self._process = context.Process(target=serve, args=(child_end,), name="inspector-inference", daemon=True)
        self._process.start()
        child_end.close()
        self._connection = parent_end

    def restart(self) -> None:
        self.close(timeout=1.0)
        self.start()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    def load(self, path: str | None, backend: str, threads: int) -> ModelSummary:
        kind, payload = self._call(("load", path, backend, threads))
        if kind == "load_failed":
            raise ModelLoadError(payload)
        return payload

    def detect(self, image: np.ndarray, template: np.ndarray | None, *, align: bool, score_floor: float,
               overlay: bool, unknown_changes: bool = False) -> DetectResult:
        _, result = self._call(("detect", image, template, {"align": align, "score_floor": score_floor,
                                                            "overlay": overlay, "unknown_changes": unknown_changes}))
        return result

    def _call(self, request: tuple) -> tuple:
        try:
            self._connection.send(request)
            while not self._connection.poll(POLL_S):  # waiting on the pipe releases the GIL
                if self.cancel.is_set():
                    raise InferenceCancelled()
                if not self._process.is_alive():
                    break
            return self._connection.recv()
        except (EOFError, OSError, BrokenPipeError) as error:
            self._process.join(2.0)  # reap it, for its exit code
            code = self.exit_code
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise InferenceCrashed(f"the model process ended ({how})") from error

    def close(self, timeout: float = 5.0) -> None:
        if self._process is None:
            return
        try:
            self._connection.send(("quit",))
        except (OSError, BrokenPipeError):
            pass
        deadline = time.monotonic() + timeout
        while self._process.is_alive() and time.monotonic() < deadline:
            try:  # an answer nobody waits for any more would block the child's send: take it
                if self._connection.poll(0.05):
                    self._connection.recv()
            except (EOFError, OSError):
                self._process.join(0.05)
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout)
        self._connection.close()
        self._process = None
