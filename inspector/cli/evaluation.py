"""``inspector eval``: the accuracy of a training run or of a model package on labeled data, and the helpers
``export --eval-data`` shares with it (same dataset split rules, same printed summary)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import all_cores, fail, user_errors
from inspector.cli.options import Backend, DataFormat, Format, JsonOut, Split, value_of


def eval_command(
    data: Annotated[Path, typer.Argument(help="Labeled data: DeepPCB / VOC directory or COCO JSON.")],
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Model package (run through the runtime), or a training run / checkpoint directory. "
        "Default: the shipped package.")] = None,
    format: Format = None,
    backend: Annotated[Backend, typer.Option(
        "--backend", help="Engine for a package: Paddle Lite or Paddle Inference.")] = Backend.lite,
    split: Annotated[Split, typer.Option(
        "--split", help="Evaluate all of DATA, or the run's own train/val part of it (from the run's or package's "
        "split.json).")] = Split.all,
    score_threshold: Annotated[Optional[float], typer.Option(
        "--score-threshold", help="Threshold of the DeepPCB F-score; default: the one that maximises F.")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1)] = 8,
    json_path: JsonOut = None,
    against: Annotated[Optional[Path], typer.Option(
        "--against", help="Another model package, scored on the same images through the same backend: the "
        "difference of official AP with its paired 95 % bootstrap interval (is the first model really better?).")]
        = None,
) -> None:
    """Official DeepPCB AP/F, COCO mAP@0.5 and mAP@0.5:0.95, and the class-aware DeepPCB P/R/F of a model on DATA."""
    import json

    from inspector.runtime.package import is_package

    if model is None or is_package(model):
        _eval_package(data, model, format, backend, split, score_threshold, json_path, against)
        return
    if against is not None:
        fail(f"error: --against compares model packages through the runtime; {model} is a training run: export it "
             "first (inspector export)")

    from inspector.data import DataError, load_dataset
    from inspector.data.loader import BatchLoader
    from inspector.data.split import load_split
    from inspector.evaluation import recipe_thresholds
    from inspector.training.checkpoint import load_checkpoint
    from inspector.training.validate import validate

    with user_errors(DataError, FileNotFoundError, ValueError):
        checkpoint = load_checkpoint(model)
        dataset = load_dataset(data, format=value_of(format))
        if split is not Split.all:
            split_file = checkpoint.path.parent / "split.json"
            if not split_file.is_file():
                fail(f"error: --split {split.value} needs {split_file} (a training run's split)")
            train_set, val_set = load_split(dataset, split_file)
            dataset = val_set if split is Split.val else train_set
    if dataset.class_names != checkpoint.class_names:
        fail(f"error: {data} has classes {dataset.class_names}, the model {checkpoint.class_names}")
    cfg = checkpoint.model_config
    loader = BatchLoader(dataset, batch, cfg.input_size, cfg.input_mode, train=False)
    # Judged with the NMS its training chose its best checkpoint by (the package it exports runs that too).
    result = validate(checkpoint.build(), loader, checkpoint.class_names, score_threshold=score_threshold,
                      thresholds=recipe_thresholds(checkpoint.info.get("train_config")), interval=True)
    summary = {**result.to_dict(), "model": str(checkpoint.path), "backend": "paddle-dygraph"}
    echo_eval(result, len(dataset))
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2))


def _eval_package(data: Path, model: Optional[Path], format: Optional[DataFormat], backend: Backend, split: Split,
                  score_threshold: Optional[float], json_path: Optional[Path], against: Optional[Path] = None) -> None:
    """`inspector eval` of a model package, through the runtime (``against``: compared with another package)."""
    import json

    from inspector.runtime import BackendError, Detector, PackageError

    with user_errors(PackageError, BackendError, ValueError):
        detector = Detector.load(model, backend=backend.value, threads=all_cores())
        other = None if against is None else Detector.load(against, backend=backend.value, threads=all_cores())
    package = detector.package.path
    dataset = load_eval_dataset(data, format, split, package)
    if other is None:
        result = evaluate_package(detector, dataset, score_threshold)
    else:
        result, comparison = _compare_packages(detector, other, dataset, split, score_threshold)
    echo_eval(result, len(dataset))
    typer.echo(f"through {detector.info.engine}, precision {detector.info.precision}")
    summary = {**result.to_dict(), "model": str(package), "backend": detector.info.backend,
               "runtime": detector.info.to_dict()}
    if other is not None:
        typer.echo(f"against {comparison['model']}: official AP {comparison['official_ap']:.4f}; difference "
                   f"{100 * comparison['difference']:+.2f} pt, {comparison['interval_text']}")
        summary["against"] = {key: value for key, value in comparison.items() if key != "interval_text"}
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2))


def _compare_packages(detector, other, dataset, split: Split, score_threshold: Optional[float]):
    """``detector``'s result on ``dataset`` and its official AP difference with ``other`` on the same images, with
    the paired bootstrap interval. Refused when the two packages' training splits differ (one model's validation
    boards would be the other's training boards) or their classes do."""
    from inspector.evaluation import evaluate_samples, ground_truth, official_ap_difference_interval, official_metric
    from inspector.export.manifest import SPLIT_FILE
    from inspector.runtime.evaluate import detect_dataset

    first, second = detector.package.path, other.package.path
    if other.class_names != detector.class_names:
        fail(f"error: --against {second} has classes {other.class_names}, {first} {detector.class_names}")
    if split is not Split.all:
        mine, theirs = first / SPLIT_FILE, second / SPLIT_FILE
        if not theirs.is_file() or theirs.read_text() != mine.read_text():
            fail(f"error: --split {split.value}: {theirs} is not the split of {mine}; the images would not be held "
                 "out from both models alike (use --split all on data neither was trained on)")
    with user_errors(ValueError):
        dets = detect_dataset(detector, dataset)
        other_dets = detect_dataset(other, dataset)
    result = evaluate_samples(dataset.samples, dets, detector.class_names, score_threshold=score_threshold,
                              interval=True)
    labels = ground_truth(dataset.samples)
    other_ap = official_metric(labels, other_dets, len(detector.class_names)).ap
    interval = official_ap_difference_interval(labels, dets, other_dets)
    return result, {"model": str(second), "official_ap": other_ap, "difference": result.official_ap - other_ap,
                    "interval": interval.to_dict(), "interval_text": interval.text(points=True)}


def load_eval_dataset(data: Path, format: Optional[DataFormat], split: Split, package: Path):
    """DATA, or its train/val part as listed in the package's split.json."""
    from inspector.data import DataError, load_dataset
    from inspector.data.split import load_split
    from inspector.export.manifest import SPLIT_FILE

    with user_errors(DataError, FileNotFoundError, ValueError):
        dataset = load_dataset(data, format=value_of(format))
        if split is not Split.all:
            split_file = package / SPLIT_FILE
            if not split_file.is_file():
                fail(f"error: --split {split.value} needs {split_file} (the package's copy of its training split); "
                     "this package has none: use --split all")
            train_set, val_set = load_split(dataset, split_file)
            dataset = val_set if split is Split.val else train_set
    return dataset


def evaluate_package(detector, dataset, score_threshold: Optional[float]):
    from inspector.runtime.evaluate import evaluate_detector

    with user_errors(ValueError):
        return evaluate_detector(detector, dataset, score_threshold=score_threshold, interval=True)


def echo_eval(result, n_images: int) -> None:
    official_at = "-" if result.official_threshold is None else f"{result.official_threshold:.3f}"
    typer.echo(f"{n_images} images: official DeepPCB AP {result.official_ap:.4f}  F {result.official_f:.4f} "
               f"(P {result.official_precision:.4f}  R {result.official_recall:.4f} at score {official_at})")
    if result.official_ap_interval is not None:
        typer.echo(f"  official AP {result.official_ap_interval.text()}")
    typer.echo(f"  COCO mAP@0.5 {result.map50:.4f}  mAP@0.5:0.95 {result.map50_95:.4f}  class-aware "
               f"P {result.precision:.4f}  R {result.recall:.4f}  F(IoU>0.33) {result.f1_iou033:.4f} "
               f"at score {result.score_threshold}")
    for name, row in result.per_class.items():
        typer.echo(f"  {name:10s} AP50 {row.ap50 if row.ap50 is not None else float('nan'):.4f}  "
                   f"AP50:95 {row.ap50_95 if row.ap50_95 is not None else float('nan'):.4f}  n={row.num_gt}")
