"""Verification queue: what is queued and in which order, decisions with who/when that survive a restart,
the VOC export that training reads, and the HTTP endpoints of a review station."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from inspector.data import DEEPPCB_CLASSES, load_dataset
from inspector.review_queue import ReviewError, ReviewQueue
from inspector.service.review_api import review_router

ROOT = Path(__file__).resolve().parents[2]
CLASSES = list(DEEPPCB_CLASSES)


def _det(score: float, name: str = "open", box=(10, 10, 30, 30)) -> dict:
    return {"box": list(box), "score": score, "class_name": name}


@pytest.fixture()
def demo_pairs():
    dataset = load_dataset(ROOT / "inspector/assets/deeppcb_demo")
    return dataset.samples[:3]


def test_queue_order_near_threshold_then_unknown_changes_then_ng(tmp_path):
    queue = ReviewQueue(tmp_path / "queue.db")
    threshold = 0.6
    assert queue.offer("clean.jpg", [_det(0.2)], threshold, CLASSES) is None  # far below: nothing to learn
    assert queue.offer("empty.jpg", [], threshold, CLASSES) is None
    confident = queue.offer("ng.jpg", [_det(0.95)], threshold, CLASSES)
    small_change = queue.offer("small.jpg", [], threshold, CLASSES, unknown_changes=[{"box": [0, 0, 9, 9], "area": 40}])
    big_change = queue.offer("big.jpg", [_det(0.97)], threshold, CLASSES,
                             unknown_changes=[{"box": [0, 0, 20, 20], "area": 300}])
    below = queue.offer("below.jpg", [_det(0.55), _det(0.99)], threshold, CLASSES)  # barely missed: margin 0.05
    above = queue.offer("above.jpg", [_det(0.62)], threshold, CLASSES)  # barely called: margin 0.02
    order = [item.id for item in queue.pending()]
    assert order == [above, below, big_change, small_change, confident]
    reasons = [item.reason for item in queue.pending()]
    assert reasons == ["near_threshold", "near_threshold", "unknown_change", "unknown_change", "ng"]
    assert queue.counts()["pending"] == {"near_threshold": 2, "unknown_change": 2, "ng": 1}
    with pytest.raises(ReviewError, match=r"detections\[0\]: field class_name"):
        queue.offer("x.jpg", [_det(0.7, "scratch")], threshold, CLASSES)


def test_pages_follow_the_last_board_read_whatever_was_decided_or_queued_meanwhile(tmp_path):
    """``after`` / ``through`` page by the place of a board, so a decision or a new board between two pages
    neither skips a board nor lists one twice (an offset would do both)."""
    queue = ReviewQueue(tmp_path / "queue.db")
    threshold = 0.6
    ids = [queue.offer(f"b{i}.jpg", [_det(score)], threshold, CLASSES)
           for i, score in enumerate([0.9, 0.62, 0.9, 0.9, 0.55, 0.9])]
    order = [ids[1], ids[4], ids[0], ids[2], ids[3], ids[5]]  # near the threshold, then NG; equal ranks by id
    assert [item.id for item in queue.pending()] == order
    first = [item.id for item in queue.pending(2)]
    second = [item.id for item in queue.pending(2, after=first[-1])]
    assert first + second == order[:4]  # a page ends inside a run of equal ranks: the next one goes on by id
    queue.decide(ids[4], "ann", [{"index": 0, "verdict": "confirm"}])  # listed on the first page: decided
    assert [item.id for item in queue.pending(2, after=second[-1])] == order[4:]
    assert [item.id for item in queue.pending(2, offset=4)] == order[5:]  # what an offset page would have skipped
    newest = queue.offer("new.jpg", [_det(0.61)], threshold, CLASSES)  # queued meanwhile, ranked first
    assert [item.id for item in queue.pending(2, after=second[-1])] == order[4:]
    assert [item.id for item in queue.pending(10, through=second[-1])] == [newest, ids[1], ids[0], ids[2]]
    assert [item.id for item in queue.pending(10, after=ids[1], through=ids[3])] == [ids[0], ids[2], ids[3]]
    # A board decided is still a place in the order: the boards before or after it, as before.
    assert [item.id for item in queue.pending(10, through=ids[4])] == [newest, ids[1]]
    assert [item.id for item in queue.pending(10, after=ids[4])] == [ids[0], ids[2], ids[3], ids[5]]
    with pytest.raises(ReviewError, match="pending boards after item 999: no such item"):
        queue.pending(after=999)
    with pytest.raises(ReviewError, match="pending boards through item 998: no such item"):
        queue.pending(through=998)
    queue.close()


def test_the_change_token_moves_with_every_write_from_any_connection_and_not_with_reads(tmp_path):
    """What a review window polls before re-reading its listed boards."""
    station, line = ReviewQueue(tmp_path / "queue.db"), ReviewQueue(tmp_path / "queue.db")
    first = line.offer("a.jpg", [_det(0.9)], 0.6, CLASSES)
    token = station.change_token()
    station.pending(), station.counts(), station.get(first)  # reading changes nothing
    assert station.change_token() == token
    second = line.offer("b.jpg", [_det(0.7)], 0.6, CLASSES)  # the line queues a board: another connection
    assert station.change_token() != token
    token = station.change_token()
    station.decide(first, "ann", [{"index": 0, "verdict": "confirm"}])  # this station's own decision
    assert station.change_token() != token
    token = station.change_token()
    line.mark_pictures_removed(second, expire=True)  # retention, in the service
    assert station.change_token() != token and station.counts()["expired"] == 1
    station.close(), line.close()


def test_decisions_are_validated_stored_with_who_and_when_and_survive_a_restart(tmp_path):
    path = tmp_path / "queue.db"
    queue = ReviewQueue(path)
    item = queue.offer("b.jpg", [_det(0.62, "spur"), _det(0.5, "short", (40, 40, 60, 60))], 0.6, CLASSES)
    with pytest.raises(ReviewError, match=r"no verdict for detection\(s\) \[1\]"):
        queue.decide(item, "ann", [{"index": 0, "verdict": "confirm"}])
    with pytest.raises(ReviewError, match="field class_name"):
        queue.decide(item, "ann", [{"index": 0, "verdict": "confirm", "class_name": "dust"},
                                   {"index": 1, "verdict": "reject"}])
    with pytest.raises(ReviewError, match=r"added\[0\].box"):
        queue.decide(item, "ann", [{"index": 0, "verdict": "confirm"}, {"index": 1, "verdict": "reject"}],
                     added=[{"box": [5, 5, 1, 1], "class_name": "open"}])
    assert queue.get(item).status == "pending"  # refused decisions changed nothing
    queue.decide(item, "ann", [{"index": 0, "verdict": "confirm", "class_name": "copper"},
                               {"index": 1, "verdict": "confirm", "box": [41, 41, 59, 58]}],
                 added=[{"box": [100, 100, 120, 118], "class_name": "pin-hole"}], note="checked")
    queue.close()

    reopened = ReviewQueue(path)
    assert reopened.pending() == []
    (decision,) = reopened.decisions(item)
    assert decision.decided_by == "ann" and decision.decided_at.endswith("+00:00") and decision.note == "checked"
    assert reopened.labels(item) == [([10.0, 10.0, 30.0, 30.0], "copper"), ([41.0, 41.0, 59.0, 58.0], "short"),
                                     ([100.0, 100.0, 120.0, 118.0], "pin-hole")]
    # A second look overrides the first; both stay on record.
    reopened.decide(item, "ben", [{"index": 0, "verdict": "reject"}, {"index": 1, "verdict": "reject"}])
    assert [d.decided_by for d in reopened.decisions(item)] == ["ann", "ben"]
    assert reopened.labels(item) == []


def test_export_is_pascal_voc_that_training_reads(tmp_path, demo_pairs):
    queue = ReviewQueue(tmp_path / "queue.db")
    ids = []
    for sample in demo_pairs:
        detections = [_det(0.65, CLASSES[int(c)], box) for box, c in zip(sample.boxes.tolist(), sample.classes)]
        ids.append(queue.offer(sample.image_path, detections, 0.6, CLASSES, template_path=sample.template_path,
                               source=sample.source))
    first, second, _ = demo_pairs
    queue.decide(ids[0], "ann", [{"index": i, "verdict": "confirm"} for i in range(len(first.boxes))])
    # The second board: its first defect rejected, one missed defect added.
    queue.decide(ids[1], "ann", [{"index": i, "verdict": "reject" if i == 0 else "confirm"}
                                 for i in range(len(second.boxes))],
                 added=[{"box": [5, 5, 25, 25], "class_name": "spur"}])
    written = queue.export_voc(tmp_path / "reviewed")
    assert len(written) == 2  # the third board is not reviewed: not exported

    data = load_dataset(tmp_path / "reviewed")
    assert data.format == "voc" and data.class_names == CLASSES and data.has_templates
    by_name = {Path(s.image_path).name: s for s in data.samples}
    exported_first = next(s for name, s in by_name.items() if first.image_path.stem in name)
    np.testing.assert_allclose(exported_first.boxes, first.boxes, atol=1)
    assert exported_first.classes.tolist() == first.classes.tolist()
    assert np.array_equal(exported_first.load_template(), first.load_template())
    exported_second = next(s for name, s in by_name.items() if second.image_path.stem in name)
    assert len(exported_second.boxes) == len(second.boxes)  # one rejected, one added
    assert exported_second.classes.tolist()[-1] == CLASSES.index("spur")


def test_http_review_station(tmp_path, demo_pairs):
    queue = ReviewQueue(tmp_path / "queue.db")
    sample = demo_pairs[0]
    item = queue.offer(sample.image_path, [_det(0.61, "open")], 0.6, CLASSES, template_path=sample.template_path)

    class Reviewer:
        name = "station-2"

    def authorized(request: Request) -> None:  # stands in for the service's auth dependency
        if request.headers.get("authorization") != "Bearer good":
            from fastapi import HTTPException
            raise HTTPException(status_code=401, detail="a valid bearer token is required")
        request.state.user = Reviewer()

    app = FastAPI()
    app.include_router(review_router(queue, authorized, export_dir=tmp_path / "export"))
    client = TestClient(app)
    assert client.get("/review/queue").status_code == 401
    headers = {"Authorization": "Bearer good"}
    listing = client.get("/review/queue", headers=headers).json()
    assert [i["id"] for i in listing["items"]] == [item] and listing["items"][0]["reason"] == "near_threshold"
    image = client.get(f"/review/items/{item}/image", headers=headers)
    assert image.status_code == 200 and image.content == Path(sample.image_path).read_bytes()
    assert client.get(f"/review/items/{item}/template", headers=headers).content == \
        Path(sample.template_path).read_bytes()
    assert client.get("/review/items/999", headers=headers).status_code == 404
    bad = client.post(f"/review/items/{item}/decision", headers=headers, json={"verdicts": []})
    assert bad.status_code == 400 and "no verdict for detection" in bad.json()["detail"]
    bad = client.post(f"/review/items/{item}/decision", headers=headers,
                      json={"verdicts": [{"index": 0, "verdict": "maybe"}]})
    assert bad.status_code == 422
    good = client.post(f"/review/items/{item}/decision", headers=headers,
                       json={"verdicts": [{"index": 0, "verdict": "confirm"}], "by": "ignored"})
    assert good.status_code == 200 and good.json()["decided_by"] == "station-2"  # the authenticated user
    assert client.get(f"/review/items/{item}", headers=headers).json()["decisions"][0]["decided_by"] == "station-2"
    exported = client.post("/review/export", headers=headers).json()
    assert exported["boards"] == 1
    assert len(load_dataset(tmp_path / "export")) == 1


def test_per_class_bands_decide_which_detections_are_near_their_threshold(tmp_path):
    from inspector.review_queue import ReviewBands

    queue = ReviewQueue(tmp_path / "queue.db")
    threshold = 0.6
    bands = ReviewBands(near_band=0.05, per_class={"spur": 0.3})
    # 0.4 below the threshold: outside the default band, inside spur's.
    spur = queue.offer("spur.jpg", [_det(0.4, "spur")], threshold, CLASSES, near_band=bands)
    assert queue.offer("open.jpg", [_det(0.4, "open")], threshold, CLASSES, near_band=bands) is None
    # A confident open call next to a barely made spur call: near, ranked by the spur's distance.
    both = queue.offer("both.jpg", [_det(0.99, "open"), _det(0.75, "spur")], threshold, CLASSES, near_band=bands)
    close_open = queue.offer("close.jpg", [_det(0.63, "open")], threshold, CLASSES, near_band=bands)
    # With one band (the old behaviour) the open at 0.4 is not near, and neither is the spur.
    assert queue.offer("spur2.jpg", [_det(0.4, "spur")], threshold, CLASSES, near_band=0.05) is None
    assert [(i.id, i.reason, round(i.rank_value, 3)) for i in queue.pending()] == [
        (close_open, "near_threshold", 0.03), (both, "near_threshold", 0.15), (spur, "near_threshold", 0.2)]
    assert bands.widest == 0.3 and bands.band("open") == 0.05 and bands.band("spur") == 0.3


@pytest.mark.parametrize("per_class, message", [
    ({"spur": 0.7}, r"review_near_band_per_class\.spur: expected 0\.0 <= band <= 0\.5, got 0\.7"),
    ({"spur": "wide"}, r"review_near_band_per_class: expected a mapping of str to float"),
    ({"spur": True}, r"review_near_band_per_class: expected a mapping of str to float"),
])
def test_a_bad_per_class_band_is_refused_naming_the_setting_and_class(tmp_path, per_class, message):
    from prometheus_client import CollectorRegistry

    from inspector.service.review_feed import ReviewFeed

    with pytest.raises(ReviewError, match=message):
        ReviewFeed(tmp_path / "data", CollectorRegistry(), "line1", near_band=0.1, max_pending=10,
                   near_band_per_class=per_class)


def test_the_feed_asks_for_the_widest_band_and_refuses_a_class_the_model_lacks(tmp_path):
    from prometheus_client import CollectorRegistry

    from inspector.review_queue import ReviewBands
    from inspector.service.review_feed import ReviewFeed

    with pytest.raises(ReviewError, match=r"near_band: expected a value in \[0\.0, 0\.5\], got 0\.9"):
        ReviewBands(near_band=0.9)
    feed = ReviewFeed(tmp_path / "data", CollectorRegistry(), "line1", near_band=0.1, max_pending=10,
                      near_band_per_class={"spur": 0.25, "short": 0.05})
    try:
        assert feed.candidate_threshold(0.5) == pytest.approx(0.25)  # spur's band is the widest
        assert feed.candidate_threshold(0.2) == 0.0
        feed.check_classes(CLASSES)
        with pytest.raises(ReviewError, match=r"review_near_band_per_class: no class 'spur' in the model; "
                                              r"expected some of \['open', 'short'\]"):
            feed.check_classes(["open", "short"])
        image = np.zeros((32, 32, 3), np.uint8)
        common = dict(template=None, unknown_changes=[], score_threshold=0.5, class_names=CLASSES, model="m")
        assert feed.offer("r1", "a", image, detections=[_det(0.3, "spur")], **common)  # within spur's 0.25
        assert not feed.offer("r2", "b", image, detections=[_det(0.3, "open")], **common)  # beyond open's 0.1
        assert feed.wait_idle(30, boards=2)
        assert [item.source for item in feed.queue.pending()] == ["a"]
    finally:
        feed.close()


def test_a_queue_written_before_record_ids_opens_with_its_rows_and_gains_the_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the first schema, as queues of earlier versions were written
        db.executescript("""
            CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL,
                image_path TEXT NOT NULL, template_path TEXT, source TEXT NOT NULL DEFAULT '',
                model TEXT NOT NULL DEFAULT '', score_threshold REAL NOT NULL, class_names TEXT NOT NULL,
                detections TEXT NOT NULL, unknown_changes TEXT NOT NULL, rank_group INTEGER NOT NULL,
                rank_value REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending');
            INSERT INTO items (created_at, image_path, score_threshold, class_names, detections, unknown_changes,
                rank_group, rank_value) VALUES ('2026-01-01T00:00:00.000+00:00', 'old.jpg', 0.5, '["open"]',
                '[{"box": [1, 1, 5, 5], "score": 0.55, "class_name": "open"}]', '[]', 0, 0.05);
        """)
    queue = ReviewQueue(path)
    try:
        (old,) = queue.pending()
        assert old.image_path == "old.jpg" and old.record_id is None and old.pictures_removed_at is None
        new = queue.offer("new.jpg", [_det(0.61)], 0.6, CLASSES, record_id="rec-1")
        assert queue.offer("new.jpg", [_det(0.61)], 0.6, CLASSES, record_id="rec-1") == new  # keyed by record
        assert queue.item_for_record("rec-1") == new and len(queue.pending()) == 2
    finally:
        queue.close()


def test_a_review_station_fetches_the_tile_an_entry_names_instead_of_the_whole_panel(tmp_path):
    import cv2

    panel = np.random.default_rng(3).integers(0, 255, (900, 1300), np.uint8)
    cv2.imwrite(str(tmp_path / "panel.png"), panel)
    queue = ReviewQueue(tmp_path / "queue.db")
    entry = {**_det(0.61, "open", (700, 300, 730, 330)), "template_box": [699, 301, 729, 331], "tile": [576, 0, 640, 640]}
    item = queue.offer(tmp_path / "panel.png", [entry], 0.6, CLASSES)
    stored = queue.get(item).detections[0]
    assert stored["tile"] == [576, 0, 640, 640] and stored["template_box"] == [699, 301, 729, 331]
    with pytest.raises(ReviewError, match=r"detections\[0\]: field tile: expected \[x, y, width, height\]"):
        queue.offer("p.png", [{**entry, "tile": [0, 0, 0, 640]}], 0.6, CLASSES)

    app = FastAPI()
    app.include_router(review_router(queue))
    client = TestClient(app)
    x, y, w, h = stored["tile"]
    tile = client.get(f"/review/items/{item}/crop", params={"x": x, "y": y, "width": w, "height": h})
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    got = cv2.imdecode(np.frombuffer(tile.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got, panel[y:y + h, x:x + w])  # cut at the panel's edge: 640 x 640 fits, so whole
    edge = client.get(f"/review/items/{item}/crop", params={"x": 1200, "y": 800, "width": 640, "height": 640})
    assert cv2.imdecode(np.frombuffer(edge.content, np.uint8), cv2.IMREAD_UNCHANGED).shape == (100, 100)
    outside = client.get(f"/review/items/{item}/crop", params={"x": 1300, "y": 0, "width": 10, "height": 10})
    assert outside.status_code == 400 and "fields x, y: (1300, 0) lies outside the image (1300x900)" in outside.text
    assert client.get(f"/review/items/{item}/crop", params={"x": 0, "y": 0, "width": 10, "height": 10,
                                                            "of": "template"}).status_code == 404
    assert client.get(f"/review/items/{item}/crop", params={"x": 0, "y": 0, "width": 10, "height": 10,
                                                            "of": "mask"}).status_code == 422
