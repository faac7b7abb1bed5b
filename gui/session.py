"""The inspection session: thresholds, the verdict rule, shift counters and the defect log.

Plain Python and numpy, no Qt: the window shows this state, the tests check it directly.

Verdict: NG when any detection scores at or above its class's threshold, PASS otherwise, NOT JUDGED
when the frame could not be compared (no golden template, alignment refused).

The detector runs at a low *candidate* threshold (``Thresholds.candidate_floor``); what counts as a
defect is decided here, per class, so moving a threshold re-judges the frame on screen at once and the
next frames without reloading anything. Greedy NMS keeps a box only if no higher-scoring kept box
overlaps it, so filtering the candidates at ``t`` gives exactly what detecting at ``t`` would give.
"""
from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from inspector.runtime import Detections

PASS = "PASS"
NG = "NG"
NOT_JUDGED = "NOT JUDGED"  # no verdict: the frame could not be compared (no template, alignment failed)

CANDIDATE_FLOOR = 0.05  # the detector keeps candidates down to here, so lowering a threshold shows more at once
THUMBNAIL_SIDE = 72


class ThresholdError(ValueError):
    """A threshold outside (0, 1], or for a class the model does not have."""


@dataclass
class Thresholds:
    """Score thresholds: one global, and optional per-class overrides (by class name); and a recipe's ignore
    regions (frame pixels x1, y1, x2, y2): a detection whose centre is inside one is never a defect."""

    global_threshold: float
    per_class: dict[str, float] = field(default_factory=dict)
    ignore_regions: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        _check_threshold("global threshold", self.global_threshold)
        for name, value in self.per_class.items():
            _check_threshold(f"threshold of class {name!r}", value)
        self.ignore_regions = tuple(tuple(float(v) for v in region) for region in self.ignore_regions)

    def for_class(self, name: str) -> float:
        return self.per_class.get(name, self.global_threshold)

    def candidate_floor(self) -> float:
        """The score the detector must keep candidates down to."""
        return min([CANDIDATE_FLOOR, self.global_threshold, *self.per_class.values()])

    def restricted_to(self, class_names: list[str]) -> "Thresholds":
        """These thresholds without overrides for classes a model does not have."""
        return Thresholds(self.global_threshold, {k: v for k, v in self.per_class.items() if k in class_names},
                          self.ignore_regions)

    def to_dict(self) -> dict:
        content = {"global": self.global_threshold, "per_class": dict(self.per_class)}
        if self.ignore_regions:
            content["ignore_regions"] = [list(region) for region in self.ignore_regions]
        return content


def _check_threshold(what: str, value: float) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 < value <= 1.0:
        raise ThresholdError(f"{what}: expected a score in (0, 1], got {value!r}")


def defect_mask(detections: Detections, thresholds: Thresholds) -> np.ndarray:
    """Which detections are defects: score at or above their class's threshold."""
    limits = np.array([thresholds.for_class(name) for name in detections.class_names], np.float32)
    if not len(limits):
        return np.zeros(0, bool)
    mask = np.asarray(detections.scores, np.float32) >= limits
    if thresholds.ignore_regions:
        boxes = np.asarray(detections.boxes, np.float32).reshape(-1, 4)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        for x1, y1, x2, y2 in thresholds.ignore_regions:  # the same rule as the service's Recipe.keep
            mask &= ~((cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2))
    return mask


def select(detections: Detections, mask: np.ndarray) -> Detections:
    """The detections where ``mask`` is true (same image size, timing and alignment)."""
    mask = np.asarray(mask, bool)
    return Detections(
        boxes=np.asarray(detections.boxes, np.float32).reshape(-1, 4)[mask],
        scores=np.asarray(detections.scores, np.float32)[mask],
        class_ids=np.asarray(detections.class_ids, np.int64)[mask],
        class_names=[name for name, keep in zip(detections.class_names, mask) if keep],
        image_size=detections.image_size,
        timing=detections.timing,
        alignment=detections.alignment,
    )


def judge(candidates: Detections | None, thresholds: Thresholds) -> tuple[str, Detections | None]:
    """(verdict, the detections that are defects); NOT_JUDGED and None when there are no candidates."""
    if candidates is None:
        return NOT_JUDGED, None
    defects = select(candidates, defect_mask(candidates, thresholds))
    return (NG if len(defects) else PASS), defects


@dataclass
class Inspection:
    """One frame through the model and judged, as the worker hands it to the evidence writer and the window."""

    frame_id: str
    source: str
    captured_at: float  # time.time() at capture
    captured_monotonic: float  # time.monotonic() at capture: end-to-end latency is measured from here
    image: np.ndarray  # BGR frame
    template: np.ndarray | None  # the golden template it was compared with
    candidates: Detections | None  # all detections down to the candidate floor; None when not judged
    thresholds: Thresholds  # what it was judged with
    verdict: str  # PASS, NG or NOT_JUDGED
    defects: Detections | None  # the candidates at or above their class threshold
    package_id: str
    error: str = ""  # why the frame was not judged
    overlay: np.ndarray | None = None  # RGBA layer: the template's edges where they fall on the frame
    sequence: int = 0
    judged_monotonic: float = 0.0  # time.monotonic() when the worker finished with it
    part_id: str = ""  # the board's id/serial: scanned or typed by the operator, or read from its QR code
    recipe: str = ""  # "name version" of the recipe it was judged with; "" without one

    @classmethod
    def judged(cls, *, candidates: Detections | None, thresholds: Thresholds, **fields) -> "Inspection":
        verdict, defects = judge(candidates, thresholds)
        return cls(candidates=candidates, thresholds=thresholds, verdict=verdict, defects=defects, **fields)

    def record(self) -> dict:
        """The line for the inspection record (JSON-ready)."""
        return {"frame_id": self.frame_id, "part_id": self.part_id or None, "recipe": self.recipe or None,
                "source": self.source, "captured_at": round(self.captured_at, 3), "verdict": self.verdict, "error": self.error or None, "package_id": self.package_id,
                "thresholds": self.thresholds.to_dict(),
                "defects": [] if self.defects is None else self.defects.to_dict()["detections"],
                "unknown_changes": [c.to_dict() for c in (self.candidates.unknown_changes or [])]
                if self.candidates is not None else []}


@dataclass
class LogEntry:
    """One NG board in the defect log."""

    number: int  # 1-based, in order of NG boards this session
    frame_id: str
    captured_at: float
    defects: Detections  # the detections that made it NG, at the thresholds of that moment
    thresholds: Thresholds
    thumbnail: np.ndarray  # small BGR copy for the table
    image: np.ndarray | None  # the frame, kept in memory for the most recent entries only
    template: np.ndarray | None
    evidence_image: str = ""  # where the frame was saved (filled in once written)
    part_id: str = ""  # the board's id/serial ("" when none was known)

    @property
    def max_score(self) -> float:
        return float(np.max(self.defects.scores)) if len(self.defects) else 0.0

    def defect_summary(self) -> str:
        """'short x2, open': types by count, then by name."""
        counts = Counter(self.defects.class_names)
        return ", ".join(name if n == 1 else f"{name} x{n}"
                         for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class ShiftCounters:
    inspected: int = 0  # frames judged PASS or NG
    ng: int = 0
    not_judged: int = 0
    per_class: Counter = field(default_factory=Counter)  # defects found, by type
    started_at: float = field(default_factory=time.time)

    @property
    def passed(self) -> int:
        return self.inspected - self.ng

    @property
    def yield_percent(self) -> float | None:
        """Share of judged boards that passed; None before the first one."""
        return None if self.inspected == 0 else 100.0 * self.passed / self.inspected


class InspectionSession:
    """Counters and the defect log of one shift."""

    def __init__(self, log_size: int = 500, frames_in_memory: int = 20) -> None:
        self.counters = ShiftCounters()
        self.log: deque[LogEntry] = deque(maxlen=log_size)  # newest last
        self.frames_in_memory = frames_in_memory
        self._numbered = 0

    def record(self, inspection: Inspection) -> LogEntry | None:
        """Count a judged inspection; an NG board also goes into the log (returned)."""
        if inspection.verdict == NOT_JUDGED:
            self.counters.not_judged += 1
            return None
        self.counters.inspected += 1
        if inspection.verdict == PASS:
            return None
        self.counters.ng += 1
        self.counters.per_class.update(inspection.defects.class_names)
        self._numbered += 1
        entry = LogEntry(self._numbered, inspection.frame_id, inspection.captured_at, inspection.defects,
                         inspection.thresholds, make_thumbnail(inspection.image), inspection.image,
                         inspection.template, part_id=inspection.part_id)
        self.log.append(entry)
        if len(self.log) > self.frames_in_memory:  # older frames are read back from the evidence folder
            stale = self.log[-self.frames_in_memory - 1]
            stale.image = stale.template = None
        return entry

    def entry_for_frame(self, frame_id: str) -> LogEntry | None:
        return next((entry for entry in reversed(self.log) if entry.frame_id == frame_id), None)

    def reset_counters(self) -> None:
        """A new shift: counters from zero (the defect log and the evidence on disk are kept)."""
        self.counters = ShiftCounters()


def make_thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA)


class RateMeter:
    """Events per second over a sliding window (for the displayed frame rate)."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._times if t >= now - self.window_s]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


class RecentValues:
    """The last ``size`` measurements (milliseconds) and their percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(float(value))

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self._values, q)) if self._values else None

    def clear(self) -> None:
        self._values.clear()
