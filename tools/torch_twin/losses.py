"""PyTorch mirrors of the GFL head's training loss and of its distillation objective.

Why: the twin trains on a GPU machine without paddle (see ``tools/torch_twin/__init__.py``); its loss must be the
Paddle loss, term for term and gradient for gradient, or the weights it brings back would have been trained on
another objective. Mirrored:

- ``gfl_loss`` = ``inspector/models/gfl_loss.py::gfl_loss`` (varifocal or quality focal classification, GIoU,
  DFL, PicoDet's normalisation; the same keys). The targets are ``inspector.models.assign.task_aligned_assign``'s
  on the same inputs (sigmoid scores and detached decoded boxes), computed on the outputs' device by its torch
  mirror (``assign.py``: numpy's ~120 ms a batch of 32 on one core would cap a GPU job).
- ``gfl_distill_losses`` = ``DistillationObjective.gfl_losses`` of ``inspector/compression/distill.py`` with the
  terms of ``inspector/compression/gfl_distill.py``: ``(1 - alpha) * hard + alpha * (cls_weight * quality +
  box_weight * LD + feature_weight * neck)``, alpha on the ``scheduled_weight`` schedule, and the same parts
  kept for logging (``_combined``). ``FeatureAdapters`` mirrors ``distill.FeatureAdapters`` (PaddleSlim's
  ``ShapeAlign("1x1conv")`` per level) with the Paddle parameter names ``levels.{i}.align_op.weight/bias``.

Only torch, numpy and the paddle-free parts of ``inspector`` are imported. The numpy layout helpers
(``gfl_channels``, ``anchor_points``) come from the paddle-free ``inspector.models.head_layout`` that
``gfl_head.py`` uses too; ``split_gfl_level`` is paddle graph code, mirrored here in torch; the tests compare it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from inspector.models.config import ModelConfig
from inspector.models.head_layout import anchor_points, gfl_channels
from tools.torch_twin.assign import task_aligned_assign
from tools.torch_twin.model import as_numpy, intersection_and_union

GFL_LOSS_KEYS = ("loss_cls", "loss_iou", "loss_dfl")
VFL_ALPHA, VFL_GAMMA = 0.75, 2.0
QFL_BETA = 2.0
QUALITY_BETA = 2.0
FEATURE_METHODS = ("pkd", "cwd")
SCHEDULES = ("linear", "cosine")
GFL_RESPONSE_KEYS = ("distill_quality", "distill_ld")


# --------------------------------------------------------------------------- layout (gfl_head.py)


def split_gfl_level(output: torch.Tensor, num_classes: int, reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw map (B, C + 4(R+1), H, W) -> class logits (B, H*W, C) and distribution logits (B, H*W, 4, R+1)."""
    batch, channels = int(output.shape[0]), int(output.shape[1])
    if channels != gfl_channels(num_classes, reg_max):
        raise ValueError(f"GFL map with {channels} channels; num_classes {num_classes} and reg_max {reg_max} "
                         f"need {gfl_channels(num_classes, reg_max)}")
    flat = output.reshape(batch, channels, -1)
    cls, dist = torch.split(flat, [num_classes, 4 * (reg_max + 1)], dim=1)
    return cls.permute(0, 2, 1), dist.reshape(batch, 4, reg_max + 1, -1).permute(0, 3, 1, 2)


def flatten_outputs(outputs: list[torch.Tensor], cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All levels' maps -> class logits (B, N, C) and distribution logits (B, N, 4, R+1), in decode order."""
    split = [split_gfl_level(o, cfg.num_classes, cfg.reg_max) for o in outputs]
    return torch.cat([c for c, _ in split], dim=1), torch.cat([d for _, d in split], dim=1)


# --------------------------------------------------------------------------- hard loss (gfl_loss.py)


def giou(boxes_a: torch.Tensor, boxes_b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Generalized IoU of corresponding xyxy boxes (..., 4) -> (...), in [-1, 1]."""
    inter, union = intersection_and_union(boxes_a, boxes_b)
    hull_wh = torch.maximum(boxes_a[..., 2:], boxes_b[..., 2:]) - torch.minimum(boxes_a[..., :2], boxes_b[..., :2])
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / (union + eps) - (hull - union) / (hull + eps)


def distribution_focal_loss(logits: torch.Tensor, targets: torch.Tensor | np.ndarray) -> torch.Tensor:
    """DFL of distribution logits (..., R+1) against distances ``targets`` (...) in bins, within [0, R)."""
    bins = int(logits.shape[-1])
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(np.asarray(targets, dtype=np.float32), device=logits.device)
    left = torch.floor(targets)
    weight_left = left + 1.0 - targets
    weight_right = targets - left
    left_hot = F.one_hot(left.long(), bins).to(logits.dtype)
    right_hot = F.one_hot(torch.clamp(left + 1.0, max=bins - 1).long(), bins).to(logits.dtype)
    soft = left_hot * weight_left.unsqueeze(-1) + right_hot * weight_right.unsqueeze(-1)
    return -(F.log_softmax(logits, dim=-1) * soft).sum(dim=-1)


def varifocal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Elementwise varifocal loss of class logits against soft targets in [0, 1] (0 = background)."""
    p = torch.sigmoid(logits).detach()
    positive = (targets > 0).to(logits.dtype)
    weight = VFL_ALPHA * p**VFL_GAMMA * (1.0 - positive) + targets * positive
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight


def quality_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Elementwise quality focal loss of class logits against soft targets in [0, 1]."""
    p = torch.sigmoid(logits).detach()
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * torch.abs(targets - p) ** QFL_BETA


def distances_to_boxes(distances: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Side distances (B, N, 4) in strides around points (N, 2) with strides (N,) -> xyxy (B, N, 4) pixels."""
    scaled = distances * strides.unsqueeze(-1)
    return torch.cat([points - scaled[..., :2], points + scaled[..., 2:]], dim=-1)


def gfl_loss(
    outputs: list[torch.Tensor],
    gt_boxes: torch.Tensor | np.ndarray,
    gt_classes: torch.Tensor | np.ndarray,
    cfg: ModelConfig,
) -> dict[str, torch.Tensor]:
    """The GFL loss of raw head maps against padded GT (B, M, 4) xyxy input pixels / (B, M) (-1 = padding).

    Returns ``loss_cls``, ``loss_iou``, ``loss_dfl`` (each already times its ``cfg.gfl_*_weight``) and ``loss``,
    their sum: ``inspector.models.gfl_loss.gfl_loss``, on the outputs' device.
    """
    batch = int(outputs[0].shape[0])
    device = outputs[0].device
    gt_boxes_np = as_numpy(gt_boxes).astype(np.float32).reshape(batch, -1, 4)
    gt_classes_np = as_numpy(gt_classes).astype(np.int64).reshape(batch, -1)

    grid_sizes = [(int(o.shape[2]), int(o.shape[3])) for o in outputs]
    points_np, strides_np = anchor_points(grid_sizes, cfg.strides)
    points, strides = torch.as_tensor(points_np, device=device), torch.as_tensor(strides_np, device=device)
    cls_logits, dist_logits = flatten_outputs(outputs, cfg)
    bins = torch.arange(cfg.reg_max + 1, dtype=torch.float32, device=device)
    distances = (F.softmax(dist_logits, dim=-1) * bins).sum(dim=-1)  # (B, N, 4) strides
    pred_boxes = distances_to_boxes(distances, points, strides)

    assignment = task_aligned_assign(
        torch.sigmoid(cls_logits), pred_boxes, points_np, strides_np, gt_boxes_np,
        gt_classes_np, topk=cfg.tal_topk, alpha=cfg.tal_alpha, beta=cfg.tal_beta,
        center_radius=cfg.tal_center_radius,
    )
    target_scores = torch.as_tensor(assignment.scores, device=device)
    image, point = np.nonzero(assignment.positive)

    element_loss = varifocal_loss if cfg.gfl_cls_loss == "vfl" else quality_focal_loss
    loss_cls = element_loss(cls_logits, target_scores).sum() / max(len(image), 1)

    weights = assignment.scores[image, point].sum(axis=-1)  # (P,) each positive's soft target
    if len(image) and weights.sum() > 0:
        normaliser = float(weights.sum())
        image_index = torch.as_tensor(image, dtype=torch.long, device=device)
        point_index = torch.as_tensor(point, dtype=torch.long, device=device)
        weight = torch.as_tensor(weights, device=device)
        gt = assignment.boxes[image, point]  # (P, 4)
        positive_boxes = pred_boxes[image_index, point_index]
        loss_iou = (weight * (1.0 - giou(positive_boxes, torch.as_tensor(gt, device=device)))).sum()
        centre = points_np[point]
        side_distances = np.concatenate([centre - gt[:, :2], gt[:, 2:] - centre], axis=1) / strides_np[point, None]
        side_distances = np.clip(side_distances, 0.0, cfg.reg_max - 0.01).astype(np.float32)
        dfl = distribution_focal_loss(dist_logits[image_index, point_index],
                                      torch.as_tensor(side_distances, device=device)).mean(dim=-1)
        loss_iou, loss_dfl = loss_iou / normaliser, (weight * dfl).sum() / normaliser
    else:  # no GT in the batch (or no overlap at all yet): zeros that stay in the graph
        loss_iou = loss_dfl = dist_logits.sum() * 0.0

    losses = {
        "loss_cls": cfg.gfl_cls_weight * loss_cls,
        "loss_iou": cfg.gfl_iou_weight * loss_iou,
        "loss_dfl": cfg.gfl_dfl_weight * loss_dfl,
    }
    losses["loss"] = losses["loss_cls"] + losses["loss_iou"] + losses["loss_dfl"]
    return losses


# --------------------------------------------------------------------------- distillation (gfl_distill.py, distill.py)


# The ``DistillConfig`` fields the GFL objective does not read: the teacher's path, YOLO-only settings, the cache.
_UNREAD_DISTILL_FIELDS = ("teacher", "confidence_threshold", "obj_weight", "feature_normalize", "teacher_cache",
                          "teacher_cache_mb", "teacher_cache_dir")


@dataclass
class GFLDistillSettings:
    """The ``inspector.compression.distill.DistillConfig`` settings that the GFL objective reads, with its defaults.

    ``from_dict`` takes a whole ``DistillConfig`` dict (a run's ``distill_config.json``), so a twin run and a
    Paddle run read one file.
    """

    temperature: float = 2.0  # LD's softmax temperature over the bins
    alpha_start: float = 0.7  # the teacher terms' weight in the first epoch
    alpha_end: float = 0.3  # ... in the last
    cls_weight: float = 1.0  # distill_quality
    box_weight: float = 1.0  # distill_ld
    feature_weight: float = 1.0  # distill_feat; 0: no adapters, no teacher features
    schedule: str = "linear"  # "linear" | "cosine"
    feature_method: str = "pkd"  # "pkd" | "cwd"
    feature_temperature: float = 1.0  # cwd's temperature over the positions

    def __post_init__(self) -> None:
        for name in ("temperature", "feature_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if self.feature_method not in FEATURE_METHODS:
            raise ValueError(f"feature_method: expected one of {FEATURE_METHODS}, got {self.feature_method!r}")
        for name in ("alpha_start", "alpha_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1], got {getattr(self, name)}")
        for name in ("cls_weight", "box_weight", "feature_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name}: expected a weight >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "distill config") -> "GFLDistillSettings":
        """From a ``DistillConfig.to_dict()``: the fields the GFL objective ignores dropped, unknown ones refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - set(_UNREAD_DISTILL_FIELDS))
        if unknown:
            raise ValueError(f"{source}: unknown distillation option(s) {unknown}; expected some of "
                             f"{sorted(known | set(_UNREAD_DISTILL_FIELDS))}")
        try:
            return cls(**{key: value for key, value in values.items() if key in known})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scheduled_weight(epoch: int, epochs: int, start: float, end: float, schedule: str = "linear") -> float:
    """``start`` at epoch 0, ``end`` at the last epoch, linearly or along a half cosine (``gfl_distill``)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if epochs <= 1:
        return start
    progress = min(max(epoch / (epochs - 1), 0.0), 1.0)
    if schedule == "cosine":
        progress = (1.0 - math.cos(math.pi * progress)) / 2.0
    return start + (end - start) * progress


def binary_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(Bernoulli(sigmoid(t)) || Bernoulli(sigmoid(s)))``, via softplus."""
    p = torch.sigmoid(teacher_logits)
    return (p * (F.softplus(-student_logits) - F.softplus(-teacher_logits))
            + (1.0 - p) * (F.softplus(student_logits) - F.softplus(teacher_logits)))


def localization_distillation(student_dist: torch.Tensor, teacher_dist: torch.Tensor, weights: torch.Tensor,
                              temperature: float) -> torch.Tensor:
    """LD of distribution logits (B, N, 4, R+1) with per-point weights (B, N): ``sum(w * KL) / sum(w) * T^2``."""
    teacher_log = F.log_softmax(teacher_dist.detach() / temperature, dim=-1)
    student_log = F.log_softmax(student_dist / temperature, dim=-1)
    kl = (torch.exp(teacher_log) * (teacher_log - student_log)).sum(dim=-1).mean(dim=-1)  # (B, N)
    weights = weights.detach()
    return temperature**2 * (weights * kl).sum() / torch.clamp(weights.sum(), min=1e-6)


def quality_distillation(student_cls: torch.Tensor, teacher_cls: torch.Tensor,
                         beta: float = QUALITY_BETA) -> torch.Tensor:
    """QFL of class logits (B, N, C) against the teacher's scores, divided by its soft count of objects."""
    teacher_cls = teacher_cls.detach()
    teacher_scores = torch.sigmoid(teacher_cls)
    modulation = torch.abs(torch.sigmoid(student_cls) - teacher_scores).detach() ** beta
    objects = teacher_scores.amax(dim=-1).sum()
    return (binary_kl(student_cls, teacher_cls) * modulation).sum() / torch.clamp(objects, min=1.0)


def gfl_response_losses(student_outputs: list[torch.Tensor], teacher_outputs: list[torch.Tensor],
                        cfg: ModelConfig, temperature: float) -> dict[str, torch.Tensor]:
    """``distill_quality`` and ``distill_ld`` between raw GFL maps of the same layout ``cfg``."""
    if len(student_outputs) != len(teacher_outputs):
        raise ValueError(f"student has {len(student_outputs)} output levels, the teacher {len(teacher_outputs)}")
    for level, (s, t) in enumerate(zip(student_outputs, teacher_outputs)):
        if list(s.shape) != list(t.shape):
            raise ValueError(f"level {level}: student map {list(s.shape)} vs teacher map {list(t.shape)}; the heads "
                             f"must share strides, classes, reg_max and the input size")
    student_cls, student_dist = flatten_outputs(student_outputs, cfg)
    teacher_cls, teacher_dist = flatten_outputs([t.detach() for t in teacher_outputs], cfg)
    quality = torch.sigmoid(teacher_cls).amax(dim=-1)  # (B, N): the teacher's confidence that a box is there
    return {"distill_quality": quality_distillation(student_cls, teacher_cls),
            "distill_ld": localization_distillation(student_dist, teacher_dist, quality, temperature)}


def _standardise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero mean, unit variance per image and channel over the positions of (B, C, H, W)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps)


def pearson_feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """PKD on one level: ``MSE(standardised s, standardised t) / 2``."""
    return F.mse_loss(_standardise(student), _standardise(teacher.detach())) / 2.0


def channel_wise_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """CWD on one level: per image and channel, ``KL(softmax_positions(t/T) || softmax_positions(s/T)) * T^2``."""
    batch, channels = int(student.shape[0]), int(student.shape[1])
    s = student.reshape(batch, channels, -1) / temperature
    t = teacher.detach().reshape(batch, channels, -1) / temperature
    teacher_log, student_log = F.log_softmax(t, dim=-1), F.log_softmax(s, dim=-1)
    return temperature**2 * (torch.exp(teacher_log) * (teacher_log - student_log)).sum(dim=-1).mean()


def gfl_feature_loss(adapted_student: list[torch.Tensor], teacher_features: list[torch.Tensor], method: str,
                     temperature: float = 1.0) -> torch.Tensor:
    """The neck term summed over levels; the student maps already mapped to the teacher's widths."""
    if method not in FEATURE_METHODS:
        raise ValueError(f"feature_method: expected one of {FEATURE_METHODS}, got {method!r}")
    total = None
    for level, (s, t) in enumerate(zip(adapted_student, teacher_features)):
        if list(s.shape) != list(t.shape):
            raise ValueError(f"level {level}: adapted student feature {list(s.shape)} vs teacher {list(t.shape)}")
        term = pearson_feature_loss(s, t) if method == "pkd" else channel_wise_loss(s, t, temperature)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("gfl_feature_loss: no feature levels")
    return total


class ShapeAlign1x1(nn.Module):
    """PaddleSlim's ``ShapeAlign("1x1conv", in, out)``: one 1x1 conv with bias, named ``align_op``; Paddle's
    default initialisation (weight ~ N(0, sqrt(2 / in_channels)), bias 0)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.align_op = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=True)
        with torch.no_grad():
            self.align_op.weight.normal_(0.0, math.sqrt(2.0 / in_channels))
            self.align_op.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.align_op(x)


class FeatureAdapters(nn.Module):
    """Per neck level a 1x1 conv from the student's channels to the teacher's: ``distill.FeatureAdapters``,
    state-dict keys ``levels.{i}.align_op.weight`` / ``.bias`` as in Paddle (same shapes)."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int]) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"student neck has {len(student_channels)} levels, the teacher's {len(teacher_channels)}")
        self.levels = nn.ModuleList([ShapeAlign1x1(int(s), int(t)) for s, t in zip(student_channels, teacher_channels)])

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [adapter(x) for adapter, x in zip(self.levels, features)]


def gfl_distill_losses(
    student_outputs: list[torch.Tensor],
    teacher_outputs: list[torch.Tensor],
    student_features: list[torch.Tensor] | None,
    teacher_features: list[torch.Tensor] | None,
    adapters: FeatureAdapters | None,
    gt_boxes: torch.Tensor | np.ndarray,
    gt_classes: torch.Tensor | np.ndarray,
    cfg: ModelConfig,
    epoch: int,
    epochs: int,
    settings: GFLDistillSettings,
) -> dict[str, torch.Tensor]:
    """``DistillationObjective.gfl_losses`` for given maps: the student's head maps and neck features (with
    gradients), the frozen teacher's (read detached), the adapters (``FeatureAdapters``, trained with the student;
    required when ``settings.feature_weight > 0``, as the Paddle objective builds them exactly then; the features
    may be None otherwise), GT as for ``gfl_loss``, the 0-based ``epoch`` of ``epochs``.

    Returns ``loss = (1 - alpha) * loss_hard + alpha * (cls_weight * distill_quality + box_weight * distill_ld
    + feature_weight * distill_feat)``, ``loss_hard``, the hard terms ``loss_cls``/``loss_iou``/``loss_dfl``,
    ``distill_quality``, ``distill_ld``, ``distill_feat`` (0 without the neck term) and ``distill_alpha``: the keys
    of Paddle's ``_combined`` (its ``teacher_cache_hit_rate`` belongs to the Paddle teacher cache, not here).
    """
    hard = gfl_loss(student_outputs, gt_boxes, gt_classes, cfg)
    response = gfl_response_losses(student_outputs, teacher_outputs, cfg, settings.temperature)
    device = student_outputs[0].device
    if settings.feature_weight > 0:
        if adapters is None or student_features is None or teacher_features is None:
            raise ValueError("gfl_distill_losses: feature_weight > 0 needs the adapters and both networks' neck "
                             "features (the Paddle objective builds adapters whenever feature_weight is not 0)")
        feat = gfl_feature_loss(adapters(student_features), teacher_features, settings.feature_method,
                                settings.feature_temperature)
    else:
        feat = torch.zeros([], dtype=torch.float32, device=device)
    teacher_terms = (settings.cls_weight * response["distill_quality"] + settings.box_weight * response["distill_ld"]
                     + settings.feature_weight * feat)
    alpha = scheduled_weight(epoch, epochs, settings.alpha_start, settings.alpha_end, settings.schedule)
    losses = {"loss": (1.0 - alpha) * hard["loss"] + alpha * teacher_terms, "loss_hard": hard["loss"]}
    losses.update({key: value for key, value in hard.items() if key != "loss"})
    losses.update(response)
    losses["distill_feat"] = feat
    losses["distill_alpha"] = torch.full([], alpha, dtype=torch.float32, device=device)
    return losses
