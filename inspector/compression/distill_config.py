"""The settings of ``inspector distill`` (teacher and loss weights), apart from the losses themselves.

Kept free of paddle (and numpy) so the command line can show these defaults in ``--help`` without loading
the framework; ``inspector.compression.distill`` uses and re-exports everything here.
"""
from __future__ import annotations

from dataclasses import dataclass

from inspector.config_base import ConfigBase, setting

DISTILL_CONFIG_FILE = "distill_config.json"
SCHEDULES = ("linear", "cosine")  # how the teacher's weight alpha moves over the epochs
FEATURE_METHODS = ("pkd", "cwd")  # the GFL head's neck term: Pearson correlation, channel-wise distillation


@dataclass
class DistillConfig(ConfigBase):
    """The teacher and the distillation loss settings (see the module docstring); saved in the run."""

    KIND = "distillation option"
    SOURCE = "distill config"

    teacher: str  # teacher training run (its best/) or checkpoint directory
    temperature: float = setting(2.0, above=0.0)  # T: softens the class scores
    # weight of the teacher terms in the first epoch (the labels get 1 - alpha)
    alpha_start: float = setting(0.7, at_least=0.0, at_most=1.0)
    alpha_end: float = setting(0.3, at_least=0.0, at_most=1.0)  # ... in the last epoch, linear in between
    # teacher objectness above which its boxes are targets
    confidence_threshold: float = setting(0.5, at_least=0.0, at_most=1.0)
    cls_weight: float = setting(1.0, at_least=0.0)
    obj_weight: float = setting(1.0, at_least=0.0)
    box_weight: float = setting(1.0, at_least=0.0)
    feature_weight: float = setting(1.0, at_least=0.0)  # 0 turns feature distillation (and its adapters) off
    feature_normalize: bool = True  # standardise feature maps before the MSE (YOLO head)
    # how alpha moves from alpha_start to alpha_end: "linear" | "cosine"
    schedule: str = setting("linear", choices=SCHEDULES)
    # GFL head's neck term: "pkd" (Pearson) | "cwd" (channel-wise softmax KL)
    feature_method: str = setting("pkd", choices=FEATURE_METHODS)
    feature_temperature: float = setting(1.0, above=0.0)  # cwd's softmax temperature over the positions
    teacher_cache: bool = False  # reuse the teacher's whole-board outputs (teacher_cache.py); crops stride-aligned
    teacher_cache_mb: int = setting(2048, at_least=1)  # its memory bound (least recently used boards are dropped)
    # Its disk store in this directory, kept after the run (a sub-directory per teacher and layout): a later
    # distillation from the same teacher reads the boards' maps instead of computing them. None: in the run's
    # directory while it trains. Where, not what: runs with and without it are the same result.
    teacher_cache_dir: str | None = None
