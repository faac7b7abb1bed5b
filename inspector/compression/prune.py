"""``inspector prune``: remove whole convolution channels from a trained detector, then fine-tune.

``inspector prune --model RUN --data DIR --out runs/NAME --criterion l1|fpgm --ratio R`` (or
``--auto-ratio``) prunes the run's best checkpoint and fine-tunes the result as an ordinary training run
(``inspector.training.trainer.train``), so ``runs/NAME`` holds ``best/``, ``last/``, metrics and plots
like any run, plus ``pruning.json`` (what was removed; parameters, FLOPs and mAP before, after pruning
and after fine-tuning) and, with ``--auto-ratio``, ``sensitivity.json``.

The steps live in ``inspector.compression.pruning``: ``groups`` (which channels go together, and why
not PaddleSlim's pruners), ``channels`` (the l1 / fpgm criteria and the cut), ``size`` (parameters and
FLOPs), ``sensitivity`` (the ``--auto-ratio`` scan and choice); this module is the command.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import paddle.nn as nn

from inspector.compression.pruning.channels import prune_model, pruned_shapes
from inspector.compression.pruning.config import PruneConfig
from inspector.compression.pruning.groups import channel_groups
from inspector.compression.pruning.sensitivity import choose_ratios, sensitivity_scan
from inspector.compression.pruning.size import measure
from inspector.data import DataError, Dataset, load_dataset
from inspector.data.loader import BatchLoader
from inspector.data.split import split_dataset
from inspector.evaluation import EvalThresholds, recipe_thresholds
from inspector.models import ModelConfig, build_model
from inspector.models.detector import YOLODetector
from inspector.training.checkpoint import (
    INFO_FILE,
    PRUNED_SHAPES,
    Checkpoint,
    apply_pruned_shapes,
    load_checkpoint,
)
from inspector.training.config import TrainConfig
from inspector.training.trainer import Objective, train
from inspector.training.validate import validate

log = logging.getLogger(__name__)

PRUNE_CONFIG_FILE = "prune_config.json"
REPORT_FILE = "pruning.json"
SENSITIVITY_FILE = "sensitivity.json"


class PrunedFineTuning(Objective):
    """The training objective of the fine-tune: the detector's own loss, on the pruned architecture.

    ``weights`` are the pruned model's; None when resuming (the training state has newer ones).
    """

    def __init__(self, model_config: ModelConfig, shapes: dict[str, list[int]], weights: dict | None,
                 summary: dict) -> None:
        self._model_config = model_config
        self.shapes = shapes
        self.weights = weights
        self.summary = summary

    def model_config(self, cfg: TrainConfig, train_set: Dataset, start: Checkpoint | None = None) -> ModelConfig:
        return self._model_config  # the pruned model starts from its own weights (build_model), never --init

    def build_model(self, model_config: ModelConfig) -> nn.Layer:
        model = build_model(model_config)
        apply_pruned_shapes(model, self.shapes)
        if self.weights is not None:
            model.set_state_dict(self.weights)
        return model

    def checkpoint_info(self) -> dict:
        return {PRUNED_SHAPES: self.shapes, "pruning": self.summary}


def prune(cfg: PruneConfig) -> Path:
    """Prune ``cfg.model`` and fine-tune it into the new run ``cfg.out``; returns the run directory."""
    out = Path(cfg.out)
    if (out / "last").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
    source = load_checkpoint(Path(cfg.model))
    model = source.build()
    dataset = load_dataset(cfg.data, format=cfg.format)
    if dataset.class_names != source.class_names:
        raise DataError(f"{cfg.data} has classes {dataset.class_names}, the model {source.class_names}")
    out.mkdir(parents=True, exist_ok=True)
    train_cfg = _fine_tune_config(cfg, source)
    _, val_set = split_dataset(dataset, train_cfg.val_fraction, train_cfg.split_seed,
                               _adopt_split(source, out / "split.json"))
    if len(val_set) == 0:
        raise DataError(f"{out / 'split.json'}: no validation images of {cfg.data}; pruning needs them to measure")
    cfg.save(out / PRUNE_CONFIG_FILE)
    thresholds = recipe_thresholds(train_cfg.to_dict())  # the source's NMS: its fine-tune keeps it too

    input_cfg = model.cfg
    val_loader = BatchLoader(val_set, train_cfg.batch_size, input_cfg.input_size, input_cfg.input_mode,
                             workers=cfg.workers)
    before = _size_and_accuracy(model, val_loader, source.class_names, thresholds)
    log.info("before: %s", before)

    if cfg.ratio is not None:
        ratios = {group.name: cfg.ratio for group in channel_groups(model)}
        mode: dict[str, Any] = {"mode": "uniform", "ratio": cfg.ratio}
    else:
        scan_set = Dataset(val_set.samples[: cfg.scan_images], val_set.class_names, val_set.root, val_set.format)
        scan_loader = BatchLoader(scan_set, train_cfg.batch_size, input_cfg.input_size, input_cfg.input_mode,
                                  workers=cfg.workers)

        def scan_metric(candidate: nn.Layer) -> float:
            return validate(candidate, scan_loader, source.class_names, progress=False,
                            thresholds=thresholds).map50_95

        baseline, scan = sensitivity_scan(model, scan_metric, cfg.scan_ratios, cfg.criterion, cfg.channel_multiple)
        choice = choose_ratios(model, scan, cfg.target_flops_reduction, cfg.max_drop, cfg.criterion,
                               cfg.channel_multiple)
        ratios = choice.ratios
        mode = {"mode": "sensitivity", "target_flops_reduction": cfg.target_flops_reduction,
                "max_drop": cfg.max_drop, "tolerance": choice.tolerance, "target_reached": choice.target_reached}
        _write_json(out / SENSITIVITY_FILE, {
            "metric": "map50_95", "images": len(scan_set), "baseline": baseline, "criterion": cfg.criterion,
            "channel_multiple": cfg.channel_multiple, "groups": scan, **mode, "chosen_ratios": ratios,
            "flops_reduction": choice.flops_reduction})
        if not choice.target_reached:
            log.warning("sensitivity: a FLOPs reduction of %.1f%% needs more than a %.4f drop per group; pruning "
                        "%.1f%%", 100 * cfg.target_flops_reduction, cfg.max_drop, 100 * choice.flops_reduction)

    groups = prune_model(model, ratios, cfg.criterion, cfg.channel_multiple)
    after = _size_and_accuracy(model, val_loader, source.class_names, thresholds)
    log.info("pruned: %s", after)
    report = {"source": str(source.path), "arch": input_cfg.arch, "criterion": cfg.criterion,
              "channel_multiple": cfg.channel_multiple, **mode, "input_size": input_cfg.input_size,
              "before": before, "pruned": after, "groups": [asdict(g) for g in groups]}
    _write_json(out / REPORT_FILE, report)

    summary = {"source": str(source.path), "criterion": cfg.criterion, **mode,
               "params_before": before["params"], "flops_before": before["flops"],
               "params": after["params"], "flops": after["flops"]}
    weights = {name: value.numpy() for name, value in model.state_dict().items()}
    run = train(train_cfg, objective=PrunedFineTuning(input_cfg, pruned_shapes(model), weights, summary))
    _record_fine_tuned(run)
    return run


def resume_pruning(out: Path, epochs: int | None = None) -> Path:
    """Continue the fine-tuning of the pruning run in ``out`` from its ``last/`` checkpoint."""
    out = Path(out)
    for needed in (out / PRUNE_CONFIG_FILE, out / "last" / INFO_FILE):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: missing; {out} is not a pruning run that can be resumed")
    last = load_checkpoint(out / "last")
    train_cfg = TrainConfig.load(out / "train_config.json")
    if epochs is not None:
        train_cfg = replace(train_cfg, epochs=epochs)
    objective = PrunedFineTuning(last.model_config, last.info.get(PRUNED_SHAPES, {}), None, last.info["pruning"])
    run = train(train_cfg, resume=True, objective=objective)
    _record_fine_tuned(run)
    return run


def format_report(report: dict[str, Any]) -> str:
    """pruning.json as a few lines for the terminal."""
    how = f"uniform ratio {report['ratio']}" if report["mode"] == "uniform" else (
        f"sensitivity scan, target -{100 * report['target_flops_reduction']:.0f}% FLOPs"
        + ("" if report["target_reached"] else " (not reached within --max-drop)"))
    pruned_groups = sum(group["kept"] < group["channels"] for group in report["groups"])
    before, after = report["before"], report["pruned"]
    lines = [f"pruned {report['arch']} ({report['criterion']}, {how}): {pruned_groups} of {len(report['groups'])} "
             f"channel groups",
             f"  parameters  {before['params']:,} -> {after['params']:,} "
             f"({100 * (after['params'] / before['params'] - 1):+.1f}%)",
             f"  FLOPs       {before['flops'] / 1e6:.1f} M -> {after['flops'] / 1e6:.1f} M "
             f"({100 * (after['flops'] / before['flops'] - 1):+.1f}%) at input {report['input_size']}"]
    tuned = report.get("fine_tuned", {})
    for key, label in (("map50", "mAP@0.5"), ("map50_95", "mAP@0.5:0.95")):
        line = f"  {label:12s} {before[key]:.4f} before, {after[key]:.4f} pruned"
        if tuned.get(key) is not None:
            line += f", {tuned[key]:.4f} fine-tuned (best epoch {tuned['epoch']})"
        lines.append(line)
    return "\n".join(lines)


def _fine_tune_config(cfg: PruneConfig, source: Checkpoint) -> TrainConfig:
    """The source run's training settings, with the fine-tuning schedule and the new run directory."""
    known = {f.name for f in fields(TrainConfig)}
    recorded = {k: v for k, v in (source.info.get("train_config") or {}).items() if k in known}
    model_cfg = source.model_config
    values = {**recorded, "arch": model_cfg.arch, "data": cfg.data, "out": cfg.out, "format": cfg.format,
              "input_size": model_cfg.input_size, "input_mode": model_cfg.input_mode, "epochs": cfg.epochs,
              "lr": cfg.lr, "warmup_epochs": cfg.warmup_epochs, "seed": cfg.seed, "workers": cfg.workers,
              "max_steps_per_epoch": cfg.max_steps_per_epoch, "eval_every": 1, "split_file": None}
    if cfg.batch_size is not None:
        values["batch_size"] = cfg.batch_size
    return TrainConfig(**values)


def _adopt_split(source: Checkpoint, split_file: Path) -> Path:
    """Copy the source run's split.json to ``split_file`` (the pruned model is validated on the same
    images); without one, ``split_dataset`` draws and writes a new split there."""
    configured = (source.info.get("train_config") or {}).get("split_file")
    for candidate in ([Path(configured)] if configured else []) + [source.path.parent / "split.json"]:
        if candidate.is_file() and candidate.resolve() != split_file.resolve():
            shutil.copyfile(candidate, split_file)
            break
    else:
        log.warning("split: %s has no split.json; drawing a new one (validation images may overlap the "
                    "source model's training images)", source.path)
    return split_file


def _size_and_accuracy(model: YOLODetector, loader: BatchLoader, class_names: list[str],
                       thresholds: EvalThresholds) -> dict[str, Any]:
    size = measure(model)
    result = validate(model, loader, class_names, progress=False, thresholds=thresholds)
    return {"params": size.params, "flops": size.flops, "map50": result.map50, "map50_95": result.map50_95,
            "f1_iou033": result.f1_iou033}


def _record_fine_tuned(run: Path) -> None:
    """Add the best checkpoint's validation metrics to pruning.json."""
    best = load_checkpoint(run / "best")
    metrics = best.info.get("metrics", {})
    report = json.loads((run / REPORT_FILE).read_text())
    report["fine_tuned"] = {"epoch": best.info.get("epoch"), "params": report["pruned"]["params"],
                            "flops": report["pruned"]["flops"],
                            **{k: metrics.get(k) for k in ("map50", "map50_95", "f1_iou033")}}
    _write_json(run / REPORT_FILE, report)


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str))
    tmp.replace(path)
