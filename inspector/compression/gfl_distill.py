"""Distillation terms for the anchor-free GFL head (``models/gfl_head.py``): teacher and student of the same head
family, compared map for map.

Why these three terms (the methods of PaddleDetection's ``configs/slim/distill`` for PP-PicoDet / PP-YOLOE,
written here for our maps): a GFL head says *where* a box is with a distribution per side and *how good* it is
with a quality score per class. Both are probabilities, so the teacher's can be transferred directly:

- ``distill_ld``, localization distillation (Zheng et al., LD, CVPR 2022): per anchor point and box side, the
  KL divergence ``KL(softmax(t / T) || softmax(s / T))`` between the teacher's and the student's distributions
  over the ``reg_max + 1`` bins, averaged over the four sides and times ``T^2`` (Hinton's scale: the gradient
  does not shrink as ``T`` grows). The softened teacher distribution carries its uncertainty (an ambiguous
  edge of a mouse bite spreads over two bins), which the labels' two-bin DFL target cannot. Points count by the
  teacher's quality score (its highest class probability): the boxes of points the teacher thinks are
  background were never trained and are noise. Weighted mean over the batch: ``sum(w * kl) / sum(w)``.
- ``distill_quality``: the teacher's sigmoid quality scores as soft targets of the student's, every point and
  class, with the quality focal loss's modulation ``|sigmoid(s) - sigmoid(t)|^beta`` (GFL; PP-YOLOE's distill
  loss uses QFL against the teacher's scores too). The cross-entropy is the Bernoulli KL (BCE minus the
  teacher's entropy: the same gradient, and exactly 0 at a match). The modulation lets the thousands of easy
  background points fade, as in the hard loss. Divided by the teacher's soft count of objects (the sum of its
  quality scores, at least 1), as the hard classification loss is divided by its positives.
- ``distill_feat`` on each neck level, after a 1x1 conv adapter from the student's width to the teacher's
  (``distill.FeatureAdapters``; it trains with the student and is dropped with the run):
  - ``pkd`` (Cao et al., PKD, NeurIPS 2022): the MSE of the two maps, each standardised per image and channel
    over the positions, halved: ``1 - Pearson correlation`` averaged over channels. Bounded, and blind to the
    activation scale, which differs by orders of magnitude between a ResNet and a MobileNet;
  - ``cwd`` (Shu et al., channel-wise distillation, ICCV 2021): per image and channel a softmax over the
    positions at temperature ``feature_temperature``, ``KL(teacher || student) * T^2``, averaged over
    channels: where each channel's mass is, not its values.

Every term is 0 when the student's maps equal the teacher's, and reads the teacher's maps detached.
Teacher and student must share the head's layout: head, strides, classes, ``reg_max`` (and the input), checked
by ``check_gfl_pair``.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F

from inspector.compression.distill_config import FEATURE_METHODS, SCHEDULES  # noqa: F401 (re-exported)
from inspector.models.config import ModelConfig
from inspector.models.gfl_loss import flatten_outputs

GFL_RESPONSE_KEYS = ("distill_quality", "distill_ld")
QUALITY_BETA = 2.0
# The fields a GFL teacher and student must share for their maps to pair up channel for channel, cell for cell.
PAIRED_FIELDS = ("head", "strides", "num_classes", "reg_max", "input_size", "input_mode")


def check_gfl_pair(student: ModelConfig, teacher: ModelConfig, source: str = "distillation") -> None:
    """ValueError naming every field in ``PAIRED_FIELDS`` on which the two configurations differ."""
    differing = [f"{name} {getattr(student, name)!r} (student) vs {getattr(teacher, name)!r} (teacher)"
                 for name in PAIRED_FIELDS if getattr(student, name) != getattr(teacher, name)]
    if differing:
        raise ValueError(f"{source}: the student's and the teacher's GFL heads must share {', '.join(PAIRED_FIELDS)}; "
                         f"they differ in: {'; '.join(differing)}")
    if teacher.head != "gfl":
        raise ValueError(f"{source}: head {teacher.head!r}: these terms read GFL maps (head 'gfl')")


def binary_kl(student_logits: paddle.Tensor, teacher_logits: paddle.Tensor) -> paddle.Tensor:
    """Elementwise ``KL(Bernoulli(sigmoid(t)) || Bernoulli(sigmoid(s)))``, via softplus (no log of 0 or 1)."""
    p = F.sigmoid(teacher_logits)
    return (p * (F.softplus(-student_logits) - F.softplus(-teacher_logits))
            + (1.0 - p) * (F.softplus(student_logits) - F.softplus(teacher_logits)))


def localization_distillation(student_dist: paddle.Tensor, teacher_dist: paddle.Tensor, weights: paddle.Tensor,
                              temperature: float) -> paddle.Tensor:
    """LD of distribution logits (B, N, 4, R+1) with per-point weights (B, N): ``sum(w * KL) / sum(w) * T^2``."""
    teacher_log = F.log_softmax(teacher_dist.detach() / temperature, axis=-1)
    student_log = F.log_softmax(student_dist / temperature, axis=-1)
    kl = (paddle.exp(teacher_log) * (teacher_log - student_log)).sum(axis=-1).mean(axis=-1)  # (B, N)
    weights = weights.detach()
    return temperature**2 * (weights * kl).sum() / paddle.clip(weights.sum(), min=1e-6)


def quality_distillation(student_cls: paddle.Tensor, teacher_cls: paddle.Tensor,
                         beta: float = QUALITY_BETA) -> paddle.Tensor:
    """QFL of class logits (B, N, C) against the teacher's scores, divided by its soft count of objects."""
    teacher_cls = teacher_cls.detach()
    teacher_scores = F.sigmoid(teacher_cls)
    modulation = paddle.abs(F.sigmoid(student_cls) - teacher_scores).detach() ** beta
    objects = teacher_scores.max(axis=-1).sum()
    return (binary_kl(student_cls, teacher_cls) * modulation).sum() / paddle.clip(objects, min=1.0)


def gfl_response_losses(student_outputs: list[paddle.Tensor], teacher_outputs: list[paddle.Tensor],
                        cfg: ModelConfig, temperature: float) -> dict[str, paddle.Tensor]:
    """``distill_quality`` and ``distill_ld`` between raw GFL maps of the same layout ``cfg`` (see the module doc)."""
    if len(student_outputs) != len(teacher_outputs):
        raise ValueError(f"student has {len(student_outputs)} output levels, the teacher {len(teacher_outputs)}")
    for level, (s, t) in enumerate(zip(student_outputs, teacher_outputs)):
        if list(s.shape) != list(t.shape):
            raise ValueError(f"level {level}: student map {list(s.shape)} vs teacher map {list(t.shape)}; the heads "
                             f"must share strides, classes, reg_max and the input size")
    student_cls, student_dist = flatten_outputs(student_outputs, cfg)
    teacher_cls, teacher_dist = flatten_outputs([t.detach() for t in teacher_outputs], cfg)
    quality = F.sigmoid(teacher_cls).max(axis=-1)  # (B, N): the teacher's confidence that a box is there
    return {"distill_quality": quality_distillation(student_cls, teacher_cls),
            "distill_ld": localization_distillation(student_dist, teacher_dist, quality, temperature)}


def _standardise(x: paddle.Tensor, eps: float = 1e-6) -> paddle.Tensor:
    """Zero mean, unit variance per image and channel over the positions of (B, C, H, W)."""
    mean = x.mean(axis=[2, 3], keepdim=True)
    variance = ((x - mean) ** 2).mean(axis=[2, 3], keepdim=True)
    return (x - mean) / paddle.sqrt(variance + eps)


def pearson_feature_loss(student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
    """PKD on one level: ``MSE(standardised s, standardised t) / 2 = mean over channels of 1 - Pearson r``."""
    return F.mse_loss(_standardise(student), _standardise(teacher.detach())) / 2.0


def channel_wise_loss(student: paddle.Tensor, teacher: paddle.Tensor, temperature: float) -> paddle.Tensor:
    """CWD on one level: per image and channel, ``KL(softmax_positions(t/T) || softmax_positions(s/T)) * T^2``."""
    batch, channels = int(student.shape[0]), int(student.shape[1])
    s = paddle.reshape(student, [batch, channels, -1]) / temperature
    t = paddle.reshape(teacher.detach(), [batch, channels, -1]) / temperature
    teacher_log, student_log = F.log_softmax(t, axis=-1), F.log_softmax(s, axis=-1)
    return temperature**2 * (paddle.exp(teacher_log) * (teacher_log - student_log)).sum(axis=-1).mean()


def gfl_feature_loss(adapted_student: list[paddle.Tensor], teacher_features: list[paddle.Tensor], method: str,
                     temperature: float = 1.0) -> paddle.Tensor:
    """The neck term summed over levels; the student maps already mapped to the teacher's widths."""
    if method not in FEATURE_METHODS:
        raise ValueError(f"feature_method: expected one of {FEATURE_METHODS}, got {method!r}")
    terms = []
    for level, (s, t) in enumerate(zip(adapted_student, teacher_features)):
        if list(s.shape) != list(t.shape):
            raise ValueError(f"level {level}: adapted student feature {list(s.shape)} vs teacher {list(t.shape)}")
        terms.append(pearson_feature_loss(s, t) if method == "pkd" else channel_wise_loss(s, t, temperature))
    return paddle.add_n(terms)


def scheduled_weight(epoch: int, epochs: int, start: float, end: float, schedule: str = "linear") -> float:
    """A weight moving from ``start`` (epoch 0) to ``end`` (the last epoch): linearly, or along a half cosine
    (flat at both ends: the teacher's share stays high early and drops mostly mid-run)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if epochs <= 1:
        return start
    progress = min(max(epoch / (epochs - 1), 0.0), 1.0)
    if schedule == "cosine":
        progress = (1.0 - math.cos(math.pi * progress)) / 2.0
    return start + (end - start) * progress
