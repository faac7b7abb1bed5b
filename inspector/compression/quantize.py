"""``inspector quantize``: an INT8 version of a trained detector, by QAT or PTQ, saved for Paddle Inference / Lite.

    inspector quantize --model runs/student --data DIR --method qat --out runs/student-int8

Both methods use the same INT8 scheme, the one Paddle Lite and oneDNN execute: per-output-channel abs-max
scales for convolution weights, one scale per activation tensor entering a convolution. Both first fold
every BatchNorm into its convolution (``fuse_batch_norms``; why: see there).

Every ``Conv2D`` is wrapped with PaddleSlim's dygraph fake-quant layers (``paddleslim.dygraph.quant.QAT``:
channel-wise abs-max weights, moving-average abs-max activations) and the activation scales are
calibrated on a subset of the training split (the 99.99th percentile of each activation, ``calibrate``).

- ``ptq`` (post-training quantization, the baseline): that is all; no training.
- ``qat`` (quantization-aware training): then a few epochs of fine-tuning at a low learning rate, so
  the weights adapt to the rounding (the observers follow the activations' moving abs-max meanwhile).

PaddleSlim's static ``quant_post_static`` was tried for PTQ and left out: its program (quantize /
dequantize pairs also around bias additions and reshapes) makes oneDNN's INT8 kernels output garbage
(DeepPCB student: mAP@0.5 0.005 where its own graph scores 0.632), and its graph passes take minutes.
Both methods here save the same program format.

Mixed precision: ``--skip-layers`` keeps the named convolutions (or every convolution under a named
block) in FP32; ``--sensitivity`` first ranks the layers by the accuracy their quantization costs
(``quantization/sensitivity.py``) and ``--skip-most-sensitive K`` keeps the worst K in FP32.

Accuracy is measured on the source run's validation split through Paddle Inference, on the saved files:
FP32; INT8 as the quantized graph computes it (its quantize/dequantize operators executed exactly, on
FP32 kernels: "int8-simulated"); and INT8 on oneDNN's INT8 kernels, which this CPU (AVX2, no VNNI) runs.
Paddle Lite 2.13's x86 INT8 kernels are not usable for these models (they crash on depthwise
convolutions with a bias and miscompute the stem; ARM has its own kernels), so Lite is left to export.

The run directory (``--out``):

    model.pdmodel / model.pdiparams   the INT8 decoded graph (images -> boxes, scores; NMS outside)
    fp32/model.pdmodel / .pdiparams    the FP32 model quantized from, the reference (its BatchNorms kept:
                                       see _quantize_into)
    checkpoint.json                    model config and class names (what ``inspector export`` reads);
                                       no weights: the inference model above is the model
    quant_config.json                  settings, source checkpoint, and the precision of every layer
                                       as found in the saved program
    metrics.json                       ``fp32``, ``int8``, ``int8_onednn`` accuracy and what ran,
                                       ``drop`` (FP32 - INT8) and ``drop_onednn``
    sensitivity.json                   with --sensitivity
    split.json                         the source run's train/val split (this run used it)

The steps live in ``inspector.compression.quantization`` (``layers``, ``calibrate``, ``finetune``,
``sensitivity``, ``program``, ``measure``); this module is the command that strings them together.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from inspector.compression.quantization.calibrate import CALIBRATION_PERCENTILE, calibrate
from inspector.compression.quantization.config import QuantizeConfig
from inspector.compression.quantization.finetune import finetune
from inspector.compression.quantization.layers import (
    QAT_CONFIG,
    fuse_batch_norms,
    lite_x86_fp32_layers,
    quantize_model,
    resolve_layer_names,
)
from inspector.compression.quantization.measure import (
    InferenceModel,
    default_threads,
    predict_inference_model,
    set_compute_threads,
)
from inspector.compression.quantization.program import describe_program, layer_precisions, save_inference_model
from inspector.compression.quantization.sensitivity import SensitivityReport, layer_sensitivity
from inspector.data import Dataset, load_dataset
from inspector.data.loader import BatchLoader
from inspector.data.split import split_dataset
from inspector.evaluation import (
    ImageDetections,
    evaluate_samples,
    ground_truth,
    improves,
    official_ap_difference_interval,
    recipe_thresholds,
)
from inspector.models import ModelConfig, YOLODetector
from inspector.models.inference_program import params_file, program_file
from inspector.training.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)

MODEL_PREFIX = "model"  # the run's model.pdmodel / model.pdiparams (INT8), and fp32/model.* (FP32)
FP32_DIR = "fp32"


# --------------------------------------------------------------------------- the command


def quantize(cfg: QuantizeConfig, progress: bool = True) -> Path:
    """Run ``inspector quantize`` (see the module docstring); returns the run directory.

    The run is assembled in ``OUT.partial`` and renamed to ``OUT`` when complete, so a failure leaves
    no half run where export would find it (``OUT.partial/quantize.log`` says what happened).
    """
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out (nothing was overwritten)")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    handler = logging.FileHandler(staging / "quantize.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("inspector")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        _quantize_into(staging, cfg, progress)
    finally:
        logger.removeHandler(handler)
        handler.close()
    if out.exists():
        out.rmdir()  # empty, checked above
    staging.rename(out)
    log.info("done: %s", out)
    return out


def _quantize_into(staging: Path, cfg: QuantizeConfig, progress: bool) -> None:
    """The steps of ``quantize``, writing the run's files into ``staging``."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    # Pinned and recorded: QAT's weights depend on the thread count (oneDNN and MKL split the reductions of the
    # backward pass by thread: 1 and 2 threads give different bits from the same source and seed), and an
    # unpinned count is whatever the shell or the previous stage left. Evaluation runs on as many threads.
    cfg = replace(cfg, threads=cfg.threads or default_threads())
    set_compute_threads(cfg.threads)
    source = load_checkpoint(Path(cfg.model))
    model_config = source.model_config
    train_set, val_set, split_file = _source_split(source, cfg)
    shutil.copyfile(split_file, staging / "split.json")
    log.info("source %s (%s, input %d, %s): %d train / %d val images; %d CPU thread(s)", source.path,
             model_config.arch, model_config.input_size, model_config.input_mode, len(train_set), len(val_set),
             cfg.threads)
    # Folded like the quantized models (the same function): the sensitivity scan swaps quantized layers
    # into it, so its FP32 reference has the INT8 model's graph, BatchNorm for BatchNorm. (The FP32 model
    # saved to fp32/ is built again unfolded: see below.)
    fp32_model = fuse_batch_norms(source.build())
    skip_layers = resolve_layer_names(fp32_model, cfg.skip_layers + (lite_x86_fp32_layers(fp32_model)
                                                                      if cfg.lite_x86_safe else []))
    calibration_set = _sample(train_set, cfg.calibration_images, cfg.seed)

    if cfg.sensitivity:
        tick = time.perf_counter()
        report = _sensitivity(source, fp32_model, calibration_set, val_set, cfg, progress)
        report.save(staging / "sensitivity.json")
        skip_layers = resolve_layer_names(fp32_model, skip_layers + report.most_sensitive(cfg.skip_most_sensitive))
        timings["sensitivity_s"] = round(time.perf_counter() - tick, 1)
        log.info("sensitivity: most sensitive %s", ", ".join(report.most_sensitive(5)) or "none")
    if skip_layers:
        log.info("kept in FP32: %s", ", ".join(skip_layers))

    tick = time.perf_counter()
    fp32_prefix = staging / FP32_DIR / MODEL_PREFIX
    # Saved with its BatchNorms, not folded: the same function, and Paddle Lite / oneDNN fuse conv + BatchNorm
    # (+ activation) themselves, while a folded bias is saved as reshape2 + elementwise_add after each convolution,
    # which Lite x86 leaves unfused (52 extra op pairs on the DeepPCB student; its x86 .nb, converted from this
    # model, ran p50 22-26 ms where the unfolded one ran 17-22 ms, 2 threads, alternating runs).
    save_inference_model(source.build(), fp32_prefix, model_config.input_size, model_config.in_channels)
    timings["save_fp32_s"] = round(time.perf_counter() - tick, 1)

    int8_prefix = staging / MODEL_PREFIX
    saved_model, history, kept_epoch = _quantize_and_save(source, skip_layers, calibration_set, train_set, val_set,
                                                          int8_prefix, cfg, timings, progress)

    summary = describe_program(program_file(int8_prefix))
    if not summary.quantized:
        raise RuntimeError(f"{program_file(int8_prefix)}: no convolution was quantized")
    precisions = layer_precisions(saved_model, summary)
    kept_fp32 = [name for name, precision in precisions.items() if precision == "fp32"]
    if kept_fp32 != skip_layers:
        log.warning("the saved program keeps %s in FP32; asked for %s", kept_fp32, skip_layers)

    tick = time.perf_counter()
    results, detections = {}, {}
    for name, prefix, onednn_int8 in (("fp32", fp32_prefix, False), ("int8", int8_prefix, False),
                                      ("int8_onednn", int8_prefix, True)):
        results[name], detections[name] = _evaluate_saved(prefix, onednn_int8, val_set, source, cfg, progress)
    # How far each drop can be trusted on these boards: FP32 and INT8 scored on the same draws of them.
    labels = ground_truth(val_set.samples)
    intervals = {name: official_ap_difference_interval(labels, detections["fp32"], detections[name])
                 for name in ("int8", "int8_onednn")}
    timings["evaluate_s"] = round(time.perf_counter() - tick, 1)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    drop = {key: results["fp32"][key] - results["int8"][key]
            for key in ("official_ap", "official_f", "map50", "map50_95", "f1_iou033")}
    drop_onednn = {key: results["fp32"][key] - results["int8_onednn"][key] for key in drop}
    drop["official_ap_interval"] = intervals["int8"].to_dict()
    drop_onednn["official_ap_interval"] = intervals["int8_onednn"].to_dict()
    if drop_onednn["map50"] > drop["map50"] + 0.02:
        log.warning("oneDNN's INT8 kernels lose %.4f mAP@0.5 on this CPU where the quantized model itself loses "
                    "%.4f: do not deploy with Paddle Inference INT8 here", drop_onednn["map50"], drop["map50"])

    _write_json(staging / "metrics.json", {
        "method": cfg.method, "split": "val", "n_images": len(val_set), **results, "drop": drop,
        "drop_onednn": drop_onednn, "qat_history": history, "qat_kept_epoch": kept_epoch,
        "timings": timings})
    _write_json(staging / "quant_config.json", {
        "config": cfg.to_dict(), "source_checkpoint": str(source.path),
        "scheme": {**QAT_CONFIG, "calibration_percentile": CALIBRATION_PERCENTILE},
        "calibration_images": [s.key for s in calibration_set.samples], "skip_layers": skip_layers,
        "int8_layers": len(precisions) - len(kept_fp32), "fp32_layers": len(kept_fp32), "layers": precisions,
        "program_ops": summary.op_counts})
    # What ``inspector export --model OUT`` reads to describe the INT8 model.pdmodel beside it.
    _write_json(staging / "checkpoint.json", {
        "model_config": model_config.to_dict(), "class_names": list(source.class_names),
        "kind": "quantized inference model (model.pdmodel / model.pdiparams); no dygraph weights",
        "metrics": {k: v for k, v in results["int8"].items() if k not in ("runtime", "model_bytes")},
        "quantization": {"method": cfg.method, "source_checkpoint": str(source.path), "drop": drop}})
    for label, values, interval in (
            ("INT8 drop (quantized graph, simulated on FP32 kernels)", drop, intervals["int8"]),
            ("INT8 drop (oneDNN INT8 kernels, what Paddle Inference runs)", drop_onednn, intervals["int8_onednn"])):
        log.info("%s: official AP %.4f (%s)  F %.4f  mAP@0.5 %.4f  mAP@0.5:0.95 %.4f  F(IoU>0.33) %.4f", label,
                 values["official_ap"], interval.text(points=True), values["official_f"], values["map50"],
                 values["map50_95"], values["f1_iou033"])


def _sensitivity(source: Checkpoint, fp32_model: YOLODetector, calibration_set: Dataset, val_set: Dataset,
                 cfg: QuantizeConfig, progress: bool) -> SensitivityReport:
    """Rank every convolution by the mAP its quantization alone costs, on the first validation images."""
    model_config = source.model_config
    quantized = quantize_model(source.build())
    calibrate(quantized, _images(calibration_set, cfg, model_config))
    subset = val_set.subset([s.key for s in val_set.samples[: cfg.sensitivity_images]])
    loader = BatchLoader(subset, cfg.batch_size, model_config.input_size, model_config.input_mode,
                         workers=cfg.workers)
    return layer_sensitivity(fp32_model, quantized, loader, source.class_names, progress=progress,
                             thresholds=recipe_thresholds(source.info.get("train_config")))


def _quantize_and_save(source: Checkpoint, skip_layers: list[str], calibration_set: Dataset, train_set: Dataset,
                       val_set: Dataset, int8_prefix: Path, cfg: QuantizeConfig, timings: dict[str, float],
                       progress: bool) -> tuple[YOLODetector, list[dict], int | None]:
    """Quantize and calibrate (PTQ), fine-tune too (QAT), save; returns the model, the epoch losses (with
    ``keep_epoch`` "best", each epoch's oneDNN INT8 accuracy too) and the QAT epoch saved (None: no QAT)."""
    model_config = source.model_config
    tick = time.perf_counter()
    quantized = quantize_model(source.build(), skip_layers)
    calibrate(quantized, _images(calibration_set, cfg, model_config))
    timings["calibrate_s"] = round(time.perf_counter() - tick, 1)
    history: list[dict] = []
    if cfg.method == "qat" and cfg.epochs:
        crop_size = cfg.crop_size if cfg.crop_size is not None else \
            source.info.get("train_config", {}).get("crop_size")
        loader = BatchLoader(train_set, cfg.batch_size, model_config.input_size, model_config.input_mode,
                             train=True, seed=cfg.seed, crop_size=crop_size or None, workers=cfg.workers)
        chooser = None
        if cfg.keep_epoch == "best":
            chooser = _EpochChooser(quantized, int8_prefix.parent / "qat-epochs", val_set, source, cfg, progress)
        tick = time.perf_counter()
        history = finetune(quantized, loader, cfg.epochs, cfg.lr, cfg.weight_decay, cfg.max_steps_per_epoch,
                           progress, after_epoch=chooser)
        timings["finetune_s"] = round(time.perf_counter() - tick, 1)
        if chooser is not None:
            chooser.keep(int8_prefix)
            return quantized, history, chooser.best_epoch
    tick = time.perf_counter()
    save_inference_model(quantized, int8_prefix, model_config.input_size, model_config.in_channels)
    timings["save_int8_s"] = round(time.perf_counter() - tick, 1)
    return quantized, history, (cfg.epochs if cfg.method == "qat" and cfg.epochs else None)


class _EpochChooser:
    """Saves the INT8 graph after each QAT epoch, scores it on the validation split through oneDNN's INT8
    kernels, and keeps the best (official AP; ties: mAP@0.5:0.95, then the earlier epoch).

    Why: QAT's epochs move the oneDNN INT8 model's official AP by several tenths of a point up and down (the
    DeepPCB student, 4 epochs: 0.43 pt lost; 8 epochs: 0.78), and the FP32 checkpoint it starts from was
    itself chosen by that metric on that split. Scored on the saved files, so what is kept is exactly what
    was measured; ~20 s an epoch on 200 boards.
    """

    def __init__(self, model: YOLODetector, workdir: Path, val_set: Dataset, source: Checkpoint,
                 cfg: QuantizeConfig, progress: bool):
        self.model, self.workdir, self.val_set, self.source, self.cfg = model, workdir, val_set, source, cfg
        self.progress = progress
        self.best_metrics: dict[str, Any] | None = None
        self.best_epoch = 0

    def __call__(self, epoch: int) -> dict[str, float]:
        config = self.source.model_config
        prefix = self.workdir / f"epoch-{epoch}" / MODEL_PREFIX
        save_inference_model(self.model, prefix, config.input_size, config.in_channels)
        metrics, _ = _evaluate_saved(prefix, True, self.val_set, self.source, self.cfg, self.progress)
        if improves(metrics, self.best_metrics):
            if self.best_epoch:
                shutil.rmtree(self.workdir / f"epoch-{self.best_epoch}")
            self.best_metrics, self.best_epoch = metrics, epoch
        else:
            shutil.rmtree(prefix.parent)
        log.info("QAT epoch %d, oneDNN INT8 on validation: official AP %.4f (best so far: epoch %d, %.4f)", epoch,
                 metrics["official_ap"], self.best_epoch, self.best_metrics["official_ap"])
        return {"val_onednn_official_ap": metrics["official_ap"], "val_onednn_official_f": metrics["official_f"],
                "val_onednn_map50_95": metrics["map50_95"]}

    def keep(self, int8_prefix: Path) -> None:
        """Move the best epoch's files to ``int8_prefix`` and say which it was."""
        best = self.workdir / f"epoch-{self.best_epoch}" / MODEL_PREFIX
        for file in (program_file(best), params_file(best)):
            shutil.move(file, int8_prefix.parent / (int8_prefix.name + file.suffix))
        shutil.rmtree(self.workdir)
        log.info("QAT keeps epoch %d (oneDNN INT8 official AP %.4f on validation)", self.best_epoch,
                 self.best_metrics["official_ap"])


def _evaluate_saved(prefix: Path, onednn_int8: bool, dataset: Dataset, source: Checkpoint, cfg: QuantizeConfig,
                    progress: bool) -> tuple[dict[str, Any], list[ImageDetections]]:
    """Accuracy of the saved model at ``prefix`` through Paddle Inference, with what ran and its size; and its
    detections, one per sample of ``dataset``."""
    engine = InferenceModel(prefix, onednn_int8=onednn_int8, threads=cfg.threads)
    loader = BatchLoader(dataset, cfg.batch_size, source.model_config.input_size, source.model_config.input_mode,
                         workers=cfg.workers)
    found = predict_inference_model(engine, loader, progress, recipe_thresholds(source.info.get("train_config")))
    detections = [found[sample.key] for sample in dataset.samples]
    result = evaluate_samples(dataset.samples, detections, source.class_names)
    log.info("%s (%s): official AP %.4f  F %.4f  mAP@0.5 %.4f  mAP@0.5:0.95 %.4f  F(IoU>0.33) %.4f",
             program_file(prefix).name, engine.runtime.precision, result.official_ap, result.official_f, result.map50,
             result.map50_95, result.f1_iou033)
    return {**result.to_dict(), "runtime": engine.runtime.to_dict(), "model_bytes": _model_bytes(prefix)}, detections


def _source_split(source: Checkpoint, cfg: QuantizeConfig) -> tuple[Dataset, Dataset, Path]:
    """The source run's own train/val split of ``cfg.data`` (the FP32 numbers were measured on it)."""
    split_file = source.path.parent / "split.json"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: missing; quantization reuses the source run's train/val split so "
                                "that FP32 and INT8 are compared on images neither was trained on")
    dataset = load_dataset(cfg.data, format=cfg.format)
    for problem in dataset.problems:
        log.warning("%s", problem)
    if dataset.class_names != source.class_names:
        raise ValueError(f"{cfg.data} has classes {dataset.class_names}, the model {source.class_names}")
    train_set, val_set = split_dataset(dataset, split_file=split_file)
    if len(val_set) == 0:
        raise ValueError(f"{split_file}: the validation split is empty; nothing to measure the drop on")
    return train_set, val_set, split_file


def _sample(dataset: Dataset, count: int, seed: int) -> Dataset:
    """Up to ``count`` samples of ``dataset``, drawn with ``seed`` (kept in dataset order)."""
    order = np.random.default_rng(seed).permutation(len(dataset))[:count]
    return dataset.subset([dataset.samples[int(i)].key for i in order])


def _images(dataset: Dataset, cfg: QuantizeConfig, model_config: ModelConfig,
            batch_size: int | None = None) -> Iterator[np.ndarray]:
    """Whole letterboxed input images of ``dataset`` (no augmentation), in batches."""
    loader = BatchLoader(dataset, batch_size or cfg.batch_size, model_config.input_size, model_config.input_mode,
                         workers=cfg.workers)
    return (batch.images for batch in loader)


def _model_bytes(prefix: Path) -> int:
    return program_file(prefix).stat().st_size + params_file(prefix).stat().st_size


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
