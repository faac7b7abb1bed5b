"""The verification queue in the window: a window of its own (``ReviewQueuePanel``) over the queue file the line
service fills (``settings.review_queue``: its ``<data_dir>/review.sqlite3``). Decisions are recorded with the
engineer logged in, else the operator of the settings (``operator_name``), else the login name, and each one
goes into the audit trail too. A mixin of ``MainWindow``."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from gui.queue_review import reviewer_name
from gui.review_queue_panel import ReviewQueuePanel


class QueueMixin:
    """``self.queue_panel``: the verification-queue window, made when first opened."""

    queue_panel: ReviewQueuePanel | None = None

    def queue_reviewer(self) -> str:
        engineer = self.access.engineer if self.access.unlocked else None
        return reviewer_name(engineer, self.settings.operator_name)

    def open_review_queue(self) -> ReviewQueuePanel | None:
        """Show the queue window on ``settings.review_queue`` (asked for when none is set yet)."""
        if not self.settings.review_queue and not self.choose_review_queue(open_it=False):
            return None
        panel = self._queue_window()
        if panel.queue is None or str(panel.queue.path) != str(Path(self.settings.review_queue).expanduser()):
            panel.open_path(self.settings.review_queue)  # a file that cannot be opened: said in its banner
        else:
            panel.refresh()
        panel.show()
        panel.raise_()
        panel.activateWindow()
        return panel

    def choose_review_queue(self, open_it: bool = True) -> bool:
        path, _ = QFileDialog.getOpenFileName(self, "Verification queue (the service's <data_dir>/review.sqlite3)",
                                              self.settings.review_queue or str(Path.cwd()),
                                              "Review queue (*.sqlite3 *.sqlite *.db);;All files (*)")
        if not path:
            return False
        self.set_review_queue(path, open_it)
        return True

    def set_review_queue(self, path: str, open_it: bool = True) -> None:
        self.settings.review_queue = str(path)
        self.save_settings()
        if open_it:
            self.open_review_queue()

    def _queue_window(self) -> ReviewQueuePanel:
        if self.queue_panel is None:
            self.queue_panel = ReviewQueuePanel(self.queue_reviewer, self)
            self.queue_panel.setWindowFlag(Qt.WindowType.Window)  # its own window: the picture needs the room
            self.queue_panel.setWindowTitle("PCB inspector — verification queue")
            self.queue_panel.resize(1400, 850)
            self.queue_panel.decided.connect(self._queue_decided)
        return self.queue_panel

    def _queue_decided(self, item_id: int, by: str) -> None:
        engineer = self.access.engineer if self.access.unlocked else None
        self.audit_change("review decision", f"review item {item_id}", None, "decided",
                          outcome=f"in {self.settings.review_queue}", who=by,
                          role="engineer" if engineer == by else "operator")
        self.statusBar().showMessage(f"Review item {item_id} decided by {by}", 8000)

    def close_review_queue(self) -> None:
        if self.queue_panel is not None:
            self.queue_panel.shutdown()  # the queue closed and its picture reads waited for
            self.queue_panel.close()
