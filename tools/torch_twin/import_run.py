"""Turn a run trained by the torch twin on the GPU machine into an ordinary training run here.

    python -m tools.torch_twin.import_run DEVICE_RUN --weights DIR --out runs/gpu/student \
        --data ../shared/datasets/deeppcb --split runs/gpu/split.json

``DEVICE_RUN`` is a run folder written by ``tools.torch_twin.train`` (model_config.json, train_config.json,
metrics.json, best.json); ``--weights`` the folder holding its best weights (best.npz, or float16 parts
best.part*.npz). The result is what ``inspector train`` writes: ``best/`` (a Paddle checkpoint of the EMA
weights), ``train_config.json`` (the schedule, with this machine's data path), ``split.json``, metrics.json /
metrics.csv (the learning curve measured on the GPU machine) and ``provenance.json``. So ``inspector eval``,
``inspector export``, ``inspector quantize`` and the pipeline's ``student_run`` / ``teacher_run`` /
``distilled_run`` take it as they take any run.

The weights are loaded by name and shape (every Paddle parameter and BatchNorm statistic must be present,
nothing extra); the validation numbers stored in ``best/checkpoint.json`` are the GPU machine's, measured on a
pixel-identical copy of the images by the twin. ``inspector eval`` here re-measures them through Paddle.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import paddle

from inspector.data import load_dataset
from inspector.data.split import split_dataset
from inspector.models import ModelConfig, build_model
from inspector.training.checkpoint import save_checkpoint
from inspector.training.config import TrainConfig
from tools.torch_twin.arrays import load_arrays


def paddle_weights(model_config: ModelConfig, arrays: dict[str, np.ndarray], source: Path) -> dict:
    """The model's state dict filled from ``arrays``: the same names and shapes, or a ValueError naming them."""
    model = build_model(model_config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = [f"{k}: {list(arrays[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
             if k in arrays and list(arrays[k].shape) != list(v.shape)]
    if missing or extra or wrong:
        raise ValueError(f"{source}: does not fit {model_config.arch}/{model_config.head}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}, shapes {wrong[:5]}")
    model.set_state_dict({k: paddle.to_tensor(arrays[k].astype(expected[k].numpy().dtype)) for k in expected})
    return model.state_dict()


def import_run(device_run: Path, weights: Path, out: Path, data: str, split: Path, note: str = "",
               teacher_run: Path | None = None, distill: dict | None = None) -> Path:
    """``teacher_run``: for a distilled run, the imported teacher it was distilled from (its path here replaces
    the GPU machine's in distill_config.json); ``distill``: the settings, for a run that did not record them."""
    settings = distill
    if settings is None and (device_run / "distill_config.json").is_file():
        settings = json.loads((device_run / "distill_config.json").read_text())
    if settings is not None and teacher_run is None:
        raise ValueError(f"{device_run}: a distilled run; --teacher-run (the imported teacher) is needed")
    model_config = ModelConfig.from_dict(json.loads((device_run / "model_config.json").read_text()))
    config = TrainConfig.from_dict(json.loads((device_run / "train_config.json").read_text()))
    history = json.loads((device_run / "metrics.json").read_text())
    best = json.loads((device_run / "best.json").read_text())
    dataset = load_dataset(data)
    split_dataset(dataset, config.val_fraction, config.split_seed, split)  # refuses a split naming unknown pairs
    finished = (device_run / "done").is_file()
    trained_epochs = history[-1]["epoch"] if history else 0
    weights_dict = paddle_weights(model_config, load_arrays(weights), weights)
    out.mkdir(parents=True, exist_ok=True)
    config.data, config.out, config.split_file = data, str(out), None
    config.save(out / "train_config.json")
    shutil.copyfile(split, out / "split.json")
    provenance = {"trained_by": "tools.torch_twin.train (PyTorch twin) on the lent GPU machine",
                  "device_run": str(device_run), "finished": finished, "epochs_trained": trained_epochs,
                  "epochs_scheduled": config.epochs, "best_epoch": best["epoch"],
                  "metrics_measured_on": "the GPU machine, by the twin, on a pixel-identical copy of the data",
                  "note": note}
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    if settings is not None:
        from inspector.compression.distill import DISTILL_CONFIG_FILE, DistillConfig

        DistillConfig.from_dict({**settings, "teacher": str(teacher_run)}).save(out / DISTILL_CONFIG_FILE)
    save_checkpoint(out / "best", weights_dict, model_config, dataset.class_names,
                    {"epoch": best["epoch"], "metrics": best["metrics"], "train_config": config.to_dict(),
                     "provenance": provenance})
    (out / "metrics.json").write_text(json.dumps(history, indent=2))
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with (out / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("device_run", type=Path)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--note", default="")
    p.add_argument("--teacher-run", type=Path, default=None, help="a distilled run's teacher, imported here")
    p.add_argument("--distill", default=None, help="JSON of the distillation settings, if the run lacks them")
    args = p.parse_args()
    print(import_run(args.device_run, args.weights, args.out, args.data, args.split, args.note, args.teacher_run,
                     json.loads(args.distill) if args.distill else None))


if __name__ == "__main__":
    main()
