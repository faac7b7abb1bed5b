"""``export_package``: a training checkpoint or a saved inference model -> a model package directory.

Two kinds of source (``--model`` of ``inspector export``):

- a training run or checkpoint directory (``checkpoint.json`` + ``model.pdparams``, see
  ``inspector.training.checkpoint``): its FP32 weights are traced into an inference model here;
- an inference model directory holding one ``NAME.pdmodel`` + ``NAME.pdiparams`` (for instance the
  INT8 output of ``inspector quantize``). Its class names and model config come from a checkpoint
  found in the same directory or its parent (``checkpoint.json``, or a run's ``best/`` / ``last/``).

Steps: inference model -> its input/outputs checked against the model config -> Paddle Lite ``.nb``
per target (converter log checked) -> ``manifest.json`` with a sha256 per file. The package is
assembled in ``OUT.partial`` and renamed into place at the end, so a failed export leaves no
half-package where the runtime could find it.

INT8 sources (an ``inspector quantize`` run) get their ``x86`` ``.nb`` from the run's FP32 twin
(``fp32/model.pdmodel``: the model the INT8 one was quantized from), because Paddle
Lite's x86 INT8 kernels cost accuracy the INT8 graph itself does not lose: on the DeepPCB student's
validation split (24 epochs), mAP@0.5 0.794 on x86 Lite INT8 vs 0.815 for the same graph on oneDNN and 0.817 in FP32
(the 16-epoch student: 0.760 vs 0.786 vs 0.785).
They were faster than the twin as it was then saved, BatchNorms folded (2-core AVX2, quiet: p50 19-24 vs
24-28 ms per frame at 2 threads); the twin now keeps its BatchNorms and ran 15.5-21 ms. Still,
``--x86-int8`` converts the INT8 graph for x86 instead, for who prefers that trade.
``manifest.target_precision`` records the choice (``lite-x86: fp32``).

Metrics are added afterwards by whoever can run the package (``record_metrics``): the runtime sits
below this layer, and numbers in a manifest must be measured through the package itself.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from inspector.export.legacy_program import (
    ExportError,
    ProgramInfo,
    describe_inference_model,
    save_fp32_inference_model,
)
from inspector.export.lite import LITE_TARGETS, convert_to_lite
from inspector.export.manifest import (
    LITE_MODEL_FILES,
    PADDLE_MODEL_FILE,
    PADDLE_PARAMS_FILE,
    SPLIT_FILE,
    InputSpec,
    Manifest,
    PostprocessDefaults,
    file_entry,
    read_manifest,
    write_manifest,
)
from inspector.models.config import ModelConfig
from inspector.models.nms import DEFAULT_NMS, DEFAULT_NMS_THRESHOLD, NMS_METHODS

DEFAULT_SCORE_THRESHOLD = 0.5  # used only when the source has no validated threshold
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ExportSource:
    """What ``--model`` pointed at, resolved to the files and description an export needs."""

    kind: str  # "checkpoint" | "inference-model"
    path: Path
    checkpoint_dir: Path  # where the model config and class names come from
    model_config: ModelConfig
    class_names: list[str]
    checkpoint_info: dict[str, Any] = field(default_factory=dict)  # epoch, metrics, train_config
    inference_prefix: Path | None = None  # inference-model only: DIR/NAME of NAME.pdmodel
    split_file: Path | None = None  # the run's split.json, when there is one


def resolve_source(path: Path | str) -> ExportSource:
    """Classify ``path`` as an inference model directory or a training run/checkpoint and describe it."""
    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"{path}: not a directory (expected a training run, a checkpoint, or an "
                          "inference model directory with NAME.pdmodel + NAME.pdiparams)")
    programs = sorted(path.glob("*.pdmodel"))
    if len(programs) > 1:
        raise ExportError(f"{path}: {len(programs)} .pdmodel files ({[p.name for p in programs]}); expected one")
    prefix = None
    if programs:
        prefix = programs[0].with_suffix("")
        if not prefix.with_suffix(".pdiparams").is_file():
            raise ExportError(f"{prefix}.pdiparams: missing (the weights of {programs[0].name})")
    checkpoint_dir = _find_checkpoint(path, also_parent=prefix is not None)
    info = _read_checkpoint_info(checkpoint_dir)
    model_config = ModelConfig.from_dict(info.pop("model_config"), source=str(checkpoint_dir / "checkpoint.json"))
    class_names = list(info.pop("class_names"))
    # A run keeps split.json beside best/ and last/; a quantization run beside its model.
    places = [path, checkpoint_dir, checkpoint_dir.parent, path.parent]
    split_file = next((place / SPLIT_FILE for place in places if (place / SPLIT_FILE).is_file()), None)
    return ExportSource(kind="checkpoint" if prefix is None else "inference-model", path=path,
                        checkpoint_dir=checkpoint_dir, model_config=model_config, class_names=class_names,
                        checkpoint_info=info, inference_prefix=prefix, split_file=split_file)


def checked_nms(nms, nms_threshold, origins: tuple[str, str]) -> tuple[str, float]:
    """``nms`` and ``nms_threshold`` if they are an NMS method and an IoU, else ExportError naming where each came
    from (``origins``: e.g. ``("--nms:", "--nms-threshold:")``) and what was expected."""
    if nms not in NMS_METHODS:
        raise ExportError(f"{origins[0]} {nms!r} is not an NMS method; expected one of {', '.join(NMS_METHODS)}")
    if isinstance(nms_threshold, bool) or not isinstance(nms_threshold, (int, float)) \
            or not 0.0 < float(nms_threshold) <= 1.0:
        raise ExportError(f"{origins[1]} {nms_threshold!r} is not an IoU; expected a number in (0, 1]")
    return nms, float(nms_threshold)


def recipe_nms(source: ExportSource) -> tuple[str, float]:
    """The NMS ``source`` was trained to be judged by (its ``train_config``), checked like ``--nms``: a recipe
    file edited by hand gets the same clear refusal, naming its file."""
    train_config = source.checkpoint_info.get("train_config") or {}
    where = source.checkpoint_dir / "checkpoint.json"
    return checked_nms(train_config.get("nms", DEFAULT_NMS), train_config.get("nms_threshold", DEFAULT_NMS_THRESHOLD),
                       (f"{where}: train_config.nms", f"{where}: train_config.nms_threshold"))


FP32_TWIN = Path("fp32") / PADDLE_MODEL_FILE  # beside an INT8 model.pdmodel in a quantize run


def _check_x86_int8_safe(source: ExportSource) -> None:
    """Refuse ``--x86-int8`` for an INT8 graph that quantizes what Lite 2.13's x86 INT8 kernels cannot run.

    Those are depthwise convolutions (the x86 predictor segfaults) and the stem (wrong results);
    ``inspector quantize --lite-x86-safe`` keeps them in FP32 (``quantize.lite_x86_fp32_layers``).
    """
    settings_file = source.path / "quant_config.json"
    if not settings_file.is_file():
        return  # not made by ``inspector quantize``: nothing says which layers are INT8
    settings = json.loads(settings_file.read_text())
    if not settings.get("config", {}).get("lite_x86_safe", False):
        raise ExportError(f"--x86-int8: {source.path} was quantized without --lite-x86-safe ({settings_file}: "
                          "config.lite_x86_safe is false), so its depthwise convolutions and stem are INT8, which "
                          "Paddle Lite 2.13's x86 INT8 kernels crash on or miscompute. Export without --x86-int8 "
                          "(x86 gets the FP32 twin), or re-quantize with --lite-x86-safe.")


def export_package(model: Path | str, out: Path | str, targets: tuple[str, ...] = LITE_TARGETS,
                   name: str | None = None, progress=print, x86_int8: bool = False, nms: str | None = None,
                   nms_threshold: float | None = None) -> Path:
    """Write the package for ``model`` (see the module docstring) to ``out``; returns ``out``.

    ``out`` must not exist or be empty. ``progress`` receives one line per step. ``nms`` and
    ``nms_threshold`` go into the manifest's post-processing, which every runtime and evaluation obeys; each
    left None is the model's recipe's (the NMS its training validated with, so its best checkpoint was chosen
    by what the package will run), and the product's default for a model without a recipe.
    """
    out = Path(out)
    unknown = [t for t in targets if t not in LITE_TARGETS]
    if unknown:
        raise ExportError(f"--targets: unknown Paddle Lite target(s) {unknown}; expected some of {LITE_TARGETS}")
    # What was given is checked before anything else (one left None is the recipe's, checked when read).
    checked_nms(DEFAULT_NMS if nms is None else nms,
                DEFAULT_NMS_THRESHOLD if nms_threshold is None else nms_threshold, ("--nms:", "--nms-threshold:"))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not empty; choose a new directory (nothing was overwritten)")
    source = resolve_source(model)
    recipe_method, recipe_threshold = recipe_nms(source)
    nms = recipe_method if nms is None else nms
    nms_threshold = recipe_threshold if nms_threshold is None else float(nms_threshold)
    if x86_int8 and "x86" in targets:
        _check_x86_int8_safe(source)
    cfg = source.model_config
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    prefix = staging / Path(PADDLE_MODEL_FILE).stem

    if source.kind == "checkpoint":
        progress(f"tracing {source.checkpoint_dir} ({cfg.arch}, input {cfg.input_size}, {cfg.input_mode}) "
                 "into a Paddle inference model")
        program = save_fp32_inference_model(source.checkpoint_dir, prefix)
    else:
        progress(f"copying the inference model {source.inference_prefix}.pdmodel")
        shutil.copyfile(source.inference_prefix.with_suffix(".pdmodel"), staging / PADDLE_MODEL_FILE)
        shutil.copyfile(source.inference_prefix.with_suffix(".pdiparams"), staging / PADDLE_PARAMS_FILE)
        program = describe_inference_model(prefix)
    _check_program(program, cfg, len(source.class_names), source)
    progress(f"inference model: input {program.input_shape}, outputs {program.output_shapes}, "
             f"precision {program.precision}")

    lite_files, target_precision = {}, {}
    twin = source.path / FP32_TWIN
    for target in targets:
        nb_file = staging / LITE_MODEL_FILES[target]
        if target == "x86" and program.precision == "int8" and not x86_int8 and twin.is_file():
            progress(f"converting to Paddle Lite for x86 from the FP32 twin {twin} (Lite's x86 INT8 kernels lose "
                     "accuracy; --x86-int8 converts the INT8 graph instead)")
            twin_program = describe_inference_model(twin.with_suffix(""))
            _check_program(twin_program, cfg, len(source.class_names), source)
            convert_to_lite(twin, twin.with_suffix(".pdiparams"), target, nb_file)
            target_precision["lite-x86"] = "fp32"
        else:
            progress(f"converting to Paddle Lite for {target}")
            convert_to_lite(staging / PADDLE_MODEL_FILE, staging / PADDLE_PARAMS_FILE, target, nb_file)
        lite_files[f"lite-{target}"] = [nb_file.name]
    if source.split_file is not None:
        shutil.copyfile(source.split_file, staging / SPLIT_FILE)

    manifest = _make_manifest(source, program, name or out.name, lite_files, staging, nms, nms_threshold)
    manifest.target_precision = target_precision
    if target_precision:
        manifest.provenance["lite_x86_source"] = ("the FP32 model the INT8 one was quantized from "
                                                  f"({twin.resolve()})")
    write_manifest(staging, manifest)
    if out.exists():
        out.rmdir()  # empty, checked above
    staging.rename(out)
    progress(f"package {out}: {', '.join(manifest.targets)}; precision {manifest.precision}; id {manifest.package_id}")
    return out


def record_metrics(package_dir: Path | str, metrics: dict[str, Any], score_threshold: float | None = None) -> None:
    """Store metrics measured through the package in its manifest, and optionally the default score
    threshold they were measured to be best at. The listed files, and so the sha256s, do not change."""
    manifest = read_manifest(package_dir)
    manifest.metrics = metrics
    if score_threshold is not None:
        post = manifest.postprocess
        manifest.postprocess = PostprocessDefaults(float(score_threshold), post.nms_threshold, post.max_detections,
                                                   post.nms)
        manifest.provenance["score_threshold_from"] = "the export evaluation (F-score-maximising threshold)"
    write_manifest(package_dir, manifest)


# --------------------------------------------------------------------------- helpers


def _find_checkpoint(path: Path, also_parent: bool) -> Path:
    from inspector.training.checkpoint import resolve_checkpoint_dir

    places = [path, path.parent] if also_parent else [path]
    for place in places:
        try:
            return resolve_checkpoint_dir(place)
        except FileNotFoundError:
            continue
    if also_parent:
        raise ExportError(f"{path}: an inference model, but no checkpoint describing it (class names, model config) "
                          f"was found in {path} or {path.parent} (expected checkpoint.json, or a run's best/ or last/)")
    raise ExportError(f"{path}: not a training run or checkpoint (no checkpoint.json in it or in its best/ or last/) "
                      "and no NAME.pdmodel inference model either")


def _read_checkpoint_info(checkpoint_dir: Path) -> dict[str, Any]:
    info_file = checkpoint_dir / "checkpoint.json"
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ExportError(f"{info_file}: not a readable checkpoint description ({error})") from error
    for key in ("model_config", "class_names"):
        if key not in info:
            raise ExportError(f"{info_file}: field '{key}' missing")
    return info


def _check_program(program: ProgramInfo, cfg: ModelConfig, num_classes: int, source: ExportSource) -> None:
    """The saved graph must take the input the config describes and return (boxes, scores)."""
    where = f"{source.path} (checked against {source.checkpoint_dir})"
    expected_input = [1, cfg.in_channels, cfg.input_size, cfg.input_size]
    if program.input_shape != expected_input:
        raise ExportError(f"{where}: the inference model takes input {program.input_shape}, the model config "
                          f"says {expected_input} (batch 1, {cfg.input_mode})")
    shapes = program.output_shapes
    if len(shapes) != 2 or len(shapes[0]) != 3 or shapes[0][2] != 4 or shapes[1][2:] != [num_classes] \
            or shapes[0][1] != shapes[1][1]:
        raise ExportError(f"{where}: the inference model returns {shapes}; expected decoded boxes [1, K, 4] and "
                          f"scores [1, K, {num_classes}] (the DecodedDetector graph, NMS outside)")


def _make_manifest(source: ExportSource, program: ProgramInfo, name: str, lite_targets: dict[str, list[str]],
                   staging: Path, nms: str, nms_threshold: float) -> Manifest:
    cfg = source.model_config
    validated = (source.checkpoint_info.get("metrics") or {}).get("score_threshold")
    files = [PADDLE_MODEL_FILE, PADDLE_PARAMS_FILE, *(f for names in lite_targets.values() for f in names)]
    if (staging / SPLIT_FILE).is_file():
        files.append(SPLIT_FILE)
    train_config = source.checkpoint_info.get("train_config")
    provenance = {
        "source": str(source.path.resolve()),
        "source_kind": source.kind,
        "checkpoint": str(source.checkpoint_dir.resolve()),
        "checkpoint_epoch": source.checkpoint_info.get("epoch"),
        "checkpoint_metrics": _summary(source.checkpoint_info.get("metrics")),
        "data": (train_config or {}).get("data"),
        "split": SPLIT_FILE if SPLIT_FILE in files else None,
        "train_config": train_config,
        "quantization": source.checkpoint_info.get("quantization"),  # written by `inspector quantize`
        "score_threshold_from": "the checkpoint's validation (F-score-maximising threshold)" if validated is not None
        else f"no validated threshold in the source; default {DEFAULT_SCORE_THRESHOLD}",
        **_git_state(),
        "versions": {package: _version(package) for package in ("pcb-inspector", "paddlepaddle", "paddlelite")},
        # Which Paddle Lite build runs it (the basic one lacks some; the ARM pow kernel races on 2+ threads).
        "operators": [op for op in program.op_types if op not in ("feed", "fetch")],
    }
    boxes_shape, scores_shape = program.output_shapes
    return Manifest(
        name=name,
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        class_names=list(source.class_names),
        input=InputSpec(size=cfg.input_size, mode=cfg.input_mode, channels=cfg.in_channels, name=program.input_name,
                        color=cfg.layout.color, space_to_depth=cfg.layout.block),
        outputs={
            "boxes": {"shape": boxes_shape, "dtype": "float32", "meaning": "x1, y1, x2, y2 in input (letterboxed) pixels"},
            "scores": {"shape": scores_shape, "dtype": "float32", "meaning": "per-class confidence in [0, 1]"},
            "nms_in_graph": False,
        },
        postprocess=PostprocessDefaults(
            score_threshold=float(validated if validated is not None else DEFAULT_SCORE_THRESHOLD),
            nms_threshold=nms_threshold, nms=nms),
        precision=program.precision,
        files={file_name: file_entry(staging / file_name) for file_name in files},
        targets={"paddle": [PADDLE_MODEL_FILE, PADDLE_PARAMS_FILE], **lite_targets},
        model=cfg.to_dict(),
        provenance=provenance,
    )


def _summary(metrics: dict | None) -> dict | None:
    if not metrics:
        return None
    keys = ("official_ap", "official_f", "official_threshold", "map50", "map50_95", "f1_iou033", "score_threshold",
            "n_images")
    # Checkpoints validated before the official metric existed have no official_* keys: left out, not null.
    return {k: metrics.get(k) for k in keys if k in metrics or not k.startswith("official_")}


def _git_state() -> dict[str, Any]:
    """The commit of this repository, and whether the working tree differed from it."""
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
