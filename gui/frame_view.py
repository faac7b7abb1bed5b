"""The live view: a frame scaled to fit, its defects drawn in class colours, and review by mouse.

Boxes are drawn with QPainter in screen pixels (labels stay readable however the frame is scaled).
In review mode a click on a box marks it as a false call (or clears that), a drag in draw mode adds a
missed defect, and the right mouse button offers the box's options. The view never changes the
review itself: it emits what the operator did and the window applies it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QImage, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from gui.palette import FALSE_CALL_COLOUR, class_colour
from gui.review import MODEL, ReviewState
from inspector.runtime import Detections

MIN_DRAG_PX = 4  # a shorter drag is a click
UNKNOWN_CHANGE_COLOUR = QColor(255, 230, 0)  # yellow: no defect class uses it


@dataclass
class Shown:
    """What the view paints: one frame and its boxes. ``token`` identifies it for the painted() signal."""

    image: np.ndarray  # BGR, or 2-D grey
    defects: Detections | None
    class_names: list[str]
    overlay: np.ndarray | None = None  # RGBA, same size as the image
    review: ReviewState | None = None  # when set, its boxes are drawn instead of ``defects``
    caption: str = ""  # one line drawn at the top left (frame id, REVIEW ...)
    token: object = None
    changes: list | None = None  # unknown changes (inspector.runtime.changes.UnknownChange), drawn dashed


def to_qimage(image: np.ndarray) -> QImage:
    """A QImage sharing the array's memory (the caller keeps the array alive): grey, BGR, or BGRA as
    Qt's native RGB32 (which the raster engine draws without converting)."""
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    if image.ndim == 2:
        return QImage(image.data, width, height, image.strides[0], QImage.Format.Format_Grayscale8)
    if image.shape[2] == 4:
        return QImage(image.data, width, height, image.strides[0], QImage.Format.Format_RGB32)
    return QImage(image.data, width, height, image.strides[0], QImage.Format.Format_BGR888)


def screen_pixels(image: np.ndarray, overlay: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """The frame scaled to ``size`` with the RGBA overlay blended in, as BGRA for ``to_qimage``.

    Scaling and converting in OpenCV once per frame costs ~1 ms; asking QPainter to scale a BGR image
    costs 15-80 ms per paint on a busy 2-core machine. A grey frame is scaled while still one channel and only
    the screen-sized result becomes colour: a grey 16k-pixel panel is never tripled in memory to be shown.
    """
    shrinking = size[0] < image.shape[1]
    scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if scaled.ndim == 2:
        scaled = cv2.cvtColor(scaled, cv2.COLOR_GRAY2BGR)
    if overlay is not None:
        layer = cv2.resize(overlay, size, interpolation=cv2.INTER_NEAREST)
        alpha = layer[..., 3:4].astype(np.float32) / 255.0
        scaled = (scaled * (1.0 - alpha) + layer[..., 2::-1] * alpha).astype(np.uint8)
    return cv2.cvtColor(scaled, cv2.COLOR_BGR2BGRA)


class FrameView(QWidget):
    painted = Signal(object)  # the token of a frame, each time it has been painted with its boxes
    box_clicked = Signal(int)  # review: index of the clicked box
    box_drawn = Signal(object)  # review: (x1, y1, x2, y2) in image pixels
    box_menu = Signal(int, object)  # review: index of the right-clicked box, global position

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 240)
        self.setMouseTracking(True)
        self.shown: Shown | None = None
        self.placeholder = "No frame yet"
        self.draw_mode = False  # review: drags add boxes
        self._image_size: tuple[int, int] | None = None  # (width, height) of the frame shown
        self._screen: QImage | None = None  # the frame (and overlay) at the size it is drawn, made once per frame
        self._screen_pixels: np.ndarray | None = None  # the memory _screen points into
        self._drag_start: QPointF | None = None
        self._drag_now: QPointF | None = None
        self._label_font = QFont(self.font())
        self._label_font.setPointSizeF(max(9.0, self.font().pointSizeF()))
        self._label_font.setBold(True)
        self._caption_font = QFont(self.font())
        self._caption_font.setPointSizeF(self.font().pointSizeF() + 1)

    # ------------------------------------------------------------------ content

    def show_frame(self, shown: Shown | None) -> None:
        self.shown = shown
        self._image_size = None if shown is None else (int(shown.image.shape[1]), int(shown.image.shape[0]))
        self._screen = self._screen_pixels = None
        self.update()

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        self.update()

    # ------------------------------------------------------------------ geometry

    def image_rect(self) -> QRectF:
        """Where the frame is drawn: as large as fits, centred, aspect kept."""
        if self._image_size is None:
            return QRectF()
        width, height = self._image_size
        scale = min(self.width() / width, self.height() / height)
        shown_w, shown_h = width * scale, height * scale
        return QRectF((self.width() - shown_w) / 2, (self.height() - shown_h) / 2, shown_w, shown_h)

    def to_image(self, point: QPointF) -> tuple[float, float]:
        rect = self.image_rect()
        scale = rect.width() / self._image_size[0]
        return (point.x() - rect.x()) / scale, (point.y() - rect.y()) / scale

    def to_widget(self, x: float, y: float) -> QPointF:
        rect = self.image_rect()
        scale = rect.width() / self._image_size[0]
        return QPointF(rect.x() + x * scale, rect.y() + y * scale)

    def widget_box(self, xyxy) -> QRectF:
        top_left = self.to_widget(float(xyxy[0]), float(xyxy[1]))
        bottom_right = self.to_widget(float(xyxy[2]), float(xyxy[3]))
        return QRectF(top_left, bottom_right)

    # ------------------------------------------------------------------ painting

    def paintEvent(self, event) -> None:  # noqa: N802 -- Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(24, 24, 24))
        if self._image_size is None or self.shown is None:
            self._paint_note(painter, self.placeholder)
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.image_rect()
        size = (max(1, round(rect.width())), max(1, round(rect.height())))
        screen = self._screen_image(size)
        if screen is None:  # not made yet (a subclass makes it elsewhere): no picture, so no boxes either
            self._paint_note(painter, self.screen_note())
            return
        if (screen.width(), screen.height()) == size:
            painter.drawImage(QPointF(rect.x(), rect.y()), screen)
        else:  # the copy made for the size before, stretched until the one for this size is made
            painter.drawImage(rect, screen)
        labels: list[tuple[QRectF, str, QColor]] = []
        if self.shown.review is not None:
            self._paint_review(painter, self.shown.review, labels)
        elif self.shown.defects is not None:
            for box, score, class_id, name in zip(self.shown.defects.boxes, self.shown.defects.scores,
                                                  self.shown.defects.class_ids, self.shown.defects.class_names):
                labels.append(self._paint_box(painter, box, f"{name} {score:.2f}", class_colour(class_id)))
        if self.shown.review is None:
            for change in self.shown.changes or []:
                labels.append(self._paint_box(painter, change.box, "unknown change", UNKNOWN_CHANGE_COLOUR,
                                              Qt.PenStyle.DashLine))
        self._paint_labels(painter, labels)
        if self._drag_start is not None and self._drag_now is not None:
            painter.setPen(QPen(QColor(255, 255, 255), 1.5, Qt.PenStyle.DashLine))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(QRectF(self._drag_start, self._drag_now).normalized())
        if self.shown.caption:
            self._paint_caption(painter, self.shown.caption)
        painter.end()
        self.painted.emit(self.shown.token)

    def _screen_image(self, size: tuple[int, int]) -> QImage | None:
        """The shown frame at ``size`` (width, height) as painted: made here, once per frame and size. A subclass
        may make it elsewhere and answer a copy of another size meanwhile (drawn stretched), or None (nothing to
        draw yet: ``screen_note`` is said instead)."""
        if self._screen is None or (self._screen.width(), self._screen.height()) != size:
            self._screen_pixels = screen_pixels(self.shown.image, self.shown.overlay, size)
            self._screen = to_qimage(self._screen_pixels)
        return self._screen

    def screen_note(self) -> str:
        """What the view says while the shown frame has no copy to draw (``_screen_image`` None)."""
        return self.placeholder

    def _paint_note(self, painter: QPainter, text: str) -> None:
        painter.setPen(QColor(200, 200, 200))
        painter.setFont(self._caption_font)
        painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, text)
        painter.end()

    def _paint_review(self, painter: QPainter, review: ReviewState, labels: list) -> None:
        for box in review.boxes:
            if box.false_call:
                labels.append(self._paint_box(painter, box.xyxy, f"{box.class_name}: false call", FALSE_CALL_COLOUR,
                                              Qt.PenStyle.DashLine, crossed=True))
            elif box.origin == MODEL:
                score = "" if box.score is None else f" {box.score:.2f}"
                labels.append(self._paint_box(painter, box.xyxy, f"{box.class_name}{score}",
                                              class_colour(review.class_names.index(box.class_name))))
            else:
                labels.append(self._paint_box(painter, box.xyxy, f"+ {box.class_name} (added)",
                                              class_colour(review.class_names.index(box.class_name)),
                                              Qt.PenStyle.DashLine))

    def _paint_box(self, painter: QPainter, xyxy, label: str, colour: QColor,
                   style: Qt.PenStyle = Qt.PenStyle.SolidLine, crossed: bool = False) -> tuple[QRectF, str, QColor]:
        """Draw the box; its label is drawn later, over all boxes (returned for _paint_labels)."""
        box = self.widget_box(xyxy)
        painter.setPen(QPen(colour, 2.5, style))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(box)
        if crossed:
            painter.drawLine(box.topLeft(), box.bottomRight())
            painter.drawLine(box.topRight(), box.bottomLeft())
        return box, label, colour

    def _paint_labels(self, painter: QPainter, labels: list[tuple[QRectF, str, QColor]]) -> None:
        """Each label beside its box where it hides no other label: above, below, then stacked higher."""
        painter.setFont(self._label_font)
        metrics = QFontMetricsF(self._label_font)
        placed: list[QRectF] = []
        for box, text, colour in labels:
            width, height = metrics.horizontalAdvance(text) + 8, metrics.height() + 2
            left = min(max(box.left(), 0.0), self.width() - width)
            right_aligned = min(max(box.right() - width, 0.0), self.width() - width)
            candidates = [QRectF(x, y, width, height) for y in (box.top() - height, box.bottom())
                          for x in (left, right_aligned)]
            candidates += [QRectF(left, box.top() - height * (2 + k), width, height) for k in range(4)]
            inside = [c for c in candidates if c.top() >= 0 and c.bottom() <= self.height()] or candidates[:1]
            spot = next((c for c in inside if not any(c.intersects(p) for p in placed)), inside[0])
            placed.append(spot)
            painter.fillRect(spot, QBrush(colour))
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(spot, Qt.AlignmentFlag.AlignCenter, text)

    def _paint_caption(self, painter: QPainter, caption: str) -> None:
        painter.setFont(self._caption_font)
        metrics = QFontMetricsF(self._caption_font)
        rect = QRectF(8, 8, metrics.horizontalAdvance(caption) + 14, metrics.height() + 8)
        painter.fillRect(rect, QColor(0, 0, 0, 170))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, caption)

    # ------------------------------------------------------------------ review by mouse

    def _reviewing(self) -> bool:
        return self.shown is not None and self.shown.review is not None and self._image_size is not None

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if not self._reviewing():
            return super().mousePressEvent(event)
        x, y = self.to_image(event.position())
        if event.button() == Qt.MouseButton.RightButton:
            index = self.shown.review.box_at(x, y)
            if index is not None:
                self.box_menu.emit(index, event.globalPosition().toPoint())
            return
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag_start = event.position() if self.draw_mode else None
            self._drag_now = None
            if not self.draw_mode:
                index = self.shown.review.box_at(x, y)
                if index is not None:
                    self.box_clicked.emit(index)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag_start is not None:
            self._drag_now = event.position()
            self.update()
        if self._reviewing():
            self.setCursor(Qt.CursorShape.CrossCursor if self.draw_mode else (
                Qt.CursorShape.PointingHandCursor if self.shown.review.box_at(*self.to_image(event.position()))
                is not None else Qt.CursorShape.ArrowCursor))
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        start, self._drag_start, self._drag_now = self._drag_start, None, None
        if start is None or not self._reviewing() or event.button() != Qt.MouseButton.LeftButton:
            return super().mouseReleaseEvent(event)
        end = event.position()
        self.update()
        if abs(end.x() - start.x()) < MIN_DRAG_PX or abs(end.y() - start.y()) < MIN_DRAG_PX:
            return
        (x1, y1), (x2, y2) = self.to_image(start), self.to_image(end)
        self.box_drawn.emit((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
