"""The verification-queue window: the boards the line service queued for review (``inspector.review_queue``),
the most instructive first; one board's picture with its detections and unknown changes; a verdict per
detection (confirm, reject, another class), the defects the model missed (typed as x1, y1, x2, y2 or dragged
on the picture), saved with who and when through ``ReviewQueue.decide``, as the service's HTTP API does.

Clicking a detection on the picture switches it between confirmed and rejected; *Draw missed defect*, then a
drag, adds a box of the class chosen beside it; *Redraw box*, then a drag, corrects the selected detection's box.

A whole panel's item (its entries name the tile that saw them, ``queue_tiles.py``) opens entry by entry, each as
its tile at a readable scale (*Previous* / *Next entry*), or as the whole panel with the tiles outlined (*Whole
panel*). Whatever is drawn in a tile is stored in panel pixels, as on the whole picture; typed boxes are always
panel pixels.

A board's picture is read off the window's thread (``queue_loading.py``: a whole panel decodes for seconds) and
kept as the file holds it, a grey panel in one channel (``queue_pictures.py``). Until it is shown the picture
area says what is being read and nothing can be decided: a decision is never saved for a board the reviewer has
not seen. Selecting another board meanwhile outdates the read; the board selected last is the one shown. The whole
of a large panel is scaled to the screen off the window's thread too (``queue_view.py``).

The list holds a page of the queue at first (``queue_pages.py``); *Load more*, or scrolling the list to its end,
lists the next page after the last board listed, in the queue's order and each board once.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.frame_view import Shown, screen_pixels
from gui.palette import ERROR_BANNER, INFO_BANNER, WARNING_BANNER
from gui.panels import Banner
from gui.queue_loading import PictureLoader, Reader, Scale
from gui.queue_pages import PAGE, PendingList
from gui.queue_pictures import ItemPictures, read_item_pictures
from gui.queue_review import CONFIRM, REJECT, QueueDraft, QueueInputError, open_queue, parse_box
from gui.queue_tile_bar import TileBar
from gui.queue_tiles import DETECTION, cut, draft_scene, panel_tiles
from gui.queue_view import QueueView
from gui.review import ReviewState
from inspector.review_queue import QueueItem, ReviewQueue

REFRESH_MS = 5000  # the line keeps queueing boards: this often, while the window shows, a changed queue is read again
UNDECIDED = "—"
CHOOSE = "Select a board in the list"  # the picture area with no board open
VERDICT_CHOICES = (UNDECIDED, CONFIRM, REJECT)


def box_text(box) -> str:
    return ", ".join(f"{float(v):g}" for v in box)


def nearest_score(item: QueueItem) -> float | None:
    """The score that put the board in the queue: the detection closest to the threshold."""
    scores = [float(d["score"]) for d in item.detections]
    return min(scores, key=lambda s: abs(s - item.score_threshold)) if scores else None


class ReviewQueuePanel(QWidget):
    """Lists, shows and decides the queue at ``open_path``; ``who()`` names the reviewer at save time.
    ``read_pictures`` reads a board's pictures on a reader thread (``read_item_pictures``; tests pass their own),
    ``scale_pictures`` scales a large one to the screen on the scaler thread (``screen_pixels``; the same);
    ``page``: the boards listed, and read, at a time."""

    decided = Signal(int, str)  # item id, who: after a decision is stored
    picture_shown = Signal(int)  # item id: its picture is on screen and it can be decided

    def __init__(self, who: Callable[[], str], parent: QWidget | None = None,
                 read_pictures: Reader = read_item_pictures, scale_pictures: Scale = screen_pixels,
                 page: int = PAGE) -> None:
        super().__init__(parent)
        self.who = who
        self.queue: ReviewQueue | None = None
        self.page = page
        self.pending_list = PendingList(page)
        self._listed_ids: list[int] = []  # the boards the table's rows show, in order
        self._filling_list = False  # the table being filled: its scrolling is not the reviewer's
        self.draft: QueueDraft | None = None
        self._image = None  # the open board's picture as read: 2-D for a grey file
        self._template = None  # the board's golden template, when on disk
        self.loader = PictureLoader(read_pictures, self)
        self.loader.loaded.connect(self._pictures_loaded)
        self._filling = False  # widgets being filled from the draft: their signals are not the reviewer's
        self._sources: list[tuple[str, int]] = []  # per box on the picture: (kind, index) of what it shows

        self.banner = Banner()
        self.path_label = QLabel("No queue open")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.counts_label = QLabel("")
        self.pending_table = QTableWidget(0, 5)
        self.pending_table.setHorizontalHeaderLabels(["item", "reason", "score", "detections", "changes"])
        self.pending_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.pending_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.pending_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.pending_table.verticalHeader().hide()
        self.pending_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.pending_table.currentCellChanged.connect(lambda row, *_: self.select_row(row))
        self.pending_table.verticalScrollBar().valueChanged.connect(self._list_scrolled)
        self.more_button = QPushButton("Load more")
        self.more_button.setToolTip("List the next pending boards, after the last one listed (or scroll the list "
                                    "to its end)")
        self.more_button.clicked.connect(self.load_more)
        self.more_button.setEnabled(False)

        self.view = QueueView(scale=scale_pictures)
        self.view.set_placeholder(CHOOSE)
        self.view.box_clicked.connect(self._toggle_from_view)
        self.view.box_drawn.connect(self._box_dragged)
        self.tile_bar = TileBar()  # a whole panel's item: which entry, in which tile
        self.tile_bar.changed.connect(self._entry_changed)
        QShortcut(QKeySequence("Alt+Left"), self, self.tile_bar.previous)
        QShortcut(QKeySequence("Alt+Right"), self, self.tile_bar.next)

        self.item_label = QLabel("")
        self.item_label.setWordWrap(True)
        self.detections_table = QTableWidget(0, 5)
        self.detections_table.setHorizontalHeaderLabels(["#", "class", "score", "verdict", "box"])
        self.detections_table.verticalHeader().hide()
        self.detections_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.detections_table.currentCellChanged.connect(lambda row, *_: self._detection_selected(row))
        self.confirm_all_button = QPushButton("Confirm all")
        self.confirm_all_button.clicked.connect(lambda: self._set_all(CONFIRM))
        self.reject_all_button = QPushButton("Reject all")
        self.reject_all_button.clicked.connect(lambda: self._set_all(REJECT))
        self.template_check = QCheckBox("Show the golden template")
        self.template_check.toggled.connect(lambda _on: self._redraw())

        self.added_class = QComboBox()
        self.added_box = QLineEdit()
        self.added_box.setPlaceholderText("x1, y1, x2, y2 (image pixels)")
        self.added_box.returnPressed.connect(self.add_typed_box)
        self.add_button = QPushButton("Add missed defect")
        self.add_button.clicked.connect(self.add_typed_box)
        self.draw_button = QPushButton("Draw missed defect")
        self.draw_button.setCheckable(True)
        self.draw_button.toggled.connect(self._set_draw_mode)
        self.redraw_button = QPushButton("Redraw box")
        self.redraw_button.setCheckable(True)
        self.redraw_button.setToolTip("Then drag on the picture: the selected detection's box, corrected")
        self.redraw_button.toggled.connect(self._set_redraw_mode)
        self.added_list = QListWidget()
        self.added_list.setMaximumHeight(120)
        self.remove_added_button = QPushButton("Remove selected")
        self.remove_added_button.clicked.connect(self.remove_selected_added)
        self.note = QLineEdit()
        self.note.setPlaceholderText("note (optional)")
        self.note.setMaxLength(2000)  # as the HTTP API
        self.save_button = QPushButton("Save decision")
        self.save_button.clicked.connect(self.save_decision)
        self.save_button.setToolTip("Store the decision with who and when (Ctrl+Enter)")
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, self.save_decision)
        self._build_layout()
        self._enable_editing(False)
        self._refresh_timer = QTimer(self, interval=REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh_if_changed)
        self._read_token: tuple[int, int] | None = None  # ReviewQueue.change_token() when the list was last read

    def showEvent(self, event) -> None:  # noqa: N802 -- Qt's name
        self._refresh_timer.start()
        super().showEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802
        self._refresh_timer.stop()
        super().hideEvent(event)

    def _build_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.path_label, 1)
        top.addWidget(self.refresh_button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.counts_label)
        left_layout.addWidget(self.pending_table, 1)
        left_layout.addWidget(self.more_button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.item_label)
        right_layout.addWidget(self.detections_table, 1)
        all_row = QHBoxLayout()
        all_row.addWidget(self.confirm_all_button)
        all_row.addWidget(self.reject_all_button)
        right_layout.addLayout(all_row)
        right_layout.addWidget(self.redraw_button)
        right_layout.addWidget(self.template_check)
        added = QGridLayout()
        added.addWidget(QLabel("Missed defect:"), 0, 0)
        added.addWidget(self.added_class, 0, 1)
        added.addWidget(self.added_box, 1, 0, 1, 2)
        added.addWidget(self.add_button, 2, 0)
        added.addWidget(self.draw_button, 2, 1)
        right_layout.addLayout(added)
        right_layout.addWidget(self.added_list)
        right_layout.addWidget(self.remove_added_button)
        right_layout.addWidget(self.note)
        right_layout.addWidget(self.save_button)
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(0, 0, 0, 0)
        centre_layout.addWidget(self.tile_bar)
        centre_layout.addWidget(self.view, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(centre)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([300, 700, 470])
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

    # ------------------------------------------------------------------ the queue

    def open_path(self, path: str) -> bool:
        """Open the queue file; a file that cannot be opened is said in the banner and the list stays empty."""
        self.close_queue()
        try:
            self.queue = open_queue(path)
        except QueueInputError as error:
            self.path_label.setText("No queue open")
            self._say(str(error))
            return False
        self.path_label.setText(f"Queue: {self.queue.path}")
        self.banner.clear_message()
        self.refresh()
        return True

    def close_queue(self) -> None:
        if self.queue is not None:
            self.queue.close()
        self.queue, self.pending_list, self._read_token = None, PendingList(self.page), None
        self.loader.cancel()
        self._show_draft(None)
        self._fill_list()
        self.counts_label.setText("")
        self.more_button.setText("Load more")
        self.more_button.setEnabled(False)

    @property
    def items(self) -> list[QueueItem]:
        """The boards listed, in the queue's order (``queue_pages.PendingList``)."""
        return self.pending_list.items

    def refresh_if_changed(self) -> bool:
        """The timer's refresh: read the list again only if the queue changed since it was last read (a read of
        5,000 listed boards takes ~160 ms of the window's thread). Whether it was read."""
        if self.queue is None:
            return False
        try:
            unchanged = self._read_token is not None and self.queue.change_token() == self._read_token
        except sqlite3.Error:
            unchanged = False  # refresh() says what is wrong with the file
        if unchanged:
            return False
        self.refresh()
        return True

    def refresh(self) -> None:
        """Read the listed boards again (the line keeps adding them, other stations decide them); the board being
        decided stays open."""
        if self.queue is None:
            return
        try:
            self._read_token = self.queue.change_token()  # before reading: a change meanwhile is read next time
            self.pending_list.refresh(self.queue)
            counts = self.queue.counts()
        except (sqlite3.Error, ValueError, KeyError) as error:  # a locked file or a damaged row: said, not a crash
            self._say(f"verification queue {self.queue.path} cannot be read: {error}")
            return
        self._show_counts(counts)
        current = self.current_id()
        self._fill_list()
        if current is not None and self.row_of(current) < 0:
            self._left_the_list(current)

    def load_more(self) -> int:
        """List the next page of pending boards, after the last one listed (*Load more*, or the list scrolled to its
        end); the number of boards added."""
        if self.queue is None:
            return 0
        try:
            added = self.pending_list.more(self.queue)
            counts = self.queue.counts()
        except (sqlite3.Error, ValueError, KeyError) as error:
            self._say(f"verification queue {self.queue.path}: the next pending boards cannot be read: {error}")
            return 0
        self._show_counts(counts)
        self._fill_list()
        return len(added)

    def _show_counts(self, counts: dict) -> None:
        """The counts of the whole queue, and how many pending boards are not listed yet (*Load more*)."""
        pending = sum(counts["pending"].values())
        by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(counts["pending"].items()))
        self.counts_label.setText(f"pending: {pending}" + (f" ({by_reason})" if by_reason else "") +
                                  f" · reviewed: {counts['reviewed']} · expired: {counts['expired']}")
        unlisted = self.pending_list.unlisted(pending)
        self.more_button.setText(f"Load {min(self.page, unlisted)} more ({len(self.items)} listed, {unlisted} not)"
                                 if unlisted else f"All {len(self.items)} pending boards listed")
        self.more_button.setEnabled(unlisted > 0)

    def _fill_list(self) -> None:
        """The table from the listed boards, the open board's row current again. Rows are written only where the
        boards listed changed (a page added: only its rows), since thousands of rows rewritten every 5 s would be
        felt."""
        ids = [item.id for item in self.items]
        current = self.current_id()
        self._filling_list = True
        self.pending_table.blockSignals(True)
        if ids != self._listed_ids:
            kept = len(self._listed_ids) if ids[:len(self._listed_ids)] == self._listed_ids else 0
            self.pending_table.setRowCount(len(ids))
            for row in range(kept, len(ids)):
                item = self.items[row]
                score = nearest_score(item)
                cells = [str(item.id), item.reason, "—" if score is None else f"{score:.3f}",
                         str(len(item.detections)), str(len(item.unknown_changes))]
                for column, text in enumerate(cells):
                    self.pending_table.setItem(row, column, QTableWidgetItem(text))
            self._listed_ids = ids
        self.pending_table.setCurrentCell(self.row_of(current) if current is not None else -1, 0)
        self.pending_table.blockSignals(False)
        self._filling_list = False

    def _list_scrolled(self, value: int) -> None:
        """The list scrolled to its end by the reviewer: the next page is listed, as when walking down a list."""
        if not self._filling_list and value > 0 and value == self.pending_table.verticalScrollBar().maximum() and \
                self.more_button.isEnabled():
            self.load_more()

    def _left_the_list(self, item_id: int) -> None:
        """The board being decided is no longer listed: decided elsewhere (another station, the HTTP API) or
        expired, and then the reviewer is told. (A board still pending stays listed: the list holds every pending
        board up to the last one listed.)"""
        try:
            status = self.queue.get(item_id).status
        except (sqlite3.Error, ValueError) as error:
            status = f"unknown ({error})"
        if status != "pending":
            self.loader.cancel()
            self._show_draft(None)
            self._say(f"item {item_id} is no longer pending (now {status}: decided at another station or its "
                      "pictures expired); its entries here were not saved")

    def row_of(self, item_id: int) -> int:
        return next((row for row, item in enumerate(self.items) if item.id == item_id), -1)

    def current_id(self) -> int | None:
        """The board open in the window: shown, or its picture being read."""
        return self.draft.item.id if self.draft is not None else self.loader.loading

    def select_row(self, row: int) -> None:
        """Open the board at ``row``: its picture is asked of a reader thread and the picture area says so until
        it comes (``_pictures_loaded``); the board before is closed at once, its picture released."""
        if row < 0 or row >= len(self.items):
            return
        item = self.items[row]
        if self.current_id() == item.id:
            return
        self.loader.cancel()
        self._show_draft(None)
        self.banner.clear_message()
        if item.pictures_removed_at is not None:
            self._say(f"item {item.id}: its pictures were removed at {item.pictures_removed_at} (retention)")
            return
        self.loader.load(item)
        self.view.set_placeholder(f"Item {item.id} · loading {Path(item.image_path).name}…")
        self.item_label.setText(f"Item {item.id} · {item.reason} · loading its picture {item.image_path}…")

    def _pictures_loaded(self, generation: int, pictures: ItemPictures) -> None:
        """A reader's answer, in the window's thread: the board is shown, and can be decided, only when it is the
        one selected last; an answer for an earlier selection is dropped (and its picture with it)."""
        if not self.loader.take(generation):
            return
        item = pictures.item
        if not pictures.ok:
            self._show_draft(None, f"Item {item.id}: its picture cannot be read (see above); select another")
            self._say(f"item {item.id}: {pictures.error}")
            return
        self._image, self._template = pictures.image, pictures.template
        self._show_draft(QueueDraft(item, (int(pictures.image.shape[1]), int(pictures.image.shape[0]))))
        if pictures.template_error:
            self.banner.show_message(f"item {item.id}: {pictures.template_error}; the board is shown without it",
                                     WARNING_BANNER)
        self.picture_shown.emit(item.id)

    def shutdown(self) -> None:
        """The application ends: the queue closed and the reads under way waited for, so that no reader thread
        outlives the window it answers."""
        self.close_queue()
        self.loader.shutdown()
        self.view.scaler.shutdown()

    # ------------------------------------------------------------------ the board being decided

    def _show_draft(self, draft: QueueDraft | None, placeholder: str = CHOOSE) -> None:
        """Fill the window from ``draft`` (its picture already in ``_image``), or empty it (``placeholder`` in the
        picture area): decisions are possible only while a draft is shown."""
        self.draft = draft
        self._filling = True
        self.detections_table.setRowCount(0)
        self.added_class.clear()
        self.note.clear()
        self.draw_button.setChecked(False)
        self.redraw_button.setChecked(False)
        self.tile_bar.set_tiles(None if draft is None else panel_tiles(draft.item.detections,
                                                                       draft.item.unknown_changes, draft.image_size))
        if draft is None:
            self._image = self._template = None
            self.view.changes, self.view.tiles, self.view.current_tile, self.view.focus = [], [], None, None
            self.view.show_frame(None)
            self.view.set_placeholder(placeholder)
            self.item_label.setText("")
            self.added_list.clear()
            self._enable_editing(False)
            self._filling = False
            return
        item = draft.item
        self.item_label.setText(f"Item {item.id} · {item.reason} · threshold {item.score_threshold:g} · "
                                f"{item.created_at}" + (f" · {item.source}" if item.source else "") +
                                (f" · model {item.model}" if item.model else ""))
        self.added_class.addItems(item.class_names)
        self.detections_table.setRowCount(len(item.detections))
        for index, detection in enumerate(item.detections):
            self.detections_table.setItem(index, 0, QTableWidgetItem(str(index)))
            classes = QComboBox()
            classes.addItems(item.class_names)
            classes.setCurrentText(draft.classes[index])
            classes.currentTextChanged.connect(lambda name, i=index: self._class_chosen(i, name))
            self.detections_table.setCellWidget(index, 1, classes)
            self.detections_table.setItem(index, 2, QTableWidgetItem(f"{float(detection['score']):.3f}"))
            box = QLineEdit(box_text(draft.boxes[index]))
            box.setToolTip("x1, y1, x2, y2 in image pixels: correct it when the defect is boxed badly")
            box.editingFinished.connect(lambda i=index: self._box_edited(i))
            self.detections_table.setCellWidget(index, 4, box)
            verdict = QComboBox()
            verdict.addItems(VERDICT_CHOICES)
            verdict.currentTextChanged.connect(lambda text, i=index: self._verdict_chosen(i, text))
            self.detections_table.setCellWidget(index, 3, verdict)
        self._enable_editing(True)
        self._filling = False
        if self.tile_bar.stop() is not None:
            self._entry_changed()  # the first entry's tile, its detection selected
        else:
            self._redraw()

    def class_combo(self, index: int) -> QComboBox:
        return self.detections_table.cellWidget(index, 1)

    def verdict_combo(self, index: int) -> QComboBox:
        return self.detections_table.cellWidget(index, 3)

    def box_edit(self, index: int) -> QLineEdit:
        return self.detections_table.cellWidget(index, 4)

    def _template_usable(self) -> bool:
        """The template can be shown: in a tile, any (it is cut at the tile, where the boxes fit it); on the
        whole picture, one of the picture's size only (the boxes are drawn on it unmoved; grey or colour alike)."""
        if self._template is None or self._image is None:
            return False
        return self.tile_bar.window() is not None or self._template.shape[:2] == self._image.shape[:2]

    def _enable_editing(self, on: bool) -> None:
        self.template_check.setEnabled(on and self._template_usable())
        for widget in (self.detections_table, self.confirm_all_button, self.reject_all_button, self.added_class,
                       self.added_box, self.add_button, self.draw_button, self.redraw_button, self.added_list,
                       self.remove_added_button, self.note, self.save_button):
            widget.setEnabled(on)

    # ------------------------------------------------------------------ a whole panel, tile by tile

    def _entry_changed(self) -> None:
        """Another entry of the panel (or the whole panel on or off): its detection becomes the selected one
        (what *Redraw box* corrects), and the picture is drawn again."""
        stop = self.tile_bar.stop()
        if self.draft is None or stop is None:
            return
        if stop.kind == DETECTION and self.detections_table.currentRow() != stop.index:
            self._filling = True
            self.detections_table.setCurrentCell(stop.index, 0)
            self._filling = False
        self._redraw()

    def _detection_selected(self, row: int) -> None:
        """A detection picked in the list: a panel shows it in its tile."""
        if self._filling or self.tile_bar.tiles is None or row < 0:
            return
        position = self.tile_bar.tiles.stop_of(DETECTION, row)
        if position is not None and position != self.tile_bar.position:
            self.tile_bar.go_to(position)

    def _stop_text(self) -> str:
        """The entry being looked at, named for the tile bar."""
        stop = self.tile_bar.stop()
        if stop is None:
            return ""
        if stop.kind != DETECTION:
            return f"unknown change {stop.index}"
        score = float(self.draft.item.detections[stop.index]["score"])
        return f"detection {stop.index} ({self.draft.classes[stop.index]} {score:.3f})"

    def _verdict_chosen(self, index: int, text: str) -> None:
        if self._filling or self.draft is None:
            return
        self.draft.set_verdict(index, None if text == UNDECIDED else text)
        self._redraw()

    def _class_chosen(self, index: int, name: str) -> None:
        if self._filling or self.draft is None or not name:
            return
        try:
            self.draft.set_class(index, name)
        except QueueInputError as error:
            self._say(str(error))
            return
        if self.draft.verdicts[index] is None:  # naming the right class says the defect is real
            self.verdict_combo(index).setCurrentText(CONFIRM)
        self._redraw()

    def _box_edited(self, index: int) -> None:
        """A corrected box for detection ``index``; one outside the image is refused and the last good one kept."""
        if self._filling or self.draft is None:
            return
        edit = self.box_edit(index)
        try:
            self.correct_box(index, parse_box(edit.text()))
        except QueueInputError as error:
            self._say(f"detection {index}: {error}" if not str(error).startswith("detection") else str(error))
            edit.setText(box_text(self.draft.boxes[index]))

    def correct_box(self, index: int, box) -> None:
        """Detection ``index`` at ``box`` (panel pixels; ``QueueInputError`` when it does not fit the picture)."""
        box = self.draft.set_box(index, box)
        self.box_edit(index).setText(box_text(box))
        self.banner.clear_message()
        if self.draft.verdicts[index] is None:  # boxing it again says the defect is real
            self.verdict_combo(index).setCurrentText(CONFIRM)
        self._redraw()

    def _set_all(self, verdict: str) -> None:
        if self.draft is None:
            return
        for index in range(len(self.draft.item.detections)):
            self.verdict_combo(index).setCurrentText(verdict)

    def _toggle_from_view(self, shown: int) -> None:
        """A click on a box: a detection goes between confirmed and rejected (an added box is left alone)."""
        if self.draft is None or not 0 <= shown < len(self._sources) or self._sources[shown][0] != DETECTION:
            return
        index = self._sources[shown][1]
        self.verdict_combo(index).setCurrentText(REJECT if self.draft.verdicts[index] != REJECT else CONFIRM)

    def add_typed_box(self) -> bool:
        """The box typed as x1, y1, x2, y2; refused with the reason when it is not inside the image."""
        if self.draft is None:
            return False
        try:
            self.add_missed(parse_box(self.added_box.text()), self.added_class.currentText())
        except QueueInputError as error:
            self._say(str(error))
            return False
        self.added_box.clear()
        return True

    def _box_dragged(self, xyxy) -> None:
        """A drag on the picture: a missed defect (*Draw missed defect*) or the selected detection's box
        (*Redraw box*), in panel pixels: one dragged in a tile is moved by the tile's offset, clipped to it."""
        if self.draft is None:
            return
        window = self.tile_bar.window()
        try:
            if window is None:
                width, height = self.draft.image_size  # a drag that overshoots the picture ends at its edge
                box = [min(max(float(v), 0.0), limit) for v, limit in zip(xyxy, (width, height, width, height))]
                clipped = False
            else:
                box, clipped = window.to_panel(xyxy)
            if self.redraw_button.isChecked():
                self.redraw_box(box)
            else:
                self.add_missed(box, self.added_class.currentText())
        except QueueInputError as error:
            self._say(str(error))
            return
        if clipped:
            self.banner.show_message("The box was cut at the tile's edge: a defect that runs on past the tile is "
                                     "boxed in the whole-panel view", INFO_BANNER)

    def redraw_box(self, box) -> None:
        """``box`` (panel pixels) becomes the selected detection's corrected box, as if typed in its row."""
        index = self.detections_table.currentRow()
        if index < 0:
            raise QueueInputError("Redraw box: select the detection to correct in the list first")
        self.correct_box(index, box)

    def add_missed(self, box, class_name: str) -> None:
        entry = self.draft.add_missed(box, class_name)
        x1, y1, x2, y2 = entry["box"]
        self.added_list.addItem(f"{entry['class_name']}: {x1:g}, {y1:g}, {x2:g}, {y2:g}")
        self.banner.clear_message()
        self._redraw()

    def remove_selected_added(self) -> None:
        row = self.added_list.currentRow()
        if self.draft is None or row < 0:
            return
        self.draft.remove_added(row)
        self.added_list.takeItem(row)
        self._redraw()

    def _set_draw_mode(self, on: bool) -> None:
        if on:
            self.redraw_button.setChecked(False)  # one meaning for a drag at a time
        self.view.draw_mode = on or self.redraw_button.isChecked()

    def _set_redraw_mode(self, on: bool) -> None:
        if on:
            self.draw_button.setChecked(False)
        self.view.draw_mode = on or self.draw_button.isChecked()

    def _redraw(self) -> None:
        """Show the draft: the whole picture, or (a whole panel's entry) its tile cut from the picture read once."""
        draft = self.draft
        if draft is None or self._image is None:
            return
        window, stop, tiles = self.tile_bar.window(), self.tile_bar.stop(), self.tile_bar.tiles
        usable = self._template_usable()
        self.template_check.setEnabled(self.save_button.isEnabled() and usable)
        template = self.template_check.isChecked() and usable
        if window is None:
            picture = self._template if template else self._image
        elif template:
            picture = cut(self._template, *window.template_region())
        else:
            picture = cut(self._image, window.x, window.y, window.width, window.height)  # a view: no copy
        scene = draft_scene(draft, window, stop)
        self._sources = scene.sources
        review = ReviewState(f"item {draft.item.id}", 0.0, picture, None, draft.class_names, scene.boxes)
        undecided = len(draft.undecided())
        self.view.changes = scene.changes
        self.view.verdicts = scene.verdicts
        self.view.focus = scene.focus
        whole_panel = tiles is not None and window is None
        self.view.tiles = [w.rect for w in tiles.windows] if whole_panel else []
        self.view.current_tile = stop.window.number - 1 if whole_panel and stop is not None else None
        self.tile_bar.describe(self._stop_text())
        place = "" if tiles is None else \
            " · whole panel" if window is None else f" · tile {window.number} of {window.count}"
        self.view.show_frame(Shown(picture, None, draft.class_names, review=review,
                                   caption=f"QUEUE item {draft.item.id} · {draft.item.reason}" + place +
                                   (" · golden template" if template else "") +
                                   (f" · {undecided} to decide" if undecided else ""), token=draft.item.id))

    # ------------------------------------------------------------------ saving

    def save_decision(self) -> bool:
        """Store the decision (who: ``who()``, when: now); the board leaves the pending list."""
        if self.draft is None or self.queue is None:
            return False
        try:
            decision = self.draft.save(self.queue, self.who(), self.note.text())
        except QueueInputError as error:
            self._say(f"Decision not saved: {error}")
            return False
        row = self.row_of(decision.item_id)
        self._show_draft(None)
        self.refresh()
        next_row = min(row, len(self.items) - 1)
        if next_row >= 0:
            self.pending_table.setCurrentCell(next_row, 0)  # the next board, ready to decide
        self.banner.show_message(f"Item {decision.item_id} decided by {decision.decided_by} at "
                                 f"{decision.decided_at}", INFO_BANNER)
        self.decided.emit(decision.item_id, decision.decided_by)
        return True

    def _say(self, message: str) -> None:
        self.banner.show_message(message, ERROR_BANNER)
