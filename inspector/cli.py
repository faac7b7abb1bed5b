"""The `inspector` command line: one verb per job (data, train, eval, ...).

Heavy imports (paddle, cv2) happen inside the commands so that `inspector --help` answers at once.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="PCB defect inspector: import labeled data, train, compress, export and run a defect detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, validate and generate labeled data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


class DataFormat(str, Enum):
    deeppcb = "deeppcb"
    voc = "voc"
    coco = "coco"


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@data_app.command("check")
def data_check(
    path: Path = typer.Argument(..., help="Dataset directory (DeepPCB or VOC) or COCO JSON file."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero on warnings too, not only errors."),
    verify_images: bool = typer.Option(True, "--verify-images/--no-verify-images",
                                       help="Decode every image (slower, catches corrupt files)."),
) -> None:
    """Print counts per class, box-size statistics, unlabeled images and every problem found."""
    from inspector.data import DataError, check_dataset, format_report

    try:
        report = check_dataset(path, format=format.value if format else None, verify_images=verify_images)
    except DataError as error:
        _fail(f"error: {error}")
    typer.echo(format_report(report))
    if report.n_errors or (strict and report.n_warnings):
        raise typer.Exit(1)


@data_app.command("synth")
def data_synth(
    out: Path = typer.Argument(..., help="Output directory (DeepPCB layout)."),
    n: int = typer.Option(20, "--n", min=1, help="Number of board pairs."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same boards)."),
    size: int = typer.Option(640, "--size", min=64, help="Image side in pixels."),
) -> None:
    """Generate synthetic PCB pairs (template + tested image with labeled defects) in DeepPCB layout."""
    from inspector.data.synth import write_deeppcb

    if out.exists() and any(out.iterdir()):
        _fail(f"error: {out} exists and is not empty; choose a new directory (nothing was overwritten)")
    write_deeppcb(out, n=n, seed=seed, size=size)
    typer.echo(f"wrote {n} synthetic pairs to {out}")


class Arch(str, Enum):
    ppyolo_r18 = "ppyolo-r18"
    ppyolo_r34 = "ppyolo-r34"
    ppyolo_r50 = "ppyolo-r50"
    ppyolo_r50_dcn = "ppyolo-r50-dcn"
    mbv3_small = "mbv3-small"
    mbv3_large = "mbv3-large"


class InputMode(str, Enum):
    image = "image"
    image_template = "image+template"


class Split(str, Enum):
    all = "all"
    train = "train"
    val = "val"


@app.command("train")
def train_command(
    arch: Arch = typer.Option(..., "--arch", help="Detector: a PP-YOLO teacher or a MobileNetV3 student."),
    data: Path = typer.Option(..., "--data", help="Labeled data: DeepPCB / VOC directory or COCO JSON."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics, plots)."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    epochs: int = typer.Option(30, "--epochs", min=1),
    batch: int = typer.Option(8, "--batch", min=1, help="Images per step."),
    input_size: int = typer.Option(320, "--input-size", help="Network input side (multiple of 32)."),
    crop_size: int = typer.Option(256, "--crop-size", help="Train on random crops of this side of the resized "
                                  "image (0: whole image). Validation always sees whole images."),
    input_mode: InputMode = typer.Option(InputMode.image_template, "--input-mode",
                                         help="image, or image and golden template stacked as channels."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flips, 90-degree turns, lighting, noise."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (AdamW)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.9),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the train/val split (kept in split.json)."),
    seed: int = typer.Option(0, "--seed"),
    eval_every: int = typer.Option(1, "--eval-every", min=1, help="Validate every N epochs."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap steps per epoch (smoke tests)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train a detector; per-epoch validation, best/last checkpoints, metrics.csv and plots in --out."""
    for size, name in ((input_size, "--input-size"), (crop_size, "--crop-size")):
        if size % 32:
            _fail(f"error: {name} {size} is not a multiple of 32")
    from inspector.training.config import TrainConfig
    from inspector.training.trainer import train

    cfg = TrainConfig(arch=arch.value, data=str(data), out=str(out), format=format.value if format else None,
                      epochs=epochs, batch_size=batch, input_size=input_size, crop_size=crop_size or None,
                      input_mode=input_mode.value, augment=augment, lr=lr, val_fraction=val_fraction, split_seed=split_seed,
                      seed=seed, eval_every=eval_every, max_steps_per_epoch=max_steps)
    try:
        run = train(cfg, resume=resume)
    except KeyboardInterrupt:
        _fail(f"interrupted: last checkpoint saved in {out}/last; continue with --resume", code=130)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        _fail(f"error: {error}")
    typer.echo(f"done: {run}")


@app.command("eval")
def eval_command(
    data: Path = typer.Argument(..., help="Labeled data: DeepPCB / VOC directory or COCO JSON."),
    model: Path = typer.Option(..., "--model", help="Training run directory or checkpoint directory."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    split: Split = typer.Option(Split.all, "--split", help="Evaluate all of DATA, or the run's own train/val "
                                "part of it (from the run's split.json)."),
    score_threshold: Optional[float] = typer.Option(None, "--score-threshold", help="Threshold of the DeepPCB "
                                                    "F-score; default: the one that maximises F."),
    batch: int = typer.Option(8, "--batch", min=1),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
) -> None:
    """COCO mAP@0.5 and mAP@0.5:0.95 plus the DeepPCB protocol (IoU > 0.33, P/R/F) of a model on DATA."""
    import json

    from inspector.data import DataError, load_dataset
    from inspector.data.loader import BatchLoader
    from inspector.data.split import split_dataset
    from inspector.training.checkpoint import load_checkpoint
    from inspector.training.validate import validate

    try:
        checkpoint = load_checkpoint(model)
        dataset = load_dataset(data, format=format.value if format else None)
        if split is not Split.all:
            split_file = checkpoint.path.parent / "split.json"
            if not split_file.is_file():
                _fail(f"error: --split {split.value} needs {split_file} (a training run's split)")
            train_set, val_set = split_dataset(dataset, split_file=split_file)
            dataset = val_set if split is Split.val else train_set
    except (DataError, FileNotFoundError, ValueError) as error:
        _fail(f"error: {error}")
    if dataset.class_names != checkpoint.class_names:
        _fail(f"error: {data} has classes {dataset.class_names}, the model {checkpoint.class_names}")
    cfg = checkpoint.model_config
    loader = BatchLoader(dataset, batch, cfg.input_size, cfg.input_mode, train=False)
    result = validate(checkpoint.build(), loader, checkpoint.class_names, score_threshold=score_threshold)
    summary = {**result.to_dict(), "model": str(checkpoint.path), "backend": "paddle-dygraph"}
    typer.echo(f"{len(dataset)} images: mAP@0.5 {result.map50:.4f}  mAP@0.5:0.95 {result.map50_95:.4f}  "
               f"P {result.precision:.4f}  R {result.recall:.4f}  F(IoU>0.33) {result.f1_iou033:.4f} "
               f"at score {result.score_threshold}")
    for name, row in result.per_class.items():
        typer.echo(f"  {name:10s} AP50 {row.ap50 if row.ap50 is not None else float('nan'):.4f}  "
                   f"AP50:95 {row.ap50_95 if row.ap50_95 is not None else float('nan'):.4f}  n={row.num_gt}")
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2))


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the demo writes its data and run."),
    epochs: int = typer.Option(3, "--epochs", min=1),
) -> None:
    """The main job on bundled data: check real pairs, synthesize boards, train briefly, evaluate."""
    from inspector.demo import run_demo

    run_demo(out, epochs=epochs)


def main() -> None:
    import os

    # Paddle's CPU kernels use OpenMP; by default they leave cores idle (1.5x faster with all of them).
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    app()


if __name__ == "__main__":
    main()
