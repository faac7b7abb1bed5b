"""A detector's inference program: saved once (legacy ``.pdmodel`` / ``.pdiparams``), run by Paddle Inference.

Every graph the project ships goes through ``save_decoded_program``: ``inspector export`` (an FP32
checkpoint, in ``inspector.export.legacy_program``) and ``inspector quantize`` (FP32 and INT8, in
``inspector.compression.quantization.program``). Every Paddle Inference run of such a program goes
through ``InferencePredictor``: the runtime's Paddle backend and the quantize command's measurement.
Both live here, in the models layer, because the layers that use them (compression, export, runtime)
may only import upwards.

Legacy programs: Paddle Lite 2.13 reads only the legacy ``ProgramDesc`` (``.pdmodel``); Paddle 3.3 writes
one only with the PIR API off. ``paddle.pir_utils.DygraphOldIrGuard`` turns it off for the duration of a
save, in this process, so no subprocess is needed (a process started with ``FLAGS_enable_pir_api=0``
works the same: the guard then does nothing).

Importing this module does not import paddle (the runtime imports it on machines with Paddle Lite only).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inspector.native_logs import pass_log_filtered

INPUT_NAME = "images"


def program_file(path_prefix: Path | str) -> Path:
    """``PREFIX.pdmodel``: the program of the inference model saved at ``path_prefix``."""
    return Path(f"{path_prefix}.pdmodel")


def params_file(path_prefix: Path | str) -> Path:
    """``PREFIX.pdiparams``: its weights."""
    return Path(f"{path_prefix}.pdiparams")


def save_decoded_program(model: Any, path_prefix: Path | str, input_size: int, in_channels: int,
                         write: Callable[[Any, str], None] | None = None) -> Path:
    """Trace ``images -> (boxes, scores)`` of ``model`` and save it as a legacy program at ``path_prefix``.

    ``model`` is a ``YOLODetector`` or its ``DecodedDetector``. The input is fixed to
    ``[1, in_channels, input_size, input_size]``, what the runtime feeds. ``write(static_layer, prefix)``
    saves the traced layer (default ``paddle.jit.save``; quantization passes PaddleSlim's saver, which
    turns fake-quant layers into quantize / dequantize operators). ``model`` itself is left unchanged
    (the trace runs on a wrapper). Returns the ``.pdmodel`` path.
    """
    import paddle

    from inspector.models.detector import DecodedDetector

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
            (write or paddle.jit.save)(static, str(prefix))
    finally:
        detector.train(was_training)
    model_file = program_file(prefix)
    if not model_file.is_file():
        raise RuntimeError(f"{model_file}: Paddle reported no error but wrote no legacy program")
    return model_file


class InferencePredictor:
    """A saved inference program in a Paddle Inference predictor on the CPU (oneDNN kernels).

    ``onednn_int8``: run a quantized program on oneDNN's INT8 kernels (otherwise FP32 kernels execute its
    quantize / dequantize operators). ``read_optimized``: keep the program as Paddle's passes left it
    (``optimized_ops``), to read back what really runs, e.g. which convolutions are INT8; it costs a save
    of the optimized program into a temporary directory when the predictor is built.
    Building raises what Paddle raises; the callers say what it means for them.
    """

    def __init__(self, model_file: Path | str, params_file: Path | str, threads: int = 1,
                 onednn_int8: bool = False, read_optimized: bool = False) -> None:
        from paddle import inference

        self.model_file = Path(model_file)
        config = inference.Config(str(model_file), str(params_file))
        config.disable_gpu()
        config.disable_glog_info()
        config.set_cpu_math_library_num_threads(int(threads))
        config.enable_onednn()  # the fast CPU path
        if onednn_int8:
            config.enable_onednn_int8()
        self.optimized_ops: list | None = None
        if read_optimized:
            from paddle.base.proto import framework_pb2

            with tempfile.TemporaryDirectory(prefix="paddle-optim-") as optim_dir:
                config.enable_save_optim_model(True)
                config.set_optim_cache_dir(optim_dir)
                with pass_log_filtered():  # oneDNN's pass log goes to stderr whatever the config says
                    self.predictor = inference.create_predictor(config)
                optimized = (Path(optim_dir) / "_optimized.pdmodel").read_bytes()
            self.optimized_ops = list(framework_pb2.ProgramDesc.FromString(optimized).blocks[0].ops)
        else:
            with pass_log_filtered():
                self.predictor = inference.create_predictor(config)
        self.threads = int(config.cpu_math_library_num_threads())
        self.int8_kernels = bool(onednn_int8 and config.onednn_int8_enabled())
        self._input = self.predictor.get_input_names()[0]
        self._outputs = self.predictor.get_output_names()

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """The outputs for one input (1, C, S, S): ``[boxes (1, K, 4), scores (1, K, C)]`` for a detector."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        handle = self.predictor.get_input_handle(self._input)
        handle.reshape(list(images.shape))
        handle.copy_from_cpu(images)
        self.predictor.run()
        return [self.predictor.get_output_handle(name).copy_to_cpu() for name in self._outputs]
