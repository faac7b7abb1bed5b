"""Measuring a (pruned) model's size: parameters and FLOPs at its input size."""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import paddle
from paddle.vision.ops import DeformConv2D

from inspector.models import count_parameters
from inspector.models.detector import YOLODetector


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
