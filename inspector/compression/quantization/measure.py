"""Measuring a saved FP32 / INT8 program: its accuracy through Paddle Inference, and what really ran.

Accuracy is measured on the saved files, with the project's one Paddle Inference predictor
(``inspector.models.inference_program.InferencePredictor``, the runtime's too) and the one evaluation
protocol (``inspector.evaluation.protocol``: training validation's thresholds, boxes mapped back to
original pixels), so FP32 and INT8 numbers compare with the training run's own validation.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspector.compression.quantization.layers import QUANTIZABLE_OPS
from inspector.compression.quantization.program import describe_program
from inspector.data.loader import BatchLoader
from inspector.evaluation import EVAL_THRESHOLDS, EvalThresholds, ImageDetections, predict_batches, select_decoded
from inspector.models.inference_program import InferencePredictor, params_file, program_file

log = logging.getLogger(__name__)


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
            self.predictor = self._create(onednn_int8)
        except Exception as error:  # oneDNN refuses some graphs only when the predictor is built
            if not onednn_int8:
                raise
            note = f"oneDNN INT8 could not build this model ({type(error).__name__}: {str(error)[:200]})"
            log.warning("%s: %s; running the quantized graph on FP32 kernels", self.path_prefix, note)
            self.predictor = self._create(onednn_int8=False)
        convs = [op for op in self.predictor.optimized_ops if op.type in QUANTIZABLE_OPS or op.type == "fused_conv2d"]
        int8_convs = [op for op in convs if _op_attr(op, "mkldnn_data_type") == "int8"]
        quantized_graph = describe_program(program_file(self.path_prefix)).quantized
        precision = "int8" if int8_convs else ("int8-simulated" if quantized_graph else "fp32")
        self.runtime = InferenceRuntime("paddle-inference", precision, self.threads, len(int8_convs), len(convs),
                                        note)

    def _create(self, onednn_int8: bool) -> InferencePredictor:
        return InferencePredictor(program_file(self.path_prefix), params_file(self.path_prefix), self.threads,
                                  onednn_int8=onednn_int8, read_optimized=True)

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        """The outputs for one input (1, C, S, S): ``[boxes (1, K, 4), scores (1, K, C)]`` for a detector."""
        return self.predictor.run(image)


def default_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


def set_compute_threads(threads: int) -> None:
    """Run Paddle's CPU kernels (OpenMP, MKL) on ``threads`` threads in this thread from now on."""
    from paddle.base import core

    core.set_num_threads(int(threads))


def _op_attr(op, name: str) -> Any:
    for attr in op.attrs:
        if attr.name == name:
            return attr.s
    return None


def predict_inference_model(model: InferenceModel, loader: BatchLoader, progress: bool = True,
                            thresholds: EvalThresholds = EVAL_THRESHOLDS) -> dict[str, ImageDetections]:
    """A saved model's detections on the loader's dataset, by sample key, in original image pixels.

    Post-processing is every evaluation's (``inspector.evaluation.protocol``): ``select_decoded`` at
    ``thresholds`` (``EVAL_THRESHOLDS`` with the source recipe's NMS), boxes mapped back to original pixels;
    one image per run (the program's batch is 1).
    """
    if loader.train:
        raise ValueError("predict_inference_model needs an evaluation loader (train=False)")

    def predict(images: np.ndarray) -> list:
        outputs = [model(image[None]) for image in images]
        return [select_decoded(boxes[0], scores[0], thresholds) for boxes, scores in outputs]

    return predict_batches(loader, predict, progress=progress)
