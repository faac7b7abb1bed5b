"""Verification queue: the boards a person should look at, the most instructive first, and their verdicts.

A board is queued when a review can teach the model something:

* group 0: a detection within its class's band of its score threshold (``ReviewBands``: per class, over
  one default band; above: a call the model barely made; below: a defect it barely missed), closest to
  the threshold first;
* group 1: unknown-change flags (``inspector.runtime.changes``): the board differs from its golden
  template where no detection explains it; largest unexplained area first;
* group 2: any other NG board (every call confident), least confident first.

The reviewer confirms or rejects each stored detection (fixing its class or box when needed), adds the
defects the model missed, and the decision is stored with who and when; the latest decision of each board
is its truth. ``export_voc`` (``voc.py``) writes the reviewed boards as Pascal VOC (image, template, boxes) that
``inspector train --data`` reads. Everything is in one SQLite file (WAL, so a review station can read
while the line writes), and every change is one transaction: nothing saved is lost on a crash.

Modules: ``ranking`` (what is queued, in which order; the bands), ``store`` (``ReviewQueue``), ``voc`` (export).
"""
from inspector.review_queue.ranking import (DEFAULT_NEAR_BAND, NEAR_THRESHOLD, NG, REASONS, UNKNOWN_CHANGE, VERDICTS,
                                            ReviewBands, ReviewError, rank)
from inspector.review_queue.store import Decision, QueueItem, ReviewQueue, review_entries

__all__ = ["DEFAULT_NEAR_BAND", "NEAR_THRESHOLD", "NG", "REASONS", "UNKNOWN_CHANGE", "VERDICTS", "Decision",
           "QueueItem", "ReviewBands", "ReviewError", "ReviewQueue", "rank", "review_entries"]
