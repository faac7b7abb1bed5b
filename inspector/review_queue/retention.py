"""How long the verification queue keeps its pictures, and how much disk they may take.

The line stores a picture per queued board (``data_dir/review-images``); on a busy line that grows by
gigabytes a day. ``PictureRetention`` bounds it without ever losing a board a person still has to look at:

1. **Reviewed boards** keep their pictures ``max_age_days`` after their latest decision; then the pictures
   go (the decision stays: who, when, verdicts, boxes). Export before that: ``export_voc`` copies the
   pictures into the training set, and later exports leave those copies as they are.
2. **Size**: while the folder holds more than ``max_bytes``, the pictures of reviewed boards go, the
   longest-decided first, whatever their age.
3. **Pending boards** (undecided) keep their pictures whatever their age and the ``max_bytes`` limit. Only
   when the folder is still above ``hard_cap_bytes`` (a disk that would otherwise fill up and stop the
   line's records) do pending boards lose theirs, the least instructive first (the end of the queue:
   confident NG boards before unknown changes before near-threshold ones, newest last), until the folder is
   under the hard cap; such a board leaves the queue with status ``expired`` and is counted as such.
4. Pictures no item refers to (a write that failed half way) and golden templates no kept item refers to
   go once older than ``max_age_days`` (a template still in use is never removed; one a new board needs
   again is written again).

Only files inside the picture folder are touched: a queue fed from a dataset (benchmarks) keeps its
files. Sizes are measured on disk each run; a run between two boards costs a directory scan and a query.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from inspector.config_base import ConfigBase, setting
from inspector.review_queue.ranking import ReviewError
from inspector.review_queue.store import ReviewQueue

log = logging.getLogger(__name__)
GIB = 1 << 30


@dataclass(frozen=True)
class RetentionReport:
    reviewed: int  # reviewed boards whose pictures went (age or size)
    expired: int  # pending boards whose pictures went (hard cap): they left the queue
    orphans: int  # files no kept item referred to
    bytes_before: int
    bytes_after: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PictureRetention(ConfigBase):
    """The limits (see the module docstring); None switches one off. Errors name the field."""

    KIND = "review retention setting"
    SOURCE = "review retention"
    ERROR = ReviewError

    max_age_days: float | None = setting(90.0, above=0)
    max_bytes: int | None = setting(10 * GIB, above=0)
    hard_cap_bytes: int | None = setting(20 * GIB, above=0)
    interval_s: float = setting(600.0, at_least=0)  # ``maybe_run``: at most one run this often

    def _prepare(self) -> None:
        self._last_run: float | None = None

    def _check(self) -> None:
        if self.max_bytes is not None and self.hard_cap_bytes is not None and self.hard_cap_bytes < self.max_bytes:
            raise self._invalid("hard_cap_bytes", f"expected at least max_bytes ({self.max_bytes}), got "
                                f"{self.hard_cap_bytes}: pending boards would go before reviewed ones")

    def maybe_run(self, queue: ReviewQueue, images: Path) -> RetentionReport | None:
        """``run`` when ``interval_s`` has passed since the last one (the first call always runs)."""
        now = time.monotonic()
        if self._last_run is not None and now - self._last_run < self.interval_s:
            return None
        self._last_run = now
        report = self.run(queue, images)
        if report.reviewed or report.expired or report.orphans:
            log.info("review picture retention: %s", report.to_dict())
        if report.expired:
            log.warning("review pictures above the hard cap (%d bytes): %d pending board(s) expired unreviewed",
                        self.hard_cap_bytes, report.expired)
        return report

    def run(self, queue: ReviewQueue, images: Path, now: datetime | None = None) -> RetentionReport:
        now = now or datetime.now(timezone.utc)
        images = Path(images).resolve()
        sizes = _file_sizes(images)
        before = total = sum(sizes.values())
        rows = [row for row in queue.picture_rows() if _inside(row["image_path"], images)]
        referenced = {str(Path(row["image_path"]).resolve()) for row in rows}
        referenced |= {str(Path(p).resolve()) for p in queue.template_paths_in_use()}

        def drop(path: str | None) -> int:
            resolved = str(Path(path).resolve()) if path else None
            freed = sizes.pop(resolved, 0) if resolved else 0
            if resolved and freed:
                Path(resolved).unlink(missing_ok=True)
            return freed

        oldest = None if self.max_age_days is None else now - timedelta(days=self.max_age_days)
        orphans = 0
        for path in [p for p in sizes if p not in referenced]:
            if oldest is not None and datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc) < oldest:
                total -= drop(path)
                orphans += 1

        reviewed = sorted((row for row in rows if row["status"] == "reviewed" and row["decided_at"]),
                          key=lambda row: (row["decided_at"], row["id"]))
        removed_reviewed = 0
        for row in reviewed:
            too_old = oldest is not None and datetime.fromisoformat(row["decided_at"]) < oldest
            too_big = self.max_bytes is not None and total > self.max_bytes
            if not (too_old or too_big):
                continue
            total -= drop(row["image_path"])
            queue.mark_pictures_removed(row["id"], expire=False)
            removed_reviewed += 1

        expired = 0
        if self.hard_cap_bytes is not None and total > self.hard_cap_bytes:
            # The end of the queue first: what a person would reach last.
            pending = sorted((row for row in rows if row["status"] == "pending"),
                             key=lambda row: (row["rank_group"], row["rank_value"], row["id"]), reverse=True)
            for row in pending:
                if total <= self.hard_cap_bytes:
                    break
                total -= drop(row["image_path"])
                queue.mark_pictures_removed(row["id"], expire=True)
                expired += 1
        return RetentionReport(removed_reviewed, expired, orphans, before, total)


def _file_sizes(folder: Path) -> dict[str, int]:
    """Bytes of every finished picture (temporary files, starting with a dot, are a writer's own)."""
    if not folder.is_dir():
        return {}
    sizes = {}
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith("."):
            sizes[str(path.resolve())] = path.stat().st_size
    return sizes


def _inside(path: str | None, folder: Path) -> bool:
    return bool(path) and Path(path).resolve().parent == folder
