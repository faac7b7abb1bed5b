"""Recipes and part ids in the operator window (offscreen): real recipe files in tmp_path, validated by the
service's own loader; a switch changes template, thresholds, ignore regions and model between two frames,
a bad recipe is refused with its file and field named and the previous one stays; the part id typed (or
scanned) is shown beside the verdict and written into the defect log and the inspection record."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import pytest
import yaml
from PySide6.QtCore import Qt

from gui.evidence import read_records
from gui.settings import load_settings
from gui.workers import InferenceThread
from inspector.capture import DEMO_DIR
from inspector.data import load_dataset
from test_gui import WAIT_MS, BoardSource, engineer_hash, open_window, shipped_model, unlock  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


def write_recipe(folder: Path, name: str, model: Path, **fields) -> Path:
    data = {"name": name, "version": "1", "model": os.path.relpath(model, folder), **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def recipes(tmp_path, shipped_model) -> Path:
    """board-a: the golden template of demo board 3, thresholds of its own; board-b: everything ignored."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    cv2.imwrite(str(folder / "golden-a.png"), load_dataset(DEMO_DIR).samples[3].load_template())
    write_recipe(folder, "board-a", shipped_model, version="3", template="golden-a.png", score_threshold=0.3,
                 thresholds={"open": 0.6})
    write_recipe(folder, "board-b", shipped_model, version="7", template="golden-a.png",
                 ignore_regions=[[0, 0, 5000, 5000]])
    return folder


def test_recipe_switch_applies_template_thresholds_and_regions_and_a_bad_one_is_refused(
        qtbot, open_window, recipes, tmp_path):
    camera = BoardSource(boards=[3], fps=10.0, shift=(7, -5))  # frames without a template
    window = open_window("fake-camera", source_factory=lambda spec: camera)
    qtbot.waitUntil(lambda: window.session.counters.not_judged >= 1, timeout=WAIT_MS)  # no template yet
    window.set_recipes_folder(str(recipes))
    assert window._listed_recipes() == ["board-a", "board-b"]
    unlock(window)

    assert window.select_recipe("board-a")
    assert window.recipe.name == "board-a" and window.inference.options.recipe == "board-a version 3"
    options = window.inference.options
    assert options.thresholds.global_threshold == 0.3 and options.thresholds.per_class == {"open": 0.6}
    assert options.golden is not None and window.threshold_panel.global_box.value() == pytest.approx(0.3)
    # Frames judged before the switch may still be on their way to the window (queued signals, a busy machine):
    # await the first one judged under the recipe, not a count of frames.
    qtbot.waitUntil(lambda: window.current.recipe == "board-a version 3", timeout=WAIT_MS)  # compared now
    assert window.current.verdict == "NG"
    assert all(score >= (0.6 if name == "open" else 0.3)
               for score, name in zip(window.current.defects.scores, window.current.defects.class_names))

    # refused: unknown class, file and field named; board-a stays, options untouched
    write_recipe(recipes, "board-c", REPO / "models" / "default", thresholds={"scratch": 0.5})
    window.refresh_recipes()
    before = window.inference.options
    assert not window.select_recipe("board-c")
    reason = window.recipe_panel.refusal.text()
    assert str(recipes / "board-c.yaml") in reason and "field 'thresholds'" in reason and "scratch" in reason
    assert "board-a version 3 stays active" in window.message_banner.text()
    assert window.recipe.name == "board-a" and window.inference.options is before
    # refused: a model folder that is not a package
    write_recipe(recipes, "board-d", tmp_path / "no-model")
    assert not window.select_recipe("board-d") and "field 'model'" in window.recipe_panel.refusal.text()
    assert window.recipe.name == "board-a"

    # board-b ignores the whole frame (the service's rule: a defect whose centre is inside): PASS
    assert window.select_recipe("board-b")
    qtbot.waitUntil(lambda: window.current.recipe == "board-b version 7", timeout=WAIT_MS)
    assert window.current.verdict == "PASS"
    assert window.current.record()["thresholds"]["ignore_regions"] == [[0.0, 0.0, 5000.0, 5000.0]]

    window.stop()
    saved, _ = load_settings(tmp_path / "gui.json")
    assert saved.recipe == "board-b" and saved.recipes_dir == str(recipes)


def test_the_active_recipe_is_restored_at_start(qtbot, open_window, recipes, tmp_path):
    first = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[3], fps=10.0, shift=(7, -5)))
    first.set_recipes_folder(str(recipes))
    qtbot.waitUntil(lambda: first.model is not None, timeout=WAIT_MS)
    unlock(first)
    assert first.select_recipe("board-a")
    first.close()
    settings, _ = load_settings(tmp_path / "gui.json")
    from gui.main_window import MainWindow

    again = MainWindow(settings, tmp_path / "gui.json",
                       source_factory=lambda spec: BoardSource(boards=[3], fps=10.0, shift=(7, -5)))
    qtbot.addWidget(again)
    try:
        qtbot.waitUntil(lambda: again.recipe is not None and again.session.counters.inspected >= 1, timeout=WAIT_MS)
        assert again.recipe.name == "board-a" and again.current.recipe == "board-a version 3"
        assert again.inference.options.thresholds.per_class == {"open": 0.6}
    finally:
        again.shutdown()


@pytest.mark.slow
def test_a_recipe_with_another_model_switches_model_and_options_together(
        qtbot, open_window, recipes, monkeypatch, shipped_model, tmp_path):
    other_model = tmp_path / "board-e-package"  # a second board type's package (a copy: another folder)
    shutil.copytree(shipped_model, other_model)
    pairs = []  # (model folder, global threshold) of every frame judged: never the old with the new
    real_inspect = InferenceThread.inspect

    def watched(self, frame, options):
        pairs.append((Path(self.model.path).resolve(), options.thresholds.global_threshold))
        return real_inspect(self, frame, options)

    monkeypatch.setattr(InferenceThread, "inspect", watched)
    write_recipe(recipes, "board-e", other_model, template="golden-a.png", score_threshold=0.45)
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[3], fps=20.0, shift=(7, -5)))
    window.set_recipes_folder(str(recipes))
    qtbot.waitUntil(lambda: window.model is not None, timeout=WAIT_MS)
    unlock(window)
    assert window.select_recipe("board-a")
    qtbot.waitUntil(lambda: window.session.counters.inspected >= 2, timeout=WAIT_MS)
    assert window.select_recipe("board-e")
    assert window.recipe.name == "board-a"  # until its model runs
    assert not window.select_recipe("board-b")  # one switch at a time
    assert "still loading its model" in window.recipe_panel.refusal.text()
    qtbot.waitUntil(lambda: window.recipe.name == "board-e", timeout=WAIT_MS)
    seen = window.session.counters.inspected
    qtbot.waitUntil(lambda: window.session.counters.inspected >= seen + 2, timeout=WAIT_MS)
    assert Path(window.model.path).resolve() == other_model.resolve()
    assert window.inference.options.thresholds.global_threshold == 0.45
    old, new = shipped_model.resolve(), other_model.resolve()
    mixed = [pair for pair in pairs if pair in ((old, 0.45), (new, 0.3))]
    assert not mixed and (old, 0.3) in pairs and (new, 0.45) in pairs
    assert load_settings(Path(window.config_path))[0].model == str(other_model.resolve())


def test_part_id_is_shown_with_the_verdict_and_stored_in_log_and_records(qtbot, open_window):
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[1], fps=10.0))
    qtbot.waitUntil(lambda: window.model is not None, timeout=WAIT_MS)
    window.part_panel.entry.setFocus()
    qtbot.keyClicks(window.part_panel.entry, "SN-0042")
    qtbot.keyClick(window.part_panel.entry, Qt.Key.Key_Return)  # what a barcode scanner sends after the code
    qtbot.waitUntil(lambda: window.current is not None and window.current.part_id == "SN-0042", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.part_panel.shown.text() == "Part: SN-0042", timeout=WAIT_MS)
    assert window.current.verdict == "NG"  # every demo board has defects
    qtbot.waitUntil(lambda: any(e.part_id == "SN-0042" for e in window.session.log), timeout=WAIT_MS)
    row = next(r for r in range(window.log_model.rowCount()) if window.log_model.entry(r).part_id == "SN-0042")
    assert window.log_model.data(window.log_model.index(row, 5)) == "SN-0042"
    assert window.log_model.headerData(5, Qt.Orientation.Horizontal) == "part"
    window.stop()
    qtbot.waitUntil(window.evidence.idle, timeout=WAIT_MS)  # the evidence thread writes behind the window
    records = read_records(next(Path(window.settings.evidence_dir).glob("inspections-*.jsonl")))
    tagged = [r for r in records if r["part_id"] == "SN-0042"]
    assert tagged and all(r["verdict"] == "NG" and r["evidence"] for r in tagged)
    evidence = Path(tagged[0]["evidence"]).with_suffix(".json")
    assert json.loads(evidence.read_text())["part_id"] == "SN-0042"
    assert window.view.shown.token.part_id == "SN-0042"  # every frame after the scan carries it
    snapshot = window.snapshot()
    assert json.loads(snapshot.with_suffix(".json").read_text())["part_id"] == "SN-0042"


def test_part_id_from_a_qr_code_on_the_board(qtbot, open_window):
    from gui.workers import serial_from_code

    sample = load_dataset(DEMO_DIR).samples[0]
    board = sample.load_image().copy()
    code = cv2.QRCodeEncoder.create().encode("PCB-7781")
    code = cv2.resize(code, (code.shape[1] * 4, code.shape[0] * 4), interpolation=cv2.INTER_NEAREST)
    board[10:10 + code.shape[0], 10:10 + code.shape[1]] = code[..., None]
    assert serial_from_code(board) == "PCB-7781"
    assert serial_from_code(sample.load_image()) == ""

    camera = BoardSource(boards=[0], fps=10.0)
    camera.pairs = [(board, sample.load_template())]
    window = open_window("fake-camera", source_factory=lambda spec: camera)
    qtbot.waitUntil(lambda: window.current is not None, timeout=WAIT_MS)
    assert window.current.part_id == ""  # off by default
    window.serial_code_action.trigger()
    qtbot.waitUntil(lambda: window.current.part_id == "PCB-7781", timeout=WAIT_MS)
    assert window.part_panel.shown.text() == "Part: PCB-7781"
    assert window.serial_code_action.text() == "Read part id from a code"
    formats = window.serial_format_actions
    assert [name for name, act in formats.items() if act.isChecked()] == ["datamatrix", "qr", "code128"]
    formats["qr"].trigger()  # Inspect > Part id codes > QR off: the QR code is no serial any more
    qtbot.waitUntil(lambda: window.current.part_id == "", timeout=WAIT_MS)
    assert load_settings(window.config_path)[0].serial_code_formats == ["datamatrix", "code128"]
    formats["qr"].trigger()  # on again: read after the formats already on
    qtbot.waitUntil(lambda: window.current.part_id == "PCB-7781", timeout=WAIT_MS)
    assert load_settings(window.config_path)[0].serial_code_formats == ["datamatrix", "code128", "qr"]
    formats["datamatrix"].trigger()
    formats["code128"].trigger()
    formats["qr"].trigger()  # the last one stays on: reading no code is switching the part id reading off
    assert formats["qr"].isChecked() and window.settings.serial_code_formats == ["qr"]
    window.set_part_id("SCANNED-1")  # a scanned or typed id wins over the code
    qtbot.waitUntil(lambda: window.current.part_id == "SCANNED-1", timeout=WAIT_MS)
    assert load_settings(window.config_path)[0].read_serial_code


def test_without_zxing_cpp_the_banner_says_which_codes_are_not_read(qtbot, open_window, monkeypatch):
    from inspector.service import serial_codes

    monkeypatch.setitem(sys.modules, "zxingcpp", None)  # `import zxingcpp` now raises ImportError
    monkeypatch.setattr(serial_codes, "_fallback_warned", True)
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[0], fps=10.0))
    assert not window.message_banner.isVisible()  # not reading codes: nothing to say
    window.serial_code_action.trigger()
    assert window.message_banner.text() == ("Part id codes: zxing-cpp is not installed: serials are read from QR "
                                            "codes only, not datamatrix, code128 (pip install zxing-cpp)")
    window.serial_format_actions["qr"].trigger()
    assert "no serial can be read from datamatrix, code128 codes" in window.message_banner.text()
    window.serial_code_action.trigger()  # off: the note goes
    assert not window.message_banner.isVisible() and window.message_banner.text() == ""


def test_part_id_from_a_data_matrix_through_the_inference_options(qapp):
    """gui/workers: with read_serial_code, each frame's part id is read with the service's reader from the
    formats of the options (no window, no model process: a stand-in client answers every frame)."""
    from dataclasses import replace

    from gui.inference_process import DetectResult, ModelSummary
    from gui.session import Thresholds
    from gui.settings import GuiSettings
    from gui.workers import FrameSlot, InferenceOptions
    from inspector.capture import Frame
    from line_helpers import code_image

    class Client:
        def detect(self, image, template, **_):
            return DetectResult(None, "stand-in: no model", None)

    board = load_dataset(DEMO_DIR).samples[0].load_image().copy()
    code = code_image("DataMatrix", "PCB-DM-0099", scale=3)
    board[500:500 + code.shape[0], 20:20 + code.shape[1]] = code[..., None]
    frame = Frame(image=board, frame_id="cam:1", sequence=1, source="fake-camera", captured_at=0.0,
                  captured_monotonic=0.0)
    thread = InferenceThread(FrameSlot(), InferenceOptions(Thresholds(0.5)))
    thread.model = ModelSummary(path="", name="stand-in", class_names=["open"], needs_template=False,
                                default_threshold=0.5, package_id="stand-in", files={}, metrics={}, runtime={},
                                load_seconds=0.0)
    thread.client = Client()
    reading = InferenceOptions(Thresholds(0.5), read_serial_code=True)
    assert reading.serial_code_formats == ("datamatrix", "qr", "code128")  # the service's default
    assert thread.inspect(frame, reading).part_id == "PCB-DM-0099"
    assert thread.inspect(frame, replace(reading, serial_code_formats=("qr", "code128"))).part_id == ""
    assert thread.inspect(frame, replace(reading, read_serial_code=False)).part_id == ""
    assert thread.inspect(frame, replace(reading, part_id="SCANNED-7")).part_id == "SCANNED-7"
    with pytest.raises(ValueError, match=r"serial_code_formats: expected some of \('datamatrix', 'qr'"):
        GuiSettings(serial_code_formats=["datamatrix", "ean13"])  # as a hand-edited settings file would say
