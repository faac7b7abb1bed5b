"""`inspector demo` (what `make run` runs): the product end to end on data that ships with the project.

1. `data check` of the bundled real DeepPCB validation pairs (boards the shipped model never trained on);
2. the shipped model package (``models/default``) on them, through the runtime: accuracy, latency, and
   annotated images with one detections JSON, as `inspector eval`, `bench` and `predict` give them;
3. the retraining pipeline (`inspector pipeline`) on synthetic boards, with a tiny schedule: teacher,
   student, distilled student, QAT and PTQ INT8, the model package and its report, in minutes on 2 cores.

Step 3's models train for a few steps only: it shows the retraining workflow and its report, not a
usable detector. Real retraining: `inspector pipeline --config configs/pipeline-cpu.yaml ...` (README).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import typer

from inspector.capture import DEMO_DIR
from inspector.data import check_dataset, format_report, load_dataset
from inspector.data.check import CheckReport
from inspector.data.synth import write_deeppcb
from inspector.pipeline import PipelineConfig, run_pipeline
from inspector.runtime import Detector
from inspector.runtime.bench import benchmark
from inspector.runtime.draw import draw_detections
from inspector.runtime.evaluate import evaluate_detector


def run_demo(out: Path, boards: int = 12) -> dict:
    out = Path(out)
    typer.secho(f"[1/3] data check of the bundled real validation pairs: {DEMO_DIR}", bold=True)
    typer.echo(_check_summary(check_dataset(DEMO_DIR)))

    typer.secho("[2/3] the shipped model package on them, through the runtime", bold=True)
    shipped = _shipped_model(out / "predictions")

    pipeline_dir = out / "pipeline"
    typer.secho(f"[3/3] the retraining pipeline on {boards} synthetic boards (tiny schedule) -> {pipeline_dir}",
                bold=True)
    shutil.rmtree(pipeline_dir, ignore_errors=True)
    synth_dir = out / "synth"
    shutil.rmtree(synth_dir, ignore_errors=True)
    write_deeppcb(synth_dir, n=boards, seed=0, size=160)
    run_pipeline(PipelineConfig(data=str(synth_dir), out=str(pipeline_dir), input_size=64, teacher_epochs=1,
                                teacher_crop_size=None, epochs=1, crop_size=None, batch_size=4, eval_every=1,
                                qat_epochs=1, calibration_images=4, max_steps_per_epoch=3, bench_runs=10,
                                val_fraction=0.25, package_name="demo-synthetic-int8"),
                 echo=typer.echo)
    typer.secho("open next:", bold=True)
    typer.echo(f"  {out / 'predictions'}/  the shipped model's annotated boards (detections.json beside them)")
    typer.echo(f"  {pipeline_dir / 'report.md'}  the pipeline report, with report.png (models trained for a "
               "few steps on synthetic boards)")
    return shipped


def _check_summary(report: CheckReport) -> str:
    """`data check`'s counts in three lines when the data is clean (the demo's output fits on two screens);
    the whole report, box sizes and every problem, when it is not."""
    if report.n_errors or report.n_warnings:
        return format_report(report)
    classes = ", ".join(f"{name} {count}" for name, count in report.class_counts.items())
    return (f"images     {report.num_images} ({report.images_without_labels} without labels), templates "
            f"{report.templates_present} present, {report.templates_missing} missing\n"
            f"boxes      {report.num_boxes}: {classes}\n"
            f"errors: none, warnings: none (the whole report with box sizes: inspector data check {report.path})")


def _shipped_model(predictions: Path) -> dict:
    threads = os.cpu_count() or 1
    detector = Detector.load(None, backend="lite", threads=threads)
    info = detector.info
    typer.echo(f"package {info.package} ({detector.manifest.name}), {info.engine}, precision {info.precision}, "
               f"{info.threads} threads")
    dataset = load_dataset(DEMO_DIR)
    result = evaluate_detector(detector, dataset, progress=False)
    typer.echo(f"{len(dataset)} real validation pairs: official DeepPCB AP {result.official_ap:.3f}  "
               f"F {result.official_f:.3f}  mAP@0.5 {result.map50:.3f}  mAP@0.5:0.95 {result.map50_95:.3f}  "
               f"F(IoU>0.33) {result.f1_iou033:.3f}")
    sample = dataset.samples[0]
    timed = benchmark(detector, sample.load_image(), sample.load_template() if detector.needs_template else None,
                      runs=50, warmup=5)
    typer.echo(f"latency on a {timed.frame_size[0]}x{timed.frame_size[1]} board: p50 {timed.p50_ms:.1f} ms  "
               f"p99 {timed.p99_ms:.1f} ms  {timed.fps:.0f} FPS")

    shutil.rmtree(predictions, ignore_errors=True)
    predictions.mkdir(parents=True)
    found = {}
    for sample in dataset.samples:
        image = sample.load_image()
        detections = detector.detect(image, sample.load_template() if detector.needs_template else None)
        name = f"{Path(sample.image_path).stem}.jpg"
        cv2.imwrite(str(predictions / name), draw_detections(image, detections))
        found[name] = detections.to_dict()
    (predictions / "detections.json").write_text(json.dumps(found, indent=2))
    typer.echo(f"annotated boards and detections.json: {predictions}")
    return {**result.to_dict(), "latency_p50_ms": timed.p50_ms}
