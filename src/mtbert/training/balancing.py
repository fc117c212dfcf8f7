"""Learned loss weights: homoscedastic uncertainty (Kendall, Gal and Cipolla 2018, "Multi-Task Learning
Using Uncertainty to Weigh Losses for Scene Geometry and Semantics").

Each task i has a learned s_i = log(sigma_i^2), trained with the model. Its loss L_i becomes

    regression (a Gaussian likelihood):        0.5 * exp(-s_i) * L_i + 0.5 * s_i
    classification, choice, tagging (softmax): exp(-s_i) * L_i + 0.5 * s_i

so a task whose loss stays high (noisy, or hard for the shared encoder) is weighted down, and the
0.5 * s_i term keeps the weights from collapsing to zero. The s_i live in the model (`model.balancer`),
so a checkpoint carries them and their AdamW state and a resumed run continues exactly; they are not
part of the saved model, which needs no weights at inference.
"""

from __future__ import annotations

import torch
from torch import nn

from mtbert.tasks import registry


class UncertaintyWeights(nn.Module):
    def __init__(self, task_types: dict[str, str]):
        super().__init__()
        self.task_types = dict(task_types)
        # s_i = 0: every task starts at weight 1, as without balancing
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in task_types})

    def scale(self, task: str) -> float:
        """The factor in front of L_i (0.5 for regression's Gaussian, 1 otherwise)."""
        return 0.5 if registry.get(self.task_types[task]).gaussian else 1.0

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[task]
        return self.scale(task) * torch.exp(-s) * loss + 0.5 * s

    def weights(self) -> dict[str, float]:
        """The effective weight of each task's loss right now, for the log."""
        return {t: self.scale(t) * float(torch.exp(-s.detach())) for t, s in self.log_vars.items()}
