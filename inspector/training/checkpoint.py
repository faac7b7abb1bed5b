"""Checkpoints: a directory holding the weights plus everything needed to rebuild and use the model.

    runs/NAME/best/  model.pdparams (EMA weights)  checkpoint.json (model config, class names, metrics)
    runs/NAME/last/  the same, plus state.pdparams (raw weights, optimizer, LR schedule, EMA, epoch)

A pruned model (``inspector prune``) has fewer channels in some layers than ``build_model`` gives; its
checkpoint.json lists those parameters' shapes under ``pruned_shapes``, and ``Checkpoint.build`` resizes
them before loading the weights.

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
from paddle.vision.ops import DeformConv2D

from inspector.models import ModelConfig, YOLODetector, build_model

MODEL_FILE = "model.pdparams"
STATE_FILE = "state.pdparams"
INFO_FILE = "checkpoint.json"
PRUNED_SHAPES = "pruned_shapes"  # checkpoint.json key: {structured parameter name: shape} where pruning changed it


@dataclass
class Checkpoint:
    path: Path
    model_config: ModelConfig
    class_names: list[str]
    info: dict[str, Any]  # epoch, metrics, train config

    def build(self) -> paddle.nn.Layer:
        """The model with this checkpoint's (EMA) weights, in eval mode."""
        model = build_model(self.model_config)
        apply_pruned_shapes(model, self.info.get(PRUNED_SHAPES, {}), source=f"{self.path / INFO_FILE}")
        weights = paddle.load(str(self.path / MODEL_FILE))
        expected = {name: list(value.shape) for name, value in model.state_dict().items()}
        for name, value in weights.items():
            # set_state_dict only warns about a shape mismatch and keeps the random weights.
            if name in expected and list(value.shape) != expected[name]:
                raise ValueError(f"{self.path / MODEL_FILE}: {name} has shape {list(value.shape)}, the model "
                                 f"described by {self.path / INFO_FILE} expects {expected[name]}")
        model.set_state_dict(weights)
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
        model_config = ModelConfig.from_dict(info.pop("model_config"), source=str(directory / INFO_FILE))
        class_names = list(info.pop("class_names"))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{directory / INFO_FILE}: not a valid checkpoint description ({error})") from error
    if not (directory / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{directory / MODEL_FILE}: weights missing")
    return Checkpoint(directory, model_config, class_names, info)


def apply_pruned_shapes(model: YOLODetector, shapes: dict[str, list[int]], source: str = PRUNED_SHAPES) -> None:
    """Resize the parameters named in ``shapes`` (``resize_parameters``) and recompute
    ``model.neck.out_channels``, because feature distillation sizes its adapters from it."""
    if shapes:
        resize_parameters(model, shapes, source)
        model.neck.out_channels = _feature_channels(model)


def resize_parameters(model: paddle.nn.Layer, shapes: dict[str, list[int]], source: str = PRUNED_SHAPES) -> None:
    """Give the parameters named in ``shapes`` (structured names, as in ``state_dict``) those shapes,
    zero-filled: the weights are loaded afterwards. Convolutions take their channel counts and groups
    from the new weight shape (a depthwise convolution stays depthwise)."""
    remaining = dict(shapes)
    for prefix, layer in model.named_sublayers(include_self=True):
        resized = False
        for attr, old in list(layer.named_parameters(include_sublayers=False)):
            shape = remaining.pop(f"{prefix}.{attr}" if prefix else attr, None)
            if shape is None or list(shape) == list(old.shape):
                continue
            new = layer.create_parameter(shape=list(shape), dtype=old.dtype,
                                         default_initializer=paddle.nn.initializer.Constant(0.0))
            new.stop_gradient, new.trainable = old.stop_gradient, old.trainable
            setattr(layer, attr, new)
            resized = True
        if resized and isinstance(layer, (paddle.nn.Conv2D, DeformConv2D)):
            _match_channels_to_weight(layer, prefix)
    if remaining:
        raise ValueError(f"{source}: the model has no parameter(s) {sorted(remaining)[:5]}")


def _match_channels_to_weight(conv: paddle.nn.Layer, name: str) -> None:
    """Channel counts and groups of a resized convolution, from its weight (out, in / groups, k, k)."""
    out_channels, in_per_group = conv.weight.shape[:2]
    if conv._groups == 1:
        conv._in_channels, conv._out_channels = in_per_group, out_channels
    elif in_per_group == 1 and conv._groups == conv._in_channels == conv._out_channels:  # depthwise
        conv._in_channels = conv._out_channels = conv._groups = out_channels
    else:
        raise ValueError(f"{name}: resizing a grouped (not depthwise) convolution is not supported")


@paddle.no_grad()
def _feature_channels(model: YOLODetector) -> list[int]:
    """Channels of each neck output, from one tiny eval-mode forward (no state changes)."""
    was_training = model.training
    model.eval()
    size = max(model.cfg.strides)
    features = model.features(paddle.zeros([1, model.cfg.in_channels, size, size]))
    if was_training:
        model.train()
    return [int(f.shape[1]) for f in features]


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / paddle scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
