"""`inspector demo` (what `make run` runs): the retraining loop end to end on data that ships with the project.

1. `data check` of the bundled real DeepPCB pairs;
2. synthetic boards generated into the demo directory;
3. a short student training run on them (minutes on 2 CPU cores);
4. evaluation of that run on the bundled real pairs.

The model of step 3 is trained for a few epochs only: the demo shows the workflow, not a usable detector.
Real training: `inspector train --data ../shared/datasets/deeppcb ...` (see README).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import typer

from inspector.data import check_dataset, format_report, load_dataset
from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.data.loader import BatchLoader
from inspector.data.synth import write_deeppcb
from inspector.training.checkpoint import load_checkpoint
from inspector.training.config import TrainConfig
from inspector.training.trainer import train
from inspector.training.validate import validate


def run_demo(out: Path, boards: int = 48, epochs: int = 3, input_size: int = 256) -> dict:
    out = Path(out)
    typer.secho(f"[1/4] data check of the bundled real pairs: {BUNDLED_DEEPPCB}", bold=True)
    typer.echo(format_report(check_dataset(BUNDLED_DEEPPCB)))

    synth_dir = out / "synth"
    typer.secho(f"[2/4] {boards} synthetic boards -> {synth_dir}", bold=True)
    shutil.rmtree(synth_dir, ignore_errors=True)
    write_deeppcb(synth_dir, n=boards, seed=0, size=320)

    run_dir = out / "run"
    typer.secho(f"[3/4] training mbv3-small for {epochs} epochs -> {run_dir}", bold=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    train(TrainConfig(arch="mbv3-small", data=str(synth_dir), out=str(run_dir), epochs=epochs, batch_size=8,
                      input_size=input_size, crop_size=None, input_mode="image+template", lr=4e-3,
                      warmup_epochs=0.5))

    typer.secho("[4/4] evaluation on the bundled real pairs", bold=True)
    checkpoint = load_checkpoint(run_dir)
    real = load_dataset(BUNDLED_DEEPPCB)
    loader = BatchLoader(real, 8, checkpoint.model_config.input_size, checkpoint.model_config.input_mode, train=False)
    result = validate(checkpoint.build(), loader, checkpoint.class_names, progress=False)
    typer.echo(f"{len(real)} real pairs: mAP@0.5 {result.map50:.3f}  mAP@0.5:0.95 {result.map50_95:.3f}  "
               f"F(IoU>0.33) {result.f1_iou033:.3f}  (a {epochs}-epoch model trained on synthetic boards only)")
    typer.echo(f"run directory: {run_dir} (metrics.csv, plots/, best/, last/)")
    return result.to_dict()
