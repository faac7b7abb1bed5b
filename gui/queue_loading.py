"""Reading a queued item's pictures off the window's thread (``review_queue_panel.py``).

Decoding a whole panel takes seconds; read in the window's thread it froze the window. ``PictureLoader`` reads
on a small thread pool of its own and hands the answer back through ``loaded``, which Qt delivers in the
window's thread (a queued connection). Each answer carries its selection's number (``queue_pictures.Selection``)
and the window uses only the newest: a reviewer who clicks on while a panel decodes sees the item clicked last.

Two readers: a read already under way cannot be interrupted (OpenCV decodes in one call), so a second thread lets
the newly selected item start at once instead of after the outdated one; more would only hold more panels in
memory together. A read asked for and outdated before a thread took it is never started.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, QThreadPool, Signal

from gui.queue_pictures import ItemPictures, Selection, read_item_pictures
from inspector.review_queue import QueueItem

READERS = 2
Reader = Callable[[QueueItem, Callable[[], bool]], ItemPictures]  # (item, still wanted?) -> its pictures


class PictureLoader(QObject):
    """Reads items' pictures with ``read`` (``read_item_pictures``; tests pass their own) on its threads."""

    loaded = Signal(int, object)  # selection number, ItemPictures: in the window's thread

    def __init__(self, read: Reader = read_item_pictures, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.read = read
        self.selection = Selection()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(READERS)

    @property
    def loading(self) -> int | None:
        """The id of the item being read for the window, or None."""
        return self.selection.item_id

    def load(self, item: QueueItem) -> int:
        """Read ``item``'s pictures; every read asked for before is outdated. Its selection number."""
        generation = self.selection.select(item.id)
        self._pool.clear()  # reads still waiting for a thread are outdated now: never started
        self._pool.start(lambda: self._run(generation, item))
        return generation

    def cancel(self) -> None:
        """Wait for no answer any more; a read under way finishes and its answer is dropped."""
        self.selection.cancel()
        self._pool.clear()

    def take(self, generation: int) -> bool:
        """In the window's thread, for an answer that came: True when it is the one waited for."""
        return self.selection.take(generation)

    def wait(self, timeout_ms: int = -1) -> bool:
        """Wait until no read is under way (the window closing; tests); False when ``timeout_ms`` ran out."""
        return self._pool.waitForDone(timeout_ms)

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel and wait for the reads under way, before the window goes (the application ending)."""
        self.cancel()
        return self.wait(timeout_ms)

    def _run(self, generation: int, item: QueueItem) -> None:
        """One read, on a reader thread. Always answers while still wanted: a window left saying "loading" for
        ever would be worse than any message."""
        def wanted() -> bool:  # asked from this thread, changed by the window's
            return self.selection.wanted(generation)

        if not wanted():
            return  # outdated before it started: nothing read
        try:
            pictures = self.read(item, wanted)
        except Exception as error:  # whatever failed, the window must say it (a bug in a reader included)
            pictures = ItemPictures(item, error=f"its pictures cannot be read: {type(error).__name__}: {error}")
        if not wanted():
            return  # outdated meanwhile: the window would drop it anyway
        try:
            self.loaded.emit(generation, pictures)
        except RuntimeError:  # the window was deleted meanwhile without shutdown(): nobody to tell
            pass
