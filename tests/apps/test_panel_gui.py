"""The panel review window (offscreen): every defect marked on the map, a click zooms to it at full
resolution beside the same place of the golden panel."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from gui.panel_view import ZOOM_SIDE, PanelWindow
from inspector.data import load_dataset
from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.data.panels import Misregistration, assemble_panel, pairs_from_samples
from inspector.runtime import Detector
from inspector.runtime.panel import PanelInspector


@pytest.fixture(scope="module")
def inspected():
    samples = sorted(load_dataset(BUNDLED_DEEPPCB.parent / "deeppcb_demo").samples, key=lambda s: s.key)[:4]
    panel = assemble_panel(pairs_from_samples(samples), 2, 2, margin=32,
                           misregistration=Misregistration(7.0, -5.0, 0.0, 1.0))
    found = PanelInspector(Detector.load(None, threads=1)).inspect(panel.tested, panel.template)
    return panel, found


def test_clicking_a_defect_on_the_map_zooms_to_it_beside_the_golden_panel(qtbot, inspected):
    panel, found = inspected
    window = PanelWindow(panel.tested, panel.template, found, title="test")
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    assert window.list.count() == len(found) > 10 and window.verdict.text().startswith("NG")

    index = int(np.argmax(found.boxes[:, 0]))  # the right-most defect
    centre = window.map.mark_rect(index).center().toPoint()
    qtbot.mouseClick(window.map, Qt.MouseButton.LeftButton, pos=centre)
    assert window.map.selected == index and window.list.currentRow() == index
    tested, golden = window.zoomed
    assert tested.shape == golden.shape == (ZOOM_SIDE, ZOOM_SIDE)
    # Full resolution: the zoom is the panel's own pixels around the defect, and the golden panel's around
    # the same place (7 px left and 5 px down of it: the misregistration).
    x1, y1, x2, y2 = found.boxes[index]
    cx, cy = int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2))
    x0 = min(max(cx - ZOOM_SIDE // 2, 0), panel.tested.shape[1] - ZOOM_SIDE)
    y0 = min(max(cy - ZOOM_SIDE // 2, 0), panel.tested.shape[0] - ZOOM_SIDE)
    np.testing.assert_array_equal(tested, panel.tested[y0:y0 + ZOOM_SIDE, x0:x0 + ZOOM_SIDE])
    tx1, ty1, tx2, ty2 = found.template_boxes[index]
    assert abs((tx1 + tx2) / 2 - (x1 + x2) / 2 + 7.0) < 1.5 and abs((ty1 + ty2) / 2 - (y1 + y2) / 2 - 5.0) < 1.5
    assert window.tested_zoom.pixmap().width() == ZOOM_SIDE

    window.list.setCurrentRow(0)  # the list selects too
    assert window.map.selected == 0
    qtbot.mouseClick(window.map, Qt.MouseButton.LeftButton, pos=window.map.rect().topLeft())  # bare board: nothing
    assert window.map.selected == 0


def test_inspector_gui_panel_opens_the_review_window_with_the_panel_and_its_template(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import gui.panel_view
    from inspector.cli import app

    opened = []
    monkeypatch.setattr(gui.panel_view, "main", lambda argv: opened.append(argv) or 0)
    result = CliRunner().invoke(app, ["gui", "--panel", str(tmp_path / "p_test.png"), "--template",
                                      str(tmp_path / "p_temp.png")])
    assert result.exit_code == 0, result.output
    assert opened == [[str(tmp_path / "p_test.png"), "--template", str(tmp_path / "p_temp.png")]]
