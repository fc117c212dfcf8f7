"""Which task trains at each step. One task per optimiser step, as in MT-DNN and DeepPavlov.

- proportional: p_i proportional to the task's number of batches (every example seen about once an epoch)
- uniform:      p_i = 1 / T
- annealed:     DeepPavlov's anneal, p_i ~ n_i ** a with a = 1 - 0.8 * epoch / epochs
- temperature:  p_i ~ n_i ** (1 / T), n_i the task's training examples (jiant, T5, mT5): T = 1 is
                proportional, a large T tends to uniform; small tasks get more steps without being
                repeated as often as under uniform
- round_robin:  tasks in config order, one batch each
- minbert_round_robin: Eq. (1) of the minBERT report, see `minbert_sequence`
- deeppavlov:   DeepPavlov 1.7's epoch of random draws, exhausted tasks skipped, see `DeepPavlovSchedule`
"""

from __future__ import annotations

import bisect
import math
import random

import numpy as np

SCHEDULES = ("proportional", "uniform", "annealed", "temperature", "round_robin", "minbert_round_robin")  # TaskSchedule's


def minbert_sequence(batches_per_task: dict[str, int], keep_remainder: bool = False) -> tuple[list[str], dict[str, float]]:
    """One epoch of minBERT's schedule and its loss weights.

    B_min batches of the smallest task; R_i = floor(B_i / B_min). Each of the B_min rounds is one batch
    of the smallest task, then R_i batches of each other task (config order); task i's loss is weighted
    by 1 / R_i. The floor drops B_i - R_i * B_min batches of task i an epoch (the report's footnote);
    with `keep_remainder` those batches are spread evenly over the rounds instead, so every example is
    seen once an epoch.
    """
    smallest = min(batches_per_task, key=batches_per_task.get)
    b_min = batches_per_task[smallest]
    ratio = {t: n // b_min for t, n in batches_per_task.items()}
    others = [t for t in batches_per_task if t != smallest]
    sequence = []
    for k in range(b_min):
        sequence.append(smallest)
        for t in others:
            extra = 0
            if keep_remainder:
                left = batches_per_task[t] - ratio[t] * b_min
                extra = (k + 1) * left // b_min - k * left // b_min
            sequence += [t] * (ratio[t] + extra)
    return sequence, {t: 1.0 / r for t, r in ratio.items()}


class TaskSchedule:
    def __init__(self, kind: str, batches_per_task: dict[str, int], epochs: float, seed: int,
                 keep_remainder: bool = False, temperature: float = 1.0,
                 examples_per_task: dict[str, int] | None = None):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind = kind
        self.tasks = list(batches_per_task)
        self.sizes = np.array([batches_per_task[t] for t in self.tasks], dtype=float)
        self.temperature = temperature
        # temperature sampling is defined on dataset sizes, which differ from batch counts when tasks
        # have their own batch_size
        examples = examples_per_task or batches_per_task
        self.examples = np.array([examples[t] for t in self.tasks], dtype=float)
        self.epochs = epochs
        self.rng = np.random.default_rng(seed)
        self.sequence, self.weights = None, {}
        if kind == "minbert_round_robin":
            self.sequence, self.weights = minbert_sequence(batches_per_task, keep_remainder)

    @property
    def epoch_aligned(self) -> bool:
        """True when an epoch is a fixed sequence of batches, so batch streams restart with each epoch."""
        return self.sequence is not None

    def weight(self, task: str) -> float:
        return self.weights.get(task, 1.0)

    def probabilities(self, epoch: int) -> np.ndarray:
        if self.kind == "uniform":
            p = np.ones_like(self.sizes)
        elif self.kind == "annealed":
            p = self.sizes ** (1.0 - 0.8 * epoch / max(self.epochs, 1))
        elif self.kind == "temperature":
            p = self.examples ** (1.0 / self.temperature)
        else:
            p = self.sizes.copy()
        return p / p.sum()

    def expected_steps(self, epoch: int, steps: int) -> dict[str, float]:
        """How many of an epoch's `steps` each task is expected to train (exact for the fixed orders)."""
        if self.sequence is not None:
            cycle = {t: self.sequence.count(t) / len(self.sequence) for t in self.tasks}
            return {t: steps * share for t, share in cycle.items()}
        if self.kind == "round_robin":
            return {t: steps / len(self.tasks) for t in self.tasks}
        return dict(zip(self.tasks, (steps * self.probabilities(epoch)).tolist(), strict=True))

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def task_for(self, step: int, epoch: int) -> str:
        if self.sequence is not None:
            return self.sequence[step % len(self.sequence)]
        if self.kind == "round_robin":
            return self.tasks[step % len(self.tasks)]
        return self.tasks[int(self.rng.choice(len(self.tasks), p=self.probabilities(epoch)))]


class BatchStream:
    """Endless batches of one task's training features, reshuffled each time the data runs out."""

    def __init__(self, n_examples: int, batch_size: int, make_batches, seed: int, drop_last: bool = False):
        self.n = n_examples
        self.batch_size = batch_size
        self.make_batches = make_batches  # rng -> list of index batches
        self.rng = random.Random(seed)
        self.drop_last = drop_last  # DeepPavlov's epoch: a pass without its partial batch
        self.queue: list[list[int]] = []

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss], "queue": self.queue}

    def set_state(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.queue = [list(b) for b in state["queue"]]

    def restart(self) -> None:
        """Drop what is left of this pass; the next batch starts a freshly shuffled one."""
        self.queue = []

    def next(self) -> list[int]:
        if not self.queue:
            batches = self.make_batches(self.rng)
            if self.drop_last:
                batches = [b for b in batches if len(b) == self.batch_size]
            self.queue = batches[::-1]
        return self.queue.pop()


SAMPLING_MODES = ("plain", "uniform", "anneal")


class DeepPavlovSchedule:
    """DeepPavlov 1.7's multitask epoch, as `MultiTaskIterator.gen_batches` (deeppavlov/dataset_iterators/
    multitask_iterator.py) draws it: an epoch is `draws_per_epoch` draws; each draw picks a task (`plain`:
    p_i ~ the task's training examples; `uniform`; `anneal`: p_i ~ n_i ** (1 - 0.8 * epoch / epochs)), and
    the task trains its next batch if it has a full one left this epoch, otherwise the draw is skipped
    (`SingleTaskBatchGenerator` returns Nones, which the iterator does not yield). Each epoch starts every
    task's data afresh and drops its last partial batch, so a task trains at most `steps_per_task[t]`
    steps an epoch, and epochs differ in length.

    One draw here is one optimiser step of `gradient_accumulation_steps` batches of one task (DeepPavlov
    means to re-draw the task every `gradient_accumulation_steps` batches); `steps_per_task` counts
    such steps. The whole plan is drawn up front from the seed, so a step's task and epoch are pure
    functions of the step: resuming needs no generator state, only the config that made the plan.
    """

    epoch_aligned = True  # every epoch restarts each task's batches

    def __init__(self, sampling: str, examples_per_task: dict[str, int], steps_per_task: dict[str, int],
                 draws_per_epoch: int, epochs: float, seed: int, min_steps: int = 0):
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown DeepPavlov sampling mode {sampling!r}")
        if draws_per_epoch < 1 or not any(steps_per_task.values()):
            raise ValueError("an epoch needs at least one draw and one task with a full batch")
        self.kind = "deeppavlov"
        self.sampling = sampling
        self.tasks = list(examples_per_task)
        self.examples = np.array([examples_per_task[t] for t in self.tasks], dtype=float)
        self.capacity = np.array([steps_per_task[t] for t in self.tasks])
        self.draws_per_epoch = draws_per_epoch
        self.epochs = epochs
        # DeepPavlov anneals over its configured num_train_epochs, whatever max_batches cuts
        self.anneal_epochs = epochs
        rng = np.random.default_rng(seed)
        self.plan: list[np.ndarray] = []  # per epoch: the task index of each step
        self.starts = [0]  # first step of each epoch, and the end of the last one planned
        while len(self.plan) < math.ceil(epochs) or self.starts[-1] < min_steps:
            self.plan.append(self._epoch(rng, len(self.plan)))
            self.starts.append(self.starts[-1] + len(self.plan[-1]))

    def _epoch(self, rng: np.random.Generator, epoch: int) -> np.ndarray:
        draws = rng.choice(len(self.tasks), size=self.draws_per_epoch, p=self.probabilities(epoch))
        keep = np.zeros(len(draws), dtype=bool)
        for i, capacity in enumerate(self.capacity):
            keep[np.flatnonzero(draws == i)[:capacity]] = True  # later draws of an exhausted task are skipped
        return draws[keep]

    def probabilities(self, epoch: int) -> np.ndarray:
        if self.sampling == "uniform":
            p = np.ones_like(self.examples)
        elif self.sampling == "anneal":
            p = self.examples ** (1.0 - 0.8 * epoch / self.anneal_epochs)
        else:
            p = self.examples.copy()
        return p / p.sum()

    def total_steps(self, epochs: float) -> int:
        """Steps in `epochs` epochs; a fraction of an epoch is that share of its steps."""
        whole = int(epochs)
        return self.starts[whole] + (round((epochs - whole) * len(self.plan[whole])) if epochs > whole else 0)

    def epoch_of(self, step: int) -> int:
        return bisect.bisect_right(self.starts, step) - 1

    def weight(self, task: str) -> float:
        return 1.0

    def expected_steps(self, epoch: int, steps: int) -> dict[str, float]:
        """The steps each task trains in the first `steps` steps of `epoch` (exact: the plan is drawn)."""
        counts = np.bincount(self.plan[epoch][:steps], minlength=len(self.tasks))
        return dict(zip(self.tasks, counts.astype(float).tolist(), strict=True))

    def state(self) -> dict:
        return {}  # the plan is a function of the config and seed, which resuming checks

    def set_state(self, state: dict) -> None:
        pass

    def task_for(self, step: int, epoch: int) -> str:
        return self.tasks[int(self.plan[epoch][step - self.starts[epoch]])]
