"""The operator window under pytest-qt (offscreen): frames, verdicts, banner, thresholds, review, model load.

The window runs the shipped model (models/default) on the bundled DeepPCB demo boards, which come from the
model's validation split and carry ground truth; a fake FrameSource plays them where a test must control
the source (unplug it, hold one board).
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from gui.main_window import MainWindow
from gui.review import MODEL
from gui.session import NG, PASS
from gui.settings import GuiSettings, load_settings
from inspector.capture import DEMO_DIR, Frame, FrameSource, SourceError
from inspector.capture.base import new_frame
from inspector.data import load_dataset
from inspector.runtime import resolve_package_path

WAIT_MS = 30_000  # generous: the machine may be busy
ENGINEER, PIN = "eng-anna", "2468"  # the window's engineer (settings hold only the PIN's hash)


def box_iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class BoardSource(FrameSource):
    """A camera stand-in: plays demo boards (with their templates) and can be 'unplugged' by the test."""

    kind = "camera"
    droppable = True

    def __init__(self, boards: list[int] | None = None, fps: float = 20.0, shift: tuple[int, int] | None = None) -> None:
        self.spec = "fake-camera"
        dataset = load_dataset(DEMO_DIR)
        chosen = boards if boards is not None else range(len(dataset.samples))
        self.pairs = [(dataset.samples[i].load_image(), dataset.samples[i].load_template()) for i in chosen]
        if shift is not None:  # a camera that knows no template and sees the board a little off
            moved = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
            self.pairs = [(cv2.warpAffine(image, moved, image.shape[1::-1], borderValue=(0, 0, 0)), None)
                          for image, _ in self.pairs]
        self.period = 1.0 / fps
        self.unplugged = threading.Event()
        self.opened = 0
        self._sequence = 0
        self._last = 0.0

    def open(self) -> None:
        if self.unplugged.is_set():
            raise SourceError("fake-camera: cannot open: unplugged")
        self.opened += 1

    def read(self) -> Frame | None:
        if self.unplugged.is_set():
            raise SourceError("fake-camera: no frame (unplugged)")
        if time.monotonic() - self._last < self.period:
            time.sleep(0.002)
            return None
        self._last = time.monotonic()
        image, template = self.pairs[self._sequence % len(self.pairs)]
        frame = new_frame(self, image, f"fake:{self._sequence}", self._sequence, template=template)
        self._sequence += 1
        return frame

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def shipped_model() -> Path:
    path = resolve_package_path(None)
    if not (path / "manifest.json").is_file():
        pytest.fail(f"the shipped model package is missing: {path} (models/default)")
    return path


@pytest.fixture(scope="session")
def engineer_hash() -> str:
    from gui.access import hash_pin

    return hash_pin(PIN)


def unlock(window: MainWindow) -> None:
    """Engineer actions (thresholds, template, model, recipe, saving reviews) need a login."""
    assert window.unlock_engineer(ENGINEER, PIN), window.message_banner.text()


@pytest.fixture()
def open_window(qtbot, tmp_path, shipped_model, engineer_hash):
    """Builds a window with its settings, evidence and reviews under tmp_path; closes it afterwards."""
    windows = []

    def build(source: str = "demo", source_factory=None, **options) -> MainWindow:
        settings = GuiSettings(source=source, model=str(shipped_model), threads=1,
                               evidence_dir=str(tmp_path / "evidence"), review_dir=str(tmp_path / "reviews"),
                               engineers={ENGINEER: engineer_hash}, audit_db=str(tmp_path / "audit.sqlite3"))
        window = MainWindow(settings, tmp_path / "gui.json", source_factory=source_factory, **options)
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield build
    for window in windows:
        window.shutdown()


def wait_for_inspections(qtbot, window: MainWindow, count: int) -> None:
    qtbot.waitUntil(lambda: window.session.counters.inspected >= count, timeout=WAIT_MS)


def test_demo_frames_flow_counters_update_and_a_known_defect_is_ng(qtbot, open_window):
    window = open_window("demo", fps=10.0)
    wait_for_inspections(qtbot, window, 4)
    counters = window.session.counters
    assert counters.inspected >= 4 and counters.not_judged == 0
    assert window.model is not None and window.model.needs_template  # demo frames bring their templates
    assert window.log_model.rowCount() == counters.ng == len(window.session.log)
    assert window.counters.inspected.text() == str(counters.inspected)

    # every demo board has labeled defects: the board on screen is NG, and a drawn box is a real one
    qtbot.waitUntil(lambda: window.view.shown is not None and window.view.shown.token is window.current,
                    timeout=WAIT_MS)
    current = window.current
    assert current.verdict == NG and window.verdict.text() == NG
    boards = load_dataset(DEMO_DIR)
    board = next(s for s in boards.samples if s.image_path == _demo_path(current.frame_id))
    assert np.array_equal(board.load_image(), current.image)
    gt_boxes, gt_classes, names = board.boxes, board.classes, boards.class_names
    matched = [(name, box) for box, name in zip(current.defects.boxes, current.defects.class_names)
               if any(box_iou(box, gt) > 0.33 and names[c] == name for gt, c in zip(gt_boxes, gt_classes))]
    assert matched, f"no detection on {current.frame_id} matches its ground truth {gt_boxes.tolist()}"
    # what is drawn is exactly what made it NG
    assert np.array_equal(window.view.shown.defects.boxes, current.defects.boxes)
    # frame rate, model time and latency are measured and shown
    qtbot.waitUntil(lambda: window.numbers.latency.text() not in ("—", ""), timeout=WAIT_MS)
    assert len(window.latencies_ms) > 0 and window.fps_meter.rate() > 0
    # NG evidence lands on disk
    qtbot.waitUntil(lambda: any((Path(window.settings.evidence_dir)).glob("*/*.json")), timeout=WAIT_MS)


def _demo_path(frame_id: str) -> Path:
    """demo:group00041/00041002:7 -> the bundled board's image file."""
    group, stem = frame_id.split(":")[1].split("/")
    return next((DEMO_DIR / group).glob(f"*/{stem}_test.jpg"))


@pytest.mark.slow
def test_source_failure_shows_the_banner_and_recovers(qtbot, open_window):
    camera = BoardSource(fps=20.0)
    window = open_window("fake-camera", source_factory=lambda spec: camera, reconnect_backoff=(0.05, 0.2))
    wait_for_inspections(qtbot, window, 2)
    assert window.source_banner.isHidden()

    camera.unplugged.set()
    qtbot.waitUntil(lambda: window.source_banner.isVisible(), timeout=WAIT_MS)
    assert "unplugged" in window.source_banner.text() and "reconnecting" in window.source_banner.text()
    before = window.session.counters.inspected
    time.sleep(0.3)  # several failed reconnection attempts meanwhile
    qtbot.wait(50)
    assert window.source_banner.isVisible()

    camera.unplugged.clear()
    qtbot.waitUntil(lambda: window.source_banner.isHidden(), timeout=WAIT_MS)
    wait_for_inspections(qtbot, window, before + 2)
    assert camera.opened >= 2 and window.capture.source.reconnects >= 1


def test_threshold_changes_change_what_is_drawn_and_persist(qtbot, open_window, tmp_path):
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[0], fps=20.0))
    wait_for_inspections(qtbot, window, 1)
    window.stop()  # hold the last board on screen
    unlock(window)
    shown = window.view.shown
    at_default = len(shown.defects)
    assert at_default > 0 and window.verdict.text() == NG
    top_class = shown.defects.class_names[int(np.argmax(shown.defects.scores))]

    window.threshold_panel.global_box.setValue(1.0)
    assert len(window.view.shown.defects) == 0 and window.verdict.text() == PASS

    window.threshold_panel.global_box.setValue(0.05)
    assert len(window.view.shown.defects) > at_default  # the candidates below the default appear

    window.threshold_panel.global_box.setValue(1.0)
    window.threshold_panel.per_class[top_class].setValue(0.05)  # one class sensitive, the others off
    drawn = window.view.shown.defects
    assert len(drawn) > 0 and set(drawn.class_names) == {top_class} and window.verdict.text() == NG

    window.save_settings()
    saved, message = load_settings(tmp_path / "gui.json")
    assert message == "" and saved.global_threshold == 1.0 and saved.per_class_thresholds == {top_class: 0.05}
    assert window.inference.options.thresholds.per_class == {top_class: 0.05}  # the worker judges with them too


def test_review_round_trip_writes_voc_that_the_data_layer_reads(qtbot, open_window, tmp_path):
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[1], fps=20.0))
    wait_for_inspections(qtbot, window, 1)
    window.stop()
    unlock(window)  # the saved review becomes training data
    qtbot.keyClick(window, Qt.Key.Key_F)  # freeze this frame for review
    review = window.review
    assert review is not None and len(review.boxes) >= 2

    # click the first detection: a false call
    view = window.view
    first = review.boxes[0]
    centre = view.to_widget((first.xyxy[0] + first.xyxy[2]) / 2, (first.xyxy[1] + first.xyxy[3]) / 2)
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=centre.toPoint())
    assert review.boxes[0].false_call

    # D, then drag a missed "spur" in an empty corner
    window.review_panel.class_box.setCurrentText("spur")
    qtbot.keyClick(window, Qt.Key.Key_D)
    assert view.draw_mode
    start, end = view.to_widget(4, 4), view.to_widget(40, 30)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=start.toPoint())
    qtbot.mouseMove(view, end.toPoint())
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=end.toPoint())
    added = review.boxes[-1]
    assert added.origin != MODEL and added.class_name == "spur"
    assert added.xyxy[0] == pytest.approx(4, abs=2) and added.xyxy[3] == pytest.approx(30, abs=2)

    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    dataset = load_dataset(tmp_path / "reviews")
    assert dataset.format == "voc" and not dataset.problems and len(dataset) == 1
    sample = dataset.samples[0]
    expected = [(b.class_name, b.xyxy) for b in review.boxes if not b.false_call]
    assert [dataset.class_names[c] for c in sample.classes] == [name for name, _ in expected]
    for loaded, (_, xyxy) in zip(sample.boxes, expected):
        assert np.allclose(loaded, xyxy, atol=1.0)
    assert np.array_equal(sample.load_image(), review.image)
    assert np.array_equal(sample.load_template(), review.template)

    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert window.review is None and not view.draw_mode


@pytest.mark.slow
def test_a_bad_package_keeps_the_running_model(qtbot, open_window, tmp_path):
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(fps=20.0))
    wait_for_inspections(qtbot, window, 1)
    running = window.model
    broken = tmp_path / "broken-package"
    shutil.copytree(running.path, broken)
    (broken / "manifest.json").write_text('{"format_version": 1, "name": ')
    window.load_model(str(broken))
    qtbot.waitUntil(lambda: window.message_banner.isVisible(), timeout=WAIT_MS)
    assert "not loaded" in window.message_banner.text() and "manifest.json" in window.message_banner.text()
    assert f"still running {running.name}" in window.message_banner.text()
    assert window.model is running
    before = window.session.counters.inspected
    wait_for_inspections(qtbot, window, before + 2)  # still inspecting with the previous model


@pytest.mark.slow
def test_a_slow_model_drops_frames_and_the_window_stays_responsive(qtbot, open_window, monkeypatch):
    from gui.workers import InferenceThread

    real_inspect = InferenceThread.inspect

    def slow_inspect(self, frame, options):
        time.sleep(0.6)  # in the GUI thread this would freeze the window for 0.6 s per frame
        return real_inspect(self, frame, options)

    monkeypatch.setattr(InferenceThread, "inspect", slow_inspect)
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(fps=30.0))
    wait_for_inspections(qtbot, window, 1)
    gaps, last = [], [time.monotonic()]

    def tick():
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now

    from PySide6.QtCore import QTimer
    timer = QTimer(interval=20)
    timer.timeout.connect(tick)
    timer.start()
    qtbot.wait(1500)
    timer.stop()
    assert window.slot.dropped > 5  # the model takes ~1.5 of 30 frames per second
    qtbot.waitUntil(lambda: window.numbers.dropped.text() == str(window.slot.dropped), timeout=WAIT_MS)
    assert max(gaps) < 0.45, f"the GUI thread stalled for {max(gaps):.2f} s"


def test_reset_asks_first(qtbot, open_window, monkeypatch):
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[2], fps=20.0))
    wait_for_inspections(qtbot, window, 1)
    window.stop()
    inspected = window.session.counters.inspected
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: QMessageBox.StandardButton.No)
    window.ask_reset_counters()
    assert window.session.counters.inspected == inspected
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: QMessageBox.StandardButton.Yes)
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert window.session.counters.inspected == 0 and window.counters.inspected.text() == "0"
    assert window.log_model.rowCount() >= 1  # the defect log is kept

    path = window.snapshot()  # snapshot of the board on screen, detections drawn
    assert path is not None and path.is_file() and path.with_suffix(".json").is_file()


@pytest.mark.slow
def test_a_hot_folder_is_never_dropped_and_files_count_as_done_once_stored(qtbot, open_window, tmp_path, monkeypatch):
    from gui.evidence import read_records
    from gui.workers import InferenceThread
    from inspector.capture import HotFolderSource

    folder = tmp_path / "scanner"
    folder.mkdir()
    boards = sorted(DEMO_DIR.glob("group*/*/*_test.jpg"))[:3]
    for index, board in enumerate(boards):
        for image in (board, board.with_name(board.name.replace("_test", "_temp"))):
            target = folder / image.name
            shutil.copyfile(image, target)
            stamp = time.time() - 60 + index  # settled long ago, oldest first
            os.utime(target, (stamp, stamp))
    real_inspect = InferenceThread.inspect
    monkeypatch.setattr(InferenceThread, "inspect",
                        lambda self, frame, options: (time.sleep(0.2), real_inspect(self, frame, options))[1])

    window = open_window(str(folder))
    wait_for_inspections(qtbot, window, 3)
    window.stop()
    assert window.slot.dropped == 0 and window.session.counters.inspected == 3
    records = read_records(next(Path(window.settings.evidence_dir).glob("inspections-*.jsonl")))
    assert sorted(r["frame_id"] for r in records) == sorted(b.name for b in boards)
    with HotFolderSource(folder) as again:  # a restart finds every file done
        assert again.read() is None


@pytest.mark.slow
def test_inspector_gui_on_a_real_x_server_shows_detections(tmp_path):
    """`python -m gui.screenshot` starts Xvfb and `inspector gui --source demo`, grabs the X screen."""
    import re
    import subprocess
    import sys

    shot = tmp_path / "gui.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    result = subprocess.run([sys.executable, "-m", "gui.screenshot", "--out", str(shot), "--seconds", "6",
                             "--fps", "4"], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    shown = int(re.search(r"(\d+) frames shown", result.stdout).group(1))
    assert shown >= 3, result.stdout
    assert re.search(r"latency capture->boxes drawn p50 [\d.]+ ms", result.stdout), result.stdout
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] >= 1000 and image.shape[0] >= 700
    # the big NG sign (every demo board has defects) is on the screen, in its red
    ng_red = np.all(np.abs(image.astype(int) - (30, 30, 205)) <= 12, axis=2)
    assert ng_red.sum() > 20_000, f"{ng_red.sum()} NG-red pixels"


@pytest.mark.slow
def test_golden_template_for_a_camera_alignment_and_overlay(qtbot, open_window, tmp_path):
    camera = BoardSource(boards=[3], fps=10.0, shift=(7, -5))
    window = open_window("fake-camera", source_factory=lambda spec: camera)
    # frames without a template cannot be compared: NOT JUDGED, and the banner says what to do
    qtbot.waitUntil(lambda: window.session.counters.not_judged >= 1, timeout=WAIT_MS)
    assert window.verdict.text() == "NOT JUDGED" and "golden template" in window.message_banner.text()

    golden = tmp_path / "golden.png"
    cv2.imwrite(str(golden), load_dataset(DEMO_DIR).samples[3].load_template())
    window.overlay_action.trigger()  # O
    unlock(window)
    window.set_template(str(golden))
    qtbot.waitUntil(lambda: window.session.counters.inspected >= 2, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.message_banner.isHidden(), timeout=WAIT_MS)
    current = window.current
    assert current.verdict in ("PASS", "NG") and current.candidates.alignment is not None
    assert current.candidates.alignment.shift == pytest.approx((7, -5), abs=1.0)
    assert current.overlay is not None and current.overlay.shape == (*current.image.shape[:2], 4)
    assert window.view.shown.overlay is current.overlay
    assert load_settings(tmp_path / "gui.json")[0].template == str(golden)


@pytest.mark.slow
def test_a_crashed_model_process_is_restarted_with_its_model(qtbot, open_window):
    import signal

    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(fps=10.0))
    wait_for_inspections(qtbot, window, 1)
    running, crashed_pid = window.model.package_id, window.inference.client.pid
    os.kill(crashed_pid, signal.SIGKILL)  # what an engine segfault looks like from here
    qtbot.waitUntil(lambda: "Model process stopped unexpectedly" in window.message_banner.text(), timeout=WAIT_MS)
    assert "killed by signal 9" in window.message_banner.text()
    before = window.session.counters.inspected
    wait_for_inspections(qtbot, window, before + 2)  # inspecting again, in a new process, same model
    assert window.inference.client.pid != crashed_pid and window.model.package_id == running
    qtbot.waitUntil(lambda: window.message_banner.isHidden(), timeout=WAIT_MS)


@pytest.mark.slow
def test_a_defect_log_row_shows_its_frame_even_once_it_is_only_on_disk(qtbot, open_window):
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[4, 5, 6], fps=10.0))
    window.session.frames_in_memory = 1  # older NG frames are read back from the evidence folder
    qtbot.waitUntil(lambda: len(window.session.log) >= 3 and all(e.evidence_image for e in window.session.log),
                    timeout=WAIT_MS)
    window.stop()
    oldest_row = window.log_model.rowCount() - 1
    entry = window.log_model.entry(oldest_row)
    assert entry.image is None  # no longer in memory
    window.log_view.selectRow(oldest_row)
    shown = window.view.shown
    assert window.review is not None and window.review.frame_id == entry.frame_id
    assert np.array_equal(shown.defects.boxes, entry.defects.boxes) and window.verdict.text() == NG
    evidence_image = cv2.imread(entry.evidence_image)
    assert np.array_equal(shown.image, evidence_image) and window.review.template is not None
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert window.review is None


def test_a_source_that_cannot_exist_says_so(qtbot, open_window, tmp_path):
    window = open_window(str(tmp_path / "no-such-folder"))
    qtbot.waitUntil(lambda: window.source_banner.isVisible(), timeout=WAIT_MS)
    assert "no such file or folder" in window.source_banner.text() and not window.running
    assert window.start_action.text() == "Start"
