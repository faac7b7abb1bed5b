"""The pipeline's training stages (teacher, student alone, distilled student): their ``TrainConfig``, the check
that an existing run may stand in for one, and training them in this process or as data-parallel ranks.

With ``nproc`` > 1 (or ``ips``) a stage trains under ``paddle.distributed.launch``: the pipeline's process writes
``pipeline.json`` (the configuration and the finished stages) and starts ``inspector pipeline --out OUT
--rank-stage STAGE`` as the ranks; each rank reads that file and runs the same training function the
single-process pipeline runs (``train_stage_rank``). The trainer does the rest: rank 0 alone writes, Ctrl-C
stops every rank after the same step with ``last/`` saved, and the next run of the pipeline resumes the stage
from there with any number of ranks. Everything else (pruning, QAT, PTQ, export, measurement) stays in the
pipeline's own process.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from inspector.pipeline.config import PipelineConfig, PipelineError

SPLIT_FILE = "split.json"
# The stages ``train_in_stage_process`` can run as ranks (pruning's fine-tuning writes its report from every
# process that runs it, so it stays single-process).
RANK_STAGES = ("teacher", "student", "distilled")
# Training options that decide a run's result: a stage directory is continued only if they match.
SCHEDULE_FIELDS = ("arch", "data", "format", "epochs", "batch_size", "input_size", "crop_size", "input_mode", "head",
                   "augment", "lr", "weight_decay", "warmup_epochs", "ema_decay", "seed", "max_steps_per_epoch",
                   "dihedral", "copy_paste", "copy_paste_count", "copy_paste_balance", "aug_off_epochs", "init",
                   "nms", "nms_threshold")

# Distillation settings that say where, not what: a run distilled with others is the same result.
WHERE_NOT_WHAT = ("teacher", "teacher_cache_dir")  # (the teacher is compared as a path, separately)


def train_config(cfg: PipelineConfig, out: Path, stage: str, arch: str, epochs: int, crop_size: int | None,
                 lr: float):
    """A training stage's ``TrainConfig``: its own directory, the pipeline's one split."""
    from inspector.training.config import TrainConfig

    return TrainConfig(arch=arch, data=cfg.data, out=str(out / stage), format=cfg.format, epochs=epochs,
                       batch_size=cfg.batch_size, input_size=cfg.input_size, crop_size=crop_size,
                       input_mode=cfg.input_mode, head=cfg.head, lr=lr, val_fraction=cfg.val_fraction,
                       split_seed=cfg.split_seed,
                       split_file=str(out / SPLIT_FILE), seed=cfg.seed, eval_every=cfg.eval_every,
                       max_steps_per_epoch=cfg.max_steps_per_epoch, dihedral=cfg.dihedral,
                       copy_paste=cfg.copy_paste, copy_paste_count=cfg.copy_paste_count,
                       copy_paste_balance=cfg.copy_paste_balance, aug_off_epochs=cfg.aug_off_epochs,
                       init=cfg.teacher_init if stage == "teacher" else cfg.student_init, nms=cfg.nms,
                       nms_threshold=cfg.nms_threshold)


def stage_train_config(cfg: PipelineConfig, out: Path, stage: str):
    """``train_config`` of the teacher, the student alone or the distilled student (the students share one
    schedule, so the distillation gain is comparable)."""
    if stage == "teacher":
        return train_config(cfg, out, stage, cfg.teacher_arch, cfg.teacher_epochs, cfg.teacher_crop_size,
                            cfg.teacher_lr)
    return train_config(cfg, out, stage, cfg.student_arch, cfg.epochs, cfg.crop_size, cfg.lr)


def check_run_matches(run: Path, wanted, split_file: Path) -> None:
    """An existing run may stand in for a stage only with the same schedule and the same split."""
    from inspector.training.config import TrainConfig

    config_file = run / "train_config.json"
    if not config_file.is_file():
        raise PipelineError(f"{config_file}: missing; {run} is not a training run")
    saved = TrainConfig.load(config_file).to_dict()
    wanted = wanted.to_dict()
    changed = [f"{name}: {saved[name]!r} (run) vs {wanted[name]!r} (pipeline)" for name in SCHEDULE_FIELDS
               if saved[name] != wanted[name]
               and not (name in ("data", "init") and same_path(saved[name], wanted[name]))]
    if changed:
        raise PipelineError(f"{config_file}: trained with another schedule than this pipeline's: {'; '.join(changed)}")
    run_split = run / SPLIT_FILE
    if split_file.is_file() and run_split.is_file() and split_keys(run_split) != split_keys(split_file):
        raise PipelineError(f"{run_split}: another train/val split than {split_file}; the stages must share one")


def train_run(train_cfg, objective_factory: Callable[[], Any] | None = None) -> Path:
    """Train into ``train_cfg.out``, or continue the interrupted run there."""
    from inspector.training.trainer import train

    run = Path(train_cfg.out)
    objective = objective_factory() if objective_factory else None
    if (run / "last").exists():
        check_run_matches(run, train_cfg, Path(train_cfg.split_file))
        train(train_cfg, resume=True, objective=objective)
    else:
        train(train_cfg, objective=objective)
    return run


def train_stage(cfg: PipelineConfig, out: Path, stage: str, teacher_run: Path | None = None) -> None:
    """Train (or continue) ``stage``; the distilled stage needs its settings saved in its run beforehand
    (``prepare_distillation``) and the teacher's run."""
    train_cfg = stage_train_config(cfg, out, stage)
    if stage != "distilled":
        train_run(train_cfg)
        return
    from inspector.compression.distill import DISTILL_CONFIG_FILE, DistillationObjective, DistillConfig
    from inspector.training.checkpoint import load_checkpoint

    teacher = load_checkpoint(teacher_run)
    settings = DistillConfig.load(Path(train_cfg.out) / DISTILL_CONFIG_FILE)
    train_run(train_cfg, lambda: DistillationObjective(teacher, settings, train_cfg.epochs))


def prepare_distillation(train_cfg, config, teacher_run: Path) -> None:
    """Before the distilled stage trains: a new run gets the checks of ``inspector distill`` and its settings
    file (written here, once, not by every rank); an interrupted one must have been started with ``config``."""
    from inspector.compression.distill import DISTILL_CONFIG_FILE, check_student_input, check_teacher_head
    from inspector.models import parse_arch
    from inspector.training.checkpoint import load_checkpoint

    run = Path(train_cfg.out)
    teacher = load_checkpoint(teacher_run)
    check_student_input(train_cfg, teacher)
    if (run / "last").exists():
        matching_distill_settings(run / DISTILL_CONFIG_FILE, config)
        return
    parse_arch(train_cfg.arch)
    check_teacher_head(teacher)
    run.mkdir(parents=True, exist_ok=True)
    config.save(run / DISTILL_CONFIG_FILE)


def matching_distill_settings(settings_file: Path, config):
    """The distillation settings a run saved, if they are ``config``'s (the teacher compared as a path);
    otherwise a PipelineError naming each difference."""
    from inspector.compression.distill import DistillConfig

    if not settings_file.is_file():
        raise PipelineError(f"{settings_file}: missing; {settings_file.parent} is not a distillation run")
    saved = DistillConfig.load(settings_file)
    if not same_path(saved.teacher, config.teacher):
        raise PipelineError(f"{settings_file}: distilled from {saved.teacher}, the pipeline's teacher is {config.teacher}")
    wanted = config.to_dict()
    changed = [f"{name}: {value!r} (run) vs {wanted[name]!r} (pipeline)" for name, value in saved.to_dict().items()
               if name not in WHERE_NOT_WHAT and value != wanted[name]]
    if changed:
        raise PipelineError(f"{settings_file}: distilled with other settings than this pipeline's: {'; '.join(changed)}")
    return saved


def train_in_stage_process(cfg: PipelineConfig, out: Path, stage: str, teacher_run: Path | None,
                           write_state: Callable[[], None], echo: Callable[[str], None]) -> None:
    """Train ``stage`` here, or as ``cfg.nproc`` ranks per node when asked (``write_state`` first saves what the
    ranks read: the configuration and the finished stages). Ctrl-C: ``KeyboardInterrupt`` once every rank stopped."""
    if cfg.nproc == 1 and not cfg.ips:
        train_stage(cfg, out, stage, teacher_run)
        return
    from inspector.training.distributed import launch_ranks

    write_state()
    logs = out / stage / "launch"
    echo(f"{stage}: training data-parallel, {cfg.nproc} rank(s) per node{f' on {cfg.ips}' if cfg.ips else ''} "
         f"(each rank's output: {logs}/workerlog.N)")
    status = launch_ranks(["pipeline", "--out", str(out), "--rank-stage", stage], cfg.nproc, logs, cfg.ips)
    if status:
        raise PipelineError(f"{stage}: the ranks stopped (launcher status {status}); each rank's output is in "
                            f"{logs}/workerlog.N; run the same command to continue the stage from its last "
                            "checkpoint")


def same_path(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def split_keys(path: Path) -> tuple[list[str], list[str]]:
    content = json.loads(Path(path).read_text())
    return sorted(content["train"]), sorted(content["val"])
