"""Feeding the verification queue (``inspector.review_queue``) from the line, without slowing it.

The inspection worker hands every judged board to ``ReviewFeed.offer``, which only decides whether a
review would teach something (NG, a detection within ``near_band`` of the decision threshold, or an
unknown-change flag) and puts the board on a small in-memory queue: no disk access on the worker thread.
A thread of its own, at the lowest CPU priority, then writes the board's picture (the queue must
outlive the hot folder's files: a hot-folder file is copied as it is when it is still the version
judged; a camera frame, which has no file, is written as PNG, lossless), its golden template (once per
distinct template, named by its content hash) and the queue row. A failure there (full disk, a locked database)
is logged and counted (``inspector_review_failures_total``), never raised into the line; when the
writer falls behind, or ``max_pending`` boards already wait for a person, new boards are skipped and
counted (``inspector_review_skipped_total``), so neither memory nor disk grows without bound.
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from prometheus_client import Counter

from inspector.review_queue import ReviewBands, ReviewError, ReviewQueue, rank, review_entries

log = logging.getLogger(__name__)
QUEUE_FILE = "review.sqlite3"
IMAGES_DIR = "review-images"
BACKLOG = 64  # boards waiting for the writer thread; more are skipped (counted), the line never waits


@dataclass(frozen=True)
class _Offer:
    record_id: str
    frame_id: str
    image: np.ndarray
    template: Optional[np.ndarray]
    detections: list[dict]
    unknown_changes: list[dict]
    score_threshold: float
    class_names: list[str]
    model: str
    file: Optional[Path]  # the hot-folder file the frame was read from: copied as it is when unchanged
    file_version: Optional[str]  # its "size:mtime_ns" when it was judged


class ReviewFeed:
    """The service's writer into the verification queue at ``data_dir/review.sqlite3``."""

    def __init__(self, data_dir: Path, registry, line: str, near_band: ReviewBands | float, max_pending: int,
                 near_band_per_class: Optional[dict[str, float]] = None) -> None:
        self.directory = Path(data_dir)
        self.images = self.directory / IMAGES_DIR
        self.images.mkdir(parents=True, exist_ok=True)
        self.queue = ReviewQueue(self.directory / QUEUE_FILE)
        # One band, or per class over it (ReviewBands checks both, naming the field of a bad value).
        self.bands = service_bands(near_band, near_band_per_class)
        self.max_pending = int(max_pending)
        labels = {"line": line}
        self.enqueued = Counter("inspector_review_enqueued_total", "Boards put into the verification queue",
                                ["line"], registry=registry).labels(**labels)
        self.skipped = Counter("inspector_review_skipped_total", "Boards that wanted review but were skipped "
                               "(writer behind, or max pending reached)", ["line"], registry=registry).labels(**labels)
        self.failures = Counter("inspector_review_failures_total", "Boards that could not be written into the "
                                "verification queue (logged)", ["line"], registry=registry).labels(**labels)
        self._backlog: queue.Queue[Optional[_Offer]] = queue.Queue(maxsize=BACKLOG)
        self._idle = threading.Condition()
        self._busy = 0  # offers accepted and not yet written (or failed)
        self.boards_seen = 0  # every board offered, queued or not: how far the line has handed boards over
        self._thread = threading.Thread(target=self._write_loop, name="review-feed", daemon=True)
        self._thread.start()

    def offer(self, record_id: str, frame_id: str, image: np.ndarray, template: Optional[np.ndarray],
              detections: list[dict], unknown_changes: list[dict], score_threshold: float,
              class_names: list[str], model: str, file: Optional[Path] = None,
              file_version: Optional[str] = None) -> bool:
        """Queue a judged board for writing when a review would teach something; True when accepted.
        Never blocks and never raises: this runs on the inspection worker."""
        try:
            return self._accept(_Offer(record_id, frame_id, image, template, detections, unknown_changes,
                                       float(score_threshold), list(class_names), model, file, file_version))
        except Exception:  # a bug here must not cost the line a board
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

    def _accept(self, offer: _Offer) -> bool:
        try:
            if rank(offer.detections, offer.unknown_changes, offer.score_threshold, self.bands) is None:
                return False
            with self._idle:
                self._busy += 1
            try:
                self._backlog.put_nowait(offer)
            except queue.Full:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()
                self.skipped.inc()
                log.warning("review queue writer is behind: %s not queued for review", offer.frame_id)
                return False
            return True
        except Exception:  # a bug here must not cost the line a board
            self.failures.inc()
            log.exception("%s: not offered for review", offer.frame_id)
            return False

    def candidate_threshold(self, decision_threshold: float) -> float:
        """The score the detector must be asked for so every class's band below ``decision_threshold`` is seen."""
        return max(0.0, float(decision_threshold) - self.bands.widest)

    def check_classes(self, class_names: list[str]) -> None:
        """ReviewError when a per-class band names a class the model does not have (call on a model load)."""
        self.bands.check_classes(class_names, "review_near_band_per_class")

    def wait_idle(self, timeout: float, boards: int = 0) -> bool:
        """True once at least ``boards`` boards were offered and every accepted one is written or has
        failed (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self.boards_seen >= boards and self._busy == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what was accepted (up to ``timeout``), then close the database."""
        self.wait_idle(timeout)
        self._backlog.put(None)
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
            offer = self._backlog.get()
            if offer is None:
                return
            try:
                if self._count_pending() >= self.max_pending:
                    self.skipped.inc()
                    log.warning("%s: not queued for review: %d boards already wait (review_max_pending)",
                                offer.frame_id, self.max_pending)
                elif self._write(offer):
                    self.enqueued.inc()
            except Exception as error:
                self.failures.inc()
                log.error("%s: not written into the verification queue %s: %s", offer.frame_id, self.queue.path,
                          error)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _write(self, offer: _Offer) -> bool:
        image_path = _copy_unchanged(offer.file, offer.file_version, self.images / offer.record_id)
        if image_path is None:  # a camera frame, or the file changed since: the judged pixels, losslessly
            image_path = self.images / f"{offer.record_id}.png"
            _write_png(image_path, offer.image)
        template_path = None
        if offer.template is not None:
            digest = hashlib.sha1(np.ascontiguousarray(offer.template).tobytes()).hexdigest()[:20]
            template_path = self.images / f"template-{digest}.png"
            if not template_path.is_file():
                _write_png(template_path, offer.template)
        item = self.queue.offer(image_path, offer.detections, offer.score_threshold, offer.class_names,
                                template_path, offer.unknown_changes, source=offer.frame_id, model=offer.model,
                                near_band=self.bands)
        if item is None:  # the queue ranks it the same way; nothing to keep
            image_path.unlink(missing_ok=True)
        return item is not None

    def _count_pending(self) -> int:
        return sum(self.queue.counts()["pending"].values())


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


def _copy_unchanged(file: Optional[Path], version: Optional[str], stem: Path) -> Optional[Path]:
    """The judged file's bytes as ``stem`` + its suffix (no re-encoding: the scanner's own file), when it is
    still the version that was judged (size and mtime before and after reading); else None."""
    if file is None or version is None:
        return None

    def current() -> Optional[str]:
        try:
            stat = os.stat(file)
        except OSError:
            return None
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    if current() != version:
        return None
    try:
        data = Path(file).read_bytes()
    except OSError:
        return None
    if current() != version:
        return None
    target = stem.with_name(stem.name + Path(file).suffix.lower())
    _write_bytes(target, data)
    return target


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"{path.name}: the image could not be encoded as PNG")
    _write_bytes(path, encoded.tobytes())


def _write_bytes(path: Path, data: bytes) -> None:
    """Written whole or not at all (temporary file, then renamed)."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
