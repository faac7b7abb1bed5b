"""Measure every stage of a pipeline the way it would ship: as a model package, through the runtime.

One row per stage. FP32 stages are exported to a package of their own (x86 Lite; ``OUT/measure/<row>/``),
the INT8 ones are their packages; each is evaluated on the pipeline's validation split and timed on a
real validation board, on Paddle Lite and on Paddle Inference at each thread count. An INT8 package's
x86 ``.nb`` is its FP32 twin (see ``inspector.export.package``), so on x86 the INT8 graph itself runs
through Paddle Inference (oneDNN INT8 kernels): quantization drops are measured there. Parameters and
FLOPs come from the FP32 model the row was made from. A row is saved as ``OUT/measure/<row>.json`` once
measured, so an interrupted measurement continues where it stopped.

Each row's detections on the validation boards are kept too (``<row>.<backend>.detections.npz``), so that the
distillation gain and the quantization drops get paired bootstrap intervals (``OUT/measure/intervals.json``,
``inspector.evaluation.bootstrap``): on 200 boards a difference of a few tenths of a point can be the boards drawn.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from inspector.data.layouts import input_layout
from inspector.pipeline.config import PipelineConfig

MEASURE_DIR = "measure"
INTERVALS_FILE = "intervals.json"
# (row, label, the stage whose model it is, INT8)
ROWS = (
    ("teacher", "teacher FP32", "teacher", False),
    ("student", "student alone FP32", "student", False),
    ("distilled", "student distilled FP32", "distilled", False),
    ("pruned", "distilled + pruned FP32", "pruned", False),
    ("qat", "QAT INT8 (shipped)", "qat", True),
    ("ptq", "PTQ INT8", "ptq", True),
)


def measure_rows(cfg: PipelineConfig, out: Path, state: dict, echo: Callable[[str], None]) -> list[dict]:
    from inspector.data import load_dataset
    from inspector.data.split import load_split

    _, val_set = load_split(load_dataset(cfg.data, format=cfg.format), out / "split.json")
    sample = val_set.samples[0]
    frame = sample.load_image()
    golden = sample.load_template() if sample.template_path is not None else None
    template = golden if input_layout(cfg.input_mode).needs_template else None
    rows = []
    for row, label, stage, int8 in ROWS:
        if stage not in state["stages"]:
            continue
        row_file = out / MEASURE_DIR / f"{row}.json"
        if row_file.is_file():
            rows.append(json.loads(row_file.read_text()))
            continue
        echo(f"measuring {label}")
        result = _measure_row(cfg, out, state, row, label, stage, int8, val_set, frame, template, echo)
        if row == "qat" and cfg.bench_against:
            result["bench_against"] = _bench_against(cfg, Path(result["package"]), frame, golden, echo)
        row_file.parent.mkdir(parents=True, exist_ok=True)
        row_file.write_text(json.dumps(result, indent=2))
        rows.append(result)
    quantized_from = state["stages"].get("qat", {}).get("source_stage", "distilled")
    intervals = paired_intervals(out, val_set, quantized_from)
    (out / MEASURE_DIR / INTERVALS_FILE).write_text(json.dumps(intervals, indent=2))
    return rows


# The differences the report states, each as (name, row a, row b, backend): a - b. Drops are FP32 - INT8 through
# Paddle Inference, where the INT8 graph itself runs (report.summarize measures them there too).
def _differences(quantized_from: str) -> tuple[tuple[str, str, str, str], ...]:
    return (("distillation_gain", "distilled", "student", "lite"),
            ("qat_drop", quantized_from, "qat", "paddle"),
            ("ptq_drop", quantized_from, "ptq", "paddle"))


def paired_intervals(out: Path, val_set, quantized_from: str) -> dict[str, dict]:
    """The 95 % paired bootstrap interval of the official AP difference behind the distillation gain and each
    quantization drop, from the rows' saved detections; a difference whose rows lack them (measured before
    they were kept) is left out."""
    from inspector.evaluation import ground_truth, load_detections, official_ap_difference_interval

    labels = ground_truth(val_set.samples)
    intervals = {}
    for name, row_a, row_b, backend in _differences(quantized_from):
        files = [detections_file(out, row, backend) for row in (row_a, row_b)]
        if all(file.is_file() for file in files):
            dets_a, dets_b = (load_detections(file) for file in files)
            if len(dets_a) == len(dets_b) == len(labels):
                intervals[name] = official_ap_difference_interval(labels, dets_a, dets_b).to_dict()
    return intervals


def detections_file(out: Path, row: str, backend: str) -> Path:
    return out / MEASURE_DIR / f"{row}.{backend}.detections.npz"


def load_rows(out: Path) -> list[dict]:
    return [json.loads((out / MEASURE_DIR / f"{row}.json").read_text()) for row, *_ in ROWS
            if (out / MEASURE_DIR / f"{row}.json").is_file()]


def _measure_row(cfg: PipelineConfig, out: Path, state: dict, row: str, label: str, stage: str, int8: bool,
                 val_set, frame, template, echo) -> dict[str, Any]:
    from inspector.evaluation import evaluate_samples, save_detections
    from inspector.export import export_package
    from inspector.runtime import Detector
    from inspector.runtime.bench import benchmark
    from inspector.runtime.evaluate import detect_dataset

    stage_info = state["stages"][stage]
    if row == "qat":
        package = Path(state["stages"]["package"]["run"])
    else:
        package = out / MEASURE_DIR / row / "package"
        if not (package / "manifest.json").is_file():
            targets = tuple(cfg.targets) if int8 else ("x86",)  # the ARM size matters for INT8 rows only
            export_package(Path(stage_info["run"]), package, targets=targets, name=f"{cfg.name}-{row}",
                           progress=lambda line: None)
    fp32_source = Path(stage_info["source"]) if int8 else Path(stage_info["run"])
    params, flops = _size(fp32_source)

    accuracy, runtime = {}, {}
    for backend in ("lite", "paddle"):
        detector = Detector.load(package, backend=backend, threads=max(cfg.bench_threads))
        detections = detect_dataset(detector, val_set, progress=True)
        detections_file(out, row, backend).parent.mkdir(parents=True, exist_ok=True)
        save_detections(detections_file(out, row, backend), detections)
        result = evaluate_samples(val_set.samples, detections, detector.class_names)
        accuracy[backend] = {key: value for key, value in result.to_dict().items() if key != "per_class"}
        runtime[backend] = detector.info.to_dict()
        echo(f"  {backend}: official AP {result.official_ap:.4f}  F {result.official_f:.4f}  mAP@0.5 "
             f"{result.map50:.4f}  mAP@0.5:0.95 {result.map50_95:.4f}  F(IoU>0.33) {result.f1_iou033:.4f} "
             f"({detector.info.precision})")
    bench = {}
    for backend in ("lite", "paddle"):
        for threads in cfg.bench_threads:
            detector = Detector.load(package, backend=backend, threads=threads)
            runs = cfg.bench_runs if row != "teacher" else max(10, cfg.bench_runs // 5)
            timed = benchmark(detector, frame, template if detector.needs_template else None, runs=runs,
                              warmup=max(2, runs // 10))
            bench[f"{backend}-{threads}"] = timed.to_dict()
            echo(f"  {backend} x{threads}: p50 {timed.p50_ms:.1f} ms  p99 {timed.p99_ms:.1f} ms  "
                 f"{timed.fps:.1f} FPS ({timed.precision})")
    manifest = json.loads((package / "manifest.json").read_text())
    files = manifest["files"]
    return {
        "row": row, "label": label, "stage": stage, "int8": int8, "package": str(package),
        "model": stage_info.get("run"), "fp32_source": str(fp32_source), "n_images": len(val_set),
        "accuracy": accuracy, "runtime": runtime, "bench": bench, "params": params, "flops": flops,
        "bytes": {name: entry["bytes"] for name, entry in files.items() if name.endswith((".nb", ".pdiparams"))},
    }


def _bench_against(cfg: PipelineConfig, package: Path, frame, golden, echo) -> dict[str, Any]:
    """The shipped package timed against ``cfg.bench_against``, frame after frame alternately (``inspector bench
    --against``), on Paddle Lite with the most threads measured."""
    from inspector.runtime import Detector
    from inspector.runtime.bench import benchmark_alternately

    threads = max(cfg.bench_threads)
    detectors = [Detector.load(path, backend="lite", threads=threads) for path in (package, cfg.bench_against)]
    if golden is None and detectors[1].needs_template:
        raise ValueError(f"bench_against {cfg.bench_against!r} compares frames with a golden template, and the "
                         f"validation boards have none")
    shipped, against = benchmark_alternately(detectors, frame, golden, runs=cfg.bench_runs,
                                             warmup=max(2, cfg.bench_runs // 10))
    ratio = shipped.p50_ms / against.p50_ms
    echo(f"  against {cfg.bench_against} (lite x{threads}, alternately): p50 {shipped.p50_ms:.1f} ms against "
         f"{against.p50_ms:.1f} ms, ratio {ratio:.3f}")
    return {"package": str(cfg.bench_against), "backend": "lite", "threads": threads, "runs": cfg.bench_runs,
            "p50_ms": shipped.p50_ms, "against_p50_ms": against.p50_ms, "p50_ratio": ratio}


def _size(checkpoint: Path) -> tuple[int, int]:
    from inspector.compression.pruning.size import measure
    from inspector.training.checkpoint import load_checkpoint

    size = measure(load_checkpoint(checkpoint).build())
    return size.params, size.flops
