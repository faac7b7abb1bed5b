"""Training run configuration: one plain dataclass, saved as JSON in the run directory."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    arch: str  # e.g. ppyolo-r18, mbv3-small (see inspector.models.ARCHS)
    data: str  # dataset directory or COCO JSON
    out: str  # run directory
    format: str | None = None  # deeppcb | voc | coco; auto-detected when None
    epochs: int = 30
    batch_size: int = 8
    input_size: int = 320  # full images are letterboxed to this (DeepPCB 640 -> 320 halves the boxes)
    crop_size: int | None = 256  # train on random defect-aware crops of the letterboxed image (CPU speed)
    input_mode: str = "image+template"
    head: str = "yolo"  # "yolo" (anchor-based) | "gfl" (anchor-free; inspector.models.gfl_head)
    augment: bool = True  # flips, 90-degree turns, lighting and noise (see inspector.data.transforms)
    # Pair augmentations (inspector.data.augment); off by default, so a config without them trains as before.
    dihedral: bool = False  # one of the 8 exact dihedral transforms, uniformly (replaces augment's flips/turns)
    copy_paste: float = 0.0  # probability that a training image gets defects pasted from other boards
    copy_paste_count: int = 2  # pastes tried on such an image
    copy_paste_balance: bool = False  # paste classes uniformly (favours rare ones) instead of by frequency
    aug_off_epochs: int = 0  # the last N epochs see whole letterboxed images, no crop and no augmentation
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    ema_decay: float = 0.9998
    val_fraction: float = 0.2
    split_seed: int = 0
    split_file: str | None = None  # default: <out>/split.json
    seed: int = 0
    eval_every: int = 1  # validate every N epochs (and always after the last)
    workers: int = 2
    max_steps_per_epoch: int | None = None  # for smoke tests and quick benchmarks
    init: str | None = None  # start from this run's (best/) or checkpoint's weights instead of random ones

    def pair_augment(self):
        """The loader's ``PairAugmentConfig`` (a ValueError names a bad field)."""
        from inspector.data.augment import PairAugmentConfig

        return PairAugmentConfig(dihedral=self.dihedral, copy_paste=self.copy_paste,
                                 copy_paste_count=self.copy_paste_count, copy_paste_balance=self.copy_paste_balance)

    def plain_from_epoch(self) -> int | None:
        """First epoch (0-based) trained without crops or augmentation; None: every epoch augments."""
        if self.aug_off_epochs < 0:
            raise ValueError(f"aug_off_epochs: at least 0 expected, got {self.aug_off_epochs}")
        return max(0, self.epochs - self.aug_off_epochs) if self.aug_off_epochs else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
