"""``inspector quantize``: an INT8 version of a trained detector, by QAT or PTQ, saved for Paddle Inference / Lite.

    inspector quantize --model runs/student --data DIR --method qat --out runs/student-int8

Both methods use the same INT8 scheme, the one Paddle Lite and oneDNN execute: per-output-channel abs-max
scales for convolution weights, one scale per activation tensor entering a convolution. Both first fold
every BatchNorm into its convolution (``fuse_batch_norms``; why: see there).

Every ``Conv2D`` is wrapped with PaddleSlim's dygraph fake-quant layers (``paddleslim.dygraph.quant.QAT``:
channel-wise abs-max weights, moving-average abs-max activations) and the activation scales are
calibrated on a subset of the training split (the 99.99th percentile of each activation, ``calibrate``).

- ``ptq`` (post-training quantization, the baseline): that is all; no training.
- ``qat`` (quantization-aware training): then a few epochs of fine-tuning at a low learning rate, so
  the weights adapt to the rounding (the observers follow the activations' moving abs-max meanwhile).

PaddleSlim's static ``quant_post_static`` was tried for PTQ and left out: its program (quantize /
dequantize pairs also around bias additions and reshapes) makes oneDNN's INT8 kernels output garbage
(DeepPCB student: mAP@0.5 0.005 where its own graph scores 0.632), and its graph passes take minutes.
Both methods here save the same program format.

Mixed precision: ``--skip-layers`` keeps the named convolutions (or every convolution under a named
block) in FP32; ``--sensitivity`` first ranks the layers by the accuracy their quantization costs
(``sensitivity.py``) and ``--skip-most-sensitive K`` keeps the worst K in FP32.

Accuracy is measured on the source run's validation split through Paddle Inference, on the saved files:
FP32; INT8 as the quantized graph computes it (its quantize/dequantize operators executed exactly, on
FP32 kernels: "int8-simulated"); and INT8 on oneDNN's INT8 kernels, which this CPU (AVX2, no VNNI) runs.
Paddle Lite 2.13's x86 INT8 kernels are not usable for these models (they crash on depthwise
convolutions with a bias and miscompute the stem; ARM has its own kernels), so Lite is left to export.

The run directory (``--out``):

    model.pdmodel / model.pdiparams   the INT8 decoded graph (images -> boxes, scores; NMS outside)
    fp32/model.pdmodel / .pdiparams    the FP32 model quantized from, the reference (its BatchNorms kept:
                                       see _quantize_into)
    checkpoint.json                    model config and class names (what ``inspector export`` reads);
                                       no weights: the inference model above is the model
    quant_config.json                  settings, source checkpoint, and the precision of every layer
                                       as found in the saved program
    metrics.json                       ``fp32``, ``int8``, ``int8_onednn`` accuracy and what ran,
                                       ``drop`` (FP32 - INT8) and ``drop_onednn``
    sensitivity.json                   with --sensitivity
    split.json                         the source run's train/val split (this run used it)

Legacy programs: Paddle Lite 2.13 reads only the legacy ``ProgramDesc`` (``.pdmodel``); Paddle 3.3 writes
one only with the PIR API off. ``paddle.pir_utils.DygraphOldIrGuard`` turns it off for the duration of a
save, in this process, so no subprocess is needed (a process started with ``FLAGS_enable_pir_api=0``
works the same: the guard then does nothing).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import paddle
import paddle.nn as nn
from tqdm import tqdm

from inspector.data import Dataset, load_dataset
from inspector.data.loader import BatchLoader
from inspector.data.split import split_dataset
from inspector.data.transforms import unletterbox_boxes
from inspector.evaluation import EvalResult, ImageDetections, ImageGT, evaluate
from inspector.models import DecodedDetector, ModelConfig, YOLODetector, select_detections
from inspector.training.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)

METHODS = ("qat", "ptq")
INPUT_NAME = "images"
MODEL_PREFIX = "model"  # the run's model.pdmodel / model.pdiparams (INT8), and fp32/model.* (FP32)
FP32_DIR = "fp32"

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
CALIBRATION_PERCENTILE = 99.99  # as PaddleSlim's post-training "hist" (hist_percent 0.9999)

# Post-processing of every evaluation here: the values ``training.validate.predict_loader`` uses, so
# FP32 and INT8 numbers compare with the training run's own validation.
EVAL_SCORE_THRESHOLD = 0.01
EVAL_NMS_THRESHOLD = 0.5
EVAL_MAX_DETECTIONS = 100


# --------------------------------------------------------------------------- configuration


@dataclass
class QuantizeConfig:
    """One ``inspector quantize`` run; saved (with what it resolved to) as ``quant_config.json``."""

    model: str  # FP32 source: a training run (its best/) or a checkpoint directory
    data: str  # the labeled data the source was trained on (its split.json is reused)
    out: str  # run directory
    method: str = "qat"  # "qat" | "ptq"
    format: str | None = None  # deeppcb | voc | coco; auto-detected when None
    # QAT fine-tuning (ptq does none)
    epochs: int = 3  # 0: calibration only, no fine-tuning
    lr: float = 1e-4  # peak AdamW learning rate, cosine-decayed to 0 (the FP32 runs train at 2e-3)
    weight_decay: float = 5e-4
    batch_size: int = 8
    crop_size: int | None = None  # None: the source run's training crop (whole image if it had none)
    max_steps_per_epoch: int | None = None  # for smoke tests
    # Calibration (activation scales: all of PTQ, QAT's starting point)
    calibration_images: int = 64  # from the training split
    # Mixed precision
    skip_layers: list[str] = field(default_factory=list)  # convolution names or block prefixes kept in FP32
    sensitivity: bool = False
    sensitivity_images: int = 32  # from the validation split
    skip_most_sensitive: int = 0  # with sensitivity: also keep the K most sensitive layers in FP32
    lite_x86_safe: bool = False  # also keep in FP32 what Paddle Lite's x86 INT8 kernels cannot run
    # Evaluation
    threads: int | None = None  # Paddle Inference CPU threads; None: OMP_NUM_THREADS, else every core
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        for name in ("epochs", "skip_most_sensitive"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "calibration_images", "sensitivity_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.skip_most_sensitive and not self.sensitivity:
            raise ValueError("skip_most_sensitive needs sensitivity (the ranking it picks from)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- layers and fake quantization


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


def _activation_observers(model: nn.Layer) -> list[nn.Layer]:
    """The layers that keep moving-average activation scales (inputs and outputs of quantized convs)."""
    from paddle.nn.quant.quant_layers import FakeQuantMovingAverageAbsMax, MovingAverageAbsMaxScale

    return [layer for layer in model.sublayers() if isinstance(layer, (FakeQuantMovingAverageAbsMax,
                                                                          MovingAverageAbsMaxScale))]


@paddle.no_grad()
def calibrate(model: YOLODetector, batches: Iterable[np.ndarray],
              percentile: float | None = CALIBRATION_PERCENTILE) -> int:
    """Set the activation scales of a ``quantize_model`` model from ``batches`` of input images.

    Each observed tensor's scale becomes the mean over the batches of the ``percentile``-th percentile
    of its absolute values: the rule of PaddleSlim's post-training ``hist`` algorithm, applied per
    batch. Clipping the rarest outliers keeps the 255 levels for the bulk of the values: PTQ of the
    DeepPCB student lost 1.3 points of mAP@0.5 this way, 3.1 with the moving abs-max that
    ``percentile=None`` keeps (the rule QAT's observers follow while training).

    Only the observers run in training mode (BatchNorm and everything else untouched); afterwards their
    running state is set so that training continues the average from the calibrated scale. Returns the
    number of images seen.
    """
    observers = _activation_observers(model)
    if not observers:
        raise ValueError("calibrate: the model has no activation observers; quantize it with quantize_model first")
    for observer in observers:  # restart the moving averages: the input observers start from 1.0
        observer._state.set_value(paddle.zeros_like(observer._state))
        observer._accum.set_value(paddle.zeros_like(observer._accum))
    model.eval()
    for observer in observers:
        observer.train()
    percentiles: dict[int, list[float]] = {id(observer): [] for observer in observers}

    def record(observer: nn.Layer, inputs: tuple[paddle.Tensor, ...]) -> None:
        values = np.abs(inputs[0].numpy()).ravel()
        rank = int(round(percentile / 100 * (len(values) - 1)))
        value = float(np.partition(values, rank)[rank])
        # A mostly-zero tensor (after a ReLU) can have a zero percentile: its abs-max is the scale then.
        percentiles[id(observer)].append(value if value > 0 else float(values.max()))

    hooks = [observer.register_forward_pre_hook(record) for observer in observers] if percentile else []
    seen = 0
    try:
        for images in batches:
            model(paddle.to_tensor(images))
            seen += len(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.eval()
    if seen == 0:
        raise ValueError("calibrate: no calibration images")
    if percentile:
        for observer in observers:
            scale = max(float(np.mean(percentiles[id(observer)])), 1e-8)
            observer._scale.set_value(paddle.full_like(observer._scale, scale))
            observer._state.set_value(paddle.ones_like(observer._state))
            observer._accum.set_value(paddle.full_like(observer._accum, scale))
    return seen


def finetune(model: YOLODetector, loader: BatchLoader, epochs: int, lr: float, weight_decay: float = 5e-4,
             max_steps_per_epoch: int | None = None, progress: bool = True) -> list[dict[str, float]]:
    """Quantization-aware fine-tuning: the detector's own loss through the fake-quant model.

    AdamW with a cosine decay from ``lr`` to 0; the activation observers keep updating their moving
    averages. ``quantize_model`` has folded the BatchNorms into the convolutions; any left (beside
    deformable convolutions) stay in eval mode: their statistics are the FP32 model's, and a few epochs
    of small batches would only add noise. Returns one row of mean losses per epoch.
    """
    steps = len(loader) if max_steps_per_epoch is None else min(len(loader), max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"{len(loader.dataset)} training images are fewer than one batch of {loader.batch_size}")
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=lr, T_max=max(1, epochs * steps))
    trainable = [p for p in model.parameters() if not p.stop_gradient]  # not the quantization scales
    optimizer = paddle.optimizer.AdamW(learning_rate=schedule, parameters=trainable,
                                       weight_decay=weight_decay, grad_clip=nn.ClipGradByGlobalNorm(10.0))
    history = []
    for epoch in range(epochs):
        model.train()
        for layer in model.sublayers():
            if isinstance(layer, (nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D)):
                layer.eval()
        loader.set_epoch(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(total=steps, desc=f"QAT epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress,
                   dynamic_ncols=True)
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            outputs = model(paddle.to_tensor(batch.images))
            losses = model.loss(outputs, paddle.to_tensor(batch.boxes), paddle.to_tensor(batch.classes))
            loss = losses["loss"]
            if not bool(paddle.isfinite(loss)):
                raise FloatingPointError(f"QAT epoch {epoch + 1} step {step}: loss is {float(loss)}; lower --lr")
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}")
            bar.update(1)
        bar.close()
        row = {"epoch": epoch + 1, **{f"train_{k}": v / steps for k, v in sums.items()}}
        log.info("QAT epoch %d: loss %.4f", epoch + 1, row["train_loss"])
        history.append(row)
    model.eval()
    return history


# --------------------------------------------------------------------------- saving and reading programs


def save_inference_model(model: nn.Layer, path_prefix: Path | str, input_size: int, in_channels: int) -> Path:
    """Save ``images -> (boxes, scores)`` as a legacy Paddle inference model: ``PREFIX.pdmodel`` / ``.pdiparams``.

    ``model`` is a ``YOLODetector`` (or its ``DecodedDetector``), FP32 or made by ``quantize_model``; a
    quantized one is saved through PaddleSlim, which turns its fake-quant layers into
    quantize_linear / dequantize_linear operators and stores the convolution weights as INT8.
    The input is fixed to ``[1, in_channels, input_size, input_size]``, what the runtime feeds.
    ``model`` itself is left unchanged (the trace runs on a wrapper). Returns the ``.pdmodel`` path.
    """
    detector = model.detector if isinstance(model, DecodedDetector) else model
    was_training = detector.training
    decoded = DecodedDetector(detector)  # to_static replaces the wrapper's forward, never the caller's
    decoded.eval()
    prefix = Path(path_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spec = [paddle.static.InputSpec([1, in_channels, input_size, input_size], "float32", INPUT_NAME)]
    try:
        with paddle.pir_utils.DygraphOldIrGuard():
            static = paddle.jit.to_static(decoded, input_spec=spec, full_graph=True)
            if is_quantized(detector):
                from paddleslim.dygraph.quant import QAT

                # input_spec=None: the trace above is reused; given a spec, PaddleSlim would trace again
                # in to_static's default (SOT) mode, which is slower.
                QAT(config=QAT_CONFIG).save_quantized_model(static, str(prefix), input_spec=None)
            else:
                paddle.jit.save(static, str(prefix))
    finally:
        detector.train(was_training)
    model_file = program_file(prefix)
    if not model_file.is_file():
        raise RuntimeError(f"{model_file}: Paddle reported no error but wrote no legacy program")
    return model_file


def program_file(path_prefix: Path | str) -> Path:
    """``PREFIX.pdmodel``: the program of the inference model saved at ``path_prefix``."""
    return Path(f"{path_prefix}.pdmodel")


def params_file(path_prefix: Path | str) -> Path:
    """``PREFIX.pdiparams``: its weights."""
    return Path(f"{path_prefix}.pdiparams")


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


# --------------------------------------------------------------------------- evaluation through Paddle Inference


@dataclass
class InferenceRuntime:
    """How a saved model actually ran in Paddle Inference (read back from the optimized program)."""

    backend: str  # "paddle-inference"
    precision: str  # "fp32" | "int8" (oneDNN INT8 kernels) | "int8-simulated" (quantized graph, FP32 kernels)
    threads: int
    int8_convolutions: int  # convolutions that oneDNN runs in INT8
    convolutions: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InferenceModel:
    """A saved inference model in a Paddle Inference predictor (oneDNN, batch 1).

    A quantized program runs one of two ways:

    - ``onednn_int8=False``: FP32 kernels execute its quantize / dequantize operators, i.e. exactly
      the INT8 model's rounding and clipping, with FP32 arithmetic in between ("int8-simulated");
    - ``onednn_int8=True``: oneDNN's INT8 kernels (``enable_onednn_int8``). If the predictor cannot be
      built that way, the simulated run is used and ``runtime.note`` says so.

    The optimized program is saved once and inspected, so ``runtime`` reports what Paddle really
    chose, e.g. how many convolutions run in INT8.
    """

    def __init__(self, path_prefix: Path | str, onednn_int8: bool = False, threads: int | None = None) -> None:
        self.path_prefix = Path(path_prefix)
        self.threads = threads or default_threads()
        note = ""
        try:
            self.predictor, optimized = self._create(onednn_int8)
        except Exception as error:  # oneDNN refuses some graphs only when the predictor is built
            if not onednn_int8:
                raise
            note = f"oneDNN INT8 could not build this model ({type(error).__name__}: {str(error)[:200]})"
            log.warning("%s: %s; running the quantized graph on FP32 kernels", self.path_prefix, note)
            self.predictor, optimized = self._create(onednn_int8=False)
        convs = [op for op in optimized.ops if op.type in QUANTIZABLE_OPS or op.type == "fused_conv2d"]
        int8_convs = [op for op in convs if _op_attr(op, "mkldnn_data_type") == "int8"]
        quantized_graph = describe_program(program_file(self.path_prefix)).quantized
        precision = "int8" if int8_convs else ("int8-simulated" if quantized_graph else "fp32")
        self.runtime = InferenceRuntime("paddle-inference", precision, self.threads, len(int8_convs), len(convs),
                                        note)
        self._input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self._outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]

    def _create(self, onednn_int8: bool):
        from paddle import inference
        from paddle.base.proto import framework_pb2

        with tempfile.TemporaryDirectory(prefix="paddle-optim-") as optim_dir:
            config = inference.Config(str(program_file(self.path_prefix)), str(params_file(self.path_prefix)))
            config.disable_gpu()
            config.disable_glog_info()
            config.set_cpu_math_library_num_threads(self.threads)
            config.enable_onednn()
            if onednn_int8:
                config.enable_onednn_int8()
            config.enable_save_optim_model(True)  # to read back what the passes made of the graph
            config.set_optim_cache_dir(optim_dir)
            predictor = inference.create_predictor(config)
            optimized = framework_pb2.ProgramDesc.FromString((Path(optim_dir) / "_optimized.pdmodel").read_bytes())
        return predictor, optimized.blocks[0]

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        """The outputs for one input (1, C, S, S): ``[boxes (1, K, 4), scores (1, K, C)]`` for a detector."""
        self._input.copy_from_cpu(np.ascontiguousarray(image, dtype=np.float32))
        self.predictor.run()
        return [handle.copy_to_cpu() for handle in self._outputs]


def default_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


def _op_attr(op, name: str) -> Any:
    for attr in op.attrs:
        if attr.name == name:
            return attr.s
    return None


def evaluate_inference_model(model: InferenceModel, loader: BatchLoader, class_names: list[str],
                             progress: bool = True) -> EvalResult:
    """COCO mAP and the DeepPCB F-score of a saved model on the loader's dataset (evaluation mode).

    Post-processing is the training validation's: ``select_detections`` at the same thresholds, boxes
    mapped back to original pixels with ``unletterbox_boxes``.
    """
    if loader.train:
        raise ValueError("evaluate_inference_model needs an evaluation loader (train=False)")
    detections: dict[str, ImageDetections] = {}
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        for image, key, scale, pad in zip(batch.images, batch.keys, batch.scales, batch.pads):
            boxes, scores = model(image[None])
            kept_boxes, kept_scores, kept_classes = select_detections(
                boxes[0], scores[0], EVAL_SCORE_THRESHOLD, EVAL_NMS_THRESHOLD, EVAL_MAX_DETECTIONS)
            original_boxes = unletterbox_boxes(kept_boxes, float(scale), (float(pad[0]), float(pad[1])))
            detections[key] = ImageDetections(original_boxes, kept_scores, kept_classes)
    samples = loader.dataset.samples
    return evaluate([ImageGT(s.boxes, s.classes) for s in samples], [detections[s.key] for s in samples], class_names)


# --------------------------------------------------------------------------- the command


def quantize(cfg: QuantizeConfig, progress: bool = True) -> Path:
    """Run ``inspector quantize`` (see the module docstring); returns the run directory.

    The run is assembled in ``OUT.partial`` and renamed to ``OUT`` when complete, so a failure leaves
    no half run where export would find it (``OUT.partial/quantize.log`` says what happened).
    """
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out (nothing was overwritten)")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    handler = logging.FileHandler(staging / "quantize.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("inspector")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        _quantize_into(staging, cfg, progress)
    finally:
        logger.removeHandler(handler)
        handler.close()
    if out.exists():
        out.rmdir()  # empty, checked above
    staging.rename(out)
    log.info("done: %s", out)
    return out


def _quantize_into(staging: Path, cfg: QuantizeConfig, progress: bool) -> None:
    """The steps of ``quantize``, writing the run's files into ``staging``."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    source = load_checkpoint(Path(cfg.model))
    model_config = source.model_config
    train_set, val_set, split_file = _source_split(source, cfg)
    shutil.copyfile(split_file, staging / "split.json")
    log.info("source %s (%s, input %d, %s): %d train / %d val images", source.path, model_config.arch,
             model_config.input_size, model_config.input_mode, len(train_set), len(val_set))
    # Folded like the quantized models (the same function): the sensitivity scan swaps quantized layers
    # into it, so its FP32 reference has the INT8 model's graph, BatchNorm for BatchNorm. (The FP32 model
    # saved to fp32/ is built again unfolded: see below.)
    fp32_model = fuse_batch_norms(source.build())
    skip_layers = resolve_layer_names(fp32_model, cfg.skip_layers + (lite_x86_fp32_layers(fp32_model)
                                                                      if cfg.lite_x86_safe else []))
    calibration_set = _sample(train_set, cfg.calibration_images, cfg.seed)

    if cfg.sensitivity:
        tick = time.perf_counter()
        report = _sensitivity(source, fp32_model, calibration_set, val_set, cfg, progress)
        report.save(staging / "sensitivity.json")
        skip_layers = resolve_layer_names(fp32_model, skip_layers + report.most_sensitive(cfg.skip_most_sensitive))
        timings["sensitivity_s"] = round(time.perf_counter() - tick, 1)
        log.info("sensitivity: most sensitive %s", ", ".join(report.most_sensitive(5)) or "none")
    if skip_layers:
        log.info("kept in FP32: %s", ", ".join(skip_layers))

    tick = time.perf_counter()
    fp32_prefix = staging / FP32_DIR / MODEL_PREFIX
    # Saved with its BatchNorms, not folded: the same function, and Paddle Lite / oneDNN fuse conv + BatchNorm
    # (+ activation) themselves, while a folded bias is saved as reshape2 + elementwise_add after each convolution,
    # which Lite x86 leaves unfused (52 extra op pairs on the DeepPCB student; its x86 .nb, converted from this
    # model, ran p50 22-26 ms where the unfolded one ran 17-22 ms, 2 threads, alternating runs).
    save_inference_model(source.build(), fp32_prefix, model_config.input_size, model_config.in_channels)
    timings["save_fp32_s"] = round(time.perf_counter() - tick, 1)

    int8_prefix = staging / MODEL_PREFIX
    saved_model, history = _quantize_and_save(source, skip_layers, calibration_set, train_set, int8_prefix, cfg,
                                              timings, progress)

    summary = describe_program(program_file(int8_prefix))
    if not summary.quantized:
        raise RuntimeError(f"{program_file(int8_prefix)}: no convolution was quantized")
    precisions = layer_precisions(saved_model, summary)
    kept_fp32 = [name for name, precision in precisions.items() if precision == "fp32"]
    if kept_fp32 != skip_layers:
        log.warning("the saved program keeps %s in FP32; asked for %s", kept_fp32, skip_layers)

    tick = time.perf_counter()
    results = {name: _evaluate_saved(prefix, onednn_int8, val_set, source, cfg, progress)
               for name, prefix, onednn_int8 in (("fp32", fp32_prefix, False), ("int8", int8_prefix, False),
                                                 ("int8_onednn", int8_prefix, True))}
    timings["evaluate_s"] = round(time.perf_counter() - tick, 1)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    drop = {key: results["fp32"][key] - results["int8"][key]
            for key in ("official_ap", "official_f", "map50", "map50_95", "f1_iou033")}
    drop_onednn = {key: results["fp32"][key] - results["int8_onednn"][key] for key in drop}
    if drop_onednn["map50"] > drop["map50"] + 0.02:
        log.warning("oneDNN's INT8 kernels lose %.4f mAP@0.5 on this CPU where the quantized model itself loses "
                    "%.4f: do not deploy with Paddle Inference INT8 here", drop_onednn["map50"], drop["map50"])

    _write_json(staging / "metrics.json", {
        "method": cfg.method, "split": "val", "n_images": len(val_set), **results, "drop": drop,
        "drop_onednn": drop_onednn, "qat_history": history, "timings": timings})
    _write_json(staging / "quant_config.json", {
        "config": cfg.to_dict(), "source_checkpoint": str(source.path),
        "scheme": {**QAT_CONFIG, "calibration_percentile": CALIBRATION_PERCENTILE},
        "calibration_images": [s.key for s in calibration_set.samples], "skip_layers": skip_layers,
        "int8_layers": len(precisions) - len(kept_fp32), "fp32_layers": len(kept_fp32), "layers": precisions,
        "program_ops": summary.op_counts})
    # What ``inspector export --model OUT`` reads to describe the INT8 model.pdmodel beside it.
    _write_json(staging / "checkpoint.json", {
        "model_config": model_config.to_dict(), "class_names": list(source.class_names),
        "kind": "quantized inference model (model.pdmodel / model.pdiparams); no dygraph weights",
        "metrics": {k: v for k, v in results["int8"].items() if k not in ("runtime", "model_bytes")},
        "quantization": {"method": cfg.method, "source_checkpoint": str(source.path), "drop": drop}})
    for label, values in (("INT8 drop (quantized graph, simulated on FP32 kernels)", drop),
                          ("INT8 drop (oneDNN INT8 kernels, what Paddle Inference runs)", drop_onednn)):
        log.info("%s: official AP %.4f  F %.4f  mAP@0.5 %.4f  mAP@0.5:0.95 %.4f  F(IoU>0.33) %.4f", label,
                 values["official_ap"], values["official_f"], values["map50"], values["map50_95"], values["f1_iou033"])


def _sensitivity(source: Checkpoint, fp32_model: YOLODetector, calibration_set: Dataset, val_set: Dataset,
                 cfg: QuantizeConfig, progress: bool):
    """Rank every convolution by the mAP its quantization alone costs, on the first validation images."""
    from inspector.compression.sensitivity import layer_sensitivity

    model_config = source.model_config
    quantized = quantize_model(source.build())
    calibrate(quantized, _images(calibration_set, cfg, model_config))
    subset = val_set.subset([s.key for s in val_set.samples[: cfg.sensitivity_images]])
    loader = BatchLoader(subset, cfg.batch_size, model_config.input_size, model_config.input_mode,
                         workers=cfg.workers)
    return layer_sensitivity(fp32_model, quantized, loader, source.class_names, progress=progress)


def _quantize_and_save(source: Checkpoint, skip_layers: list[str], calibration_set: Dataset, train_set: Dataset,
                       int8_prefix: Path, cfg: QuantizeConfig, timings: dict[str, float],
                       progress: bool) -> tuple[YOLODetector, list[dict]]:
    """Quantize and calibrate (PTQ), fine-tune too (QAT), save; returns the saved model and epoch losses."""
    model_config = source.model_config
    tick = time.perf_counter()
    quantized = quantize_model(source.build(), skip_layers)
    calibrate(quantized, _images(calibration_set, cfg, model_config))
    timings["calibrate_s"] = round(time.perf_counter() - tick, 1)
    history: list[dict] = []
    if cfg.method == "qat" and cfg.epochs:
        crop_size = cfg.crop_size if cfg.crop_size is not None else \
            source.info.get("train_config", {}).get("crop_size")
        loader = BatchLoader(train_set, cfg.batch_size, model_config.input_size, model_config.input_mode,
                             train=True, seed=cfg.seed, crop_size=crop_size or None, workers=cfg.workers)
        tick = time.perf_counter()
        history = finetune(quantized, loader, cfg.epochs, cfg.lr, cfg.weight_decay, cfg.max_steps_per_epoch,
                           progress)
        timings["finetune_s"] = round(time.perf_counter() - tick, 1)
    tick = time.perf_counter()
    save_inference_model(quantized, int8_prefix, model_config.input_size, model_config.in_channels)
    timings["save_int8_s"] = round(time.perf_counter() - tick, 1)
    return quantized, history


def _evaluate_saved(prefix: Path, onednn_int8: bool, dataset: Dataset, source: Checkpoint, cfg: QuantizeConfig,
                    progress: bool) -> dict[str, Any]:
    """Accuracy of the saved model at ``prefix`` through Paddle Inference, with what ran and its size."""
    engine = InferenceModel(prefix, onednn_int8=onednn_int8, threads=cfg.threads)
    loader = BatchLoader(dataset, cfg.batch_size, source.model_config.input_size, source.model_config.input_mode,
                         workers=cfg.workers)
    result = evaluate_inference_model(engine, loader, source.class_names, progress)
    log.info("%s (%s): official AP %.4f  F %.4f  mAP@0.5 %.4f  mAP@0.5:0.95 %.4f  F(IoU>0.33) %.4f",
             program_file(prefix).name, engine.runtime.precision, result.official_ap, result.official_f, result.map50,
             result.map50_95, result.f1_iou033)
    return {**result.to_dict(), "runtime": engine.runtime.to_dict(), "model_bytes": _model_bytes(prefix)}


def _source_split(source: Checkpoint, cfg: QuantizeConfig) -> tuple[Dataset, Dataset, Path]:
    """The source run's own train/val split of ``cfg.data`` (the FP32 numbers were measured on it)."""
    split_file = source.path.parent / "split.json"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: missing; quantization reuses the source run's train/val split so "
                                "that FP32 and INT8 are compared on images neither was trained on")
    dataset = load_dataset(cfg.data, format=cfg.format)
    for problem in dataset.problems:
        log.warning("%s", problem)
    if dataset.class_names != source.class_names:
        raise ValueError(f"{cfg.data} has classes {dataset.class_names}, the model {source.class_names}")
    train_set, val_set = split_dataset(dataset, split_file=split_file)
    if len(val_set) == 0:
        raise ValueError(f"{split_file}: the validation split is empty; nothing to measure the drop on")
    return train_set, val_set, split_file


def _sample(dataset: Dataset, count: int, seed: int) -> Dataset:
    """Up to ``count`` samples of ``dataset``, drawn with ``seed`` (kept in dataset order)."""
    order = np.random.default_rng(seed).permutation(len(dataset))[:count]
    return dataset.subset([dataset.samples[int(i)].key for i in order])


def _images(dataset: Dataset, cfg: QuantizeConfig, model_config: ModelConfig,
            batch_size: int | None = None) -> Iterator[np.ndarray]:
    """Whole letterboxed input images of ``dataset`` (no augmentation), in batches."""
    loader = BatchLoader(dataset, batch_size or cfg.batch_size, model_config.input_size, model_config.input_mode,
                         workers=cfg.workers)
    return (batch.images for batch in loader)


def _model_bytes(prefix: Path) -> int:
    return program_file(prefix).stat().st_size + params_file(prefix).stat().st_size


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
