"""A queued board's pictures, read for the verification-queue window (plain Python: no Qt here).

A line-scan panel can be 16k × 16k px: decoding it takes seconds, so the window has it read on a worker thread
(``queue_loading.py``) and waits for the answer with the picture area saying so. The picture is kept as the file
holds it: a grey file stays one channel (256 MiB for 16k × 16k, where reading it as colour made 768 MiB), colour
stays BGR; 16-bit files come as 8-bit and an alpha channel is dropped, which is all the window can show. Only
the view's screen-sized copy is ever converted (``frame_view.screen_pixels``).

Reads are asked for one selection after another, and a reviewer clicks faster than a panel decodes, so an
answer can come for an item that is no longer selected. ``Selection`` numbers the selections; an answer is
used only when it carries the newest number, whatever order the threads finish in: the last selection wins.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from inspector.review_queue import QueueItem

READ_FLAGS = cv2.IMREAD_ANYCOLOR  # grey stays grey, colour BGR; without IMREAD_ANYDEPTH 16 bit comes as 8 bit


class PictureError(Exception):
    """A picture that cannot be read; the message names the file and why, as the banner says it."""


def read_picture(path: str | Path | None, what: str = "image") -> np.ndarray:
    """The picture at ``path``, 8-bit, 2-D when the file is grey and BGR when it is colour (``PictureError``
    naming ``what`` and the file when it is missing or cannot be decoded)."""
    if path is None or not str(path).strip():
        raise PictureError(f"no {what} file is recorded")
    path = Path(path)
    if not path.is_file():
        raise PictureError(f"its {what} {path} cannot be read: no such file (moved or removed)")
    if not os.access(path, os.R_OK):
        raise PictureError(f"its {what} {path} cannot be read: permission denied")
    try:
        picture = cv2.imread(str(path), READ_FLAGS)
    except (cv2.error, MemoryError) as error:  # e.g. past OpenCV's pixel limit, or no memory for it
        raise PictureError(f"its {what} {path} cannot be read: {error}") from error
    if picture is None:
        raise PictureError(f"its {what} {path} cannot be read: not an image OpenCV decodes (damaged, cut short "
                           "or another format)")
    return picture


@dataclass
class ItemPictures:
    """What was read for one queued item: its picture, or why not (``error``), and its golden template when the
    item names one (``template_error`` when it cannot be read: the board is still shown, without it)."""

    item: QueueItem
    image: np.ndarray | None = None
    template: np.ndarray | None = None
    error: str = ""
    template_error: str = ""

    @property
    def ok(self) -> bool:
        return self.image is not None


def read_item_pictures(item: QueueItem, wanted: Callable[[], bool] = lambda: True) -> ItemPictures:
    """The item's picture, then its golden template, each read once. ``wanted()`` false between the two (the
    reviewer selected another item meanwhile) skips the template: nobody will look at it."""
    try:
        image = read_picture(item.image_path, "image")
    except PictureError as error:
        return ItemPictures(item, error=str(error))
    pictures = ItemPictures(item, image)
    if item.template_path and wanted():
        try:
            pictures.template = read_picture(item.template_path, "golden template")
        except PictureError as error:
            pictures.template_error = str(error)
    return pictures


class Selection:
    """The request whose answer the window is waiting for, numbered: each ``select`` outdates every answer asked
    for before it. The item whose pictures are read (``queue_loading.PictureLoader``), or the size a picture is
    scaled to (``queue_loading.ScreenScaler``). ``wanted`` may be asked from a worker thread (a read of one int);
    only the window's thread changes the numbers."""

    def __init__(self) -> None:
        self.generation = 0
        self.waiting: object | None = None  # what is being made; None once shown, failed or cancelled

    @property
    def item_id(self) -> int | None:
        """The item being loaded (a selection of pictures), or None."""
        return self.waiting

    def select(self, what: object) -> int:
        """A new selection (an item id, a size); its number, which its answer must carry."""
        self.generation += 1
        self.waiting = what
        return self.generation

    def cancel(self) -> None:
        """Nothing is waited for any more (the queue closed, the item left the list): every answer is late."""
        self.generation += 1
        self.waiting = None

    def wanted(self, generation: int) -> bool:
        """True while ``generation`` is the newest selection and its answer has not been taken yet."""
        return generation == self.generation and self.waiting is not None

    def take(self, generation: int) -> bool:
        """The answer for ``generation`` has come: True (and nothing is waited for any more) when it is the one
        waited for, False for a late answer to an earlier selection, to be dropped."""
        if not self.wanted(generation):
            return False
        self.waiting = None
        return True
