"""The window's panels: banner, verdict, live numbers, counters, thresholds, defect log, review, model.

Each panel shows state it is given and emits what the operator asks for; the window (main_window.py)
connects them to the session and the workers.
"""
from __future__ import annotations

import time

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontDatabase, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from gui.frame_view import to_qimage
from gui.palette import (
    ERROR_BANNER,
    IDLE_COLOUR,
    NG_COLOUR,
    NOT_JUDGED_COLOUR,
    PASS_COLOUR,
    class_colour,
)
from gui.session import NG, NOT_JUDGED, PASS, LogEntry, ShiftCounters, Thresholds
from gui.inference_process import ModelSummary


class Banner(QLabel):
    """A full-width coloured strip with one message; hidden when there is nothing to say."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() + 2)
        font.setBold(True)
        self.setFont(font)
        self.hide()

    def show_message(self, text: str, colour: str = ERROR_BANNER) -> None:
        self.setText(text)
        self.setStyleSheet(f"background: {colour}; color: white; padding: 8px 12px;")
        self.show()

    def clear_message(self) -> None:
        self.setText("")
        self.hide()


class VerdictIndicator(QLabel):
    """The big PASS / NG sign for the board on screen."""

    COLOURS = {PASS: PASS_COLOUR, NG: NG_COLOUR, NOT_JUDGED: NOT_JUDGED_COLOUR}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumHeight(110)
        font = QFont(self.font())
        font.setPointSize(44)
        font.setBold(True)
        self.setFont(font)
        self.verdict = ""
        self.set_verdict("")

    def set_verdict(self, verdict: str) -> None:
        self.verdict = verdict
        colour = self.COLOURS.get(verdict, IDLE_COLOUR)
        self.setText(verdict or "—")
        size = 44 if verdict in (PASS, NG, "") else 24
        font = self.font()
        font.setPointSize(size)
        self.setFont(font)
        self.setStyleSheet(f"background: {colour.name()}; color: white; border-radius: 8px;")


def _value_label(text: str = "—") -> QLabel:
    label = QLabel(text)
    font = label.font()
    font.setPointSizeF(font.pointSizeF() + 2)
    font.setBold(True)
    label.setFont(font)
    return label


class LiveNumbers(QFrame):
    """Frame rate, model time, end-to-end latency, dropped frames."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.fps, self.inference, self.latency, self.dropped = (_value_label() for _ in range(4))
        for column, (title, value, tip) in enumerate([
            ("FPS", self.fps, "frames shown per second (last 2 s)"),
            ("model ms", self.inference, "time in the model per frame (pre-processing, network, NMS), median"),
            ("latency ms", self.latency, "frame captured -> boxes on screen, median of the last 200"),
            ("dropped", self.dropped, "frames the model had no time for (a newer frame replaced them)"),
        ]):
            caption = QLabel(title)
            caption.setStyleSheet("color: #666;")
            caption.setToolTip(tip)
            value.setToolTip(tip)
            grid.addWidget(caption, 0, column)
            grid.addWidget(value, 1, column)

    def set_numbers(self, fps: float, inference_ms: float | None, latency_ms: float | None, dropped: int) -> None:
        self.fps.setText(f"{fps:.1f}")
        self.inference.setText("—" if inference_ms is None else f"{inference_ms:.0f}")
        self.latency.setText("—" if latency_ms is None else f"{latency_ms:.0f}")
        self.dropped.setText(str(dropped))


class CountersPanel(QGroupBox):
    """Shift counters: inspected, NG, yield, per defect type; reset (the window asks first)."""

    reset_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Shift", parent)
        layout = QVBoxLayout(self)
        grid = QGridLayout()
        self.inspected, self.ng, self.yield_percent, self.not_judged = (_value_label() for _ in range(4))
        for column, (title, value) in enumerate([("inspected", self.inspected), ("NG", self.ng),
                                                 ("yield", self.yield_percent), ("not judged", self.not_judged)]):
            caption = QLabel(title)
            caption.setStyleSheet("color: #666;")
            grid.addWidget(caption, 0, column)
            grid.addWidget(value, 1, column)
        layout.addLayout(grid)
        self.per_class = QLabel()
        self.per_class.setWordWrap(True)
        self.per_class.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.per_class)
        row = QHBoxLayout()
        self.since = QLabel()
        self.since.setStyleSheet("color: #666;")
        row.addWidget(self.since, 1)
        self.reset_button = QPushButton("Reset counters…")
        self.reset_button.setToolTip("Start a new shift (Ctrl+R); asks first")
        self.reset_button.clicked.connect(self.reset_requested)
        row.addWidget(self.reset_button)
        layout.addLayout(row)
        self.class_names: list[str] = []

    def set_class_names(self, names: list[str]) -> None:
        self.class_names = list(names)

    def show_counters(self, counters: ShiftCounters) -> None:
        self.inspected.setText(str(counters.inspected))
        self.ng.setText(str(counters.ng))
        self.yield_percent.setText("—" if counters.yield_percent is None else f"{counters.yield_percent:.1f} %")
        self.not_judged.setText(str(counters.not_judged))
        names = self.class_names + sorted(set(counters.per_class) - set(self.class_names))
        cells = []
        for index, name in enumerate(names):
            colour = class_colour(index).name()
            cells.append(f"<span style='color:{colour}; font-weight:bold'>■</span> {name}: "
                         f"<b>{counters.per_class.get(name, 0)}</b>")
        self.per_class.setText("defects by type: " + " &nbsp; ".join(cells) if cells else "")
        self.since.setText("since " + time.strftime("%H:%M:%S", time.localtime(counters.started_at)))


class ThresholdPanel(QWidget):
    """Global score threshold and per-class overrides ('global' = use the global one)."""

    changed = Signal(object)  # Thresholds

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layout_ = QFormLayout(self)
        self.global_box = self._spin_box(0.01)
        self.global_box.valueChanged.connect(self._emit)
        row = QHBoxLayout()
        row.addWidget(self.global_box)
        self.default_button = QPushButton("Model default")
        self.default_button.setToolTip("The threshold the package was exported with")
        row.addWidget(self.default_button)
        self.layout_.addRow("Global threshold", row)
        self.per_class: dict[str, QDoubleSpinBox] = {}
        self.model_default = 0.5
        self.default_button.clicked.connect(lambda: self.global_box.setValue(self.model_default))
        self._quiet = False

    @staticmethod
    def _spin_box(minimum: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(minimum, 1.0)
        box.setSingleStep(0.01)
        box.setDecimals(2)
        box.setKeyboardTracking(False)  # apply when typing is done, not per digit
        return box

    def set_model(self, class_names: list[str], thresholds: Thresholds, model_default: float) -> None:
        """Rebuild the per-class rows for a model's classes and show ``thresholds``."""
        self._quiet = True
        for name in list(self.per_class):
            self.layout_.removeRow(self.per_class.pop(name))
        self.model_default = model_default
        self.default_button.setText(f"Model default ({model_default:.2f})")
        for index, name in enumerate(class_names):
            box = self._spin_box(0.0)
            box.setSpecialValueText("global")  # 0.00 shows as 'global': no override
            box.valueChanged.connect(self._emit)
            label = QLabel(f"<span style='color:{class_colour(index).name()}'>■</span> {name}")
            self.layout_.addRow(label, box)
            self.per_class[name] = box
        self.show_thresholds(thresholds)
        self._quiet = False

    def show_thresholds(self, thresholds: Thresholds) -> None:
        quiet, self._quiet = self._quiet, True
        self.global_box.setValue(thresholds.global_threshold)
        for name, box in self.per_class.items():
            box.setValue(thresholds.per_class.get(name, 0.0))
        self._quiet = quiet

    def thresholds(self) -> Thresholds:
        return Thresholds(round(self.global_box.value(), 4),
                          {name: round(box.value(), 4) for name, box in self.per_class.items() if box.value() > 0})

    def _emit(self) -> None:
        if not self._quiet:
            self.changed.emit(self.thresholds())


class DefectLogModel(QAbstractTableModel):
    """The NG boards of the session, newest first."""

    HEADERS = ["", "#", "time", "defects", "max score", "part"]
    THUMB_COLUMN = 0

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.entries: list[LogEntry] = []  # newest first
        self.capacity = 500
        self._pixmaps: dict[int, QPixmap] = {}

    def add(self, entry: LogEntry) -> None:
        self.beginInsertRows(QModelIndex(), 0, 0)
        self.entries.insert(0, entry)
        self.endInsertRows()
        if len(self.entries) > self.capacity:
            last = len(self.entries) - 1
            self.beginRemoveRows(QModelIndex(), last, last)
            dropped = self.entries.pop()
            self._pixmaps.pop(dropped.number, None)
            self.endRemoveRows()

    def entry(self, row: int) -> LogEntry:
        return self.entries[row]

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.entries)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        entry = self.entries[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DecorationRole and column == self.THUMB_COLUMN:
            if entry.number not in self._pixmaps:
                self._pixmaps[entry.number] = QPixmap.fromImage(to_qimage(entry.thumbnail).copy())
            return self._pixmaps[entry.number]
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 1:
                return str(entry.number)
            if column == 2:
                return time.strftime("%H:%M:%S", time.localtime(entry.captured_at))
            if column == 3:
                return entry.defect_summary()
            if column == 4:
                return f"{entry.max_score:.2f}"
            if column == 5:
                return entry.part_id or "—"
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{entry.frame_id}\n{entry.evidence_image or 'evidence not written yet'}"
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (1, 4):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class DefectLogView(QTableView):
    def __init__(self, model: DefectLogModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setModel(model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setIconSize(QSize(64, 64))
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(70)
        self.setWordWrap(True)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        self.setColumnWidth(0, 72)
        for column in (1, 2, 4, 5):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)


class ReviewPanel(QWidget):
    """Review controls: what to do and the buttons to do it."""

    review_current = Signal()
    draw_toggled = Signal(bool)
    save = Signal()
    back_to_live = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        help_text = QLabel(
            "Review a frame: <b>F</b> freezes the frame on screen, or pick a row of the defect log.<br>"
            "• <b>Click</b> a box: false call (click again to undo).<br>"
            "• <b>D</b> then drag: draw a defect the model missed, of the class below.<br>"
            "• <b>Right click</b> a box: change its class or remove it.<br>"
            "• <b>Ctrl+S</b> saves the frame as labeled data (Pascal VOC) for retraining; <b>Esc</b> back to live.")
        help_text.setWordWrap(True)
        layout.addWidget(help_text)
        row = QHBoxLayout()
        self.review_button = QPushButton("Review this frame (F)")
        self.review_button.clicked.connect(self.review_current)
        row.addWidget(self.review_button)
        self.draw_button = QPushButton("Draw missed defect (D)")
        self.draw_button.setCheckable(True)
        self.draw_button.toggled.connect(self.draw_toggled)
        row.addWidget(self.draw_button)
        layout.addLayout(row)
        form = QFormLayout()
        self.class_box = QComboBox()
        form.addRow("Class of drawn boxes", self.class_box)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.save_button = QPushButton("Save review (Ctrl+S)")
        self.save_button.clicked.connect(self.save)
        row.addWidget(self.save_button)
        self.live_button = QPushButton("Back to live (Esc)")
        self.live_button.clicked.connect(self.back_to_live)
        row.addWidget(self.live_button)
        layout.addLayout(row)
        self.status = QLabel("Not reviewing.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.folder = QLabel()
        self.folder.setWordWrap(True)
        self.folder.setStyleSheet("color: #666;")
        self.folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.folder)
        layout.addStretch(1)
        self.set_active(False)

    def set_class_names(self, names: list[str]) -> None:
        current = self.class_box.currentText()
        self.class_box.clear()
        for index, name in enumerate(names):
            self.class_box.addItem(name)
            self.class_box.setItemData(index, class_colour(index), Qt.ItemDataRole.ForegroundRole)
        if current in names:
            self.class_box.setCurrentText(current)

    def set_active(self, active: bool) -> None:
        for widget in (self.draw_button, self.save_button, self.live_button):
            widget.setEnabled(active)
        if not active:
            self.draw_button.setChecked(False)


class ModelPanel(QWidget):
    """Which package runs: name, classes, metrics measured at export, package id and sha256s, engine."""

    load_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.fields: dict[str, QLabel] = {}
        for key in ("name", "state", "path", "package id", "classes", "input", "runs on", "metrics"):
            label = QLabel("—")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[key] = label
            form.addRow(key, label)
        layout.addLayout(form)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(170)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout.addWidget(self.details)
        self.load_button = QPushButton("Load model package… (Ctrl+O)")
        self.load_button.clicked.connect(self.load_requested)
        layout.addWidget(self.load_button)
        layout.addStretch(1)

    def set_state(self, text: str, colour: QColor | None = None) -> None:
        label = self.fields["state"]
        label.setText(text)
        label.setStyleSheet("" if colour is None else f"color: {colour.name()}; font-weight: bold;")

    def show_model(self, summary: ModelSummary) -> None:
        runtime = summary.runtime
        self.fields["name"].setText(f"<b>{summary.name}</b>")
        self.fields["path"].setText(summary.path)
        self.fields["package id"].setText(summary.package_id)
        self.fields["classes"].setText(", ".join(summary.class_names))
        self.fields["input"].setText(("image + golden template" if summary.needs_template else "image alone")
                                     + f"; default threshold {summary.default_threshold:.2f}")
        self.fields["runs on"].setText(f"{runtime['backend']} ({runtime['target']}), {runtime['precision']}, "
                                       f"{runtime['threads']} thread(s); loaded in {summary.load_seconds:.1f} s"
                                       + (f"<br><i>{runtime['note']}</i>" if runtime.get("note") else ""))
        metrics = summary.metrics
        if metrics:
            self.fields["metrics"].setText(
                f"mAP@0.5 {metrics.get('map50', float('nan')):.3f} · mAP@0.5:0.95 "
                f"{metrics.get('map50_95', float('nan')):.3f} · P {metrics.get('precision', float('nan')):.3f} · "
                f"R {metrics.get('recall', float('nan')):.3f} · F(IoU>0.33) {metrics.get('f1_iou033', float('nan')):.3f}")
        else:
            self.fields["metrics"].setText("none recorded in the manifest")
        lines = [f"engine: {runtime['engine']}", f"device: {runtime['device']}"]
        for name, row in (metrics.get("per_class") or {}).items():
            ap = row.get("ap50")
            lines.append(f"{name:10s} AP50 {'—' if ap is None else f'{ap:.3f}'}  n={row.get('n_gt', '?')}")
        lines += ["sha256 of the package's files:"] + [f"  {name:16s} {sha}" for name, sha in summary.files.items()]
        self.details.setPlainText("\n".join(lines))


class SourceBar(QWidget):
    """Source entry and the overlay switch, for the toolbar."""

    apply = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(QLabel("Source"))
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setMinimumWidth(260)
        self.combo.setToolTip("demo, a camera index (0, 1 ...), a video file, an rtsp:// or http:// URL, "
                              "or a folder a scanner writes images into; Enter to switch")
        self.combo.addItems(["demo", "0"])
        self.combo.lineEdit().returnPressed.connect(lambda: self.apply.emit(self.combo.currentText().strip()))
        layout.addWidget(self.combo)

    def set_source(self, spec: str) -> None:
        if self.combo.findText(spec) < 0:
            self.combo.addItem(spec)
        self.combo.setCurrentText(spec)
