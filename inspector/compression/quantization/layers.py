"""The technique of INT8 quantization: which layers, BatchNorm folding, and PaddleSlim's fake-quant wrappers.

Every ``Conv2D`` is wrapped with PaddleSlim's dygraph fake-quant layers (``paddleslim.dygraph.quant.QAT``:
per-output-channel abs-max weight scales, one moving-average abs-max scale per activation tensor entering a
convolution): the INT8 scheme Paddle Lite and oneDNN execute. Every BatchNorm is folded into its
convolution first (``fuse_batch_norms``; why: see there). Mixed precision keeps named convolutions, or
every convolution under a named block, in FP32 (``resolve_layer_names``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import paddle
import paddle.nn as nn

from inspector.models import YOLODetector

# PaddleSlim dygraph QAT settings. ``onnx_format`` saves quantize_linear / dequantize_linear operators
# and INT8 weights: the format Paddle Lite (>= 2.11) and Paddle Inference's oneDNN INT8 path read.
QAT_CONFIG: dict[str, Any] = {
    "weight_quantize_type": "channel_wise_abs_max",
    "activation_quantize_type": "moving_average_abs_max",
    "weight_bits": 8,
    "activation_bits": 8,
    "moving_rate": 0.9,
    "quantizable_layer_type": ["Conv2D"],  # the detectors have no Linear layers
    "onnx_format": True,
}
QUANTIZABLE_OPS = ("conv2d", "depthwise_conv2d")  # the program operators of ``Conv2D``


def quantizable_layer_names(model: nn.Layer) -> list[str]:
    """Structured names of the layers quantization applies to (every ``Conv2D``), in model order.

    The names are the same before and after ``quantize_model`` (a wrapper takes the layer's place).
    """
    return list(convolutions(model))


def convolutions(model: nn.Layer) -> dict[str, nn.Layer]:
    """``{name: layer holding the weight}``: a ``Conv2D``, or the ``QuantizedConv2D`` in a QAT wrapper."""
    from paddle.nn.quant.quant_layers import QuantizedConv2D

    found = {}
    for name, layer in model.named_sublayers():
        if isinstance(layer, nn.Conv2D):
            found[name] = layer
        elif isinstance(getattr(layer, "_layer", None), QuantizedConv2D):
            found[name] = layer._layer
    return found


def lite_x86_fp32_layers(model: nn.Layer) -> list[str]:
    """What Paddle Lite 2.13's x86 INT8 kernels cannot run, to keep in FP32 when one INT8 graph must serve
    x86 Lite as well as ARM and oneDNN: depthwise convolutions with a bias (the x86 predictor segfaults)
    and the stem on the network input (wrong results: mAP@0.5 0.79 -> 0.42 on 8 DeepPCB validation
    images). Both are a small share of the weights and multiply-adds of a MobileNetV3."""
    return [name for name, conv in convolutions(model).items()
            if name == "backbone.stem.conv" or conv._groups > 1]


def resolve_layer_names(model: nn.Layer, requested: Sequence[str]) -> list[str]:
    """Expand names to quantizable layers: a layer's own name, or a block whose convolutions all count.

    ``"head.predictions"`` selects ``head.predictions.0``, ``.1``, ``.2``. Raises ValueError naming
    what matched nothing.
    """
    available = quantizable_layer_names(model)
    chosen: list[str] = []
    for name in requested:
        matches = [layer for layer in available if layer == name or layer.startswith(name + ".")]
        if not matches:
            raise ValueError(f"skip layer {name!r} names no convolution of the model; expected a name such as "
                             f"{available[0]!r} or a block such as 'head.predictions' (sensitivity.json lists "
                             f"all {len(available)})")
        chosen += [layer for layer in matches if layer not in chosen]
    return [layer for layer in available if layer in chosen]  # model order


@paddle.no_grad()
def fuse_batch_norms(model: nn.Layer) -> nn.Layer:
    """Fold every ``ConvBNAct``'s BatchNorm into its convolution, in place; returns ``model``.

    ``w' = w * gamma / sqrt(var + eps)`` per output channel, ``b' = beta - mean * gamma / sqrt(var + eps)``,
    and the BatchNorm becomes an identity: the same function (to float rounding) with one layer less.
    Quantization needs it done first. INT8 runtimes fold BatchNorm into the preceding convolution
    themselves, and doing that to an already quantized convolution (INT8 weights, an activation scale
    measured before the BatchNorm) wrecks the result: on the DeepPCB student, oneDNN's INT8 kernels went
    from mAP@0.5 0.64 to 0.13 and Paddle Lite x86 to 0.00 while the quantized graph itself kept 0.64.
    Folded first, weights are quantized as they will run and every scale is measured where it is used.
    (PaddleSlim's own ``fuse_conv_bn`` option fuses a copy and discards it in Paddle 3.3.1.)
    """
    from inspector.models.layers import ConvBNAct

    for layer in model.sublayers():
        if not (isinstance(layer, ConvBNAct) and isinstance(layer.bn, nn.BatchNorm2D)):
            continue
        conv, bn = layer.conv, layer.bn
        factor = bn.weight / paddle.sqrt(bn._variance + bn._epsilon)
        bias = bn.bias - bn._mean * factor
        if conv.bias is not None:
            bias = bias + conv.bias * factor
        else:
            conv.bias = conv.create_parameter(shape=[conv._out_channels], is_bias=True)
        conv.weight.set_value(conv.weight * factor.reshape([-1, 1, 1, 1]))
        conv.bias.set_value(bias)
        layer.bn = nn.Identity()
    return model


def quantize_model(model: YOLODetector, skip_layers: Sequence[str] = ()) -> YOLODetector:
    """Fold BatchNorms (``fuse_batch_norms``), then wrap ``model``'s convolutions, in place, with
    fake-quant layers (QAT_CONFIG), except ``skip_layers``. Returns ``model``.

    The wrapped model still trains and runs in dygraph; its INT8 behaviour is simulated (quantize then
    dequantize) until ``save_inference_model`` writes the real quantized program.
    """
    from paddleslim.dygraph.quant import QAT

    if is_quantized(model):
        raise ValueError("the model is already quantized")
    fuse_batch_norms(model)
    layers = dict(model.named_sublayers())
    for name in resolve_layer_names(model, skip_layers):
        layers[name].skip_quant = True  # honoured by paddle.quantization.ImperativeQuantAware
    QAT(config=QAT_CONFIG).quantize(model)
    return model


def is_quantized(model: nn.Layer) -> bool:
    """Whether ``model`` holds fake-quant (QAT) convolutions."""
    from paddle.nn.quant.quant_layers import QuantizedConv2D

    return any(isinstance(layer, QuantizedConv2D) for layer in model.sublayers())
