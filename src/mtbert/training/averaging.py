"""An exponential moving average of the weights (Polyak averaging), evaluated and saved instead of the raw
weights when `training.ema_decay` is set.

Why a multi-task model may want it: a step trains one task, so the shared encoder's weights move toward
that task's loss and then toward the next one's; an average over a few hundred steps cancels that
task-to-task swing, which a single-task run does not have. The average is torch's AveragedModel; the decay
warms up as TensorFlow's ExponentialMovingAverage with num_updates does, min(decay, (1 + n) / (10 + n)),
so that an early evaluation does not read an average still made mostly of the pretrained weights.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def _warm_ema(decay: float):
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # a tensor, not a float: no host read inside the step (num_averaged lives on the model's device)
        d = torch.clamp((1.0 + num_averaged) / (10.0 + num_averaged), max=decay).to(averaged[0].dtype)
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1.0 - d))
    return update


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """A copy of `model` whose weights follow `model`'s by `update_parameters(model)` after each optimiser
    step; its buffers (position ids, class weights: nothing trained) are copied as they are. Its
    `state_dict()` (the copy's weights and the count of updates) is what exact resume saves and loads."""
    return AveragedModel(model, multi_avg_fn=_warm_ema(decay), use_buffers=False)
