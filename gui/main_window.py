"""The operator's window: wires the panels to the session state and the worker threads.

The GUI thread never runs the model, reads the camera or waits on the disk for a frame: it receives
judged inspections (``InferenceThread.inspected``), counts them, and paints the newest one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QLabel, QMainWindow, QSplitter, QTabWidget, QVBoxLayout, QWidget

from gui.frame_view import FrameView, Shown
from gui.palette import ERROR_BANNER, WARNING_BANNER
from gui.panels import (
    Banner,
    CountersPanel,
    DefectLogModel,
    DefectLogView,
    LiveNumbers,
    ModelPanel,
    ReviewPanel,
    ThresholdPanel,
    VerdictIndicator,
)
from gui.review import ReviewState
from gui.session import Inspection, InspectionSession, RateMeter, RecentValues, ThresholdError, Thresholds, judge
from gui.settings import GuiSettings
from gui.inference_process import ModelSummary
from gui.line_panels import PartPanel, RecipePanel
from gui.window_access import AccessMixin
from gui.window_queue import QueueMixin
from gui.window_actions import ActionsMixin
from gui.window_recipes import RecipeMixin
from gui.window_review import ReviewMixin
from gui.window_settings import CODE_NOTE_PREFIX, SettingsMixin
from gui.workers import CaptureThread, EvidenceThread, FrameSlot, InferenceThread
from inspector.capture import FrameSource, SourceError
from inspector.capture.base import read_template_file
from inspector.service.serial_codes import missing_decoder_note

NUMBERS_REFRESH_MS = 250
SETTINGS_SAVE_DELAY_MS = 600  # thresholds are saved once the operator stops turning the knob
DRAIN_TIMEOUT_S = 10.0  # longest a stop waits for a hot-folder frame in flight to be stored


class MainWindow(ActionsMixin, SettingsMixin, RecipeMixin, AccessMixin, ReviewMixin, QueueMixin, QMainWindow):
    """The window; its actions, settings, recipes, engineer access and review live in the mixins
    (``window_actions``, ``window_settings``, ``window_recipes``, ``window_access``, ``window_review``,
    ``window_queue``: the verification queue), the
    live inspection loop here."""

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
        self.recipe = None  # the active recipe (inspector.service.recipes.Recipe); None: set by hand
        self._pending_recipe = None  # a recipe waiting for its model (window_recipes)
        self.part_id = ""  # the id of the boards that follow, as scanned or typed

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
        self._init_access()
        self._init_recipes()
        self._connect_workers()
        self._save_timer = QTimer(self, singleShot=True, interval=SETTINGS_SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self._thresholds_settled)
        self._numbers_timer = QTimer(self, interval=NUMBERS_REFRESH_MS)
        self._numbers_timer.timeout.connect(self._refresh_numbers)
        self._numbers_timer.start()
        if settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(settings.window_geometry.encode()))
        else:
            self.resize(1440, 900)
        if settings.read_serial_code and (note := missing_decoder_note(settings.serial_code_formats)):
            problems.append(f"{CODE_NOTE_PREFIX}{note}")
        if problems:
            self.message_banner.show_message("; ".join(problems), WARNING_BANNER)

        self.evidence.start()
        self.inference.start()
        if not self.restore_recipe():
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
        self.recipe_panel = RecipePanel()
        self.part_panel = PartPanel()

        self.tabs = QTabWidget()
        self.tabs.addTab(self.log_view, "Defect log")
        self.tabs.addTab(self.threshold_panel, "Thresholds")
        self.tabs.addTab(self.review_panel, "Review")
        self.tabs.addTab(self.model_panel, "Model")
        self.tabs.addTab(self.recipe_panel, "Recipe")

        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(6, 0, 0, 0)
        side_layout.addWidget(self.verdict)
        side_layout.addWidget(self.part_panel)
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

    # ================================================================== inspections

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
        self.part_panel.show_part(inspection.part_id)
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

    def _update_title(self) -> None:
        model = self.model.name if self.model else "no model"
        state = "" if self.running else " — stopped"
        self.setWindowTitle(f"PCB inspector — {self.settings.source} — {model}{state}")

    def shutdown(self) -> None:
        """Stop every thread (evidence is written to the end) and close the audit trail."""
        self._numbers_timer.stop()
        self._access_timer.stop()
        self.close_review_queue()
        self._close_audit()
        self.stop()
        self.inference.stop()
        self.inference.wait(30_000)
        self.evidence.stop()
        self.evidence.wait(30_000)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)
