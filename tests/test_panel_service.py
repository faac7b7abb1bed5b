"""The line service on whole panels: a hot folder delivering a panel gives one record with every defect in
panel pixels and the panel's verdict, the same defects the runtime's panel inspection finds."""
from __future__ import annotations

import json
import sqlite3
import time
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

DEMO_DATA_DIR = BUNDLED_DEEPPCB.parent / "deeppcb_demo"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


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
