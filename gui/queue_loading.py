"""Reading a queued item's pictures, and scaling a large one to the screen, off the window's thread
(``review_queue_panel.py``, ``queue_view.py``).

Decoding a whole panel takes seconds, and shrinking a 16k-pixel one to the screen about a second; done in the
window's thread, either froze the window. ``PictureLoader`` reads on a small thread pool of its own and hands the
answer back through ``loaded``, ``ScreenScaler`` scales on a thread of its own and answers through ``scaled``; Qt
delivers both in the window's thread (a queued connection). Each answer carries its request's number
(``queue_pictures.Selection``) and only the newest is used: a reviewer who clicks on while a panel decodes sees the
item clicked last, and a view resized while a panel is being scaled gets the copy for its last size.

Two readers: a read already under way cannot be interrupted (OpenCV decodes in one call), so a second thread lets
the newly selected item start at once instead of after the outdated one; more would only hold more panels in
memory together. One scaler: OpenCV already spreads one resize over the cores, so a second would only share them
with the outdated one. A request asked for and outdated before a thread took it is never started.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QThreadPool, Signal

from gui.frame_view import screen_pixels
from gui.queue_pictures import ItemPictures, Selection, read_item_pictures
from inspector.review_queue import QueueItem

READERS = 2
SCALERS = 1
Reader = Callable[[QueueItem, Callable[[], bool]], ItemPictures]  # (item, still wanted?) -> its pictures
Scale = Callable[[np.ndarray, "np.ndarray | None", tuple[int, int]], np.ndarray]  # as frame_view.screen_pixels


class LatestWins(QObject):
    """Work asked for one request after another, done on ``threads`` threads of its own; only the newest request's
    answer is handed on (to the subclass's signal, emitted in the worker thread, received in the window's)."""

    def __init__(self, threads: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.selection = Selection()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)

    def _ask(self, what: object, work: Callable[[Callable[[], bool]], object], failed: Callable[[Exception], object],
             answer: Callable[[int, object], None]) -> int:
        """Start ``work(wanted)`` for ``what``; every request before is outdated. ``failed(error)`` is the answer
        when the work raises; ``answer(number, answer)`` hands it on. The request's number."""
        generation = self.selection.select(what)
        self._pool.clear()  # requests still waiting for a thread are outdated now: never started
        self._pool.start(lambda: self._run(generation, work, failed, answer))
        return generation

    def cancel(self) -> None:
        """Wait for no answer any more; work under way finishes and its answer is dropped."""
        self.selection.cancel()
        self._pool.clear()

    def take(self, generation: int) -> bool:
        """In the window's thread, for an answer that came: True when it is the one waited for."""
        return self.selection.take(generation)

    def wait(self, timeout_ms: int = -1) -> bool:
        """Wait until no work is under way (the window closing; tests); False when ``timeout_ms`` ran out."""
        return self._pool.waitForDone(timeout_ms)

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel and wait for the work under way, before the window goes (the application ending)."""
        self.cancel()
        return self.wait(timeout_ms)

    def _run(self, generation: int, work, failed, answer) -> None:
        """One request, on a worker thread. Always answers while still wanted: a window left saying "loading" for
        ever would be worse than any message."""
        def wanted() -> bool:  # asked from this thread, changed by the window's
            return self.selection.wanted(generation)

        if not wanted():
            return  # outdated before it started: nothing done
        try:
            result = work(wanted)
        except Exception as error:  # whatever failed, the window must say it (a bug in the work included)
            result = failed(error)
        if not wanted():
            return  # outdated meanwhile: the window would drop it anyway
        try:
            answer(generation, result)
        except RuntimeError:  # the window was deleted meanwhile without shutdown(): nobody to tell
            pass


class PictureLoader(LatestWins):
    """Reads items' pictures with ``read`` (``read_item_pictures``; tests pass their own) on its threads."""

    loaded = Signal(int, object)  # selection number, ItemPictures: in the window's thread

    def __init__(self, read: Reader = read_item_pictures, parent: QObject | None = None) -> None:
        super().__init__(READERS, parent)
        self.read = read

    @property
    def loading(self) -> int | None:
        """The id of the item being read for the window, or None."""
        return self.selection.item_id

    def load(self, item: QueueItem) -> int:
        """Read ``item``'s pictures; every read asked for before is outdated. Its selection number."""
        return self._ask(item.id, lambda wanted: self.read(item, wanted),
                         lambda error: ItemPictures(item, error=f"its pictures cannot be read: "
                                                                f"{type(error).__name__}: {error}"),
                         self.loaded.emit)


@dataclass
class Scaled:
    """A picture's copy at ``size`` (BGRA, ``frame_view.screen_pixels``), or why there is none (``error``)."""

    size: tuple[int, int]
    pixels: np.ndarray | None = None
    error: str = ""


class ScreenScaler(LatestWins):
    """Makes pictures' screen-sized copies with ``scale`` (``screen_pixels``; tests pass their own) on its thread.
    The picture is handed over as shown (a grey panel stays one channel: only the screen-sized copy is colour)."""

    scaled = Signal(int, object)  # request number, Scaled: in the window's thread

    def __init__(self, scale: Scale = screen_pixels, parent: QObject | None = None) -> None:
        super().__init__(SCALERS, parent)
        self.scale_pixels = scale

    @property
    def making(self) -> tuple[int, int] | None:
        """The size (width, height) of the copy being made for the view, or None."""
        return self.selection.waiting

    def scale(self, image: np.ndarray, overlay: np.ndarray | None, size: tuple[int, int]) -> int:
        """Scale ``image`` (and its RGBA ``overlay``) to ``size``; every request before is outdated. Its number."""
        width, height = image.shape[1], image.shape[0]
        return self._ask(size, lambda _wanted: Scaled(size, self.scale_pixels(image, overlay, size)),
                         lambda error: Scaled(size, error=f"the {width} × {height} px picture cannot be scaled to "
                                                          f"{size[0]} × {size[1]} px: {type(error).__name__}: "
                                                          f"{error}"),
                         self.scaled.emit)
