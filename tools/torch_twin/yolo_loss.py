"""PyTorch mirror of the PP-YOLO training loss, ``inspector/models/loss.py::yolo_loss``.

Why: the twin trains the YOLO-head detector on a GPU machine without paddle (see ``tools/torch_twin/__init__.py``);
weights trained on any other objective would not be the weights Paddle would have trained. So this is the Paddle
loss term for term and gradient for gradient: the same target assignment (best anchor plus every anchor whose
shape IoU exceeds ``cfg.anchor_match_threshold``, the better-fitting box winning a shared slot), the same
grid-sensitive decoding with ``cfg.scale_x_y``, the same scale weights, IoU loss, IoU-aware branch, objectness
with the ignore threshold and per-class sigmoid BCE, the same per-image sums averaged over the batch, and the same
returned keys (``LOSS_KEYS`` and their sum ``loss``). The module docstring of ``inspector/models/loss.py`` says
what each term is and why.

The numpy parts are not copies: the target assignment (``build_targets``, ``valid_gt_mask``, ``LevelTargets``)
comes from the paddle-free ``inspector/models/yolo_targets.py`` and the channel layout and decoding constants
from ``inspector/models/head_layout.py``, both used by the Paddle loss too. ``head.split_level`` and
``postprocess.decode_level_boxes`` are paddle graph code, mirrored here in torch;
``tests/tools/test_torch_twin_yolo_loss.py`` compares them (and the whole loss, with gradients) with the originals.
Targets are built with numpy on the CPU and moved to the outputs' device, so the loss runs on CPU or CUDA tensors.
Only torch, numpy and the paddle-free parts of ``inspector`` are imported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from inspector.models.anchors import Anchor
from inspector.models.config import ModelConfig
from inspector.models.head_layout import IOU, MAX_LOG_SCALE, OBJ, TH, TW, TX, TY, channels_per_anchor
from inspector.models.yolo_targets import LevelTargets, build_targets, valid_gt_mask  # noqa: F401 (re-exported)
from tools.torch_twin.model import as_numpy, intersection_and_union, level_constant_tensors

LOSS_KEYS = ("loss_xy", "loss_wh", "loss_iou", "loss_iou_aware", "loss_obj", "loss_cls")


@dataclass
class LevelPrediction:
    """One level's raw map split into its fields; every field is (B, A, H*W), ``cls`` (B, A, H*W, C)."""

    tx: torch.Tensor
    ty: torch.Tensor
    tw: torch.Tensor
    th: torch.Tensor
    obj: torch.Tensor
    iou: torch.Tensor | None  # None without the iou-aware channel
    cls: torch.Tensor


def split_level(output: torch.Tensor, num_anchors: int, num_classes: int, iou_aware: bool) -> LevelPrediction:
    """``head.split_level``: a raw map (B, A*K, H, W) split into its fields, H x W cells flattened row-major."""
    per_anchor = channels_per_anchor(num_classes, iou_aware)
    grouped = output.reshape(output.shape[0], num_anchors, per_anchor, -1)  # (B, A, K, H*W)
    first_class = 6 if iou_aware else 5
    return LevelPrediction(
        tx=grouped[:, :, TX],
        ty=grouped[:, :, TY],
        tw=grouped[:, :, TW],
        th=grouped[:, :, TH],
        obj=grouped[:, :, OBJ],
        iou=grouped[:, :, IOU] if iou_aware else None,
        cls=grouped[:, :, first_class:].permute(0, 1, 3, 2),
    )


def decode_level_boxes(
    prediction: LevelPrediction, output: torch.Tensor, anchors: list[Anchor], stride: int, scale_x_y: float
) -> torch.Tensor:
    """``postprocess.decode_level_boxes``: boxes (B, A, H*W, 4) xyxy input pixels, grid-sensitive centres."""
    offsets_t, half_anchors_t = level_constant_tensors(int(output.shape[2]), int(output.shape[3]),
                                                       tuple(map(tuple, anchors)), stride, scale_x_y,
                                                       str(output.device))
    xy = torch.stack([prediction.tx, prediction.ty], dim=2)
    wh = torch.stack([prediction.tw, prediction.th], dim=2)
    centres = torch.sigmoid(xy) * (scale_x_y * stride) + offsets_t
    half_sizes = torch.exp(torch.clamp(wh, max=MAX_LOG_SCALE)) * half_anchors_t
    corners = torch.cat([centres - half_sizes, centres + half_sizes], dim=2)  # (B, A, 4, H*W)
    return corners.permute(0, 1, 3, 2)


def soft_bce_with_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Elementwise BCE for soft targets in [0, 1] minus the target's own entropy (``loss.soft_bce_with_logits``):
    the same gradient as BCE, exactly 0 when sigmoid(logits) equals the target."""
    eps = 1e-12  # only keeps log() finite; 0 * log(eps) = 0 at hard targets
    entropy = -(targets * torch.log(torch.clamp(targets, min=eps)) + (1.0 - targets) * torch.log(
        torch.clamp(1.0 - targets, min=eps)
    ))
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") - entropy


def aligned_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU of corresponding xyxy boxes (..., 4) -> (...), differentiable."""
    inter, union = intersection_and_union(boxes_a, boxes_b)
    return inter / (union + 1e-9)


def best_gt_iou(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
    """For predicted boxes (B, N, 4), the largest IoU with any valid GT box (B, M, 4) -> (B, N)."""
    iou = aligned_iou(pred_boxes.unsqueeze(2), gt_boxes.unsqueeze(1))  # (B, N, M)
    return (iou * gt_valid.unsqueeze(1)).amax(dim=2)


def _per_image_mean(term: torch.Tensor) -> torch.Tensor:
    """Sum over everything but the batch axis, then average over the batch."""
    return term.reshape(term.shape[0], -1).sum(dim=1).mean()


def yolo_loss(
    outputs: list[torch.Tensor],
    gt_boxes: torch.Tensor | np.ndarray,
    gt_classes: torch.Tensor | np.ndarray,
    cfg: ModelConfig,
) -> dict[str, torch.Tensor]:
    """The PP-YOLO loss of raw head maps (B, A*K, H, W) per level against padded GT (B, M, 4) xyxy input pixels /
    (B, M) class ids (-1 = padding): ``{"loss_xy", "loss_wh", "loss_iou", "loss_iou_aware", "loss_obj",
    "loss_cls", "loss"}``, 0-d float32 tensors on the outputs' device, ``loss`` their sum."""
    device = outputs[0].device
    gt_boxes_np = as_numpy(gt_boxes).astype(np.float32).reshape(len(outputs[0]), -1, 4)
    gt_classes_np = as_numpy(gt_classes).astype(np.int64).reshape(len(outputs[0]), -1)
    grid_sizes = [(int(o.shape[2]), int(o.shape[3])) for o in outputs]
    targets = build_targets(gt_boxes_np, gt_classes_np, grid_sizes, cfg)
    gt_valid = torch.from_numpy(valid_gt_mask(gt_boxes_np, gt_classes_np).astype(np.float32)).to(device)
    gt_boxes_t = torch.from_numpy(gt_boxes_np).to(device)
    shift = (cfg.scale_x_y - 1.0) / 2.0

    terms: dict[str, list[torch.Tensor]] = {key: [] for key in LOSS_KEYS}
    for output, level_targets, anchors, stride in zip(outputs, targets, cfg.anchors, cfg.strides):
        t = {name: torch.from_numpy(value).to(device) for name, value in vars(level_targets).items()}
        positive, scale = t["positive"], t["scale"]
        prediction = split_level(output, cfg.num_anchors, cfg.num_classes, cfg.iou_aware)
        pred_boxes = decode_level_boxes(prediction, output, anchors, stride, cfg.scale_x_y)

        target_x = (t["offset_x"] + shift) / cfg.scale_x_y  # what sigmoid(tx) must be for the exact centre
        target_y = (t["offset_y"] + shift) / cfg.scale_x_y
        loss_xy = soft_bce_with_logits(prediction.tx, target_x) + soft_bce_with_logits(prediction.ty, target_y)
        terms["loss_xy"].append(_per_image_mean(loss_xy * scale * positive))
        loss_wh = torch.abs(prediction.tw - t["log_w"]) + torch.abs(prediction.th - t["log_h"])
        terms["loss_wh"].append(_per_image_mean(loss_wh * scale * positive))

        iou = aligned_iou(pred_boxes, t["boxes"])
        terms["loss_iou"].append(cfg.iou_loss_weight * _per_image_mean((1.0 - iou**2) * scale * positive))
        if prediction.iou is not None:
            loss_iou_aware = soft_bce_with_logits(prediction.iou, iou.detach())
            terms["loss_iou_aware"].append(cfg.iou_aware_loss_weight * _per_image_mean(loss_iou_aware * positive))

        if gt_boxes_np.shape[1] > 0:
            flat_boxes = pred_boxes.detach().reshape(pred_boxes.shape[0], -1, 4)
            overlap = best_gt_iou(flat_boxes, gt_boxes_t, gt_valid).reshape(positive.shape)
            not_ignored = (overlap <= cfg.ignore_threshold).to(torch.float32)
        else:
            not_ignored = torch.ones_like(positive)
        loss_obj = F.binary_cross_entropy_with_logits(prediction.obj, positive, reduction="none")
        terms["loss_obj"].append(_per_image_mean(loss_obj * (positive + (1.0 - positive) * not_ignored)))

        loss_cls = F.binary_cross_entropy_with_logits(prediction.cls, t["classes"], reduction="none").sum(dim=-1)
        terms["loss_cls"].append(_per_image_mean(loss_cls * positive))

    zero = torch.zeros((), dtype=torch.float32, device=device)
    losses = {key: torch.stack(values).sum() if values else zero for key, values in terms.items()}
    losses["loss"] = torch.stack([losses[key] for key in LOSS_KEYS]).sum()
    return losses
