"""A board the line has handed to the verification queue survives a crash: a process feeding the queue is killed
(SIGKILL, no clean-up) at each step between the hand-over and the queue row, and the next start queues every
board exactly once, with its picture.

The child process (``child_main``, run with ``python -c``) offers ``BOARDS`` boards while its writer thread is
held at one step for one record: before it writes anything, after the picture is stored but before the row,
or after the row but before the spool entry is removed. It says when every offer has returned and when the
writer is held; then it is killed. Half the boards come from files (copied as the scanner wrote them, and
deleted after the offer, as a hot folder's clean-up may), half are camera frames (pixels only).
"""
from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.service.review_feed import ReviewFeed

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BOARDS = 8
VICTIM = "rec-3"  # the record the writer is held at
CLASSES = ["open", "short"]


def board(index: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 255, (40, 56, 3), np.uint8)


def template(index: int) -> np.ndarray:
    return np.full((40, 56, 3), 20 * (index % 2), np.uint8)  # two distinct templates


def offer_all(feed: ReviewFeed, folder: Path) -> None:
    for index in range(BOARDS):
        file = version = None
        if index % 2 == 0:
            file = folder / f"board{index}.png"
            cv2.imwrite(str(file), board(index))
            stat = file.stat()
            version = f"{stat.st_size}:{stat.st_mtime_ns}"
        detections = [{"box": [1, 2, 10, 12], "score": 0.45 + index / 1000, "class_name": "open"}]
        accepted = feed.offer(f"rec-{index}", f"board{index}", board(index), template(index), detections, [], 0.5,
                              CLASSES, "m (p)", file=file, file_version=version)
        assert accepted, index
        if file is not None:
            file.unlink()  # acknowledged: the hot folder may move or delete it now


def say(word: str) -> None:
    """One line in one write(2): the main thread and the writer thread speak at the same moment, and print()
    writes the text and the newline separately (the two could interleave as "offeredheld")."""
    os.write(sys.stdout.fileno(), f"{word}\n".encode())


def child_main(data: str, folder: str, step: str) -> None:
    """Run in a child process: hold the writer at ``step`` for VICTIM, offer every board, then wait to be killed."""
    import faulthandler

    from inspector.review_queue import store
    from inspector.service import review_feed, review_spool

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for every thread's stack if it waits

    def held(original, record_of):
        def wrapper(*args, **kwargs):
            if record_of(*args, **kwargs) == VICTIM:
                say("held")
                threading.Event().wait()  # until killed
            return original(*args, **kwargs)
        return wrapper

    if step == "before_write":
        review_feed.ReviewFeed._write = held(review_feed.ReviewFeed._write, lambda self, entry: entry.meta["record_id"])
    elif step == "before_row":
        store.ReviewQueue.offer = held(store.ReviewQueue.offer, lambda self, *a, **k: k.get("record_id"))
    else:
        review_spool.ReviewSpool.remove = held(review_spool.ReviewSpool.remove,
                                               lambda self, name: name.split("-", 1)[1])
    feed = ReviewFeed(Path(data), CollectorRegistry(), "line1", near_band=0.15, max_pending=100)
    offer_all(feed, Path(folder))
    say("offered")
    threading.Event().wait()


def _read_until(process: subprocess.Popen, wanted: set[str], timeout: float, stderr: Path) -> None:
    """Wait (at most ``timeout`` s, never blocked in a read) until the child has said every word in ``wanted``;
    otherwise fail with what it said, its stderr and the stack of each of its threads."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in process.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while not wanted <= set(seen):
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
    except queue.Empty:
        if process.poll() is None:
            process.send_signal(signal.SIGUSR1)  # faulthandler in the child: every thread's stack into stderr
            dumped_by = time.monotonic() + 10
            while "Thread 0x" not in stderr.read_text() and time.monotonic() < dumped_by:
                time.sleep(0.1)
        raise AssertionError(f"the child said {seen}, expected {sorted(wanted)} (exit code {process.poll()}); "
                             f"its stderr:\n{stderr.read_text()}") from None


@pytest.mark.parametrize("step, left_in_spool", [
    ("before_write", BOARDS - 3),  # rec-0..2 written; rec-3 (held) and the rest only in the spool
    ("before_row", BOARDS - 3),  # rec-3's picture already moved to review-images, no row yet
    ("before_cleanup", BOARDS - 3),  # rec-3's row written, its spool entry not yet removed
])
def test_a_killed_feed_loses_no_board_and_queues_none_twice(tmp_path, step, left_in_spool):
    data, folder = tmp_path / "data", tmp_path / "hot"
    folder.mkdir()
    stderr = tmp_path / "child-stderr.txt"
    with stderr.open("w") as errors:  # a file, not a pipe nobody reads: the child can never block writing to it
        child = subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]; "
                                   f"import test_review_durability as t; t.child_main({str(data)!r}, "
                                   f"{str(folder)!r}, {step!r})"],
            stdout=subprocess.PIPE, stderr=errors, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _read_until(child, {"offered", "held"}, 120, stderr)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL

    restarted = ReviewFeed(data, CollectorRegistry(), "line1", near_band=0.15, max_pending=100)
    try:
        assert restarted.replayed == left_in_spool
        assert restarted.wait_idle(60)
        assert restarted.failures._value.get() == 0
        items = restarted.queue.pending(limit=100)
        assert sorted(item.record_id for item in items) == sorted(f"rec-{i}" for i in range(BOARDS))
        for item in items:
            index = int(item.record_id.split("-")[1])
            stored = cv2.imread(item.image_path, cv2.IMREAD_UNCHANGED)
            assert np.array_equal(stored, board(index)), item.record_id  # the judged pixels, losslessly
            assert Path(item.image_path).suffix == ".png"
            assert np.array_equal(cv2.imread(item.template_path, cv2.IMREAD_UNCHANGED), template(index))
        assert restarted.spool.names() == [] and not any(restarted.spool.directory.iterdir())
        # One picture per record and one per template: nothing orphaned by the crash.
        assert len(list(restarted.images.glob("rec-*"))) == BOARDS
        assert len(list(restarted.images.glob("template-*"))) == 2
    finally:
        restarted.close()
    with sqlite3.connect(data / "review.sqlite3") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT record_id) FROM items").fetchone() == (BOARDS, BOARDS)


def test_a_replayed_record_already_queued_is_not_queued_again(tmp_path):
    feed = ReviewFeed(tmp_path / "data", CollectorRegistry(), "line1", near_band=0.15, max_pending=100)
    try:
        detections = [{"box": [1, 2, 10, 12], "score": 0.45, "class_name": "open"}]
        assert feed.offer("rec-1", "a", board(1), None, detections, [], 0.5, CLASSES, "m")
        assert feed.offer("rec-1", "a", board(1), None, detections, [], 0.5, CLASSES, "m")  # offered twice
        assert feed.wait_idle(30, boards=2)
        assert [item.record_id for item in feed.queue.pending()] == ["rec-1"]
        assert feed.enqueued._value.get() == 1 and feed.failures._value.get() == 0
    finally:
        feed.close()


def test_a_board_offered_before_its_record_committed_is_queued_after_a_crash_only_if_the_record_made_it(tmp_path):
    """The line may offer before it commits (no window at all): a spooled board whose record a crash kept from
    the journal is dropped at the restart, since its hot-folder file is judged and offered again."""
    from inspector.service.review_spool import SPOOL_DIR, ReviewSpool

    spool = ReviewSpool(tmp_path / "data" / SPOOL_DIR)  # what a killed line left: two boards spooled
    for index in (1, 2):
        meta = {"record_id": f"rec-{index}", "frame_id": f"b{index}", "detections": [
            {"box": [1, 2, 10, 12], "score": 0.45, "class_name": "open"}], "unknown_changes": [],
            "score_threshold": 0.5, "class_names": CLASSES, "model": "m", "template_digest": None}
        spool.put(meta, board(index), None, None, None)
    journal = {"rec-1"}  # rec-2's record never reached the journal
    feed = ReviewFeed(tmp_path / "data", CollectorRegistry(), "line1", near_band=0.15, max_pending=100,
                      committed=journal.__contains__)
    try:
        assert feed.replayed == 2 and feed.wait_idle(30)
        assert [item.record_id for item in feed.queue.pending()] == ["rec-1"] and spool.names() == []
        # Boards offered while running are never second-guessed: their record is committed right after.
        detections = [{"box": [1, 2, 10, 12], "score": 0.45, "class_name": "open"}]
        assert feed.offer("rec-3", "b3", board(3), None, detections, [], 0.5, CLASSES, "m")
        assert feed.wait_idle(30, boards=1)
        assert sorted(item.record_id for item in feed.queue.pending()) == ["rec-1", "rec-3"]
        assert len(list(feed.images.iterdir())) == 2  # rec-2's picture not kept
    finally:
        feed.close()


def test_an_entry_the_queue_refuses_is_dropped_and_a_disk_failure_keeps_it_for_the_next_start(tmp_path):
    data = tmp_path / "data"
    feed = ReviewFeed(data, CollectorRegistry(), "line1", near_band=0.15, max_pending=100)
    try:
        bad_class = [{"box": [1, 2, 10, 12], "score": 0.45, "class_name": "scratch"}]  # no such class
        assert feed.offer("rec-1", "b1", board(1), None, bad_class, [], 0.5, CLASSES, "m")
        assert feed.wait_idle(30, boards=1)
        assert feed.failures._value.get() == 1 and feed.spool.names() == []  # refused for good, not retried
        feed.images.rmdir()
        feed.images.write_text("the picture folder is gone")  # e.g. a share unmounted under the service
        detections = [{"box": [1, 2, 10, 12], "score": 0.45, "class_name": "open"}]
        assert feed.offer("rec-2", "b2", board(2), None, detections, [], 0.5, CLASSES, "m")
        assert feed.wait_idle(30, boards=2)
        assert feed.failures._value.get() == 2 and len(feed.spool.names()) == 1  # kept for the next start
    finally:
        feed.close()
    (data / "review-images").unlink()  # repaired
    restarted = ReviewFeed(data, CollectorRegistry(), "line1", near_band=0.15, max_pending=100)
    try:
        assert restarted.replayed == 1 and restarted.wait_idle(30)
        assert [item.record_id for item in restarted.queue.pending()] == ["rec-2"]
    finally:
        restarted.close()
