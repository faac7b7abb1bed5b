"""The bar above a whole panel's picture in the verification-queue window (``review_queue_panel.py``): which entry
is being looked at and in which tile, in words; *Previous* / *Next entry*; *Whole panel* (the tiles outlined).
It holds where the reviewer is (``queue_tiles.PanelTiles``), not the decision: the window redraws on ``changed``.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QWidget

from gui.queue_tiles import PanelTiles, Stop, TileWindow


class TileBar(QWidget):
    """Hidden for a single board (``set_tiles(None)``); for a panel it starts at the first entry's tile."""

    changed = Signal()  # another entry, or the whole panel switched on or off

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tiles: PanelTiles | None = None
        self.position = 0  # in ``tiles.stops``
        self.previous_button = QPushButton("◀ Previous entry")
        self.previous_button.setToolTip("The panel's previous entry, in its tile (Alt+Left)")
        self.previous_button.clicked.connect(self.previous)
        self.next_button = QPushButton("Next entry ▶")
        self.next_button.setToolTip("The panel's next entry, in its tile (Alt+Right)")
        self.next_button.clicked.connect(self.next)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.whole_check = QCheckBox("Whole panel")
        self.whole_check.setToolTip("The whole panel with its tiles outlined (the entry's tile bold), instead of "
                                    "the entry's tile")
        self.whole_check.toggled.connect(lambda _on: self.changed.emit())
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.previous_button)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.next_button)
        layout.addWidget(self.whole_check)
        self.hide()

    def set_tiles(self, tiles: PanelTiles | None) -> None:
        """A new item: its tiles (None: a single board); no signal (the window draws the new item itself)."""
        self.tiles, self.position = tiles, 0
        self.whole_check.blockSignals(True)
        self.whole_check.setChecked(False)  # a panel opens at its first entry's tile
        self.whole_check.blockSignals(False)
        self.label.setText("")
        self.setVisible(tiles is not None)

    def stop(self) -> Stop | None:
        """The entry being looked at; None for a single board."""
        if self.tiles is None or not self.tiles.stops:
            return None
        return self.tiles.stops[self.position]

    def window(self) -> TileWindow | None:
        """The tile shown; None for a single board or while the whole panel is shown."""
        stop = self.stop()
        return None if stop is None or self.whole_check.isChecked() else stop.window

    def go_to(self, position: int) -> None:
        """The entry at ``position`` (kept within the entries: no wrapping past the last one)."""
        if self.tiles is None or not self.tiles.stops:
            return
        self.position = min(max(position, 0), len(self.tiles.stops) - 1)
        self.changed.emit()

    def previous(self) -> None:
        self.go_to(self.position - 1)

    def next(self) -> None:
        self.go_to(self.position + 1)

    def describe(self, what: str) -> None:
        """Say the entry (``what``: named by the window) and its tile's place on the panel."""
        stop = self.stop()
        self.previous_button.setEnabled(stop is not None and self.position > 0)
        self.next_button.setEnabled(stop is not None and self.position < len(self.tiles.stops) - 1)
        if stop is None:
            self.label.setText("no entry of this panel names its tile" if self.tiles is not None else "")
            return
        self.label.setText(f"Entry {self.position + 1} of {len(self.tiles.stops)}: {what} · "
                           f"{stop.window.describe()}")
