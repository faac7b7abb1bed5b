"""``QuantizeConfig``, the settings of one ``inspector quantize`` run, and its methods. Standard library only
(no paddle), so the command line reads the defaults for ``--help`` without loading the quantization code."""
from __future__ import annotations

from dataclasses import dataclass, field

from inspector.config_base import ConfigBase, setting

METHODS = ("qat", "ptq")
# Which QAT epoch is saved: "best", the one whose saved INT8 graph scores the highest official AP on the
# validation split through oneDNN's INT8 kernels (what x86 runs); "last", the last one.
KEEP_EPOCH = ("best", "last")


@dataclass
class QuantizeConfig(ConfigBase):
    """One ``inspector quantize`` run; saved (with what it resolved to) as ``quant_config.json``."""

    KIND = "quantize option"
    SOURCE = "quantize config"

    model: str  # FP32 source: a training run (its best/) or a checkpoint directory
    data: str  # the labeled data the source was trained on (its split.json is reused)
    out: str  # run directory
    method: str = setting("qat", choices=METHODS)  # "qat" | "ptq"
    format: str | None = None  # deeppcb | voc | coco; auto-detected when None
    # QAT fine-tuning (ptq does none)
    epochs: int = setting(3, at_least=0)  # 0: calibration only, no fine-tuning
    # peak AdamW learning rate, cosine-decayed to 0 (the FP32 runs train at 2e-3)
    lr: float = setting(1e-4, above=0.0)
    weight_decay: float = setting(5e-4, at_least=0.0)
    batch_size: int = setting(8, at_least=1)
    # None: the source run's training crop (whole image if it had none); 0: the whole image
    crop_size: int | None = setting(None, at_least=0, multiple_of=32, note="the detector's largest stride")
    max_steps_per_epoch: int | None = setting(None, at_least=1)  # for smoke tests
    keep_epoch: str = setting("best", choices=KEEP_EPOCH)
    # Calibration (activation scales: all of PTQ, QAT's starting point)
    calibration_images: int = setting(64, at_least=1)  # from the training split
    # Mixed precision
    skip_layers: list[str] = field(default_factory=list)  # convolution names or block prefixes kept in FP32
    sensitivity: bool = False
    sensitivity_images: int = setting(32, at_least=1)  # from the validation split
    # with sensitivity: also keep the K most sensitive layers in FP32
    skip_most_sensitive: int = setting(0, at_least=0)
    lite_x86_safe: bool = False  # also keep in FP32 what Paddle Lite's x86 INT8 kernels cannot run
    # CPU threads of QAT's fine-tuning and of the evaluations; None: OMP_NUM_THREADS, else every core. The QAT
    # weights depend on it (bit for bit): quant_config.json records the count that ran.
    threads: int | None = setting(None, at_least=1)
    seed: int = 0
    workers: int = setting(2, at_least=0)

    def _check(self) -> None:
        if self.skip_most_sensitive and not self.sensitivity:
            raise self._invalid(None, "skip_most_sensitive needs sensitivity (the ranking it picks from)")
