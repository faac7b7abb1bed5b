"""Per-layer quantization sensitivity: which convolutions cost the most accuracy in INT8.

One layer at a time: the FP32 model with exactly one convolution swapped for its calibrated fake-quant
version (``layers.quantize_model`` + ``calibrate.calibrate``) is evaluated on a validation subset, and
the layer's sensitivity is the mAP it loses against the FP32 model on the same images. The fully
quantized model is evaluated too, for scale. Layers are ranked by the mAP@0.5:0.95 drop (box precision
shows quantization error first), then by the mAP@0.5 drop.

The drops are paired differences on the same images, so they rank layers even on a small subset; a
drop near zero (or negative) means "no measurable cost". Keeping the top-ranked layers in FP32
(``inspector quantize --skip-layers`` / ``--skip-most-sensitive K``) is the mixed-precision remedy.
The evaluation is the dygraph fake-quant simulation, which tracks the exported INT8 model closely but
is not the deployed runtime; the deployed accuracy is measured separately (``metrics.json``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paddle.nn as nn
from paddle.nn.quant.quant_layers import QuantizedConv2D
from tqdm import tqdm

from inspector.compression.quantization.layers import convolutions
from inspector.data.loader import BatchLoader
from inspector.evaluation import EVAL_THRESHOLDS, EvalResult, EvalThresholds
from inspector.training.validate import validate


@dataclass
class LayerSensitivity:
    """The accuracy of the FP32 model with only ``name`` quantized, and what it lost."""

    name: str
    weights: int  # number of weight values of the convolution
    map50: float
    map50_95: float
    drop_map50: float  # FP32 minus this; positive = quantizing the layer costs accuracy
    drop_map50_95: float


@dataclass
class SensitivityReport:
    n_images: int
    fp32: dict[str, float]  # map50, map50_95 of the FP32 model on the subset
    all_int8: dict[str, float]  # every convolution quantized
    layers: list[LayerSensitivity]  # most sensitive first

    def most_sensitive(self, count: int) -> list[str]:
        """Names of the ``count`` layers with the largest drop (only layers that lose anything at all)."""
        costly = [layer for layer in self.layers if layer.drop_map50_95 > 0 or layer.drop_map50 > 0]
        return [layer.name for layer in costly[:count]]

    def to_dict(self) -> dict[str, Any]:
        return {"method": "one layer quantized at a time (dygraph fake-quant), drop vs FP32 on the same images",
                "ranking": "drop of mAP@0.5:0.95, then of mAP@0.5", "n_images": self.n_images,
                "fp32": self.fp32, "all_int8": self.all_int8, "layers": [asdict(layer) for layer in self.layers]}

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> "SensitivityReport":
        data = json.loads(Path(path).read_text())
        return cls(data["n_images"], data["fp32"], data["all_int8"],
                   [LayerSensitivity(**layer) for layer in data["layers"]])


def layer_sensitivity(fp32_model: nn.Layer, quantized_model: nn.Layer, loader: BatchLoader,
                      class_names: list[str], layer_names: list[str] | None = None,
                      progress: bool = True, thresholds: EvalThresholds = EVAL_THRESHOLDS) -> SensitivityReport:
    """Rank ``layer_names`` (default: every convolution quantized in ``quantized_model``) by mAP drop.

    ``quantized_model`` is a calibrated ``quantize_model`` copy of ``fp32_model`` (same weights), and
    ``fp32_model`` has had its BatchNorms folded like it (``fuse_batch_norms``): a quantized layer
    includes its BatchNorm. Its layers are lent to ``fp32_model`` one at a time and always given back,
    so both models end as they started. ``loader`` is an evaluation loader over the subset to measure on.
    """
    if any(isinstance(layer, nn.BatchNorm2D) for layer in fp32_model.sublayers()) != \
            any(isinstance(layer, nn.BatchNorm2D) for layer in quantized_model.sublayers()):
        raise ValueError("layer_sensitivity: fold the FP32 model's BatchNorms (fuse_batch_norms) like the "
                         "quantized model's, or each swapped layer would apply its BatchNorm twice")
    fp32_layers = dict(fp32_model.named_sublayers())
    quantized_layers = dict(quantized_model.named_sublayers())
    quantized_convs = [name for name, conv in convolutions(quantized_model).items()
                       if isinstance(conv, QuantizedConv2D)]
    if layer_names is None:
        layer_names = quantized_convs
    missing = [name for name in layer_names if name not in quantized_convs or name not in fp32_layers]
    if missing:
        raise ValueError(f"layer_sensitivity: {missing[:3]} are not quantized convolutions of both models")

    fp32 = _scores(validate(fp32_model, loader, class_names, progress=False, thresholds=thresholds))
    all_int8 = _scores(validate(quantized_model, loader, class_names, progress=False, thresholds=thresholds))
    results = []
    for name in tqdm(layer_names, desc="sensitivity", unit="layer", disable=not progress):
        original = fp32_layers[name]
        _replace_sublayer(fp32_model, name, quantized_layers[name])
        try:
            scores = _scores(validate(fp32_model, loader, class_names, progress=False, thresholds=thresholds))
        finally:
            _replace_sublayer(fp32_model, name, original)
        results.append(LayerSensitivity(name, int(np.prod(original.weight.shape)), scores["map50"],
                                        scores["map50_95"], fp32["map50"] - scores["map50"],
                                        fp32["map50_95"] - scores["map50_95"]))
    results.sort(key=lambda layer: (-layer.drop_map50_95, -layer.drop_map50))
    return SensitivityReport(len(loader.dataset), fp32, all_int8, results)


def _replace_sublayer(model: nn.Layer, name: str, layer: nn.Layer) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = dict(model.named_sublayers())[parent_name] if parent_name else model
    setattr(parent, child, layer)


def _scores(result: EvalResult) -> dict[str, float]:
    return {"map50": result.map50, "map50_95": result.map50_95}
