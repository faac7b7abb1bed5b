"""``run_pipeline``: labeled data -> teacher -> student alone -> distilled student -> (pruned) -> QAT and PTQ
INT8 -> the model package -> every stage measured through the runtime -> report.

    inspector pipeline --config configs/pipeline-cpu.yaml --data DIR --out runs/NAME

Each stage writes its own sub-directory of ``OUT`` with the ordinary run layout of the command it wraps
(``inspector train`` / ``distill`` / ``prune`` / ``quantize`` / ``export``), so every intermediate result
can be evaluated, exported or resumed on its own. ``OUT/pipeline.json`` holds the configuration and which
stages are done; running the same command again skips finished stages and resumes an interrupted
training stage from its ``last/`` checkpoint. Every stage uses the one split in ``OUT/split.json``.
With ``nproc`` > 1 the training stages (teacher, student alone, distilled) run as data-parallel ranks
(``inspector.pipeline.training``); the other stages run in this process.

Which FP32 student is quantized: the pruned one when pruning is asked for; otherwise the better of the
student alone and the distilled student by validation official DeepPCB AP (ties: mAP@0.5:0.95).
Distillation is expected to win; when it does not (a weak teacher), shipping the worse model would be
wrong, and the report says which was chosen and why.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from inspector.pipeline.config import PipelineConfig, PipelineError, differences
from inspector.pipeline.training import (  # noqa: F401  (SCHEDULE_FIELDS, _train_config: tests use them here)
    RANK_STAGES,
    SCHEDULE_FIELDS,
    SPLIT_FILE,
    check_run_matches,
    matching_distill_settings,
    prepare_distillation,
    stage_train_config,
    train_in_stage_process,
    train_stage,
)
from inspector.pipeline.training import train_config as _train_config  # noqa: F401

log = logging.getLogger(__name__)

STATE_FILE = "pipeline.json"
STAGES = ("teacher", "student", "distilled", "pruned", "qat", "ptq", "package", "measure", "report")

Echo = Callable[[str], None]


def active_stages(cfg: PipelineConfig) -> list[str]:
    skipped = {"pruned"} if cfg.prune_ratio is None else set()
    if not cfg.distill:
        skipped.add("distilled")
        if cfg.teacher_run is None:  # a teacher is trained to distil from, not for a reference row alone
            skipped.add("teacher")
    return [stage for stage in STAGES if stage not in skipped]


REDOABLE = ("qat", "ptq", "package", "measure", "report")  # stages cheap enough to redo on request


def run_pipeline(cfg: PipelineConfig, until: str | None = None, echo: Echo = print, redo: str | None = None) -> Path:
    """Run (or continue) the pipeline in ``cfg.out``; stop after stage ``until`` when given.

    ``redo``: first forget that finished stage and every later one (and delete their outputs), e.g. after
    the exporter changed. Training stages are not redone this way: delete their directory to retrain."""
    stages = active_stages(cfg)
    if until is not None and until not in stages:
        raise PipelineError(f"--until: expected one of {stages}, got {until!r}")
    if redo is not None and redo not in REDOABLE:
        raise PipelineError(f"--redo: expected one of {list(REDOABLE)}, got {redo!r} (to retrain a training stage, "
                            "delete its directory and run again)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _open_state(out, cfg)
    if redo is not None:
        _forget_from(out, state, stages[stages.index(redo):], echo)
    for number, stage in enumerate(stages, 1):
        header = f"[{number}/{len(stages)}] {stage}"
        done = state["stages"].get(stage)
        if done:
            echo(f"{header}: done earlier ({done['seconds']:.0f} s); skipped")
        else:
            echo(f"{header}: running")
            started = time.perf_counter()
            note = STAGE_FUNCTIONS[stage](cfg, out, state, echo) or {}
            seconds = time.perf_counter() - started
            state["stages"][stage] = {"seconds": round(seconds, 1), "finished": _now(), **note}
            _write_json(out / STATE_FILE, state)
            echo(f"{header}: done in {seconds / 60:.1f} min")
        if stage == until:
            echo(f"stopped after {stage} (--until); run the same command without --until to continue")
            break
    return out


# --------------------------------------------------------------------------- state


def _open_state(out: Path, cfg: PipelineConfig) -> dict[str, Any]:
    state_file = out / STATE_FILE
    wanted = cfg.to_dict()
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        changed = differences(state["config"], wanted)
        if changed:
            raise PipelineError(f"{state_file}: this pipeline directory was started with other settings "
                                f"({'; '.join(changed)}); rerun with the same settings to continue it, or choose "
                                "a new --out")
        state["config"] = wanted  # measurement settings may change
        return state
    if any(out.iterdir()):
        raise PipelineError(f"{out} exists, is not empty and holds no {STATE_FILE}: not a pipeline directory; "
                            "choose a new --out (nothing was overwritten)")
    state = {"config": wanted, "started": _now(), "stages": {}}
    _write_json(state_file, state)
    return state


def _forget_from(out: Path, state: dict[str, Any], stages: list[str], echo: Echo) -> None:
    for stage in stages:
        if state["stages"].pop(stage, None) is None:
            continue
        echo(f"redo: forgetting {stage}")
        targets = {"qat": [out / "qat"], "ptq": [out / "ptq"], "package": [out / "package"],
                   "measure": [out / "measure"]}.get(stage, [])
        for target in targets:
            shutil.rmtree(target, ignore_errors=True)
    _write_json(out / STATE_FILE, state)


def stage_run(state: dict[str, Any], stage: str) -> Path:
    """The directory a finished stage produced."""
    return Path(state["stages"][stage]["run"])


# --------------------------------------------------------------------------- training stages


def train_stage_rank(out: Path, stage: str) -> None:
    """One rank of a data-parallel training stage (``inspector pipeline --out OUT --rank-stage STAGE``, started by
    ``train_in_stage_process``): the stage's training, with the configuration and finished stages of
    ``OUT/pipeline.json``."""
    if stage not in RANK_STAGES:
        raise PipelineError(f"--rank-stage: expected one of {list(RANK_STAGES)}, got {stage!r}")
    state_file = Path(out) / STATE_FILE
    if not state_file.is_file():
        raise PipelineError(f"{state_file}: missing; --rank-stage runs a stage of an existing pipeline directory")
    state = json.loads(state_file.read_text())
    cfg = PipelineConfig.from_dict(state["config"], source=str(state_file))
    train_stage(cfg, Path(out), stage, stage_run(state, "teacher") if stage == "distilled" else None)


def _train(cfg: PipelineConfig, out: Path, state: dict, stage: str, echo: Echo) -> Path:
    """Train (or continue) a stage here or as ranks (``nproc``); its run, with the pipeline's split."""
    teacher_run = stage_run(state, "teacher") if stage == "distilled" else None
    train_in_stage_process(cfg, out, stage, teacher_run, lambda: _write_json(out / STATE_FILE, state), echo)
    return _with_split(out / stage, out / SPLIT_FILE)


def _with_split(run: Path, split_file: Path) -> Path:
    """Every run keeps a copy of the pipeline's split, as a standalone run does: quantize, prune and export
    read it from the run (and must measure on images it never trained on)."""
    if not (run / SPLIT_FILE).is_file():
        shutil.copyfile(split_file, run / SPLIT_FILE)
    return run


def _teacher(cfg: PipelineConfig, out: Path, state: dict, echo: Echo) -> dict:
    from inspector.training.checkpoint import load_checkpoint

    if cfg.teacher_run is None:
        run = _train(cfg, out, state, "teacher", echo)
        return {"run": str(run), "reused": False, **_best_metrics(run)}
    run = Path(cfg.teacher_run)
    teacher = load_checkpoint(run)
    model = teacher.model_config
    if (model.input_size, model.input_mode) != (cfg.input_size, cfg.input_mode):
        raise PipelineError(f"teacher_run {run}: input {model.input_size} {model.input_mode}, the pipeline's is "
                            f"{cfg.input_size} {cfg.input_mode} (the student must see what the teacher sees)")
    if not model.arch.startswith("ppyolo"):
        echo(f"note: teacher_run {run} is a {model.arch}, not a PP-YOLO")
    split = run / SPLIT_FILE
    if split.is_file():  # the student must never train on the teacher's validation images
        shutil.copyfile(split, out / SPLIT_FILE)
    echo(f"teacher: reusing {run} ({model.arch}, epoch {teacher.info.get('epoch')})")
    return {"run": str(run), "reused": True, **_best_metrics(run)}


def _student(cfg: PipelineConfig, out: Path, state: dict, echo: Echo) -> dict:
    if cfg.student_run is None:
        run = _train(cfg, out, state, "student", echo)
        return {"run": str(run), "reused": False, **_best_metrics(run)}
    run = Path(cfg.student_run)
    check_run_matches(run, stage_train_config(cfg, out, "student"), out / SPLIT_FILE)
    if not (out / SPLIT_FILE).is_file() and (run / SPLIT_FILE).is_file():  # no teacher stage gave the split
        shutil.copyfile(run / SPLIT_FILE, out / SPLIT_FILE)
    echo(f"student alone: reusing {run} (same schedule and split)")
    return {"run": str(run), "reused": True, **_best_metrics(run)}


def distill_settings(cfg: PipelineConfig, teacher_run: Path):
    """The distilled stage's ``DistillConfig``: the pipeline's distillation fields, under the same names."""
    from inspector.compression.distill import DistillConfig

    return DistillConfig(teacher=str(teacher_run), temperature=cfg.temperature, alpha_start=cfg.alpha_start,
                         alpha_end=cfg.alpha_end, feature_weight=cfg.feature_weight,
                         feature_method=cfg.feature_method, cls_weight=cfg.cls_weight, box_weight=cfg.box_weight,
                         teacher_cache=cfg.teacher_cache, teacher_cache_dir=cfg.teacher_cache_dir)


def _distilled(cfg: PipelineConfig, out: Path, state: dict, echo: Echo) -> dict:
    teacher_run = stage_run(state, "teacher")
    train_cfg = stage_train_config(cfg, out, "distilled")
    config = distill_settings(cfg, teacher_run)
    if cfg.distilled_run is not None:
        return _reused_distilled(Path(cfg.distilled_run), train_cfg, config, out, echo)
    prepare_distillation(train_cfg, config, teacher_run)
    run = _train(cfg, out, state, "distilled", echo)
    return {"run": str(run), **_best_metrics(run)}


def _reused_distilled(run: Path, train_cfg, config, out: Path, echo: Echo) -> dict:
    """An existing distilled run stands in for the stage only if it is the distillation this pipeline asks for:
    the students' schedule and split, the same teacher run, the same settings."""
    from inspector.compression.distill import DISTILL_CONFIG_FILE

    check_run_matches(run, train_cfg, out / SPLIT_FILE)
    matching_distill_settings(run / DISTILL_CONFIG_FILE, config)
    echo(f"distilled: reusing {run} (same schedule, teacher and settings)")
    return {"run": str(run), "reused": True, **_best_metrics(run)}


def _pruned(cfg: PipelineConfig, out: Path, state: dict, echo: Echo) -> dict:
    from inspector.compression.prune import PruneConfig, prune, resume_pruning

    source_stage, why = _best_student(state)
    source = stage_run(state, source_stage)
    run = out / "pruned"
    if (run / "last").exists():
        resume_pruning(run, epochs=cfg.prune_epochs)
    else:
        prune(PruneConfig(model=str(source), data=cfg.data, out=str(run), criterion=cfg.prune_criterion,
                          ratio=cfg.prune_ratio, format=cfg.format, epochs=cfg.prune_epochs,
                          batch_size=cfg.batch_size, seed=cfg.seed, max_steps_per_epoch=cfg.max_steps_per_epoch))
    return {"run": str(run), "source": str(source), "source_reason": why, **_best_metrics(run)}


def _quantized(method: str):
    def stage(cfg: PipelineConfig, out: Path, state: dict, echo: Echo) -> dict:
        from inspector.compression.quantize import QuantizeConfig, quantize

        if "pruned" in state["stages"]:
            source_stage, why = "pruned", "pruning was asked for: the pruned, fine-tuned student"
        else:
            source_stage, why = _best_student(state)
        source = stage_run(state, source_stage)
        run = out / method
        if not (run / "metrics.json").is_file():  # quantize() renames its run into place only when complete
            quantize(QuantizeConfig(model=str(source), data=cfg.data, out=str(run), method=method, format=cfg.format,
                                    epochs=cfg.qat_epochs if method == "qat" else 0, lr=cfg.qat_lr,
                                    keep_epoch=cfg.qat_keep_epoch,
                                    batch_size=cfg.batch_size, calibration_images=cfg.calibration_images,
                                    skip_layers=list(cfg.qat_skip_layers), seed=cfg.seed,
                                    max_steps_per_epoch=cfg.max_steps_per_epoch))
        echo(f"{method}: quantized {source} ({why})")
        return {"run": str(run), "source": str(source), "source_stage": source_stage, "source_reason": why}
    return stage


def _best_student(state: dict) -> tuple[str, str]:
    """The stage of the FP32 student (alone or distilled) with the best validation metrics, and why.

    Chosen by official DeepPCB AP, ties by mAP@0.5:0.95 (``inspector.evaluation.selection``); a stage
    recorded before the official metric existed has none, and then both are compared by mAP@0.5:0.95."""
    from inspector.evaluation import best_index, selection_basis

    stages = [s for s in ("student", "distilled") if s in state["stages"]]
    metrics = [state["stages"][s] for s in stages]
    best = stages[best_index(metrics)]
    if len(stages) == 1:
        return best, f"the student alone (no distilled stage), validation {_describe_selection(metrics[0])}"
    others = ", ".join(f"{s} {_describe_selection(m)}" for s, m in zip(stages, metrics) if s != best)
    return best, (f"best validation {selection_basis(metrics)}: {best} "
                  f"{_describe_selection(state['stages'][best])} (vs {others})")


def _describe_selection(metrics: dict) -> str:
    official, coco = metrics.get("official_ap"), metrics.get("map50_95")
    text = "official AP -" if official is None else f"official AP {official:.4f}"
    return text + (" / mAP@0.5:0.95 -" if coco is None else f" / mAP@0.5:0.95 {coco:.4f}")


def _best_metrics(run: Path) -> dict:
    from inspector.training.checkpoint import load_checkpoint

    metrics = load_checkpoint(run).info.get("metrics") or {}
    return {key: metrics.get(key) for key in ("official_ap", "official_f", "map50", "map50_95", "f1_iou033")}


# --------------------------------------------------------------------------- package, measurement, report


def _package(cfg: PipelineConfig, out: Path, state: dict, echo: Echo) -> dict:
    from inspector.export import export_package

    package = out / "package"
    if not (package / "manifest.json").is_file():
        export_package(stage_run(state, "qat"), package, targets=tuple(cfg.targets), name=cfg.name, progress=echo,
                       nms=cfg.nms, nms_threshold=cfg.nms_threshold)
    return {"run": str(package)}


def _measure(cfg: PipelineConfig, out: Path, state: dict, echo: Echo) -> dict:
    from inspector.pipeline.measure import measure_rows

    rows = measure_rows(cfg, out, state, echo)
    shipped = next((row for row in rows if row["row"] == "qat"), None)
    if shipped is not None:  # the package carries what was measured through it
        from inspector.export import record_metrics

        lite, paddle = shipped["accuracy"]["lite"], shipped["accuracy"]["paddle"]
        record_metrics(Path(shipped["package"]), {
            **lite, "data": cfg.data, "split": "val", "n_images": shipped["n_images"], "backend": "lite",
            "precision_ran": shipped["runtime"]["lite"]["precision"], "engine": shipped["runtime"]["lite"]["engine"],
            "paddle_inference": {**paddle, "precision_ran": shipped["runtime"]["paddle"]["precision"]}})
    return {"rows": len(rows)}


def _report(cfg: PipelineConfig, out: Path, state: dict, echo: Echo) -> dict:
    from inspector.pipeline.report import write_report

    files = write_report(cfg, out, state)
    package = stage_run(state, "package")
    for file in files:  # the package travels with its report
        shutil.copyfile(file, package / file.name)
    for file in files:
        echo(f"wrote {file}")
    return {"files": [str(f) for f in files]}


STAGE_FUNCTIONS: dict[str, Callable[[PipelineConfig, Path, dict, Echo], dict]] = {
    "teacher": _teacher, "student": _student, "distilled": _distilled, "pruned": _pruned,
    "qat": _quantized("qat"), "ptq": _quantized("ptq"), "package": _package, "measure": _measure,
    "report": _report,
}


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _write_json(path: Path, payload: Any) -> None:
    """Atomically: an interrupted pipeline never leaves half a state file."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(payload, stream, indent=2, default=str)
    os.replace(temp, path)
