"""Whole-panel review: the panel's defect map, and each defect at full resolution beside the golden panel.

    python -m gui.panel_view PANEL_test.jpg [--template PANEL_temp.jpg] [--model PKG] [--workers 2]
    python -m gui.panel_view ... --screenshot docs/panel-defect-map.png   # save the window and exit

A line-scan panel (16,000 px a side) shrinks to a few hundred pixels on screen, where a 30 px defect is
a speck; so the map marks every defect with a box of at least ``MIN_MARK_PX`` in its class colour, and
the list beside it names them, best first. Clicking a mark (or a row) shows that defect at full
resolution: the tested panel around it and the same place of the golden panel (through the
registration, so a misregistered panel still lines up), the defect boxed in both.

The inspection runs once, before the window opens, through ``inspector.runtime.panel`` (the same code
as ``inspector predict`` and the service); the window holds the two panels grey, and its overview.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QLabel, QListWidget, QSplitter, QVBoxLayout,
                               QWidget)

from gui.frame_view import to_qimage
from gui.palette import NG_COLOUR, PASS_COLOUR, class_colour
from inspector.runtime.panel import PanelDetections

MIN_MARK_PX = 10  # a defect's mark on the map is at least this many screen pixels a side
ZOOM_SIDE = 256  # panel pixels shown around the chosen defect, at full resolution (1 panel px = 1 screen px)
OVERVIEW_SIDE = 1600  # the map is drawn from a copy of the panel shrunk to at most this many pixels a side


class PanelMap(QWidget):
    """The shrunk panel with a mark per defect; a click on a mark emits its index."""

    defect_clicked = Signal(int)

    def __init__(self, panel: np.ndarray, detections: PanelDetections, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        scale = min(1.0, OVERVIEW_SIDE / max(panel.shape[:2]))
        self._overview = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) \
            if scale < 1 else panel.copy()
        self._image = to_qimage(self._overview)  # shares _overview's memory
        self._scale = scale  # overview pixel = panel pixel * scale
        self.detections = detections
        self.selected: int | None = None
        self.setMinimumSize(400, 400)

    def _fit(self) -> tuple[float, float, float]:
        """(screen pixels per overview pixel, left, top) of the overview drawn centred in the widget."""
        height, width = self._overview.shape[:2]
        zoom = min(self.width() / width, self.height() / height)
        return zoom, (self.width() - width * zoom) / 2, (self.height() - height * zoom) / 2

    def mark_rect(self, index: int) -> QRectF:
        """Where defect ``index``'s mark is drawn, in widget pixels."""
        zoom, left, top = self._fit()
        x1, y1, x2, y2 = (float(v) * self._scale * zoom for v in self.detections.boxes[index])
        cx, cy = left + (x1 + x2) / 2, top + (y1 + y2) / 2
        half_w, half_h = max((x2 - x1) / 2, MIN_MARK_PX / 2), max((y2 - y1) / 2, MIN_MARK_PX / 2)
        return QRectF(cx - half_w, cy - half_h, 2 * half_w, 2 * half_h)

    def defect_at(self, point: QPointF) -> int | None:
        """The defect whose mark contains ``point`` (the nearest centre if marks overlap), or None."""
        hits = [i for i in range(len(self.detections)) if self.mark_rect(i).adjusted(-2, -2, 2, 2).contains(point)]
        if not hits:
            return None
        return min(hits, key=lambda i: (self.mark_rect(i).center() - point).manhattanLength())

    def paintEvent(self, event) -> None:  # noqa: N802 -- Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(40, 40, 40))
        zoom, left, top = self._fit()
        height, width = self._overview.shape[:2]
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(QRectF(left, top, width * zoom, height * zoom), self._image)
        for index, class_id in enumerate(self.detections.class_ids):
            pen = QPen(class_colour(int(class_id)), 3 if index == self.selected else 2)
            painter.setPen(pen)
            painter.drawRect(self.mark_rect(index))
        if self.selected is not None:
            painter.setPen(QPen(QColor(255, 200, 0), 2, Qt.PenStyle.DashLine))
            painter.drawRect(self.mark_rect(self.selected).adjusted(-5, -5, 5, 5))
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        index = self.defect_at(event.position())
        if index is not None:
            self.defect_clicked.emit(index)


class PanelWindow(QWidget):
    """The defect map, the defect list, and the chosen defect beside the golden panel at full resolution."""

    def __init__(self, panel: np.ndarray, template: np.ndarray | None, detections: PanelDetections,
                 title: str = "panel") -> None:
        super().__init__()
        self.panel, self.template, self.detections = panel, template, detections
        self.setWindowTitle(f"inspector panel review: {title}")
        self.map = PanelMap(panel, detections)
        self.list = QListWidget()
        for number, (box, name, score) in enumerate(zip(detections.boxes, detections.class_names, detections.scores),
                                                    start=1):
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            self.list.addItem(f"{number:3d}  {name:9s} {score:.2f}   x {x1}-{x2}  y {y1}-{y2}")
        verdict = "NG" if len(detections) else "OK"
        self.verdict = QLabel(f"{verdict}   {len(detections)} defects   {detections.image_size[0]} x "
                              f"{detections.image_size[1]} px, {detections.tiles} tiles")
        colour = NG_COLOUR if len(detections) else PASS_COLOUR
        self.verdict.setStyleSheet(f"font-size: 18px; font-weight: bold; color: white; padding: 6px; "
                                   f"background: {colour.name()};")
        registration = detections.registration
        self.registration = QLabel("" if registration is None else
                                   f"registered: shift {registration.shift[0]:+.1f}, {registration.shift[1]:+.1f} px, "
                                   f"rotation {registration.rotation_deg:+.3f} deg, scale {registration.scale:.4f}")
        self.tested_zoom, self.template_zoom = QLabel(), QLabel()
        self.caption = QLabel("click a defect on the map or in the list")
        for label in (self.tested_zoom, self.template_zoom):
            label.setFixedSize(ZOOM_SIDE, ZOOM_SIDE)
            label.setStyleSheet("background: #202020;")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        zooms = QHBoxLayout()
        for text, label in (("tested", self.tested_zoom), ("golden", self.template_zoom)):
            column = QVBoxLayout()
            column.addWidget(QLabel(f"{text} (full resolution)"))
            column.addWidget(label)
            zooms.addLayout(column)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.addWidget(self.verdict)
        side_layout.addWidget(self.registration)
        side_layout.addWidget(self.list, stretch=1)
        side_layout.addLayout(zooms)
        side_layout.addWidget(self.caption)
        splitter = QSplitter()
        splitter.addWidget(self.map)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QHBoxLayout(self)
        layout.addWidget(splitter)
        self.map.defect_clicked.connect(self.select)
        self.list.currentRowChanged.connect(lambda row: self.select(row) if row >= 0 else None)
        self.zoomed: tuple[np.ndarray, np.ndarray | None] | None = None  # the crops on show (tests read them)

    def select(self, index: int) -> None:
        """Show defect ``index`` at full resolution beside the same place of the golden panel."""
        if self.map.selected == index:
            return
        self.map.selected = index
        self.map.update()
        if self.list.currentRow() != index:
            self.list.setCurrentRow(index)
        tested = _crop_around(self.panel, self.detections.boxes[index])
        golden = None if self.template is None else _crop_around(self.template, self.detections.template_boxes[index])
        self.zoomed = (tested[0], None if golden is None else golden[0])
        self.tested_zoom.setPixmap(_boxed_pixmap(*tested, int(self.detections.class_ids[index])))
        if golden is not None:
            self.template_zoom.setPixmap(_boxed_pixmap(*golden, int(self.detections.class_ids[index])))
        x1, y1, x2, y2 = (int(round(float(v))) for v in self.detections.boxes[index])
        self.caption.setText(f"#{index + 1} {self.detections.class_names[index]} "
                             f"{float(self.detections.scores[index]):.2f} at x {x1}-{x2}, y {y1}-{y2} (panel pixels)")


def _crop_around(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A ``ZOOM_SIDE`` square of ``image`` centred on ``box`` (moved inside the image), and the box in it."""
    height, width = image.shape[:2]
    cx, cy = (float(box[0]) + float(box[2])) / 2, (float(box[1]) + float(box[3])) / 2
    x0 = int(np.clip(round(cx - ZOOM_SIDE / 2), 0, max(0, width - ZOOM_SIDE)))
    y0 = int(np.clip(round(cy - ZOOM_SIDE / 2), 0, max(0, height - ZOOM_SIDE)))
    crop = np.ascontiguousarray(image[y0:y0 + ZOOM_SIDE, x0:x0 + ZOOM_SIDE])
    return crop, np.asarray(box, np.float64) - [x0, y0, x0, y0]


def _boxed_pixmap(crop: np.ndarray, box: np.ndarray, class_id: int) -> QPixmap:
    pixmap = QPixmap.fromImage(to_qimage(crop).copy())
    painter = QPainter(pixmap)
    painter.setPen(QPen(class_colour(class_id), 2))
    x1, y1, x2, y2 = (float(v) for v in box)
    painter.drawRect(QRectF(x1 - 2, y1 - 2, x2 - x1 + 4, y2 - y1 + 4))
    painter.end()
    return pixmap


def _read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"{path}: not a readable image")
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("panel", type=Path)
    parser.add_argument("--template", type=Path, default=None, help="golden panel (default: X_temp beside X_test)")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--select", type=int, default=1, help="defect number shown zoomed at the start (0: none)")
    parser.add_argument("--screenshot", type=Path, default=None, help="save the window as PNG and exit")
    args = parser.parse_args(argv)

    from inspector.runtime import Detector
    from inspector.runtime.panel import PanelInspector

    template_path = args.template or args.panel.with_name(args.panel.name.replace("_test", "_temp"))
    detector = Detector.load(args.model, threads=1)
    panel = _read_grey(args.panel)
    template = _read_grey(template_path) if detector.needs_template else None
    detections = PanelInspector(detector, workers=args.workers).inspect(panel, template)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = PanelWindow(panel, template, detections, title=args.panel.name)
    window.resize(1500, 950)
    window.show()
    if args.select and len(detections):
        window.select(min(args.select, len(detections)) - 1)
    if args.screenshot is not None:
        app.processEvents()
        window.grab().save(str(args.screenshot))
        print(f"saved {args.screenshot}: {len(detections)} defects on a {panel.shape[1]} x {panel.shape[0]} panel")
        return 0
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
