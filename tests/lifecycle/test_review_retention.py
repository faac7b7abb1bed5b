"""Picture retention of the verification queue: reviewed boards' pictures age out and give way to the size limit,
pending boards keep theirs until the hard cap, the least instructive going first, and nothing outside the
picture folder is touched."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.review_queue import ReviewError, ReviewQueue
from inspector.review_queue.retention import PictureRetention

CLASSES = ["open", "short"]
SIZE = 1000  # bytes of every picture here


def _det(score: float) -> list[dict]:
    return [{"box": [1, 1, 9, 9], "score": score, "class_name": "open"}]


def _picture(folder: Path, name: str, size: int = SIZE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture()
def queue(tmp_path):
    opened = ReviewQueue(tmp_path / "queue.db")
    yield opened
    opened.close()


def _fill(queue: ReviewQueue, images: Path) -> dict[str, int]:
    """Three boards reviewed (a, then b, then c) and three pending: near the threshold, unknown change, NG."""
    template = _picture(images, "template-1.png", 10)
    ids = {}
    for name, score in (("a", 0.55), ("b", 0.56), ("c", 0.57), ("near", 0.52), ("ng", 0.99)):
        ids[name] = queue.offer(_picture(images, f"{name}.png"), _det(score), 0.5, CLASSES, template_path=template)
    ids["change"] = queue.offer(_picture(images, "change.png"), [], 0.5, CLASSES, template_path=template,
                                unknown_changes=[{"box": [0, 0, 9, 9], "area": 50}])
    for name in ("a", "b", "c"):
        queue.decide(ids[name], "ann", [{"index": 0, "verdict": "confirm"}])
    return ids


def test_reviewed_pictures_age_out_and_pending_ones_stay_whatever_their_age(queue, tmp_path):
    images = tmp_path / "review-images"
    ids = _fill(queue, images)
    retention = PictureRetention(max_age_days=30, max_bytes=None, hard_cap_bytes=None)
    assert retention.run(queue, images).reviewed == 0  # decided just now: kept
    later = datetime.now(timezone.utc) + timedelta(days=31)
    report = retention.run(queue, images, now=later)
    assert (report.reviewed, report.expired) == (3, 0) and report.bytes_after == report.bytes_before - 3 * SIZE
    for name in ("a", "b", "c"):
        assert not (images / f"{name}.png").exists() and queue.get(ids[name]).pictures_removed_at is not None
        assert queue.labels(ids[name])  # the decision itself stays
    for name in ("near", "ng", "change"):
        assert (images / f"{name}.png").exists() and queue.get(ids[name]).status == "pending"
    assert (images / "template-1.png").exists()  # still used by the pending boards
    assert queue.counts() == {"pending": {"near_threshold": 1, "unknown_change": 1, "ng": 1}, "reviewed": 3,
                              "expired": 0}
    assert queue.export_voc(tmp_path / "export") == []  # nothing left to copy; an earlier export keeps its own
    with pytest.raises(ReviewError, match=f"review item {ids['a']}: its pictures were removed"):
        queue.decide(ids["a"], "ben", [{"index": 0, "verdict": "reject"}])


def test_over_the_size_limit_the_longest_decided_pictures_go_first_and_pending_ones_stay(queue, tmp_path):
    images = tmp_path / "review-images"
    ids = _fill(queue, images)
    report = PictureRetention(max_age_days=None, max_bytes=4 * SIZE + 10, hard_cap_bytes=None).run(queue, images)
    assert (report.reviewed, report.expired, report.bytes_after) == (2, 0, 4 * SIZE + 10)
    assert [name for name in ("a", "b", "c") if (images / f"{name}.png").exists()] == ["c"]  # a, b decided first
    # Below max_bytes only by removing pending pictures, which the size limit never does.
    report = PictureRetention(max_age_days=None, max_bytes=SIZE, hard_cap_bytes=None).run(queue, images)
    assert (report.reviewed, report.expired) == (1, 0)
    assert all(queue.get(ids[n]).status == "pending" and (images / f"{n}.png").exists() for n in ("near", "ng", "change"))


def test_above_the_hard_cap_pending_pictures_go_least_instructive_first_and_leave_the_queue(queue, tmp_path):
    images = tmp_path / "review-images"
    ids = _fill(queue, images)
    retention = PictureRetention(max_age_days=None, max_bytes=SIZE, hard_cap_bytes=SIZE + 10)
    report = retention.run(queue, images)
    # Reviewed first (all three), then the confident NG board, then the unknown change; the near-threshold stays.
    assert (report.reviewed, report.expired, report.bytes_after) == (3, 2, SIZE + 10)
    assert queue.get(ids["ng"]).status == "expired" and queue.get(ids["change"]).status == "expired"
    assert [item.id for item in queue.pending()] == [ids["near"]] and (images / "near.png").exists()
    assert queue.counts()["expired"] == 2 and queue.counts()["pending"] == {"near_threshold": 1}
    assert retention.run(queue, images).expired == 0  # under the cap: nothing more goes


def test_orphans_and_unused_templates_age_out_and_files_outside_the_folder_are_never_touched(queue, tmp_path):
    images = tmp_path / "review-images"
    dataset = _picture(tmp_path / "dataset", "board.jpg")  # a queue fed from a dataset (benchmarks) keeps its files
    outside = queue.offer(dataset, _det(0.99), 0.5, CLASSES)
    queue.decide(outside, "ann", [{"index": 0, "verdict": "confirm"}])
    used = _picture(images, "template-used.png")
    queue.offer(_picture(images, "kept.png"), _det(0.52), 0.5, CLASSES, template_path=used)
    orphan, unused, fresh = (_picture(images, n) for n in ("crashed-write.png", "template-old.png", "new.png"))
    writing = _picture(images, ".kept.png.tmp123")  # a writer's temporary file
    month_ago = (datetime.now(timezone.utc) - timedelta(days=40)).timestamp()
    for path in (orphan, unused, used, writing):
        os.utime(path, (month_ago, month_ago))
    report = PictureRetention(max_age_days=30, max_bytes=None, hard_cap_bytes=None).run(queue, images)
    assert report.orphans == 2 and not orphan.exists() and not unused.exists()
    assert used.exists() and fresh.exists() and writing.exists() and dataset.exists()
    assert queue.get(outside).pictures_removed_at is None


@pytest.mark.parametrize("settings, message", [
    ({"max_bytes": 100, "hard_cap_bytes": 50}, r"hard_cap_bytes: expected at least max_bytes \(100\), got 50"),
    ({"max_age_days": -1.0}, r"max_age_days: expected more than 0, got -1.0"),
    ({"max_bytes": "lots"}, r"max_bytes: expected int or null"),
])
def test_bad_retention_settings_are_refused_naming_the_field(settings, message):
    with pytest.raises(ReviewError, match=message):
        PictureRetention(**settings)
    with pytest.raises(ReviewError, match=r"unknown review retention setting 'max_byte'; did you mean 'max_bytes'"):
        PictureRetention.from_dict({"max_byte": 1})


def test_the_feed_keeps_its_pictures_under_the_hard_cap_while_the_line_runs(tmp_path):
    from inspector.service.review_feed import ReviewFeed

    picture_bytes = 48 * 64 * 3  # raw pixels; PNG of noise is about as large
    retention = PictureRetention(max_age_days=None, max_bytes=2 * picture_bytes, hard_cap_bytes=4 * picture_bytes,
                                 interval_s=0)
    feed = ReviewFeed(tmp_path / "data", CollectorRegistry(), "line1", near_band=0.15, max_pending=100,
                      retention=retention)
    try:
        for index in range(8):  # the first boards are the most instructive (closest to the threshold)
            image = np.random.default_rng(index).integers(0, 255, (48, 64, 3), np.uint8)
            assert feed.offer(f"rec-{index}", f"b{index}", image, None, _det(0.5 + 0.01 * (index + 1)), [], 0.5,
                              CLASSES, "m")
            assert feed.wait_idle(30, boards=index + 1)
        # wait_idle: the writer is done with the board, retention included, so the cap holds exactly (and the
        # queue is not being pruned while it is read below).
        on_disk = sum(p.stat().st_size for p in feed.images.iterdir())
        assert on_disk <= retention.hard_cap_bytes
        pending = [item.record_id for item in feed.queue.pending()]
        assert pending[0] == "rec-0" and feed.queue.counts()["expired"] == 8 - len(pending) > 0
        assert all(Path(item.image_path).is_file() for item in feed.queue.pending())
    finally:
        feed.close()


def test_inspector_review_prune_applies_the_retention_from_a_shell(tmp_path):
    from typer.testing import CliRunner

    from inspector.cli import app

    data = tmp_path / "data"
    queue = ReviewQueue(data / "review.sqlite3")
    ids = _fill(queue, data / "review-images")
    queue.close()
    runner = CliRunner()
    bad = runner.invoke(app, ["review", "prune", "--queue", str(data / "review.sqlite3"), "--max-gb", "2",
                              "--hard-cap-gb", "1"])
    assert bad.exit_code == 2 and "--hard-cap-gb: expected at least max_bytes" in bad.output
    tiny = 1 / (1 << 30)  # a byte, in GiB
    done = runner.invoke(app, ["review", "prune", "--queue", str(data / "review.sqlite3"), "--max-gb",
                               str(SIZE * tiny), "--hard-cap-gb", str(4 * SIZE * tiny)])
    assert done.exit_code == 0, done.output
    assert '"reviewed": 3' in done.output and '"expired": 0' in done.output  # 3 pending pictures: under the cap
    reopened = ReviewQueue(data / "review.sqlite3")
    try:
        assert len(reopened.pending()) == 3 and reopened.get(ids["a"]).pictures_removed_at is not None
    finally:
        reopened.close()
