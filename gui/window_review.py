"""Reviewing one frame in the window: false calls, missed defects drawn by the operator, saved as Pascal
VOC for retraining; the defect log's rows open their frames here. A mixin of ``MainWindow``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QPoint, QTimer
from PySide6.QtWidgets import QMenu

from gui.evidence import load_ng_evidence
from gui.frame_view import Shown
from gui.palette import ERROR_BANNER, INFO_BANNER
from gui.review import MODEL, OPERATOR, ReviewState, write_voc_review
from gui.session import LogEntry, judge
from inspector.data import DataError


class ReviewMixin:
    """The review state of the window (``self.review``) and the operator's edits to it."""

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
        self.part_panel.show_part(entry.part_id)

    def _start_review(self, frame_id: str, captured_at: float, image: np.ndarray, template: np.ndarray | None,
                      defects) -> None:
        self.review = ReviewState.from_detections(frame_id, captured_at, image, template, defects,
                                                  self._class_names())
        self.review_defects = defects
        self.review_panel.set_active(True)
        self._refresh_access()  # saving needs an engineer
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
        """An engineer action (the labels become training data), audited."""
        if not self.engineer_allowed("save a review as training data"):
            return None
        if self.review is None:
            self.statusBar().showMessage("Nothing under review: press F or pick a defect log row first", 5000)
            return None
        try:
            path = write_voc_review(Path(self.settings.review_dir), self.review)
        except OSError as error:
            self.message_banner.show_message(f"Review not saved to {self.settings.review_dir}: {error}", ERROR_BANNER)
            return None
        labels = self.review.labels()
        self.audit_change("save review", f"frame {self.review.frame_id}", None,
                          f"{len(labels)} labeled defect(s), {self.review.n_false_calls} false call(s), "
                          f"{self.review.n_missed} missed: {path}", outcome="saved")
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
