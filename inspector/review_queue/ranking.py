"""Which boards a review would teach something, and in which order (see the package docstring).

The near-threshold band says how close to its score threshold a detection must be to be worth a person's
look. Classes differ: a class the model calls with well-separated scores needs a narrow band, one it
confuses with clean copper a wide one, so ``ReviewBands`` holds one band per class over a default.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from inspector.config_base import ConfigBase, setting

VERDICTS = ("confirm", "reject")
DEFAULT_NEAR_BAND = 0.15
MAX_NEAR_BAND = 0.5  # wider than this, every board is "near": the queue would stop ranking anything
NEAR_THRESHOLD, UNKNOWN_CHANGE, NG = 0, 1, 2
REASONS = {NEAR_THRESHOLD: "near_threshold", UNKNOWN_CHANGE: "unknown_change", NG: "ng"}


class ReviewError(ValueError):
    """A queue request that cannot be honoured; the message names the item and field."""


@dataclass
class ReviewBands(ConfigBase):
    """The near-threshold band, per class: ``per_class[name]`` where given, ``near_band`` for the others.

    A float is taken wherever bands are (``ReviewBands.of(0.1)``), so single-band callers stay as they were.
    Errors name the field, ``per_class.<class name>`` for one class's band; the class names themselves are
    checked against a model's with ``check_classes`` (a typo would silently fall back to the default)."""

    KIND = "review band setting"
    SOURCE = "review bands"
    ERROR = ReviewError

    near_band: float = setting(DEFAULT_NEAR_BAND, at_least=0.0, at_most=MAX_NEAR_BAND)
    per_class: dict[str, float] = field(default_factory=dict)

    def _prepare(self) -> None:
        if isinstance(self.per_class, Mapping) and not isinstance(self.per_class, dict):
            self.per_class = dict(self.per_class)

    def _check(self) -> None:
        for name, band in self.per_class.items():
            if not name.strip():
                raise self._invalid("per_class", f"expected class names as keys, got {name!r}")
            if not 0.0 <= band <= MAX_NEAR_BAND:
                raise self._invalid(f"per_class.{name}", f"expected 0.0 <= band <= {MAX_NEAR_BAND}, got {band}")

    @classmethod
    def of(cls, bands: "ReviewBands | float | int | None") -> "ReviewBands":
        if bands is None:
            return cls()
        if isinstance(bands, ReviewBands):
            return bands
        return cls(near_band=float(bands))

    def band(self, class_name: str | None) -> float:
        return float(self.per_class.get(class_name, self.near_band)) if class_name is not None else self.near_band

    @property
    def widest(self) -> float:
        """The detector must be asked for detections this far below the threshold to see every band."""
        return max([self.near_band, *self.per_class.values()])

    def check_classes(self, class_names: Iterable[str], where: str = "per_class") -> None:
        """Refuse a band for a class the model does not have, naming it and the model's classes."""
        known = list(class_names)
        unknown = sorted(set(self.per_class) - set(known))
        if unknown:
            raise ReviewError(f"{where}: no class {', '.join(map(repr, unknown))} in the model; expected some of "
                              f"{known}")


def rank(detections: list[dict], unknown_changes: list[dict], score_threshold: float,
         near_band: ReviewBands | float) -> tuple[int, float] | None:
    """``(group, value)`` ordering a board in the queue (lower first), or None when it needs no review.

    A detection is near when its score is within its class's band of the threshold; the board's value
    is the smallest such distance (closest first), whatever the class's band."""
    bands = ReviewBands.of(near_band)
    scores = np.array([float(d["score"]) for d in detections], np.float64)
    margins = np.abs(scores - score_threshold)
    widths = np.array([bands.band(d.get("class_name")) for d in detections], np.float64)
    near = margins <= widths
    if near.any():
        return NEAR_THRESHOLD, float(margins[near].min())
    if unknown_changes:
        return UNKNOWN_CHANGE, -float(sum(float(c.get("area", 0)) for c in unknown_changes))
    ng = scores[scores >= score_threshold]
    if len(ng):
        return NG, float(ng.min())
    return None
