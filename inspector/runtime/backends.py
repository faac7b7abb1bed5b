"""The two inference engines a package can run on, behind one small interface.

    backend.run(images (1, C, S, S) float32) -> [boxes (1, K, 4), scores (1, K, C)]
    backend.precision, backend.threads: what actually runs, read back from the engine
    backend.description: engine, version, kernels and model file, for reports

- ``LiteBackend``: Paddle Lite's light predictor (``MobileConfig``) on a ``.nb`` model. Lite's x86
  Python module has no thread setting for ``MobileConfig`` (its C++ side pins MKL to one thread
  when the predictor is created and runs its own OpenMP loops with OpenMP's default), so the count
  is applied to both libraries directly before every run. ARM builds have ``set_threads``.
  The precision is read from the ``.nb`` itself: the kernel each operator was bound to is recorded
  there as ``op/alias/target/precision/layout``, so we count the convolutions bound to INT8 kernels.
- ``PaddleInferenceBackend``: Paddle Inference on ``.pdmodel``/``.pdiparams`` with oneDNN; for an
  INT8 (quantized) program oneDNN's INT8 path is enabled. The predictor is the project's one
  (``inspector.models.inference_program.InferencePredictor``, also what ``inspector quantize`` measures
  with); paddle is imported only when one is built.
"""
from __future__ import annotations

import ctypes
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from inspector.models.inference_program import InferencePredictor


class BackendError(RuntimeError):
    """An inference engine could not load or run a (verified) package; the message says which and why."""


# Paddle Lite's PrecisionType values as stored in a .nb (lite/api/paddle_place.h).
_LITE_PRECISIONS = {1: "fp32", 2: "int8", 3: "int32", 4: "any", 5: "fp16", 6: "bool", 7: "int64", 8: "int16"}
_KERNEL_RECORD = re.compile(rb"([a-z][a-z0-9_]*)/([a-z][a-z0-9_]*)/(\d{1,2})/(\d{1,2})/(\d{1,2})")
_CONV_OPS = {b"conv2d", b"depthwise_conv2d", b"conv2d_transpose", b"fc", b"matmul", b"matmul_v2"}


def lite_conv_kernel_precisions(nb_file: Path) -> dict[str, int]:
    """How many convolution/matmul operators of a ``.nb`` are bound to kernels of each precision."""
    counts: Counter[str] = Counter()
    for op, _alias, _target, precision, _layout in _KERNEL_RECORD.findall(Path(nb_file).read_bytes()):
        if op in _CONV_OPS:
            counts[_LITE_PRECISIONS.get(int(precision), f"precision-{int(precision)}")] += 1
    return dict(counts)


class LiteBackend:
    name = "lite"

    def __init__(self, nb_file: Path, threads: int = 1) -> None:
        from paddlelite.lite import MobileConfig, create_paddle_predictor

        config = MobileConfig()
        config.set_model_from_file(str(nb_file))
        if hasattr(config, "set_threads"):  # ARM builds of the Python module
            config.set_threads(int(threads))
        try:
            self._predictor = create_paddle_predictor(config)
        except Exception as error:  # pybind surfaces Lite's C++ failures as plain exceptions
            raise BackendError(f"{nb_file}: Paddle Lite could not load the model ({error})") from error
        self._requested_threads = int(threads)
        self._mkl, self._omp = _loaded_library("libmklml_intel.so"), _loaded_library("libiomp5.so")
        self._apply_threads()
        # What the libraries accepted, read back (they may cap the request).
        self.threads = int(self._omp.omp_get_max_threads()) if self._omp is not None else self._requested_threads
        self.kernels = lite_conv_kernel_precisions(nb_file)
        self.precision = "int8" if self.kernels.get("int8") else "fp32"
        self.description = f"Paddle Lite {self._predictor.get_version()} ({Path(nb_file).name})"

    def _apply_threads(self) -> None:
        # omp_set_num_threads is per calling thread, so this runs before every inference: a GUI or
        # service may call from a worker thread that never saw the setting.
        if self._mkl is not None:
            self._mkl.MKL_Set_Num_Threads(self._requested_threads)
        if self._omp is not None:
            self._omp.omp_set_num_threads(self._requested_threads)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        self._apply_threads()
        self._predictor.get_input(0).from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self._predictor.run()
        return [self._predictor.get_output(i).numpy() for i in range(2)]


class PaddleInferenceBackend:
    name = "paddle"

    def __init__(self, model_file: Path, params_file: Path, threads: int = 1, int8: bool = False) -> None:
        try:
            self._predictor = InferencePredictor(model_file, params_file, threads, onednn_int8=int8)
        except Exception as error:
            raise BackendError(f"{model_file}: Paddle Inference could not load the model ({error})") from error
        self.threads = self._predictor.threads
        self.precision = "int8" if int8 else "fp32"
        kernels = "oneDNN INT8" if self._predictor.int8_kernels else "oneDNN"
        self.description = f"Paddle Inference {_paddle_version()} ({kernels}, {Path(model_file).name})"

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        try:
            return self._predictor.run(images)
        except Exception as error:
            raise BackendError(f"Paddle Inference failed to run the model ({error})") from error


def _paddle_version() -> str:
    import paddle

    return paddle.__version__


def _loaded_library(soname: str) -> ctypes.CDLL | None:
    """The already-loaded copy of a shared library (the one the engine uses), or None if not loaded."""
    try:
        return ctypes.CDLL(soname, mode=os.RTLD_NOLOAD)
    except OSError:
        return None
