"""``PipelineConfig``: every setting of ``inspector pipeline`` in one plain dataclass.

Presets live in ``configs/`` as YAML (``pipeline-cpu.yaml``: the reduced configuration a 2-core CPU
finishes in a working session; ``pipeline-gpu.yaml``: the full one). Command-line options override a
preset's values. The resolved configuration is saved in the pipeline directory (``pipeline.json``); a
later run of the same directory must ask for the same results (``RESULT_FIELDS``), or it is refused.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from inspector.models.config import HEADS

from inspector.data.layouts import INPUT_MODES

LITE_TARGETS = ("x86", "arm")
PRUNE_CRITERIA = ("l1", "fpgm")


class PipelineError(Exception):
    """A configuration or pipeline directory that cannot be used, with the field or file named."""


@dataclass
class PipelineConfig:
    data: str  # labeled data: DeepPCB / VOC directory or COCO JSON
    out: str  # pipeline directory: one sub-directory per stage, report.md/json/png
    format: str | None = None  # deeppcb | voc | coco; auto-detected when None
    input_size: int = 320  # DeepPCB's 640 px boards at 320: defects of 12-23 px, enough for stride 8
    input_mode: str = "image+template"
    val_fraction: float = 0.2  # the fixed validation split every stage is measured on
    split_seed: int = 0
    seed: int = 0
    batch_size: int = 8

    # Teacher: trained here, or an existing run reused (e.g. trained once on a GPU).
    teacher_arch: str = "ppyolo-r18"
    teacher_run: str | None = None
    teacher_epochs: int = 8
    teacher_crop_size: int | None = 160
    teacher_lr: float = 2e-3

    # Students: the baseline (alone) and the distilled one train with exactly this schedule.
    student_arch: str = "mbv3-small"
    head: str = "yolo"  # teacher's and students' head: "yolo" (anchor-based) | "gfl" (anchor-free; both distill)
    student_run: str | None = None  # an existing student-alone run with this schedule, reused as the baseline
    # An existing distilled run (e.g. trained on a GPU by tools/torch_twin) reused as the distilled stage: the
    # students' schedule, teacher_run's teacher and these distillation settings, or it is refused.
    distilled_run: str | None = None
    epochs: int = 16
    crop_size: int | None = 256
    lr: float = 2e-3
    eval_every: int = 2

    # Pair augmentation of every training stage (teacher and students; inspector.data.augment): off by default.
    dihedral: bool = False  # the 8 exact dihedral orientations, uniformly
    copy_paste: float = 0.0  # probability that a training image gets defects pasted from other boards
    copy_paste_count: int = 2  # pastes tried on such an image
    copy_paste_balance: bool = False  # paste classes uniformly instead of by frequency
    aug_off_epochs: int = 0  # each stage's last N epochs: whole letterboxed images, no crop, no augmentation

    # Distillation (see inspector.compression.distill). false: no distilled stage, for when the teacher cannot
    # beat the student in the time there is (a CPU-only session); the report then says so.
    distill: bool = True
    temperature: float = 2.0
    alpha_start: float = 0.7
    alpha_end: float = 0.3
    feature_weight: float = 1.0
    # The teacher's outputs computed once per board and orientation and cropped (inspector.compression.
    # teacher_cache): for a CPU, where the teacher's pass costs more than the student's step. Needs dihedral: true.
    teacher_cache: bool = False

    # Pruning: a stage only when prune_ratio is set
    prune_ratio: float | None = None
    prune_criterion: str = "l1"
    prune_epochs: int = 4

    # Quantization: QAT ships; PTQ is the baseline it is compared with
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    calibration_images: int = 64
    # Kept in FP32 (--skip-layers of `inspector quantize`). The 1x1 prediction convolutions write the box
    # offsets and scores themselves: 3 small layers whose INT8 cost the DeepPCB student 1.8 pt mAP@0.5:0.95
    # (QAT, oneDNN: 0.509 all-INT8 vs 0.527 with them FP32; FP32 model 0.535) for ~27 KB of ARM .nb.
    qat_skip_layers: list[str] = field(default_factory=lambda: ["head.predictions"])

    # Export and measurement
    package_name: str | None = None  # default: "<out name>-int8"
    targets: list[str] = field(default_factory=lambda: list(LITE_TARGETS))
    bench_threads: list[int] = field(default_factory=lambda: [1, 2])
    bench_runs: int = 50

    max_steps_per_epoch: int | None = None  # smoke tests only

    def __post_init__(self) -> None:
        for name in ("crop_size", "teacher_crop_size"):
            if getattr(self, name) == 0:  # 0 on the command line: whole images
                setattr(self, name, None)
        if self.input_mode not in INPUT_MODES:
            raise PipelineError(f"input_mode: expected one of {INPUT_MODES}, got {self.input_mode!r}")
        for name in ("input_size", "crop_size", "teacher_crop_size"):
            value = getattr(self, name)
            if value is not None and value % 32:
                raise PipelineError(f"{name}: {value} is not a multiple of 32 (the detector's largest stride)")
        for name in ("teacher_epochs", "epochs", "prune_epochs", "batch_size", "eval_every", "calibration_images",
                     "bench_runs"):
            if getattr(self, name) < 1:
                raise PipelineError(f"{name}: expected at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.copy_paste <= 1.0:
            raise PipelineError(f"copy_paste: expected a probability in [0, 1], got {self.copy_paste}")
        if self.copy_paste_count < 1:
            raise PipelineError(f"copy_paste_count: expected at least 1, got {self.copy_paste_count}")
        if self.aug_off_epochs < 0:
            raise PipelineError(f"aug_off_epochs: expected >= 0, got {self.aug_off_epochs}")
        if self.qat_epochs < 0:
            raise PipelineError(f"qat_epochs: expected >= 0, got {self.qat_epochs}")
        if self.prune_ratio is not None and not 0.0 < self.prune_ratio < 0.95:
            raise PipelineError(f"prune_ratio: expected a value in (0, 0.95), got {self.prune_ratio}")
        if self.head not in HEADS:
            raise PipelineError(f"head: expected one of {HEADS}, got {self.head!r}")
        if self.teacher_cache and self.distill and not self.dihedral:
            raise PipelineError("teacher_cache: true needs dihedral: true (the augmentation's own flips and turns are "
                                "not recorded per crop, so the cache could serve none)")
        if self.prune_criterion not in PRUNE_CRITERIA:
            raise PipelineError(f"prune_criterion: expected one of {PRUNE_CRITERIA}, got {self.prune_criterion!r}")
        self.qat_skip_layers = [str(name) for name in self.qat_skip_layers]
        self.targets = list(self.targets)
        unknown = [t for t in self.targets if t not in LITE_TARGETS]
        if unknown or not self.targets:
            raise PipelineError(f"targets: expected some of {list(LITE_TARGETS)}, got {self.targets}")
        self.bench_threads = [int(t) for t in self.bench_threads]
        if not self.bench_threads or min(self.bench_threads) < 1:
            raise PipelineError(f"bench_threads: expected thread counts >= 1, got {self.bench_threads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "pipeline config") -> "PipelineConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PipelineError(f"{source}: unknown option(s) {unknown}; expected some of {sorted(known)}")
        missing = [name for name in ("data", "out") if values.get(name) is None]
        if missing:
            raise PipelineError(f"{source}: {', '.join(missing)} missing")
        try:
            return cls(**values)
        except TypeError as error:
            raise PipelineError(f"{source}: {error}") from error

    @property
    def name(self) -> str:
        return self.package_name or f"{Path(self.out).name}-int8"


# What decides the pipeline's results: a pipeline directory continues only with the same values.
# (Measurement settings may change between runs; they only redo nothing.)
RESULT_FIELDS = tuple(f.name for f in fields(PipelineConfig)
                      if f.name not in ("out", "bench_threads", "bench_runs", "package_name"))


def read_preset(path: Path | str) -> dict[str, Any]:
    """The options in a YAML preset (a mapping of PipelineConfig fields)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PipelineError(f"{path}: cannot read the pipeline config ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise PipelineError(f"{path}: not valid YAML ({error})") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PipelineError(f"{path}: expected a mapping of options (key: value), got {type(values).__name__}")
    known = {f.name for f in fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PipelineError(f"{path}: unknown option(s) {unknown}; expected some of {sorted(known)}")
    return values


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The result-deciding fields whose values differ, as 'field: saved -> wanted'. A field the saved
    configuration predates counts as its default (a pipeline started before ``head`` existed used "yolo")."""
    defaults = {f.name: f.default for f in fields(PipelineConfig) if f.default is not MISSING}
    saved = {**{name: value for name, value in defaults.items() if name not in saved}, **saved}
    return [f"{name}: {saved.get(name)!r} -> {wanted.get(name)!r}" for name in RESULT_FIELDS
            if saved.get(name) != wanted.get(name)]
