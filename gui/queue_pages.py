"""The pending boards the verification-queue window lists, read page by page (plain Python: no Qt here).

A line queues thousands of boards; reading and drawing them all every 5 s would make the window crawl, so it lists
a page (``PAGE``) and reads the next one when the reviewer asks (*Load more*, or the list scrolled to its end).

A page is read after the last board listed (``ReviewQueue.pending(after=...)``), never at an offset: a board
decided at another station, or a new board ranked higher, shifts every row by one, and an offset page would then
skip a board or list one twice. A refresh reads again every pending board ranked up to the last one listed
(``through``), whatever was decided meanwhile: a new board ranked higher appears in its place and no listed board
falls off the end (the one being decided stays listed). When decisions leave fewer boards listed than were asked
for, the list is topped up from the boards after it, so deciding the listed boards one after another never leaves
an empty list while the queue holds more.
"""
from __future__ import annotations

from inspector.review_queue import QueueItem, ReviewQueue

PAGE = 200  # pending boards read at once (the queue can hold thousands)


class PendingList:
    """The listed boards in the queue's order, each once; ``page`` boards are read at a time."""

    def __init__(self, page: int = PAGE) -> None:
        if page < 1:
            raise ValueError(f"pending list: page must be at least 1 board, got {page}")
        self.page = page
        self.items: list[QueueItem] = []
        self.through: int | None = None  # the last board listed (pending or not by now): the list ends at its place
        self.wanted = page  # boards listed at least, while the queue holds them

    def refresh(self, queue: ReviewQueue) -> list[QueueItem]:
        """Read the list again: the pending boards up to ``through``, then the boards after it while fewer than
        ``wanted`` are listed. The boards listed."""
        items = [] if self.through is None else self._read(queue, through=self.through)
        if len(items) < self.wanted:
            self._extend(items, self._read(queue, after=self.through, limit=self.wanted - len(items)))
        self.items = items
        return items

    def more(self, queue: ReviewQueue) -> list[QueueItem]:
        """Read the next page after the last board listed and list it too; the boards added (none at the end)."""
        page = queue.pending(self.page, after=self.through)
        self.items = list(self.items)  # a new list: one handed out before stays as it was
        self._extend(self.items, page)
        self.wanted = max(self.wanted, len(self.items))  # a refresh keeps them listed
        return page

    def unlisted(self, pending: int) -> int:
        """Of ``pending`` boards (``ReviewQueue.counts``), how many are not listed (read later than the list)."""
        return max(0, pending - len(self.items))

    def _read(self, queue: ReviewQueue, after: int | None = None, through: int | None = None,
              limit: int | None = None) -> list[QueueItem]:
        """The pending boards after ``after`` up to ``through`` (either end open when None), at most ``limit``,
        read a page at a time, each page after the last board of the one before."""
        items: list[QueueItem] = []
        while limit is None or len(items) < limit:
            size = self.page if limit is None else min(self.page, limit - len(items))
            page = queue.pending(size, after=items[-1].id if items else after, through=through)
            items += page
            if len(page) < size:
                break
        return items

    def _extend(self, items: list[QueueItem], later: list[QueueItem]) -> None:
        """``later`` (read after ``through``) listed after ``items``: the list now ends at its last board. The end
        only moves on: a listed board decided meanwhile keeps its place as the end of the list."""
        items += later
        if later:
            self.through = later[-1].id
