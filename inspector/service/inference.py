"""The service's one Detector, run in a child process.

Why a process and not a thread: Paddle Lite's and Paddle Inference's ``run()`` keep Python's GIL for the
whole forward pass. Measured on this project's 2-core box with models/default: a thread reading a 25 fps
video in the same process got 12.6 frames/s while a detector ran beside it (23.6 alone, 22.8 next to a
GIL-free OpenCV load of the same CPU). A capture thread starved like that cannot keep a camera's pace: the
camera's driver drops frames nobody counts and hands out stale ones. With the detector in its own process
the capture thread reads at the camera's rate, and the bounded queue drops (and counts) what inference
cannot take; the HTTP API stays responsive too.

``DetectorProcess`` has the part of ``Detector``'s interface the service uses: ``detect``, ``manifest``,
``info``, ``needs_template``. A frame larger than the model's tile (a whole panel from a line-scan camera
or a hot folder) is inspected in tiles and stitched (``inspector.runtime.panel``): its detections come
back as one result in the panel's pixels, so a panel makes one record with every defect and one verdict.
Frames go over a pipe (about 2.5 ms for a 640x640 frame and its template).
A child that dies (a crash inside the engine) is restarted by the next ``detect`` call, which raises
``DetectorCrashed`` for the frame it was working on.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from inspector.data.layouts import input_layout

log = logging.getLogger(__name__)
_START_TIMEOUT_S = 300.0  # loading a package on a slow ARM box


class DetectorStartError(RuntimeError):
    """The child could not load the package; the message is the runtime's (it names the file or field)."""


class DetectorCrashed(RuntimeError):
    """The child process died while inspecting a frame."""


class InspectionError(ValueError):
    """The detector refused this frame (alignment failed, wrong template size ...): ``"Type: message"``."""


class DetectorProcess:
    def __init__(self, package: Path | None, backend: str = "lite", threads: int = 1):
        self._arguments = (None if package is None else str(package), backend, threads)
        self._context = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
        self._lock = threading.Lock()
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_child_main, args=(child, *self._arguments),
                                        name="inspector-detector", daemon=True)
        process.start()
        child.close()
        if not parent.poll(_START_TIMEOUT_S):
            process.kill()
            raise DetectorStartError(f"the detector process did not load the model within {_START_TIMEOUT_S:.0f} s")
        try:
            reply = parent.recv()
        except EOFError:
            process.join(timeout=5)
            raise DetectorStartError(f"the detector process died while loading the model "
                                     f"(exit code {process.exitcode})") from None
        if reply[0] == "error":
            process.join(timeout=5)
            raise DetectorStartError(reply[1])
        _, self.manifest, self.info = reply
        self._connection, self._process = parent, process

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def needs_template(self) -> bool:
        return input_layout(self.manifest.input.mode).needs_template

    def detect(self, image: np.ndarray, template: np.ndarray | None = None, *, align: bool = False,
               score_threshold: float | None = None, unknown_changes: bool = False):
        """``unknown_changes``: also flag template differences no detection explains (with a template; a
        panel's flags are found tile by tile and stitched, each with its tile: ``runtime.panel_changes``)."""
        with self._lock:
            if not self._process.is_alive():
                self._restart()
            try:
                self._connection.send(("detect", image, template, align, score_threshold, unknown_changes))
                reply = self._connection.recv()
            except (EOFError, OSError, BrokenPipeError) as error:
                self._process.join(timeout=5)
                code = self._process.exitcode
                self._restart()
                raise DetectorCrashed(f"the detector process died on this frame (exit code {code}); "
                                      "restarted") from error
        if reply[0] == "ok":
            return reply[1]
        raise InspectionError(reply[1])

    def _restart(self) -> None:
        self.restarts += 1
        log.error("detector process (pid %s) is gone; starting a new one", self._process.pid)
        self._connection.close()
        self._start()

    def close(self) -> None:
        with self._lock:
            try:
                self._connection.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout=5)
            self._connection.close()


def _child_main(connection: Connection, package: str | None, backend: str, threads: int) -> None:
    """The child: load the package, then answer detect requests until told to stop or the parent goes."""
    import signal

    # SIGINT/SIGTERM go to the whole process group from a terminal or systemd; the parent decides when
    # this child stops (after the queue has drained), so the child ignores them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from inspector.runtime import BackendError, Detector, PackageError
    from inspector.runtime.panel import PanelInspector

    try:
        detector = Detector.load(package, backend=backend, threads=threads)
    except (PackageError, BackendError, FileNotFoundError, ValueError) as error:
        connection.send(("error", str(error)))
        return
    panels = PanelInspector(detector)  # frames of a tile's size take detector.detect unchanged
    connection.send(("ready", detector.manifest, detector.info))
    parent = os.getppid()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if request[0] == "stop" or os.getppid() != parent:
            return
        _, image, template, align, score_threshold, unknown_changes = request
        try:
            if unknown_changes and template is not None and not panels.is_panel(image):
                # a tile-sized frame: PanelInspector would call this same detect, without the flags
                found = detector.detect(image, template, align=align, score_threshold=score_threshold,
                                        unknown_changes=True)
            else:
                found = panels.inspect(image, template, align=align, score_threshold=score_threshold,
                                       unknown_changes=bool(unknown_changes and template is not None)).as_detections()
            reply: tuple[Any, ...] = ("ok", found)
        except Exception as error:  # AlignmentError, ValueError ...: the frame's fault, not the detector's
            reply = ("error", f"{type(error).__name__}: {error}")
        connection.send(reply)
