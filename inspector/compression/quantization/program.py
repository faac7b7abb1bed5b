"""Saving a (quantized) detector as an inference program, and reading back what a saved program holds.

The trace and the legacy-format save are the models layer's (``inspector.models.inference_program``),
shared with ``inspector export``; a quantized model is written through PaddleSlim, which turns its
fake-quant layers into quantize_linear / dequantize_linear operators and stores the weights as INT8.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import paddle.nn as nn

from inspector.compression.quantization.layers import QAT_CONFIG, QUANTIZABLE_OPS, convolutions, is_quantized
from inspector.models import DecodedDetector
from inspector.models.inference_program import save_decoded_program


def save_inference_model(model: nn.Layer, path_prefix: Path | str, input_size: int, in_channels: int) -> Path:
    """Save ``images -> (boxes, scores)`` as a legacy Paddle inference model: ``PREFIX.pdmodel`` / ``.pdiparams``.

    ``model`` is a ``YOLODetector`` (or its ``DecodedDetector``), FP32 or made by ``quantize_model``; a
    quantized one is saved through PaddleSlim, which turns its fake-quant layers into
    quantize_linear / dequantize_linear operators and stores the convolution weights as INT8.
    The input is fixed to ``[1, in_channels, input_size, input_size]``, what the runtime feeds.
    ``model`` itself is left unchanged (the trace runs on a wrapper). Returns the ``.pdmodel`` path.
    """
    detector = model.detector if isinstance(model, DecodedDetector) else model
    write = _write_quantized if is_quantized(detector) else None
    return save_decoded_program(detector, path_prefix, input_size, in_channels, write=write)


def _write_quantized(static: nn.Layer, prefix: str) -> None:
    from paddleslim.dygraph.quant import QAT

    # input_spec=None: the trace is reused; given a spec, PaddleSlim would trace again in to_static's
    # default (SOT) mode, which is slower.
    QAT(config=QAT_CONFIG).save_quantized_model(static, prefix, input_spec=None)


@dataclass
class ProgramSummary:
    """What a saved inference program holds, read from its ``.pdmodel`` (no paddle runtime needed)."""

    op_counts: dict[str, int]
    quantized_weights: list[str]  # convolution weights reaching their op through dequantize_linear
    float_weights: list[str]  # convolution weights used as stored, in floating point

    @property
    def quantized(self) -> bool:
        return bool(self.quantized_weights)


def describe_program(model_file: Path | str) -> ProgramSummary:
    """Operator counts and which convolution weights are quantized in the legacy program ``model_file``.

    A quantized weight is stored as INT8 values (PaddleSlim's weight pass writes them into the
    ``.pdiparams``; the program's variable still declares FP32) and dequantized by its own
    ``dequantize_linear`` operator in front of the convolution.
    """
    from paddle.base.proto import framework_pb2

    model_file = Path(model_file)
    try:
        program = framework_pb2.ProgramDesc.FromString(model_file.read_bytes())
    except Exception as error:  # protobuf raises its own DecodeError
        raise ValueError(f"{model_file}: not a legacy Paddle program ({error})") from error
    block = program.blocks[0]
    persistable = {var.name for var in block.vars if var.persistable}
    producer = {name: op for op in block.ops for out in op.outputs for name in out.arguments}

    def argument(op, parameter: str) -> str:
        return next(a.arguments[0] for a in op.inputs if a.parameter == parameter)

    quantized_weights, float_weights = [], []
    for op in block.ops:
        if op.type not in QUANTIZABLE_OPS:
            continue
        weight = argument(op, "Filter")
        source = producer.get(weight)
        if source is not None and source.type == "dequantize_linear" and argument(source, "X") in persistable:
            quantized_weights.append(argument(source, "X"))
        else:
            float_weights.append(weight)
    return ProgramSummary(dict(Counter(op.type for op in block.ops)), quantized_weights, float_weights)


def layer_precisions(model: nn.Layer, summary: ProgramSummary) -> dict[str, str]:
    """``{layer name: "int8" | "fp32"}`` for every convolution of ``model``, from the saved program.

    Parameter names survive ``jit.save``, so a layer is matched to the program by its weight's name.
    """
    quantized = set(summary.quantized_weights)
    return {name: "int8" if conv.weight.name in quantized else "fp32" for name, conv in convolutions(model).items()}
