"""Feeding the verification queue (``inspector.review_queue``) from the line, without slowing it or losing boards.

The inspection worker hands every judged board to ``ReviewFeed.offer``, which decides whether a review
would teach something (NG, a detection within its class's band of the decision threshold, or an
unknown-change flag) and, if so, puts the board in the spool (``review_spool.py``) on disk before it
returns: the scanner's file copied as it is when it is still the version judged, otherwise the judged
pixels raw (no encoding on the line's thread), and the golden template the first time it is seen. A
board once offered survives a crash: entries left in the spool are written when the feed starts again,
and the queue row is keyed by the record id, so a replay never queues a board twice.

A thread of its own, at the lowest CPU priority, moves each entry into ``review-images`` (PNG for
pixels, lossless), writes the queue row and removes the entry. A failure there is logged and counted
(``inspector_review_failures_total``), never raised into the line; after a full disk or a locked database
the entry stays in the spool and is tried again at the next start, an entry the queue refuses (bad data)
is dropped. When the spool holds ``BACKLOG``
entries (the writer is behind), or ``max_pending`` boards already wait for a person, new boards are
skipped and counted (``inspector_review_skipped_total``), so neither memory nor disk grows without bound.
Stored pictures are aged out by ``review_retention.PictureRetention`` when one is given.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
from prometheus_client import Counter

from inspector.review_queue import ReviewBands, ReviewError, ReviewQueue, rank, review_entries
from inspector.service.review_spool import SPOOL_DIR, ReviewSpool, SpoolEntry, fsync_directory

log = logging.getLogger(__name__)
QUEUE_FILE = "review.sqlite3"
IMAGES_DIR = "review-images"
BACKLOG = 64  # boards in the spool waiting for the writer thread; more are skipped (counted), the line never waits


class ReviewFeed:
    """The service's writer into the verification queue at ``data_dir/review.sqlite3``."""

    def __init__(self, data_dir: Path, registry, line: str, near_band: ReviewBands | float, max_pending: int,
                 near_band_per_class: Optional[dict[str, float]] = None, retention=None,
                 committed: Optional[Callable[[str], bool]] = None) -> None:
        self.directory = Path(data_dir)
        self.images = self.directory / IMAGES_DIR
        self.images.mkdir(parents=True, exist_ok=True)
        self.queue = ReviewQueue(self.directory / QUEUE_FILE)
        # One band, or per class over it (ReviewBands checks both, naming the field of a bad value).
        self.bands = service_bands(near_band, near_band_per_class)
        self.max_pending = int(max_pending)
        self.retention = retention  # review_queue.retention.PictureRetention, run by the writer between boards
        # Whether a line record was committed. With it the line may offer a board before committing its record
        # (no window left between the two): an entry a crash left behind is queued only if its record made it
        # (a hot-folder file whose record did not is judged again after the restart, and offered again).
        self.committed = committed
        labels = {"line": line}
        self.enqueued = Counter("inspector_review_enqueued_total", "Boards put into the verification queue",
                                ["line"], registry=registry).labels(**labels)
        self.skipped = Counter("inspector_review_skipped_total", "Boards that wanted review but were skipped "
                               "(writer behind, or max pending reached)", ["line"], registry=registry).labels(**labels)
        self.failures = Counter("inspector_review_failures_total", "Boards that could not be written into the "
                                "verification queue (logged)", ["line"], registry=registry).labels(**labels)
        self.spool = ReviewSpool(self.directory / SPOOL_DIR)
        self.spool.clear_orphans()
        self._idle = threading.Condition()
        self._waiting: collections.deque[str] = collections.deque(self.spool.names())  # a crash's leftovers first
        self.replayed = len(self._waiting)
        self._replaying = set(self._waiting)
        if self.replayed:
            log.warning("review: %d board(s) offered before the last stop were not queued yet; queueing them now",
                        self.replayed)
        self._busy = len(self._waiting)  # entries in the spool not yet written (or failed)
        self._stuck = 0  # entries whose write failed: they stay in the spool (and count against BACKLOG)
        self._stopping = False
        self._carried: set[str] = set()  # digests of templates a spooled entry carries and the writer has not stored
        self.boards_seen = 0  # every board offered, queued or not: how far the line has handed boards over
        self._thread = threading.Thread(target=self._write_loop, name="review-feed", daemon=True)
        self._thread.start()

    def offer(self, record_id: str, frame_id: str, image: np.ndarray, template: Optional[np.ndarray],
              detections: list[dict], unknown_changes: list[dict], score_threshold: float,
              class_names: list[str], model: str, file: Optional[Path] = None,
              file_version: Optional[str] = None) -> bool:
        """Spool a judged board when a review would teach something; True once it is on disk (it then reaches
        the queue even across a crash). Never waits for the writer and never raises: this runs on the
        inspection worker."""
        try:
            if rank(detections, unknown_changes, float(score_threshold), self.bands) is None:
                return False
            with self._idle:
                if self._busy + self._stuck >= BACKLOG:
                    self.skipped.inc()
                    log.warning("review queue writer is behind: %s not queued for review", frame_id)
                    return False
            digest = None if template is None else \
                hashlib.sha1(np.ascontiguousarray(template).tobytes()).hexdigest()[:20]
            with self._idle:
                known = digest is None or digest in self._carried
            if not known and self._template_path(digest).is_file():
                os.utime(self._template_path(digest))  # in use again: retention leaves a recent template alone
                known = True
            meta = {"record_id": str(record_id), "frame_id": frame_id, "detections": detections,
                    "unknown_changes": unknown_changes, "score_threshold": float(score_threshold),
                    "class_names": list(class_names), "model": model, "template_digest": digest}
            name = self.spool.put(meta, image, file, file_version, None if known else template)
            with self._idle:
                if digest is not None and not known:
                    self._carried.add(digest)
                self._busy += 1
                self._waiting.append(name)
                self._idle.notify_all()
            return True
        except Exception:  # a bug, or a disk that refuses the spool, must not cost the line a board
            self.failures.inc()
            log.exception("%s: not offered for review", frame_id)
            return False
        finally:
            with self._idle:
                self.boards_seen += 1
                self._idle.notify_all()

    def offer_found(self, record_id: str, frame_id: str, image: np.ndarray, template: Optional[np.ndarray], found,
                    score_threshold: float, class_names: list[str], model: str, file: Optional[Path] = None,
                    file_version: Optional[str] = None, ignore=()) -> bool:
        """``offer`` for the runtime's result (a frame's ``Detections`` or a whole panel's): its detections
        outside ``ignore`` and its unknown changes, a panel's with their golden-panel boxes and tiles."""
        try:
            detections, changes = review_entries(found, ignore)
        except Exception:  # a bug here must not cost the line a board
            with self._idle:
                self.boards_seen += 1
                self._idle.notify_all()
            self.failures.inc()
            log.exception("%s: not offered for review", frame_id)
            return False
        return self.offer(record_id, frame_id, image, template, detections, changes, score_threshold, class_names,
                          model, file, file_version)

    def candidate_threshold(self, decision_threshold: float) -> float:
        """The score the detector must be asked for so every class's band below ``decision_threshold`` is seen."""
        return max(0.0, float(decision_threshold) - self.bands.widest)

    def check_classes(self, class_names: list[str]) -> None:
        """ReviewError when a per-class band names a class the model does not have (call on a model load)."""
        self.bands.check_classes(class_names, "review_near_band_per_class")

    def wait_idle(self, timeout: float, boards: int = 0) -> bool:
        """True once at least ``boards`` boards were offered and every spooled one is written (picture
        retention run after it) or has failed (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self.boards_seen >= boards and self._busy == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what was spooled (up to ``timeout``; the rest stays in the spool for the next start), then
        close the database."""
        self.wait_idle(timeout)
        with self._idle:
            self._stopping = True
            self._idle.notify_all()
        self._thread.join(timeout=timeout)
        if not self._thread.is_alive():
            self.queue.close()

    # ------------------------------------------------------------------ the writer thread

    def _write_loop(self) -> None:
        try:  # Linux threads have a nice value of their own: the writer takes CPU the line leaves idle
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError) as error:
            log.info("review writer keeps the normal priority (%s)", error)
        while True:
            with self._idle:
                self._idle.wait_for(lambda: self._waiting or self._stopping)
                if not self._waiting:
                    return
                name = self._waiting.popleft()
            frame_id, digest = name, None
            try:
                entry = self.spool.load(name)
                frame_id, digest = entry.meta["frame_id"], entry.meta.get("template_digest")
                if name in self._replaying and self.committed is not None and \
                        not self.committed(entry.meta["record_id"]):
                    log.warning("%s: its record %s was never committed (a crash came first); not queued",
                                frame_id, entry.meta["record_id"])
                elif self._write(entry):
                    self.enqueued.inc()
                self.spool.remove(name)
            except (ReviewError, ValueError, KeyError, TypeError) as error:  # the entry itself is bad: no retry
                self.failures.inc()
                log.error("%s: not written into the verification queue %s: %s", frame_id, self.queue.path, error)
                self.spool.remove(name)
                with self._idle:
                    self._carried.discard(digest)  # the next board with it carries the template again
            except Exception as error:  # the disk or the database: the entry stays, tried again at the next start
                self.failures.inc()
                log.error("%s: not written into the verification queue %s: %s", frame_id, self.queue.path, error)
                with self._idle:
                    self._stuck += 1
                    self._carried.discard(digest)
            finally:
                # Retention first: a board counts as done (wait_idle) once the pictures are within limits again.
                self._retain()
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _write(self, entry: SpoolEntry) -> bool:
        """Pictures into review-images, then the row. Safe to repeat after a crash at any point."""
        meta = entry.meta
        record_id = meta["record_id"]
        if self.queue.item_for_record(record_id) is not None:
            return False  # a crash came after the row and before the clean-up: queued already
        if self._count_pending() >= self.max_pending:
            self.skipped.inc()
            log.warning("%s: not queued for review: %d boards already wait (review_max_pending)", meta["frame_id"],
                        self.max_pending)
            return False
        image_path = self._store_picture(entry, record_id)
        template_path = None
        if meta.get("template_digest"):
            template_path = self._template_path(meta["template_digest"])
            if entry.template is not None and not template_path.is_file():
                _write_png(template_path, np.load(entry.template, allow_pickle=False))
            with self._idle:
                self._carried.discard(meta["template_digest"])
            if not template_path.is_file():  # removed by retention after the offer found it: the board still counts
                log.warning("%s: queued without its golden template (%s was removed meanwhile)", meta["frame_id"],
                            template_path.name)
                template_path = None
        try:
            item = self.queue.offer(image_path, meta["detections"], meta["score_threshold"], meta["class_names"],
                                    template_path, meta["unknown_changes"], source=meta["frame_id"],
                                    model=meta["model"], near_band=self.bands, record_id=record_id)
        except ReviewError:  # refused for good: its picture would be an orphan
            image_path.unlink(missing_ok=True)
            raise
        if item is None:  # the queue ranks it the same way; nothing to keep
            image_path.unlink(missing_ok=True)
        return item is not None

    def _store_picture(self, entry: SpoolEntry, record_id: str) -> Path:
        stem = _safe_name(record_id)
        if entry.picture is None:  # moved before a crash: find it where it went
            stored = sorted(self.images.glob(f"{stem}.*"))
            if not stored:
                raise ReviewError(f"record {record_id}: its picture is neither in the spool nor stored")
            return stored[0]
        if entry.picture.suffix == ".npy":
            target = self.images / f"{stem}.png"
            _write_png(target, np.load(entry.picture, allow_pickle=False))
            return target
        target = self.images / f"{stem}{entry.picture.suffix}"
        os.replace(entry.picture, target)  # the scanner's own bytes (flushed by the spool); same file system
        fsync_directory(self.images)
        return target

    def _template_path(self, digest: str) -> Path:
        return self.images / f"template-{digest}.png"

    def _count_pending(self) -> int:
        return sum(self.queue.counts()["pending"].values())

    def _retain(self) -> None:
        if self.retention is None:
            return
        try:
            self.retention.maybe_run(self.queue, self.images)
        except Exception:  # retention is housekeeping: never stops the writer
            log.exception("review picture retention failed")


def service_bands(near_band: ReviewBands | float, per_class: Optional[dict[str, float]] = None) -> ReviewBands:
    """The service's ``review_near_band`` and ``review_near_band_per_class`` as one ``ReviewBands``; a bad
    value is refused naming the service's setting (``review_near_band_per_class.spur: expected ...``)."""
    bands = ReviewBands.of(near_band)
    if not per_class:
        return bands
    try:
        return ReviewBands(near_band=bands.near_band, per_class={**bands.per_class, **per_class})
    except ReviewError as error:
        field = getattr(error, "field", None) or "per_class"
        setting = "review_near_band" if field == "near_band" else "review_near_band_" + field
        raise ReviewError(f"{setting}: {getattr(error, 'problem', error)}") from None


def _safe_name(record_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(record_id))[:120] or "record"


def _write_png(path: Path, image: np.ndarray) -> None:
    """Written whole or not at all (temporary file, then renamed)."""
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"{path.name}: the image could not be encoded as PNG")
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(encoded.tobytes())
            stream.flush()
            os.fsync(stream.fileno())  # on disk before the row that points at it (the spool entry then goes)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
