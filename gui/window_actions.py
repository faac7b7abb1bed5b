"""The window's actions: keyboard shortcuts, toolbar and menus, and the dialogs and commands behind them
(file choosers, snapshot, counter reset, full screen). A mixin of ``MainWindow``."""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMessageBox, QToolBar

from gui.evidence import EvidenceStore
from gui.panels import SourceBar
from gui.palette import ERROR_BANNER
from gui.session import NOT_JUDGED, Inspection
from inspector.runtime.draw import draw_detections
from inspector.service.serial_codes import CODE_FORMAT_LABELS


class ActionsMixin:
    """Builds the actions (with shortcuts that work while the menus are closed) and runs the simple ones."""

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
        self.serial_code_action = action("Read part id from a code", None, self._set_read_serial_code,
                                         "When no part id was scanned or typed, read it from a code on the board "
                                         "(the formats of Part id codes)", checkable=True)
        self.serial_code_action.setChecked(self.settings.read_serial_code)
        self.serial_format_actions = {}  # format name -> checkable action of the Part id codes menu
        for name, label in CODE_FORMAT_LABELS.items():
            act = action(label, None, lambda on, name=name: self._set_serial_code_format(name, on),
                         f"Read the part id from {label} codes (a format checked later is read after the others)",
                         checkable=True)
            act.setChecked(name in self.settings.serial_code_formats)
            self.serial_format_actions[name] = act
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
        self.queue_action = action("Verification queue…", "V", self.open_review_queue,
                                   "The boards the line queued for review, most instructive first")
        self.queue_file_action = action("Verification queue file…", None, self.choose_review_queue,
                                        "The line service's <data_dir>/review.sqlite3")
        self.reset_action = action("Reset counters…", "Ctrl+R", self.ask_reset_counters)
        self.fullscreen_action = action("Full screen", "F11", self._toggle_fullscreen, checkable=True)
        self.quit_action = action("Quit", "Ctrl+Q", self.close)
        self.shortcuts_action = action("Keyboard shortcuts", "F1", self._show_shortcuts)
        self.login_action = action("Log in…", "Ctrl+L", self.ask_engineer_login,
                                   "Engineer login: thresholds, recipe, model, template, saving reviews")
        self.lock_action = action("Lock", None, self.lock_engineer, "End the engineer session now")

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
                    self.serial_code_action):
            inspect_menu.addAction(act)
        codes_menu = inspect_menu.addMenu("Part id codes")
        for act in self.serial_format_actions.values():
            codes_menu.addAction(act)
        inspect_menu.addAction(self.reset_action)
        review_menu = menus.addMenu("&Review")
        for act in (self.review_action, self.draw_action, self.save_review_action, self.live_action):
            review_menu.addAction(act)
        review_menu.addSeparator()
        review_menu.addAction(self.queue_action)
        review_menu.addAction(self.queue_file_action)
        view_menu = menus.addMenu("&View")
        view_menu.addAction(self.fullscreen_action)
        engineer_menu = menus.addMenu("&Engineer")
        engineer_menu.addAction(self.login_action)
        engineer_menu.addAction(self.lock_action)
        menus.addMenu("&Help").addAction(self.shortcuts_action)

    def choose_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model package folder (with manifest.json)",
                                                  self.settings.model or str(Path.cwd()))
        if folder:
            self.select_model(folder)

    def choose_template(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Golden template image", self.settings.template or str(Path.cwd()),
                                              "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff)")
        if path:
            self.set_template(path)

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
                package_id=self.model.package_id if self.model else "",
                part_id=inspection.part_id if inspection else "")
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
