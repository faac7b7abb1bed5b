"""The picture of a queued board: the frame view with each detection's verdict marked and the board's unknown
changes drawn (``review_queue_panel.py``); for a whole panel, either one tile (boxes cut at its edge, the entry
being looked at ringed) or the whole panel with its tiles outlined (``queue_tiles.py``)."""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QWidget

from gui.frame_view import UNKNOWN_CHANGE_COLOUR, FrameView
from gui.queue_review import CONFIRM, REJECT
from gui.review import ReviewState

LIGHT, DARK = QColor(255, 255, 255), QColor(0, 0, 0)  # outlines are drawn light on dark: seen on copper and bare board


class QueueView(FrameView):
    """The frame view, marking each detection's verdict (✓ confirmed, ? undecided; rejected ones crossed out)
    and drawing the board's unknown changes (dashed yellow) under review too.

    ``tiles``: [x1, y1, x2, y2] outlines on the picture (a whole panel's tiles), ``current_tile`` the one the
    reviewer is at; ``focus``: a box ringed as the entry being looked at. Nothing is drawn outside the picture:
    a box that runs past a tile's edge is cut there, so it is not mistaken for one ending at it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.changes: list[dict] = []
        self.verdicts: list[str | None] = []  # per detection, the first boxes of the review
        self.tiles: list[list[float]] = []
        self.current_tile: int | None = None
        self.focus: list[float] | None = None

    def _paint_review(self, painter, review: ReviewState, labels: list) -> None:
        painter.save()
        painter.setClipRect(self.image_rect())
        self._paint_tiles(painter)
        start = len(labels)
        super()._paint_review(painter, review, labels)
        for offset, verdict in enumerate(self.verdicts[:len(labels) - start]):
            box, text, colour = labels[start + offset]
            if verdict != REJECT:
                labels[start + offset] = (box, f"{'✓' if verdict == CONFIRM else '?'} {text}", colour)
        for change in self.changes:
            labels.append(self._paint_box(painter, change["box"], "unknown change", UNKNOWN_CHANGE_COLOUR,
                                          Qt.PenStyle.DashLine))
        if self.focus is not None:
            ring = self.widget_box(self.focus).adjusted(-6, -6, 6, 6)
            for colour, width, style in ((DARK, 3.0, Qt.PenStyle.SolidLine), (LIGHT, 1.5, Qt.PenStyle.DashLine)):
                painter.setPen(QPen(colour, width, style))
                painter.drawRect(ring)
        painter.restore()

    def _paint_tiles(self, painter) -> None:
        """Each tile's outline, the current one bold and numbered ones where they are large enough to read."""
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for number, tile in enumerate(self.tiles, start=1):
            rect = self.widget_box(tile)
            current = number - 1 == self.current_tile
            for colour, width in ((DARK, 4.0 if current else 2.0), (LIGHT, 2.0 if current else 1.0)):
                painter.setPen(QPen(colour, width, Qt.PenStyle.SolidLine if current else Qt.PenStyle.DashLine))
                painter.drawRect(rect)
            if rect.width() > 40:
                corner = rect.topLeft() + QPointF(4, 4)
                label = QRectF(corner, QSizeF(painter.fontMetrics().horizontalAdvance(str(number)) + 6, 16))
                painter.fillRect(label, DARK)
                painter.setPen(LIGHT)
                painter.drawText(label, Qt.AlignmentFlag.AlignCenter, str(number))
