"""``inspector prune`` and ``inspector quantize``: make a trained detector smaller and faster, and measure what
that cost in accuracy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import config_from_options, fail, given, user_errors
from inspector.cli.options import (Batch, Criterion, Format, KeepEpoch, MaxSteps, QuantMethod, Seed, config_option,
                                   for_config, value_of)
from inspector.compression.pruning.config import PruneConfig
from inspector.compression.quantization.config import QuantizeConfig

# The flags of the configs' fields whose names differ from the field's (the others: --field-name).
PRUNE_FLAGS = {"target_flops_reduction": "--target-flops", "batch_size": "--batch",
               "max_steps_per_epoch": "--max-steps"}
QUANTIZE_FLAGS = {"batch_size": "--batch", "max_steps_per_epoch": "--max-steps"}
# The shared options, with the defaults of these commands' configs in --help.
PruneSeed = for_config(Seed, PruneConfig, "seed")
QuantizeSeed = for_config(Seed, QuantizeConfig, "seed")
QuantizeBatch = for_config(Batch, QuantizeConfig, "batch_size")


def prune_command(
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Run (its best/) or checkpoint directory to prune. Required unless --resume.")] = None,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="The labeled data it was trained on. Required unless --resume.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", help="New run directory (pruned and fine-tuned checkpoints, report).")] = ...,
    criterion: Annotated[Optional[Criterion], config_option(
        PruneConfig, "criterion", "--criterion", help="l1: keep the filters with the largest L1 norm; fpgm: remove "
        "those nearest the geometric median of their layer.")] = None,
    ratio: Annotated[Optional[float], config_option(
        PruneConfig, "ratio", "--ratio", min=0.0, max=0.95,
        help="Remove this fraction of the channels of every channel group.")] = None,
    auto_ratio: Annotated[bool, typer.Option(
        "--auto-ratio", help="Instead of --ratio: per-group ratios from a sensitivity scan on validation "
        "images.")] = False,
    target_flops: Annotated[Optional[float], config_option(
        PruneConfig, "target_flops_reduction", "--target-flops",
        help="--auto-ratio: fraction of the FLOPs to remove.")] = None,
    max_drop: Annotated[Optional[float], config_option(
        PruneConfig, "max_drop", "--max-drop", help="--auto-ratio: largest mAP@0.5:0.95 drop (before fine-tuning) "
        "that pruning one group may cost on the scan images.")] = None,
    scan_ratios: Annotated[Optional[str], config_option(
        PruneConfig, "scan_ratios", "--scan-ratios", help="--auto-ratio: ratios tried per group.")] = None,
    scan_images: Annotated[Optional[int], config_option(
        PruneConfig, "scan_images", "--scan-images", min=1, help="--auto-ratio: validation images scanned.")] = None,
    channel_multiple: Annotated[Optional[int], config_option(
        PruneConfig, "channel_multiple", "--channel-multiple", min=1,
        help="Round kept channels to multiples of this (8 suits ARM kernels).")] = None,
    epochs: Annotated[Optional[int], config_option(
        PruneConfig, "epochs", "--epochs", min=1, help="Fine-tuning epochs (with --resume: the run's).")] = None,
    lr: Annotated[Optional[float], config_option(
        PruneConfig, "lr", "--lr", help="Fine-tuning peak learning rate (AdamW).")] = None,
    batch: Annotated[Optional[int], config_option(
        PruneConfig, "batch_size", "--batch", min=1, help="Images per step (default: the source run's).")] = None,
    format: Format = None,
    seed: PruneSeed = None,
    max_steps: MaxSteps = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the fine-tuning in --out from its last checkpoint.")] = False,
) -> None:
    """Structured channel pruning of a trained detector, then fine-tuning: a new run with best/ and last/
    (usable by eval and export), pruning.json (parameters, FLOPs, mAP before and after) and, with
    --auto-ratio, sensitivity.json."""
    from inspector.data import DataError

    with user_errors(DataError, FileExistsError, FileNotFoundError, ValueError,
                     interrupted=f"interrupted: if fine-tuning had started, {out}/last holds it; continue with "
                                 "--resume"):
        if resume:
            from inspector.compression.prune import resume_pruning

            run = resume_pruning(out, epochs=epochs)
        else:
            missing = [name for name, value in (("--model", model), ("--data", data)) if value is None]
            if missing:
                fail(f"error: {', '.join(missing)} needed (unless --resume)")
            if (ratio is None) == (not auto_ratio):
                fail("error: give exactly one of --ratio R and --auto-ratio")
            ratios = None
            if scan_ratios is not None:
                try:
                    ratios = tuple(float(r) for r in scan_ratios.split(","))
                except ValueError:
                    fail(f"error: --scan-ratios {scan_ratios!r}: expected comma-separated numbers such as 0.25,0.5")
            from inspector.compression.prune import prune

            cfg = config_from_options(PruneConfig, PRUNE_FLAGS, model=str(model), data=str(data), out=str(out),
                                      **given(criterion=value_of(criterion), ratio=ratio,
                                              target_flops_reduction=target_flops, max_drop=max_drop,
                                              scan_ratios=ratios, scan_images=scan_images,
                                              channel_multiple=channel_multiple, format=value_of(format),
                                              epochs=epochs, lr=lr, batch_size=batch, seed=seed,
                                              max_steps_per_epoch=max_steps))
            run = prune(cfg)
    from inspector.compression.prune import REPORT_FILE, format_report

    typer.echo(format_report(json.loads((run / REPORT_FILE).read_text())))
    typer.echo(f"done: {run}")


def quantize_command(
    model: Annotated[Path, typer.Option(
        "--model", help="FP32 training run (its best/) or checkpoint directory.")],
    data: Annotated[Path, typer.Option(
        "--data", help="The labeled data it was trained on (its split.json is reused).")],
    method: Annotated[Optional[QuantMethod], config_option(
        QuantizeConfig, "method", "--method", help="ptq: calibrate the INT8 scales on training images; qat: then "
        "fine-tune through the quantization.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", help="New run directory (INT8 and FP32 inference models, metrics).")] = ...,
    format: Format = None,
    epochs: Annotated[Optional[int], config_option(
        QuantizeConfig, "epochs", "--epochs", min=0, help="QAT fine-tuning epochs (0: calibration only).")] = None,
    lr: Annotated[Optional[float], config_option(
        QuantizeConfig, "lr", "--lr", help="QAT peak learning rate (AdamW, cosine to 0).")] = None,
    keep_epoch: Annotated[Optional[KeepEpoch], config_option(
        QuantizeConfig, "keep_epoch", "--keep-epoch", help="QAT epoch saved: best (highest official AP on "
        "validation through oneDNN INT8, scored after each epoch) or last.")] = None,
    batch: QuantizeBatch = None,
    crop_size: Annotated[Optional[int], config_option(
        QuantizeConfig, "crop_size", "--crop-size",
        help="QAT training crop (0: whole image); default: the source run's.")] = None,
    calibration_images: Annotated[Optional[int], config_option(
        QuantizeConfig, "calibration_images", "--calibration-images", min=1,
        help="Training images that set the activation scales.")] = None,
    skip_layers: Annotated[Optional[str], config_option(
        QuantizeConfig, "skip_layers", "--skip-layers", help="Comma-separated convolutions or blocks kept in FP32 "
        "(mixed precision), e.g. head.predictions.")] = None,
    sensitivity: Annotated[Optional[bool], config_option(
        QuantizeConfig, "sensitivity", "--sensitivity",
        help="Rank the layers by the mAP their quantization costs (sensitivity.json).")] = None,
    sensitivity_images: Annotated[Optional[int], config_option(
        QuantizeConfig, "sensitivity_images", "--sensitivity-images", min=1,
        help="Validation images it uses.")] = None,
    skip_most_sensitive: Annotated[Optional[int], config_option(
        QuantizeConfig, "skip_most_sensitive", "--skip-most-sensitive", min=0,
        help="With --sensitivity: also keep the K most sensitive layers in FP32.")] = None,
    threads: Annotated[Optional[int], config_option(
        QuantizeConfig, "threads", "--threads", min=1,
        help="CPU threads of QAT's fine-tuning and of the evaluations (default: OMP_NUM_THREADS); QAT's "
             "weights depend on it bit for bit, so quant_config.json records it.")] = None,
    lite_x86_safe: Annotated[Optional[bool], config_option(
        QuantizeConfig, "lite_x86_safe", "--lite-x86-safe", help="Also keep in FP32 the layers Paddle Lite's x86 "
        "INT8 kernels cannot run (stem, depthwise), so one INT8 model serves x86 Lite, ARM and oneDNN.")] = None,
    seed: QuantizeSeed = None,
    max_steps: Annotated[Optional[int], config_option(
        QuantizeConfig, "max_steps_per_epoch", "--max-steps",
        help="Cap QAT steps per epoch (smoke tests).")] = None,
) -> None:
    """INT8 quantization (QAT or PTQ) of a trained detector, exported as a Paddle inference model for
    `inspector export`; FP32 and INT8 accuracy measured through Paddle Inference (metrics.json)."""
    from inspector.data import DataError

    with user_errors(DataError, FileExistsError, FileNotFoundError, ValueError):
        from inspector.compression.quantize import quantize

        layers = None if skip_layers is None else [s.strip() for s in skip_layers.split(",") if s.strip()]
        cfg = config_from_options(
            QuantizeConfig, QUANTIZE_FLAGS, model=str(model), data=str(data), out=str(out),
            **given(method=value_of(method), format=value_of(format), epochs=epochs, lr=lr, batch_size=batch,
                    keep_epoch=value_of(keep_epoch),
                    crop_size=crop_size, calibration_images=calibration_images, skip_layers=layers,
                    sensitivity=sensitivity, sensitivity_images=sensitivity_images,
                    skip_most_sensitive=skip_most_sensitive, threads=threads, seed=seed,
                    lite_x86_safe=lite_x86_safe, max_steps_per_epoch=max_steps))
        run = quantize(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("fp32", "int8", "int8_onednn"):
        row = metrics[name]
        typer.echo(f"{name:11s} ({row['runtime']['precision']}, {row['model_bytes'] / 1e6:.2f} MB): official AP "
                   f"{row['official_ap']:.4f}  F {row['official_f']:.4f}  mAP@0.5 {row['map50']:.4f}  "
                   f"mAP@0.5:0.95 {row['map50_95']:.4f}  F(IoU>0.33) {row['f1_iou033']:.4f}")
    scored = [row for row in metrics["qat_history"] if "val_onednn_official_ap" in row]
    if scored:
        typer.echo("QAT epochs, oneDNN INT8 official AP on validation: " + "  ".join(
            f"{row['epoch']}: {row['val_onednn_official_ap']:.4f}" for row in scored)
            + f"; kept epoch {metrics['qat_kept_epoch']}")
    for key, label in (("drop", "INT8 model"), ("drop_onednn", "oneDNN INT8 kernels")):
        drop = metrics[key]
        typer.echo(f"drop ({label}) on {metrics['n_images']} validation images: official AP "
                   f"{drop['official_ap']:+.4f}  F {drop['official_f']:+.4f}  mAP@0.5 {drop['map50']:+.4f}  "
                   f"mAP@0.5:0.95 {drop['map50_95']:+.4f}  F(IoU>0.33) {drop['f1_iou033']:+.4f}")
        if "official_ap_interval" in drop:
            from inspector.evaluation.bootstrap import Interval

            typer.echo(f"  official AP drop: {Interval(**drop['official_ap_interval']).text(points=True)}")
    typer.echo(f"done: {run}")
