"""Pruning itself: rank a group's channels by a criterion, cut every group at once, and undo it.

Criteria, per group, on the weight of the group's first producer (PaddleSlim's "master"):
- ``l1`` (Li et al. 2017): keep the filters with the largest L1 norm;
- ``fpgm`` (He et al. 2019): remove the filters nearest the geometric median of the layer's filters
  (smallest summed distance to all others): they are the ones the others can best stand in for.
Kept counts are rounded to multiples of ``channel_multiple`` (8 keeps ARM kernels efficient).

A pruned model has fewer channels than ``build_model`` gives. Its checkpoints record the new parameter
shapes (``pruned_shapes`` in checkpoint.json); ``Checkpoint.build`` applies them before loading.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from inspector.compression.pruning.config import CRITERIA
from inspector.compression.pruning.groups import channel_groups
from inspector.compression.pruning.layer_channels import input_keys, output_keys
from inspector.models import build_model
from inspector.models.detector import YOLODetector
from inspector.training.checkpoint import apply_pruned_shapes, resize_parameters


def filter_scores(weight: np.ndarray, criterion: str) -> np.ndarray:
    """Importance of each output filter of a convolution weight (out, in, k, k); higher is kept first."""
    filters = weight.reshape(weight.shape[0], -1).astype(np.float64)
    if criterion == "l1":
        return np.abs(filters).sum(axis=1)
    if criterion == "fpgm":
        # Summed Euclidean distance to every other filter, via |a - b|^2 = |a|^2 + |b|^2 - 2 a.b (no
        # (out, out, fan_in) temporary). Filters near the geometric median have the smallest sum.
        squared = (filters**2).sum(axis=1)
        distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2.0 * filters @ filters.T, 0.0))
        return distances.sum(axis=1)
    raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")


def kept_channel_count(channels: int, ratio: float, channel_multiple: int = 8) -> int:
    """How many of ``channels`` survive pruning ``ratio`` of them, rounded to ``channel_multiple``.

    Never fewer than one multiple (or all of them, when there are fewer); ratio 0 keeps everything.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio: expected a value in [0, 1), got {ratio}")
    if ratio == 0.0:
        return channels
    kept = int(round(channels * (1.0 - ratio) / channel_multiple)) * channel_multiple
    return min(channels, max(kept, channel_multiple))


def channels_to_keep(weight: np.ndarray, ratio: float, criterion: str, channel_multiple: int = 8) -> np.ndarray:
    """Sorted indices of the output filters of ``weight`` that survive (ties keep the lower index)."""
    kept = kept_channel_count(weight.shape[0], ratio, channel_multiple)
    ranking = np.argsort(-filter_scores(weight, criterion), kind="stable")
    return np.sort(ranking[:kept])


@dataclass
class GroupPruning:
    """What pruning did to one channel group."""

    name: str
    channels: int
    kept: int
    ratio: float  # as requested, before rounding


def prune_model(model: YOLODetector, ratios: dict[str, float], criterion: str = "l1",
                channel_multiple: int = 8) -> list[GroupPruning]:
    """Remove channels from ``model`` in place: ``ratios`` maps group names (``channel_groups``) to the
    fraction of their channels to remove; groups not named keep all theirs.

    Every group is ranked on the original weights, then all of them are cut at once; the model's
    parameters are replaced by smaller ones (``apply_pruned_shapes``) holding the surviving values.
    """
    groups = channel_groups(model)
    unknown = sorted(set(ratios) - {group.name for group in groups})
    if unknown:
        raise ValueError(f"ratios: no channel group {unknown[:3]} in this {model.cfg.arch}; it has "
                         f"{', '.join(group.name for group in groups)}")
    layers = dict(model.named_sublayers())
    state = {name: value.numpy() for name, value in model.state_dict().items()}
    keep_masks: dict[tuple[str, int], np.ndarray] = {}  # (state key, axis) -> which entries survive

    def drop(key: str, axis: int, indices: np.ndarray) -> None:
        mask = keep_masks.setdefault((key, axis), np.ones(state[key].shape[axis], dtype=bool))
        mask[indices] = False

    report = []
    for group in groups:
        ratio = float(ratios.get(group.name, 0.0))
        master = output_keys(group.producers[0], layers[group.producers[0]])[0]
        keep = channels_to_keep(state[master], ratio, criterion, channel_multiple)
        report.append(GroupPruning(group.name, group.size, len(keep), ratio))
        removed = np.setdiff1d(np.arange(group.size), keep)
        if len(removed) == 0:
            continue
        for path in group.producers:
            for key in output_keys(path, layers[path]):
                drop(key, 0, removed)
        for path, offset in group.consumers:
            for key in input_keys(path, layers[path]):
                drop(key, 1, offset + removed)

    pruned = {}
    for key, value in state.items():
        for axis in (0, 1):
            if (key, axis) in keep_masks:
                value = np.compress(keep_masks[(key, axis)], value, axis=axis)
        pruned[key] = value
    apply_pruned_shapes(model, {key: list(value.shape) for key, value in pruned.items()
                                if value.shape != state[key].shape})
    model.set_state_dict(pruned)
    return report


@contextlib.contextmanager
def pruned_temporarily(model: YOLODetector, ratios: dict[str, float], criterion: str = "l1",
                       channel_multiple: int = 8) -> Iterator[list[GroupPruning]]:
    """``prune_model`` for the duration of a ``with`` block, then every parameter back as it was
    (cheaper than pruning a deep copy, which the sensitivity scan would do a hundred times)."""
    original = {name: value.numpy() for name, value in model.state_dict().items()}
    feature_channels = list(model.neck.out_channels)
    try:
        yield prune_model(model, ratios, criterion, channel_multiple)
    finally:
        resize_parameters(model, {name: list(value.shape) for name, value in original.items()})
        model.set_state_dict(original)
        model.neck.out_channels = feature_channels


def pruned_shapes(model: YOLODetector) -> dict[str, list[int]]:
    """Shapes of the parameters that differ from a freshly built model of the same config."""
    reference = {name: list(value.shape) for name, value in build_model(model.cfg).state_dict().items()}
    return {name: list(value.shape) for name, value in model.state_dict().items()
            if list(value.shape) != reference[name]}
