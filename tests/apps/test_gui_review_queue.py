"""The verification-queue window (gui/review_queue_panel.py) on a real queue file: list order and counts, a
decision made through the widgets stored as the HTTP API stores it, bad input refused with its reason; pictures
read off the window's thread, the board selected last shown, grey kept grey; a long queue listed page by page; a
large panel scaled to the screen off the window's thread."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QCoreApplication, Qt

from gui.frame_view import screen_pixels
from gui.queue_loading import Scaled
from gui.queue_pictures import ItemPictures, read_item_pictures
from gui.queue_review import QueueDraft, QueueInputError, open_queue, reviewer_name
from gui.review_queue_panel import ReviewQueuePanel
from gui.settings import load_settings
from inspector.review_queue import ReviewQueue
from inspector.service.audit import AuditLog
from test_gui import ENGINEER, engineer_hash, open_window, shipped_model, unlock  # noqa: F401 - fixtures

CLASSES = ["open", "short", "mousebite"]
SIZE = (320, 240)  # width, height of the synthetic boards


@pytest.fixture()
def queue_file(tmp_path):
    """Two boards queued as the line queues them: one near the threshold (first), one plain NG."""
    paths = []
    for index in range(2):
        image = np.full((SIZE[1], SIZE[0], 3), 40 + 60 * index, np.uint8)
        cv2.rectangle(image, (30, 30), (90, 80), (0, 200, 255), -1)
        path = tmp_path / f"board{index}.png"
        assert cv2.imwrite(str(path), image)
        paths.append(path)
    path = tmp_path / "data" / "review.sqlite3"
    queue = ReviewQueue(path)
    ng = queue.offer(paths[1], [{"box": [30, 30, 90, 80], "score": 0.95, "class_name": "short"}], 0.5, CLASSES)
    template = tmp_path / "template.png"
    assert cv2.imwrite(str(template), np.full((SIZE[1], SIZE[0], 3), 200, np.uint8))
    near = queue.offer(paths[0], [{"box": [30, 30, 90, 80], "score": 0.55, "class_name": "open"},
                                  {"box": [150, 100, 200, 140], "score": 0.9, "class_name": "short"}], 0.5, CLASSES,
                       template_path=template, unknown_changes=[{"box": [250, 180, 300, 220], "area": 2000}])
    queue.close()
    return path, near, ng


def open_panel(qtbot, path, who="anna", **kwargs) -> ReviewQueuePanel:
    panel = ReviewQueuePanel(lambda: who, **kwargs)
    qtbot.addWidget(panel, before_close_func=lambda p: p.shutdown())  # no reader thread outlives the test
    panel.resize(1400, 800)
    panel.show()
    assert panel.open_path(str(path)), panel.banner.text()
    return panel


def pending_ids(panel: ReviewQueuePanel) -> list[int]:
    return [int(panel.pending_table.item(row, 0).text()) for row in range(panel.pending_table.rowCount())]


def wait_shown(qtbot, panel: ReviewQueuePanel, item_id: int) -> None:
    """Until the board ``item_id`` is on screen (its picture is read on a reader thread)."""
    qtbot.waitUntil(lambda: panel.draft is not None and panel.draft.item.id == item_id and
                    panel.view.shown is not None and panel.view.shown.token == item_id, timeout=10_000)


def select(qtbot, panel: ReviewQueuePanel, row: int) -> None:
    """The reviewer selects the list's ``row``; returns once its board is shown and can be decided."""
    item_id = panel.items[row].id
    with qtbot.waitSignal(panel.picture_shown, timeout=10_000, check_params_cb=lambda shown: shown == item_id):
        panel.pending_table.setCurrentCell(row, 0)
    wait_shown(qtbot, panel, item_id)


def test_a_decision_made_in_the_panel_is_stored_as_the_api_stores_it(qtbot, queue_file):
    path, near, ng = queue_file
    panel = open_panel(qtbot, path)
    assert pending_ids(panel) == [near, ng]  # the near-threshold board first
    assert panel.pending_table.item(0, 1).text() == "near_threshold"
    assert panel.pending_table.item(0, 2).text() == "0.550"
    assert "pending: 2" in panel.counts_label.text() and "reviewed: 0" in panel.counts_label.text()

    select(qtbot, panel, 0)
    assert panel.draft is not None and panel.draft.item.id == near
    assert panel.view.shown is not None and len(panel.view.shown.review.boxes) == 2
    assert panel.view.changes and panel.view.changes[0]["box"] == [250, 180, 300, 220]
    qtbot.waitUntil(lambda: panel.view.isVisible())
    assert panel.template_check.isEnabled()  # the golden template, with the same boxes on it
    panel.template_check.setChecked(True)
    assert int(panel.view.shown.image[0, 0, 0]) == 200 and len(panel.view.shown.review.boxes) == 2
    panel.template_check.setChecked(False)
    assert int(panel.view.shown.image[0, 0, 0]) == 40

    panel.save_button.click()  # nothing decided yet: refused, nothing stored
    assert "no verdict for detection(s) [0, 1]" in panel.banner.text()

    panel.verdict_combo(0).setCurrentText("confirm")
    panel.class_combo(0).setCurrentText("mousebite")  # the defect is real, but of another class
    panel.verdict_combo(1).setCurrentText("reject")
    panel.box_edit(0).setText("28, 28, 400, 82")  # outside the picture: refused, the box stays
    panel.box_edit(0).editingFinished.emit()
    assert "lies outside the image (320x240)" in panel.banner.text() and panel.box_edit(0).text() == "30, 30, 90, 80"
    panel.box_edit(0).setText("28, 28, 92, 82")  # boxed a little tight by the model
    panel.box_edit(0).editingFinished.emit()
    assert panel.view.shown.review.boxes[0].xyxy == (28.0, 28.0, 92.0, 82.0)
    panel.added_class.setCurrentText("short")
    panel.added_box.setText("10, 150, 60, 200")
    panel.add_button.click()
    assert panel.added_list.count() == 1
    assert panel.view.shown.review.boxes[1].false_call  # drawn crossed out
    panel.note.setText("checked under the microscope")
    assert panel.save_decision(), panel.banner.text()

    queue = ReviewQueue(path)
    try:
        decisions = queue.decisions(near)
        assert len(decisions) == 1
        decision = decisions[0]
        assert decision.decided_by == "anna" and decision.decided_at
        assert decision.verdicts == [{"index": 0, "verdict": "confirm", "class_name": "mousebite",
                                      "box": [28.0, 28.0, 92.0, 82.0]},
                                     {"index": 1, "verdict": "reject"}]
        assert decision.added == [{"box": [10.0, 150.0, 60.0, 200.0], "class_name": "short"}]
        assert decision.note == "checked under the microscope"
        assert queue.counts() == {"pending": {"ng": 1}, "reviewed": 1, "expired": 0}
        assert queue.labels(near) == [([28, 28, 92, 82], "mousebite"), ([10.0, 150.0, 60.0, 200.0], "short")]
        assert queue.decisions(ng) == []
    finally:
        queue.close()
    assert pending_ids(panel) == [ng]  # the board left the list; the next one is open
    wait_shown(qtbot, panel, ng)  # the next board opens by itself
    assert "pending: 1" in panel.counts_label.text() and "reviewed: 1" in panel.counts_label.text()
    panel.close_queue()


def test_a_box_dragged_on_the_picture_and_a_click_to_reject(qtbot, queue_file):
    path, near, ng = queue_file
    panel = open_panel(qtbot, path, who="bob")
    select(qtbot, panel, 1)
    assert panel.draft.item.id == ng
    panel.view.box_clicked.emit(0)  # a click on the detection: rejected
    assert panel.verdict_combo(0).currentText() == "reject"
    panel.added_class.setCurrentText("open")
    panel.view.box_drawn.emit((200.0, 20.0, 400.0, 60.0))  # overshoots the right edge: ends at it
    assert panel.draft.added == [{"box": [200.0, 20.0, 320.0, 60.0], "class_name": "open"}]
    assert panel.save_decision(), panel.banner.text()
    queue = ReviewQueue(path)
    try:
        [decision] = queue.decisions(ng)
        assert decision.decided_by == "bob"
        assert decision.verdicts == [{"index": 0, "verdict": "reject"}]
        assert queue.labels(ng) == [([200.0, 20.0, 320.0, 60.0], "open")]
    finally:
        queue.close()
    assert pending_ids(panel) == [near]
    panel.close_queue()


def test_bad_input_is_refused_with_its_reason_and_nothing_is_stored(qtbot, queue_file):
    path, near, _ = queue_file
    panel = open_panel(qtbot, path)
    select(qtbot, panel, 0)
    panel.added_box.setText("300, 10, 400, 50")
    assert not panel.add_typed_box()
    assert "lies outside the image (320x240)" in panel.banner.text()
    panel.added_box.setText("10, 10, 5")
    assert not panel.add_typed_box()
    assert "expected four numbers" in panel.banner.text()
    panel.added_box.setText("50, 50, 20, 80")
    assert not panel.add_typed_box()
    assert "x2 > x1" in panel.banner.text()
    assert panel.added_list.count() == 0 and panel.draft.added == []
    with pytest.raises(QueueInputError, match="unknown class 'scratch'; expected one of open, short, mousebite"):
        panel.draft.add_missed([1, 1, 5, 5], "scratch")
    with pytest.raises(QueueInputError, match="unknown class 'scratch'"):
        panel.draft.set_class(0, "scratch")
    panel._set_all("confirm")
    panel.who = lambda: ""  # nobody to record: refused
    assert not panel.save_decision()
    assert "who decided is unknown" in panel.banner.text()
    queue = ReviewQueue(path)
    try:
        assert queue.decisions(near) == [] and queue.counts()["reviewed"] == 0
    finally:
        queue.close()
    panel.close_queue()


def test_a_queue_that_cannot_be_opened_is_a_message(qtbot, tmp_path):
    panel = ReviewQueuePanel(lambda: "anna")
    qtbot.addWidget(panel)
    missing = tmp_path / "nowhere" / "review.sqlite3"
    assert not panel.open_path(str(missing))
    assert f"verification queue {missing}: no such file" in panel.banner.text()
    assert not missing.parent.exists()  # no empty queue created at a mistyped path
    broken = tmp_path / "review.sqlite3"
    broken.write_bytes(b"this is not a database" * 100)
    assert not panel.open_path(str(broken))
    assert f"verification queue {broken} cannot be opened" in panel.banner.text()
    assert panel.queue is None and panel.pending_table.rowCount() == 0
    other = tmp_path / "audit.sqlite3"  # another SQLite file: refused, and left as it was
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY)")
    assert not panel.open_path(str(other))
    assert "not a verification queue" in panel.banner.text()
    with sqlite3.connect(other) as db:
        assert [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["audit"]
    with pytest.raises(QueueInputError, match="no verification queue file is set"):
        open_queue("")


def test_an_item_whose_image_is_gone_says_so(qtbot, queue_file):
    path, near, _ = queue_file
    queue = ReviewQueue(path)
    image_path = queue.get(near).image_path
    queue.close()
    (path.parent.parent / image_path.rsplit("/", 1)[-1]).unlink()
    panel = open_panel(qtbot, path)
    panel.pending_table.setCurrentCell(0, 0)
    qtbot.waitUntil(lambda: "cannot be read" in panel.banner.text())
    assert panel.draft is None and f"its image {image_path} cannot be read: no such file" in panel.banner.text()
    assert panel.loader.loading is None and panel.view.shown is None and "cannot be read" in panel.view.placeholder
    assert not any(w.isEnabled() for w in decision_widgets(panel)) and not panel.save_decision()
    select(qtbot, panel, 1)  # skipped: the next board opens as usual
    assert panel.save_button.isEnabled() and f"its image {image_path}" not in panel.banner.text()
    panel.close_queue()


def test_the_reviewer_is_the_engineer_then_the_operator_then_the_login(monkeypatch):
    assert reviewer_name("eng-anna", "op-ben") == "eng-anna"
    assert reviewer_name(None, " op-ben ") == "op-ben"
    monkeypatch.setattr("getpass.getuser", lambda: "login-carl")
    assert reviewer_name(None, "") == "login-carl"


def test_the_payload_names_a_class_only_when_changed(queue_file):
    path, near, _ = queue_file
    queue = open_queue(path)
    try:
        draft = QueueDraft(queue.get(near), SIZE)
        draft.set_verdict(0, "confirm")
        draft.set_verdict(1, "confirm")
        draft.set_class(1, "short")  # the same class: nothing to correct
        assert draft.payload() == ([{"index": 0, "verdict": "confirm"}, {"index": 1, "verdict": "confirm"}], [])
        with pytest.raises(QueueInputError, match="verdict 'maybe'"):
            draft.set_verdict(0, "maybe")
    finally:
        queue.close()


def test_the_window_opens_the_queue_and_records_who_decided(qtbot, open_window, queue_file):
    """Review ▸ Verification queue…: the operator of the settings decides while no engineer is logged in, the
    engineer once one is; each decision is in the audit trail too."""
    path, near, ng = queue_file
    window = open_window("demo", autostart=False)
    window.settings.operator_name = "op-ben"
    window.set_review_queue(str(path), open_it=False)
    assert load_settings(window.config_path)[0].review_queue == str(path)  # kept for the next start
    window.queue_action.trigger()
    panel = window.queue_panel
    assert panel is not None and panel.isVisible() and pending_ids(panel) == [near, ng]

    select(qtbot, panel, 0)
    panel.confirm_all_button.click()
    assert panel.save_decision(), panel.banner.text()
    unlock(window)
    wait_shown(qtbot, panel, ng)
    panel.reject_all_button.click()
    assert panel.save_decision(), panel.banner.text()

    queue = ReviewQueue(path)
    try:
        assert [d.decided_by for d in queue.decisions(near)] == ["op-ben"]
        assert [d.decided_by for d in queue.decisions(ng)] == [ENGINEER]
        assert queue.counts()["reviewed"] == 2
    finally:
        queue.close()
    log = AuditLog(window.settings.audit_db)
    try:
        decided = [(e.who, e.role, e.target) for e in log.entries(limit=100)[1] if e.action == "review decision"]
    finally:
        log.close()
    assert sorted(decided) == sorted([("op-ben", "operator", f"review item {near}"),
                                      (ENGINEER, "engineer", f"review item {ng}")])


def test_the_window_says_when_the_queue_file_cannot_be_opened(qtbot, open_window, tmp_path):
    window = open_window("demo", autostart=False)
    window.set_review_queue(str(tmp_path / "missing.sqlite3"))
    assert window.queue_panel.isVisible() and window.queue_panel.queue is None
    assert "no such file" in window.queue_panel.banner.text()


def test_a_board_decided_elsewhere_meanwhile_is_closed_with_a_message(qtbot, queue_file):
    path, near, ng = queue_file
    panel = open_panel(qtbot, path)
    select(qtbot, panel, 0)
    assert panel.draft.item.id == near
    other_station = ReviewQueue(path)  # as the HTTP API would, from another review station
    try:
        other_station.decide(near, "carl", [{"index": 0, "verdict": "confirm"}, {"index": 1, "verdict": "confirm"}])
    finally:
        other_station.close()
    panel.refresh()
    assert panel.draft is None and pending_ids(panel) == [ng]
    assert f"item {near} is no longer pending (now reviewed" in panel.banner.text()
    panel.close_queue()


def test_ctrl_enter_saves_the_decision(qtbot, queue_file):
    path, near, ng = queue_file
    panel = open_panel(qtbot, path)
    select(qtbot, panel, 1)
    panel.confirm_all_button.click()
    panel.activateWindow()
    qtbot.waitUntil(panel.isActiveWindow)
    qtbot.keyClick(panel.pending_table, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: pending_ids(panel) == [near])
    queue = ReviewQueue(path)
    try:
        assert [d.verdicts for d in queue.decisions(ng)] == [[{"index": 0, "verdict": "confirm"}]]
    finally:
        queue.close()
    panel.close_queue()


# ---------------------------------------------------------------------- a queue of thousands, page by page


def long_queue(tmp_path, boards: int) -> tuple[Path, list[int]]:
    """``boards`` NG boards, queued in the queue's order (lowest score first), all showing one picture."""
    image = np.full((SIZE[1], SIZE[0], 3), 70, np.uint8)
    assert cv2.imwrite(str(tmp_path / "board.png"), image)
    path = tmp_path / "data" / "review.sqlite3"
    queue = ReviewQueue(path)
    ids = [queue.offer(tmp_path / "board.png", [{"box": [30, 30, 90, 80], "score": 0.8 + i / 1000,
                                                 "class_name": "short"}], 0.5, CLASSES) for i in range(boards)]
    queue.close()
    return path, ids


def at_another_station(path, decided=(), offered=()) -> list[int]:
    """What another review station and the line do meanwhile: boards decided (rejected), boards queued (scores,
    near the 0.5 threshold: ranked first). The new boards' ids."""
    queue = ReviewQueue(path)
    try:
        for item_id in decided:
            queue.decide(item_id, "carl", [{"index": 0, "verdict": "reject"}])
        return [queue.offer(queue.get(decided[0] if decided else 1).image_path,
                            [{"box": [30, 30, 90, 80], "score": score, "class_name": "open"}], 0.5, CLASSES)
                for score in offered]
    finally:
        queue.close()


def test_a_long_queue_is_listed_page_by_page_in_its_order_each_board_once(qtbot, tmp_path):
    path, ids = long_queue(tmp_path, 11)
    panel = open_panel(qtbot, path, page=3)
    panel._refresh_timer.stop()  # the test says when the list is read again
    assert pending_ids(panel) == ids[:3] and "pending: 11" in panel.counts_label.text()
    assert panel.more_button.isEnabled() and panel.more_button.text() == "Load 3 more (3 listed, 8 not)"

    # The next page starts after the last board listed, whatever happened meanwhile: a listed board decided
    # elsewhere (an offset page would skip a board), then a new board queued, ranked first (one would be listed twice).
    at_another_station(path, decided=[ids[1]])
    panel.more_button.click()
    assert pending_ids(panel) == ids[:6]
    [new] = at_another_station(path, offered=[0.51])
    panel.more_button.click()
    assert pending_ids(panel) == ids[:9]
    panel.refresh()  # read again: the new board in its place, the decided one gone, nothing past the list's end
    assert pending_ids(panel) == [new, ids[0], *ids[2:9]]
    assert "pending: 11" in panel.counts_label.text() and panel.more_button.text() == "Load 2 more (9 listed, 2 not)"

    select(qtbot, panel, 7)  # a board of the third page, decided at another station while open: as on the first
    assert panel.draft.item.id == ids[7]
    at_another_station(path, decided=[ids[7]])
    panel.refresh()
    assert panel.draft is None and f"item {ids[7]} is no longer pending (now reviewed" in panel.banner.text()
    assert pending_ids(panel) == [new, ids[0], *ids[2:7], ids[8], ids[9]]  # topped up to the 9 asked for

    select(qtbot, panel, 8)  # the last board listed, decided here: the next one is listed and opened
    panel.confirm_all_button.click()
    assert panel.save_decision(), panel.banner.text()
    assert pending_ids(panel) == [new, ids[0], *ids[2:7], ids[8], ids[10]]
    wait_shown(qtbot, panel, ids[10])
    assert panel.pending_table.currentRow() == 8
    assert not panel.more_button.isEnabled() and panel.more_button.text() == "All 9 pending boards listed"
    assert panel.load_more() == 0 and len(set(pending_ids(panel))) == 9
    panel.close_queue()


def test_the_timer_reads_the_list_again_only_when_the_queue_changed(qtbot, tmp_path, monkeypatch):
    path, ids = long_queue(tmp_path, 6)
    panel = open_panel(qtbot, path, page=3)
    panel._refresh_timer.stop()  # the test ticks the timer
    reads = []
    real_pending = panel.queue.pending
    monkeypatch.setattr(panel.queue, "pending", lambda *a, **k: reads.append(1) or real_pending(*a, **k))
    assert not panel.refresh_if_changed() and not reads  # a quiet queue: nothing read
    [new] = at_another_station(path, offered=[0.51])  # the line queues a board, ranked first
    assert panel.refresh_if_changed() and reads and pending_ids(panel) == [new, *ids[:3]]
    reads.clear()
    assert not panel.refresh_if_changed() and not reads
    select(qtbot, panel, 1)  # a decision at this station: the board leaves the list
    panel.confirm_all_button.click()
    assert panel.save_decision(), panel.banner.text()
    assert ids[0] not in pending_ids(panel)
    reads.clear()
    at_another_station(path, decided=[ids[1]])  # one at another station: read at the next tick
    assert panel.refresh_if_changed() and reads and ids[1] not in pending_ids(panel)
    panel.close_queue()
    assert not panel.refresh_if_changed()  # no queue open


def test_the_list_scrolled_to_its_end_lists_the_next_page(qtbot, tmp_path):
    path, ids = long_queue(tmp_path, 100)
    panel = open_panel(qtbot, path, page=40)
    panel._refresh_timer.stop()
    bar = panel.pending_table.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0)  # more rows than the list shows (laid out by the event loop)
    assert pending_ids(panel) == ids[:40]
    select(qtbot, panel, 2)
    bar.setValue(bar.maximum() // 2)  # scrolled, not to the end: nothing read
    assert pending_ids(panel) == ids[:40]
    end = bar.maximum()
    bar.setValue(end)
    assert pending_ids(panel) == ids[:80]
    qtbot.waitUntil(lambda: bar.maximum() > end)  # the rows added below the end
    assert bar.value() == end and panel.pending_table.currentRow() == 2 and panel.draft.item.id == ids[2]
    bar.setValue(bar.maximum())
    assert pending_ids(panel) == ids and not panel.more_button.isEnabled()
    end = bar.maximum()
    qtbot.waitUntil(lambda: bar.maximum() > end)
    bar.setValue(bar.maximum())  # at the end of the queue: nothing more to read
    assert pending_ids(panel) == ids
    panel.refresh()
    assert pending_ids(panel) == ids  # a refresh keeps every page listed
    panel.close_queue()


# ---------------------------------------------------------------------- a whole panel, tile by tile

PANEL_SIZE = (1800, 1232)  # width, height of the synthetic panel (its tiles are 640 px, as the line's)
SHIFT = (7, 5)  # the tested panel lies this far right and down of the golden one (its misregistration)


@pytest.fixture()
def panel_queue(tmp_path):
    """One whole panel queued as the line queues it (``PanelDetections`` -> ``ReviewQueue.offer_detections``):
    four defects in three tiles and an unknown change in a fourth, the tested panel moved by ``SHIFT``."""
    from inspector.runtime.panel import PanelDetections
    from inspector.runtime.panel_changes import PanelChange

    rng = np.random.default_rng(5)
    golden = cv2.resize(rng.integers(0, 255, (154, 225), np.uint8), PANEL_SIZE, interpolation=cv2.INTER_NEAREST)
    tested = np.zeros_like(golden)
    tested[SHIFT[1]:, SHIFT[0]:] = golden[:-SHIFT[1], :-SHIFT[0]]
    assert cv2.imwrite(str(tmp_path / "panel_test.png"), tested)
    assert cv2.imwrite(str(tmp_path / "panel_temp.png"), golden)
    template_boxes = np.float32([[100, 100, 130, 120], [700, 300, 730, 330], [900, 500, 940, 520],
                                 [1500, 900, 1530, 940]])
    tiles = np.int64([[0, 0, 640, 640], [576, 0, 640, 640], [576, 0, 640, 640], [1152, 576, 640, 640]])
    change = PanelChange((1257.0, 205.0, 1297.0, 245.0), 900, "darker", 0.0,
                         template_box=(1250.0, 200.0, 1290.0, 240.0), tile=(1152, 0, 640, 640))
    found = PanelDetections(template_boxes + np.float32([*SHIFT, *SHIFT]), template_boxes,
                            np.float32([0.9, 0.62, 0.8, 0.95]), np.int64([0, 1, 1, 2]),
                            ["open", "short", "short", "mousebite"], PANEL_SIZE, 9, None, {}, source_tiles=tiles,
                            unknown_changes=[change])
    path = tmp_path / "data" / "review.sqlite3"
    queue = ReviewQueue(path)
    item = queue.offer_detections(tmp_path / "panel_test.png", found.as_detections(), 0.6, CLASSES,
                                  template_path=tmp_path / "panel_temp.png")
    assert queue.get(item).detections[1]["tile"] == [576, 0, 640, 640]
    queue.close()
    return path, item, tested, golden


def test_a_panel_opens_entry_by_entry_each_in_its_tile_at_full_resolution(qtbot, panel_queue):
    path, item, tested, golden = panel_queue
    panel = open_panel(qtbot, path)
    select(qtbot, panel, 0)
    assert panel.draft.item.id == item and panel.tile_bar.isVisible()
    # The first entry's tile, cut from the panel read once (a view of it, no copy), its box where the defect is.
    shown = panel.view.shown
    assert shown.image.shape == (640, 640) and np.shares_memory(shown.image, panel._image)
    np.testing.assert_array_equal(shown.image, tested[5:645, 7:647])
    assert [b.xyxy for b in shown.review.boxes] == [(100.0, 100.0, 130.0, 120.0)]
    assert panel.view.focus == [100.0, 100.0, 130.0, 120.0] and panel.detections_table.currentRow() == 0
    assert panel.tile_bar.label.text() == ("Entry 1 of 5: detection 0 (open 0.900) · tile 1 of 4 at x 0, y 0 "
                                           "(640 × 640 px); on this panel at x 7, y 5 (registration shift +7, +5)")
    assert "tile 1 of 4" in shown.caption and not panel.tile_bar.previous_button.isEnabled()
    panel.view.grab()  # painted: boxes cut at the tile's edge, the entry ringed

    panel.tile_bar.next_button.click()  # the next entry: the next tile, with the other entry that falls in it
    assert panel.tile_bar.window().tile == (576, 0, 640, 640) and panel.detections_table.currentRow() == 1
    np.testing.assert_array_equal(panel.view.shown.image, tested[5:645, 583:1223])
    assert [b.xyxy for b in panel.view.shown.review.boxes] == [(124.0, 300.0, 154.0, 330.0),
                                                                (324.0, 500.0, 364.0, 520.0)]
    assert panel.view.focus == [124.0, 300.0, 154.0, 330.0]
    assert "Entry 2 of 5: detection 1 (short 0.620) · tile 2 of 4 at x 576, y 0" in panel.tile_bar.label.text()
    panel.template_check.setChecked(True)  # the golden panel at the tile itself: the same board, pixel for pixel
    np.testing.assert_array_equal(panel.view.shown.image, golden[0:640, 576:1216])
    np.testing.assert_array_equal(panel.view.shown.image, tested[5:645, 583:1223])
    assert len(panel.view.shown.review.boxes) == 2 and "golden template" in panel.view.shown.caption
    panel.template_check.setChecked(False)

    panel.tile_bar.next_button.click()
    panel.tile_bar.next_button.click()  # the unknown change's tile: no detection there, the change drawn
    assert panel.tile_bar.window().tile == (1152, 0, 640, 640) and panel.view.shown.review.boxes == []
    assert [c["box"] for c in panel.view.changes] == [[98.0, 200.0, 138.0, 240.0]]
    assert "Entry 4 of 5: unknown change 0" in panel.tile_bar.label.text()
    panel.tile_bar.next_button.click()
    assert panel.tile_bar.window().tile == (1152, 576, 640, 640) and not panel.tile_bar.next_button.isEnabled()
    panel.tile_bar.next_button.click()  # past the last entry: stays
    assert panel.tile_bar.position == 4
    panel.detections_table.setCurrentCell(1, 0)  # a detection picked in the list opens its tile
    assert panel.tile_bar.position == 1 and panel.tile_bar.window().tile == (576, 0, 640, 640)

    panel.tile_bar.whole_check.setChecked(True)  # the whole panel, its tiles outlined, the entry's one bold
    assert panel.view.shown.image.shape == (1232, 1800)  # grey as read
    assert panel.view.tiles == [[7.0, 5.0, 647.0, 645.0], [583.0, 5.0, 1223.0, 645.0],
                                [1159.0, 5.0, 1799.0, 645.0], [1159.0, 581.0, 1799.0, 1221.0]]
    assert panel.view.current_tile == 1 and "whole panel" in panel.view.shown.caption
    assert [b.xyxy for b in panel.view.shown.review.boxes] == [tuple(d["box"]) for d in panel.draft.item.detections]
    panel.view.grab()
    panel.tile_bar.whole_check.setChecked(False)
    assert panel.view.shown.image.shape == (640, 640) and panel.view.tiles == []
    panel.close_queue()


def test_a_box_corrected_or_added_in_a_tile_is_saved_in_panel_pixels(qtbot, panel_queue):
    path, item, _, _ = panel_queue
    panel = open_panel(qtbot, path)
    select(qtbot, panel, 0)
    panel.tile_bar.next_button.click()  # detection 1, in the tile at x 583, y 5 of the panel
    panel.redraw_button.setChecked(True)
    assert panel.view.draw_mode
    panel.view.box_drawn.emit((120.0, 296.0, 160.0, 334.0))  # tile pixels: the defect boxed again, a little wider
    assert panel.box_edit(1).text() == "703, 301, 743, 339" and panel.verdict_combo(1).currentText() == "confirm"
    assert panel.view.shown.review.boxes[0].xyxy == (120.0, 296.0, 160.0, 334.0)  # drawn where it was dragged
    panel.view.box_clicked.emit(1)  # a click on the tile's second box: detection 2, rejected
    assert panel.verdict_combo(2).currentText() == "reject" and panel.verdict_combo(1).currentText() == "confirm"

    panel.draw_button.setChecked(True)  # one meaning for a drag at a time
    assert not panel.redraw_button.isChecked() and panel.view.draw_mode
    panel.added_class.setCurrentText("short")
    panel.view.box_drawn.emit((600.0, 10.0, 700.0, 40.0))  # across the tile's right edge: cut there, and said
    assert panel.draft.added == [{"box": [1183.0, 15.0, 1223.0, 45.0], "class_name": "short"}]
    assert "cut at the tile's edge" in panel.banner.text()
    panel.view.box_drawn.emit((650.0, 10.0, 700.0, 40.0))  # beside the tile: nothing the reviewer saw
    assert "lies outside the tile (640x640)" in panel.banner.text() and len(panel.draft.added) == 1

    panel.tile_bar.whole_check.setChecked(True)  # the same drag on the whole panel gives the same box
    panel.redraw_button.setChecked(True)
    panel.view.box_drawn.emit((703.0, 301.0, 743.0, 339.0))
    assert panel.draft.boxes[1] == [703.0, 301.0, 743.0, 339.0]
    panel.verdict_combo(0).setCurrentText("confirm")
    panel.verdict_combo(3).setCurrentText("confirm")
    assert panel.save_decision(), panel.banner.text()
    queue = ReviewQueue(path)
    try:
        [decision] = queue.decisions(item)
        assert decision.verdicts == [{"index": 0, "verdict": "confirm"},
                                     {"index": 1, "verdict": "confirm", "box": [703.0, 301.0, 743.0, 339.0]},
                                     {"index": 2, "verdict": "reject"}, {"index": 3, "verdict": "confirm"}]
        assert decision.added == [{"box": [1183.0, 15.0, 1223.0, 45.0], "class_name": "short"}]
    finally:
        queue.close()
    assert panel.draft is None and not panel.tile_bar.isVisible()  # nothing left in the list
    panel.close_queue()


class GatedScaler:
    """Scales as the view does (``screen_pixels``), but the first ``held`` calls wait for ``release`` (the test says
    when a scaling ends). ``calls``: (picture, size, thread) of each."""

    def __init__(self, held: int = 1) -> None:
        self.held = held
        self.calls: list[tuple[np.ndarray, tuple[int, int], threading.Thread]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, image, overlay, size):
        self.calls.append((image, size, threading.current_thread()))
        if len(self.calls) <= self.held:
            self.started.set()
            assert self.release.wait(30), "the test never released the scaling"
        return screen_pixels(image, overlay, size)


def view_size(panel: ReviewQueuePanel) -> tuple[int, int]:
    """The size the picture is drawn at in the view now, as the view asks for it."""
    rect = panel.view.image_rect()
    return max(1, round(rect.width())), max(1, round(rect.height()))


def test_the_whole_of_a_large_panel_is_scaled_off_the_windows_thread_for_the_last_size_asked(qtbot, panel_queue):
    path, item, tested, golden = panel_queue
    scaler = GatedScaler()
    panel = open_panel(qtbot, path, scale_pictures=scaler)
    panel.view.off_thread_pixels = 1_000_000  # the 1800 x 1232 panel counts as large, its 640 px tiles do not
    select(qtbot, panel, 0)
    panel.view.grab()  # the first entry's tile: scaled while painted, as before
    assert scaler.calls == [] and panel.view._screen is not None
    painted, clicked = [], []
    panel.view.painted.connect(painted.append)
    panel.view.box_clicked.connect(clicked.append)
    try:
        panel.tile_bar.whole_check.setChecked(True)
        qtbot.waitUntil(scaler.started.is_set)  # the window runs on while the panel is being scaled
        [(image, first_size, thread)] = scaler.calls
        assert image is panel._image and image.ndim == 2 and thread is not threading.main_thread()  # grey, as read
        assert first_size == view_size(panel) and panel.view.scaling == first_size
        first = panel.view.scaler.selection.generation
        panel.view.grab()  # painted meanwhile: what is happening said, no picture and no boxes
        assert panel.view.screen_note() == "Scaling the picture (1800 × 1232 px) to the screen…" and painted == []
        middle = panel.view.to_widget(715.0, 315.0).toPoint()  # detection 1's box: nothing to click on yet
        qtbot.mouseClick(panel.view, Qt.MouseButton.LeftButton, pos=middle)
        assert clicked == [] and panel.verdict_combo(1).currentText() == "—"
        panel.verdict_combo(0).setCurrentText("confirm")  # drawn again: the same picture, its scaling goes on
        panel.view.grab()
        assert panel.view.scaler.selection.generation == first and panel.view.scaling == first_size
        panel.resize(1100, 700)  # a smaller view while the first size is still being made: the new size is asked
        qtbot.waitUntil(lambda: panel.view.scaling not in (None, first_size))
        second_size = panel.view.scaling
        assert second_size == view_size(panel)
    finally:
        scaler.release.set()
    qtbot.waitUntil(lambda: panel.view.scaling is None and panel.view._screen is not None)
    assert panel.view.scaler.wait(10_000)
    QCoreApplication.processEvents()  # anything the outdated scaling could have sent is delivered now
    assert [size for _, size, _ in scaler.calls] == [first_size, second_size]  # the first ran, outdated
    assert (panel.view._screen.width(), panel.view._screen.height()) == second_size
    np.testing.assert_array_equal(panel.view._screen_pixels, screen_pixels(tested, None, second_size))
    late = Scaled(first_size, np.zeros((first_size[1], first_size[0], 4), np.uint8))
    panel.view.scaler.scaled.emit(first, late)  # an answer for the first size that was already on its way: dropped
    QCoreApplication.processEvents()
    assert (panel.view._screen.width(), panel.view._screen.height()) == second_size
    panel.view.grab()
    assert painted and set(painted) == {item}  # the panel on screen, boxes and all
    qtbot.mouseClick(panel.view, Qt.MouseButton.LeftButton, pos=panel.view.to_widget(715.0, 315.0).toPoint())
    assert clicked == [1] and panel.verdict_combo(1).currentText() == "reject"  # now a click counts
    panel.view.grab()  # the verdict drew the panel again: its screen copy kept, nothing scaled anew
    assert len(scaler.calls) == 2 and panel.view.scaling is None and painted[-1] == item

    panel.template_check.setChecked(True)  # another picture: scaled in turn, then shown
    qtbot.waitUntil(lambda: len(scaler.calls) == 3 and panel.view.scaling is None and panel.view._screen is not None)
    assert scaler.calls[2][0] is panel._template and scaler.calls[2][1] == view_size(panel)
    np.testing.assert_array_equal(panel.view._screen_pixels, screen_pixels(golden, None, view_size(panel)))
    panel.close_queue()


def test_a_panel_that_cannot_be_scaled_says_why_and_its_tiles_still_show(qtbot, panel_queue):
    path, item, tested, _ = panel_queue

    def no_memory(image, overlay, size):
        raise MemoryError("no room for the screen copy")

    panel = open_panel(qtbot, path, scale_pictures=no_memory)
    panel.view.off_thread_pixels = 1_000_000
    select(qtbot, panel, 0)
    panel.tile_bar.whole_check.setChecked(True)
    qtbot.waitUntil(lambda: panel.view.scale_error != "")
    width, height = view_size(panel)
    assert panel.view.screen_note() == (f"The picture cannot be shown: the 1800 × 1232 px picture cannot be scaled "
                                        f"to {width} × {height} px: MemoryError: no room for the screen copy")
    panel.view.grab()  # said in the picture's place; not asked again at every paint
    assert panel.view.scaling is None and panel.view._screen is None
    panel.tile_bar.whole_check.setChecked(False)  # a tile is scaled while painted: shown as ever
    panel.view.grab()
    assert panel.view._screen is not None and panel.view.scale_error == ""
    np.testing.assert_array_equal(panel.view.shown.image, tested[5:645, 7:647])
    panel.close_queue()


def test_a_single_board_is_still_shown_whole(qtbot, queue_file):
    path, near, _ = queue_file
    panel = open_panel(qtbot, path)
    select(qtbot, panel, 0)
    assert panel.draft.item.id == near and not panel.tile_bar.isVisible() and panel.tile_bar.window() is None
    shown = panel.view.shown
    assert shown.image.shape == (SIZE[1], SIZE[0], 3) and panel.view.tiles == [] and panel.view.focus is None
    assert [b.xyxy for b in shown.review.boxes] == [(30.0, 30.0, 90.0, 80.0), (150.0, 100.0, 200.0, 140.0)]
    assert "tile" not in shown.caption and "whole panel" not in shown.caption
    panel.detections_table.setCurrentCell(1, 0)
    panel.redraw_button.setChecked(True)  # a drag corrects the selected detection's box, in the picture's pixels
    panel.view.box_drawn.emit((148.0, 98.0, 330.0, 142.0))  # overshoots the right edge: ends at it
    assert panel.draft.boxes[1] == [148.0, 98.0, 320.0, 142.0] and panel.box_edit(1).text() == "148, 98, 320, 142"
    panel.close_queue()


# ---------------------------------------------------------------------- pictures read off the window's thread


def decision_widgets(panel: ReviewQueuePanel) -> list:
    return [panel.save_button, panel.confirm_all_button, panel.reject_all_button, panel.add_button,
            panel.draw_button, panel.redraw_button, panel.detections_table, panel.note]


class GatedReader:
    """Reads as the window does, but the items in ``held`` wait for ``release`` first (deterministic: the test
    says when a read ends, no timing). ``started`` is set once a held read is under way on its thread."""

    def __init__(self, *held: int) -> None:
        self.held = set(held)
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished: list[tuple[int, bool]] = []  # (item id, still wanted when its read ended)

    def __call__(self, item, wanted) -> ItemPictures:
        if item.id in self.held:
            self.started.set()
            assert self.release.wait(30), "the test never released the read"
        pictures = read_item_pictures(item, wanted)
        self.finished.append((item.id, wanted()))
        return pictures


def test_a_board_says_loading_and_cannot_be_decided_until_its_picture_is_shown(qtbot, queue_file):
    path, near, _ = queue_file
    reader = GatedReader(near)
    panel = open_panel(qtbot, path, read_pictures=reader)
    threads: list[threading.Thread] = []
    panel.picture_shown.connect(lambda _item: threads.append(threading.current_thread()))
    try:
        panel.pending_table.setCurrentCell(0, 0)
        qtbot.waitUntil(reader.started.is_set)  # the window keeps running while the picture is read
        assert reader.finished == [] and threads == []
        assert panel.loader.loading == near and panel.draft is None and panel.view.shown is None
        assert panel.view.placeholder == f"Item {near} · loading board0.png…"
        assert "loading its picture" in panel.item_label.text()
        assert not any(w.isEnabled() for w in decision_widgets(panel))
        assert not panel.save_decision()  # Ctrl+Enter too: nothing to save against an unseen board
        panel.refresh()  # the list read again meanwhile keeps the board being read selected
        assert panel.pending_table.currentRow() == 0 and panel.loader.loading == near
        with qtbot.waitSignal(panel.picture_shown, timeout=10_000) as shown:
            reader.release.set()
    finally:
        reader.release.set()
    assert shown.args == [near] and threads == [threading.main_thread()]  # shown by the window's thread
    assert panel.draft.item.id == near and panel.view.shown.token == near
    assert int(panel.view.shown.image[0, 0, 0]) == 40  # board0's picture
    assert all(w.isEnabled() for w in decision_widgets(panel)) and panel.loader.loading is None
    assert panel.template_check.isEnabled() and panel.banner.text() == ""
    panel.close_queue()


def test_the_board_selected_last_is_shown_never_an_earlier_one(qtbot, queue_file):
    """A is selected and its read held; B is selected and shown; A's read ends afterwards and is dropped."""
    path, near, ng = queue_file
    reader = GatedReader(near)
    panel = open_panel(qtbot, path, read_pictures=reader)
    shown_ids: list[int] = []
    panel.picture_shown.connect(shown_ids.append)
    try:
        panel.pending_table.setCurrentCell(0, 0)  # A: near
        first = panel.loader.selection.generation
        qtbot.waitUntil(reader.started.is_set)
        select(qtbot, panel, 1)  # B: ng, read on the second reader thread while A's still is held
        assert panel.draft.item.id == ng and int(panel.view.shown.image[0, 0, 0]) == 100  # board1's picture
    finally:
        reader.release.set()
    assert panel.loader.wait(10_000)
    QCoreApplication.processEvents()  # anything A's read could have sent is delivered now
    assert (near, False) in reader.finished  # A's read did end, outdated
    assert panel.draft.item.id == ng and panel.view.shown.token == ng and shown_ids == [ng]
    assert int(panel.view.shown.image[0, 0, 0]) == 100 and panel.save_button.isEnabled()
    late = read_item_pictures(panel.queue.get(near))  # an answer for A that was already on its way: dropped
    panel.loader.loaded.emit(first, late)
    QCoreApplication.processEvents()
    assert panel.draft.item.id == ng and int(panel.view.shown.image[0, 0, 0]) == 100 and shown_ids == [ng]
    assert pending_ids(panel) == [near, ng] and panel.pending_table.currentRow() == 1

    for row in (0, 1, 0, 1, 0):  # clicked through faster than anything is read: the last one is shown
        panel.pending_table.setCurrentCell(row, 0)
    wait_shown(qtbot, panel, near)
    assert panel.loader.wait(10_000)
    QCoreApplication.processEvents()
    assert panel.draft.item.id == near and shown_ids == [ng, near] and int(panel.view.shown.image[0, 0, 0]) == 40
    panel.close_queue()


@pytest.fixture()
def grey_queue(tmp_path):
    """One board whose picture and golden template are grey files, as a monochrome line camera writes them."""
    image = np.full((SIZE[1], SIZE[0]), 90, np.uint8)
    cv2.rectangle(image, (30, 30), (90, 80), 220, -1)
    assert cv2.imwrite(str(tmp_path / "grey.png"), image)
    assert cv2.imwrite(str(tmp_path / "grey_temp.png"), np.full((SIZE[1], SIZE[0]), 150, np.uint8))
    path = tmp_path / "data" / "review.sqlite3"
    queue = ReviewQueue(path)
    item = queue.offer(tmp_path / "grey.png", [{"box": [30, 30, 90, 80], "score": 0.55, "class_name": "open"}],
                       0.5, CLASSES, template_path=tmp_path / "grey_temp.png")
    queue.close()
    return path, item, image


def test_a_grey_picture_is_held_in_one_channel_and_shown_grey(qtbot, grey_queue):
    path, item, image = grey_queue
    panel = open_panel(qtbot, path)
    select(qtbot, panel, 0)
    assert panel._image.ndim == 2 and panel._image.dtype == np.uint8 and panel._image.nbytes == SIZE[0] * SIZE[1]
    np.testing.assert_array_equal(panel._image, image)
    assert panel._template.ndim == 2 and panel.template_check.isEnabled()
    assert panel.view.shown.image is panel._image  # shown as read: no colour copy of it
    picture = panel.view.grab().toImage()  # painted: a pixel of the board is the file's grey
    point = panel.view.to_widget(160.5, 200.5)
    colour = picture.pixelColor(int(point.x()), int(point.y()))
    assert (colour.red(), colour.green(), colour.blue()) == (90, 90, 90)
    panel.template_check.setChecked(True)
    assert panel.view.shown.image is panel._template and int(panel._template[0, 0]) == 150
    panel.close_queue()


def test_a_colour_picture_stays_colour_and_a_damaged_file_or_template_is_said(qtbot, queue_file):
    path, near, ng = queue_file
    queue = ReviewQueue(path)
    near_item = queue.get(near)
    queue.close()
    panel = open_panel(qtbot, path)
    select(qtbot, panel, 1)
    assert panel._image.shape == (SIZE[1], SIZE[0], 3)
    with open(near_item.image_path, "wb") as damaged:
        damaged.write(b"\x89PNG\r\n\x1a\n not really")
    panel.pending_table.setCurrentCell(0, 0)
    qtbot.waitUntil(lambda: "cannot be read" in panel.banner.text())
    assert f"item {near}: its image {near_item.image_path} cannot be read: not an image" in panel.banner.text()
    assert panel.draft is None and not panel.save_button.isEnabled()

    Path(near_item.template_path).unlink()  # its golden template gone, its picture back
    assert cv2.imwrite(near_item.image_path, np.full((SIZE[1], SIZE[0], 3), 40, np.uint8))
    select(qtbot, panel, 1)  # away and back (the row stayed current): the picture is read again
    select(qtbot, panel, 0)  # shown without its template, and said
    assert panel.draft.item.id == near and panel.save_button.isEnabled() and not panel.template_check.isEnabled()
    assert f"its golden template {near_item.template_path} cannot be read: no such file" in panel.banner.text()
    panel.close_queue()
