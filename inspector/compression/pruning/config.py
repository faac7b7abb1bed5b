"""``PruneConfig``, the settings of one ``inspector prune`` run, and the criteria it may use. Standard library
only (no paddle), so the command line reads the defaults for ``--help`` without loading the pruning code."""
from __future__ import annotations

from dataclasses import dataclass

from inspector.config_base import ConfigBase, setting

CRITERIA = ("l1", "fpgm")


@dataclass
class PruneConfig(ConfigBase):
    """``inspector prune`` options, saved as prune_config.json in the run."""

    KIND = "prune option"
    SOURCE = "prune config"

    model: str  # run or checkpoint directory to prune (a run's best/)
    data: str  # the labeled data it was trained on
    out: str  # new run directory
    criterion: str = setting("l1", choices=CRITERIA)  # l1 | fpgm
    # the same ratio for every group; None: sensitivity scan (auto)
    ratio: float | None = setting(None, at_least=0.0, below=1.0)
    target_flops_reduction: float = setting(0.3, above=0.0, below=1.0)  # auto: fraction of FLOPs to remove
    # auto: largest mAP@0.5:0.95 drop one group's pruning may cost (before fine-tuning)
    max_drop: float = setting(0.02, at_least=0.0)
    # auto: ratios tried per group
    scan_ratios: tuple[float, ...] = setting((0.25, 0.5, 0.75), above=0.0, below=1.0, non_empty=True)
    # auto: validation images the scan evaluates on (the first ones of the val split)
    scan_images: int = setting(64, at_least=1)
    channel_multiple: int = setting(8, at_least=1)  # kept channels are rounded to multiples of this
    format: str | None = None
    epochs: int = setting(6, at_least=1)  # fine-tuning
    lr: float = setting(5e-4, above=0.0)  # fine-tuning peak learning rate (training from scratch uses 2e-3)
    warmup_epochs: float = setting(0.3, at_least=0.0)
    batch_size: int | None = setting(None, at_least=1)  # default: the source run's
    seed: int = 0
    workers: int = setting(2, at_least=0)
    max_steps_per_epoch: int | None = setting(None, at_least=1)

    def _prepare(self) -> None:
        if isinstance(self.scan_ratios, list):  # as saved in JSON
            self.scan_ratios = tuple(self.scan_ratios)
