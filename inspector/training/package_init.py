"""A trainable checkpoint recovered from a shipped model package: ``inspector train --init PACKAGE``.

A package keeps no training checkpoint, only its inference graph: convolutions with BatchNorm folded
into their weights and biases, INT8 weights plus per-channel scales after QAT. When the run that made
it is gone, fine-tuning (new boards, a new input layout) has to start from what shipped. Three steps,
each preserving the function the package computes:

1. **Weights.** Every convolution of the graph, in execution order, is paired with the model's
   (built from the manifest's ``model`` section) in forward order; INT8 weights are dequantized
   (``int8 * scale / 127``, per output channel) and the folded bias is read from the add that follows.
2. **Input layout** (optional). ``image+template`` (RGB test and template at S) becomes
   ``gray-diff-s2d`` (grey test, grey template and their difference at 2S, packed 2x2 into depth):
   at S each RGB plane of a grey board is the 2x2 mean of the 2S pixels (INTER_AREA halves exactly),
   so the stem's weight for a sub-pixel of the grey test plane is a quarter of the sum of its three
   test RGB weights, likewise for the template, and zero for the difference planes. The network
   starts by computing what shipped and learns to use the extra pixels and the difference.
   ``gray-diff-s2d`` becomes ``gray-frame-diff-s2d`` (its template plane left out): on a binarised board,
   frame f, template t and difference d in {0, 1} satisfy t = f - d + 2(1 - f)d, so the template's weight
   is added to the frame's and subtracted from the difference's. That is exact but where the frame is dark
   and the template bright (f = 0, d = 1: on DeepPCB's dark copper over a bright substrate, extra copper:
   short, spur, copper), which the fine-tuning then learns; missing copper (open, mousebite, pin-hole, the
   thin-trace classes) keeps what shipped. No linear stem does better on real boards (JPEG edges, both
   kinds of defect): models/default converted so scored official AP 0.31 on the validation split (from
   0.89), 0.76 after 4 epochs of fine-tuning; the least-squares stem (the template planes' contribution
   predicted from the frame and difference patches over 64 training boards) had a third of the error's
   mean square but spread it over every edge, and scored 0.04. ``image+template`` becomes
   ``gray-frame-diff-s2d`` by the two steps in turn. ``gray-diff-s2d`` becomes ``gray-frame-template-s2d`` by
   dropping the difference's weights: exact wherever frame and template agree, and the trained stem leans on the
   difference least of its three planes (``layouts`` says how much): models/default so converted scored official
   AP 0.78 on the validation split before fine-tuning.
3. **BatchNorm unfolding.** A folded layer is conv' + b; training needs conv -> BN, and in train mode
   BN normalises with the batch's statistics. The pre-BN mean and variance of every channel are
   measured on training boards, then running statistics = those, gamma = sqrt(var + eps) and
   beta = b + mean: eval mode is then exactly conv' + b, and train mode is too, up to how far a
   batch's statistics stray from the measured ones.

The checkpoint is written to the run's ``init-from-package/`` and recorded in its provenance.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import paddle

from inspector.data.layouts import InputLayout, input_layout
from inspector.data.loader import BatchLoader
from inspector.data.structures import Dataset
from inspector.models import ModelConfig, build_model
from inspector.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PACKAGE_INIT_DIR = "init-from-package"  # in the run directory
STEM_CONVERSIONS = {("image+template", "gray-diff-s2d"), ("image+template", "gray-frame-diff-s2d"),
                    ("gray-diff-s2d", "gray-frame-diff-s2d"), ("image+template", "gray-frame-template-s2d"),
                    ("gray-diff-s2d", "gray-frame-template-s2d")}


def is_package(path: Path | str) -> bool:
    return (Path(path) / MANIFEST).is_file()


def checkpoint_from_package(package: Path | str, out: Path | str, calibration: Dataset, input_mode: str | None = None,
                            calibration_images: int = 64, batch_size: int = 8) -> Checkpoint:
    """Recover ``package``'s network as a checkpoint in ``out`` (see the module docstring), converted to
    ``input_mode`` when given, with BatchNorm statistics measured on the first ``calibration_images`` of
    ``calibration`` (whole boards, no augmentation)."""
    package, out = Path(package), Path(out)
    manifest = _read_manifest(package)
    source = f"{package / MANIFEST}"
    config = ModelConfig.from_dict(dict(manifest["model"]), source=f"{source} (model)")
    class_names = list(manifest["class_names"])
    model = build_model(config)
    graph_convs = _graph_convolutions(package, manifest)
    folded = _load_folded(model, config, graph_convs, source)
    if input_mode and input_mode != config.input_mode:
        if (config.input_mode, input_mode) not in STEM_CONVERSIONS:
            raise ValueError(f"{source}: cannot convert input layout {config.input_mode!r} to {input_mode!r}; "
                             f"this version converts {', '.join(f'{a} -> {b}' for a, b in sorted(STEM_CONVERSIONS))}")
        config = ModelConfig.from_dict({**config.to_dict(), "input_mode": input_mode}, source=f"{source} (model)")
        converted = build_model(config)
        _convert_stem(model, converted, manifest["model"]["input_mode"], input_mode)
        model = converted
    _unfold_batch_norms(model, config, folded, calibration, calibration_images, batch_size)
    info = {"epoch": None, "init_from_package": {"package": str(package), "name": manifest.get("name"),
                                                   "input_mode": manifest["model"].get("input_mode"),
                                                   "calibration_images": min(calibration_images, len(calibration))}}
    save_checkpoint(out, model.state_dict(), config, class_names, info)
    log.info("recovered a trainable checkpoint from package %s into %s", package, out)
    return load_checkpoint(out)


def _read_manifest(package: Path) -> dict:
    path = package / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable package manifest ({error})") from error
    for key in ("model", "class_names", "targets"):
        if key not in manifest:
            raise ValueError(f"{path}: field {key!r} missing; a package made by `inspector export` or the "
                             "pipeline has it")
    if "paddle" not in manifest["targets"]:
        raise ValueError(f"{path}: targets.paddle missing; recovering weights needs the Paddle inference model")
    return manifest


class _GraphConv:
    """One convolution of the inference graph: float weight (dequantized if INT8), and either the bias added
    after it (BatchNorm folded in, or a plain conv bias) or the BatchNorm that follows it (an FP32 export)."""

    def __init__(self, name: str, weight: np.ndarray, bias: np.ndarray | None = None,
                 batch_norm: dict[str, np.ndarray] | None = None) -> None:
        self.name, self.weight, self.bias, self.batch_norm = name, weight, bias, batch_norm


def _graph_convolutions(package: Path, manifest: dict) -> list[_GraphConv]:
    model_file = next(f for f in manifest["targets"]["paddle"] if f.endswith(".pdmodel"))
    prefix = str(package / model_file[: -len(".pdmodel")])
    # A package's .pdmodel is a legacy program (what Paddle Lite reads): PIR off while reading it, as for saving.
    with paddle.pir_utils.OldIrGuard():
        return _read_graph_convolutions(prefix)


def _read_graph_convolutions(prefix: str) -> list[_GraphConv]:
    paddle.enable_static()
    try:
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            program, _, _ = paddle.static.load_inference_model(prefix, paddle.static.Executor(paddle.CPUPlace()))
        block = program.global_block()

        def value(name: str) -> np.ndarray:
            return np.array(scope.find_var(name).get_tensor())

        producer, consumers = {}, {}
        for op in block.ops:
            for name in op.output_arg_names:
                producer[name] = op
            for name in op.input_arg_names:
                consumers.setdefault(name, []).append(op)
        convs = []
        for op in block.ops:
            if op.type not in ("conv2d", "depthwise_conv2d"):
                continue
            weight_name = op.input("Filter")[0]
            dequantize = producer.get(weight_name)
            if dequantize is None:  # layers QAT skipped (the prediction convs) keep float weights
                weight = value(weight_name).astype(np.float32)
            elif dequantize.type == "dequantize_linear":
                quantized = value(dequantize.input("X")[0]).astype(np.float32)
                scale = value(dequantize.input("Scale")[0]).astype(np.float32)
                shape = [1] * quantized.ndim
                shape[dequantize.attr("quant_axis")] = -1
                weight = quantized * scale.reshape(shape) / (2 ** (dequantize.attr("bit_length") - 1) - 1)
            else:
                raise ValueError(f"{prefix}.pdmodel: the weight of {op.type} comes from {dequantize.type!r}, "
                                 "expected a parameter or dequantize_linear")
            bias, batch_norm = None, None
            for after in consumers.get(op.output("Output")[0], []):
                if after.type == "batch_norm":
                    batch_norm = {key: value(after.input(key)[0]).astype(np.float32)
                                  for key in ("Scale", "Bias", "Mean", "Variance")}
                    batch_norm["epsilon"] = np.float32(after.attr("epsilon"))
                if after.type != "elementwise_add":
                    continue
                name = after.input("Y")[0]
                if name in producer and producer[name].type == "reshape2":
                    name = producer[name].input("X")[0]
                if block.has_var(name) and block.var(name).persistable:
                    bias = value(name).astype(np.float32)
            convs.append(_GraphConv(weight_name, weight, bias, batch_norm))
        return convs
    finally:
        paddle.disable_static()


def _conv_order(model: paddle.nn.Layer, config: ModelConfig) -> list[str]:
    """Structured names of the model's Conv2D layers in the order a forward pass runs them."""
    order: list[str] = []
    hooks = [layer.register_forward_post_hook(lambda _layer, _inputs, _output, name=name: order.append(name))
             for name, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Conv2D)]
    model.eval()
    with paddle.no_grad():
        model(paddle.zeros([1, config.in_channels, config.input_size, config.input_size]))
    for hook in hooks:
        hook.remove()
    return order


def _load_folded(model: paddle.nn.Layer, config: ModelConfig, graph: list[_GraphConv],
                 source: str) -> dict[str, np.ndarray]:
    """Put the graph's weights into ``model``; returns {BatchNorm layer name: folded bias} for the
    convolutions followed by a BatchNorm (left as the identity until ``_unfold_batch_norms``)."""
    order = _conv_order(model, config)
    if len(order) != len(graph):
        raise ValueError(f"{source}: the inference graph has {len(graph)} convolutions, the model its manifest "
                         f"describes runs {len(order)}")
    layers = dict(model.named_sublayers())
    folded = {}
    for name, conv in zip(order, graph):
        layer = layers[name]
        if list(layer.weight.shape) != list(conv.weight.shape):
            raise ValueError(f"{source}: graph weight {conv.name} has shape {list(conv.weight.shape)}, the model's "
                             f"{name} {list(layer.weight.shape)}")
        layer.weight.set_value(conv.weight)
        parent_name = name.rpartition(".")[0]
        parent = layers.get(parent_name)
        bn = parent.bn if name.endswith(".conv") and isinstance(getattr(parent, "bn", None), paddle.nn.BatchNorm2D) \
            else None
        if bn is not None and conv.batch_norm is not None:  # an FP32 export keeps its BatchNorms as they trained
            bn.weight.set_value(conv.batch_norm["Scale"])
            bn.bias.set_value(conv.batch_norm["Bias"])
            bn._mean.set_value(conv.batch_norm["Mean"])
            bn._variance.set_value(conv.batch_norm["Variance"])
            continue
        if conv.bias is None:
            raise ValueError(f"{source}: no bias or BatchNorm found after graph convolution {conv.name}")
        if bn is not None:
            channels = conv.bias.shape[0]
            bn.weight.set_value(np.ones(channels, np.float32))
            bn.bias.set_value(conv.bias)
            bn._mean.set_value(np.zeros(channels, np.float32))
            bn._variance.set_value(np.full(channels, 1.0 - bn._epsilon, np.float32))
            folded[f"{parent_name}.bn"] = conv.bias
        else:
            layer.bias.set_value(conv.bias)
    return folded


def _convert_stem(source: paddle.nn.Layer, target: paddle.nn.Layer, source_mode: str, target_mode: str) -> None:
    """Copy every weight of ``source`` into ``target``; the stem (the only differently shaped weight) as the
    module docstring derives for the pair of input modes."""
    target_state = target.state_dict()
    converted = {}
    for name, value in source.state_dict().items():
        if list(value.shape) == list(target_state[name].shape):
            converted[name] = value
            continue
        weight = value.numpy()
        source_layout, target_layout = input_layout(source_mode), input_layout(target_mode)
        if weight.ndim != 4 or weight.shape[1] != source_layout.channels or \
                target_state[name].shape[1] != target_layout.channels:
            raise ValueError(f"{name}: cannot convert a weight of shape {list(weight.shape)} to "
                             f"{list(target_state[name].shape)}")
        stem = np.zeros(list(target_state[name].shape), np.float32)
        planes = _grey_plane_weights(weight, source_layout, target_layout)
        for plane, channels in _plane_channels(target_layout).items():
            stem[:, channels] = planes[plane]
        converted[name] = paddle.to_tensor(stem)
    target.set_state_dict(converted)


def _grey_plane_weights(weight: np.ndarray, source: InputLayout, target: InputLayout) -> dict[str, np.ndarray]:
    """The stem weight ``weight`` (out, source channels, k, k) as the weights of ``target``'s grey planes, each
    (out, block**2, k, k): one per sub-pixel of the 2x2 packing (module docstring, step 2)."""
    if source.color == "RGB":  # image+template: test R, G, B, template R, G, B
        # each sub-pixel of a grey plane: a quarter of its image's three RGB weights; the difference starts at zero,
        # so the converted network computes what shipped
        sub_pixels = target.block * target.block
        frame, template = (np.repeat(weight[:, rgb].sum(axis=1, keepdims=True) / sub_pixels, sub_pixels, axis=1)
                           for rgb in (slice(0, 3), slice(3, 6)))
        planes = {"frame": frame, "template": template, "difference": np.zeros_like(frame)}
    else:
        planes = {plane: weight[:, channels] for plane, channels in _plane_channels(source).items()}
    if "template" in planes and "template" not in target.gray_planes:  # t ~ f - d on a binarised board
        planes = {**planes, "frame": planes["frame"] + planes["template"],
                  "difference": planes["difference"] - planes["template"]}
    return {plane: planes[plane] for plane in target.gray_planes}  # a plane the target lacks is dropped


def _plane_channels(layout: InputLayout) -> dict[str, slice]:
    """The channels each grey plane of a space-to-depth layout occupies (``layouts``: plane-major)."""
    per_plane = layout.block * layout.block
    return {name: slice(index * per_plane, (index + 1) * per_plane) for index, name in enumerate(layout.gray_planes)}


def _unfold_batch_norms(model: paddle.nn.Layer, config: ModelConfig, folded: dict[str, np.ndarray],
                        calibration: Dataset, images: int, batch_size: int) -> None:
    """Measure each folded layer's pre-BN statistics (BNs still the identity, so the network is the
    package's) and turn them into BN parameters that keep the function (module docstring, step 3)."""
    if not folded:
        return
    layers = dict(model.named_sublayers())
    sums = {name: 0.0 for name in folded}
    squares = {name: 0.0 for name in folded}
    counts = dict.fromkeys(folded, 0)

    def measure(layer, inputs, name):
        x = inputs[0].astype("float64")
        sums[name] = sums[name] + x.sum(axis=[0, 2, 3]).numpy()
        squares[name] = squares[name] + (x * x).sum(axis=[0, 2, 3]).numpy()
        counts[name] += int(x.shape[0] * x.shape[2] * x.shape[3])

    hooks = [layers[name].register_forward_pre_hook(lambda layer, inputs, name=name: measure(layer, inputs, name))
             for name in folded]
    subset = calibration.subset([sample.key for sample in calibration.samples[:images]])
    loader = BatchLoader(subset, batch_size, config.input_size, config.input_mode, train=False, workers=0, cache=False)
    model.eval()
    with paddle.no_grad():
        for batch in loader:
            model(paddle.to_tensor(batch.images))
    for hook in hooks:
        hook.remove()
    for name, bias in folded.items():
        bn = layers[name]
        mean = sums[name] / counts[name]
        variance = np.maximum(squares[name] / counts[name] - mean * mean, 0.0)
        bn._mean.set_value(mean.astype(np.float32))
        bn._variance.set_value(variance.astype(np.float32))
        bn.weight.set_value(np.sqrt(variance + bn._epsilon).astype(np.float32))
        bn.bias.set_value((bias + mean).astype(np.float32))
