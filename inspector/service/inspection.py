"""The inference worker's side of the service: one queued frame -> detector -> verdict -> evidence ->
record committed to the journal -> hot-folder acknowledgement -> observers and sinks woken.

A mixin of ``Service`` (``inspector/service/service.py``), which holds the state it reads.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import cv2
import numpy as np

from inspector.capture import CorruptFrame, Frame, SourceError, printable_name
from inspector.redaction import redact
from inspector.service.inference import DetectorCrashed, InspectionError
from inspector.service.records import RECORDS, Record, new_record_id

log = logging.getLogger("inspector.service.service")  # one logger name for the whole service, as before
# The latest frame is kept for /frames/latest.jpg: no more than this many pixels on its long side, so a
# large board does not hold a second full-size copy in memory (and the JPEG stays small for a screen).
LATEST_FRAME_MAX_SIDE = 1600


@dataclass
class _Latest:
    image: np.ndarray  # at most LATEST_FRAME_MAX_SIDE on its long side
    detections: Any  # boxes, scores, class_ids, class_names scaled to ``image``; None when not judged
    record: Record



class InspectionMixin:
    """Judging and committing frames (the inference thread)."""

    def _worker_loop(self) -> None:
        while True:
            frame = self.queue.get(timeout=0.5)
            self.metrics.queue_depth.set(len(self.queue))
            if frame is None:
                if self.queue.closed:
                    return
                continue
            try:
                self._inspect(frame)
            except Exception:  # never let one frame kill the worker; the frame stays unacknowledged
                log.exception("inspecting %s failed", frame.frame_id)

    def _inspect(self, frame: Frame) -> None:
        part = self.parts.pop(frame.frame_id, None)  # the PLC's part this frame was captured for (trigger mode)
        file_name, file_version = None, None
        if not self.source.droppable and frame.path is not None:
            file_name, file_version = printable_name(frame.path.name), _file_version(frame.path)
            if self._recorded_before(frame):
                self._ack(frame)
                if part is not None:  # cannot happen (the capture thread skips such files); never leave a part
                    self.commit_unjudged_part(part, "the frame taken for this part was recorded before a restart")
                return
        serial = self._serial_from_code(frame, part)
        if self.recipe_patterns is not None:  # recipe_by_part_id: the part's recipe, before it is judged
            from_plc = part is not None and bool(part.part_id)
            self._choose_recipe(part.part_id if from_plc else serial,
                                "PartId from the PLC" if from_plc else "code read from the board")
        detections, error = None, None
        active = self.recipes.active if self.recipes is not None else None  # one read: no switch splits a frame
        detector = self.detector if active is None else active.detector
        template = frame.template if detector.needs_template else None
        if template is None and active is not None and detector.needs_template:
            template = active.recipe.template
        threshold = self.config.score_threshold if active is None or active.recipe.lowest_threshold() is None \
            else active.recipe.lowest_threshold()
        candidates, decision_threshold = None, None  # with review: every detection a review may want
        try:
            if detector.needs_template and template is None:
                raise ValueError("no golden template for this frame: name the files X_test.jpg + X_temp.jpg, "
                                 "or set template: in the configuration")
            if self.review is None:
                detections = detector.detect(frame.image, template, align=self.config.align, score_threshold=threshold)
            else:
                # Asked for near_band below the threshold, so a barely missed defect can be confirmed; the
                # record keeps only what reaches the threshold, exactly as without review.
                decision_threshold = threshold if threshold is not None else \
                    float(detector.manifest.postprocess.score_threshold)
                changes = {"unknown_changes": True} if self.config.review_unknown_changes and template is not None \
                    else {}
                lowered = self.review.candidate_threshold(decision_threshold)  # the widest band of any class
                candidates = detector.detect(frame.image, template, align=self.config.align, score_threshold=lowered,
                                             **changes)
                detections = _at_least(candidates, decision_threshold)
            if active is not None:
                detections = active.recipe.keep(detections)  # per-class thresholds, ignore regions
        except DetectorCrashed as failure:
            error = f"DetectorCrashed: {failure}"
            self.raise_alarm("detector_crashed", "critical", f"the detector process died on {frame.frame_id}; "
                             "restarted, the frame is recorded as ERROR", frame_id=frame.frame_id)
        except Exception as failure:  # AlignmentError, a frame the model cannot take ...: recorded, not fatal
            error = str(failure) if isinstance(failure, InspectionError) else f"{type(failure).__name__}: {failure}"
            log.warning("%s: not judged: %s", frame.frame_id, error)
        verdict = "ERROR" if detections is None else ("NG" if len(detections) else "OK")
        record = Record(
            record_id=new_record_id(), line=self.line, source=self.source.name, frame_id=frame.frame_id,
            frame_file=file_name, file_version=file_version, captured_at=frame.captured_at, verdict=verdict,
            defects=[] if detections is None else _defects(detections), model_name=detector.manifest.name,
            package_id=detector.manifest.package_id,
            latency_ms=round((time.monotonic() - frame.captured_monotonic) * 1e3, 3),
            inference_ms=None if detections is None else round(detections.timing.total_ms, 3), error=error,
            **self._trace(part, active, serial))
        if verdict == "NG" and self.evidence is not None:
            record.evidence = self._save_evidence(frame, detections, record)
        if candidates is not None:
            # Spooled durably before the record commits, so no crash falls between the two: after a restart a
            # spooled board is queued only if its record made it (ReviewFeed(committed=journal.has_record)).
            try:
                self._offer_for_review(frame, template, candidates, decision_threshold, record, detector, active)
            except Exception:  # the review is extra and never stops what follows
                self.review.failures.inc()
                log.exception("%s: not offered for review", frame.frame_id)
        self._commit(record)
        if part is not None:
            self.plc.result(part, record.verdict, len(record.defects))  # committed first, then shown to the PLC
        self._ack(frame)
        latency = time.monotonic() - frame.captured_monotonic
        self.metrics.latency.observe(latency)
        if detections is not None:
            self.metrics.inference.observe(detections.timing.total_ms / 1e3)
        self._latest = _latest_frame(frame.image, detections, record)
        self._after_commit(record, latency)

    def _recorded_before(self, frame: Frame) -> bool:
        """Whether this version of a hot-folder file was committed before a crash that came ahead of its
        acknowledgement: it is acknowledged, never inspected twice (and in trigger mode it takes no part)."""
        if self.source.droppable or frame.path is None:
            return False
        file_version = _file_version(frame.path)
        if file_version is None or not self.journal.has_file(printable_name(frame.path.name), file_version):
            return False
        log.info("%s was recorded before the restart; acknowledging it", printable_name(frame.path.name))
        return True

    def _offer_for_review(self, frame: Frame, template, candidates, threshold: float, record: Record,
                          detector, active) -> None:
        """Hand the judged board to the verification queue's writer (in memory; it never blocks the line).
        A recipe's ignore regions hold nothing to review; its per-class thresholds are not the band's
        reference (``threshold`` is the lowest one the detector was asked for)."""
        ignore = [] if active is None else list(active.recipe.spec.ignore_regions)
        self.review.offer_found(record.record_id, frame.frame_id, frame.image, template, candidates, threshold,
                                list(detector.manifest.class_names), f"{record.model_name} ({record.package_id})",
                                file=frame.path if record.file_version is not None else None,
                                file_version=record.file_version, ignore=ignore)

    def _commit(self, record: Record) -> None:
        """Append to the journal; retried until it works (a full disk is an alarm, not a lost record)."""
        if record.error is not None:
            record.error = redact(record.error)  # errors quote URLs and settings; records leave the box
        wait = 0.5
        alarmed = False
        while True:
            try:
                self.journal.append(record)
                return
            except Exception as error:
                if not alarmed:
                    alarmed = True
                    log.error("cannot commit record %s: %s", record.record_id, error)
                    self.raise_alarm("storage_error", "critical", f"records database {self.journal.path}: {error}")
                time.sleep(wait)
                wait = min(wait * 2, 10.0)

    def _ack(self, frame: Frame) -> None:
        if self.source.droppable:
            return
        try:
            self.source.ack(frame)
        except (SourceError, ValueError) as error:
            # The record is committed; after a restart the file comes back and is recognised as done.
            log.warning("could not acknowledge %s: %s", frame.frame_id, error)

    def _commit_unjudged_file(self, corrupt: CorruptFrame, part=None) -> None:
        record = Record(record_id=new_record_id(), line=self.line, source=self.source.name,
                        frame_id=corrupt.frame_id, frame_file=corrupt.frame_id, file_version=None,
                        captured_at=time.time(), verdict="ERROR", defects=[], model_name=self.model_name,
                        package_id=self.package_id, latency_ms=0.0, error=f"CorruptFrame: {corrupt}",
                        **self._trace(part))
        self._commit(record)
        if part is not None:
            self.plc.result(part, "ERROR", 0)
        self._after_commit(record, 0.0)


    def _after_commit(self, record: Record, latency: float) -> None:
        self.metrics.frame(record.verdict)
        for delivery in self.deliveries:
            if delivery.stream == RECORDS:
                delivery.notify()
        if record.verdict == "NG":
            self._ng_streak += 1
            if self._ng_streak == self.config.ng_streak_alarm:
                self.raise_alarm("ng_streak", "warning", f"{self._ng_streak} NG boards in a row on line {self.line} "
                                 "(process drift? dirty template?)", streak=self._ng_streak,
                                 last_record_id=record.record_id)
        elif record.verdict == "OK":
            self._ng_streak = 0
        for observer in self.observers:
            observer(record, latency)

    def _save_evidence(self, frame: Frame, detections, record: Record) -> Optional[str]:
        from inspector.runtime.draw import draw_detections

        try:
            name = self.evidence.save(draw_detections(frame.image, detections), record.captured_at, record.record_id)
        except OSError as error:
            # The record is kept (without its image); the loss is counted, alarmed once and shown in /health.
            message = f"{self.evidence.directory}: {error.strerror or error}"
            log.warning("evidence for %s not saved: %s", record.record_id, message)
            self.metrics.evidence_failures.inc()
            if self._evidence_error is None:
                self.raise_alarm("evidence_error", "critical", f"NG evidence images cannot be written ({message}); "
                                 "records are kept without their image", error=message)
            self._evidence_error = message
            return None
        if self._evidence_error is not None:
            self._evidence_error = None
            self.raise_alarm("evidence_restored", "info", f"NG evidence images are written again to "
                             f"{self.evidence.directory}")
        return name



def _latest_frame(image: np.ndarray, detections, record: Record) -> _Latest:
    """What /frames/latest.jpg shows, scaled down to LATEST_FRAME_MAX_SIDE (boxes with it): a bounded copy."""
    scale = min(1.0, LATEST_FRAME_MAX_SIDE / max(image.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if detections is not None:
            detections = SimpleNamespace(boxes=np.asarray(detections.boxes) * scale, scores=detections.scores,
                                         class_ids=detections.class_ids, class_names=detections.class_names)
    return _Latest(image, detections, record)


def _at_least(detections, threshold: float):
    """The detections scoring ``threshold`` or more (same type back): what the record and verdict see."""
    from dataclasses import replace

    keep = np.flatnonzero(np.asarray(detections.scores, np.float64) >= threshold)
    return replace(detections, boxes=detections.boxes[keep], scores=detections.scores[keep],
                   class_ids=detections.class_ids[keep], class_names=[detections.class_names[i] for i in keep],
                   unknown_changes=None)




def _defects(detections) -> list[dict[str, Any]]:
    return [{"class_name": name, "class_id": int(class_id), "score": round(float(score), 4),
             "box": [round(float(v), 1) for v in box]}
            for box, score, class_id, name in zip(detections.boxes, detections.scores, detections.class_ids,
                                                  detections.class_names)]


def _file_version(path: Path) -> Optional[str]:
    """Size and modification time: the hot folder's own identity of one version of a file."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"
