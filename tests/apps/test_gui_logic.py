"""The GUI's plain logic: verdict rule, counters, defect log, evidence files, review -> VOC, settings, a whole
panel's queue entries tile by tile, a queued board's pictures as read and which selection's answer counts, the
queue listed page by page."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from gui.evidence import EvidenceStore, atomic_write_bytes, read_records
from gui.queue_pages import PendingList
from gui.queue_pictures import PictureError, Selection, read_item_pictures, read_picture
from gui.queue_review import QueueDraft, QueueInputError
from gui.queue_tiles import ADDED, CHANGE, DETECTION, TileWindow, cut, draft_scene, panel_tiles
from gui.review import ReviewState, write_voc_review
from gui.session import (
    NG,
    NOT_JUDGED,
    PASS,
    Inspection,
    InspectionSession,
    RateMeter,
    Thresholds,
    ThresholdError,
    judge,
)
from gui.settings import GuiSettings, load_settings, save_settings
from inspector.data import load_dataset, read_image
from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.review_queue import QueueItem, ReviewQueue
from inspector.runtime import Detections, Timing

CLASSES = ["open", "short", "mousebite", "spur", "copper", "pin-hole"]


def detections(rows: list[tuple[tuple[float, float, float, float], str, float]], size=(640, 640)) -> Detections:
    return Detections(
        boxes=np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
        scores=np.array([r[2] for r in rows], np.float32),
        class_ids=np.array([CLASSES.index(r[1]) for r in rows], np.int64),
        class_names=[r[1] for r in rows],
        image_size=size,
        timing=Timing(1.0, 2.0, 0.5),
    )


def inspection(candidates: Detections | None, thresholds: Thresholds, frame_id: str = "f:1",
               image: np.ndarray | None = None) -> Inspection:
    image = np.full((640, 640, 3), 200, np.uint8) if image is None else image
    return Inspection.judged(frame_id=frame_id, source="test", captured_at=1_700_000_000.25, captured_monotonic=1.0,
                             image=image, template=None, candidates=candidates, thresholds=thresholds,
                             package_id="pkg", error="" if candidates is not None else "no template")


def test_verdict_is_ng_at_or_above_the_class_threshold_and_pass_below():
    found = detections([((10, 10, 30, 30), "short", 0.5), ((50, 50, 80, 90), "open", 0.3)])
    assert judge(found, Thresholds(0.6))[0] == PASS
    verdict, defects = judge(found, Thresholds(0.5))
    assert verdict == NG and defects.class_names == ["short"]  # exactly at the threshold counts
    verdict, defects = judge(found, Thresholds(0.9, {"open": 0.3}))  # per-class override
    assert verdict == NG and defects.class_names == ["open"]
    assert judge(detections([]), Thresholds(0.1))[0] == PASS
    assert judge(None, Thresholds(0.1)) == (NOT_JUDGED, None)


def test_thresholds_are_checked_and_set_the_candidate_floor():
    with pytest.raises(ThresholdError, match="threshold of class 'open'"):
        Thresholds(0.5, {"open": 1.5})
    with pytest.raises(ThresholdError, match="global"):
        Thresholds(0.0)
    assert Thresholds(0.5, {"short": 0.02}).candidate_floor() == pytest.approx(0.02)
    assert Thresholds(0.5).candidate_floor() == pytest.approx(0.05)


def test_counters_yield_and_log():
    session = InspectionSession(frames_in_memory=2)
    thresholds = Thresholds(0.5)
    ng = detections([((10, 10, 30, 30), "short", 0.9), ((40, 40, 60, 60), "short", 0.7),
                     ((100, 100, 120, 130), "open", 0.6)])
    assert session.counters.yield_percent is None
    for index, found in enumerate([ng, detections([]), ng, None, ng]):
        session.record(inspection(found, thresholds, frame_id=f"f:{index}"))
    counters = session.counters
    assert (counters.inspected, counters.ng, counters.not_judged) == (4, 3, 1)
    assert counters.yield_percent == pytest.approx(25.0)
    assert counters.per_class == {"short": 6, "open": 3}
    assert [entry.frame_id for entry in session.log] == ["f:0", "f:2", "f:4"]
    entry = session.log[-1]
    assert entry.defect_summary() == "short x2, open" and entry.max_score == pytest.approx(0.9)
    assert max(entry.thumbnail.shape[:2]) == 72
    # only the most recent frames stay in memory; older ones are read back from the evidence files
    assert session.log[0].image is None and session.log[1].image is not None
    session.reset_counters()
    assert session.counters.inspected == 0 and len(session.log) == 3


def test_rate_meter():
    meter = RateMeter(window_s=2.0)
    for i in range(11):
        meter.tick(100.0 + i * 0.1)
    assert meter.rate(101.0) == pytest.approx(10.0)
    assert meter.rate(200.0) == 0.0


def test_evidence_is_written_whole_and_the_record_survives_a_cut_line(tmp_path):
    store = EvidenceStore(tmp_path)
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)
    template = np.zeros_like(image)
    defects = detections([((1, 2, 30, 40), "spur", 0.8)], size=(80, 64))
    path = store.save_ng(frame_id="cam0:000007", captured_at=1_700_000_000.5, source="0", image=image,
                         template=template, defects=defects, thresholds={"global": 0.5}, package_id="pkg")
    assert np.array_equal(read_image(path), image)
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved["defects"][0]["class_name"] == "spur"
    assert np.array_equal(read_image(path.parent / saved["template"]), template)
    assert not list(tmp_path.rglob("*.part"))  # no temporary files left behind

    store.record({"captured_at": 1_700_000_000.5, "frame_id": "a", "verdict": "NG"}, durable=True)
    log_file = next(tmp_path.glob("inspections-*.jsonl"))
    with open(log_file, "a") as stream:  # what a crash in the middle of a write leaves
        stream.write('{"frame_id": "b", "verd')
    assert [r["frame_id"] for r in read_records(log_file)] == ["a"]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "settings.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_review_round_trip_is_read_back_by_the_data_layer(tmp_path):
    sample = load_dataset(BUNDLED_DEEPPCB).samples[0]
    image, template = sample.load_image(), sample.load_template()
    found = detections([((10.4, 20.6, 40.2, 50.0), "short", 0.9), ((100, 100, 130, 120), "open", 0.7)])
    review = ReviewState.from_detections("demo:x/1:3", 1_700_000_000.0, image, template, found, CLASSES)
    review.toggle_false_call(review.box_at(120, 110))  # the "open" is not a defect
    review.add_missed((300, 310, 280, 330), "pin-hole")  # dragged right-to-left: ordered on the way in
    with pytest.raises(ValueError, match="expected one of"):
        review.add_missed((1, 1, 5, 5), "scratch")
    xml_path = write_voc_review(tmp_path / "reviews", review)

    dataset = load_dataset(tmp_path / "reviews")
    assert dataset.format == "voc" and not dataset.problems and len(dataset) == 1
    loaded = dataset.samples[0]
    assert [dataset.class_names[c] for c in loaded.classes] == ["short", "pin-hole"]
    np.testing.assert_array_equal(loaded.boxes, [[10, 20, 41, 50], [280, 310, 300, 330]])
    assert np.array_equal(loaded.load_image(), image)
    assert np.array_equal(loaded.load_template(), template)
    # saving the same frame again replaces its sample instead of adding another
    review.remove(len(review.boxes) - 1)
    assert write_voc_review(tmp_path / "reviews", review) == xml_path
    assert [len(s) for s in load_dataset(tmp_path / "reviews").samples] == [1]


def test_settings_persist_and_a_broken_file_is_kept_aside(tmp_path):
    path = tmp_path / "gui.json"
    settings = GuiSettings(source="rtsp://cam/1", global_threshold=0.4, per_class_thresholds={"short": 0.3})
    save_settings(path, settings)
    assert load_settings(path) == (settings, "")
    path.write_text('{"source": 3}')
    loaded, message = load_settings(path)
    assert loaded == GuiSettings() and "source: expected str" in message
    assert (tmp_path / "gui.json.unreadable").read_text() == '{"source": 3}'


def test_live_view_colours_match_the_saved_images():
    """The window draws with gui.palette; saved snapshots with inspector.runtime.draw: same colour per class."""
    from gui.palette import CLASS_RGB
    from inspector.runtime.draw import draw_detections

    for class_id in range(len(CLASS_RGB)):
        found = Detections(np.array([[10, 30, 60, 60]], np.float32), np.array([0.9], np.float32),
                           np.array([class_id], np.int64), ["x"], (80, 80), Timing(0, 0, 0))
        drawn = draw_detections(np.zeros((80, 80, 3), np.uint8), found)
        blue, green, red = drawn[45, 10]  # a pixel of the box's left edge
        assert (red, green, blue) == CLASS_RGB[class_id]


def panel_entry(template_box, tile, shift=(0, 0), score=0.9, class_name="open") -> dict:
    """A whole panel's queue entry as ``review_entries`` writes it: the tested panel is the golden one moved by
    ``shift``."""
    dx, dy = shift
    x1, y1, x2, y2 = template_box
    return {"box": [x1 + dx, y1 + dy, x2 + dx, y2 + dy], "score": score, "class_name": class_name,
            "template_box": list(template_box), "tile": list(tile)}


def test_a_box_drawn_in_a_tile_is_stored_in_panel_pixels_and_cut_at_the_tile_edge():
    window = TileWindow(2, 6, (576, 0, 640, 640), 583, 5, 640, 640, shift=(7, 5))
    assert window.to_panel((10, 20, 40, 60)) == ([593.0, 25.0, 623.0, 65.0], False)
    assert window.to_tile([593.0, 25.0, 623.0, 65.0]) == [10.0, 20.0, 40.0, 60.0]  # and back
    # Across the right and bottom edges: only what the reviewer saw (inside the tile) is kept, and said so.
    assert window.to_panel((600, 620, 700, 660.5)) == ([1183.0, 625.0, 1223.0, 645.0], True)
    assert window.to_panel((-30, -2, 5, 4)) == ([583.0, 5.0, 588.0, 9.0], True)  # across the top left corner
    with pytest.raises(QueueInputError, match=r"lies outside the tile \(640x640\)"):
        window.to_panel((650, 10, 700, 40))  # wholly beside it: nothing seen to box
    with pytest.raises(QueueInputError, match="lies outside the tile"):
        window.to_panel((639.5, 10, 700, 40))  # half a pixel inside: nothing either
    with pytest.raises(QueueInputError, match="x2 > x1"):
        window.to_panel((40, 10, 20, 30))
    with pytest.raises(QueueInputError, match="finite"):
        window.to_panel((0, 0, float("nan"), 5))
    with pytest.raises(QueueInputError, match="four numbers"):
        window.to_panel((0, 0, 5))
    assert window.holds([1200, 600, 1300, 700]) and not window.holds([1223, 600, 1300, 700])
    assert window.template_region() == (576, 0, 640, 640)  # the golden panel is cut at the tile itself
    assert window.describe() == ("tile 2 of 6 at x 576, y 0 (640 × 640 px); on this panel at x 583, y 5 "
                                 "(registration shift +7, +5)")
    fixtured = TileWindow(3, 12, (1200, 800, 640, 640), 1200, 800, 640, 640)
    assert fixtured.describe() == "tile 3 of 12 at x 1200, y 800 (640 × 640 px)"
    assert fixtured.to_panel((0, 0, 640, 640)) == ([1200.0, 800.0, 1840.0, 1440.0], False)


def test_a_panels_entries_are_walked_tile_by_tile_in_reading_order():
    shift = (7, 5)
    detections = [panel_entry([700, 300, 730, 330], [576, 0, 640, 640], shift),
                  panel_entry([1500, 900, 1530, 940], [1152, 576, 640, 640], shift),
                  panel_entry([100, 100, 130, 120], [0, 0, 640, 640], shift),
                  panel_entry([900, 500, 940, 520], [576, 0, 640, 640], (8, 6))]  # the panel not quite rigid
    changes = [{**panel_entry([1250, 200, 1290, 240], [1152, 0, 640, 640], shift), "area": 900},
               {"box": [5, 5, 9, 9], "area": 16}]  # names no tile: drawn where it falls, never a stop
    tiles = panel_tiles(detections, changes, (1800, 1232))
    assert [(w.tile[:2], w.number, w.count) for w in tiles.windows] == [
        ((0, 0), 1, 4), ((576, 0), 2, 4), ((1152, 0), 3, 4), ((1152, 576), 4, 4)]
    assert [(s.kind, s.index, s.window.number) for s in tiles.stops] == [
        (DETECTION, 2, 1), (DETECTION, 0, 2), (DETECTION, 3, 2), (CHANGE, 0, 3), (DETECTION, 1, 4)]
    # One window per tile, moved by its entries' median shift (7.5, 5.5 here: half a pixel goes up).
    assert [(w.x, w.y, w.width, w.height, w.shift) for w in tiles.windows][:2] == [
        (7, 5, 640, 640, (7, 5)), (584, 6, 640, 640, (8, 6))]
    assert tiles.stop_of(DETECTION, 3) == 2 and tiles.stop_of(CHANGE, 0) == 3 and tiles.stop_of(CHANGE, 1) is None
    # A window never leaves the picture: the bottom right tile moved by the shift is cut at the panel's edge.
    edge = panel_tiles([panel_entry([1500, 900, 1530, 940], [1152, 576, 640, 640], shift)], [], (1795, 1220))
    assert [(w.x, w.y, w.width, w.height) for w in edge.windows] == [(1159, 581, 636, 639)]
    # A single board: no entry names a tile.
    assert panel_tiles([{"box": [1, 2, 3, 4], "score": 0.9, "class_name": "open"}], [], (640, 640)) is None


def test_a_tile_is_cut_from_the_picture_without_copying_it():
    panel = np.arange(1232 * 1800 * 3, dtype=np.uint32).astype(np.uint8).reshape(1232, 1800, 3)
    tile = cut(panel, 583, 5, 640, 640)
    assert tile.shape == (640, 640, 3) and np.shares_memory(tile, panel)  # a view: no copy of the panel
    np.testing.assert_array_equal(tile, panel[5:645, 583:1223])
    beyond = cut(panel, -7, -5, 640, 640)  # the golden panel's region of a window shifted past its corner
    assert beyond.shape == (640, 640, 3) and not np.shares_memory(beyond, panel)
    assert not beyond[:5].any() and not beyond[:, :7].any()
    np.testing.assert_array_equal(beyond[5:, 7:], panel[:635, :633])


def test_a_panel_drafts_boxes_are_shown_in_tile_pixels_and_the_tile_only():
    shift = (7, 5)
    detections = [panel_entry([700, 300, 730, 330], [576, 0, 640, 640], shift),
                  panel_entry([1500, 900, 1530, 940], [1152, 576, 640, 640], shift),
                  panel_entry([1200, 600, 1260, 660], [576, 0, 640, 640], shift)]  # runs past the tile's edge
    changes = [{"box": [600, 40, 620, 60], "area": 300}, {"box": [1500, 1000, 1520, 1010], "area": 100}]
    item = QueueItem(1, "now", "panel.png", None, "", "", 0.5, ["open", "short"], detections, changes,
                     "ng", 0.0, "pending")
    draft = QueueDraft(item, (1800, 1232))
    draft.set_verdict(0, "reject")
    draft.add_missed([800, 100, 820, 130], "short")
    draft.add_missed([10, 10, 20, 20], "short")  # in another tile
    tiles = panel_tiles(detections, changes, draft.image_size)
    stop = tiles.stops[0]
    scene = draft_scene(draft, stop.window, stop)
    assert scene.sources == [(DETECTION, 0), (DETECTION, 2), (ADDED, 0)]
    assert [b.xyxy for b in scene.boxes] == [(124.0, 300.0, 154.0, 330.0), (624.0, 600.0, 684.0, 660.0),
                                             (217.0, 95.0, 237.0, 125.0)]
    assert scene.boxes[0].false_call and scene.verdicts == ["reject", None]
    assert [c["box"] for c in scene.changes] == [[17.0, 35.0, 37.0, 55.0]]
    assert scene.focus == [124.0, 300.0, 154.0, 330.0]
    whole = draft_scene(draft)  # the whole picture: every box as stored, as a single board's
    assert [b.xyxy for b in whole.boxes] == [tuple(d["box"]) for d in detections] + [
        (800.0, 100.0, 820.0, 130.0), (10.0, 10.0, 20.0, 20.0)]
    assert len(whole.changes) == 2 and whole.focus is None


def test_on_a_registered_panel_each_tile_window_shows_the_board_of_its_golden_tile():
    """The line's real panel path (register, tile, stitch, queue entries): a tile's window on the misregistered
    panel, moved by its entries' shift, shows the board of the golden tile, and the tile as named does not."""
    from inspector.data.panels import Misregistration, assemble_panel, pairs_from_samples
    from inspector.review_queue.store import review_entries
    from inspector.runtime import Detector
    from inspector.runtime.panel import PanelInspector

    samples = sorted(load_dataset(BUNDLED_DEEPPCB.parent / "deeppcb_demo").samples, key=lambda s: s.key)[:4]
    panel = assemble_panel(pairs_from_samples(samples), 2, 2, margin=32,
                           misregistration=Misregistration(7.0, -5.0, 0.0, 1.0))
    found = PanelInspector(Detector.load(None, threads=1)).inspect(panel.tested, panel.template)
    detections, changes = review_entries(found.as_detections())
    tiles = panel_tiles(detections, changes, (panel.tested.shape[1], panel.tested.shape[0]))
    assert len(tiles.windows) > 3 and len(tiles.stops) == len(detections) > 10
    for window in tiles.windows:
        shown = cut(panel.tested, window.x, window.y, window.width, window.height).astype(np.int16)
        golden = cut(panel.template, *window.template_region()).astype(np.int16)
        x, y, width, height = window.tile
        unmoved = cut(panel.tested, x, y, width, height).astype(np.int16) - cut(panel.template, x, y, width, height)
        assert window.shift != (0, 0)
        assert np.abs(shown - golden).mean() < 0.5 * np.abs(unmoved).mean(), window


def test_a_picture_is_read_as_the_file_holds_it_grey_in_one_channel(tmp_path):
    grey = np.arange(60 * 80, dtype=np.uint8).reshape(60, 80)
    colour = np.dstack([grey, 255 - grey, grey // 2])
    files = {"grey.png": grey, "grey.tif": grey, "colour.png": colour, "alpha.png": np.dstack([colour, grey]),
             "deep.png": grey.astype(np.uint16) * 257}
    for name, pixels in files.items():
        assert cv2.imwrite(str(tmp_path / name), pixels)
    for name in ("grey.png", "grey.tif", "deep.png"):  # 16 bit comes as 8 bit: what the view can show
        picture = read_picture(tmp_path / name)
        assert picture.shape == (60, 80) and picture.dtype == np.uint8, name
        np.testing.assert_array_equal(picture, grey)
    np.testing.assert_array_equal(read_picture(tmp_path / "colour.png"), colour)
    np.testing.assert_array_equal(read_picture(tmp_path / "alpha.png"), colour)  # alpha dropped

    with pytest.raises(PictureError, match=f"its image {tmp_path / 'gone.png'} cannot be read: no such file"):
        read_picture(tmp_path / "gone.png")
    (tmp_path / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(PictureError, match="its golden template .*damaged.png cannot be read: not an image"):
        read_picture(tmp_path / "damaged.png", "golden template")
    with pytest.raises(PictureError, match="no image file is recorded"):
        read_picture("")


def test_an_item_is_read_picture_then_template_and_a_bad_template_does_not_hide_the_board(tmp_path):
    assert cv2.imwrite(str(tmp_path / "board.png"), np.full((40, 50), 70, np.uint8))
    item = QueueItem(3, "now", str(tmp_path / "board.png"), str(tmp_path / "gone.png"), "", "", 0.5, ["open"], [],
                     [], "ng", 0.0, "pending")
    pictures = read_item_pictures(item)
    assert pictures.ok and pictures.image.shape == (40, 50) and pictures.template is None
    assert "golden template" in pictures.template_error and "no such file" in pictures.template_error
    unwanted = read_item_pictures(item, wanted=lambda: False)  # selected away after the picture: template skipped
    assert unwanted.ok and unwanted.template_error == ""
    missing = read_item_pictures(dataclasses.replace(item, image_path=str(tmp_path / "moved.png")))
    assert not missing.ok and f"its image {tmp_path / 'moved.png'} cannot be read" in missing.error


def test_only_the_answer_for_the_last_selection_is_taken():
    selection = Selection()
    first = selection.select(7)
    second = selection.select(8)
    assert selection.item_id == 8 and not selection.wanted(first) and selection.wanted(second)
    assert not selection.take(first)  # the earlier one's answer, come late: dropped, still waiting for 8
    assert selection.item_id == 8
    assert selection.take(second) and selection.item_id is None
    assert not selection.take(second)  # taken once
    third = selection.select(7)
    selection.cancel()  # the queue closed: nothing wanted
    assert not selection.wanted(third) and not selection.take(third) and selection.item_id is None


def test_the_pending_list_reads_each_page_after_the_last_board_listed_and_lists_each_board_once(tmp_path):
    queue = ReviewQueue(tmp_path / "queue.db")
    ids = [queue.offer(f"b{i}.png", [{"box": [1, 1, 5, 5], "score": 0.8 + i / 1000, "class_name": "open"}], 0.5,
                       CLASSES) for i in range(8)]  # NG boards, ranked in the order queued
    pages: list[dict] = []
    pending = queue.pending
    queue.pending = lambda *args, **kwargs: pages.append(kwargs) or pending(*args, **kwargs)  # what is asked
    listing = PendingList(3)
    assert [item.id for item in listing.refresh(queue)] == ids[:3] and listing.through == ids[2]
    assert [item.id for item in listing.more(queue)] == ids[3:6] and listing.wanted == 6
    assert pages[-1] == {"after": ids[2]}  # after the last board listed, never at an offset
    queue.decide(ids[1], "ann", [{"index": 0, "verdict": "reject"}])
    queue.decide(ids[5], "ann", [{"index": 0, "verdict": "reject"}])  # the list's last board: still its end
    first = queue.offer("new.png", [{"box": [1, 1, 5, 5], "score": 0.51, "class_name": "open"}], 0.5, CLASSES)
    pages.clear()
    assert [item.id for item in listing.refresh(queue)] == [first, ids[0], ids[2], ids[3], ids[4], ids[6]]
    assert pages == [{"after": None, "through": ids[5]}, {"after": ids[2], "through": ids[5]},
                     {"after": ids[5], "through": None}]  # up to the list's end, a page at a time, then topped up
    assert listing.through == ids[6] and listing.unlisted(len(queue.pending(100))) == 1
    assert [item.id for item in listing.more(queue)] == [ids[7]] and listing.more(queue) == []
    assert [item.id for item in listing.items] == [first, ids[0], ids[2], ids[3], ids[4], ids[6], ids[7]]
    assert listing.unlisted(7) == 0
    with pytest.raises(ValueError, match="pending list: page must be at least 1 board, got 0"):
        PendingList(0)
    queue.close()
