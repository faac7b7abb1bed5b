"""The line service on whole panels: a hot folder delivering a panel gives one record with every defect in
panel pixels and the panel's verdict, the same defects the runtime's panel inspection finds."""
from __future__ import annotations

import functools
import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.data import load_dataset
from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.data.panels import Misregistration, assemble_panel, pairs_from_samples
from inspector.evaluation import box_iou
from inspector.runtime import Detector
from inspector.runtime.panel import PanelInspector
from inspector.service.config import ServiceConfig
from inspector.service.service import Service
from line_helpers import wait_for as shared_wait_for

DEMO_DATA_DIR = BUNDLED_DEEPPCB.parent / "deeppcb_demo"


wait_for = functools.partial(shared_wait_for, interval=0.05)  # each condition asks the service: poll gently


@pytest.fixture()
def panel_folder(tmp_path) -> tuple[Path, object]:
    samples = sorted(load_dataset(DEMO_DATA_DIR).samples, key=lambda s: s.key)[:4]
    panel = assemble_panel(pairs_from_samples(samples), 2, 2, margin=32,
                           misregistration=Misregistration(6.5, -4.0, 0.2, 1.0))
    folder = tmp_path / "incoming"
    folder.mkdir()
    # Template first: the hot folder takes a tested file once its template is there.
    cv2.imwrite(str(folder / "panel01_temp.png"), panel.template)
    cv2.imwrite(str(folder / "panel01_test.png"), panel.tested)
    return folder, panel


@pytest.mark.slow
def test_a_panel_from_the_hot_folder_is_one_record_with_every_defect_in_panel_pixels(tmp_path, panel_folder):
    folder, panel = panel_folder
    detector = Detector.load(None, threads=1)
    threshold = detector.manifest.postprocess.score_threshold
    config = ServiceConfig(source=str(folder), data_dir=tmp_path / "data", token="test-token-0123456789", http=None,
                           score_threshold=threshold)
    service = Service(config)
    try:
        service.start()
        wait_for(lambda: service.journal.count() == 1, 120, "the panel's record")
    finally:
        service.stop(drain=False, flush_timeout=0)
    connection = sqlite3.connect(config.records_path)
    try:
        verdict, defects, error = connection.execute("SELECT verdict, defects, error FROM records").fetchone()
    finally:
        connection.close()
    defects = json.loads(defects)
    assert error is None and verdict == "NG"

    direct = PanelInspector(detector).inspect(cv2.cvtColor(panel.tested, cv2.COLOR_GRAY2BGR),
                                              cv2.cvtColor(panel.template, cv2.COLOR_GRAY2BGR), score_threshold=threshold)
    boxes = np.float32([d["box"] for d in defects])
    assert len(defects) == len(direct) > 10  # stitched: a tile-by-tile record would hold 9 tiles' worth
    assert boxes[:, 2].max() > 700 and boxes[:, 3].max() > 700  # panel pixels, not a tile's
    iou = box_iou(direct.boxes, boxes)
    assert np.all(iou.max(axis=1) > 0.95)
    # And they are where the labels are, on the (misregistered) tested panel.
    found = box_iou(panel.boxes, boxes).max(axis=1) > 0.33
    assert found.mean() > 0.8, found.mean()


def _panel_with_a_new_copper_blob(panel) -> np.ndarray:
    """The tested panel with copper added where the golden panel has none, across the seam at x = 640."""
    tested = panel.tested.copy()
    cv2.rectangle(tested, (620, 300), (660, 330), 0, -1)
    return tested


def test_panel_flags_feed_the_review_queue_like_single_boards(tmp_path):
    """NG, near-threshold and unknown-change panels are queued and ranked as boards are; every entry keeps its
    panel box, golden-panel box and the tile it came from, so the reviewer can open that tile."""
    from prometheus_client import CollectorRegistry

    from inspector.service.review_feed import ReviewFeed

    samples = sorted(load_dataset(DEMO_DATA_DIR).samples, key=lambda s: s.key)[:4]
    panel = assemble_panel(pairs_from_samples(samples), 2, 2)
    tested = _panel_with_a_new_copper_blob(panel)
    detector = Detector.load(None, threads=1)
    inspector = PanelInspector(detector, register=False)
    threshold, band = float(detector.manifest.postprocess.score_threshold), 0.1
    feed = ReviewFeed(tmp_path / "data", CollectorRegistry(), "line1", near_band=band, max_pending=100)
    try:
        candidates = inspector.inspect(tested, panel.template, score_threshold=threshold - band, unknown_changes=True)
        nothing = inspector.inspect(tested, panel.template, score_threshold=0.999, unknown_changes=True)
        assert len(candidates) > 10 and len(nothing) == 0 and nothing.unknown_changes
        names = list(detector.manifest.class_names)
        common = dict(image=tested, template=panel.template, class_names=names, model="m (p)")
        assert feed.offer_found("near", "panel-near", found=candidates.as_detections(), score_threshold=threshold,
                                **common)
        confident = inspector.inspect(tested, panel.template, score_threshold=threshold)  # no flags asked for
        assert threshold > band and len(confident) > 10
        assert feed.offer_found("ng", "panel-ng", found=confident.as_detections(), score_threshold=0.0, **common)
        assert feed.offer_found("flags", "panel-flags", found=nothing.as_detections(), score_threshold=0.999,
                                **common)
        assert feed.wait_idle(60, boards=3) and feed.failures._value.get() == 0
        items = {item.source: item for item in feed.queue.pending()}
        assert [item.source for item in feed.queue.pending()] == ["panel-near", "panel-flags", "panel-ng"]
        assert (items["panel-near"].reason, items["panel-flags"].reason, items["panel-ng"].reason) == \
            ("near_threshold", "unknown_change", "ng")
        near = items["panel-near"]
        assert len(near.detections) == len(candidates)
        for entry, box, template_box, tile in zip(near.detections, candidates.boxes, candidates.template_boxes,
                                                  candidates.source_tiles):
            assert entry["box"] == pytest.approx(box.tolist()) and entry["template_box"] == pytest.approx(
                template_box.tolist()) and entry["tile"] == tile.tolist()
        assert max(entry["box"][2] for entry in near.detections) > 700  # panel pixels, not a tile's
        blob = [c for c in items["panel-flags"].unknown_changes if c["box"][0] < 640 < c["box"][2]]
        assert len(blob) == 1 and blob[0]["tile"][0] <= 620 and blob[0]["tile"][0] + blob[0]["tile"][2] >= 661
        stored = cv2.imread(items["panel-flags"].image_path, cv2.IMREAD_UNCHANGED)
        assert np.array_equal(stored, tested)  # the whole panel, losslessly: tiles are cut from it on review
    finally:
        feed.close()


@pytest.mark.slow
def test_the_line_queues_a_panels_unknown_change_with_its_tile(tmp_path, panel_folder):
    folder, panel = panel_folder
    cv2.imwrite(str(folder / "panel02_temp.png"), panel.template)
    blob = panel.tested.copy()
    # Copper where the golden panel has none, well inside the first board (the panel is misregistered).
    cv2.rectangle(blob, (200, 150), (240, 180), 0 if (panel.template[150:181, 200:241] > 127).mean() > 0.5 else 255,
                  -1)
    cv2.imwrite(str(folder / "panel02_test.png"), blob)
    config = ServiceConfig(source=str(folder), data_dir=tmp_path / "data", token="test-token-0123456789", http=None,
                           score_threshold=0.999, review=True, review_unknown_changes=True, review_near_band=0.01)
    service = Service(config)
    try:
        service.start()
        wait_for(lambda: service.journal.count() == 2, 180, "the panels' records")
        assert service.review.wait_idle(60, boards=2)
        items = {item.source: item for item in service.review.queue.pending()}
    finally:
        service.stop(drain=False, flush_timeout=0)
    assert items["panel02_test.png"].reason == "unknown_change"
    changes = items["panel02_test.png"].unknown_changes
    assert all(len(c["tile"]) == 4 and len(c["template_box"]) == 4 for c in changes)
    assert any(c["box"][0] < 240 and c["box"][2] > 200 and c["box"][1] < 180 and c["box"][3] > 150 for c in changes)
    unchanged = items.get("panel01_test.png")  # the same panel without the blob
    assert len(changes) == (len(unchanged.unknown_changes) if unchanged else 0) + 1
