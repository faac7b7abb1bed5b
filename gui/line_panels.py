"""Panels for running on a line: the part id beside the verdict, and the recipe selector.

Like ``panels``: each shows state it is given and emits what the operator asks for; the window's
``window_recipes`` mixin does the work.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

MAX_PART_ID = 64  # the service's limit for a PartId


class PartPanel(QWidget):
    """The part id of the board on screen, and the field a barcode scanner (keyboard wedge) or the operator
    types the next board's id into; Enter applies it to the frames that follow."""

    part_entered = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shown = QLabel("Part: —")
        font = self.shown.font()
        font.setPointSizeF(font.pointSizeF() + 4)
        font.setBold(True)
        self.shown.setFont(font)
        self.shown.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.entry = QLineEdit()
        self.entry.setMaxLength(MAX_PART_ID)
        self.entry.setPlaceholderText("scan or type the board's id, Enter")
        self.entry.setClearButtonEnabled(True)
        self.entry.returnPressed.connect(lambda: self.part_entered.emit(self.entry.text().strip()))
        row = QHBoxLayout()
        row.addWidget(QLabel("Next part:"))
        row.addWidget(self.entry, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.shown)
        layout.addLayout(row)

    def show_part(self, part_id: str) -> None:
        self.shown.setText(f"Part: {part_id or '—'}")


class RecipePanel(QWidget):
    """The recipes of a folder, the active one, and why the last switch was refused."""

    folder_requested = Signal()
    refresh_requested = Signal()
    switch_requested = Signal(str)  # recipe name

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = QLabel("No recipe folder chosen")
        self.folder.setWordWrap(True)
        folder_button = QPushButton("Folder…")
        folder_button.clicked.connect(self.folder_requested)
        refresh_button = QPushButton("Reload list")
        refresh_button.clicked.connect(self.refresh_requested)
        self.choice = QComboBox()
        self.switch_button = QPushButton("Switch to this recipe")
        self.switch_button.setToolTip("Model, golden template, thresholds and ignore regions of the recipe; "
                                      "applied between two frames, refused (the active one stays) if it fails "
                                      "validation")
        self.switch_button.clicked.connect(lambda: self.choice.currentText() and
                                           self.switch_requested.emit(self.choice.currentText()))
        self.active = QLabel("No recipe active: model, template and thresholds are set by hand.")
        self.active.setWordWrap(True)
        self.refusal = QLabel()
        self.refusal.setWordWrap(True)
        self.refusal.setStyleSheet("color: #b00020;")
        self.refusal.hide()

        buttons = QHBoxLayout()
        buttons.addWidget(folder_button)
        buttons.addWidget(refresh_button)
        buttons.addStretch(1)
        form = QFormLayout()
        form.addRow("Recipe", self.choice)
        layout = QVBoxLayout(self)
        layout.addWidget(self.folder)
        layout.addLayout(buttons)
        layout.addLayout(form)
        layout.addWidget(self.switch_button)
        layout.addWidget(self.active)
        layout.addWidget(self.refusal)
        layout.addStretch(1)

    def set_recipes(self, folder: str, names: list[str], active: str = "") -> None:
        self.folder.setText(f"Recipes in {folder}" if folder else "No recipe folder chosen")
        self.choice.clear()
        self.choice.addItems(names)
        if active in names:
            self.choice.setCurrentText(active)
        self.switch_button.setEnabled(bool(names))

    def show_active(self, text: str) -> None:
        self.active.setText(text)

    def show_refusal(self, text: str) -> None:
        self.refusal.setText(text)
        self.refusal.setVisible(bool(text))
