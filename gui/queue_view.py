"""The picture of a queued board: the frame view with each detection's verdict marked and the board's unknown
changes drawn (``review_queue_panel.py``); for a whole panel, either one tile (boxes cut at its edge, the entry
being looked at ringed) or the whole panel with its tiles outlined (``queue_tiles.py``).

The whole of a 16k-pixel panel shrinks to the screen in about a second, which in the window's thread froze the
window (and did so again at every click, each verdict drawing the picture anew). A picture larger than
``OFF_THREAD_PIXELS`` is therefore scaled on a scaler thread (``queue_loading.ScreenScaler``), once per picture
and view size: meanwhile the view says so and a click on it does nothing (nothing is on screen to click), or,
when only the view's size changed, the copy for the size before is drawn stretched. A tile or a single board
scales in a few milliseconds and is scaled while painted, as in the live view.
"""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPen
from PySide6.QtWidgets import QWidget

from gui.frame_view import UNKNOWN_CHANGE_COLOUR, FrameView, Shown, screen_pixels, to_qimage
from gui.queue_loading import Scale, Scaled, ScreenScaler
from gui.queue_review import CONFIRM, REJECT
from gui.review import ReviewState

LIGHT, DARK = QColor(255, 255, 255), QColor(0, 0, 0)  # outlines are drawn light on dark: seen on copper and bare board
OFF_THREAD_PIXELS = 4_000_000  # larger pictures are scaled on the scaler thread (2k x 2k: ~15 ms; 16k x 16k: ~1 s)


class QueueView(FrameView):
    """The frame view, marking each detection's verdict (✓ confirmed, ? undecided; rejected ones crossed out)
    and drawing the board's unknown changes (dashed yellow) under review too.

    ``tiles``: [x1, y1, x2, y2] outlines on the picture (a whole panel's tiles), ``current_tile`` the one the
    reviewer is at; ``focus``: a box ringed as the entry being looked at. Nothing is drawn outside the picture:
    a box that runs past a tile's edge is cut there, so it is not mistaken for one ending at it.

    ``scale`` makes a large picture's screen copy on the scaler thread (``screen_pixels``; tests pass their own);
    ``off_thread_pixels``: from which picture size on."""

    def __init__(self, parent: QWidget | None = None, scale: Scale = screen_pixels) -> None:
        super().__init__(parent)
        self.changes: list[dict] = []
        self.verdicts: list[str | None] = []  # per detection, the first boxes of the review
        self.tiles: list[list[float]] = []
        self.current_tile: int | None = None
        self.focus: list[float] | None = None
        self.off_thread_pixels = OFF_THREAD_PIXELS
        self.scaler = ScreenScaler(scale, self)
        self.scaler.scaled.connect(self._scaled)
        self._asked: tuple[int, int] | None = None  # the size last asked of the scaler for the shown picture
        self.scale_error = ""  # why the shown picture could not be scaled, said in its place

    # ------------------------------------------------------------------ the picture's screen copy

    @property
    def scaling(self) -> tuple[int, int] | None:
        """The size (width, height) the shown picture is being scaled to on the scaler thread, or None."""
        return self.scaler.making

    def show_frame(self, shown: Shown | None) -> None:
        """Show ``shown``. The same picture again (a verdict or a box changed: only what is drawn on it differs)
        keeps its screen copy, and the scaling under way for it; another picture outdates both."""
        same = shown is not None and self.shown is not None and shown.image is self.shown.image and \
            shown.overlay is None and self.shown.overlay is None
        screen, pixels = self._screen, self._screen_pixels
        super().show_frame(shown)
        if same:
            self._screen, self._screen_pixels = screen, pixels
        else:
            self.scaler.cancel()
            self._asked, self.scale_error = None, ""

    def _screen_image(self, size: tuple[int, int]) -> QImage | None:
        """A large picture's copy at ``size`` is asked of the scaler thread, once; until it comes, the copy for the
        size before (drawn stretched) or None (a new picture: ``screen_note`` is said)."""
        height, width = self.shown.image.shape[:2]
        if width * height <= self.off_thread_pixels:
            return super()._screen_image(size)
        if self._screen is not None and (self._screen.width(), self._screen.height()) == size:
            return self._screen
        if self._asked != size:
            self._asked, self.scale_error = size, ""
            self.scaler.scale(self.shown.image, self.shown.overlay, size)  # the picture as shown: grey stays 2-D
        return self._screen

    def _scaled(self, generation: int, scaled: Scaled) -> None:
        """The scaler's answer, in the window's thread: used when it is for the last request, else dropped."""
        if not self.scaler.take(generation):
            return
        if scaled.pixels is None:
            self.scale_error = scaled.error
        else:
            self._screen_pixels = scaled.pixels
            self._screen = to_qimage(scaled.pixels)
        self.update()

    def screen_note(self) -> str:
        if self.scale_error:
            return f"The picture cannot be shown: {self.scale_error}"
        height, width = self.shown.image.shape[:2]
        return f"Scaling the picture ({width} × {height} px) to the screen…"

    def _reviewing(self) -> bool:
        """Clicks and drags count only on a picture that is on screen (not while it is being scaled)."""
        return super()._reviewing() and self._screen is not None

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
