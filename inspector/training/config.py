"""Training run configuration: one plain dataclass, saved as JSON in the run directory (``train_config.json``).

Each field's default and check sit on the field (``inspector.config_base.setting``); a bad value, built in code,
read from a run's file or given on the command line, is refused naming the field and where it came from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inspector.config_base import ConfigBase, setting
from inspector.data.layouts import INPUT_MODES
from inspector.models.config import HEADS
from inspector.models.nms import DEFAULT_NMS, DEFAULT_NMS_THRESHOLD, NMS_METHODS

STRIDE_NOTE = "the detector's largest stride"


@dataclass
class TrainConfig(ConfigBase):
    KIND = "training option"
    SOURCE = "training config"

    arch: str  # e.g. ppyolo-r18, mbv3-small (see inspector.models.ARCHS)
    # dataset directory or COCO JSON; or several sources (inspector.data.sources: paths or {path, weight})
    data: str | list[Any]
    out: str  # run directory
    format: str | None = None  # deeppcb | voc | coco; auto-detected when None
    epochs: int = setting(30, at_least=1)
    batch_size: int = setting(8, at_least=1)
    # full images are letterboxed to this (DeepPCB 640 -> 320 halves the boxes)
    input_size: int = setting(320, above=0, multiple_of=32, note=STRIDE_NOTE)
    # train on random defect-aware crops of the letterboxed image (CPU speed)
    crop_size: int | None = setting(256, above=0, multiple_of=32, note=STRIDE_NOTE)
    input_mode: str = setting("image+template", choices=INPUT_MODES)
    head: str = setting("yolo", choices=HEADS)  # "yolo" (anchor-based) | "gfl" (anchor-free; inspector.models.gfl_head)
    augment: bool = True  # flips, 90-degree turns, lighting and noise (see inspector.data.transforms)
    # Pair augmentations (inspector.data.augment); off by default, so a config without them trains as before.
    dihedral: bool = False  # one of the 8 exact dihedral transforms, uniformly (replaces augment's flips/turns)
    # probability that a training image gets defects pasted from other boards
    copy_paste: float = setting(0.0, at_least=0.0, at_most=1.0)
    copy_paste_count: int = setting(2, at_least=1)  # pastes tried on such an image
    copy_paste_balance: bool = False  # paste classes uniformly (favours rare ones) instead of by frequency
    # the last N epochs see whole letterboxed images, no crop and no augmentation
    aug_off_epochs: int = setting(0, at_least=0)
    lr: float = setting(2e-3, above=0.0)
    weight_decay: float = setting(5e-4, at_least=0.0)
    warmup_epochs: float = setting(1.0, at_least=0.0)
    ema_decay: float = setting(0.9998, at_least=0.0, at_most=1.0)
    val_fraction: float = setting(0.2, at_least=0.0, below=1.0)
    split_seed: int = 0
    split_file: str | None = None  # default: <out>/split.json
    seed: int = 0
    eval_every: int = setting(1, at_least=1)  # validate every N epochs (and always after the last)
    # The NMS validation runs, so the best checkpoint is the one its package (exported with the same NMS) scores
    # best with; pruning, quantization and `inspector eval` of the run judge it the same way.
    nms: str = setting(DEFAULT_NMS, choices=NMS_METHODS)  # "agnostic" (across classes) | "hard" (per class) | "matrix"
    nms_threshold: float = setting(DEFAULT_NMS_THRESHOLD, above=0.0, at_most=1.0)  # IoU above which NMS suppresses
    workers: int = setting(2, at_least=0)
    max_steps_per_epoch: int | None = setting(None, at_least=1)  # for smoke tests and quick benchmarks
    init: str | None = None  # start from this run's (best/) or checkpoint's weights instead of random ones

    def pair_augment(self):
        """The loader's ``PairAugmentConfig`` (a ValueError names a bad field)."""
        from inspector.data.augment import PairAugmentConfig

        return PairAugmentConfig(dihedral=self.dihedral, copy_paste=self.copy_paste,
                                 copy_paste_count=self.copy_paste_count, copy_paste_balance=self.copy_paste_balance)

    def plain_from_epoch(self) -> int | None:
        """First epoch (0-based) trained without crops or augmentation; None: every epoch augments."""
        return max(0, self.epochs - self.aug_off_epochs) if self.aug_off_epochs else None
