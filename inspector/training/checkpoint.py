"""Checkpoints: a directory holding the weights plus everything needed to rebuild and use the model.

    runs/NAME/best/  model.pdparams (EMA weights)  checkpoint.json (model config, class names, metrics)
    runs/NAME/last/  the same, plus state.pdparams (raw weights, optimizer, LR schedule, EMA, epoch)

A checkpoint directory is written beside its destination and swapped in with a rename, so a crash or
Ctrl-C during saving never leaves a half-written checkpoint where the previous good one was.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paddle

from inspector.models import ModelConfig, build_model

MODEL_FILE = "model.pdparams"
STATE_FILE = "state.pdparams"
INFO_FILE = "checkpoint.json"


@dataclass
class Checkpoint:
    path: Path
    model_config: ModelConfig
    class_names: list[str]
    info: dict[str, Any]  # epoch, metrics, train config

    def build(self) -> paddle.nn.Layer:
        """The model with this checkpoint's (EMA) weights, in eval mode."""
        model = build_model(self.model_config)
        model.set_state_dict(paddle.load(str(self.path / MODEL_FILE)))
        model.eval()
        return model


def save_checkpoint(directory: Path, model_weights: dict, model_config: ModelConfig, class_names: list[str],
                    info: dict[str, Any], train_state: dict | None = None) -> None:
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    paddle.save(model_weights, str(staging / MODEL_FILE))
    if train_state is not None:
        paddle.save(train_state, str(staging / STATE_FILE))
    payload = {"model_config": model_config.to_dict(), "class_names": list(class_names), **info}
    (staging / INFO_FILE).write_text(json.dumps(payload, indent=2, default=_json_default))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint_dir(path: Path) -> Path:
    """A checkpoint directory, or a run directory (its best/, else last/)."""
    path = Path(path)
    if (path / INFO_FILE).is_file():
        return path
    for name in ("best", "last"):
        if (path / name / INFO_FILE).is_file():
            return path / name
    # A crash between the two renames of save_checkpoint leaves only the ".old" copy.
    for name in ("best.old", "last.old"):
        if (path / name / INFO_FILE).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: no checkpoint found (expected {INFO_FILE} in it, or in its best/ or last/)")


def load_checkpoint(path: Path) -> Checkpoint:
    directory = resolve_checkpoint_dir(path)
    try:
        info = json.loads((directory / INFO_FILE).read_text())
        model_config = ModelConfig.from_dict(info.pop("model_config"))
        class_names = list(info.pop("class_names"))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{directory / INFO_FILE}: not a valid checkpoint description ({error})") from error
    if not (directory / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{directory / MODEL_FILE}: weights missing")
    return Checkpoint(directory, model_config, class_names, info)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / paddle scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
