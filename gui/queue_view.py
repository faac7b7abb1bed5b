"""The picture of a queued board: the frame view with each detection's verdict marked and the board's unknown
changes drawn (``review_queue_panel.py``)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from gui.frame_view import UNKNOWN_CHANGE_COLOUR, FrameView
from gui.queue_review import CONFIRM, REJECT
from gui.review import ReviewState


class QueueView(FrameView):
    """The frame view, marking each detection's verdict (✓ confirmed, ? undecided; rejected ones crossed out)
    and drawing the board's unknown changes (dashed yellow) under review too."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.changes: list[dict] = []
        self.verdicts: list[str | None] = []  # per detection, the first boxes of the review

    def _paint_review(self, painter, review: ReviewState, labels: list) -> None:
        start = len(labels)
        super()._paint_review(painter, review, labels)
        for offset, verdict in enumerate(self.verdicts[:len(labels) - start]):
            box, text, colour = labels[start + offset]
            if verdict != REJECT:
                labels[start + offset] = (box, f"{'✓' if verdict == CONFIRM else '?'} {text}", colour)
        for change in self.changes:
            labels.append(self._paint_box(painter, change["box"], "unknown change", UNKNOWN_CHANGE_COLOUR,
                                          Qt.PenStyle.DashLine))
