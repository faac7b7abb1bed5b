"""The twin's PP-YOLO loss on CUDA tensors equals the same loss on the CPU (values and gradients).

Why: the twin trains on a lent GPU; the loss builds its targets with numpy on the CPU and must move them to the
outputs' device (a target left on the CPU would raise, one on the wrong device silently cost a copy per step).
CPU parity with Paddle is ``test_torch_twin_yolo_loss.py``; this closes the chain to CUDA. Pure torch: run it in a
torch venv with a GPU, under pytest or as a script (``python tests/tools/test_torch_twin_yolo_loss_cuda.py``, no
pytest or plugins needed); it skips without torch or CUDA.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

try:
    import pytest
except ImportError:  # the GPU machine may lack pytest: run as a script (see __main__)
    pytest = None

if pytest is not None:
    torch = pytest.importorskip("torch")
    pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
else:
    import torch


def check_cuda_equals_cpu() -> None:
    from inspector.models.config import ModelConfig
    from tools.torch_twin.yolo_loss import LOSS_KEYS, channels_per_anchor, yolo_loss

    cfg = ModelConfig(arch="mbv3-small", input_size=96, head="yolo", input_mode="gray-diff-s2d", num_classes=6)
    rng = np.random.default_rng(3)
    channels = cfg.num_anchors * channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    maps = [(rng.standard_normal((2, channels, 96 // s, 96 // s)) * 1.5).astype(np.float32) for s in cfg.strides]
    gt_boxes = np.array([[[8, 10, 20, 40], [50, 60, 90, 70], [0, 0, 0, 0]],
                         [[30, 30, 44, 41], [0, 0, 0, 0], [0, 0, 0, 0]]], dtype=np.float32)
    gt_classes = np.array([[1, 0, -1], [4, -1, -1]], dtype=np.int64)
    results = {}
    for device in ("cpu", "cuda"):
        outputs = [torch.tensor(m, device=device, requires_grad=True) for m in maps]
        # GT as tensors on the same device, as a training loop passes them.
        losses = yolo_loss(outputs, torch.as_tensor(gt_boxes, device=device),
                           torch.as_tensor(gt_classes, device=device), cfg)
        losses["loss"].backward()
        assert all(value.device.type == device for value in losses.values())
        results[device] = ({key: value.item() for key, value in losses.items()},
                           [o.grad.cpu().numpy() for o in outputs])
    (cpu_losses, cpu_grads), (cuda_losses, cuda_grads) = results["cpu"], results["cuda"]
    assert sorted(cuda_losses) == sorted(LOSS_KEYS + ("loss",))
    for key, value in cpu_losses.items():
        np.testing.assert_allclose(cuda_losses[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
    for level, (cpu_grad, cuda_grad) in enumerate(zip(cpu_grads, cuda_grads)):
        np.testing.assert_allclose(cuda_grad, cpu_grad, rtol=1e-4, atol=1e-6, err_msg=f"grad level {level}")


def test_cuda_equals_cpu() -> None:
    check_cuda_equals_cpu()


if __name__ == "__main__":  # no pytest needed (nor the project's pytest plugins)
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    check_cuda_equals_cpu()
    print("twin yolo_loss: CUDA equals CPU")
