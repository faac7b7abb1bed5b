"""``--auto-ratio``: how much each channel group may lose, from a sensitivity scan.

A sensitivity scan prunes one group at a time at a few ratios and measures the drop of mAP@0.5:0.95 on
a validation subset; then, for the smallest tolerated drop ``t`` (at most ``max_drop``) whose plan
removes ``target_flops_reduction`` of the FLOPs, every group gets the largest scanned ratio whose drop
stays within ``t`` (PaddleSlim's ``sensitive_prune`` rule, without interpolation).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paddle.nn as nn
from tqdm import tqdm

from inspector.compression.pruning.channels import kept_channel_count, pruned_temporarily
from inspector.compression.pruning.groups import channel_groups
from inspector.compression.pruning.size import measure
from inspector.models.detector import YOLODetector


def sensitivity_scan(model: YOLODetector, evaluate: Callable[[nn.Layer], float],
                     ratios: Sequence[float] = (0.25, 0.5, 0.75), criterion: str = "l1",
                     channel_multiple: int = 8, progress: bool = True) -> tuple[float, dict[str, dict]]:
    """Prune one group at a time at each ratio and measure ``evaluate`` (higher is better); ``model``
    is left as it was. Returns the unpruned score and, per group, ``{"channels", "drops": {ratio: score drop}}``;
    a ratio that rounds to no removal has drop 0 without being evaluated.
    """
    baseline = evaluate(model)
    groups = channel_groups(model)
    results: dict[str, dict] = {}
    bar = tqdm(total=len(groups) * len(ratios), desc="sensitivity", unit="trial", disable=not progress)
    for group in groups:
        drops = {}
        for ratio in sorted(ratios):
            if kept_channel_count(group.size, ratio, channel_multiple) < group.size:
                with pruned_temporarily(model, {group.name: ratio}, criterion, channel_multiple):
                    drops[ratio] = baseline - evaluate(model)
            else:
                drops[ratio] = 0.0
            bar.update(1)
        results[group.name] = {"channels": group.size, "drops": drops}
    bar.close()
    return baseline, results


@dataclass
class RatioChoice:
    ratios: dict[str, float]  # per group, only those pruned
    tolerance: float  # the largest per-group drop allowed by this choice
    flops_reduction: float  # measured on the pruned model
    target_reached: bool


def choose_ratios(model: YOLODetector, scan: dict[str, dict], target_flops_reduction: float, max_drop: float,
                  criterion: str = "l1", channel_multiple: int = 8) -> RatioChoice:
    """Per-group ratios removing ``target_flops_reduction`` of the FLOPs at the smallest tolerance.

    For a tolerance ``t`` each group takes its largest scanned ratio whose drop, and the drop of every
    smaller ratio, is at most ``t``. The FLOPs removed grow with ``t``, so a binary search over the
    measured drops (up to ``max_drop``) finds the smallest sufficient ``t``. When even ``max_drop``
    falls short, its plan is returned with ``target_reached`` False.
    """
    def ratios_at(tolerance: float) -> dict[str, float]:
        chosen = {}
        for name, entry in scan.items():
            ratio = 0.0
            for candidate, drop in sorted(entry["drops"].items()):
                if drop > tolerance:
                    break
                ratio = candidate
            if ratio > 0.0:
                chosen[name] = ratio
        return chosen

    base_flops = measure(model).flops
    reductions: dict[float, float] = {}

    def reduction_at(tolerance: float) -> float:
        if tolerance not in reductions:
            with pruned_temporarily(model, ratios_at(tolerance), criterion, channel_multiple):
                reductions[tolerance] = 1.0 - measure(model).flops / base_flops
        return reductions[tolerance]

    drops = {drop for entry in scan.values() for drop in entry["drops"].values()}
    candidates = sorted({drop for drop in drops if drop <= max_drop} | {max_drop})
    if reduction_at(candidates[-1]) < target_flops_reduction:
        chosen = candidates[-1]
    else:
        low, high = 0, len(candidates) - 1
        while low < high:
            middle = (low + high) // 2
            if reduction_at(candidates[middle]) >= target_flops_reduction:
                high = middle
            else:
                low = middle + 1
        chosen = candidates[low]
    reached = reduction_at(chosen) >= target_flops_reduction
    return RatioChoice(ratios_at(chosen), chosen, reduction_at(chosen), reached)
