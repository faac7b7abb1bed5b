"""Frame sources shared by the operator GUI and the line service: demo, camera, stream, video file, hot folder.

    from inspector.capture import open_source, ReconnectingSource, SourceError, CorruptFrame

    with ReconnectingSource(open_source("0")) as source:      # or "demo", "rtsp://...", "board.mp4", "/scans"
        frame = source.read()                                 # Frame, or None: nothing ready (sleep a little)
        ...
        source.ack(frame)                                     # hot folder: recorded as done, never read again

Only cv2, numpy, Pillow (image headers) and inspector.data are used here: no Qt, no Paddle, no runtime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from inspector.capture.base import (CorruptFrame, Frame, FrameSource, SourceEnded, SourceError, display_spec,
                                    printable_name, read_template_file)
from inspector.capture.demo import DEMO_DIR, DEMO_FPS, DemoSource
from inspector.capture.hotfolder import IMAGE_EXTENSIONS, HotFolderSource, Ledger
from inspector.capture.reconnect import ReconnectingSource
from inspector.capture.video import (STREAM_SCHEMES, VIDEO_EXTENSIONS, CameraSource, StreamSource,
                                     VideoFileSource)

__all__ = [
    "DEMO_DIR",
    "DEMO_FPS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "CameraSource",
    "CorruptFrame",
    "DemoSource",
    "Frame",
    "FrameSource",
    "HotFolderSource",
    "Ledger",
    "ReconnectingSource",
    "SourceEnded",
    "SourceError",
    "StreamSource",
    "VideoFileSource",
    "open_source",
    "printable_name",
]

ACCEPTED_FORMS = ('"demo" (bundled DeepPCB boards), a camera index ("0", "1" ...), an rtsp:// or http(s):// '
                  f'stream URL, a genicam://DEVICE GigE/USB3 Vision camera, an existing folder (hot folder), or an existing video file ({", ".join(VIDEO_EXTENSIONS)})')


def open_source(spec: str, *, fps: float | None = None, loop: bool = True, state_dir: Path | None = None,
                template: Path | None = None, **hot_folder_limits) -> FrameSource:
    """The FrameSource for ``spec`` (not yet opened: call open() or use it as a context manager).

    ``fps`` paces the demo (default 2 frames/s) and video files (default: the file's own rate); ``loop``
    restarts them at the end, otherwise read() raises SourceEnded. ``state_dir`` holds a hot folder's
    ledger (default ``<folder>/.inspector/``). ``template`` is a golden template image attached to every
    frame of sources that do not know their own (camera, stream, video, hot-folder files without a pair).
    ``hot_folder_limits`` (max_image_pixels, max_file_bytes, abandon_seconds) go to a HotFolderSource.
    Raises SourceError naming the spec and the accepted forms, or the template file that cannot be read.
    """
    text = str(spec).strip()
    if not text:
        raise SourceError(f"empty source: expected {ACCEPTED_FORMS}")
    if fps is not None and not fps > 0:
        raise SourceError(f"source {display_spec(text)}: fps must be > 0, got {fps}")
    if text == "demo":
        return DemoSource(fps=fps, loop=loop, spec=text)

    golden: np.ndarray | None = read_template_file(template) if template is not None else None
    if text.lower().startswith("genicam://"):
        from inspector.capture.genicam import GenICamSource  # PyGObject/Aravis only when asked for

        return GenICamSource(text, template=golden)
    if text.isdigit():
        return CameraSource(int(text), spec=text, template=golden)
    if text.lower().startswith(STREAM_SCHEMES):
        return StreamSource(text, template=golden)
    path = Path(text).expanduser()
    if path.is_dir():
        return HotFolderSource(path, state_dir=state_dir, template=golden, spec=text, **hot_folder_limits)
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return VideoFileSource(path, fps=fps, loop=loop, spec=text, template=golden)
        raise SourceError(f"source {text!r}: a file, but not a video ({path.suffix or 'no extension'}); "
                          f"expected {ACCEPTED_FORMS}")
    if "://" in text:
        raise SourceError(f"source {display_spec(text)!r}: unsupported URL scheme; expected {ACCEPTED_FORMS}")
    raise SourceError(f"source {text!r}: no such file or folder, and not a camera index or URL; "
                      f"expected {ACCEPTED_FORMS}")
