"""What training does when the target metric stops improving: drop the learning rate (DeepPavlov's
learning_rate_drop_patience / _div, floored at min_lr, optionally after reloading the best model) and stop
early (patience). One object, told every evaluation's target; its state rides in the checkpoint."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("mtbert")


@dataclass(frozen=True)
class Verdict:
    """What one evaluation's target means: a new best (save the model), a learning-rate drop is due,
    training should stop."""
    improved: bool
    drop: bool
    stop: bool


class Plateau:
    """Early stopping after `patience` evaluations without improvement (0: never), and a learning-rate drop
    after `drop_patience` (0: never). `once_per_plateau` is DeepPavlov's torch_model: it drops when the
    impatience *equals* the patience, so one plateau drops once however long it lasts (and the rate is
    floored at min_lr rather than left); otherwise mtbert drops again every `drop_patience` evaluations."""

    def __init__(self, patience: int = 0, drop_patience: int = 0, once_per_plateau: bool = False,
                 reload_best: bool = False):
        self.patience, self.drop_patience = patience, drop_patience
        self.once_per_plateau, self.reload_best = once_per_plateau, reload_best
        self.best, self.bad_evals = -math.inf, 0
        self.best_for_drop, self.bad_for_drop = -math.inf, 0

    def baseline(self, target: float) -> None:
        """The untrained model's score (validate_first): the one to beat."""
        self.best = self.best_for_drop = target

    def update(self, target: float) -> Verdict:
        improved = target > self.best
        if improved:
            self.best, self.bad_evals = target, 0
        else:
            self.bad_evals += 1
        drop = False
        if self.drop_patience:
            if target > self.best_for_drop:
                self.best_for_drop, self.bad_for_drop = target, 0
            else:
                self.bad_for_drop += 1
                if self.bad_for_drop == self.drop_patience:
                    drop = True
                    if not self.once_per_plateau:
                        self.bad_for_drop = 0
        return Verdict(improved, drop, bool(self.patience) and self.bad_evals >= self.patience)

    def drop_lr(self, lr_schedule, reload: Callable[[], bool]) -> bool:
        """Drop the rate (after `reload()` puts the best model back, with reload_best); False when min_lr
        forbids the drop."""
        if self.reload_best:
            reload()
        dropped = lr_schedule.drop(floor=self.once_per_plateau)
        if dropped:
            log.info("no improvement for %d evaluations: learning rate divided by %g", self.drop_patience,
                     lr_schedule.div)
        return dropped

    # the keys trainer.json has always had for this state, so older checkpoints resume
    def state(self) -> dict:
        return {"best": self.best, "bad_evals": self.bad_evals, "best_for_drop": self.best_for_drop,
                "bad_for_drop": self.bad_for_drop}

    def set_state(self, state: dict) -> None:
        self.best, self.bad_evals = state["best"], state["bad_evals"]
        self.best_for_drop, self.bad_for_drop = state["best_for_drop"], state["bad_for_drop"]
