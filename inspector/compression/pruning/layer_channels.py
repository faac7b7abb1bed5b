"""Where a layer's channels live: the convolution weight that sets its output channels, and the state-dict
entries whose first (output) or second (input) axis pruning cuts. ``groups`` says which channels go
together; ``channels`` cuts them through these entries.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from inspector.models.layers import SPP, ConvBNAct, CoordConv, DeformableConvBNAct


def out_channels(layer: nn.Layer) -> int:
    """How many output channels ``layer`` writes."""
    return int(conv_weight(layer).shape[0])


def conv_weight(layer: nn.Layer) -> paddle.Tensor:
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


def output_keys(path: str, layer: nn.Layer) -> list[str]:
    """State-dict entries whose first axis is ``layer``'s output channels (the weight first)."""
    if isinstance(layer, (ConvBNAct, DeformableConvBNAct)):
        conv = [f"{path}.conv.weight"] + ([f"{path}.conv.bias"] if layer.conv.bias is not None else [])
        return conv + [f"{path}.bn.{name}" for name in ("weight", "bias", "_mean", "_variance")]
    if isinstance(layer, CoordConv):
        return output_keys(f"{path}.conv", layer.conv)
    if isinstance(layer, SPP):
        return output_keys(f"{path}.fuse", layer.fuse)
    if isinstance(layer, nn.Conv2D):
        return [f"{path}.weight"] + ([f"{path}.bias"] if layer.bias is not None else [])
    raise TypeError(f"{path}: cannot prune the outputs of a {type(layer).__name__}")


def input_keys(path: str, layer: nn.Layer) -> list[str]:
    """State-dict entries whose second axis is ``layer``'s input channels."""
    if isinstance(layer, ConvBNAct):
        if layer.conv._groups != 1:
            raise ValueError(f"{path}: a depthwise convolution carries its channels; list it as a producer")
        return [f"{path}.conv.weight"]
    if isinstance(layer, DeformableConvBNAct):  # the offset/mask predictor reads the same input
        return [f"{path}.offset_mask.weight", f"{path}.conv.weight"]
    if isinstance(layer, CoordConv):
        return input_keys(f"{path}.conv", layer.conv)
    if isinstance(layer, SPP):
        return input_keys(f"{path}.fuse", layer.fuse)
    if isinstance(layer, nn.Conv2D):
        return [f"{path}.weight"]
    raise TypeError(f"{path}: cannot prune the inputs of a {type(layer).__name__}")
