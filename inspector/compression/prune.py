"""Structured channel pruning: remove whole convolution channels from a trained detector, then fine-tune.

``inspector prune --model RUN --data DIR --out runs/NAME --criterion l1|fpgm --ratio R`` (or
``--auto-ratio``) prunes the run's best checkpoint and fine-tunes the result as an ordinary training run
(``inspector.training.trainer.train``), so ``runs/NAME`` holds ``best/``, ``last/``, metrics and plots
like any run, plus ``pruning.json`` (what was removed; parameters, FLOPs and mAP before, after pruning
and after fine-tuning) and, with ``--auto-ratio``, ``sensitivity.json``.

Channel groups. A convolution's output channel can only go together with everything that depends on
it: its BatchNorm entry, the matching filter of any depthwise convolution or SE gate it passes
through, the matching input slice of every convolution that reads it, and, where a residual add or an
FPN sum adds two maps, the same channel of the other map's producers. ``channel_groups`` lists these
sets explicitly for our two detector families:

- MobileNetV3 student: per inverted-residual block the expansion channels (expand conv -> depthwise ->
  SE -> projection) and the SE squeeze channels; the "trunk" channels flowing between blocks (tied
  across residual blocks, read by the neck's laterals); LiteFPN's three channel spaces (its sums tie
  laterals, smoothing outputs and downsamplers together, see ``_lite_fpn_groups``); the head's hidden
  channels per level.
- PP-YOLO teacher: the inner channels of every ResNet block and of the stem, and every channel space of
  the PP-YOLO FPN (including the SPP concat, CoordConv inputs and the route -> lateral path). The
  residual trunks of the ResNet stay whole.
The head's prediction convolutions are never pruned: the output layout stays exactly the same. The GFL
head (``ModelConfig.head == "gfl"``) adds the channels written by each layer of its per-level tower.

A pruned model has fewer channels than ``build_model`` gives. Its checkpoints record the new parameter
shapes (``pruned_shapes`` in checkpoint.json); ``Checkpoint.build`` applies them before loading.

Criteria, per group, on the weight of the group's first producer (PaddleSlim's "master"):
- ``l1`` (Li et al. 2017): keep the filters with the largest L1 norm;
- ``fpgm`` (He et al. 2019): remove the filters nearest the geometric median of the layer's filters
  (smallest summed distance to all others): they are the ones the others can best stand in for.
Kept counts are rounded to multiples of ``channel_multiple`` (8 keeps ARM kernels efficient).

``--auto-ratio``: a sensitivity scan prunes one group at a time at a few ratios and measures the drop
of mAP@0.5:0.95 on a validation subset; then, for the smallest tolerated drop ``t`` (at most
``max_drop``) whose plan removes ``target_flops_reduction`` of the FLOPs, every group gets the largest
scanned ratio whose drop stays within ``t`` (PaddleSlim's ``sensitive_prune`` rule, without interpolation).

Why not PaddleSlim's ``L1NormFilterPruner`` / ``FPGMFilterPruner`` (PaddleSlim 2.6.0, Paddle 3.3.1):
they find the groups by tracing the model into a static program. Constructing one fails with
``AttributeError: module 'paddle.base.dygraph.base' has no attribute '_to_static_mode_guard_'``
(Paddle renamed it ``to_static_mode_guard``); with that name aliased the trace is a PIR program and
fails with ``AttributeError: 'paddle.base.libpaddle.pir.Operation' object has no attribute
'input_arg_names'``, unless ``FLAGS_enable_pir_api=0`` is set before paddle is imported (setting it
later has no effect). With both, the student is pruned correctly (the same 31 groups as here), but
on the PP-YOLO teacher the groups read by a CoordConv or the SPP are skipped ("Unsupported operator
named slice" / "concat"; it finds 25 groups in ppyolo-r18, this table 30) and so is the deformable stage of
ppyolo-r50-dcn ("No worker for operator: deformable_conv"); ``paddleslim.analysis.flops`` needs the
same trace; and every pruned weight leaves a ``*_backup`` copy in the model's state dict. The table
here needs neither the private alias nor a process-wide flag; the tests check it against masking (a
pruned model computes exactly what the unpruned one computes with those channels zeroed).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn
from paddle.vision.ops import DeformConv2D
from tqdm import tqdm

from inspector.data import DataError, Dataset, load_dataset
from inspector.data.loader import BatchLoader
from inspector.data.split import split_dataset
from inspector.models import ModelConfig, build_model, count_parameters
from inspector.models.backbones import Bottleneck, InvertedResidual, MobileNetV3, ResNetVd
from inspector.models.detector import YOLODetector
from inspector.models.gfl_head import GFLHead
from inspector.models.head import YOLOHead
from inspector.models.layers import (
    SPP,
    ConvBNAct,
    CoordConv,
    DeformableConvBNAct,
    DepthwiseSeparableConv,
    SqueezeExcite,
)
from inspector.models.necks import PPYOLOFPN, LiteFPN
from inspector.training.checkpoint import (
    INFO_FILE,
    PRUNED_SHAPES,
    Checkpoint,
    apply_pruned_shapes,
    load_checkpoint,
    resize_parameters,
)
from inspector.training.config import TrainConfig
from inspector.training.trainer import Objective, train
from inspector.training.validate import validate

log = logging.getLogger(__name__)

CRITERIA = ("l1", "fpgm")
PRUNE_CONFIG_FILE = "prune_config.json"
REPORT_FILE = "pruning.json"
SENSITIVITY_FILE = "sensitivity.json"


# ----------------------------------------------------------------------------------------------
# Channel groups
# ----------------------------------------------------------------------------------------------


@dataclass
class ChannelGroup:
    """The channels of one feature space: they can only be removed together.

    ``producers`` are layers whose output channels are these channels: the convolutions writing them
    (several where residual adds or FPN sums add their outputs), the depthwise convolutions carrying
    them through channel by channel, the SE gates scaling them. ``consumers`` read them as input
    channels, each at an offset into its input (a concat puts several maps side by side). The first
    producer's filters rank the channels.
    """

    name: str
    size: int
    producers: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)


def channel_groups(model: YOLODetector) -> list[ChannelGroup]:
    """Every prunable channel group of ``model`` (built by ``build_model``, pruned or not)."""
    if isinstance(model.backbone, MobileNetV3) and isinstance(model.neck, LiteFPN):
        lateral_inputs = [[(f"neck.laterals.{level}", 0)] for level in range(3)]
        groups = _mobilenet_groups(model.backbone, lateral_inputs) + _lite_fpn_groups(model.neck, model.head)
    elif isinstance(model.backbone, ResNetVd) and isinstance(model.neck, PPYOLOFPN):
        groups = _resnet_groups(model.backbone) + _ppyolo_fpn_groups(model.neck, model.head)
    else:
        raise ValueError(f"no channel groups known for a {type(model.backbone).__name__} backbone with a "
                         f"{type(model.neck).__name__} neck")
    groups += _head_hidden_groups(model.head)
    _check_groups(model, groups)
    return groups


def _mobilenet_groups(backbone: MobileNetV3, neck_inputs: list[list[tuple[str, int]]]) -> list[ChannelGroup]:
    """Expansion and SE channels of each block, and the trunks between blocks.

    A trunk starts at the stem or at a block without a residual add, and every following residual
    block adds its projection to it, so those projections write the same channels. A block without an
    expansion conv (the first one) runs its depthwise conv and SE directly on the trunk.
    """
    trunk = ChannelGroup("backbone.stem.out", _out_channels(backbone.stem), ["backbone.stem"])
    groups = [trunk]
    for index, block in enumerate(backbone.blocks):
        path = f"backbone.blocks.{index}"
        expand, depthwise, squeeze_excite, project = _inverted_residual_parts(block)
        if expand is None:
            inner = trunk
        else:
            trunk.consumers.append((f"{path}.body.{expand}", 0))
            inner = ChannelGroup(f"{path}.expanded", _out_channels(block.body[expand]), [f"{path}.body.{expand}"])
            groups.append(inner)
        inner.producers.append(f"{path}.body.{depthwise}")
        if squeeze_excite is not None:
            se = f"{path}.body.{squeeze_excite}"
            inner.producers.append(f"{se}.expand")  # its gate scales channel i of the map
            inner.consumers.append((f"{se}.reduce", 0))
            groups.append(ChannelGroup(f"{path}.se", _out_channels(block.body[squeeze_excite].reduce),
                                       [f"{se}.reduce"], [(f"{se}.expand", 0)]))
        inner.consumers.append((f"{path}.body.{project}", 0))
        if block.use_residual:
            trunk.producers.append(f"{path}.body.{project}")
        else:
            trunk = ChannelGroup(f"{path}.out", _out_channels(block.body[project]), [f"{path}.body.{project}"])
            groups.append(trunk)
        if index in backbone.output_indices:
            trunk.consumers.extend(neck_inputs[backbone.output_indices.index(index)])
    return groups


def _inverted_residual_parts(block: InvertedResidual) -> tuple[int | None, int, int | None, int]:
    """Indices in ``block.body`` of (expand conv or None, depthwise conv, SE or None, projection)."""
    depthwise = next(i for i, layer in enumerate(block.body) if _is_depthwise(layer))
    squeeze_excite = next((i for i, layer in enumerate(block.body) if isinstance(layer, SqueezeExcite)), None)
    return (0 if depthwise == 1 else None), depthwise, squeeze_excite, len(block.body) - 1


def _lite_fpn_groups(neck: LiteFPN, head: YOLOHead | GFLHead) -> list[ChannelGroup]:
    """LiteFPN's channel spaces, each named for the output level it ends in.

    With the bottom-up path (``LiteFPN.forward``): ``p4 = smooth(l1 + up(l2))`` ties laterals 1 and 2;
    ``p3 = smooth(l0 + up(p4))`` ties lateral 0 to p4; ``n4 = smooth(p4 + down(p3))`` ties p3 to p4;
    ``n5 = smooth(l2 + down(n4))`` ties n4 to lateral 2. So {l0, p4, p3}, {l1, l2, n4} and {n5}.
    Without it: {l0, p4} (output 16), {l1, l2} (output 32) and {p3} (output 8).
    """
    layers = dict(neck.named_sublayers(prefix="neck"))
    td, bu, down = "neck.top_down_smooth", "neck.bottom_up_smooth", "neck.downsamples"
    if neck.bottom_up:
        spaces = [  # (output level, producers, consumers), by level
            (0, ["neck.laterals.0", f"{td}.1.pointwise", f"{td}.0.depthwise", f"{td}.0.pointwise", f"{down}.0",
                 f"{bu}.0.depthwise"], [f"{td}.0.pointwise", f"{bu}.0.pointwise"]),
            (1, ["neck.laterals.1", "neck.laterals.2", f"{bu}.0.pointwise", f"{td}.1.depthwise", f"{down}.1",
                 f"{bu}.1.depthwise"], [f"{td}.1.pointwise", f"{bu}.1.pointwise"]),
            (2, [f"{bu}.1.pointwise"], []),
        ]
    else:
        spaces = [
            (0, [f"{td}.0.pointwise"], []),
            (1, ["neck.laterals.0", f"{td}.1.pointwise", f"{td}.0.depthwise"], [f"{td}.0.pointwise"]),
            (2, ["neck.laterals.1", "neck.laterals.2", f"{td}.1.depthwise"], [f"{td}.1.pointwise"]),
        ]
    groups = []
    for level, producers, consumers in spaces:
        head_producers, head_consumers = _head_inputs(head, level)
        size = _out_channels(layers[producers[0]])
        groups.append(ChannelGroup(f"neck.out_stride{8 * 2 ** level}", size, producers + head_producers,
                                   [(path, 0) for path in consumers] + head_consumers))
    return groups


def _resnet_groups(backbone: ResNetVd) -> list[ChannelGroup]:
    """The stem's first two convs and the inner channels of every block (the residual trunks stay)."""
    groups = [
        ChannelGroup(f"backbone.stem.{i}.out", _out_channels(backbone.stem[i]), [f"backbone.stem.{i}"],
                     [(f"backbone.stem.{i + 1}", 0)])
        for i in (0, 1)
    ]
    for s, stage in enumerate(backbone.stages):
        for b, block in enumerate(stage):
            path = f"backbone.stages.{s}.{b}"
            groups.append(ChannelGroup(f"{path}.conv1.out", _out_channels(block.conv1), [f"{path}.conv1"],
                                       [(f"{path}.conv2", 0)]))
            if isinstance(block, Bottleneck):
                groups.append(ChannelGroup(f"{path}.conv2.out", _out_channels(block.conv2), [f"{path}.conv2"],
                                           [(f"{path}.conv3", 0)]))
    return groups


def _ppyolo_fpn_groups(neck: PPYOLOFPN, head: YOLOHead | GFLHead) -> list[ChannelGroup]:
    """Every channel space of the PP-YOLO FPN (see ``PPYOLODetectionBlock``), block by block.

    The SPP fuse conv reads its input and three poolings of it side by side: four offsets. A route
    feeds its tip and the next level's lateral; a lateral's output comes first in the next block's
    concat. CoordConv appends its two coordinate channels after the features, which stay untouched.
    """
    groups = []
    for j, block in enumerate(neck.blocks):  # j = 0 is stride 32
        path = f"neck.blocks.{j}"
        body = [f"{path}.body.{i}" for i in range(4)]
        wide = _out_channels(block.body[1])
        if isinstance(block.body[2], SPP):
            spp_inputs = [(body[2], k * wide) for k in range(len(block.body[2].pool_sizes) + 1)]
        else:
            spp_inputs = [(body[2], 0)]
        route_readers = [(f"{path}.tip", 0)] + ([(f"neck.laterals.{j}", 0)] if j < len(neck.laterals) else [])
        head_producers, head_consumers = _head_inputs(head, len(neck.blocks) - 1 - j)
        groups += [
            ChannelGroup(f"{body[0]}.out", _out_channels(block.body[0]), [body[0]], [(body[1], 0)]),
            ChannelGroup(f"{body[1]}.out", wide, [body[1]], spp_inputs),
            ChannelGroup(f"{body[2]}.out", _out_channels(block.body[2]), [body[2]], [(body[3], 0)]),
            ChannelGroup(f"{body[3]}.out", _out_channels(block.body[3]), [body[3]], [(f"{path}.route", 0)]),
            ChannelGroup(f"{path}.route.out", _out_channels(block.route), [f"{path}.route"], route_readers),
            ChannelGroup(f"{path}.tip.out", _out_channels(block.tip), [f"{path}.tip", *head_producers],
                         head_consumers),
        ]
    for step, lateral in enumerate(neck.laterals):
        groups.append(ChannelGroup(f"neck.laterals.{step}.out", _out_channels(lateral), [f"neck.laterals.{step}"],
                                   [(f"neck.blocks.{step + 1}.body.0", 0)]))
    return groups


def _head_tower(head: YOLOHead | GFLHead, level: int) -> list[tuple[str, nn.Layer]]:
    """The conv layers of a level's head block in order, with their paths: the YOLO head's single block
    (none for ``block="none"``), or each layer of the GFL head's tower (``nn.Sequential``)."""
    block, path = head.blocks[level], f"head.blocks.{level}"
    if isinstance(block, nn.Sequential):
        return [(f"{path}.{index}", layer) for index, layer in enumerate(block)]
    return [(path, block)] if isinstance(block, (DepthwiseSeparableConv, ConvBNAct)) else []


def _reader(path: str, layer: nn.Layer) -> tuple[list[str], list[tuple[str, int]]]:
    """(producers, consumers) that a head layer reading a channel space adds to that space's group: a
    depthwise-separable layer carries the channels through its depthwise conv into its pointwise one."""
    if isinstance(layer, DepthwiseSeparableConv):
        return [f"{path}.depthwise"], [(f"{path}.pointwise", 0)]
    return [], [(path, 0)]


def _head_inputs(head: YOLOHead | GFLHead, level: int) -> tuple[list[str], list[tuple[str, int]]]:
    """(producers, consumers) a neck output of ``level`` adds to its group: the head's first layers."""
    tower = _head_tower(head, level)
    if tower:
        return _reader(*tower[0])
    return [], [(f"head.predictions.{level}", 0)]  # no block: the prediction conv reads the neck


def _head_hidden_groups(head: YOLOHead | GFLHead) -> list[ChannelGroup]:
    """The channels written by each layer of a level's head block, read by the next layer or the prediction conv."""
    groups = []
    for level in range(len(head.blocks)):
        tower = _head_tower(head, level)
        for index, (path, layer) in enumerate(tower):
            producer = f"{path}.pointwise" if isinstance(layer, DepthwiseSeparableConv) else path
            if index + 1 < len(tower):
                producers, consumers = _reader(*tower[index + 1])
            else:
                producers, consumers = [], [(f"head.predictions.{level}", 0)]
            name = f"head.blocks.{level}.hidden" if len(tower) == 1 else f"{path}.out"
            writer = layer.pointwise if isinstance(layer, DepthwiseSeparableConv) else layer
            groups.append(ChannelGroup(name, _out_channels(writer), [producer, *producers], consumers))
    return groups


def _is_depthwise(layer: nn.Layer) -> bool:
    return isinstance(layer, ConvBNAct) and layer.conv._groups > 1


def _out_channels(layer: nn.Layer) -> int:
    return int(_weight(layer).shape[0])


def _weight(layer: nn.Layer) -> paddle.Tensor:
    """The convolution weight that defines ``layer``'s output channels."""
    if isinstance(layer, (ConvBNAct, DeformableConvBNAct)):
        return layer.conv.weight
    if isinstance(layer, CoordConv):
        return layer.conv.conv.weight
    if isinstance(layer, SPP):
        return layer.fuse.conv.weight
    if isinstance(layer, nn.Conv2D):
        return layer.weight
    raise TypeError(f"no convolution weight known for a {type(layer).__name__}")


def _check_groups(model: YOLODetector, groups: list[ChannelGroup]) -> None:
    """Every producer writes ``size`` channels and every consumer has room for them at its offset."""
    layers = dict(model.named_sublayers())
    state = model.state_dict()
    for group in groups:
        for path in group.producers:
            if _out_channels(layers[path]) != group.size:
                raise ValueError(f"channel group {group.name}: {path} writes {_out_channels(layers[path])} "
                                 f"channels, expected {group.size}")
        for path, offset in group.consumers:
            for key in _input_keys(path, layers[path]):
                in_channels = state[key].shape[1]
                if offset + group.size > in_channels:
                    raise ValueError(f"channel group {group.name}: {key} reads {in_channels} channels, fewer than "
                                     f"offset {offset} + {group.size}")


def _output_keys(path: str, layer: nn.Layer) -> list[str]:
    """State-dict entries whose first axis is ``layer``'s output channels (the weight first)."""
    if isinstance(layer, (ConvBNAct, DeformableConvBNAct)):
        conv = [f"{path}.conv.weight"] + ([f"{path}.conv.bias"] if layer.conv.bias is not None else [])
        return conv + [f"{path}.bn.{name}" for name in ("weight", "bias", "_mean", "_variance")]
    if isinstance(layer, CoordConv):
        return _output_keys(f"{path}.conv", layer.conv)
    if isinstance(layer, SPP):
        return _output_keys(f"{path}.fuse", layer.fuse)
    if isinstance(layer, nn.Conv2D):
        return [f"{path}.weight"] + ([f"{path}.bias"] if layer.bias is not None else [])
    raise TypeError(f"{path}: cannot prune the outputs of a {type(layer).__name__}")


def _input_keys(path: str, layer: nn.Layer) -> list[str]:
    """State-dict entries whose second axis is ``layer``'s input channels."""
    if isinstance(layer, ConvBNAct):
        if layer.conv._groups != 1:
            raise ValueError(f"{path}: a depthwise convolution carries its channels; list it as a producer")
        return [f"{path}.conv.weight"]
    if isinstance(layer, DeformableConvBNAct):  # the offset/mask predictor reads the same input
        return [f"{path}.offset_mask.weight", f"{path}.conv.weight"]
    if isinstance(layer, CoordConv):
        return _input_keys(f"{path}.conv", layer.conv)
    if isinstance(layer, SPP):
        return _input_keys(f"{path}.fuse", layer.fuse)
    if isinstance(layer, nn.Conv2D):
        return [f"{path}.weight"]
    raise TypeError(f"{path}: cannot prune the inputs of a {type(layer).__name__}")


# ----------------------------------------------------------------------------------------------
# Criteria and pruning
# ----------------------------------------------------------------------------------------------


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
        master = _output_keys(group.producers[0], layers[group.producers[0]])[0]
        keep = channels_to_keep(state[master], ratio, criterion, channel_multiple)
        report.append(GroupPruning(group.name, group.size, len(keep), ratio))
        removed = np.setdiff1d(np.arange(group.size), keep)
        if len(removed) == 0:
            continue
        for path in group.producers:
            for key in _output_keys(path, layers[path]):
                drop(key, 0, removed)
        for path, offset in group.consumers:
            for key in _input_keys(path, layers[path]):
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


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelSize:
    params: int  # count_parameters: every parameter value (BatchNorm statistics included)
    flops: int  # paddle.flops at the model's input size: multiply-accumulates of convs, BN, linear layers


def measure(model: YOLODetector) -> ModelSize:
    """Parameters and FLOPs of ``model`` for one image at its configured input size."""
    cfg = model.cfg
    # paddle.flops prints a line per layer type, and converts 1-element tensors to int the way numpy
    # deprecates (a warning per layer and call).
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        flops = paddle.flops(model, [1, cfg.in_channels, cfg.input_size, cfg.input_size],
                             custom_ops={DeformConv2D: _count_deformable_conv})
    return ModelSize(params=count_parameters(model), flops=int(flops))


def _count_deformable_conv(layer: DeformConv2D, inputs: tuple, output: paddle.Tensor) -> None:
    """paddle.flops has no rule for DeformConv2D: count it as the convolution it computes."""
    in_per_group = inputs[0].shape[1] // layer._groups
    layer.total_ops += int(output.numel()) * in_per_group * int(np.prod(layer.weight.shape[2:]))


# ----------------------------------------------------------------------------------------------
# Sensitivity scan and per-group ratios
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


@dataclass
class PruneConfig:
    """``inspector prune`` options, saved as prune_config.json in the run."""

    model: str  # run or checkpoint directory to prune (a run's best/)
    data: str  # the labeled data it was trained on
    out: str  # new run directory
    criterion: str = "l1"  # l1 | fpgm
    ratio: float | None = None  # the same ratio for every group; None: sensitivity scan (auto)
    target_flops_reduction: float = 0.3  # auto: fraction of FLOPs to remove
    max_drop: float = 0.02  # auto: largest mAP@0.5:0.95 drop one group's pruning may cost (before fine-tuning)
    scan_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)  # auto: ratios tried per group
    scan_images: int = 64  # auto: validation images the scan evaluates on (the first ones of the val split)
    channel_multiple: int = 8  # kept channels are rounded to multiples of this
    format: str | None = None
    epochs: int = 6  # fine-tuning
    lr: float = 5e-4  # fine-tuning peak learning rate (training from scratch uses 2e-3)
    warmup_epochs: float = 0.3
    batch_size: int | None = None  # default: the source run's
    seed: int = 0
    workers: int = 2
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        self.scan_ratios = tuple(float(r) for r in self.scan_ratios)
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion: expected one of {CRITERIA}, got {self.criterion!r}")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio: expected a value in [0, 1), got {self.ratio}")
        if not 0.0 < self.target_flops_reduction < 1.0:
            raise ValueError(f"target_flops_reduction: expected a value in (0, 1), got {self.target_flops_reduction}")
        if self.max_drop < 0.0:
            raise ValueError(f"max_drop: expected a value >= 0, got {self.max_drop}")
        if not self.scan_ratios or any(not 0.0 < r < 1.0 for r in self.scan_ratios):
            raise ValueError(f"scan_ratios: expected values in (0, 1), got {list(self.scan_ratios)}")
        for name in ("scan_images", "channel_multiple", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected at least 1, got {getattr(self, name)}")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "PruneConfig":
        values = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown prune option(s) {unknown}")
        return cls(**values)


class PrunedFineTuning(Objective):
    """The training objective of the fine-tune: the detector's own loss, on the pruned architecture.

    ``weights`` are the pruned model's; None when resuming (the training state has newer ones).
    """

    def __init__(self, model_config: ModelConfig, shapes: dict[str, list[int]], weights: dict | None,
                 summary: dict) -> None:
        self._model_config = model_config
        self.shapes = shapes
        self.weights = weights
        self.summary = summary

    def model_config(self, cfg: TrainConfig, train_set: Dataset, start: Checkpoint | None = None) -> ModelConfig:
        return self._model_config  # the pruned model starts from its own weights (build_model), never --init

    def build_model(self, model_config: ModelConfig) -> nn.Layer:
        model = build_model(model_config)
        apply_pruned_shapes(model, self.shapes)
        if self.weights is not None:
            model.set_state_dict(self.weights)
        return model

    def checkpoint_info(self) -> dict:
        return {PRUNED_SHAPES: self.shapes, "pruning": self.summary}


def prune(cfg: PruneConfig) -> Path:
    """Prune ``cfg.model`` and fine-tune it into the new run ``cfg.out``; returns the run directory."""
    out = Path(cfg.out)
    if (out / "last").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
    source = load_checkpoint(Path(cfg.model))
    model = source.build()
    dataset = load_dataset(cfg.data, format=cfg.format)
    if dataset.class_names != source.class_names:
        raise DataError(f"{cfg.data} has classes {dataset.class_names}, the model {source.class_names}")
    out.mkdir(parents=True, exist_ok=True)
    train_cfg = _fine_tune_config(cfg, source)
    _, val_set = split_dataset(dataset, train_cfg.val_fraction, train_cfg.split_seed,
                               _adopt_split(source, out / "split.json"))
    if len(val_set) == 0:
        raise DataError(f"{out / 'split.json'}: no validation images of {cfg.data}; pruning needs them to measure")
    cfg.save(out / PRUNE_CONFIG_FILE)

    input_cfg = model.cfg
    val_loader = BatchLoader(val_set, train_cfg.batch_size, input_cfg.input_size, input_cfg.input_mode,
                             workers=cfg.workers)
    before = _size_and_accuracy(model, val_loader, source.class_names)
    log.info("before: %s", before)

    if cfg.ratio is not None:
        ratios = {group.name: cfg.ratio for group in channel_groups(model)}
        mode: dict[str, Any] = {"mode": "uniform", "ratio": cfg.ratio}
    else:
        scan_set = Dataset(val_set.samples[: cfg.scan_images], val_set.class_names, val_set.root, val_set.format)
        scan_loader = BatchLoader(scan_set, train_cfg.batch_size, input_cfg.input_size, input_cfg.input_mode,
                                  workers=cfg.workers)

        def scan_metric(candidate: nn.Layer) -> float:
            return validate(candidate, scan_loader, source.class_names, progress=False).map50_95

        baseline, scan = sensitivity_scan(model, scan_metric, cfg.scan_ratios, cfg.criterion, cfg.channel_multiple)
        choice = choose_ratios(model, scan, cfg.target_flops_reduction, cfg.max_drop, cfg.criterion,
                               cfg.channel_multiple)
        ratios = choice.ratios
        mode = {"mode": "sensitivity", "target_flops_reduction": cfg.target_flops_reduction,
                "max_drop": cfg.max_drop, "tolerance": choice.tolerance, "target_reached": choice.target_reached}
        _write_json(out / SENSITIVITY_FILE, {
            "metric": "map50_95", "images": len(scan_set), "baseline": baseline, "criterion": cfg.criterion,
            "channel_multiple": cfg.channel_multiple, "groups": scan, **mode, "chosen_ratios": ratios,
            "flops_reduction": choice.flops_reduction})
        if not choice.target_reached:
            log.warning("sensitivity: a FLOPs reduction of %.1f%% needs more than a %.4f drop per group; pruning "
                        "%.1f%%", 100 * cfg.target_flops_reduction, cfg.max_drop, 100 * choice.flops_reduction)

    groups = prune_model(model, ratios, cfg.criterion, cfg.channel_multiple)
    after = _size_and_accuracy(model, val_loader, source.class_names)
    log.info("pruned: %s", after)
    report = {"source": str(source.path), "arch": input_cfg.arch, "criterion": cfg.criterion,
              "channel_multiple": cfg.channel_multiple, **mode, "input_size": input_cfg.input_size,
              "before": before, "pruned": after, "groups": [asdict(g) for g in groups]}
    _write_json(out / REPORT_FILE, report)

    summary = {"source": str(source.path), "criterion": cfg.criterion, **mode,
               "params_before": before["params"], "flops_before": before["flops"],
               "params": after["params"], "flops": after["flops"]}
    weights = {name: value.numpy() for name, value in model.state_dict().items()}
    run = train(train_cfg, objective=PrunedFineTuning(input_cfg, pruned_shapes(model), weights, summary))
    _record_fine_tuned(run)
    return run


def resume_pruning(out: Path, epochs: int | None = None) -> Path:
    """Continue the fine-tuning of the pruning run in ``out`` from its ``last/`` checkpoint."""
    out = Path(out)
    for needed in (out / PRUNE_CONFIG_FILE, out / "last" / INFO_FILE):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: missing; {out} is not a pruning run that can be resumed")
    last = load_checkpoint(out / "last")
    train_cfg = TrainConfig.load(out / "train_config.json")
    if epochs is not None:
        train_cfg = replace(train_cfg, epochs=epochs)
    objective = PrunedFineTuning(last.model_config, last.info.get(PRUNED_SHAPES, {}), None, last.info["pruning"])
    run = train(train_cfg, resume=True, objective=objective)
    _record_fine_tuned(run)
    return run


def format_report(report: dict[str, Any]) -> str:
    """pruning.json as a few lines for the terminal."""
    how = f"uniform ratio {report['ratio']}" if report["mode"] == "uniform" else (
        f"sensitivity scan, target -{100 * report['target_flops_reduction']:.0f}% FLOPs"
        + ("" if report["target_reached"] else " (not reached within --max-drop)"))
    pruned_groups = sum(group["kept"] < group["channels"] for group in report["groups"])
    before, after = report["before"], report["pruned"]
    lines = [f"pruned {report['arch']} ({report['criterion']}, {how}): {pruned_groups} of {len(report['groups'])} "
             f"channel groups",
             f"  parameters  {before['params']:,} -> {after['params']:,} "
             f"({100 * (after['params'] / before['params'] - 1):+.1f}%)",
             f"  FLOPs       {before['flops'] / 1e6:.1f} M -> {after['flops'] / 1e6:.1f} M "
             f"({100 * (after['flops'] / before['flops'] - 1):+.1f}%) at input {report['input_size']}"]
    tuned = report.get("fine_tuned", {})
    for key, label in (("map50", "mAP@0.5"), ("map50_95", "mAP@0.5:0.95")):
        line = f"  {label:12s} {before[key]:.4f} before, {after[key]:.4f} pruned"
        if tuned.get(key) is not None:
            line += f", {tuned[key]:.4f} fine-tuned (best epoch {tuned['epoch']})"
        lines.append(line)
    return "\n".join(lines)


def _fine_tune_config(cfg: PruneConfig, source: Checkpoint) -> TrainConfig:
    """The source run's training settings, with the fine-tuning schedule and the new run directory."""
    known = {f.name for f in fields(TrainConfig)}
    recorded = {k: v for k, v in (source.info.get("train_config") or {}).items() if k in known}
    model_cfg = source.model_config
    values = {**recorded, "arch": model_cfg.arch, "data": cfg.data, "out": cfg.out, "format": cfg.format,
              "input_size": model_cfg.input_size, "input_mode": model_cfg.input_mode, "epochs": cfg.epochs,
              "lr": cfg.lr, "warmup_epochs": cfg.warmup_epochs, "seed": cfg.seed, "workers": cfg.workers,
              "max_steps_per_epoch": cfg.max_steps_per_epoch, "eval_every": 1, "split_file": None}
    if cfg.batch_size is not None:
        values["batch_size"] = cfg.batch_size
    return TrainConfig(**values)


def _adopt_split(source: Checkpoint, split_file: Path) -> Path:
    """Copy the source run's split.json to ``split_file`` (the pruned model is validated on the same
    images); without one, ``split_dataset`` draws and writes a new split there."""
    configured = (source.info.get("train_config") or {}).get("split_file")
    for candidate in ([Path(configured)] if configured else []) + [source.path.parent / "split.json"]:
        if candidate.is_file() and candidate.resolve() != split_file.resolve():
            shutil.copyfile(candidate, split_file)
            break
    else:
        log.warning("split: %s has no split.json; drawing a new one (validation images may overlap the "
                    "source model's training images)", source.path)
    return split_file


def _size_and_accuracy(model: YOLODetector, loader: BatchLoader, class_names: list[str]) -> dict[str, Any]:
    size = measure(model)
    result = validate(model, loader, class_names, progress=False)
    return {"params": size.params, "flops": size.flops, "map50": result.map50, "map50_95": result.map50_95,
            "f1_iou033": result.f1_iou033}


def _record_fine_tuned(run: Path) -> None:
    """Add the best checkpoint's validation metrics to pruning.json."""
    best = load_checkpoint(run / "best")
    metrics = best.info.get("metrics", {})
    report = json.loads((run / REPORT_FILE).read_text())
    report["fine_tuned"] = {"epoch": best.info.get("epoch"), "params": report["pruned"]["params"],
                            "flops": report["pruned"]["flops"],
                            **{k: metrics.get(k) for k in ("map50", "map50_95", "f1_iou033")}}
    _write_json(run / REPORT_FILE, report)


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str))
    tmp.replace(path)
