"""The choices and the options several commands share, declared once.

An option that means the same on every command (``--format``, ``--weight``, ``--nproc`` ...) is an ``Annotated``
alias here; a command writes ``format: Format = None`` and its default stays visible in its signature. Options that
share a spelling but not a meaning (``--out`` is a run directory for ``train`` and a package directory for
``export``) are declared beside their command, with their own help. A required option that --help lists after
optional ones is written ``out: Annotated[Path, typer.Option("--out", ...)] = ...`` (typer's "required").

An option that sets a field of a config (``PruneConfig.epochs`` ...) does not repeat the field's default: it is
declared with ``config_option(PruneConfig, "epochs", "--epochs", ...)`` (or a shared alias through
``for_config(Seed, PruneConfig, "seed")``), left unset (None) unless given, and the command passes only the
options given (``common.given``); so the config class holds the one default and ``--help`` shows it from there.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from inspector.compression.pruning.config import CRITERIA
from inspector.compression.quantization.config import KEEP_EPOCH, METHODS
from inspector.models.nms import NMS_METHODS


class DataFormat(str, Enum):
    deeppcb = "deeppcb"
    voc = "voc"
    coco = "coco"


class Arch(str, Enum):
    ppyolo_r18 = "ppyolo-r18"
    ppyolo_r34 = "ppyolo-r34"
    ppyolo_r50 = "ppyolo-r50"
    ppyolo_r50_dcn = "ppyolo-r50-dcn"
    mbv3_small = "mbv3-small"
    mbv3_large = "mbv3-large"


class InputMode(str, Enum):
    image = "image"
    image_template = "image+template"
    gray_diff_s2d = "gray-diff-s2d"
    gray_frame_diff_s2d = "gray-frame-diff-s2d"
    gray_frame_template_s2d = "gray-frame-template-s2d"


class Head(str, Enum):
    yolo = "yolo"
    gfl = "gfl"


class Backend(str, Enum):
    lite = "lite"
    paddle = "paddle"


class Split(str, Enum):
    all = "all"
    train = "train"
    val = "val"


# Choices a config lists (its field's ``setting(choices=...)``): built from that list, not copied.
Criterion = Enum("Criterion", {name: name for name in CRITERIA}, type=str)
QuantMethod = Enum("QuantMethod", {name: name for name in METHODS}, type=str)
KeepEpoch = Enum("KeepEpoch", {name: name for name in KEEP_EPOCH}, type=str)
NmsChoice = Enum("NmsChoice", {name: name for name in NMS_METHODS}, type=str)


def value_of(choice: Optional[Enum]) -> Optional[str]:
    """An optional choice as the plain string the configs take (None stays None: "not given")."""
    return choice.value if choice is not None else None


def config_default(config_class: type, field: str) -> Any:
    """The default of CONFIG_CLASS.FIELD: a dataclass field (``ConfigBase``) or a pydantic model's
    (``ServiceConfig``); a default factory is called."""
    model_fields = getattr(config_class, "model_fields", None)  # pydantic, read without importing it here
    if model_fields is not None:
        if field not in model_fields:
            raise ValueError(f"{config_class.__name__} has no field {field!r}")
        if model_fields[field].is_required():
            raise ValueError(f"{config_class.__name__}.{field} has no default (a required field)")
        return model_fields[field].get_default(call_default_factory=True)
    for f in dataclasses.fields(config_class):
        if f.name == field:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ValueError(f"{config_class.__name__}.{field} has no default (a required field)")
    raise ValueError(f"{config_class.__name__} has no field {field!r}")


def shown_default(config_class: type, field: str, param_decls: tuple[str, ...] = ()) -> str | bool:
    """CONFIG_CLASS.FIELD's default as ``--help`` shows it (typer's ``show_default``), spelled as the option takes
    it (a tuple as ``0.25,0.5``; a switch ``--on/--off`` in PARAM_DECLS by the name of its side, ``augment`` or
    ``no-dihedral``); otherwise False, showing nothing, for a default of None, off or empty, as an unset option
    with no default shows nothing either (its help says what happens then)."""
    value = config_default(config_class, field)
    switch = next((decl for decl in param_decls if "/" in decl), None)
    if isinstance(value, bool) and switch is not None:
        on, off = switch.split("/", 1)
        return (on if value else off).lstrip("-")
    if value is None or value is False or value == [] or value == ():
        return False
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def config_option(config_class: type, field: str, *param_decls: str, **kwargs: Any) -> Any:
    """``typer.Option(*PARAM_DECLS, **KWARGS)`` for an option that sets CONFIG_CLASS.FIELD: declare it with
    the default None (unset: the config's default applies) and --help shows the config's default."""
    return typer.Option(*param_decls, show_default=shown_default(config_class, field, param_decls), **kwargs)


def for_config(alias: Any, config_class: type, field: str) -> Any:
    """A shared option ALIAS (``Seed``, ``Batch`` ...) on a command where it sets CONFIG_CLASS.FIELD: optional,
    declared with the default None, and --help shows the config's default."""
    value_type, option = typing.get_args(alias)[:2]
    option = copy.copy(option)
    # In Annotated, typer.Option("--flag", ...) keeps the first spelling as its default, not in param_decls.
    spellings = (option.default,) if isinstance(option.default, str) else ()
    option.show_default = shown_default(config_class, field, spellings + tuple(option.param_decls or ()))
    return Annotated[Optional[value_type], option]


# Data
Format = Annotated[Optional[DataFormat], typer.Option("--format", help="Override format auto-detection.")]
Weight = Annotated[Optional[list[float]], typer.Option(
    "--weight", help="Per --data source, in order: each of its training boards is seen this many times per epoch "
    "(default 1).")]

# Training runs (train, distill; some also prune and quantize)
Batch = Annotated[int, typer.Option("--batch", min=1, help="Images per step.")]
PeakLr = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")]
Augment = Annotated[bool, typer.Option("--augment/--no-augment", help="Flips, 90-degree turns, lighting, noise.")]
Seed = Annotated[int, typer.Option("--seed")]
EvalEvery = Annotated[int, typer.Option("--eval-every", min=1, help="Validate every N epochs.")]
MaxSteps = Annotated[Optional[int], typer.Option("--max-steps", help="Cap steps per epoch (smoke tests).")]
Init = Annotated[Optional[Path], typer.Option(
    "--init", help="Start from this trained run's (best/) or checkpoint's weights instead of random ones: "
    "fine-tuning, e.g. on new boards. A model package (e.g. models/default) works too: its network is recovered "
    "into the run's init-from-package/, converted to --input-mode where that differs (image+template -> "
    "gray-diff-s2d -> gray-frame-diff-s2d or gray-frame-template-s2d). One with another --head lends its backbone "
    "and neck; the head starts from random weights.")]
# The NMS a run validates with (so its best checkpoint is chosen by what its package will run)
Nms = Annotated[Optional[NmsChoice], typer.Option(
    "--nms", help="NMS of validation, best-checkpoint choice and, by default, the exported package: 'agnostic' "
    "(greedy across classes: one report per defect), 'hard' (greedy per class: overlapping defects of different "
    "classes both reported) or 'matrix'.")]
NmsThreshold = Annotated[Optional[float], typer.Option(
    "--nms-threshold", help="IoU above which that NMS suppresses.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")]
Nproc = Annotated[int, typer.Option(
    "--nproc", min=1, help="Train data-parallel in N processes on this node under paddle.distributed.launch (GPUs: "
    "one per card; CPU: gloo, the cores split among them). --batch is the global batch, a multiple of N.")]
Ips = Annotated[Optional[str], typer.Option(
    "--ips", help="Several nodes: their IPs, comma-separated, the same command on each (see "
    "docs/distributed-training.md).")]

# Model packages (bench, predict, serve)
Package = Annotated[Optional[Path], typer.Option("--model", help="Model package. Default: the shipped package.")]
EngineBackend = Annotated[Backend, typer.Option("--backend", help="Paddle Lite or Paddle Inference.")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")]

# Recipes (the `recipe` verbs)
RecipesDir = Annotated[Path, typer.Option("--dir", envvar="INSPECTOR_RECIPES", help="Recipes directory.")]

# Model registry (the `models` verbs)
RegistryDir = Annotated[Path, typer.Option("--registry", envvar="INSPECTOR_REGISTRY",
                                           help="Registry directory (created on first use).")]
By = Annotated[Optional[str], typer.Option("--by", help="Who does this (default: the login name); recorded.")]
