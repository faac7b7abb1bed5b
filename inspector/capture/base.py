"""What every frame source shares: the Frame it yields, its errors, and the FrameSource interface."""
from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspector.redaction import redact


@dataclass(frozen=True, eq=False)  # eq=False: frames compare by identity (numpy arrays have no plain ==)
class Frame:
    """One image read from a source, with where and when it came from."""

    image: np.ndarray = field(repr=False)  # BGR uint8 (H, W, 3)
    frame_id: str  # unique within the source: "cam0:000123", a hot-folder file's name, "demo:group00041/00041000:7"
    sequence: int  # 0, 1, 2 ... per opened source
    source: str  # the spec it came from (credentials in a URL hidden)
    captured_at: float  # time.time() when read
    captured_monotonic: float  # time.monotonic() when read (for latency)
    path: Path | None = None  # file the frame came from (hot folder, demo), else None
    template: np.ndarray | None = field(default=None, repr=False)  # golden template paired with this frame when the source knows it


class SourceError(Exception):
    """The source failed (cannot open, unplugged, ended ...); the message names the source and what failed."""


class CorruptFrame(SourceError):
    """One unreadable frame or file; the source itself is still usable: skip it and read on."""

    def __init__(self, message: str, path: Path | None = None, frame_id: str | None = None):
        super().__init__(message)
        self.path = path
        self.frame_id = frame_id


class SourceEnded(SourceError):
    """A finite source (a video file or the demo played with loop=False) has no more frames.

    Not a failure: reopening would only start it again, so ReconnectingSource lets it through.
    """


class FrameSource(ABC):
    """A source of frames. ``read()`` returns the next frame, or None when none is available right now.

    Live sources (camera, stream, video, demo) are ``droppable``: a consumer that falls behind may skip
    their frames. A hot folder is not: every file must be processed and ``ack``-ed.
    """

    spec: str
    kind: str  # "camera" | "video" | "stream" | "folder" | "demo"
    droppable: bool

    @abstractmethod
    def open(self) -> None:
        """Open the source; raises SourceError naming it and what failed."""

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame; None when nothing is available right now.

        Raises SourceError when the source failed (close and reopen it), CorruptFrame for one bad
        frame or file (skip it and read on).
        """

    def ack(self, frame: Frame) -> None:
        """The consumer has finished with ``frame``. Only the hot folder records anything."""

    @abstractmethod
    def close(self) -> None:
        """Release the source; safe to call twice and from another thread."""

    @property
    def name(self) -> str:
        """The spec as shown in messages and frames (a URL's password hidden)."""
        return display_spec(self.spec)

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def display_spec(spec: str) -> str:
    """``spec`` with a URL's password and query-string credentials replaced by ***, so it can go into logs
    and results (``inspector.redaction.redact``, the one function for that)."""
    return redact(spec)


def printable_name(name: str) -> str:
    """A file name as text that any log, database or JSON message takes: bytes that are not UTF-8 (kept by
    Python as lone surrogates) become ``\\xNN``, control characters (a newline in a name) ``\\xNN`` too.

    Linux allows any bytes but NUL and '/' in a name; a lone surrogate cannot be encoded for SQLite,
    PostgreSQL or a log file, so every name leaving the hot folder goes through here.
    """
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" if ord(char) < 256 else
                   f"\\u{ord(char):04x}" for char in text)


class Pacer:
    """Releases frames at ``fps`` like a camera would; the wait ends early when ``stop`` is set.

    The first frame is due at once. A consumer that falls behind gets the next frame one period after
    the last one rather than a burst of catch-up frames.
    """

    def __init__(self, fps: float, stop: threading.Event):
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.period = 1.0 / fps
        self._stop = stop
        self._next_due: float | None = None

    def wait(self) -> bool:
        """Wait until the next frame is due; False when stopped meanwhile."""
        now = time.monotonic()
        if self._next_due is not None and self._next_due > now:
            if self._stop.wait(self._next_due - now):
                return False
        if self._stop.is_set():
            return False
        self._next_due = max(self._next_due or 0.0, time.monotonic()) + self.period
        return True


def decode_image(data: bytes) -> np.ndarray | None:
    """Encoded image bytes -> BGR uint8 (H, W, 3), or None when they are not a decodable image."""
    if not data:
        return None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return image


def read_template_file(path: Path | str) -> np.ndarray:
    """A golden template image file -> read-only BGR array; SourceError naming the file otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SourceError(f"template {path}: cannot read ({error.strerror or error})") from error
    image = decode_image(data)
    if image is None:
        raise SourceError(f"template {path}: not a readable image (corrupt or unsupported format)")
    return read_only(image)


def read_only(array: np.ndarray) -> np.ndarray:
    """Mark an array shared by many frames read-only, so one consumer cannot silently change it for all."""
    array.setflags(write=False)
    return array


def new_frame(source: FrameSource, image: np.ndarray, frame_id: str, sequence: int, *,
              path: Path | None = None, template: np.ndarray | None = None) -> Frame:
    return Frame(image=image, frame_id=frame_id, sequence=sequence, source=source.name,
                 captured_at=time.time(), captured_monotonic=time.monotonic(), path=path, template=template)
