"""The pipeline's report: ``report.json`` (everything measured), ``report.md`` (for people), ``report.png``.

One row per stage with the official DeepPCB AP and F (the dataset authors' script, what models are
chosen by), mAP@0.5, mAP@0.5:0.95, the class-aware DeepPCB F-score (IoU > 0.33), parameters, FLOPs,
file size and latency, all measured through the runtime on the stage's package (``measure.py``); then
the distillation gain and the quantization drops stated as numbers, the training stages' learning curves
(validation official AP and training loss per epoch, from each run's ``metrics.json``: the schedule and its
CPU/GPU time as it was spent), and how long each stage took.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inspector.pipeline.config import PipelineConfig
from inspector.pipeline.measure import INTERVALS_FILE, MEASURE_DIR, load_rows

REPORT_FILES = ("report.md", "report.json", "report.png")
# The accuracy numbers compared between stages; rows measured before the official metric lack its keys.
ACCURACY_KEYS = ("official_ap", "official_f", "map50", "map50_95", "f1_iou033")
# The training stages whose runs keep a per-epoch history (metrics.json), in pipeline order.
TRAINING_STAGES = {"teacher": "teacher", "student": "student alone", "distilled": "distilled student",
                   "pruned": "pruned, fine-tuned"}
CURVE_KEYS = ("epoch", "train_loss", "official_ap", "official_f", "map50_95", "epoch_seconds", "train_img_per_s",
              "train_teacher_cache_hit_rate", "train_teacher_cache_from_store")


def summarize(rows: list[dict], bench_threads: list[int], quantized_from: str = "distilled") -> dict[str, Any]:
    """Distillation gain, quantization drops (against ``quantized_from``, the FP32 stage that was
    quantized) and speed-up, from the measured rows."""
    by_row = {row["row"]: row for row in rows}

    def acc(row: str, key: str, backend: str = "lite") -> float | None:
        entry = by_row.get(row)
        return None if entry is None else entry["accuracy"][backend].get(key)

    def delta(a: str, b: str, backend: str = "lite") -> dict | None:
        if a not in by_row or b not in by_row:
            return None
        return {key: acc(a, key, backend) - acc(b, key, backend) for key in ACCURACY_KEYS
                if acc(a, key, backend) is not None and acc(b, key, backend) is not None}

    fp32_reference = quantized_from
    threads = max(bench_threads)
    teacher = by_row.get("teacher", {}).get("bench", {}).get(f"paddle-{threads}")
    shipped = by_row.get("qat", {}).get("bench", {}).get(f"lite-{threads}")
    return {
        "distillation_gain": delta("distilled", "student"),  # distilled - alone, same schedule
        # FP32 - INT8 (positive = lost), both through Paddle Inference: there the INT8 graph itself runs
        # (oneDNN); the INT8 package's x86 .nb is its FP32 twin.
        "qat_drop": _negate(delta("qat", fp32_reference, "paddle")),
        "ptq_drop": _negate(delta("ptq", fp32_reference, "paddle")),
        "fp32_reference": fp32_reference,
        "speedup_vs_teacher": None if not (teacher and shipped) else teacher["p50_ms"] / shipped["p50_ms"],
        "speedup_threads": threads,
        # the shipped package against bench_against's, their frames alternately (measure._bench_against)
        "latency_against": by_row.get("qat", {}).get("bench_against"),
    }


def write_report(cfg: PipelineConfig, out: Path, state: dict) -> list[Path]:
    rows = load_rows(out)
    summary = summarize(rows, cfg.bench_threads, state["stages"]["qat"].get("source_stage", "distilled"))
    intervals_file = out / MEASURE_DIR / INTERVALS_FILE
    summary["official_ap_intervals"] = json.loads(intervals_file.read_text()) if intervals_file.is_file() else {}
    curves = learning_curves(state)
    payload = {"config": cfg.to_dict(), "stages": state["stages"], "rows": rows, "summary": summary,
               "learning_curves": curves}
    (out / "report.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "report.md").write_text(format_markdown(cfg, state, rows, summary, curves))
    _plot(rows, cfg.bench_threads, out / "report.png", curves)
    return [out / name for name in REPORT_FILES]


def learning_curves(state: dict) -> dict[str, list[dict]]:
    """Per training stage, its run's epochs as trained (``metrics.json``; a reused run's too): validation
    official AP / F and mAP@0.5:0.95 where that epoch was validated, training loss, seconds and images/s. A run
    without the file (trained before it existed) has no curve; keys an epoch lacks are left out."""
    curves = {}
    for stage in TRAINING_STAGES:
        run = (state["stages"].get(stage) or {}).get("run")
        history = Path(run) / "metrics.json" if run else None
        if history is None or not history.is_file():
            continue
        curves[stage] = [{key: epoch[key] for key in CURVE_KEYS if epoch.get(key) is not None}
                         for epoch in json.loads(history.read_text())]
    return curves


def started_from(state: dict, stage: str) -> str:
    """What a training stage's run started from (its ``train_config.json`` → ``init``; the pruned stage: the
    student it pruned): the weights a fine-tune inherits change what its epochs and gain mean."""
    info = state["stages"].get(stage) or {}
    if stage == "pruned":
        return f"`{info['source']}`, pruned" if info.get("source") else "-"
    run = info.get("run")
    config_file = Path(run) / "train_config.json" if run else None
    if config_file is None or not config_file.is_file():
        return "-"
    init = json.loads(config_file.read_text()).get("init")
    return f"`{init}`" if init else "random weights"


def qat_epochs_line(run: str | None) -> str | None:
    """Each QAT epoch's oneDNN INT8 official AP on validation and the epoch kept, from the QAT run's
    ``metrics.json``; None when the run scored no epoch (``keep_epoch: last``, or run before epochs were scored)."""
    metrics_file = Path(run) / "metrics.json" if run else None
    if metrics_file is None or not metrics_file.is_file():
        return None
    metrics = json.loads(metrics_file.read_text())
    scored = [row for row in metrics.get("qat_history", []) if "val_onednn_official_ap" in row]
    if not scored:
        return None
    each = ", ".join(f"{row['epoch']}: {row['val_onednn_official_ap']:.4f}" for row in scored)
    return (f"oneDNN INT8 official AP on validation after each epoch {each}; epoch {metrics['qat_kept_epoch']} "
            "is the one saved (`keep_epoch: best`)")


def describe_curve(curve: list[dict]) -> dict[str, Any]:
    """A learning curve in numbers: epochs, the best validated epoch by official AP (ties: the first), the
    time the epochs' training steps took and their mean training speed."""
    validated = [epoch for epoch in curve if "official_ap" in epoch]
    best = max(validated, key=lambda epoch: epoch["official_ap"]) if validated else None
    seconds = [epoch["epoch_seconds"] for epoch in curve if "epoch_seconds" in epoch]
    speeds = [epoch["train_img_per_s"] for epoch in curve if "train_img_per_s" in epoch]
    described = {"epochs": len(curve), "best_epoch": best["epoch"] if best else None,
                 "best_official_ap": best["official_ap"] if best else None,
                 "last_official_ap": validated[-1]["official_ap"] if validated else None,
                 "train_minutes": sum(seconds) / 60 if seconds else None,
                 "img_per_s": sum(speeds) / len(speeds) if speeds else None}
    if curve and "train_teacher_cache_hit_rate" in curve[-1]:  # a distillation run with the teacher cache
        described["teacher_cache_hit_rate"] = curve[-1]["train_teacher_cache_hit_rate"]
        described["teacher_cache_from_store"] = curve[-1].get("train_teacher_cache_from_store")
    return described


def format_markdown(cfg: PipelineConfig, state: dict, rows: list[dict], summary: dict,
                    curves: dict[str, list[dict]] | None = None) -> str:
    threads = max(cfg.bench_threads)
    n_images = rows[0]["n_images"] if rows else 0
    lines = [
        f"# Pipeline report: {cfg.name}",
        "",
        f"Data `{cfg.data}`, validation split `split.json` ({n_images} images never trained on), input "
        f"{cfg.input_size} px, mode {cfg.input_mode}. Every number below was measured on the stage's model "
        "package through the runtime (`inspector.runtime.Detector`), on this machine.",
        "",
        "Official AP / F: the DeepPCB authors' metric (IoU > 0.33, a wrong-class detection consumes the box; "
        "non-interpolated AP; F at its best threshold), by which models are chosen. COCO columns: mAP@0.5 / "
        "mAP@0.5:0.95 / class-aware F (IoU>0.33) with the precision that ran. An INT8 package's "
        "x86 `.nb` is its FP32 twin (`manifest.target_precision`; Paddle Lite's x86 INT8 kernels lose accuracy), "
        "so its INT8 graph is measured through Paddle Inference (oneDNN INT8 kernels on this CPU).",
        "",
        f"| stage | official AP / F, Lite x86 | official AP / F, Paddle Inference | COCO, Paddle Lite x86 "
        f"| COCO, Paddle Inference | params | FLOPs | x86 .nb | ARM .nb "
        f"| Lite p50 ms ({threads} thr) | Paddle p50 ms ({threads} thr) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        size = row["bytes"]
        lines.append(
            f"| {row['label']} | {_official(row, 'lite')} | {_official(row, 'paddle')} "
            f"| {_accuracy(row, 'lite')} | {_accuracy(row, 'paddle')} "
            f"| {row['params'] / 1e6:.2f} M | {row['flops'] / 1e9:.2f} G "
            f"| {_mb(size.get('model_x86.nb'))} | {_mb(size.get('model_arm.nb'))} "
            f"| {_bench(row, f'lite-{threads}')} | {_bench(row, f'paddle-{threads}')} |")
    lines += ["", "## What the numbers say", ""]
    gain = summary["distillation_gain"]
    if not cfg.distill:
        lines.append("- **Distillation**: not run in this pipeline (`distill: false`).")
    intervals = summary.get("official_ap_intervals") or {}
    if gain:
        lines.append(f"- **Distillation gain** (distilled - student alone, same schedule): {_deltas(gain)}"
                     f"{_interval_note(intervals.get('distillation_gain'))}.")
    for key, name in (("qat_drop", "QAT INT8"), ("ptq_drop", "PTQ INT8")):
        drop = summary[key]
        if drop:
            lines.append(f"- **Quantization drop, {name}** vs the FP32 {summary['fp32_reference']} model, both "
                         f"through Paddle Inference: {_deltas(drop)} (positive = lost)"
                         f"{_interval_note(intervals.get(key))}.")
    if summary["speedup_vs_teacher"]:
        lines.append(f"- **Speed**: the shipped INT8 package on Paddle Lite is {summary['speedup_vs_teacher']:.1f}x "
                     f"faster than the FP32 teacher on Paddle Inference ({threads} thread{'s' * (threads > 1)}, "
                     "whole frame incl. pre- and post-processing).")
    against = summary.get("latency_against")
    if against:
        lines.append(f"- **Latency against `{against['package']}`** (the two packages' frames alternately in one "
                     f"process, Paddle Lite, {against['threads']} thread{'s' * (against['threads'] > 1)}, "
                     f"{against['runs']} frames each): p50 {against['p50_ms']:.1f} ms against "
                     f"{against['against_p50_ms']:.1f} ms, ratio **{against['p50_ratio']:.3f}**.")
    quantized = state["stages"].get("qat", {})
    if quantized.get("source_reason"):
        lines.append(f"- **Quantized student**: `{quantized.get('source')}`; {quantized['source_reason']}.")
    epochs_line = qat_epochs_line(quantized.get("run"))
    if epochs_line:
        lines.append(f"- **QAT epochs**: {epochs_line}.")
    for row in rows:
        for backend, info in row["runtime"].items():
            if info.get("note"):
                lines.append(f"- {row['label']}, {backend}: {info['note']}.")
    lines += ["", "## Latency (whole frame: letterbox, network, NMS; p50 / p99 ms)", "",
              "| stage | " + " | ".join(f"{b} x{t}" for b in ("lite", "paddle") for t in cfg.bench_threads) + " |",
              "|---|" + "---|" * (2 * len(cfg.bench_threads))]
    for row in rows:
        cells = []
        for backend in ("lite", "paddle"):
            for t in cfg.bench_threads:
                entry = row["bench"].get(f"{backend}-{t}")
                cells.append("-" if entry is None else f"{entry['p50_ms']:.1f} / {entry['p99_ms']:.1f} "
                                                       f"({entry['precision']})")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    if curves:
        lines += ["", "## Training (learning curves: `report.png`, every epoch in `report.json` → `learning_curves`)",
                  "", "| stage | started from | epochs | best epoch (official AP) | last epoch's official AP | "
                  "training time | img/s |", "|---|---|---|---|---|---|---|"]
        for stage, curve in curves.items():
            info = describe_curve(curve)
            best = "-" if info["best_epoch"] is None else f"{info['best_epoch']} ({info['best_official_ap']:.4f})"
            last = "-" if info["last_official_ap"] is None else f"{info['last_official_ap']:.4f}"
            minutes = "-" if info["train_minutes"] is None else f"{info['train_minutes']:.1f} min"
            speed = "-" if info["img_per_s"] is None else f"{info['img_per_s']:.1f}"
            start = started_from(state, stage)
            lines.append(f"| {TRAINING_STAGES[stage]} | {start} | {info['epochs']} | {best} | {last} | {minutes} | "
                         f"{speed} |")
        lines += ["", "Training time: the epochs' training steps as timed by the trainer, on the machine that "
                  "trained them (validation and start-up not included: the stage's whole time is under Stages)."]
        for stage, curve in curves.items():
            info = describe_curve(curve)
            if "teacher_cache_hit_rate" not in info:
                continue
            from_store = info["teacher_cache_from_store"]
            lines += ["", f"Teacher cache ({TRAINING_STAGES[stage]}): {info['teacher_cache_hit_rate']:.2f} of the "
                      "boards' lookups served without a teacher pass" + ("" if from_store is None else
                      f", {from_store:.2f} from the disk store the ranks share") + " (cumulative since the stage's "
                      "processes started, as of its last epoch); its img/s above against the student alone's is "
                      "what the teacher still costs."]
    lines += ["", "## Stages", "", "| stage | minutes | result |", "|---|---|---|"]
    for name, info in state["stages"].items():
        result = info.get("run", "")
        if info.get("reused"):
            result += " (reused, trained before this pipeline run)"
        lines.append(f"| {name} | {info.get('seconds', 0) / 60:.1f} | {result} |")
    device = next((row["bench"][key]["device"] for row in rows for key in row["bench"]), "")
    lines += ["", f"Machine: {device}. Configuration: `report.json` → `config`.", ""]
    return "\n".join(lines)


def _plot(rows: list[dict], bench_threads: list[int], path: Path, curves: dict[str, list[dict]] | None = None
          ) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = max(bench_threads)
    labels = [row["label"].replace(" (shipped)", "\n(shipped)") for row in rows]
    curves = {stage: curve for stage, curve in (curves or {}).items() if curve}
    figure, axes = plt.subplots(1, 3 if curves else 2, figsize=(18 if curves else 12, 4.5))
    left, right = axes[0], axes[1]
    positions = range(len(rows))
    bars = [("official_ap", "official AP"), ("map50", "mAP@0.5"), ("map50_95", "mAP@0.5:0.95")]
    for offset, (key, label) in zip((-0.27, 0.0, 0.27), bars):
        values = [r["accuracy"]["lite"].get(key) for r in rows]
        left.bar([p + offset for p in positions], [0.0 if v is None else v for v in values], 0.27, label=label)
    left.set_xticks(list(positions), labels, rotation=30, ha="right", fontsize=8)
    left.set_ylim(0, 1)
    left.set_title("accuracy on the validation split (Paddle Lite)")
    left.legend()
    # Official AP when every row has it (rows measured before it existed do not).
    key, name = (("official_ap", "official AP") if all(r["accuracy"]["lite"].get("official_ap") is not None
                                                       for r in rows) else ("map50_95", "mAP@0.5:0.95"))
    for row in rows:
        entry = row["bench"].get(f"lite-{threads}")
        if entry:
            size = row["bytes"].get("model_arm.nb") or row["bytes"].get("model_x86.nb") or 0
            right.scatter(entry["p50_ms"], row["accuracy"]["lite"][key], s=40 + size / 2e4)
            right.annotate(row["label"], (entry["p50_ms"], row["accuracy"]["lite"][key]), fontsize=8)
    right.set_xscale("log")
    right.set_xlabel(f"p50 latency, ms (Paddle Lite x86, {threads} threads)")
    right.set_ylabel(name)
    right.set_title("accuracy vs speed (marker area ~ file size)")
    if curves:
        _plot_curves(axes[2], curves)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_curves(axis, curves: dict[str, list[dict]]) -> None:
    """Validation official AP per epoch (solid, left axis) and training loss (dashed, right axis) per stage."""
    losses = axis.twinx()
    for index, (stage, curve) in enumerate(curves.items()):
        color = f"C{index}"
        validated = [epoch for epoch in curve if "official_ap" in epoch]
        axis.plot([e["epoch"] for e in validated], [e["official_ap"] for e in validated], color=color,
                  marker="." if len(validated) < 30 else None, label=f"{TRAINING_STAGES[stage]}: official AP")
        trained = [epoch for epoch in curve if "train_loss" in epoch]
        losses.plot([e["epoch"] for e in trained], [e["train_loss"] for e in trained], color=color, linestyle="--",
                    alpha=0.6, label=f"{TRAINING_STAGES[stage]}: training loss")
    axis.set_xlabel("epoch")
    axis.set_ylabel("official AP (validation)")
    losses.set_ylabel("training loss")
    axis.set_title("learning curves")
    handles = axis.get_legend_handles_labels()[0] + losses.get_legend_handles_labels()[0]
    axis.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower right")


def _negate(values: dict | None) -> dict | None:
    return None if values is None else {key: -value for key, value in values.items()}


def _accuracy(row: dict, backend: str) -> str:
    acc = row["accuracy"].get(backend)
    if acc is None:
        return "-"
    return (f"{acc['map50']:.4f} / {acc['map50_95']:.4f} / {acc['f1_iou033']:.4f} "
            f"({row['runtime'][backend]['precision']})")


def _interval_note(interval: dict | None) -> str:
    """'; official AP: 95 % paired interval -0.53 to +1.49 pt over the validation boards', or nothing."""
    if not interval:
        return ""
    return (f"; official AP: {interval['confidence']:.0%} paired interval {100 * interval['low']:+.2f} to "
            f"{100 * interval['high']:+.2f} pt over the validation boards ({interval['resamples']} resamples)")


def _official(row: dict, backend: str) -> str:
    acc = row["accuracy"].get(backend)
    if acc is None or acc.get("official_ap") is None:
        return "-"
    return f"{acc['official_ap']:.4f} / {acc['official_f']:.4f}"


_DELTA_LABELS = {"official_ap": "official AP", "official_f": "official F", "map50": "mAP@0.5",
                 "map50_95": "mAP@0.5:0.95", "f1_iou033": "F"}


def _deltas(values: dict) -> str:
    return ", ".join(f"{_DELTA_LABELS[key]} {values[key]:+.4f}" for key in ACCURACY_KEYS if key in values)


def _mb(size: int | None) -> str:
    return "-" if not size else f"{size / 1e6:.2f} MB"


def _bench(row: dict, key: str) -> str:
    entry = row["bench"].get(key)
    return "-" if entry is None else f"{entry['p50_ms']:.1f}"
