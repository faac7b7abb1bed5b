"""``PipelineConfig``: every setting of ``inspector pipeline`` in one plain dataclass.

Presets live in ``configs/`` as YAML (``pipeline-cpu.yaml``: the reduced configuration a 2-core CPU
finishes in a working session; ``pipeline-gpu.yaml``: the full one). Command-line options override a
preset's values. The resolved configuration is saved in the pipeline directory (``pipeline.json``); a
later run of the same directory must ask for the same results (``RESULT_FIELDS``), or it is refused.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from inspector.compression.distill_config import FEATURE_METHODS
from inspector.compression.quantization.config import KEEP_EPOCH
from inspector.config_base import ConfigBase, setting
from inspector.data.layouts import INPUT_MODES
from inspector.models.config import HEADS
from inspector.models.nms import DEFAULT_NMS, DEFAULT_NMS_THRESHOLD, NMS_METHODS

LITE_TARGETS = ("x86", "arm")
PRUNE_CRITERIA = ("l1", "fpgm")
STRIDE_NOTE = "the detector's largest stride"


class PipelineError(Exception):
    """A configuration or pipeline directory that cannot be used, with the field or file named."""


@dataclass
class PipelineConfig(ConfigBase):
    KIND = "option"
    SOURCE = "pipeline config"
    ERROR = PipelineError

    data: str | list[Any]  # labeled data: DeepPCB / VOC directory or COCO JSON (or sources: inspector.data.sources)
    out: str  # pipeline directory: one sub-directory per stage, report.md/json/png
    format: str | None = None  # deeppcb | voc | coco; auto-detected when None
    # DeepPCB's 640 px boards at 320: defects of 12-23 px, enough for stride 8
    input_size: int = setting(320, above=0, multiple_of=32, note=STRIDE_NOTE)
    input_mode: str = setting("image+template", choices=INPUT_MODES)
    # the fixed validation split every stage is measured on
    val_fraction: float = setting(0.2, at_least=0.0, below=1.0)
    split_seed: int = 0
    seed: int = 0
    batch_size: int = setting(8, at_least=1)

    # Teacher: trained here, or an existing run reused (e.g. trained once on a GPU). With distill: false it is only a
    # reference row in the report: teacher_run is measured if given, and no teacher is trained.
    teacher_arch: str = "ppyolo-r18"
    teacher_run: str | None = None
    teacher_epochs: int = setting(8, at_least=1)
    teacher_crop_size: int | None = setting(160, above=0, multiple_of=32, note=STRIDE_NOTE)  # 0 or None: whole images
    teacher_lr: float = setting(2e-3, above=0.0)
    # The teacher trained here starts from this run, checkpoint or model package (`inspector train --init`, same
    # arch), e.g. to continue a teacher with a new schedule or on new data; None: from random weights.
    teacher_init: str | None = None

    # Students: the baseline (alone) and the distilled one train with exactly this schedule.
    student_arch: str = "mbv3-small"
    head: str = setting("yolo", choices=HEADS)  # teacher's and students' head: "yolo" (anchor-based) | "gfl" (anchor-free; both distill)
    student_run: str | None = None  # an existing student-alone run with this schedule, reused as the baseline
    # Both students start from this run, checkpoint or model package (`inspector train --init`), e.g. the shipped
    # models/default converted to the full-resolution gray-diff-s2d input; None: from random weights.
    student_init: str | None = None
    # An existing distilled run (e.g. trained on a GPU by tools/torch_twin) reused as the distilled stage: the
    # students' schedule, teacher_run's teacher and these distillation settings, or it is refused.
    distilled_run: str | None = None
    epochs: int = setting(16, at_least=1)
    crop_size: int | None = setting(256, above=0, multiple_of=32, note=STRIDE_NOTE)  # 0 or None: whole images
    lr: float = setting(2e-3, above=0.0)
    eval_every: int = setting(2, at_least=1)
    # The NMS of the package and of every stage's validation (best checkpoints, the QAT source, the deployment
    # threshold): "agnostic" (one report per place; DeepPCB has one defect per place) or "hard" (per class,
    # for boards whose defects of different classes may overlap), suppressing above nms_threshold IoU.
    nms: str = setting(DEFAULT_NMS, choices=NMS_METHODS)
    nms_threshold: float = setting(DEFAULT_NMS_THRESHOLD, above=0.0, at_most=1.0)

    # Pair augmentation of every training stage (teacher and students; inspector.data.augment): off by default.
    dihedral: bool = False  # the 8 exact dihedral orientations, uniformly
    # probability that a training image gets defects pasted from other boards
    copy_paste: float = setting(0.0, at_least=0.0, at_most=1.0)
    copy_paste_count: int = setting(2, at_least=1)  # pastes tried on such an image
    copy_paste_balance: bool = False  # paste classes uniformly instead of by frequency
    # each stage's last N epochs: whole letterboxed images, no crop, no augmentation
    aug_off_epochs: int = setting(0, at_least=0)

    # Distillation (see inspector.compression.distill). false: no distilled stage, for when the teacher cannot
    # beat the student in the time there is (a CPU-only session); the report then says so.
    distill: bool = True
    temperature: float = setting(2.0, above=0.0)
    alpha_start: float = setting(0.7, at_least=0.0, at_most=1.0)
    alpha_end: float = setting(0.3, at_least=0.0, at_most=1.0)
    feature_weight: float = setting(1.0, at_least=0.0)
    feature_method: str = setting("pkd", choices=FEATURE_METHODS)  # gfl head's neck term: "pkd" | "cwd"
    cls_weight: float = setting(1.0, at_least=0.0)  # the teacher's class scores (gfl: its quality scores)
    box_weight: float = setting(1.0, at_least=0.0)  # the teacher's boxes (gfl: localization distillation)
    # The teacher's outputs computed once per board and orientation and cropped (inspector.compression.
    # teacher_cache): for a CPU, where the teacher's pass costs more than the student's step. Needs dihedral: true.
    teacher_cache: bool = False
    # Keep the teacher cache's disk store in this directory after the distilled stage (DistillConfig's
    # teacher_cache_dir), e.g. runs/teacher-cache: the next pipeline distilling from the same teacher reads the
    # boards' maps instead of computing them. None: in the stage's run directory, removed when it finishes.
    teacher_cache_dir: str | None = None

    # Pruning: a stage only when prune_ratio is set
    prune_ratio: float | None = setting(None, above=0.0, below=0.95)
    prune_criterion: str = setting("l1", choices=PRUNE_CRITERIA)
    prune_epochs: int = setting(4, at_least=1)

    # Quantization: QAT ships; PTQ is the baseline it is compared with
    qat_epochs: int = setting(2, at_least=0)
    qat_lr: float = setting(1e-4, above=0.0)
    # best: the QAT epoch whose INT8 graph scores the highest official AP on validation through oneDNN INT8
    qat_keep_epoch: str = setting("best", choices=KEEP_EPOCH)
    calibration_images: int = setting(64, at_least=1)
    # Kept in FP32 (--skip-layers of `inspector quantize`). The 1x1 prediction convolutions write the box
    # offsets and scores themselves: 3 small layers whose INT8 cost the DeepPCB student 1.8 pt mAP@0.5:0.95
    # (QAT, oneDNN: 0.509 all-INT8 vs 0.527 with them FP32; FP32 model 0.535) for ~27 KB of ARM .nb.
    qat_skip_layers: list[str] = setting(default_factory=lambda: ["head.predictions"])

    # Export and measurement
    package_name: str | None = None  # default: "<out name>-int8"
    targets: list[str] = setting(default_factory=lambda: list(LITE_TARGETS), choices=LITE_TARGETS, non_empty=True)
    bench_threads: list[int] = setting(default_factory=lambda: [1, 2], at_least=1, non_empty=True)
    bench_runs: int = setting(50, at_least=1)
    # A package the shipped one is timed against, their frames alternately in one process (Lite, the most threads):
    # this VM's speed drifts by a third between runs, so only a ratio measured so compares packages.
    bench_against: str | None = None

    max_steps_per_epoch: int | None = setting(None, at_least=1)  # smoke tests only

    # Data-parallel training stages (docs/distributed-training.md): ranks per node under
    # paddle.distributed.launch (GPUs: one per card; CPU: gloo); batch_size is the global batch. ips: the
    # nodes, comma-separated, the same command on each. Neither decides the results: a pipeline may
    # continue with another number of ranks.
    nproc: int = setting(1, at_least=1)
    ips: str | None = None

    def _prepare(self) -> None:
        for name in ("crop_size", "teacher_crop_size"):
            if getattr(self, name) == 0:  # 0 on the command line: whole images
                setattr(self, name, None)
        if isinstance(self.qat_skip_layers, (list, tuple)):
            self.qat_skip_layers = [str(name) for name in self.qat_skip_layers]
        for name in ("targets", "bench_threads"):
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))

    def _check(self) -> None:
        if self.batch_size % self.nproc:
            raise self._invalid("batch_size", f"{self.batch_size} (the global batch) does not divide among nproc "
                                f"{self.nproc} ranks: choose a multiple of {self.nproc}")
        if self.teacher_init is not None and self.teacher_run is not None:
            raise self._invalid("teacher_init", f"{self.teacher_init!r} starts a teacher trained by this pipeline, but "
                                f"teacher_run {self.teacher_run!r} is reused as it is: give one of them")
        if self.teacher_cache and self.distill and not self.dihedral:
            raise self._invalid(None, "teacher_cache: true needs dihedral: true (the augmentation's own flips and "
                                "turns are not recorded per crop, so the cache could serve none)")

    @property
    def name(self) -> str:
        return self.package_name or f"{Path(self.out).name}-int8"


# What decides the pipeline's results: a pipeline directory continues only with the same values.
# (Measurement settings may change between runs; they only redo nothing.)
RESULT_FIELDS = tuple(f.name for f in fields(PipelineConfig)
                      if f.name not in ("out", "bench_threads", "bench_runs", "bench_against", "package_name", "nproc",
                                        "ips", "teacher_cache_dir"))


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
    PipelineConfig.check_keys(values, str(path))
    return values


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The result-deciding fields whose values differ, as 'field: saved -> wanted'. A field the saved
    configuration predates counts as its default (a pipeline started before ``head`` existed used "yolo")."""
    defaults = {f.name: f.default for f in fields(PipelineConfig) if f.default is not MISSING}
    saved = {**{name: value for name, value in defaults.items() if name not in saved}, **saved}
    return [f"{name}: {saved.get(name)!r} -> {wanted.get(name)!r}" for name in RESULT_FIELDS
            if saved.get(name) != wanted.get(name)]
