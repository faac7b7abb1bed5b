"""PNG plots of a training run: losses, official DeepPCB AP/F and mAP over epochs, per-class PR curves of the best epoch."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from inspector.evaluation import EvalResult  # noqa: E402


def plot_training(history: list[dict], directory: Path, best: EvalResult | None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    epochs = [row["epoch"] for row in history]

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted(k for k in history[-1] if k.startswith("train_") and k not in ("train_img_per_s",)):
        ax.plot(epochs, [row.get(key) for row in history], label=key.removeprefix("train_"))
    ax.set(xlabel="epoch", ylabel="loss", title="training loss", yscale="log")
    ax.legend(fontsize=7)
    _save(fig, directory / "loss.png")

    evaluated = [row for row in history if "map50" in row]
    if evaluated:
        fig, ax = plt.subplots(figsize=(6, 4))
        curves = [("official_ap", "official AP"), ("official_f", "official F"), ("map50", "mAP@0.5"),
                  ("map50_95", "mAP@0.5:0.95"), ("f1_iou033", "F (IoU>0.33)")]
        for key, label in curves:
            if any(r.get(key) is not None for r in evaluated):  # rows from before the official metric lack it
                values = [float("nan") if r.get(key) is None else r[key] for r in evaluated]
                ax.plot([r["epoch"] for r in evaluated], values, marker="o", label=label)
        ax.set(xlabel="epoch", ylabel="validation", ylim=(0, 1), title="validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
        _save(fig, directory / "map.png")

    if best is not None and best.pr_curves:
        fig, ax = plt.subplots(figsize=(6, 5))
        for name, curve in best.pr_curves.items():
            ap = best.per_class[name].ap50 if name in best.per_class else None
            ap = float("nan") if ap is None else ap
            ax.plot(curve.recall, curve.precision, label=f"{name} (AP50 {ap:.3f})")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="PR curves at IoU 0.5 (best)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        _save(fig, directory / "pr_curves.png")


def _save(fig, path: Path) -> None:
    tmp = path.with_suffix(".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
