"""Sources read through cv2.VideoCapture: USB/UVC cameras, network streams (FFmpeg) and video files."""
from __future__ import annotations

import glob
import math
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from inspector.capture.base import Frame, FrameSource, Pacer, SourceEnded, SourceError, new_frame

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".mts", ".m2ts", ".mjpeg", ".mjpg", ".3gp", ".ogv")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
# A stream that stops answering must not hang the reader for FFmpeg's default 30 s (or forever).
STREAM_OPEN_TIMEOUT_MS = 10_000
STREAM_READ_TIMEOUT_MS = 5_000
# Files whose container states no usable frame rate are played at this rate.
FALLBACK_VIDEO_FPS = 25.0


class _CaptureSource(FrameSource):
    """Common handling of a cv2.VideoCapture: open, read under a lock, release.

    The lock serialises read() and close(): releasing a capture while another thread is inside its
    read() is not safe in OpenCV.
    """

    droppable = True

    def __init__(self, spec: str, template: np.ndarray | None = None):
        self.spec = spec
        self.template = template
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sequence = 0

    def _new_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _open_failure(self) -> str:
        return "cannot open"

    def open(self) -> None:
        with self._lock:
            self._release()
            self._stop.clear()
            try:
                capture = self._new_capture()
            except cv2.error as error:
                raise SourceError(f"{self.kind} {self.name}: {self._open_failure()} ({error})") from error
            if not capture.isOpened():
                capture.release()
                raise SourceError(f"{self.kind} {self.name}: {self._open_failure()}")
            self._capture = capture
            self._sequence = 0

    def _grab(self) -> np.ndarray | None:
        """The next decoded image, or None when the capture returned nothing (caller holds the lock)."""
        try:
            ok, image = self._capture.read()
        except cv2.error as error:
            raise SourceError(f"{self.kind} {self.name}: read failed ({error})") from error
        if not ok or image is None or image.size == 0:
            return None
        return _as_bgr(image)

    def close(self) -> None:
        self._stop.set()  # first, so a paced read waiting for its turn gives up at once
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _require_open(self) -> None:
        if self._capture is None:
            raise SourceError(f"{self.kind} {self.name}: not open")


class CameraSource(_CaptureSource):
    """A USB/UVC camera by index ("0", "1" ...). A failed read means it was unplugged or stopped."""

    kind = "camera"

    def __init__(self, index: int, *, spec: str | None = None, template: np.ndarray | None = None):
        super().__init__(spec if spec is not None else str(index), template)
        self.index = index

    def _new_capture(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(self.index)

    def _open_failure(self) -> str:
        message = "cannot open: no camera at this index, unplugged, or in use by another program"
        if sys.platform.startswith("linux"):
            devices = sorted(glob.glob("/dev/video*"))
            message += f" (video devices present: {', '.join(devices)})" if devices else " (no /dev/video* device at all)"
        return message

    def read(self) -> Frame | None:
        with self._lock:
            if self._stop.is_set():
                return None
            self._require_open()
            image = self._grab()
            if image is None:
                raise SourceError(f"camera {self.name}: no frame (unplugged or stopped delivering)")
            frame = new_frame(self, image, f"cam{self.index}:{self._sequence:06d}", self._sequence,
                              template=self.template)
            self._sequence += 1
            return frame


class StreamSource(_CaptureSource):
    """A network stream (rtsp://, http(s)://) read through OpenCV's FFmpeg backend, with time-outs."""

    kind = "stream"

    def _new_capture(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_READ_TIMEOUT_MS,
        ])

    def _open_failure(self) -> str:
        return (f"cannot open (unreachable, wrong address or credentials, or no answer within "
                f"{STREAM_OPEN_TIMEOUT_MS / 1000:g} s)")

    def read(self) -> Frame | None:
        with self._lock:
            if self._stop.is_set():
                return None
            self._require_open()
            image = self._grab()
            if image is None:
                raise SourceError(f"stream {self.name}: no frame (connection lost, stream ended, or no data "
                                  f"within {STREAM_READ_TIMEOUT_MS / 1000:g} s)")
            frame = new_frame(self, image, f"stream:{self._sequence:06d}", self._sequence, template=self.template)
            self._sequence += 1
            return frame


class VideoFileSource(_CaptureSource):
    """A video file played like a camera: paced at its own frame rate (or ``fps``), looping or ending."""

    kind = "video"

    def __init__(self, path: Path | str, *, fps: float | None = None, loop: bool = True, spec: str | None = None,
                 template: np.ndarray | None = None):
        super().__init__(spec if spec is not None else str(path), template)
        self.path = Path(path)
        if fps is not None and not fps > 0:
            raise SourceError(f"video {self.name}: fps must be > 0, got {fps}")
        self.requested_fps = fps
        self.fps: float | None = None  # the rate frames are released at, known once open
        self.loop = loop
        self._pacer: Pacer | None = None
        self._frames_this_pass = 0

    def _new_capture(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(str(self.path))

    def _open_failure(self) -> str:
        if not self.path.is_file():
            return "file not found"
        return "cannot open as a video (not a video, or a codec OpenCV's FFmpeg cannot decode)"

    def open(self) -> None:
        super().open()
        file_fps = self._capture.get(cv2.CAP_PROP_FPS)
        if self.requested_fps is not None:
            self.fps = float(self.requested_fps)
        elif file_fps and math.isfinite(file_fps) and 0 < file_fps <= 1000:
            self.fps = float(file_fps)
        else:
            self.fps = FALLBACK_VIDEO_FPS
        self._pacer = Pacer(self.fps, self._stop)
        self._frames_this_pass = 0

    def read(self) -> Frame | None:
        with self._lock:
            self._require_open()
            image = self._grab()
            if image is None:
                image = self._restart_or_end()
            # Pace after decoding, so decoding time is part of the period rather than added to it.
            if not self._pacer.wait():
                return None
            self._frames_this_pass += 1
            # path stays None: it names an image file a frame came from, and a video frame has none.
            frame = new_frame(self, image, f"{self.path.name}:{self._sequence:06d}", self._sequence,
                              template=self.template)
            self._sequence += 1
            return frame

    def _restart_or_end(self) -> np.ndarray:
        if self._frames_this_pass == 0:
            raise SourceError(f"video {self.name}: no frame could be decoded")
        if not self.loop:
            raise SourceEnded(f"video {self.name}: ended after {self._frames_this_pass} frames")
        # Reopening rewinds every container; seeking to frame 0 is unreliable for some codecs.
        self._capture.release()
        self._capture = self._new_capture()
        if not self._capture.isOpened():
            self._capture = None
            raise SourceError(f"video {self.name}: cannot reopen to loop")
        self._frames_this_pass = 0
        image = self._grab()
        if image is None:
            raise SourceError(f"video {self.name}: no frame after rewinding")
        return image


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Captures are BGR uint8 by default; a backend delivering gray or 16-bit frames is converted."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image
