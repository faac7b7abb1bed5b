"""Regenerate tests/tools/fixtures/twin_run/: a tiny run as tools.torch_twin.train writes it on the GPU machine.

Run with the torch interpreter (no paddle needed):  PYTHONPATH=. $TORCH_TWIN_PYTHON tests/tools/make_twin_fixture.py
The weights travel as float16 parts, as a teacher's do; probe.npz holds an input and the twin's outputs on it
(with those float16-rounded weights), which the Paddle side must reproduce after the import.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from inspector.data.layouts import input_layout
from inspector.models.config import ModelConfig
from inspector.training.config import TrainConfig
from tools.torch_twin.model import build_torch_model, load_paddle_arrays, to_paddle_arrays

OUT = Path(__file__).parent / "fixtures" / "twin_run"


def main() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="mbv3-small-x0.25", num_classes=6, input_size=64, input_mode="gray-diff-s2d", head="gfl")
    model = build_torch_model(cfg)
    model.train()
    with torch.no_grad():  # a few train-mode passes, so the BatchNorm statistics are not the initial ones
        for _ in range(3):
            model(torch.randn(4, input_layout(cfg.input_mode).channels, 64, 64))
    arrays = {k: v.astype(np.float16) for k, v in to_paddle_arrays(model).items()}
    load_paddle_arrays(model, {k: v.astype(np.float32) for k, v in arrays.items()})
    model.eval()
    probe = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 12, 64, 64)).astype(np.float32))
    with torch.no_grad():
        outputs = [o.numpy() for o in model(probe)]
    OUT.mkdir(parents=True, exist_ok=True)
    keys = sorted(arrays)
    half = len(keys) // 2
    np.savez_compressed(OUT / "best.part0.npz", **{k: arrays[k] for k in keys[:half]})
    np.savez_compressed(OUT / "best.part1.npz", **{k: arrays[k] for k in keys[half:]})
    np.savez_compressed(OUT / "probe.npz", input=probe.numpy(), **{f"output{i}": o for i, o in enumerate(outputs)})
    (OUT / "model_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    TrainConfig(arch=cfg.arch, data="gpu_data/deeppcb", out="/tmp/twin-runs/tiny", epochs=2, batch_size=32,
                input_size=64, crop_size=None, input_mode=cfg.input_mode, head="gfl", dihedral=True,
                aug_off_epochs=1).save(OUT / "train_config.json")
    metrics = {"official_ap": 0.5, "official_f": 0.5, "official_threshold": 0.3, "map50": 0.6, "map50_95": 0.3,
               "precision": 0.5, "recall": 0.5, "f1_iou033": 0.5, "score_threshold": 0.3}
    (OUT / "metrics.json").write_text(json.dumps([{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, **metrics}], indent=2))
    (OUT / "best.json").write_text(json.dumps({"epoch": 2, "metrics": metrics}, indent=2))
    (OUT / "done").write_text("{}")


if __name__ == "__main__":
    main()
