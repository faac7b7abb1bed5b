"""``inspector train`` and ``inspector distill``: a detector, or a small student taught by a trained teacher."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import config_from_options, data_sources, fail, given, launch_ranks_if_asked, user_errors
from inspector.cli.options import (Arch, Augment, Batch, EvalEvery, Format, Head, InputMode, Init, Ips, MaxSteps,
                                   Nms, NmsChoice, NmsThreshold, Nproc, PeakLr, Resume, Seed, Weight, config_option,
                                   for_config, value_of)
from inspector.compression.distill_config import FEATURE_METHODS, SCHEDULES, DistillConfig
from inspector.training.config import TrainConfig


# The flags of TrainConfig's fields whose names differ from the field's (the others: --field-name).
TRAIN_FLAGS = {"batch_size": "--batch", "max_steps_per_epoch": "--max-steps"}
DISTILL_FLAGS = {"confidence_threshold": "--confidence"}
# The shared options, with TrainConfig's defaults in --help (train and the student of distill).
TrainBatch = for_config(Batch, TrainConfig, "batch_size")
TrainLr = for_config(PeakLr, TrainConfig, "lr")
TrainAugment = for_config(Augment, TrainConfig, "augment")
TrainSeed = for_config(Seed, TrainConfig, "seed")
TrainEvalEvery = for_config(EvalEvery, TrainConfig, "eval_every")
TrainNms = for_config(Nms, TrainConfig, "nms")
TrainNmsThreshold = for_config(NmsThreshold, TrainConfig, "nms_threshold")


def _whole_image_or(crop_size: Optional[int]) -> dict:
    """--crop-size as a TrainConfig field: unset -> nothing (the config's default), 0 -> None (whole images)."""
    return {} if crop_size is None else {"crop_size": crop_size or None}


def _interrupted(out: Path) -> str:
    return f"interrupted: last checkpoint saved in {out}/last; continue with --resume"


def train_command(
    arch: Annotated[Arch, typer.Option("--arch", help="Detector: a PP-YOLO teacher or a MobileNetV3 student.")],
    data: Annotated[list[Path], typer.Option(
        "--data", help="Labeled data: DeepPCB / VOC directory or COCO JSON. Repeat for several sources (e.g. the "
        "base set and reviewed boards): one class list, a fixed validation split each (split.json, split-1.json, "
        "...).")],
    weight: Weight = None,
    out: Annotated[Path, typer.Option("--out", help="Run directory (checkpoints, metrics, plots).")] = ...,
    format: Format = None,
    epochs: Annotated[Optional[int], config_option(TrainConfig, "epochs", "--epochs", min=1)] = None,
    batch: TrainBatch = None,
    input_size: Annotated[Optional[int], config_option(
        TrainConfig, "input_size", "--input-size", help="Network input side (multiple of 32).")] = None,
    crop_size: Annotated[Optional[int], config_option(
        TrainConfig, "crop_size", "--crop-size", help="Train on random crops of this side of the resized image (0: "
        "whole image). Validation always sees whole images.")] = None,
    input_mode: Annotated[Optional[InputMode], config_option(
        TrainConfig, "input_mode", "--input-mode",
        help="image, or image and golden template stacked as channels.")] = None,
    head: Annotated[Optional[Head], config_option(
        TrainConfig, "head", "--head", help="yolo: anchor-based PP-YOLO head; gfl: anchor-free PicoDet/PP-YOLOE-style "
        "head (quality scores, box distributions, task-aligned assignment).")] = None,
    augment: TrainAugment = None,
    dihedral: Annotated[Optional[bool], config_option(
        TrainConfig, "dihedral", "--dihedral/--no-dihedral", help="Each image, template and boxes in one of the 8 "
        "exact dihedral orientations, drawn uniformly (replaces the flips/turns).")] = None,
    copy_paste: Annotated[Optional[float], config_option(
        TrainConfig, "copy_paste", "--copy-paste", min=0.0, max=1.0, help="Probability that a training image gets "
        "labeled defects of other boards pasted where its template matches.")] = None,
    copy_paste_count: Annotated[Optional[int], config_option(
        TrainConfig, "copy_paste_count", "--copy-paste-count", min=1, help="Pastes tried per such image.")] = None,
    copy_paste_balance: Annotated[Optional[bool], config_option(
        TrainConfig, "copy_paste_balance", "--copy-paste-balance/--copy-paste-by-frequency",
        help="Paste every class equally often (favours rare classes).")] = None,
    aug_off_epochs: Annotated[Optional[int], config_option(
        TrainConfig, "aug_off_epochs", "--aug-off-epochs", min=0, help="Train the last N epochs on whole letterboxed "
        "images without crops, pastes or any augmentation.")] = None,
    lr: TrainLr = None,
    val_fraction: Annotated[Optional[float], config_option(
        TrainConfig, "val_fraction", "--val-fraction", min=0.0, max=0.9)] = None,
    split_seed: Annotated[Optional[int], config_option(
        TrainConfig, "split_seed", "--split-seed", help="Seed of the train/val split (kept in split.json).")] = None,
    seed: TrainSeed = None,
    eval_every: TrainEvalEvery = None,
    nms: TrainNms = None,
    nms_threshold: TrainNmsThreshold = None,
    max_steps: MaxSteps = None,
    init: Init = None,
    resume: Resume = False,
    nproc: Nproc = 1,
    ips: Ips = None,
) -> None:
    """Train a detector; per-epoch validation, best/last checkpoints, metrics.csv and plots in --out."""
    with user_errors(interrupted=_interrupted(out)):  # Ctrl-C while ranks run: rank 0 saved last/
        launch_ranks_if_asked(nproc, ips, out)
    from inspector.training.trainer import train

    cfg = config_from_options(
        TrainConfig, TRAIN_FLAGS, arch=arch.value, data=data_sources(data, weight), out=str(out),
        **_whole_image_or(crop_size), **given(
            format=value_of(format), epochs=epochs, batch_size=batch, input_size=input_size,
            input_mode=value_of(input_mode), head=value_of(head), augment=augment, lr=lr, val_fraction=val_fraction,
            split_seed=split_seed, seed=seed, eval_every=eval_every, max_steps_per_epoch=max_steps,
            init=str(init) if init else None, dihedral=dihedral, copy_paste=copy_paste,
            copy_paste_count=copy_paste_count, copy_paste_balance=copy_paste_balance, aug_off_epochs=aug_off_epochs,
            nms=value_of(nms), nms_threshold=nms_threshold))
    with user_errors(FileExistsError, FileNotFoundError, ValueError, interrupted=_interrupted(out)):
        run = train(cfg, resume=resume)
    typer.echo(f"done: {run}")


def distill_command(
    teacher: Annotated[Optional[Path], typer.Option(
        "--teacher", help="Teacher: a training run (its best/) or a checkpoint directory. Required unless "
        "--resume.")] = None,
    student_arch: Annotated[Optional[str], typer.Option(
        "--student-arch", help="Student architecture: mbv3-small, mbv3-large (optionally -x0.75 etc.). Required "
        "unless --resume.")] = None,
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", help="Labeled data: DeepPCB / VOC directory or COCO JSON; repeat for several sources. Required "
        "unless --resume.")] = None,
    weight: Weight = None,
    out: Annotated[Path, typer.Option("--out", help="Run directory (student checkpoints, metrics, plots).")] = ...,
    format: Format = None,
    epochs: Annotated[Optional[int], config_option(
        TrainConfig, "epochs", "--epochs", min=1, help="With --resume: the run's.")] = None,
    batch: TrainBatch = None,
    input_size: Annotated[Optional[int], typer.Option(
        "--input-size", help="Default and only allowed value: the teacher's (the student must see the teacher's "
        "input).")] = None,
    crop_size: Annotated[Optional[int], typer.Option(
        "--crop-size", help="Train on random crops of this side (0: whole image); default: the teacher "
        "run's.")] = None,
    input_mode: Annotated[Optional[InputMode], typer.Option(
        "--input-mode", help="Default and only allowed value: the teacher's.")] = None,
    augment: TrainAugment = None,
    lr: TrainLr = None,
    val_fraction: Annotated[Optional[float], config_option(
        TrainConfig, "val_fraction", "--val-fraction", min=0.0, max=0.9,
        help="Used only when the teacher's split.json does not cover DATA.")] = None,
    split_seed: Annotated[Optional[int], config_option(
        TrainConfig, "split_seed", "--split-seed", help="Used only when the teacher's split.json does not cover DATA "
        "(otherwise the student keeps the teacher's split).")] = None,
    seed: TrainSeed = None,
    eval_every: TrainEvalEvery = None,
    nms: Annotated[Optional[NmsChoice], typer.Option(
        "--nms", help="NMS of the student's validation and best-checkpoint choice; default: the teacher "
        "run's.")] = None,
    nms_threshold: Annotated[Optional[float], typer.Option(
        "--nms-threshold",
        help="IoU above which that NMS suppresses; default: the teacher run's.")] = None,
    max_steps: MaxSteps = None,
    temperature: Annotated[Optional[float], config_option(
        DistillConfig, "temperature", "--temperature", help="T softening the class scores (loss x T^2).")] = None,
    alpha_start: Annotated[Optional[float], config_option(
        DistillConfig, "alpha_start", "--alpha-start",
        help="Weight of the teacher terms in the first epoch; the label loss gets 1 - alpha.")] = None,
    alpha_end: Annotated[Optional[float], config_option(
        DistillConfig, "alpha_end", "--alpha-end",
        help="Weight of the teacher terms in the last epoch (linear in between).")] = None,
    confidence: Annotated[Optional[float], config_option(
        DistillConfig, "confidence_threshold", "--confidence",
        help="Teacher objectness above which its boxes are targets.")] = None,
    cls_weight: Annotated[Optional[float], config_option(
        DistillConfig, "cls_weight", "--cls-weight", help="Weight of the softened class-score term.")] = None,
    obj_weight: Annotated[Optional[float], config_option(
        DistillConfig, "obj_weight", "--obj-weight", help="Weight of the objectness term.")] = None,
    box_weight: Annotated[Optional[float], config_option(
        DistillConfig, "box_weight", "--box-weight", help="Weight of the confident-box term.")] = None,
    feature_weight: Annotated[Optional[float], config_option(
        DistillConfig, "feature_weight", "--feature-weight",
        help="Weight of the neck-feature (FitNets) term; 0 turns it off.")] = None,
    feature_normalize: Annotated[Optional[bool], config_option(
        DistillConfig, "feature_normalize", "--feature-normalize/--no-feature-normalize",
        help="Standardise feature maps per channel before the MSE.")] = None,
    schedule: Annotated[Optional[str], config_option(
        DistillConfig, "schedule", "--schedule",
        help=f"How alpha moves from --alpha-start to --alpha-end: {' or '.join(SCHEDULES)}.")] = None,
    feature_method: Annotated[Optional[str], config_option(
        DistillConfig, "feature_method", "--feature-method",
        help=f"gfl head's neck term: {' or '.join(FEATURE_METHODS)} (pkd: Pearson correlation; cwd: channel-wise "
        "distillation).")] = None,
    feature_temperature: Annotated[Optional[float], config_option(
        DistillConfig, "feature_temperature", "--feature-temperature", help="cwd's softmax temperature.")] = None,
    teacher_cache: Annotated[Optional[bool], config_option(
        DistillConfig, "teacher_cache", "--teacher-cache/--no-teacher-cache",
        help="Compute the teacher's outputs once per board and orientation and crop them (crops aligned to its "
        "coarsest stride; needs --dihedral or --no-augment).")] = None,
    teacher_cache_mb: Annotated[Optional[int], config_option(
        DistillConfig, "teacher_cache_mb", "--teacher-cache-mb", min=1,
        help="Memory bound of --teacher-cache.")] = None,
    teacher_cache_dir: Annotated[Optional[Path], typer.Option(
        "--teacher-cache-dir", help="Keep --teacher-cache's disk store here after the run (one sub-directory per "
        "teacher and layout): a later distillation from the same teacher reads its maps instead of computing them. "
        "Default: in OUT while training, then removed.")] = None,
    dihedral: Annotated[Optional[bool], config_option(
        TrainConfig, "dihedral", "--dihedral/--no-dihedral",
        help="The 8 exact dihedral transforms of each crop (replacing --augment's flips and turns).")] = None,
    aug_off_epochs: Annotated[Optional[int], config_option(
        TrainConfig, "aug_off_epochs", "--aug-off-epochs", min=0, help="Train the last N epochs on whole letterboxed "
        "images without crops or augmentation (the teacher cache serves whole boards too).")] = None,
    init: Init = None,
    resume: Resume = False,
    nproc: Nproc = 1,
    ips: Ips = None,
) -> None:
    """Distill a trained teacher into a small student: a training run whose loss adds the teacher's outputs
    and neck features; best/ and last/ hold the student alone (usable by eval and export)."""
    with user_errors(interrupted=_interrupted(out)):
        launch_ranks_if_asked(nproc, ips, out)
    from inspector.data import DataError

    with user_errors(DataError, FileExistsError, FileNotFoundError, ValueError, interrupted=_interrupted(out)):
        if resume:
            from inspector.compression.distill import resume_distillation

            run = resume_distillation(out, epochs=epochs)
        else:
            missing = [name for name, value in (("--teacher", teacher), ("--student-arch", student_arch),
                                                ("--data", data or None)) if value is None]
            if missing:
                fail(f"error: {', '.join(missing)} needed (unless --resume)")
            from inspector.compression.distill import distill
            from inspector.models import parse_arch
            from inspector.training.checkpoint import load_checkpoint

            parse_arch(student_arch)
            teacher_checkpoint = load_checkpoint(teacher)
            teacher_model = teacher_checkpoint.model_config
            teacher_train = teacher_checkpoint.info.get("train_config") or {}
            if crop_size is None:
                crop_size = teacher_train.get("crop_size") or 0
            config = config_from_options(
                DistillConfig, DISTILL_FLAGS, teacher=str(teacher), **given(
                    temperature=temperature, alpha_start=alpha_start, alpha_end=alpha_end,
                    confidence_threshold=confidence, cls_weight=cls_weight, obj_weight=obj_weight,
                    box_weight=box_weight, feature_weight=feature_weight, feature_normalize=feature_normalize,
                    schedule=schedule, feature_method=feature_method, feature_temperature=feature_temperature,
                    teacher_cache=teacher_cache, teacher_cache_mb=teacher_cache_mb,
                    teacher_cache_dir=str(teacher_cache_dir) if teacher_cache_dir else None))
            cfg = config_from_options(
                TrainConfig, {**TRAIN_FLAGS, "arch": "--student-arch"}, arch=student_arch,
                data=data_sources(data, weight), out=str(out),
                input_size=input_size or teacher_model.input_size,
                crop_size=crop_size or None, input_mode=value_of(input_mode) or teacher_model.input_mode,
                head=teacher_model.head, **given(
                    format=value_of(format), epochs=epochs, batch_size=batch, augment=augment, lr=lr,
                    val_fraction=val_fraction, split_seed=split_seed, seed=seed, eval_every=eval_every,
                    max_steps_per_epoch=max_steps, init=str(init) if init else None, dihedral=dihedral,
                    aug_off_epochs=aug_off_epochs, nms=value_of(nms) or teacher_train.get("nms"),
                    nms_threshold=nms_threshold if nms_threshold is not None else teacher_train.get("nms_threshold")))
            run = distill(cfg, config)
    typer.echo(f"done: {run}")
