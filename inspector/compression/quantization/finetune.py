"""Quantization-aware training: a few epochs of fine-tuning through the fake-quant model (``--method qat``)."""
from __future__ import annotations

import logging
from typing import Callable

import paddle
import paddle.nn as nn
from tqdm import tqdm

from inspector.data.loader import BatchLoader
from inspector.models import YOLODetector

log = logging.getLogger(__name__)


def finetune(model: YOLODetector, loader: BatchLoader, epochs: int, lr: float, weight_decay: float = 5e-4,
             max_steps_per_epoch: int | None = None, progress: bool = True,
             after_epoch: Callable[[int], dict[str, float]] | None = None) -> list[dict[str, float]]:
    """Quantization-aware fine-tuning: the detector's own loss through the fake-quant model.

    AdamW with a cosine decay from ``lr`` to 0; the activation observers keep updating their moving
    averages. ``quantize_model`` has folded the BatchNorms into the convolutions; any left (beside
    deformable convolutions) stay in eval mode: their statistics are the FP32 model's, and a few epochs
    of small batches would only add noise. Returns one row of mean losses per epoch; ``after_epoch(epoch)``,
    called with the model in eval mode after each epoch (1-based), adds its values to that epoch's row.
    """
    steps = len(loader) if max_steps_per_epoch is None else min(len(loader), max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"{len(loader.dataset)} training images are fewer than one batch of {loader.batch_size}")
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=lr, T_max=max(1, epochs * steps))
    trainable = [p for p in model.parameters() if not p.stop_gradient]  # not the quantization scales
    optimizer = paddle.optimizer.AdamW(learning_rate=schedule, parameters=trainable,
                                       weight_decay=weight_decay, grad_clip=nn.ClipGradByGlobalNorm(10.0))
    history = []
    for epoch in range(epochs):
        model.train()
        for layer in model.sublayers():
            if isinstance(layer, (nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D)):
                layer.eval()
        loader.set_epoch(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(total=steps, desc=f"QAT epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress,
                   dynamic_ncols=True)
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            outputs = model(paddle.to_tensor(batch.images))
            losses = model.loss(outputs, paddle.to_tensor(batch.boxes), paddle.to_tensor(batch.classes))
            loss = losses["loss"]
            if not bool(paddle.isfinite(loss)):
                raise FloatingPointError(f"QAT epoch {epoch + 1} step {step}: loss is {float(loss)}; lower --lr")
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}")
            bar.update(1)
        bar.close()
        row = {"epoch": epoch + 1, **{f"train_{k}": v / steps for k, v in sums.items()}}
        log.info("QAT epoch %d: loss %.4f", epoch + 1, row["train_loss"])
        if after_epoch is not None:
            model.eval()
            row.update(after_epoch(epoch + 1))
        history.append(row)
    model.eval()
    return history
