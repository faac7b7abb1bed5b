"""Which of several evaluated models is best: by official DeepPCB AP, ties broken by COCO mAP@0.5:0.95.

Used for a training run's ``best/`` checkpoint and the pipeline's choice of the student to quantize.
Metrics written before the official metric existed (old ``metrics.json`` rows, checkpoint.json
``metrics``, a resumed run's recorded best) have no ``official_ap``: it is unknown, not 0. When any
candidate's official AP is unknown, the comparison falls back to mAP@0.5:0.95 for all of them, the
criterion those models were chosen by, rather than rank a known number against a missing one.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

SELECTION_METRIC = "official_ap"
FALLBACK_METRIC = "map50_95"


def _number(metrics: Mapping, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def selection_keys(candidates: Sequence[Mapping]) -> list[tuple[float, ...]]:
    """One comparable key per candidate (larger is better), all on the same footing."""
    official_known = all(_number(m, SELECTION_METRIC) is not None for m in candidates)
    keys = []
    for metrics in candidates:
        fallback = _number(metrics, FALLBACK_METRIC)
        fallback = -1.0 if fallback is None else fallback  # no number at all ranks below any measured model
        keys.append((_number(metrics, SELECTION_METRIC), fallback) if official_known else (fallback,))
    return keys


def selection_basis(candidates: Sequence[Mapping]) -> str:
    """What ``selection_keys`` compares these candidates by, in words for logs and reports."""
    if all(_number(m, SELECTION_METRIC) is not None for m in candidates):
        return "official AP (ties: mAP@0.5:0.95)"
    return "mAP@0.5:0.95 (official AP not recorded for every candidate)"


def best_index(candidates: Sequence[Mapping]) -> int:
    """Index of the best candidate; the first of exact ties. Raises ValueError when there is none."""
    if not candidates:
        raise ValueError("no candidate models to choose from")
    keys = selection_keys(candidates)
    return max(range(len(keys)), key=lambda i: (keys[i], -i))


def improves(candidate: Mapping, incumbent: Mapping | None) -> bool:
    """True when ``candidate`` is strictly better than ``incumbent`` (always, when there is none yet)."""
    if incumbent is None:
        return True
    new, old = selection_keys([candidate, incumbent])
    return new > old
