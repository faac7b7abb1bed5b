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
from inspector.registry_cli import models_app  # noqa: E402 - the `models` verbs live in their own module
app.add_typer(models_app, name="models")


class DataFormat(str, Enum):
    deeppcb = "deeppcb"
    voc = "voc"
    coco = "coco"


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _launch_ranks_if_asked(nproc: int, ips: str | None, out: Path) -> None:
    """--nproc/--ips outside a launched job: run this same command line as data-parallel ranks under
    paddle.distributed.launch (rank logs in OUT/launch/workerlog.N) and exit with its status."""
    if nproc == 1 and not ips:
        return
    import sys

    from inspector.training.distributed import launch_ranks, launched_ranks

    if launched_ranks() > 1:  # this process is one of the ranks
        return
    status = launch_ranks(sys.argv[1:], nproc, out / "launch", ips)
    if status:
        _fail(f"the ranks stopped (launcher status {status}); each rank's output is in {out / 'launch'}/workerlog.N; "
              f"an interrupted run continues from its last finished epoch with --resume", code=status)
    raise typer.Exit(0)  # the ranks did the work


def _data_sources(data: list[Path], weight: Optional[list[float]]):
    """``--data`` (repeatable) and ``--weight`` as a config's ``data``: one path, or a list of sources
    (``inspector.data.sources``: one class list, a fixed split each, per-source weights)."""
    if weight and len(weight) != len(data):
        _fail(f"error: --weight given {len(weight)} times for {len(data)} --data sources: one per source, in order")
    if len(data) == 1 and not weight:
        return str(data[0])
    return [{"path": str(path), "weight": w} for path, w in zip(data, weight or [1.0] * len(data))]


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
    panel: bool = typer.Option(False, "--panel", help="Write N whole panels instead: grids of tile pairs with "
                               "panel-coordinate labels (DeepPCB layout) and panels.json (sources, applied map)."),
    cols: int = typer.Option(4, "--cols", min=1, help="Panel: tiles per row."),
    rows: int = typer.Option(4, "--rows", min=1, help="Panel: tile rows."),
    tiles_from: Optional[Path] = typer.Option(None, "--tiles-from", help="Panel: labeled pairs to tile with "
                                              "(e.g. DeepPCB); default: synthetic boards."),
    split_file: Optional[Path] = typer.Option(None, "--split-file", help="Panel: take only one part of "
                                              "--tiles-from, as listed in this split.json."),
    split: str = typer.Option("val", "--split", help="Panel: that part, val or train."),
    margin: int = typer.Option(0, "--margin", min=0, help="Panel: bare board around the grid, pixels."),
    shift: str = typer.Option("0,0", "--shift", help="Panel: misregistration of the tested panel, 'DX,DY' pixels."),
    rotation: float = typer.Option(0.0, "--rotation", help="Panel: its rotation about the centre, degrees."),
    scale: float = typer.Option(1.0, "--scale", min=0.5, max=2.0, help="Panel: its scale."),
) -> None:
    """Generate synthetic PCB pairs (template + tested image with labeled defects) in DeepPCB layout."""
    from inspector.data import DataError
    from inspector.data.synth import write_deeppcb

    if out.exists() and any(out.iterdir()):
        _fail(f"error: {out} exists and is not empty; choose a new directory (nothing was overwritten)")
    if panel:
        from inspector.data.panels import Misregistration, build_panel_dataset

        try:
            shift_x, shift_y = (float(v) for v in shift.split(","))
        except ValueError:
            _fail(f"error: --shift: expected 'DX,DY' in pixels, e.g. 12.5,-7, got {shift!r}")
        try:
            build_panel_dataset(out, n, cols, rows, seed, tiles_from, split_file, split, margin,
                                Misregistration(shift_x, shift_y, rotation, scale))
        except (DataError, FileNotFoundError, ValueError) as error:
            _fail(f"error: {error}")
        typer.echo(f"wrote {n} panel(s) of {cols} x {rows} tiles to {out}")
        return
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
    gray_diff_s2d = "gray-diff-s2d"


class Head(str, Enum):
    yolo = "yolo"
    gfl = "gfl"


class Backend(str, Enum):
    lite = "lite"
    paddle = "paddle"


class Split(str, Enum):
    all = "all"
    train = "train"
    val = "val"


@app.command("train")
def train_command(
    arch: Arch = typer.Option(..., "--arch", help="Detector: a PP-YOLO teacher or a MobileNetV3 student."),
    data: list[Path] = typer.Option(..., "--data", help="Labeled data: DeepPCB / VOC directory or COCO JSON. Repeat "
                                    "for several sources (e.g. the base set and reviewed boards): one class list, a "
                                    "fixed validation split each (split.json, split-1.json, ...)."),
    weight: Optional[list[float]] = typer.Option(None, "--weight", help="Per --data source, in order: each of its "
                                                 "training boards is seen this many times per epoch (default 1)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics, plots)."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    epochs: int = typer.Option(30, "--epochs", min=1),
    batch: int = typer.Option(8, "--batch", min=1, help="Images per step."),
    input_size: int = typer.Option(320, "--input-size", help="Network input side (multiple of 32)."),
    crop_size: int = typer.Option(256, "--crop-size", help="Train on random crops of this side of the resized "
                                  "image (0: whole image). Validation always sees whole images."),
    input_mode: InputMode = typer.Option(InputMode.image_template, "--input-mode",
                                         help="image, or image and golden template stacked as channels."),
    head: Head = typer.Option(Head.yolo, "--head", help="yolo: anchor-based PP-YOLO head; gfl: anchor-free "
                              "PicoDet/PP-YOLOE-style head (quality scores, box distributions, task-aligned "
                              "assignment)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flips, 90-degree turns, lighting, noise."),
    dihedral: bool = typer.Option(False, "--dihedral/--no-dihedral", help="Each image, template and boxes in one "
                                  "of the 8 exact dihedral orientations, drawn uniformly (replaces the flips/turns)."),
    copy_paste: float = typer.Option(0.0, "--copy-paste", min=0.0, max=1.0, help="Probability that a training "
                                     "image gets labeled defects of other boards pasted where its template matches."),
    copy_paste_count: int = typer.Option(2, "--copy-paste-count", min=1, help="Pastes tried per such image."),
    copy_paste_balance: bool = typer.Option(False, "--copy-paste-balance/--copy-paste-by-frequency",
                                            help="Paste every class equally often (favours rare classes)."),
    aug_off_epochs: int = typer.Option(0, "--aug-off-epochs", min=0, help="Train the last N epochs on whole "
                                       "letterboxed images without crops, pastes or any augmentation."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (AdamW)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.9),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the train/val split (kept in split.json)."),
    seed: int = typer.Option(0, "--seed"),
    eval_every: int = typer.Option(1, "--eval-every", min=1, help="Validate every N epochs."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap steps per epoch (smoke tests)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this trained run's (best/) or checkpoint's "
                                        "weights instead of random ones: fine-tuning, e.g. on new boards."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train data-parallel in N processes on this node under "
                              "paddle.distributed.launch (GPUs: one per card; CPU: gloo, the cores split among "
                              "them). --batch is the global batch, a multiple of N."),
    ips: Optional[str] = typer.Option(None, "--ips", help="Several nodes: their IPs, comma-separated, the same "
                                      "command on each (see docs/distributed-training.md)."),
) -> None:
    """Train a detector; per-epoch validation, best/last checkpoints, metrics.csv and plots in --out."""
    _launch_ranks_if_asked(nproc, ips, out)
    for size, name in ((input_size, "--input-size"), (crop_size, "--crop-size")):
        if size % 32:
            _fail(f"error: {name} {size} is not a multiple of 32")
    from inspector.training.config import TrainConfig
    from inspector.training.trainer import train

    cfg = TrainConfig(arch=arch.value, data=_data_sources(data, weight), out=str(out), format=format.value if format else None,
                      epochs=epochs, batch_size=batch, input_size=input_size, crop_size=crop_size or None,
                      input_mode=input_mode.value, head=head.value, augment=augment, lr=lr, val_fraction=val_fraction,
                      split_seed=split_seed,
                      seed=seed, eval_every=eval_every, max_steps_per_epoch=max_steps,
                      init=str(init) if init else None, dihedral=dihedral, copy_paste=copy_paste,
                      copy_paste_count=copy_paste_count, copy_paste_balance=copy_paste_balance,
                      aug_off_epochs=aug_off_epochs)
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
    model: Optional[Path] = typer.Option(None, "--model", help="Model package (run through the runtime), or a "
                                         "training run / checkpoint directory. Default: the shipped package."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    backend: Backend = typer.Option(Backend.lite, "--backend", help="Engine for a package: Paddle Lite or "
                                    "Paddle Inference."),
    split: Split = typer.Option(Split.all, "--split", help="Evaluate all of DATA, or the run's own train/val "
                                "part of it (from the run's or package's split.json)."),
    score_threshold: Optional[float] = typer.Option(None, "--score-threshold", help="Threshold of the DeepPCB "
                                                    "F-score; default: the one that maximises F."),
    batch: int = typer.Option(8, "--batch", min=1),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
) -> None:
    """Official DeepPCB AP/F, COCO mAP@0.5 and mAP@0.5:0.95, and the class-aware DeepPCB P/R/F of a model on DATA."""
    import json

    from inspector.runtime.package import is_package

    if model is None or is_package(model):
        _eval_package(data, model, format, backend, split, score_threshold, json_path)
        return

    from inspector.data import DataError, load_dataset
    from inspector.data.loader import BatchLoader
    from inspector.data.split import load_split
    from inspector.training.checkpoint import load_checkpoint
    from inspector.training.validate import validate

    try:
        checkpoint = load_checkpoint(model)
        dataset = load_dataset(data, format=format.value if format else None)
        if split is not Split.all:
            split_file = checkpoint.path.parent / "split.json"
            if not split_file.is_file():
                _fail(f"error: --split {split.value} needs {split_file} (a training run's split)")
            train_set, val_set = load_split(dataset, split_file)
            dataset = val_set if split is Split.val else train_set
    except (DataError, FileNotFoundError, ValueError) as error:
        _fail(f"error: {error}")
    if dataset.class_names != checkpoint.class_names:
        _fail(f"error: {data} has classes {dataset.class_names}, the model {checkpoint.class_names}")
    cfg = checkpoint.model_config
    loader = BatchLoader(dataset, batch, cfg.input_size, cfg.input_mode, train=False)
    result = validate(checkpoint.build(), loader, checkpoint.class_names, score_threshold=score_threshold)
    summary = {**result.to_dict(), "model": str(checkpoint.path), "backend": "paddle-dygraph"}
    _echo_eval(result, len(dataset))
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2))


@app.command("distill")
def distill_command(
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher: a training run (its best/) or a "
                                           "checkpoint directory. Required unless --resume."),
    student_arch: Optional[str] = typer.Option(None, "--student-arch", help="Student architecture: mbv3-small, "
                                               "mbv3-large (optionally -x0.75 etc.). Required unless --resume."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Labeled data: DeepPCB / VOC directory or COCO "
                                              "JSON; repeat for several sources. Required unless --resume."),
    weight: Optional[list[float]] = typer.Option(None, "--weight", help="Per --data source, in order: each of its "
                                                 "training boards is seen this many times per epoch (default 1)."),
    out: Path = typer.Option(..., "--out", help="Run directory (student checkpoints, metrics, plots)."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Default 30 (with --resume: the run's)."),
    batch: int = typer.Option(8, "--batch", min=1, help="Images per step."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Default and only allowed value: the "
                                             "teacher's (the student must see the teacher's input)."),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", help="Train on random crops of this side (0: "
                                            "whole image); default: the teacher run's."),
    input_mode: Optional[InputMode] = typer.Option(None, "--input-mode", help="Default and only allowed value: "
                                                   "the teacher's."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flips, 90-degree turns, lighting, noise."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (AdamW)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.9,
                                       help="Used only when the teacher's split.json does not cover DATA."),
    split_seed: int = typer.Option(0, "--split-seed", help="Used only when the teacher's split.json does not "
                                   "cover DATA (otherwise the student keeps the teacher's split)."),
    seed: int = typer.Option(0, "--seed"),
    eval_every: int = typer.Option(1, "--eval-every", min=1, help="Validate every N epochs."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap steps per epoch (smoke tests)."),
    temperature: float = typer.Option(2.0, "--temperature", help="T softening the class scores (loss x T^2)."),
    alpha_start: float = typer.Option(0.7, "--alpha-start", help="Weight of the teacher terms in the first "
                                      "epoch; the label loss gets 1 - alpha."),
    alpha_end: float = typer.Option(0.3, "--alpha-end", help="Weight of the teacher terms in the last epoch "
                                    "(linear in between)."),
    confidence: float = typer.Option(0.5, "--confidence", help="Teacher objectness above which its boxes are "
                                     "targets."),
    cls_weight: float = typer.Option(1.0, "--cls-weight", help="Weight of the softened class-score term."),
    obj_weight: float = typer.Option(1.0, "--obj-weight", help="Weight of the objectness term."),
    box_weight: float = typer.Option(1.0, "--box-weight", help="Weight of the confident-box term."),
    feature_weight: float = typer.Option(1.0, "--feature-weight", help="Weight of the neck-feature (FitNets) "
                                         "term; 0 turns it off."),
    feature_normalize: bool = typer.Option(True, "--feature-normalize/--no-feature-normalize",
                                           help="Standardise feature maps per channel before the MSE."),
    schedule: str = typer.Option("linear", "--schedule", help="How alpha moves from --alpha-start to --alpha-end: "
                                 "linear or cosine."),
    feature_method: str = typer.Option("pkd", "--feature-method", help="gfl head's neck term: pkd (Pearson "
                                       "correlation) or cwd (channel-wise distillation)."),
    feature_temperature: float = typer.Option(1.0, "--feature-temperature", help="cwd's softmax temperature."),
    teacher_cache: bool = typer.Option(False, "--teacher-cache/--no-teacher-cache", help="Compute the teacher's "
                                       "outputs once per board and orientation and crop them (crops aligned to its "
                                       "coarsest stride; needs --dihedral or --no-augment)."),
    teacher_cache_mb: int = typer.Option(2048, "--teacher-cache-mb", min=1, help="Memory bound of --teacher-cache."),
    dihedral: bool = typer.Option(False, "--dihedral/--no-dihedral", help="The 8 exact dihedral transforms of each "
                                  "crop (replacing --augment's flips and turns)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this trained run's (best/) or checkpoint's "
                                        "weights instead of random ones: fine-tuning, e.g. on new boards."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train data-parallel in N processes on this node under "
                              "paddle.distributed.launch (GPUs: one per card; CPU: gloo, the cores split among "
                              "them). --batch is the global batch, a multiple of N."),
    ips: Optional[str] = typer.Option(None, "--ips", help="Several nodes: their IPs, comma-separated, the same "
                                      "command on each (see docs/distributed-training.md)."),
) -> None:
    """Distill a trained teacher into a small student: a training run whose loss adds the teacher's outputs
    and neck features; best/ and last/ hold the student alone (usable by eval and export)."""
    _launch_ranks_if_asked(nproc, ips, out)
    from inspector.data import DataError

    try:
        if resume:
            from inspector.compression.distill import resume_distillation

            run = resume_distillation(out, epochs=epochs)
        else:
            missing = [name for name, value in (("--teacher", teacher), ("--student-arch", student_arch),
                                                ("--data", data or None)) if value is None]
            if missing:
                _fail(f"error: {', '.join(missing)} needed (unless --resume)")
            from inspector.compression.distill import DistillConfig, distill
            from inspector.models import parse_arch
            from inspector.training.checkpoint import load_checkpoint
            from inspector.training.config import TrainConfig

            parse_arch(student_arch)
            teacher_checkpoint = load_checkpoint(teacher)
            teacher_model = teacher_checkpoint.model_config
            teacher_train = teacher_checkpoint.info.get("train_config") or {}
            if crop_size is None:
                crop_size = teacher_train.get("crop_size") or 0
            for size, name in ((input_size, "--input-size"), (crop_size, "--crop-size")):
                if size and size % 32:
                    _fail(f"error: {name} {size} is not a multiple of 32")
            config = DistillConfig(teacher=str(teacher), temperature=temperature, alpha_start=alpha_start,
                                   alpha_end=alpha_end, confidence_threshold=confidence, cls_weight=cls_weight,
                                   obj_weight=obj_weight, box_weight=box_weight, feature_weight=feature_weight,
                                   feature_normalize=feature_normalize, schedule=schedule,
                                   feature_method=feature_method, feature_temperature=feature_temperature,
                                   teacher_cache=teacher_cache, teacher_cache_mb=teacher_cache_mb)
            cfg = TrainConfig(arch=student_arch, data=_data_sources(data, weight), out=str(out), format=format.value if format else None,
                              epochs=epochs or 30, batch_size=batch,
                              input_size=input_size or teacher_model.input_size, crop_size=crop_size or None,
                              input_mode=input_mode.value if input_mode else teacher_model.input_mode, augment=augment,
                              lr=lr, val_fraction=val_fraction, split_seed=split_seed, seed=seed,
                              eval_every=eval_every, max_steps_per_epoch=max_steps,
                              init=str(init) if init else None, dihedral=dihedral)
            run = distill(cfg, config)
    except KeyboardInterrupt:
        _fail(f"interrupted: last checkpoint saved in {out}/last; continue with --resume", code=130)
    except (DataError, FileExistsError, FileNotFoundError, ValueError) as error:
        _fail(f"error: {error}")
    typer.echo(f"done: {run}")


class Criterion(str, Enum):
    l1 = "l1"
    fpgm = "fpgm"


@app.command("prune")
def prune_command(
    model: Optional[Path] = typer.Option(None, "--model", help="Run (its best/) or checkpoint directory to prune. "
                                         "Required unless --resume."),
    data: Optional[Path] = typer.Option(None, "--data", help="The labeled data it was trained on. Required unless "
                                        "--resume."),
    out: Path = typer.Option(..., "--out", help="New run directory (pruned and fine-tuned checkpoints, report)."),
    criterion: Criterion = typer.Option(Criterion.l1, "--criterion", help="l1: keep the filters with the largest L1 "
                                        "norm; fpgm: remove those nearest the geometric median of their layer."),
    ratio: Optional[float] = typer.Option(None, "--ratio", min=0.0, max=0.95, help="Remove this fraction of the "
                                          "channels of every channel group."),
    auto_ratio: bool = typer.Option(False, "--auto-ratio", help="Instead of --ratio: per-group ratios from a "
                                    "sensitivity scan on validation images."),
    target_flops: float = typer.Option(0.3, "--target-flops", help="--auto-ratio: fraction of the FLOPs to remove."),
    max_drop: float = typer.Option(0.02, "--max-drop", help="--auto-ratio: largest mAP@0.5:0.95 drop (before "
                                   "fine-tuning) that pruning one group may cost on the scan images."),
    scan_ratios: str = typer.Option("0.25,0.5,0.75", "--scan-ratios", help="--auto-ratio: ratios tried per group."),
    scan_images: int = typer.Option(64, "--scan-images", min=1, help="--auto-ratio: validation images scanned."),
    channel_multiple: int = typer.Option(8, "--channel-multiple", min=1, help="Round kept channels to multiples "
                                         "of this (8 suits ARM kernels)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Fine-tuning epochs (default 6; with "
                                         "--resume: the run's)."),
    lr: float = typer.Option(5e-4, "--lr", help="Fine-tuning peak learning rate (AdamW)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Images per step (default: the source run's)."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    seed: int = typer.Option(0, "--seed"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap steps per epoch (smoke tests)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the fine-tuning in --out from its last checkpoint."),
) -> None:
    """Structured channel pruning of a trained detector, then fine-tuning: a new run with best/ and last/
    (usable by eval and export), pruning.json (parameters, FLOPs, mAP before and after) and, with
    --auto-ratio, sensitivity.json."""
    import json

    from inspector.data import DataError

    try:
        if resume:
            from inspector.compression.prune import resume_pruning

            run = resume_pruning(out, epochs=epochs)
        else:
            missing = [name for name, value in (("--model", model), ("--data", data)) if value is None]
            if missing:
                _fail(f"error: {', '.join(missing)} needed (unless --resume)")
            if (ratio is None) == (not auto_ratio):
                _fail("error: give exactly one of --ratio R and --auto-ratio")
            try:
                ratios = tuple(float(r) for r in scan_ratios.split(","))
            except ValueError:
                _fail(f"error: --scan-ratios {scan_ratios!r}: expected comma-separated numbers such as 0.25,0.5")
            from inspector.compression.prune import PruneConfig, prune

            cfg = PruneConfig(model=str(model), data=str(data), out=str(out), criterion=criterion.value, ratio=ratio,
                              target_flops_reduction=target_flops, max_drop=max_drop, scan_ratios=ratios,
                              scan_images=scan_images, channel_multiple=channel_multiple,
                              format=format.value if format else None, epochs=epochs or 6, lr=lr, batch_size=batch,
                              seed=seed, max_steps_per_epoch=max_steps)
            run = prune(cfg)
    except KeyboardInterrupt:
        _fail(f"interrupted: if fine-tuning had started, {out}/last holds it; continue with --resume", code=130)
    except (DataError, FileExistsError, FileNotFoundError, ValueError) as error:
        _fail(f"error: {error}")
    from inspector.compression.prune import REPORT_FILE, format_report

    typer.echo(format_report(json.loads((run / REPORT_FILE).read_text())))
    typer.echo(f"done: {run}")


class QuantMethod(str, Enum):
    qat = "qat"
    ptq = "ptq"


@app.command("quantize")
def quantize_command(
    model: Path = typer.Option(..., "--model", help="FP32 training run (its best/) or checkpoint directory."),
    data: Path = typer.Option(..., "--data", help="The labeled data it was trained on (its split.json is reused)."),
    method: QuantMethod = typer.Option(QuantMethod.qat, "--method", help="ptq: calibrate the INT8 scales on "
                                       "training images; qat: then fine-tune through the quantization."),
    out: Path = typer.Option(..., "--out", help="New run directory (INT8 and FP32 inference models, metrics)."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    epochs: int = typer.Option(3, "--epochs", min=0, help="QAT fine-tuning epochs (0: calibration only)."),
    lr: float = typer.Option(1e-4, "--lr", help="QAT peak learning rate (AdamW, cosine to 0)."),
    batch: int = typer.Option(8, "--batch", min=1, help="Images per step."),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", help="QAT training crop (0: whole image); "
                                            "default: the source run's."),
    calibration_images: int = typer.Option(64, "--calibration-images", min=1, help="Training images that set "
                                           "the activation scales."),
    skip_layers: Optional[str] = typer.Option(None, "--skip-layers", help="Comma-separated convolutions or blocks "
                                              "kept in FP32 (mixed precision), e.g. head.predictions."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Rank the layers by the mAP their quantization "
                                     "costs (sensitivity.json)."),
    sensitivity_images: int = typer.Option(32, "--sensitivity-images", min=1, help="Validation images it uses."),
    skip_most_sensitive: int = typer.Option(0, "--skip-most-sensitive", min=0, help="With --sensitivity: also "
                                            "keep the K most sensitive layers in FP32."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Paddle Inference threads for the "
                                          "evaluation (default: OMP_NUM_THREADS)."),
    lite_x86_safe: bool = typer.Option(False, "--lite-x86-safe", help="Also keep in FP32 the layers Paddle Lite's "
                                       "x86 INT8 kernels cannot run (stem, depthwise), so one INT8 model serves "
                                       "x86 Lite, ARM and oneDNN."),
    seed: int = typer.Option(0, "--seed"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap QAT steps per epoch (smoke tests)."),
) -> None:
    """INT8 quantization (QAT or PTQ) of a trained detector, exported as a Paddle inference model for
    `inspector export`; FP32 and INT8 accuracy measured through Paddle Inference (metrics.json)."""
    from inspector.data import DataError

    try:
        from inspector.compression.quantize import QuantizeConfig, quantize

        cfg = QuantizeConfig(model=str(model), data=str(data), out=str(out), method=method.value,
                             format=format.value if format else None, epochs=epochs, lr=lr, batch_size=batch,
                             crop_size=crop_size, calibration_images=calibration_images,
                             skip_layers=[s.strip() for s in (skip_layers or "").split(",") if s.strip()],
                             sensitivity=sensitivity, sensitivity_images=sensitivity_images,
                             skip_most_sensitive=skip_most_sensitive, threads=threads, seed=seed,
                             lite_x86_safe=lite_x86_safe,
                             max_steps_per_epoch=max_steps)
        run = quantize(cfg)
    except (DataError, FileExistsError, FileNotFoundError, ValueError) as error:
        _fail(f"error: {error}")
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("fp32", "int8", "int8_onednn"):
        row = metrics[name]
        typer.echo(f"{name:11s} ({row['runtime']['precision']}, {row['model_bytes'] / 1e6:.2f} MB): official AP "
                   f"{row['official_ap']:.4f}  F {row['official_f']:.4f}  mAP@0.5 {row['map50']:.4f}  "
                   f"mAP@0.5:0.95 {row['map50_95']:.4f}  F(IoU>0.33) {row['f1_iou033']:.4f}")
    for key, label in (("drop", "INT8 model"), ("drop_onednn", "oneDNN INT8 kernels")):
        drop = metrics[key]
        typer.echo(f"drop ({label}) on {metrics['n_images']} validation images: official AP "
                   f"{drop['official_ap']:+.4f}  F {drop['official_f']:+.4f}  mAP@0.5 {drop['map50']:+.4f}  "
                   f"mAP@0.5:0.95 {drop['map50_95']:+.4f}  F(IoU>0.33) {drop['f1_iou033']:+.4f}")
    typer.echo(f"done: {run}")


@app.command("pipeline")
def pipeline_command(
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Labeled data: DeepPCB / VOC directory or COCO "
                                              "JSON; repeat for several sources (base set + reviewed boards)."),
    weight: Optional[list[float]] = typer.Option(None, "--weight", help="Per --data source, in order: each of its "
                                                 "training boards is seen this many times per epoch (default 1)."),
    out: Path = typer.Option(..., "--out", help="Pipeline directory (one sub-directory per stage, report.md/json/png); "
                             "run the same command again to continue it."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML preset, e.g. configs/pipeline-cpu.yaml "
                                          "(2-core CPU) or configs/pipeline-gpu.yaml; options below override it."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Override format auto-detection."),
    teacher_arch: Optional[str] = typer.Option(None, "--teacher-arch", help="ppyolo-r18 | ppyolo-r34 | ppyolo-r50 ..."),
    student_arch: Optional[str] = typer.Option(None, "--student-arch", help="mbv3-small | mbv3-large (-x0.75 ...)."),
    head: Optional[Head] = typer.Option(None, "--head", help="Head of the teacher and students: yolo "
                                        "(anchor-based) or gfl (anchor-free)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Network input side (multiple of 32)."),
    input_mode: Optional[InputMode] = typer.Option(None, "--input-mode", help="image or image+template."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Reuse this trained teacher run instead of "
                                           "training one (same input size and mode)."),
    student: Optional[Path] = typer.Option(None, "--student", help="Reuse this student-alone run as the baseline "
                                           "(it must have the pipeline's schedule and split)."),
    teacher_epochs: Optional[int] = typer.Option(None, "--teacher-epochs", min=1),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs of the student alone and of the "
                                         "distilled student (the same schedule, so the gain is comparable)."),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", help="Training crop of both students (0: whole "
                                            "image)."),
    qat_epochs: Optional[int] = typer.Option(None, "--qat-epochs", min=0),
    prune: Optional[float] = typer.Option(None, "--prune", help="Also prune this fraction of the channels of the "
                                          "best FP32 student (then fine-tune) before quantizing."),
    prune_epochs: Optional[int] = typer.Option(None, "--prune-epochs", min=1, help="Fine-tuning epochs after "
                                               "pruning (a heavily pruned model needs more to recover)."),
    distill: Optional[bool] = typer.Option(None, "--distill/--no-distill", help="--no-distill: no distilled stage "
                                           "(when the teacher cannot beat the student in the time there is)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the shipped package (default OUT-int8)."),
    until: Optional[str] = typer.Option(None, "--until", help="Stop after this stage (teacher, student, distilled, "
                                        "pruned, qat, ptq, package, measure, report)."),
    redo: Optional[str] = typer.Option(None, "--redo", help="Redo this finished stage and all later ones (qat, ptq, "
                                       "package, measure or report), e.g. after an exporter update."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap steps per epoch (smoke tests)."),
) -> None:
    """Teacher -> student alone -> distilled student -> (pruned) -> QAT and PTQ INT8 -> model package, every stage
    measured through the runtime, with report.md / report.json / report.png. Resumable stage by stage."""
    import json

    from inspector.data import DataError
    from inspector.export import ExportError, PackageError
    from inspector.pipeline import PipelineConfig, PipelineError, read_preset, run_pipeline
    from inspector.pipeline.run import STATE_FILE

    try:
        values = read_preset(config) if config else {}
        if (out / STATE_FILE).is_file() and config is None and not data:
            values = json.loads((out / STATE_FILE).read_text())["config"]  # continue with the saved settings
        overrides = {"data": _data_sources(data, weight) if data else None, "out": str(out), "format": format.value if format else None,
                     "teacher_arch": teacher_arch, "student_arch": student_arch, "input_size": input_size,
                     "head": head.value if head else None,
                     "input_mode": input_mode.value if input_mode else None,
                     "teacher_run": str(teacher) if teacher else None, "student_run": str(student) if student else None,
                     "teacher_epochs": teacher_epochs, "epochs": epochs, "qat_epochs": qat_epochs,
                     "crop_size": crop_size,
                     "prune_ratio": prune, "prune_epochs": prune_epochs, "distill": distill, "package_name": name,
                     "max_steps_per_epoch": max_steps}
        values.update({key: value for key, value in overrides.items() if value is not None})
        cfg = PipelineConfig.from_dict(values, source=str(config) if config else "command line")
        run = run_pipeline(cfg, until=until, echo=typer.echo, redo=redo)
    except KeyboardInterrupt:
        _fail(f"interrupted: finished stages are kept; run the same command to continue {out}", code=130)
    except (PipelineError, DataError, ExportError, PackageError, FileExistsError, FileNotFoundError,
            ValueError) as error:
        _fail(f"error: {error}")
    report = run / "report.md"
    if report.is_file():
        typer.echo(f"report: {report}")
    typer.echo(f"done: {run}")


@app.command("export")
def export_command(
    model: Path = typer.Option(..., "--model", help="Training run or checkpoint (exported in FP32), or a directory "
                               "holding an inference model NAME.pdmodel + NAME.pdiparams (e.g. INT8 from quantize)."),
    out: Path = typer.Option(..., "--out", help="Package directory to create, e.g. models/NAME."),
    targets: str = typer.Option("x86,arm", "--targets", help="Paddle Lite targets, comma-separated: x86, arm."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Labeled data to measure the package on; "
                                             "the metrics go into its manifest.json."),
    eval_split: Split = typer.Option(Split.val, "--eval-split", help="Part of --eval-data to measure on (train/val "
                                     "from the source run's split.json, or all)."),
    format: Optional[DataFormat] = typer.Option(None, "--format", help="Format of --eval-data (auto-detected)."),
    x86_int8: bool = typer.Option(False, "--x86-int8", help="INT8 sources: convert the INT8 graph for x86 too "
                                  "(default: the x86 .nb is the FP32 twin; Lite's x86 INT8 kernels are ~20% faster "
                                  "but lost 2.5 pt mAP@0.5 on the DeepPCB student)."),
) -> None:
    """Write a model package: Paddle inference model, Paddle Lite .nb per target, manifest.json."""
    from inspector.export import ExportError, PackageError, export_package, record_metrics
    from inspector.runtime import BackendError, Detector
    from inspector.runtime.package import lite_target_for_this_machine

    target_list = tuple(t.strip() for t in targets.split(",") if t.strip())
    runnable_here = lite_target_for_this_machine().removeprefix("lite-") in target_list
    try:
        package = export_package(model, out, targets=target_list, progress=typer.echo, x86_int8=x86_int8)
        # The package must load and run through the runtime before anyone else sees it.
        detector = Detector.load(package, backend="lite" if runnable_here else "paddle", threads=_all_cores())
    except (ExportError, PackageError, BackendError, FileNotFoundError, ValueError) as error:
        _fail(f"error: {error}")
    typer.echo(f"loaded through the runtime: {detector.info.engine}, precision {detector.info.precision}")
    if eval_data is None:
        return
    dataset = _load_eval_dataset(eval_data, format, eval_split, package)
    result = _evaluate_package(detector, dataset, None)
    metrics = {**result.to_dict(), "data": str(eval_data), "split": eval_split.value, "backend": detector.info.backend,
               "precision_ran": detector.info.precision, "engine": detector.info.engine}
    record_metrics(package, metrics, score_threshold=result.score_threshold)
    _echo_eval(result, len(dataset))
    typer.echo(f"metrics recorded in {package / 'manifest.json'}")


@app.command("bench")
def bench_command(
    model: Optional[Path] = typer.Option(None, "--model", help="Model package. Default: the shipped package."),
    backend: Backend = typer.Option(Backend.lite, "--backend", help="Paddle Lite or Paddle Inference."),
    threads: int = typer.Option(1, "--threads", min=1, help="Threads the engine may use."),
    runs: int = typer.Option(100, "--runs", min=1, help="Timed runs."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed runs first."),
    image: Optional[Path] = typer.Option(None, "--image", help="Frame to time (default: a bundled 640x640 DeepPCB "
                                         "pair)."),
    template: Optional[Path] = typer.Option(None, "--template", help="Its golden template (image+template models)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
) -> None:
    """Latency of a package on a real-sized frame: p50/p99 ms, FPS, model size, peak memory."""
    import json

    from inspector.data import DataError, load_dataset, read_image
    from inspector.data.bundled import BUNDLED_DEEPPCB
    from inspector.runtime import BackendError, Detector, PackageError
    from inspector.runtime.bench import benchmark

    try:
        detector = Detector.load(model, backend=backend.value, threads=threads)
        if image is None:
            sample = load_dataset(BUNDLED_DEEPPCB).samples[0]
            frame, golden = sample.load_image(), sample.load_template()
        else:
            frame, golden = read_image(image), None if template is None else read_image(template)
        result = benchmark(detector, frame, golden if detector.needs_template else None, runs=runs, warmup=warmup)
    except (PackageError, BackendError, DataError, ValueError) as error:
        _fail(f"error: {error}")
    typer.echo(f"{result.engine} on {result.device}, {result.threads} thread(s), precision {result.precision}")
    typer.echo(f"frame {result.frame_size[0]}x{result.frame_size[1]} -> input {result.input_size}: "
               f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  {result.fps:.1f} FPS  "
               f"(network p50 {result.infer_p50_ms:.2f} ms)  model {result.model_bytes / 1e6:.2f} MB  "
               f"peak RSS {result.peak_rss_mb:.0f} MB")
    if json_path:
        json_path.write_text(json.dumps(result.to_dict(), indent=2))


@app.command("predict")
def predict_command(
    images: list[Path] = typer.Argument(..., help="Images to inspect."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model package. Default: the shipped package."),
    template: Optional[Path] = typer.Option(None, "--template", help="Golden template for every image (default for "
                                            "DeepPCB-named X_test.jpg: X_temp.jpg beside it)."),
    align: bool = typer.Option(False, "--align", help="Register each image to the template first (camera frames "
                               "that are not pre-aligned); images that cannot be aligned are refused."),
    out: Path = typer.Option(Path("predictions"), "--out", help="Directory for annotated images and "
                             "detections.json."),
    backend: Backend = typer.Option(Backend.lite, "--backend", help="Paddle Lite or Paddle Inference."),
    score_threshold: Optional[float] = typer.Option(None, "--score-threshold", help="Default: the package's."),
    tile_size: int = typer.Option(640, "--tile-size", min=32, help="Images larger than this (whole panels) are "
                                  "registered to the template, inspected in tiles of this side and stitched."),
    overlap: int = typer.Option(64, "--overlap", min=0, help="Pixels neighbouring panel tiles share."),
) -> None:
    """Detect defects in images: annotated copies and one detections.json in --out.

    A whole panel (larger than a tile) gets a shrunk overview with every defect boxed and numbered, and
    its detections in panel pixels (and golden-panel pixels) in detections.json."""
    import json

    import cv2

    from inspector.data import DataError, read_image
    from inspector.runtime import AlignmentError, BackendError, Detector, PackageError
    from inspector.runtime.draw import draw_detections
    from inspector.runtime.panel import PanelInspector, draw_overview

    try:
        detector = Detector.load(model, backend=backend.value, threads=_all_cores())
        golden = read_image(template) if template is not None and detector.needs_template else None
    except (PackageError, BackendError, DataError, ValueError) as error:
        _fail(f"error: {error}")
    try:
        panels = PanelInspector(detector, tile_size=tile_size, overlap=overlap)
    except ValueError as error:
        _fail(f"error: {error}")
    if template is not None and not detector.needs_template:
        typer.secho(f"note: this model takes no template; --template {template} is not used", err=True)
    out.mkdir(parents=True, exist_ok=True)
    records, refused, used_names = [], 0, set()
    for path in images:
        record = {"image": str(path)}
        try:
            frame = read_image(path)
            template_path = template
            if detector.needs_template and golden is None:
                template_path = _deeppcb_template(path)
            record["template"] = None if template_path is None else str(template_path)
            frame_template = (golden if golden is not None else read_image(template_path)) \
                if detector.needs_template else None
            found = panels.inspect(frame, frame_template, align=align, score_threshold=score_threshold)
        except (DataError, AlignmentError, ValueError) as error:
            refused += 1
            record["error"] = str(error)
            typer.secho(f"{path}: not judged: {error}", fg=typer.colors.RED, err=True)
            records.append(record)
            continue
        name = _unique_name(path, used_names)
        if found.is_panel:
            overview, overview_scale = draw_overview(frame, found)
            cv2.imwrite(str(out / name), overview)
            record.update(annotated=name, overview_scale=round(overview_scale, 6), **found.to_dict())
            found_ms = found.timing_ms["total"]
        else:
            cv2.imwrite(str(out / name), draw_detections(frame, found.frame))
            record.update(annotated=name, **found.frame.to_dict())
            found_ms = found.frame.timing.total_ms
        records.append(record)
        summary = ", ".join(f"{n} {s:.2f}" for n, s in zip(found.class_names, found.scores)) or "no defects"
        tiles = f", panel in {found.tiles} tiles" if found.is_panel else ""
        typer.echo(f"{path}: {summary}  ({found_ms:.1f} ms{tiles})")
    report = {"model": detector.info.package, "runtime": detector.info.to_dict(),
              "score_threshold": detector.manifest.postprocess.score_threshold if score_threshold is None
              else score_threshold, "images": records}
    (out / "detections.json").write_text(json.dumps(report, indent=2))
    typer.echo(f"wrote {len(records) - refused} annotated image(s) and detections.json to {out}")
    if refused:
        raise typer.Exit(1)


def _all_cores() -> int:
    import os

    return os.cpu_count() or 1


def _deeppcb_template(image: Path) -> Path:
    """DeepPCB names a tested image X_test.jpg and its golden template X_temp.jpg."""
    if not image.stem.endswith("_test"):
        raise ValueError(f"{image}: this model needs a golden template; pass --template (only DeepPCB-named "
                         "X_test.jpg images find theirs, X_temp.jpg, on their own)")
    return image.with_name(image.stem[: -len("_test")] + "_temp" + image.suffix)


def _unique_name(path: Path, used: set[str]) -> str:
    name, index = f"{path.stem}.jpg", 1
    while name in used:
        name, index = f"{path.stem}_{index}.jpg", index + 1
    used.add(name)
    return name


def _load_eval_dataset(data: Path, format: Optional[DataFormat], split: Split, package: Path):
    """DATA, or its train/val part as listed in the package's split.json."""
    from inspector.data import DataError, load_dataset
    from inspector.data.split import load_split
    from inspector.export.manifest import SPLIT_FILE

    try:
        dataset = load_dataset(data, format=format.value if format else None)
        if split is not Split.all:
            split_file = package / SPLIT_FILE
            if not split_file.is_file():
                _fail(f"error: --split {split.value} needs {split_file} (the package's copy of its training split); "
                      "this package has none: use --split all")
            train_set, val_set = load_split(dataset, split_file)
            dataset = val_set if split is Split.val else train_set
    except (DataError, FileNotFoundError, ValueError) as error:
        _fail(f"error: {error}")
    return dataset


def _evaluate_package(detector, dataset, score_threshold: Optional[float]):
    from inspector.runtime.evaluate import evaluate_detector

    try:
        return evaluate_detector(detector, dataset, score_threshold=score_threshold)
    except ValueError as error:
        _fail(f"error: {error}")


def _eval_package(data: Path, model: Optional[Path], format: Optional[DataFormat], backend: Backend, split: Split,
                  score_threshold: Optional[float], json_path: Optional[Path]) -> None:
    """`inspector eval` of a model package, through the runtime."""
    import json

    from inspector.runtime import BackendError, Detector, PackageError

    try:
        detector = Detector.load(model, backend=backend.value, threads=_all_cores())
    except (PackageError, BackendError, ValueError) as error:
        _fail(f"error: {error}")
    package = detector.package.path
    dataset = _load_eval_dataset(data, format, split, package)
    result = _evaluate_package(detector, dataset, score_threshold)
    _echo_eval(result, len(dataset))
    typer.echo(f"through {detector.info.engine}, precision {detector.info.precision}")
    if json_path:
        summary = {**result.to_dict(), "model": str(package), "backend": detector.info.backend,
                   "runtime": detector.info.to_dict()}
        json_path.write_text(json.dumps(summary, indent=2))


def _echo_eval(result, n_images: int) -> None:
    official_at = "-" if result.official_threshold is None else f"{result.official_threshold:.3f}"
    typer.echo(f"{n_images} images: official DeepPCB AP {result.official_ap:.4f}  F {result.official_f:.4f} "
               f"(P {result.official_precision:.4f}  R {result.official_recall:.4f} at score {official_at})")
    typer.echo(f"  COCO mAP@0.5 {result.map50:.4f}  mAP@0.5:0.95 {result.map50_95:.4f}  class-aware "
               f"P {result.precision:.4f}  R {result.recall:.4f}  F(IoU>0.33) {result.f1_iou033:.4f} "
               f"at score {result.score_threshold}")
    for name, row in result.per_class.items():
        typer.echo(f"  {name:10s} AP50 {row.ap50 if row.ap50 is not None else float('nan'):.4f}  "
                   f"AP50:95 {row.ap50_95 if row.ap50_95 is not None else float('nan'):.4f}  n={row.num_gt}")


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the demo writes its predictions and pipeline."),
) -> None:
    """The main job on bundled data: the shipped model on real validation boards (eval, latency, annotated
    images), then the retraining pipeline on synthetic boards with a tiny schedule."""
    from inspector.demo import run_demo
    from inspector.runtime import BackendError, PackageError

    try:
        run_demo(out)
    except (PackageError, BackendError) as error:
        _fail(f"error: {error}")


@app.command("serve")
def serve_command(
    source: Optional[str] = typer.Option(None, "--source", help="Camera index, video file, rtsp/http(s) URL, hot-folder "
                                         "directory, or demo."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model package. Default: the shipped package."),
    line: Optional[str] = typer.Option(None, "--line", help="Production line name (MQTT topics, records)."),
    db: Optional[str] = typer.Option(None, "--db", help="postgresql://... record store. Default: SQLite in --data-dir."),
    mqtt: Optional[str] = typer.Option(None, "--mqtt", help="mqtt://host:port broker for results and alarms."),
    http: Optional[str] = typer.Option(None, "--http", help="HOST:PORT of the HTTP API (default 127.0.0.1:8080; "
                                       "empty: none). The bearer token comes from the config or INSPECTOR_TOKEN."),
    evidence: Optional[Path] = typer.Option(None, "--evidence", help="Directory for JPEGs of NG frames."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Records database, spool, hot-folder ledger."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="PEM certificate: the API is served over HTTPS "
                                            "only (with --tls-key)."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML settings file (see deploy/service/); "
                                          "INSPECTOR_* variables and these options override it."),
    opcua: Optional[str] = typer.Option(None, "--opcua", help="opc.tcp://HOST:PORT: OPC UA server for the PLC "
                                        "handshake; frames are then inspected on trigger (deploy/plc/README.md)."),
    modbus: Optional[str] = typer.Option(None, "--modbus", help="HOST:PORT: Modbus TCP server for the PLC handshake "
                                         "(trigger mode; register map in deploy/plc/README.md)."),
    recipes: Optional[Path] = typer.Option(None, "--recipes", help="Directory of recipe files (inspector recipe)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Recipe to start with (default: the last active)."),
) -> None:
    """Headless line service: inspect every frame, store and publish verdicts, serve health, metrics and results.
    Runs until SIGTERM/SIGINT, then finishes the queued frames and exits 0."""
    import logging

    from inspector.service.run import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"source": source, "model": model, "line": line, "db": db, "mqtt": mqtt, "http": http,
                 "evidence": evidence, "data_dir": data_dir, "opcua": opcua, "modbus": modbus, "recipes": recipes,
                 "recipe": recipe, "tls_cert": tls_cert, "tls_key": tls_key}
    raise typer.Exit(serve(config, overrides))


recipe_app = typer.Typer(help="Recipes: one YAML file per board type (model package, golden template, ignore "
                         "regions, per-class thresholds, camera settings, trigger mode), reviewed in git.",
                         no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
_RECIPES_DIR = typer.Option(Path("recipes"), "--dir", envvar="INSPECTOR_RECIPES", help="Recipes directory.")


@recipe_app.command("list")
def recipe_list_command(directory: Path = _RECIPES_DIR) -> None:
    """Every recipe on file: name, version, model, and whether it validates."""
    from inspector.service.recipes import RecipeError, list_recipes, load_recipe

    try:
        paths = list_recipes(directory)
    except RecipeError as error:
        _fail(f"error: {error}")
    for path in paths:
        try:
            recipe = load_recipe(path, read_template=False)
            typer.echo(f"{recipe.name:24s} v{recipe.version:8s} model {recipe.spec.model}  trigger {recipe.spec.trigger}")
        except RecipeError as error:
            typer.echo(f"{path.stem:24s} INVALID: {str(error).splitlines()[0]}")


@recipe_app.command("show")
def recipe_show_command(name: str = typer.Argument(..., help="Recipe name (its file name without .yaml)."),
                        directory: Path = _RECIPES_DIR) -> None:
    """One recipe, validated, with its files resolved (JSON)."""
    import json

    from inspector.service.recipes import RecipeError, load_recipe, recipe_path

    try:
        recipe = load_recipe(recipe_path(directory, name))
    except RecipeError as error:
        _fail(f"error: {error}")
    typer.echo(json.dumps(recipe.summary(), indent=2, default=str))


@recipe_app.command("validate")
def recipe_validate_command(names: Optional[list[str]] = typer.Argument(None, help="Recipes to check (default: all)."),
                            directory: Path = _RECIPES_DIR) -> None:
    """Check recipes against the schema and their files (model, template, class names); exit 1 on any error."""
    from inspector.service.recipes import RecipeError, list_recipes, load_recipe, recipe_path

    try:
        paths = [recipe_path(directory, name) for name in names] if names else list_recipes(directory)
    except RecipeError as error:
        _fail(f"error: {error}")
    failed = 0
    for path in paths:
        try:
            recipe = load_recipe(path)
            typer.echo(f"ok: {recipe.name} v{recipe.version} ({path})")
        except RecipeError as error:
            failed += 1
            typer.secho(str(error), fg=typer.colors.RED, err=True)
    if failed:
        raise typer.Exit(1)


@recipe_app.command("create")
def recipe_create_command(
    name: str = typer.Argument(..., help="Recipe name; the file is DIR/NAME.yaml."),
    version: str = typer.Option("1", "--version"),
    model: str = typer.Option("default", "--model", help="Model package directory (relative to the recipes "
                              "directory), or default."),
    template: Optional[str] = typer.Option(None, "--template", help="Golden template image (relative path)."),
    score_threshold: Optional[float] = typer.Option(None, "--score-threshold", min=0.0, max=1.0),
    threshold: Optional[list[str]] = typer.Option(None, "--threshold", help="CLASS=SCORE, repeatable."),
    ignore: Optional[list[str]] = typer.Option(None, "--ignore", help="X1,Y1,X2,Y2 region in frame pixels, repeatable."),
    trigger: str = typer.Option("software", "--trigger", help="software | hardware | free-run"),
    description: str = typer.Option("", "--description"),
    directory: Path = _RECIPES_DIR,
) -> None:
    """Write a new recipe file (validated first); edit it later and bump its version."""
    from pydantic import ValidationError

    from inspector.service.recipes import RecipeError, RecipeFile, load_recipe, write_recipe

    try:
        thresholds = {key: float(value) for key, _, value in (item.partition("=") for item in threshold or [])}
        regions = [tuple(float(v) for v in item.split(",")) for item in ignore or []]
    except ValueError as error:
        _fail(f"error: --threshold CLASS=SCORE and --ignore X1,Y1,X2,Y2 expect numbers ({error})")
    try:
        spec = RecipeFile(name=name, version=version, description=description, model=model, template=template,
                          ignore_regions=regions, score_threshold=score_threshold, thresholds=thresholds,
                          trigger=trigger)
    except ValidationError as error:
        _fail("error: " + "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors()))
    try:
        path = write_recipe(directory, spec)
    except RecipeError as error:
        _fail(f"error: {error}")
    try:
        load_recipe(path)
    except RecipeError as error:
        path.unlink()
        _fail(f"error: not written: {error}")
    typer.echo(f"wrote {path}")


@app.command("gui")
def gui_command(
    model: Optional[Path] = typer.Option(None, "--model", help="Model package. Default: the last one used, else "
                                         "the shipped package."),
    source: Optional[str] = typer.Option(None, "--source", help="demo | camera index (0, 1 ...) | video file | "
                                         "rtsp:// or http(s):// URL | folder of images (hot folder). Default: the "
                                         "last one used, else demo."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.1, help="Pace of the demo and of video files "
                                        "(default: demo 2 frames/s, a video its own rate)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Settings file (default: $INSPECTOR_GUI_CONFIG, "
                                          "else ~/.config/pcb-inspector/gui.json)."),
    panel: Optional[Path] = typer.Option(None, "--panel", help="Review one whole panel instead: its defect map; "
                                         "click a defect to see it at full resolution beside the golden panel."),
    template: Optional[Path] = typer.Option(None, "--template", help="With --panel: the golden panel (default: "
                                            "X_temp beside X_test)."),
) -> None:
    """The operator window: live inspection with PASS/NG, counters, defect log, review to labeled data."""
    if panel is not None:
        from gui.panel_view import main as review_panel

        arguments = [str(panel)] + (["--template", str(template)] if template else []) + \
            (["--model", str(model)] if model else [])
        raise typer.Exit(review_panel(arguments))
    from gui.app import run_gui

    raise typer.Exit(run_gui(model=str(model) if model else None, source=source, fps=fps, config=config))


def main() -> None:
    import os

    # Paddle's CPU kernels use OpenMP; by default they leave cores idle (1.5x faster with all of them).
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    app()


if __name__ == "__main__":
    main()
