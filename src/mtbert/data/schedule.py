"""Which task trains at each step. One task per optimiser step, as in MT-DNN and DeepPavlov.

- proportional: p_i proportional to the task's number of batches (every example seen about once an epoch)
- uniform:      p_i = 1 / T
- annealed:     DeepPavlov's anneal, p_i ~ n_i ** a with a = 1 - 0.8 * epoch / epochs
- round_robin:  tasks in config order, one batch each
"""

from __future__ import annotations

import random

import numpy as np

SCHEDULES = ("proportional", "uniform", "annealed", "round_robin")


class TaskSchedule:
    def __init__(self, kind: str, batches_per_task: dict[str, int], epochs: float, seed: int):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind = kind
        self.tasks = list(batches_per_task)
        self.sizes = np.array([batches_per_task[t] for t in self.tasks], dtype=float)
        self.epochs = epochs
        self.rng = np.random.default_rng(seed)

    def probabilities(self, epoch: int) -> np.ndarray:
        if self.kind == "uniform":
            p = np.ones_like(self.sizes)
        elif self.kind == "annealed":
            p = self.sizes ** (1.0 - 0.8 * epoch / max(self.epochs, 1))
        else:
            p = self.sizes.copy()
        return p / p.sum()

    def task_for(self, step: int, epoch: int) -> str:
        if self.kind == "round_robin":
            return self.tasks[step % len(self.tasks)]
        return self.tasks[int(self.rng.choice(len(self.tasks), p=self.probabilities(epoch)))]


class BatchStream:
    """Endless batches of one task's training features, reshuffled each time the data runs out."""

    def __init__(self, n_examples: int, batch_size: int, make_batches, seed: int):
        self.n = n_examples
        self.batch_size = batch_size
        self.make_batches = make_batches  # rng -> list of index batches
        self.rng = random.Random(seed)
        self.queue: list[list[int]] = []

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def next(self) -> list[int]:
        if not self.queue:
            self.queue = self.make_batches(self.rng)[::-1]
        return self.queue.pop()
