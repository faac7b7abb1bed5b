"""The operator's window: wires the panels to the session state and the worker threads.

The GUI thread never runs the model, reads the camera or waits on the disk for a frame: it receives
judged inspections (``InferenceThread.inspected``), counts them, and paints the newest one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QByteArray, QPoint, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from gui.evidence import EvidenceStore, load_ng_evidence
from gui.frame_view import FrameView, Shown
from gui.palette import ERROR_BANNER, INFO_BANNER, NG_COLOUR, PASS_COLOUR, WARNING_BANNER
from gui.panels import (
    Banner,
    CountersPanel,
    DefectLogModel,
    DefectLogView,
    LiveNumbers,
    ModelPanel,
    ReviewPanel,
    SourceBar,
    ThresholdPanel,
    VerdictIndicator,
)
from gui.review import MODEL, OPERATOR, ReviewState, write_voc_review
from gui.session import (
    NOT_JUDGED,
    Inspection,
    InspectionSession,
    LogEntry,
    RateMeter,
    RecentValues,
    Thresholds,
    ThresholdError,
    judge,
)
from gui.settings import GuiSettings, save_settings
from gui.inference_process import ModelSummary
from gui.workers import CaptureThread, EvidenceThread, FrameSlot, InferenceOptions, InferenceThread
from inspector.capture import FrameSource, SourceError
from inspector.capture.base import read_template_file
from inspector.data import DataError
from inspector.runtime.draw import draw_detections

NUMBERS_REFRESH_MS = 250
SETTINGS_SAVE_DELAY_MS = 600  # thresholds are saved once the operator stops turning the knob
DRAIN_TIMEOUT_S = 10.0  # longest a stop waits for a hot-folder frame in flight to be stored


class MainWindow(QMainWindow):
    def __init__(self, settings: GuiSettings, config_path: Path, *, fps: float | None = None,
                 source_factory: Callable[[str], FrameSource] | None = None,
                 reconnect_backoff: tuple[float, float] = (0.5, 30.0), startup_message: str = "",
                 autostart: bool = True) -> None:
        super().__init__()
        self.settings = settings
        self.config_path = Path(config_path)
        self.fps = fps
        self.source_factory = source_factory  # tests give a fake FrameSource; otherwise open_source(spec)
        self.reconnect_backoff = reconnect_backoff
        self.session = InspectionSession()
        self.model: ModelSummary | None = None
        self.current: Inspection | None = None  # the newest live inspection
        self.review: ReviewState | None = None
        self.review_defects = None  # the model's defects on the reviewed frame (for snapshots)
        self.golden: np.ndarray | None = None
        self.fps_meter = RateMeter()
        self.latencies_ms = RecentValues()
        self.inference_ms = RecentValues()
        self.after_model_ms = RecentValues()  # judged -> on screen: the hand-off to the GUI thread and the paint
        self._last_painted: Inspection | None = None
        self.frames_shown = 0
        self._first_shown_at: float | None = None
        self._last_shown_at: float | None = None
        self._inspection_warning = ""
        self._loading_path = ""

        problems = [startup_message] if startup_message else []
        try:
            self.thresholds = Thresholds(settings.global_threshold or 0.5, dict(settings.per_class_thresholds))
        except ThresholdError as error:
            problems.append(f"saved thresholds ignored: {error}")
            settings.global_threshold, settings.per_class_thresholds = None, {}
            self.thresholds = Thresholds(0.5)
        if settings.template:
            try:
                self.golden = read_template_file(settings.template)
            except SourceError as error:
                problems.append(f"golden template not loaded: {error}")

        self.slot = FrameSlot()
        self.evidence = EvidenceThread(Path(settings.evidence_dir))
        self.inference = InferenceThread(self.slot, self._options(), self.evidence)
        self.capture: CaptureThread | None = None

        self._build_ui()
        self._build_actions()
        self._connect_workers()
        self._save_timer = QTimer(self, singleShot=True, interval=SETTINGS_SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save_settings)
        self._numbers_timer = QTimer(self, interval=NUMBERS_REFRESH_MS)
        self._numbers_timer.timeout.connect(self._refresh_numbers)
        self._numbers_timer.start()
        if settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(settings.window_geometry.encode()))
        else:
            self.resize(1440, 900)
        if problems:
            self.message_banner.show_message("; ".join(problems), WARNING_BANNER)

        self.evidence.start()
        self.inference.start()
        self.load_model(settings.model or None)
        self.counters.show_counters(self.session.counters)
        self._update_title()
        if autostart:
            self.start()

    # ================================================================== layout

    def _build_ui(self) -> None:
        self.source_banner = Banner()
        self.message_banner = Banner()
        self.view = FrameView()
        self.view.set_placeholder("Loading the model…")

        self.verdict = VerdictIndicator()
        self.frame_info = QLabel(" ")
        self.frame_info.setStyleSheet("color: #555;")
        self.frame_info.setWordWrap(True)
        self.numbers = LiveNumbers()
        self.counters = CountersPanel()
        self.counters.reset_requested.connect(self.ask_reset_counters)

        self.log_model = DefectLogModel(self)
        self.log_view = DefectLogView(self.log_model)
        self.log_view.selectionModel().currentRowChanged.connect(
            lambda current, _previous: self.review_log_row(current.row()) if current.isValid() else None)
        self.threshold_panel = ThresholdPanel()
        self.threshold_panel.changed.connect(self.set_thresholds)
        self.review_panel = ReviewPanel()
        self.review_panel.review_current.connect(self.review_current_frame)
        self.review_panel.draw_toggled.connect(self._set_draw_mode)
        self.review_panel.save.connect(self.save_review)
        self.review_panel.back_to_live.connect(self.back_to_live)
        self.review_panel.folder.setText(f"Reviews are saved in {self.settings.review_dir}")
        self.model_panel = ModelPanel()
        self.model_panel.load_requested.connect(self.choose_model)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.log_view, "Defect log")
        self.tabs.addTab(self.threshold_panel, "Thresholds")
        self.tabs.addTab(self.review_panel, "Review")
        self.tabs.addTab(self.model_panel, "Model")

        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(6, 0, 0, 0)
        side_layout.addWidget(self.verdict)
        side_layout.addWidget(self.frame_info)
        side_layout.addWidget(self.numbers)
        side_layout.addWidget(self.counters)
        side_layout.addWidget(self.tabs, 1)
        side.setMinimumWidth(430)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.view)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([960, 470])

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.source_banner)
        layout.addWidget(self.message_banner)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)

        self.view.painted.connect(self._painted)
        self.view.box_clicked.connect(self._toggle_false_call)
        self.view.box_drawn.connect(self._add_missed)
        self.view.box_menu.connect(self._box_menu)

    def _build_actions(self) -> None:
        def action(text: str, shortcut: str | QKeySequence.StandardKey | None, slot, tip: str = "",
                   checkable: bool = False) -> QAction:
            act = QAction(text, self)
            if shortcut:
                act.setShortcut(QKeySequence(shortcut))
                act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.setToolTip(f"{tip or text} ({act.shortcut().toString()})" if shortcut else (tip or text))
            act.setCheckable(checkable)
            act.triggered.connect(slot)
            self.addAction(act)  # shortcuts work with the menus closed
            return act

        self.start_action = action("Stop", "Space", self.toggle_running, "Start or stop inspecting")
        self.snapshot_action = action("Snapshot", "S", self.snapshot, "Save the frame on screen with its detections")
        self.template_action = action("Golden template…", "T", self.choose_template,
                                      "Load the golden board image for sources whose frames carry none")
        self.overlay_action = action("Template overlay", "O", self._set_overlay,
                                     "Draw the golden template's edges where the alignment puts them", checkable=True)
        self.overlay_action.setChecked(self.settings.show_overlay)
        self.changes_action = action("Unknown changes", "U", self._set_flag_changes,
                                     "Flag where the board differs from its golden template and no detection "
                                     "explains it (dashed yellow)", checkable=True)
        self.changes_action.setChecked(self.settings.flag_changes)
        self.align_action = action("Align frames to the template", None, self._set_align, checkable=True)
        self.align_action.setChecked(self.settings.align)
        self.model_action = action("Load model package…", "Ctrl+O", self.choose_model)
        self.folder_action = action("Watch a folder…", None, self.choose_folder, "Inspect images a scanner writes "
                                    "into a folder (hot folder)")
        self.video_action = action("Open a video file…", None, self.choose_video)
        self.evidence_folder_action = action("Evidence folder…", None, self.choose_evidence_folder,
                                             "Where NG frames, snapshots and the inspection record are written")
        self.review_folder_action = action("Review folder…", None, self.choose_review_folder,
                                           "Where reviewed frames are saved as Pascal VOC for retraining")
        self.review_action = action("Review this frame", "F", self.review_current_frame)
        self.draw_action = action("Draw missed defect", "D", lambda: self.review_panel.draw_button.toggle())
        self.save_review_action = action("Save review", "Ctrl+S", self.save_review)
        self.live_action = action("Back to live", "Esc", self.back_to_live)
        self.reset_action = action("Reset counters…", "Ctrl+R", self.ask_reset_counters)
        self.fullscreen_action = action("Full screen", "F11", self._toggle_fullscreen, checkable=True)
        self.quit_action = action("Quit", "Ctrl+Q", self.close)
        self.shortcuts_action = action("Keyboard shortcuts", "F1", self._show_shortcuts)

        toolbar = QToolBar("Inspection")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.source_bar = SourceBar()
        self.source_bar.set_source(self.settings.source)
        self.source_bar.apply.connect(self.set_source)
        toolbar.addWidget(self.source_bar)
        for act in (self.start_action, self.snapshot_action, self.template_action, self.overlay_action):
            toolbar.addAction(act)
        self.addToolBar(toolbar)

        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        for act in (self.model_action, self.template_action, self.folder_action, self.video_action):
            file_menu.addAction(act)
        file_menu.addSeparator()
        file_menu.addAction(self.evidence_folder_action)
        file_menu.addAction(self.review_folder_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        inspect_menu = menus.addMenu("&Inspect")
        for act in (self.start_action, self.snapshot_action, self.overlay_action, self.align_action,
                    self.reset_action):
            inspect_menu.addAction(act)
        review_menu = menus.addMenu("&Review")
        for act in (self.review_action, self.draw_action, self.save_review_action, self.live_action):
            review_menu.addAction(act)
        view_menu = menus.addMenu("&View")
        view_menu.addAction(self.fullscreen_action)
        menus.addMenu("&Help").addAction(self.shortcuts_action)

    def _connect_workers(self) -> None:
        self.inference.inspected.connect(self.on_inspected)
        self.inference.model_loading.connect(self._model_loading)
        self.inference.model_loaded.connect(self._model_loaded)
        self.inference.model_failed.connect(self._model_failed)
        self.inference.crashed.connect(lambda reason: self.message_banner.show_message(
            f"Model process stopped unexpectedly ({reason}); restarting it with "
            f"{self.model.name if self.model else 'the last model'}", WARNING_BANNER))
        self.evidence.saved.connect(self._evidence_saved)
        self.evidence.failed.connect(lambda message: self.message_banner.show_message(
            f"Evidence not saved: {message}", ERROR_BANNER))

    # ================================================================== running

    @property
    def running(self) -> bool:
        return self.capture is not None

    def start(self) -> None:
        if self.capture is not None:
            return
        self.slot.reopen()
        spec = self.settings.source
        inner = None
        if self.source_factory is not None:
            inner = self.source_factory(spec)
        capture = CaptureThread(spec, self.slot, fps=self.fps, source=inner,
                                initial_backoff=self.reconnect_backoff[0], max_backoff=self.reconnect_backoff[1])
        capture.state_changed.connect(self._source_state_changed)
        capture.failed.connect(self._source_failed)
        capture.frame_skipped.connect(lambda message: self.statusBar().showMessage(f"Skipped: {message}", 8000))
        self.capture = capture
        self.inference.capture = capture
        capture.start()
        self.start_action.setText("Stop")
        self._update_title()

    def stop(self) -> None:
        capture, self.capture = self.capture, None
        if capture is None:
            return
        if not capture.droppable:
            # hot folder: let the frames in flight be judged, stored and acknowledged before the source closes
            capture.pause()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline and not (self.slot.idle() and self.evidence.idle()):
                time.sleep(0.01)
        capture.stop()
        self.slot.close()  # a capture waiting for room in the slot (hot folder) gives up
        capture.wait(10_000)
        self.slot.reopen()
        self.start_action.setText("Start")
        self.source_banner.clear_message()
        self.statusBar().showMessage("Stopped", 5000)
        self._update_title()

    def toggle_running(self) -> None:
        self.stop() if self.running else self.start()

    def set_source(self, spec: str) -> None:
        """Switch to another source (restarts capture)."""
        spec = spec.strip()
        if not spec:
            return
        self.settings.source = spec
        self.source_bar.set_source(spec)
        self.save_settings()
        self.stop()
        self.start()

    def _source_state_changed(self, state: str, error: str, reconnects: int) -> None:
        if self.sender() is not self.capture:
            return  # a stopped capture's last words
        name = self.settings.source
        if state == "connected":
            self.source_banner.clear_message()
            if reconnects:
                self.statusBar().showMessage(f"Source {name} is back (reconnected {reconnects} time(s))", 8000)
        elif state in ("connecting", "reconnecting") and error:
            source = self.capture.source if self.capture is not None else None
            wait = f"; next try in {source.backoff / 2:.1f} s" if source is not None else ""
            what = "cannot be opened" if state == "connecting" else "was lost"
            self.source_banner.show_message(f"Camera/source {name} {what}: {error} — reconnecting{wait}",
                                            ERROR_BANNER)
            self.verdict.set_verdict("")

    def _source_failed(self, message: str) -> None:
        if self.sender() is not self.capture:
            return
        self.stop()
        self.source_banner.show_message(f"Source stopped: {message}", ERROR_BANNER)

    # ================================================================== model

    def load_model(self, path: str | None) -> None:
        self.inference.load_model(path, self.settings.backend, self.settings.threads)

    def choose_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model package folder (with manifest.json)",
                                                  self.settings.model or str(Path.cwd()))
        if folder:
            self.load_model(folder)

    def _model_loading(self, path: str) -> None:
        self._loading_path = path
        self.model_panel.set_state(f"loading {path or 'the shipped default'}…")
        self.statusBar().showMessage(f"Loading model {path or '(shipped default)'}…")

    def _model_loaded(self, summary: ModelSummary) -> None:
        self.model = summary
        self.settings.model = self._loading_path  # what was asked for ("" = the shipped default, whatever it is)
        if self.settings.global_threshold is None:
            thresholds = Thresholds(summary.default_threshold, self.thresholds.per_class)
        else:
            thresholds = self.thresholds
        self.thresholds = thresholds.restricted_to(summary.class_names)
        self.threshold_panel.set_model(summary.class_names, self.thresholds, summary.default_threshold)
        self.counters.set_class_names(summary.class_names)
        self.review_panel.set_class_names(summary.class_names)
        self.model_panel.show_model(summary)
        self.model_panel.set_state("running", PASS_COLOUR)
        self._push_options()
        if self.message_banner.text().startswith("Model"):
            self.message_banner.clear_message()
        self.statusBar().showMessage(f"Model {summary.name} loaded in {summary.load_seconds:.1f} s", 8000)
        self.view.set_placeholder("Waiting for frames…")
        self.counters.show_counters(self.session.counters)
        self._update_title()
        self.save_settings()

    def _model_failed(self, path: str, error: str) -> None:
        still = f"still running {self.model.name}" if self.model else "no model is running: load one (Ctrl+O)"
        self.message_banner.show_message(f"Model {path or '(shipped default)'} not loaded: {error} — {still}",
                                         WARNING_BANNER if self.model else ERROR_BANNER)
        self.model_panel.set_state(f"load failed; {still}", NG_COLOUR)
        if self.model is None:
            self.view.set_placeholder("No model loaded")

    # ================================================================== inspections

    def _options(self) -> InferenceOptions:
        return InferenceOptions(self.thresholds, self.golden, self.settings.align, self.settings.show_overlay,
                                self.settings.flag_changes)

    def _push_options(self) -> None:
        self.inference.options = self._options()  # one assignment: the worker sees old or new, never half

    def on_inspected(self, inspection: Inspection) -> None:
        if inspection.candidates is not None:
            self.inference_ms.add(inspection.candidates.timing.total_ms)
        entry = self.session.record(inspection)
        if entry is not None:
            self.log_model.add(entry)
        self.current = inspection
        if inspection.error and inspection.error != self._inspection_warning:
            self._inspection_warning = inspection.error
            self.message_banner.show_message(f"Frame not judged: {inspection.error}", WARNING_BANNER)
        elif not inspection.error and self._inspection_warning:
            self._inspection_warning = ""
            if self.message_banner.text().startswith("Frame not judged"):  # other messages stay
                self.message_banner.clear_message()
        if self.review is None:
            self._show_live(inspection)
        self.counters.show_counters(self.session.counters)

    def _show_live(self, inspection: Inspection) -> None:
        verdict, defects = judge(inspection.candidates, self.thresholds)
        self.verdict.set_verdict(verdict)
        when = time.strftime("%H:%M:%S", time.localtime(inspection.captured_at))
        aligned = inspection.candidates.alignment if inspection.candidates is not None else None
        self.frame_info.setText(f"{inspection.frame_id} · {when}" +
                                (f" · {len(defects)} defect(s)" if defects is not None else "") +
                                (f"<br>aligned to the template: correlation {aligned.correlation:.2f}, shift "
                                 f"({aligned.shift[0]:.1f}, {aligned.shift[1]:.1f}) px, "
                                 f"{aligned.rotation_deg:.2f}°" if aligned is not None else "") +
                                (f"<br>{inspection.error}" if inspection.error else ""))
        changes = None if inspection.candidates is None else inspection.candidates.unknown_changes
        self.view.show_frame(Shown(inspection.image, defects, self._class_names(), inspection.overlay,
                                   caption=f"{inspection.frame_id}  {when}", token=inspection, changes=changes))

    def _painted(self, token) -> None:
        """End-to-end latency: from the frame's capture to the first paint of it with its boxes."""
        if isinstance(token, Inspection) and token is not self._last_painted:
            self._last_painted = token
            now = time.monotonic()
            self.latencies_ms.add((now - token.captured_monotonic) * 1e3)
            self.after_model_ms.add((now - token.judged_monotonic) * 1e3)
            self.fps_meter.tick(now)
            self.frames_shown += 1
            self._first_shown_at = self._first_shown_at or now
            self._last_shown_at = now

    def _refresh_numbers(self) -> None:
        self.numbers.set_numbers(self.fps_meter.rate(), self.inference_ms.percentile(50),
                                 self.latencies_ms.percentile(50), self.slot.dropped)

    def performance_summary(self) -> str:
        """One line for the log when the window closes: frame rate, latency, model time, drops."""
        counters = self.session.counters
        span = (self._last_shown_at or 0.0) - (self._first_shown_at or 0.0)
        fps = (self.frames_shown - 1) / span if self.frames_shown > 1 and span > 0 else 0.0

        def ms(values: RecentValues, q: float) -> str:
            value = values.percentile(q)
            return "-" if value is None else f"{value:.1f}"

        return (f"{counters.inspected} boards judged ({counters.ng} NG, {counters.not_judged} not judged); "
                f"{self.frames_shown} frames shown at {fps:.2f} FPS; latency capture->boxes drawn p50 "
                f"{ms(self.latencies_ms, 50)} ms p95 {ms(self.latencies_ms, 95)} ms (last {len(self.latencies_ms)} "
                f"frames); model p50 {ms(self.inference_ms, 50)} ms; model done->on screen p50 "
                f"{ms(self.after_model_ms, 50)} ms; dropped {self.slot.dropped} frames")

    def _evidence_saved(self, frame_id: str, path: str) -> None:
        entry = self.session.entry_for_frame(frame_id)
        if entry is not None:
            entry.evidence_image = path

    def _class_names(self) -> list[str]:
        return self.model.class_names if self.model is not None else []

    # ================================================================== thresholds, template, overlay

    def set_thresholds(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self._push_options()
        model_default = self.model.default_threshold if self.model is not None else None
        self.settings.global_threshold = None if model_default is not None and abs(
            thresholds.global_threshold - model_default) < 5e-3 else thresholds.global_threshold
        self.settings.per_class_thresholds = dict(thresholds.per_class)
        self._save_timer.start()
        if self.review is None and self.current is not None:
            self._show_live(self.current)  # the frame on screen re-judged at once

    def choose_template(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Golden template image", self.settings.template or str(Path.cwd()),
                                              "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff)")
        if path:
            self.set_template(path)

    def set_template(self, path: str) -> None:
        try:
            self.golden = read_template_file(path)
        except SourceError as error:
            self.message_banner.show_message(f"Golden template not loaded: {error}", ERROR_BANNER)
            return
        self.settings.template = path
        self._push_options()
        self.save_settings()
        self.statusBar().showMessage(f"Golden template {path} ({self.golden.shape[1]}x{self.golden.shape[0]})", 8000)

    def _set_overlay(self, on: bool) -> None:
        self.settings.show_overlay = bool(on)
        self._push_options()
        self.save_settings()

    def _set_flag_changes(self, on: bool) -> None:
        self.settings.flag_changes = bool(on)
        self._push_options()
        self.save_settings()

    def _set_align(self, on: bool) -> None:
        self.settings.align = bool(on)
        self._push_options()
        self.save_settings()

    # ================================================================== review

    def review_current_frame(self) -> None:
        if self.current is None:
            self.statusBar().showMessage("No frame to review yet", 5000)
            return
        _, defects = judge(self.current.candidates, self.thresholds)
        self._start_review(self.current.frame_id, self.current.captured_at, self.current.image, self.current.template,
                           defects)

    def review_log_row(self, row: int) -> None:
        if row < 0 or row >= self.log_model.rowCount():
            return
        entry: LogEntry = self.log_model.entry(row)
        if self.review is not None and self.review.frame_id == entry.frame_id:
            return  # the same row again (rows above it were added): keep the operator's marks
        image, template = entry.image, entry.template
        if image is None:
            if not entry.evidence_image:
                self.statusBar().showMessage(f"NG #{entry.number}: its frame is no longer in memory and was not "
                                             "saved (see the banner)", 8000)
                return
            try:
                image, template = load_ng_evidence(Path(entry.evidence_image))
            except (OSError, ValueError, DataError) as error:
                self.message_banner.show_message(f"Cannot read back NG #{entry.number}: {error}", ERROR_BANNER)
                return
        self._start_review(entry.frame_id, entry.captured_at, image, template, entry.defects)
        self.verdict.set_verdict("NG")

    def _start_review(self, frame_id: str, captured_at: float, image: np.ndarray, template: np.ndarray | None,
                      defects) -> None:
        self.review = ReviewState.from_detections(frame_id, captured_at, image, template, defects,
                                                  self._class_names())
        self.review_defects = defects
        self.review_panel.set_active(True)
        self._show_review()

    def _show_review(self) -> None:
        review = self.review
        self.view.show_frame(Shown(review.image, self.review_defects, review.class_names, review=review,
                                   caption=f"REVIEW {review.frame_id} — Esc: back to live"))
        self.review_panel.status.setText(
            f"Reviewing {review.frame_id}: {len(review.boxes) - review.n_false_calls - review.n_missed} confirmed, "
            f"{review.n_false_calls} false call(s), {review.n_missed} missed defect(s) added.")

    def _set_draw_mode(self, on: bool) -> None:
        if on and self.review is None:
            self.review_current_frame()
        self.view.draw_mode = bool(on) and self.review is not None
        if on and self.review is None:
            self.review_panel.draw_button.setChecked(False)

    def _toggle_false_call(self, index: int) -> None:
        if self.review is None:
            return
        box = self.review.boxes[index]
        if box.origin == MODEL:
            self.review.toggle_false_call(index)
            self._show_review()

    def _add_missed(self, xyxy) -> None:
        if self.review is None:
            return
        class_name = self.review_panel.class_box.currentText()
        try:
            self.review.add_missed(tuple(float(v) for v in xyxy), class_name)
        except ValueError as error:
            self.statusBar().showMessage(f"Box not added: {error}", 8000)
            return
        self._show_review()

    def _box_menu(self, index: int, position: QPoint) -> None:
        box = self.review.boxes[index]
        menu = QMenu(self)
        if box.origin == MODEL:
            menu.addAction("Not a false call" if box.false_call else "False call",
                           lambda: self._toggle_false_call(index))
        else:
            change = menu.addMenu("Class")
            for name in self.review.class_names:
                change.addAction(name, lambda name=name: self._set_box_class(index, name))
            menu.addAction("Remove", lambda: self._remove_box(index))
        menu.exec(position)

    def _set_box_class(self, index: int, name: str) -> None:
        self.review.boxes[index].class_name = name
        self._show_review()

    def _remove_box(self, index: int) -> None:
        if self.review.boxes[index].origin == OPERATOR:
            self.review.remove(index)
            self._show_review()

    def save_review(self) -> Path | None:
        if self.review is None:
            self.statusBar().showMessage("Nothing under review: press F or pick a defect log row first", 5000)
            return None
        try:
            path = write_voc_review(Path(self.settings.review_dir), self.review)
        except OSError as error:
            self.message_banner.show_message(f"Review not saved to {self.settings.review_dir}: {error}", ERROR_BANNER)
            return None
        labels = self.review.labels()
        self.statusBar().showMessage(f"Saved {len(labels)} labeled defect(s) to {path}", 10_000)
        self.message_banner.show_message(f"Review saved: {path.name} ({len(labels)} defect(s))", INFO_BANNER)
        QTimer.singleShot(4000, self, self._clear_saved_notice)  # with the window as context: cancelled with it
        return path

    def _clear_saved_notice(self) -> None:
        if self.message_banner.text().startswith("Review saved"):
            self.message_banner.clear_message()

    def back_to_live(self) -> None:
        if self.review is None:
            return
        self.review = None
        self.review_defects = None
        self.review_panel.set_active(False)
        self.review_panel.status.setText("Not reviewing.")
        self.view.draw_mode = False
        self.log_view.clearSelection()
        self.log_view.setCurrentIndex(self.log_model.index(-1, -1))
        if self.current is not None:
            self._show_live(self.current)

    # ================================================================== snapshot, counters, settings

    def snapshot(self) -> Path | None:
        """The frame on screen with its detections drawn, saved beside the evidence."""
        shown = self.view.shown
        if shown is None:
            self.statusBar().showMessage("No frame to snapshot yet", 5000)
            return None
        defects = shown.defects
        if defects is None:
            annotated, detections_for_file, verdict = shown.image.copy(), None, NOT_JUDGED
        else:
            annotated, detections_for_file = draw_detections(shown.image, defects), defects
            verdict = "NG" if len(defects) else "PASS"
        inspection = shown.token if isinstance(shown.token, Inspection) else None
        frame_id = inspection.frame_id if inspection else (self.review.frame_id if self.review else "frame")
        captured_at = inspection.captured_at if inspection else (self.review.captured_at if self.review else time.time())
        try:
            path = EvidenceStore(Path(self.settings.evidence_dir)).save_snapshot(
                frame_id=frame_id, captured_at=captured_at, image=shown.image, annotated=annotated,
                detections=detections_for_file, verdict=verdict, thresholds=self.thresholds.to_dict(),
                package_id=self.model.package_id if self.model else "")
        except OSError as error:
            self.message_banner.show_message(f"Snapshot not saved: {error}", ERROR_BANNER)
            return None
        self.statusBar().showMessage(f"Snapshot saved: {path}", 10_000)
        return path

    def ask_reset_counters(self) -> None:
        answer = QMessageBox.question(
            self, "Reset counters",
            f"Start a new shift? The counters ({self.session.counters.inspected} inspected, "
            f"{self.session.counters.ng} NG) go back to zero. The defect log and saved evidence are kept.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            self.session.reset_counters()
            self.counters.show_counters(self.session.counters)

    def save_settings(self) -> None:
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64()).decode()
        try:
            save_settings(self.config_path, self.settings)
        except OSError as error:
            self.statusBar().showMessage(f"Settings not saved to {self.config_path}: {error}", 10_000)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder the scanner writes board images into")
        if folder:
            self.set_source(folder)

    def choose_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Video file", str(Path.cwd()),
                                              "Videos (*.mp4 *.avi *.mkv *.mov *.m4v *.webm);;All files (*)")
        if path:
            self.set_source(path)

    def choose_evidence_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Evidence folder", self.settings.evidence_dir)
        if folder:
            self.set_evidence_folder(folder)

    def set_evidence_folder(self, folder: str) -> None:
        self.settings.evidence_dir = folder
        self.evidence.store = EvidenceStore(Path(folder))  # one assignment: the writer uses old or new
        self.save_settings()

    def choose_review_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Review folder (Pascal VOC)", self.settings.review_dir)
        if folder:
            self.settings.review_dir = folder
            self.review_panel.folder.setText(f"Reviews are saved in {folder}")
            self.save_settings()

    def _toggle_fullscreen(self, on: bool) -> None:
        self.showFullScreen() if on else self.showNormal()

    def _show_shortcuts(self) -> None:
        lines = [f"{act.shortcut().toString():10s} {act.text()}" for act in self.actions() if not act.shortcut().isEmpty()]
        QMessageBox.information(self, "Keyboard shortcuts", "\n".join(lines))

    def _update_title(self) -> None:
        model = self.model.name if self.model else "no model"
        state = "" if self.running else " — stopped"
        self.setWindowTitle(f"PCB inspector — {self.settings.source} — {model}{state}")

    def shutdown(self) -> None:
        """Stop every thread (evidence is written to the end)."""
        self._numbers_timer.stop()
        self.stop()
        self.inference.stop()
        self.inference.wait(30_000)
        self.evidence.stop()
        self.evidence.wait(30_000)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)
