"""Hot folder: a scanner drops board images into a directory; each is inspected exactly once.

Rules, in the order read() applies them:

- Only the folder's own image files count (jpg/jpeg/png/bmp/tif/tiff, any case; no subfolders, no
  hidden files), oldest first by modification time, then name.
- DeepPCB naming: ``X_temp.jpg`` is a golden template, never yielded as a board; ``X_test.jpg`` gets
  ``X_temp.*`` beside it as its template (it waits ``pair_wait_seconds`` for a template written just after
  it). Other files get the source's fallback template, if one was given.
- A file still being written is skipped: it must have kept its size and modification time for
  ``settle_seconds`` (seen unchanged across polls that far apart, or last modified that long ago), and it
  must be complete by its format: JPEG/PNG end-of-image marker, BMP the size its header states, TIFF
  every strip or tile its directory points at inside the file (libtiff writes the directory last, so a
  TIFF written slowly is one record, not one per chunk that happened to sit still).
- Hostile or odd files cost bounded work and get one ERROR record each (the source stays up):
  a file over ``max_file_bytes`` is refused before it is read; an image whose header declares more than
  ``max_image_pixels`` (a 1 MB PNG declaring 20000 x 20000 pixels would decode into 1.2 GB) is refused
  from its header, before decoding; a file that stays incomplete for ``abandon_seconds`` is declared
  truncated, and while it waits only its header and last bytes are read; a symbolic link whose target
  lies outside the folder is refused (one inside it is followed). Any name the OS allows is taken: names
  that are not UTF-8 are shown (frame id, records, logs) with ``\\xNN`` escapes (``printable_name``).
- ``ack(frame)`` records the file (name, size, mtime) as done in a SQLite ledger (WAL, fsync on commit) in
  ``state_dir``; a restarted source skips done files and yields again files that were read but never
  acknowledged (the process died mid-inspection). A file replaced under the same name is a new file.
- A file that cannot be decoded raises CorruptFrame once and is recorded as failed, so it is not retried;
  a truncated file is declared corrupt when it stays unchanged for ``abandon_seconds``.

read() returns None when no file is ready: the consumer decides how long to sleep. It lists the folder
at most every ``rescan_seconds`` and at most a tenth of the time (measured: ~0.1-0.2 s to list 5,000
files on a loaded 2-core machine); between listings it works from the last one.

The ledger uses SQLite's WAL journal, which needs a local file system: when the folder is a network
share (SMB/NFS), give ``state_dir`` on a local disk (the default is ``<folder>/.inspector/``).
One ledger serves one folder, and one source at a time should read a folder (they do not share work).
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspector.capture.base import (CorruptFrame, Frame, FrameSource, SourceError, decode_image, new_frame,
                                    printable_name)
from inspector.capture.image_header import HeaderError, read_header

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
TEST_SUFFIX = "_test"  # DeepPCB: <stem>_test.jpg is the tested board ...
TEMPLATE_SUFFIX = "_temp"  # ... and <stem>_temp.jpg its golden template
LEDGER_NAME = "hotfolder-ledger.sqlite3"
STATE_DIR_NAME = ".inspector"
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # 150 MB as BGR; an 8k x 6k line-scan board fits
DEFAULT_MAX_FILE_BYTES = 200_000_000  # an uncompressed 50-megapixel TIFF/BMP is 150 MB


@dataclass(frozen=True)
class FileKey:
    """Identity of one version of a file: a file rewritten under the same name is a new key."""

    name: str
    size: int
    mtime_ns: int


@dataclass
class _Sighting:
    key: FileKey
    first_seen: float  # time.monotonic() when this version (size, mtime) was first seen


class Ledger:
    """Files of one hot folder that are done (acknowledged) or failed, in SQLite so restarts remember them."""

    SCHEMA_VERSION = 1

    def __init__(self, path: Path):
        self.path = path
        try:
            # check_same_thread=False: the reader thread reads, a worker thread acks; self._lock serialises them.
            self._db = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged file stays acknowledged after power loss
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, self.SCHEMA_VERSION):
                raise SourceError(f"hot-folder ledger {path}: schema version {version}, this program reads "
                                  f"version {self.SCHEMA_VERSION}")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS files ("
                " name TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
                " status TEXT NOT NULL CHECK (status IN ('done', 'failed')),"
                " recorded_at REAL NOT NULL, error TEXT,"
                " PRIMARY KEY (name, size, mtime_ns))")
            self._db.execute(f"PRAGMA user_version={self.SCHEMA_VERSION}")
        except sqlite3.Error as error:
            raise SourceError(f"hot-folder ledger {path}: cannot open ({error}); delete it only if you accept "
                              "that every image in the folder is inspected again") from error
        self._lock = threading.Lock()

    def status(self, key: FileKey) -> str | None:
        """'done', 'failed', or None when the file was never finished."""
        try:
            with self._lock:
                row = self._db.execute("SELECT status FROM files WHERE name=? AND size=? AND mtime_ns=?",
                                       (_ledger_name(key.name), key.size, key.mtime_ns)).fetchone()
        except sqlite3.Error as error:
            raise SourceError(f"hot-folder ledger {self.path}: cannot look up {key.name}: {error}") from error
        return None if row is None else row[0]

    def record(self, key: FileKey, status: str, error: str | None = None) -> None:
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                                 (_ledger_name(key.name), key.size, key.mtime_ns, status, time.time(), error))
        except sqlite3.Error as error:
            raise SourceError(f"hot-folder ledger {self.path}: cannot record {key.name} as {status}: {error}") \
                from error

    def entries(self) -> list[tuple[str, int, int, str, str | None]]:
        """Every (name, size, mtime_ns, status, error), oldest record first; for inspection and tests."""
        with self._lock:
            return self._db.execute(
                "SELECT name, size, mtime_ns, status, error FROM files ORDER BY recorded_at").fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class HotFolderSource(FrameSource):
    """Yields every image file dropped into ``folder`` once, oldest first; see the module docstring."""

    kind = "folder"
    droppable = False  # every board must be inspected

    def __init__(self, folder: Path | str, *, state_dir: Path | str | None = None,
                 template: np.ndarray | None = None, settle_seconds: float = 0.5, pair_wait_seconds: float = 2.0,
                 abandon_seconds: float = 60.0, rescan_seconds: float = 0.05, spec: str | None = None,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
        self.folder = Path(folder)
        self.spec = spec if spec is not None else str(folder)
        self.state_dir = Path(state_dir) if state_dir is not None else self.folder / STATE_DIR_NAME
        self.template = template
        self.settle_seconds = settle_seconds
        self.pair_wait_seconds = pair_wait_seconds
        self.abandon_seconds = abandon_seconds
        self.max_image_pixels = max_image_pixels
        self.max_file_bytes = max_file_bytes
        # The folder is listed at most every rescan_seconds, and never for more than a tenth of the time
        # (a listing of thousands of files takes milliseconds): between listings read() works from the last
        # one, so a consumer polling every few ms, or working through a backlog, does not list it each time.
        # 0 lists it on every read().
        self.rescan_seconds = rescan_seconds
        self._listing: dict[str, FileKey] = {}  # name -> key, image files at the last listing
        self._queue: list[FileKey] = []  # from that listing: boards not yet yielded nor finished, oldest first
        self._listed_at = -float("inf")  # time.monotonic()
        self._listing_cost = 0.0  # seconds the last listing took
        self.ledger: Ledger | None = None
        self._lock = threading.Lock()
        self._sightings: dict[str, _Sighting] = {}
        self._finished: set[FileKey] = set()  # done or failed, among files present (cache of the ledger)
        self._unfinished: set[FileKey] = set()  # looked up in the ledger: not finished
        # file name -> the key and the frame's (sequence, captured_monotonic), yielded and not yet
        # acked: the frame's own stamp, so a stale frame of an older version of the file cannot ack the new one.
        self._in_flight: dict[str, tuple[FileKey, tuple[int, float]]] = {}
        self._sequence = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"hot folder {self.folder}: not a directory (missing, or the share is not mounted)")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SourceError(f"hot folder {self.folder}: cannot create its state directory {self.state_dir} "
                              f"({error.strerror or error}); give a writable one (state_dir)") from error
        with self._lock:
            if self.ledger is not None:
                self.ledger.close()
            self.ledger = Ledger(self.state_dir / LEDGER_NAME)
            self._sightings.clear()
            self._finished.clear()
            self._unfinished.clear()
            self._listed_at = -float("inf")
            # _in_flight is kept: when the source is reopened after a failure (ReconnectingSource), frames
            # read before it are still being inspected and are neither yielded again nor refused on ack.
            self._sequence = 0

    def close(self) -> None:
        with self._lock:
            if self.ledger is not None:
                self.ledger.close()
                self.ledger = None

    # -- reading -----------------------------------------------------------------------------------

    def read(self) -> Frame | None:
        with self._lock:
            if self.ledger is None:
                raise SourceError(f"hot folder {self.folder}: not open")
            interval = max(self.rescan_seconds, 10 * self._listing_cost) if self.rescan_seconds > 0 else 0.0
            if time.monotonic() - self._listed_at >= interval:
                self._relist()
            waiting: list[FileKey] = []  # not ready yet: stay queued
            for position, key in enumerate(self._queue):
                if key.name in self._in_flight or self._is_finished(key):
                    continue
                frame = self._try_file(key, self._listing)  # CorruptFrame: the key is finished, dropped next time
                if frame is not None:
                    self._queue = waiting + self._queue[position + 1:]
                    return frame
                waiting.append(key)
            self._queue = waiting
            return None

    def _relist(self) -> None:
        started = time.monotonic()
        self._listing = self._scan()
        boards = [key for key in self._listing.values() if not _is_template_name(key.name)]
        self._queue = sorted(boards, key=lambda k: (k.mtime_ns, k.name))
        self._listed_at = time.monotonic()
        self._listing_cost = self._listed_at - started

    def _scan(self) -> dict[str, FileKey]:
        """The folder's image files now, and when each version of each was first seen."""
        listing: dict[str, FileKey] = {}
        try:
            entries = list(os.scandir(self.folder))
        except OSError as error:
            raise SourceError(f"hot folder {self.folder}: cannot list ({error.strerror or error}; "
                              "deleted, or the share went away)") from error
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError:  # removed between listing and stat
                continue
            listing[entry.name] = FileKey(entry.name, stat.st_size, stat.st_mtime_ns)
        now = time.monotonic()
        for name, key in listing.items():
            sighting = self._sightings.get(name)
            if sighting is None or sighting.key != key:
                self._sightings[name] = _Sighting(key, now)
        for name in set(self._sightings) - set(listing):
            del self._sightings[name]
        # Keep the ledger caches to the files present, so a folder that is emptied now and then stays cheap.
        self._finished &= set(listing.values())
        self._unfinished &= set(listing.values())
        return listing

    def _is_finished(self, key: FileKey) -> bool:
        if key in self._finished:
            return True
        if key in self._unfinished:
            return False
        if self.ledger.status(key) is not None:
            self._finished.add(key)
            return True
        self._unfinished.add(key)
        return False

    def _unchanged_for(self, key: FileKey) -> float:
        """Seconds this version of the file is known not to have changed."""
        by_sighting = time.monotonic() - self._sightings[key.name].first_seen
        by_mtime = time.time() - key.mtime_ns / 1e9  # may be off when a file server's clock is
        return max(by_sighting, by_mtime)

    def _try_file(self, key: FileKey, listing: dict[str, FileKey]) -> Frame | None:
        """A frame for this file when it is ready; None to look again at the next poll."""
        path = self.folder / key.name
        if self._unchanged_for(key) < self.settle_seconds:
            return None
        if self._check_file(key, key) is None:
            return None

        template = self.template
        template_key = _template_key(key.name, listing)
        if template_key is not None:
            template = self._read_template(key, template_key)
            if template is None:
                return None  # the template is still being written
        elif _is_test_name(key.name) and self._unchanged_for(key) < self.pair_wait_seconds:
            return None  # its template may be written right after it

        data = _read_complete(path, key)
        if data is None:
            return None  # changed or vanished meanwhile
        image = decode_image(data)
        del data
        if image is None:
            self._fail(key, f"{self._shown(key)}: not a readable image (corrupt or unsupported format)")
        frame = new_frame(self, image, printable_name(key.name), self._sequence, path=path, template=template)
        self._in_flight[key.name] = (key, (frame.sequence, frame.captured_monotonic))
        self._sequence += 1
        return frame

    def _check_file(self, board: FileKey, file: FileKey) -> bool | None:
        """Whether ``file`` (the board itself, or its template) may be read and decoded: True when it is
        complete and within the limits, None while it may still be being written. A file refused for good
        fails ``board`` (CorruptFrame, one ERROR record) with the limit or rule it broke named."""
        path = self.folder / file.name
        what = self._shown(board) + ("" if file is board else f": its template {self._shown(file)}")
        if os.path.islink(path) and not _inside(path, self.folder):
            self._fail(board, f"{what}: a symbolic link to {printable_name(os.path.realpath(path))}, outside the "
                              "hot folder (refused: copy the file in, or link within the folder)")
        if file.size > self.max_file_bytes:
            self._fail(board, f"{what}: {file.size} bytes, over the limit max_file_bytes={self.max_file_bytes} "
                              "(refused before reading)")
        unreadable = f"{what}{':' if file is board else ' is'} not a readable image"
        try:
            header = read_header(path, file.size)
        except OSError:
            return None  # vanished or replaced meanwhile: the next listing tells
        except HeaderError as error:
            if file.size >= 8 and (error.format is None or error.finished):  # not a partial file
                self._fail(board, f"{unreadable} ({error})")
            if self._unchanged_for(file) < self.abandon_seconds:
                return None
            self._fail(board, f"{what}: truncated image ({error}) and unchanged for "
                              f"{self.abandon_seconds:g} s")
        if header.pixels > self.max_image_pixels:
            self._fail(board, f"{what}: {header.format} of {header.width} x {header.height} = {header.pixels} "
                              f"pixels, over the limit max_image_pixels={self.max_image_pixels} (refused from "
                              "its header, before decoding)")
        if not header.complete:
            if self._unchanged_for(file) < self.abandon_seconds:
                return None
            self._fail(board, f"{what}: truncated image ({header.format} without its end) and unchanged for "
                              f"{self.abandon_seconds:g} s")
        return True

    def _read_template(self, key: FileKey, template_key: FileKey) -> np.ndarray | None:
        if self._unchanged_for(template_key) < self.settle_seconds:
            return None
        if self._check_file(key, template_key) is None:
            return None
        data = _read_complete(self.folder / template_key.name, template_key)
        if data is None:
            return None  # changed meanwhile
        template = decode_image(data)
        if template is None:
            self._fail(key, f"{self._shown(key)}: its template {self._shown(template_key)} is not a readable image")
        return template

    def _shown(self, key: FileKey) -> str:
        return printable_name(str(self.folder / key.name))

    def _fail(self, key: FileKey, message: str) -> None:
        """Record the file as failed (never retried) and raise CorruptFrame for it."""
        self.ledger.record(key, "failed", message)
        self._finished.add(key)
        self._unfinished.discard(key)
        raise CorruptFrame(message, path=self.folder / key.name, frame_id=printable_name(key.name))

    # -- acknowledging -----------------------------------------------------------------------------

    def ack(self, frame: Frame) -> None:
        """Durably record ``frame``'s file as processed; it is never yielded again, even after a restart."""
        with self._lock:
            if self.ledger is None:
                raise SourceError(f"hot folder {self.folder}: not open (cannot acknowledge {frame.frame_id})")
            name = frame.path.name if frame.path is not None else frame.frame_id
            key, stamp = self._in_flight.get(name, (None, None))
            if key is None or stamp != (frame.sequence, frame.captured_monotonic):
                raise ValueError(f"hot folder {self.folder}: frame {frame.frame_id!r} was not read from this "
                                 "source, or is already acknowledged")
            self.ledger.record(key, "done")
            del self._in_flight[name]
            self._finished.add(key)
            self._unfinished.discard(key)


def _is_template_name(name: str) -> bool:
    return os.path.splitext(name)[0].endswith(TEMPLATE_SUFFIX)  # os.path: Path() is slow for thousands


def _is_test_name(name: str) -> bool:
    return os.path.splitext(name)[0].endswith(TEST_SUFFIX)


def _template_key(name: str, listing: dict[str, FileKey]) -> FileKey | None:
    """``X_temp.*`` beside ``X_test.*`` (same extension first), if present."""
    if not _is_test_name(name):
        return None
    stem, extension = Path(name).stem[: -len(TEST_SUFFIX)], Path(name).suffix
    for candidate_extension in (extension, *IMAGE_EXTENSIONS, *(e.upper() for e in IMAGE_EXTENSIONS)):
        key = listing.get(f"{stem}{TEMPLATE_SUFFIX}{candidate_extension}")
        if key is not None:
            return key
    return None


def _read_complete(path: Path, key: FileKey) -> bytes | None:
    """The file's bytes if it still is the version ``key`` describes; None if it changed or vanished."""
    try:
        data = path.read_bytes()
        stat = path.stat()
    except OSError:
        return None
    if len(data) != key.size or stat.st_size != key.size or stat.st_mtime_ns != key.mtime_ns:
        return None
    return data


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, links resolved, lies within ``folder`` (resolved too)."""
    target, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([target, root]) == root


def _ledger_name(name: str) -> str:
    """The name as the ledger stores it: itself when it is UTF-8; otherwise its bytes in hex behind a '/',
    which no file name contains (so it never collides with a real name). SQLite cannot store a lone
    surrogate, and before this such a name stopped the folder for good."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return "/bytes:" + os.fsencode(name).hex()
