"""The verification queue's spool: a board the line hands over is on disk before ``ReviewFeed.offer`` returns.

Without it the boards accepted but not yet written by the feed's writer thread lived in memory only, and
a crash (power, OOM kill, ``kill -9``) between the record's commit and the queue write lost up to a
backlog of them. Each entry is a folder-less group of files under ``data_dir/review-spool``:

* ``<name>.json``: what the queue row needs (record id, detections, flags, threshold, classes, model);
  written last, to a temporary name, flushed to disk (``fsync``) and renamed, then the folder is flushed:
  an entry exists whole or not at all;
* ``<name>.picture<suffix>``: the judged picture, the scanner's file copied as it is when it is still the
  version judged, else the judged pixels as a raw ``.npy`` (no encoding on the line's thread; the writer
  encodes the PNG); ``<name>.template.npy`` when the golden template was not stored yet.

``name`` starts with a nanosecond sequence, so entries are replayed in the order they were offered. The
writer moves the pictures into ``review-images`` and inserts the row keyed by the record id (a replay
after a crash that came between the insert and the clean-up finds the row and inserts nothing), then
removes the entry. Entries left by a crash are picked up when the feed starts.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SPOOL_DIR = "review-spool"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")  # no dots: a file name is "<entry>.<part>"


@dataclass(frozen=True)
class SpoolEntry:
    name: str
    meta: dict  # record_id, frame_id, detections, unknown_changes, score_threshold, class_names, model, template
    picture: Optional[Path]  # None when a crash came after the writer had moved it
    template: Optional[Path]  # the template's pixels (.npy) when the entry carries them


class ReviewSpool:
    """Durable hand-over between the inspection worker (``put``) and the queue writer (``load``/``remove``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sequence_lock = threading.Lock()
        self._last = 0
        for stale in self.directory.glob(".*"):  # temporary files of a put a crash interrupted: never acknowledged
            stale.unlink(missing_ok=True)

    def names(self) -> list[str]:
        """Whole entries, oldest first."""
        return sorted(path.name[:-len(".json")] for path in self.directory.glob("*.json"))

    def put(self, meta: dict, image: np.ndarray, file: Optional[Path], file_version: Optional[str],
            template: Optional[np.ndarray]) -> str:
        """Write one entry durably; returns its name. Raises OSError (the caller counts it)."""
        name = f"{self._next():020d}-{_SAFE.sub('_', str(meta['record_id']))[:80]}"
        written: list[Path] = []
        try:
            picture = self._copy_if_unchanged(file, file_version, name)
            if picture is None:
                picture = self._save_array(f"{name}.picture.npy", image)
            written.append(picture)
            if template is not None:
                written.append(self._save_array(f"{name}.template.npy", template))
            body = json.dumps({**meta, "picture": picture.name,
                               "template_file": None if template is None else f"{name}.template.npy"})
            self._write_durably(self.directory / f"{name}.json", body.encode())
            fsync_directory(self.directory)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return name

    def load(self, name: str) -> SpoolEntry:
        meta = json.loads((self.directory / f"{name}.json").read_text())
        picture = self.directory / meta["picture"]
        template = self.directory / meta["template_file"] if meta.get("template_file") else None
        return SpoolEntry(name, meta, picture if picture.is_file() else None,
                          template if template is not None and template.is_file() else None)

    def remove(self, name: str) -> None:
        """The entry's description first (a crash after it leaves only files ``_orphans`` clears)."""
        (self.directory / f"{name}.json").unlink(missing_ok=True)
        for path in self.directory.glob(f"{name}.*"):
            path.unlink(missing_ok=True)

    def clear_orphans(self) -> int:
        """Pictures without a description (a put or a remove a crash interrupted); returns how many went."""
        whole = set(self.names())
        gone = 0
        for path in self.directory.iterdir():
            if path.is_file() and not path.name.endswith(".json") and path.name.split(".")[0] not in whole:
                path.unlink(missing_ok=True)
                gone += 1
        return gone

    # ------------------------------------------------------------------ helpers

    def _next(self) -> int:
        with self._sequence_lock:
            self._last = max(self._last + 1, time.time_ns())
            return self._last

    def _copy_if_unchanged(self, file: Optional[Path], version: Optional[str], name: str) -> Optional[Path]:
        """The judged file's bytes, when it is still the version judged (size and mtime before and after)."""
        if file is None or version is None or _version(file) != version:
            return None
        target = self.directory / f"{name}.picture{Path(file).suffix.lower()}"
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as stream, open(file, "rb") as source:
                shutil.copyfileobj(source, stream, 1 << 20)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError:
            Path(temp).unlink(missing_ok=True)
            return None  # gone or unreadable since it was judged: the judged pixels are written instead
        if _version(file) != version:
            Path(temp).unlink(missing_ok=True)
            return None
        os.replace(temp, target)
        return target

    def _save_array(self, file_name: str, array: np.ndarray) -> Path:
        target = self.directory / file_name
        handle, temp = tempfile.mkstemp(prefix=f".{file_name}.", dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as stream:
                np.save(stream, np.ascontiguousarray(array), allow_pickle=False)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return target

    def _write_durably(self, target: Path, data: bytes) -> None:
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def _version(file: Path) -> Optional[str]:
    try:
        stat = os.stat(file)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def fsync_directory(directory: Path) -> None:
    """A rename is durable once its folder is flushed (POSIX); not possible everywhere (Windows)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
