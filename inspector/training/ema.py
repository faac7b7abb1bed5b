"""Exponential moving average of model weights (evaluated and exported instead of the raw weights).

The decay ramps up from 0 so that early, poorly-trained weights are forgotten quickly: with a from-scratch
detector on ~1,000 images the raw weights move a lot in the first epochs.
"""
from __future__ import annotations

import math

import paddle


class ModelEMA:
    def __init__(self, model: paddle.nn.Layer, decay: float = 0.9998, ramp_steps: int = 2000):
        self.decay = decay
        self.ramp_steps = ramp_steps
        self.updates = 0
        # BatchNorm running statistics are buffers: averaged too, they are part of the state dict.
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.ramp_steps))

    @paddle.no_grad()
    def update(self, model: paddle.nn.Layer) -> None:
        self.updates += 1
        d = self.current_decay()
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if paddle.is_floating_point(value):
                shadow.set_value(shadow * d + value.detach() * (1.0 - d))
            else:  # integer buffers (e.g. counters) are copied
                shadow.set_value(value.detach())

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay, "ramp_steps": self.ramp_steps, "shadow": self.shadow}

    def set_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
        self.ramp_steps = int(state["ramp_steps"])
        for name, value in state["shadow"].items():
            self.shadow[name].set_value(value)

    def copy_to(self, model: paddle.nn.Layer) -> None:
        model.set_state_dict(self.shadow)
