"""The torch twin's weight average (``tools/torch_twin/train.py::EMA``): what ``inspector.training.ema.ModelEMA``
keeps, ``decay * (1 - exp(-n / ramp))`` of the average and the rest of the new weights after update ``n``, float
buffers (BatchNorm statistics) averaged too, integer ones (batches seen) copied; the validated and saved weights
are these. Runs in the interpreter of ``TORCH_TWIN_PYTHON``.
"""
from __future__ import annotations

from twin_harness import run_torch_side, torch_python

TORCH_SIDE = r'''
import copy, math
import torch
from tools.torch_twin.train import EMA

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
ema = EMA(model, 0.9998, ramp_steps=5)
expected = {name: value.clone() for name, value in model.state_dict().items()}
for update in range(1, 8):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    model(torch.randn(2, 3, 8, 8))  # train mode: BatchNorm's statistics and batch count move
    ema.update(model)
    decay = 0.9998 * (1 - math.exp(-update / 5))
    for name, value in model.state_dict().items():
        expected[name] = expected[name] * decay + value * (1 - decay) if value.dtype.is_floating_point else value
for name, value in ema.model.state_dict().items():
    assert torch.allclose(value, expected[name], rtol=1e-6, atol=1e-7), name
assert int(ema.model.state_dict()["1.num_batches_tracked"]) == 7
assert not any(p.requires_grad for p in ema.model.parameters())
print("ok")
'''


def test_the_twin_ema_averages_weights_and_float_buffers_as_the_paddle_trainer_does():
    run_torch_side(torch_python(), ["-c", TORCH_SIDE])
