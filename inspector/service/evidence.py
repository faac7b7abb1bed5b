"""Evidence images: an annotated JPEG of every NG frame, the oldest deleted beyond a file-count or byte limit."""
from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)
_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_[0-9a-f]{32}\.jpg$")  # only files this store wrote are ever deleted


class EvidenceStore:
    """Writes ``<UTC time>_<record_id>.jpg`` atomically into ``directory``; names sort by time, so retention
    deletes from the front."""

    def __init__(self, directory: Path | str, max_files: int, max_bytes: int, jpeg_quality: int = 90):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.check_writable()
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.jpeg_quality = jpeg_quality
        self._lock = threading.Lock()
        self._files: deque[tuple[str, int]] = deque()
        self._bytes = 0
        for path in sorted(self.directory.iterdir()):
            if _NAME.match(path.name) and path.is_file():
                size = path.stat().st_size
                self._files.append((path.name, size))
                self._bytes += size
        self._enforce()

    def check_writable(self) -> None:
        """Raise OSError unless a file can be created (and removed) in the directory: an evidence directory
        that cannot be written would otherwise be found out at the first NG board, its image lost."""
        descriptor, probe = tempfile.mkstemp(dir=self.directory, prefix=".tmp-probe-")
        os.close(descriptor)
        os.unlink(probe)

    @property
    def count(self) -> int:
        return len(self._files)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def save(self, image: np.ndarray, captured_at: float, record_id: str) -> str:
        """Store ``image`` (BGR); returns the file name. Raises OSError when it cannot be written."""
        stamp = datetime.fromtimestamp(captured_at, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
        name = f"{stamp}_{record_id}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise OSError(f"evidence {name}: JPEG encoding failed")
        data = encoded.tobytes()
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".jpg")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self.directory / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        with self._lock:
            self._files.append((name, len(data)))
            self._bytes += len(data)
            self._enforce()
        return name

    def _enforce(self) -> None:
        while self._files and (len(self._files) > self.max_files or self._bytes > self.max_bytes):
            name, size = self._files.popleft()
            try:
                (self.directory / name).unlink(missing_ok=True)
            except OSError as error:
                log.warning("evidence %s: cannot delete (%s)", name, error)
            self._bytes -= size
