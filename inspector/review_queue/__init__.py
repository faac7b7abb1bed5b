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

A whole panel's entries (``review_entries``) also carry their golden-panel box and the tile that saw them.
A board fed by the line names its record (``record_id``, unique: a replay after a crash never queues it
twice). Pictures are kept within age and size limits by ``retention.PictureRetention``; a pending board's
only under a hard cap, past which it leaves the queue as ``expired``.

Modules: ``ranking`` (what is queued, in which order; the bands), ``store`` (``ReviewQueue``), ``voc`` (export),
``retention`` (pictures).
"""
from inspector.review_queue.ranking import (DEFAULT_NEAR_BAND, NEAR_THRESHOLD, NG, REASONS, UNKNOWN_CHANGE, VERDICTS,
                                            ReviewBands, ReviewError, rank)
from inspector.review_queue.retention import PictureRetention, RetentionReport
from inspector.review_queue.store import Decision, QueueItem, ReviewQueue, review_entries

__all__ = ["DEFAULT_NEAR_BAND", "NEAR_THRESHOLD", "NG", "REASONS", "UNKNOWN_CHANGE", "VERDICTS", "Decision",
           "PictureRetention", "QueueItem", "RetentionReport", "ReviewBands", "ReviewError", "ReviewQueue", "rank",
           "review_entries"]
