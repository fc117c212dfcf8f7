"""An exponential moving average of the weights (Polyak averaging), evaluated and saved instead of the raw
weights when `training.ema_decay` is set.

Why a multi-task model may want it: a step trains one task, so the shared encoder's weights move toward
that task's loss and then toward the next one's; an average over a few hundred steps cancels that
task-to-task swing, which a single-task run does not have.

The average is debiased as Adam's moments are (TensorFlow's zero_debias): the shadow s_n = d s_(n-1) +
(1 - d) w_n starts at zero and the average is s_n / (1 - d^n), so it holds no trace of the pretrained
weights and spans about the last 1 / (1 - d) steps from the first ones on (a warm-up such as
min(d, (1 + n) / (10 + n)) would instead cap the window at about n / 10 steps until n = 9 / (1 - d), longer
than a short fine-tuning run, and make the decay a user sets do nothing there). Kept directly as the
average: a_n = a_(n-1) + (w_n - a_(n-1)) (1 - d) / (1 - d^n).

torch's AveragedModel asks the device whether it has averaged yet at every update (a host read per step,
which a GPU step must not have: tests/test_device.py); this keeps the count on the host, in its state_dict
layout (`module.*`, `n_averaged`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage(nn.Module):
    """A copy of `model` whose weights follow `model`'s by `update_parameters(model)` after each optimiser
    step; its buffers (position ids, class weights: nothing trained) are copied as they are. Its
    `state_dict()` is what exact resume saves and loads."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.updates = 0  # on the host: the decay of the next update needs no read from the device
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=next(model.parameters()).device))

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        mine = list(self.module.parameters())
        theirs = [p.detach() for p in model.parameters()]
        n = self.updates + 1
        torch._foreach_lerp_(mine, theirs, (1.0 - self.decay) / (1.0 - self.decay ** n))  # 1 at n = 1: a copy
        for b_mine, b_theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            b_mine.copy_(b_theirs)
        self.updates += 1
        self.n_averaged.fill_(self.updates)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict, assign)
        self.updates = int(self.n_averaged)  # at resume, once
        return result
