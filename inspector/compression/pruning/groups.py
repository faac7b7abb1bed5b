"""Channel groups: which convolution channels can only be removed together, for our detector families.

A convolution's output channel can only go together with everything that depends on it: its BatchNorm
entry, the matching filter of any depthwise convolution or SE gate it passes through, the matching input
slice of every convolution that reads it, and, where a residual add or an FPN sum adds two maps, the
same channel of the other map's producers. ``channel_groups`` lists these sets explicitly:

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

Why a table and not PaddleSlim's ``L1NormFilterPruner`` / ``FPGMFilterPruner`` (PaddleSlim 2.6.0, Paddle
3.3.1): they find the groups by tracing the model into a static program. Constructing one fails with
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

from dataclasses import dataclass, field

import paddle.nn as nn

from inspector.compression.pruning.layer_channels import input_keys, out_channels
from inspector.models.backbones import Bottleneck, InvertedResidual, MobileNetV3, ResNetVd
from inspector.models.detector import YOLODetector
from inspector.models.gfl_head import GFLHead
from inspector.models.head import YOLOHead
from inspector.models.layers import SPP, ConvBNAct, DepthwiseSeparableConv, SqueezeExcite
from inspector.models.necks import PPYOLOFPN, LiteFPN


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
    trunk = ChannelGroup("backbone.stem.out", out_channels(backbone.stem), ["backbone.stem"])
    groups = [trunk]
    for index, block in enumerate(backbone.blocks):
        path = f"backbone.blocks.{index}"
        expand, depthwise, squeeze_excite, project = _inverted_residual_parts(block)
        if expand is None:
            inner = trunk
        else:
            trunk.consumers.append((f"{path}.body.{expand}", 0))
            inner = ChannelGroup(f"{path}.expanded", out_channels(block.body[expand]), [f"{path}.body.{expand}"])
            groups.append(inner)
        inner.producers.append(f"{path}.body.{depthwise}")
        if squeeze_excite is not None:
            se = f"{path}.body.{squeeze_excite}"
            inner.producers.append(f"{se}.expand")  # its gate scales channel i of the map
            inner.consumers.append((f"{se}.reduce", 0))
            groups.append(ChannelGroup(f"{path}.se", out_channels(block.body[squeeze_excite].reduce),
                                       [f"{se}.reduce"], [(f"{se}.expand", 0)]))
        inner.consumers.append((f"{path}.body.{project}", 0))
        if block.use_residual:
            trunk.producers.append(f"{path}.body.{project}")
        else:
            trunk = ChannelGroup(f"{path}.out", out_channels(block.body[project]), [f"{path}.body.{project}"])
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
        size = out_channels(layers[producers[0]])
        groups.append(ChannelGroup(f"neck.out_stride{8 * 2 ** level}", size, producers + head_producers,
                                   [(path, 0) for path in consumers] + head_consumers))
    return groups


def _resnet_groups(backbone: ResNetVd) -> list[ChannelGroup]:
    """The stem's first two convs and the inner channels of every block (the residual trunks stay)."""
    groups = [
        ChannelGroup(f"backbone.stem.{i}.out", out_channels(backbone.stem[i]), [f"backbone.stem.{i}"],
                     [(f"backbone.stem.{i + 1}", 0)])
        for i in (0, 1)
    ]
    for s, stage in enumerate(backbone.stages):
        for b, block in enumerate(stage):
            path = f"backbone.stages.{s}.{b}"
            groups.append(ChannelGroup(f"{path}.conv1.out", out_channels(block.conv1), [f"{path}.conv1"],
                                       [(f"{path}.conv2", 0)]))
            if isinstance(block, Bottleneck):
                groups.append(ChannelGroup(f"{path}.conv2.out", out_channels(block.conv2), [f"{path}.conv2"],
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
        wide = out_channels(block.body[1])
        if isinstance(block.body[2], SPP):
            spp_inputs = [(body[2], k * wide) for k in range(len(block.body[2].pool_sizes) + 1)]
        else:
            spp_inputs = [(body[2], 0)]
        route_readers = [(f"{path}.tip", 0)] + ([(f"neck.laterals.{j}", 0)] if j < len(neck.laterals) else [])
        head_producers, head_consumers = _head_inputs(head, len(neck.blocks) - 1 - j)
        groups += [
            ChannelGroup(f"{body[0]}.out", out_channels(block.body[0]), [body[0]], [(body[1], 0)]),
            ChannelGroup(f"{body[1]}.out", wide, [body[1]], spp_inputs),
            ChannelGroup(f"{body[2]}.out", out_channels(block.body[2]), [body[2]], [(body[3], 0)]),
            ChannelGroup(f"{body[3]}.out", out_channels(block.body[3]), [body[3]], [(f"{path}.route", 0)]),
            ChannelGroup(f"{path}.route.out", out_channels(block.route), [f"{path}.route"], route_readers),
            ChannelGroup(f"{path}.tip.out", out_channels(block.tip), [f"{path}.tip", *head_producers],
                         head_consumers),
        ]
    for step, lateral in enumerate(neck.laterals):
        groups.append(ChannelGroup(f"neck.laterals.{step}.out", out_channels(lateral), [f"neck.laterals.{step}"],
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
            groups.append(ChannelGroup(name, out_channels(writer), [producer, *producers], consumers))
    return groups


def _is_depthwise(layer: nn.Layer) -> bool:
    return isinstance(layer, ConvBNAct) and layer.conv._groups > 1


def _check_groups(model: YOLODetector, groups: list[ChannelGroup]) -> None:
    """Every producer writes ``size`` channels and every consumer has room for them at its offset."""
    layers = dict(model.named_sublayers())
    state = model.state_dict()
    for group in groups:
        for path in group.producers:
            if out_channels(layers[path]) != group.size:
                raise ValueError(f"channel group {group.name}: {path} writes {out_channels(layers[path])} "
                                 f"channels, expected {group.size}")
        for path, offset in group.consumers:
            for key in input_keys(path, layers[path]):
                in_channels = state[key].shape[1]
                if offset + group.size > in_channels:
                    raise ValueError(f"channel group {group.name}: {key} reads {in_channels} channels, fewer than "
                                     f"offset {offset} + {group.size}")
