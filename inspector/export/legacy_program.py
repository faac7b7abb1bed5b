"""Paddle inference models in the legacy (non-PIR) program format, made and read in a child process.

Paddle Lite's converter reads only legacy ``.pdmodel`` programs, and Paddle 3 writes those only when
``FLAGS_enable_pir_api=0`` is set *before* paddle is imported. A process that has already imported
paddle (the CLI, a test session) cannot switch, so both jobs here run ``python -m
inspector.export.legacy_program`` in a fresh interpreter with the flag set:

- ``save``: a training checkpoint -> ``DecodedDetector`` (images -> boxes, scores; NMS stays outside)
  -> ``PREFIX.pdmodel`` / ``PREFIX.pdiparams`` (by ``inspector.models.inference_program.save_decoded_program``,
  the same code that saves ``inspector quantize``'s FP32 and INT8 models), then the saved program is run
  with Paddle Inference and must reproduce the dygraph model's outputs on a random input.
- ``describe``: the input and output shapes and the operator types of a saved program (the exporter
  checks them against the model config and derives the precision from them).

The child prints one line ``RESULT <json>``; the parent raises ``ExportError`` with the child's
output tail when it fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_RESULT_MARKER = "RESULT "
_WORKER_TIMEOUT_S = 1800  # a ResNet-50 teacher on a busy 2-core machine takes minutes to trace and check


class ExportError(RuntimeError):
    """Exporting failed; the message says which step and shows the tool's own output."""


@dataclass(frozen=True)
class ProgramInfo:
    """What a saved inference program takes and returns."""

    input_name: str
    input_shape: list[int]
    output_shapes: list[list[int]]  # in fetch order: boxes (B, K, 4), scores (B, K, C)
    op_types: list[str]  # sorted, unique

    @property
    def precision(self) -> str:
        """"int8" when the program holds (fake-)quantization operators, as QAT/PTQ exports do."""
        return "int8" if any("quantize" in op for op in self.op_types) else "fp32"


def save_fp32_inference_model(checkpoint_dir: Path, prefix: Path) -> ProgramInfo:
    """Trace the checkpoint's model with decoding into ``prefix.pdmodel`` / ``prefix.pdiparams``."""
    return ProgramInfo(**_run_worker(["save", str(checkpoint_dir), str(prefix)], "saving the inference model"))


def describe_inference_model(prefix: Path) -> ProgramInfo:
    """Input/output shapes and operator types of ``prefix.pdmodel`` / ``prefix.pdiparams``."""
    return ProgramInfo(**_run_worker(["describe", str(prefix)], f"reading the inference model {prefix}.pdmodel"))


def _run_worker(args: list[str], what: str) -> dict:
    env = dict(os.environ, FLAGS_enable_pir_api="0", GLOG_minloglevel="2")
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        result = subprocess.run([sys.executable, "-m", __name__, *args], env=env, capture_output=True, text=True,
                                timeout=_WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise ExportError(f"{what}: no answer after {_WORKER_TIMEOUT_S} s") from error
    lines = [line for line in result.stdout.splitlines() if line.startswith(_RESULT_MARKER)]
    if result.returncode != 0 or not lines:
        tail = (result.stdout + result.stderr).strip().splitlines()[-25:]
        raise ExportError(f"{what} failed (exit code {result.returncode}):\n" + "\n".join(tail))
    return json.loads(lines[-1][len(_RESULT_MARKER):])


# --------------------------------------------------------------------------- child process


def _describe(prefix: str) -> dict:
    import paddle

    paddle.enable_static()
    executor = paddle.static.Executor(paddle.CPUPlace())
    program, feed_names, fetch_targets = paddle.static.load_inference_model(prefix, executor)
    if len(feed_names) != 1:
        raise SystemExit(f"{prefix}.pdmodel: expected one input (the images), found {feed_names}")
    feed = program.global_block().var(feed_names[0])
    return {
        "input_name": feed_names[0],
        "input_shape": [int(d) for d in feed.shape],
        "output_shapes": [[int(d) for d in target.shape] for target in fetch_targets],
        "op_types": sorted({op.type for op in program.global_block().ops}),
    }


def _save(checkpoint_dir: str, prefix: str) -> dict:
    import numpy as np
    import paddle

    from inspector.models import DecodedDetector
    from inspector.models.inference_program import InferencePredictor, params_file, program_file, save_decoded_program
    from inspector.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(Path(checkpoint_dir))
    cfg = checkpoint.model_config
    model = DecodedDetector(checkpoint.build())
    model.eval()
    save_decoded_program(model, prefix, cfg.input_size, cfg.in_channels)  # the one way graphs are saved

    # The saved program must compute what the trained model computes.
    shape = [1, cfg.in_channels, cfg.input_size, cfg.input_size]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected = [t.numpy() for t in model(paddle.to_tensor(x))]
    got = InferencePredictor(program_file(prefix), params_file(prefix), threads=1).run(x)  # the runtime's
    for name, a, b in zip(("boxes", "scores"), got, expected):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-3):
            difference = float(np.abs(a - b).max()) if a.shape == b.shape else f"shape {a.shape} vs {b.shape}"
            raise SystemExit(f"{prefix}.pdmodel: saved program's {name} differ from the model's ({difference})")
    Path(prefix + ".pdiparams.info").unlink(missing_ok=True)  # a training-side by-product, not needed to run
    return _describe(prefix)


def _main(argv: list[str]) -> None:
    if os.environ.get("FLAGS_enable_pir_api") != "0":
        raise SystemExit("run with FLAGS_enable_pir_api=0 (Paddle Lite reads legacy programs only)")
    if argv[:1] == ["save"] and len(argv) == 3:
        result = _save(argv[1], argv[2])
    elif argv[:1] == ["describe"] and len(argv) == 2:
        result = _describe(argv[1])
    else:
        raise SystemExit("usage: python -m inspector.export.legacy_program save CHECKPOINT PREFIX | describe PREFIX")
    print(_RESULT_MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
