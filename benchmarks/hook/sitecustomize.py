"""Observation hooks for the benchmarks that run DeepPavlov and mtbert as subprocesses (vs_deeppavlov.py,
dp_side_by_side.py). Not part of mtbert.

Python imports `sitecustomize` at start-up from the first folder on sys.path that has one; the benchmarks
put this folder first on PYTHONPATH and set VSDP_TIMING (the JSON file to write) and VSDP_TOOL
(deeppavlov or mtbert). Every hook only wraps a function to time it or to count what passes through it:
arguments and results are passed on untouched, so the tool behaves exactly as without the hook.

DeepPavlov (1.7.0, deeppavlov/core/trainers/nn_trainer.py and dataset_iterators/multitask_iterator.py):
- `NNTrainer.train_on_batches`: wall time of the training loop, minus the time in `_log` and `_validate`;
  the trainer's own counters `examples`, `train_batches_seen`, `epoch`.
- `MultiTaskIterator.gen_batches`: the generator the training loop iterates (one per epoch) is wrapped,
  and each batch it yields is counted under the task whose slot holds examples (the others are None);
  `epochs` lists, per epoch, the draws it made (`steps_per_epoch`), the batches and examples it yielded
  per task, and the order of the tasks. Generators made elsewhere (`_log`'s training-metric batches,
  validation) are not counted: they train nothing.
mtbert: `prepare_data` (reading and tokenising once, before the loop) is timed.
"""

import json
import os
import sys
import time

_OUT, _TOOL = os.environ.get("VSDP_TIMING"), os.environ.get("VSDP_TOOL")
_ACC = {}


def _dump(**kw):
    _ACC.update(kw)
    with open(_OUT + ".tmp", "w") as f:
        json.dump(_ACC, f)
    os.replace(_OUT + ".tmp", _OUT)


def _timed(fn, key):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _ACC[key] = _ACC.get(key, 0.0) + time.perf_counter() - t
    return wrapper


def _counted_epoch(iterator, batches):
    """Pass the training loop's batches on, counting each under its task."""
    tasks = list(iterator.task_iterators)
    epoch = {"draws": iterator.steps_per_epoch, "batches": dict.fromkeys(tasks, 0),
             "examples": dict.fromkeys(tasks, 0), "order": []}
    _ACC.setdefault("epochs", []).append(epoch)
    try:
        for x, y in batches:
            # x: one tuple per example, holding each task's input in task order (None for the tasks not
            # drawn); a single task's config gets the inputs themselves (MultiTaskIterator._transform_before_yielding)
            rows = [row if len(tasks) > 1 else (row,) for row in x]
            filled = [i for i in range(len(tasks)) if any(row[i] is not None for row in rows)]
            for i in filled:
                epoch["batches"][tasks[i]] += 1
                epoch["examples"][tasks[i]] += sum(row[i] is not None for row in rows)
            epoch["order"].append("+".join(tasks[i] for i in filled))
            yield x, y
        epoch["complete"] = True  # the loop ran to the epoch's end (not cut by max_batches or patience)
    finally:
        epoch.setdefault("complete", False)
        _dump()


if _OUT and _TOOL == "deeppavlov":
    from deeppavlov.core.trainers.fit_trainer import FitTrainer
    from deeppavlov.core.trainers.nn_trainer import NNTrainer
    from deeppavlov.dataset_iterators.multitask_iterator import MultiTaskIterator

    NNTrainer._log = _timed(NNTrainer._log, "log_seconds")
    NNTrainer._validate = _timed(NNTrainer._validate, "validate_seconds")
    FitTrainer.fit_chainer = _timed(FitTrainer.fit_chainer, "fit_chainer_seconds")
    _loop = NNTrainer.train_on_batches

    def _train_on_batches(self, iterator):
        import torch
        _ACC["log_seconds"] = _ACC["validate_seconds"] = 0.0
        t = time.perf_counter()
        try:
            return _loop(self, iterator)
        finally:
            loop = time.perf_counter() - t
            _dump(loop_seconds=loop, train_seconds=loop - _ACC["log_seconds"] - _ACC["validate_seconds"],
                  train_examples=self.examples, train_batches=self.train_batches_seen, epochs_done=self.epoch,
                  torch_threads=torch.get_num_threads())

    NNTrainer.train_on_batches = _train_on_batches
    _gen_batches = MultiTaskIterator.gen_batches

    def _gen_batches_counted(self, batch_size, data_type="train", shuffle=None):
        batches = _gen_batches(self, batch_size, data_type, shuffle)
        # only the training loop's own generator trains; _log draws extra batches for its metrics
        if data_type == "train" and sys._getframe(1).f_code.co_name == "train_on_batches":
            return _counted_epoch(self, batches)
        return batches

    MultiTaskIterator.gen_batches = _gen_batches_counted

if _OUT and _TOOL == "mtbert":
    import mtbert.training.trainer as _trainer

    _prepare = _trainer.prepare_data

    def _prepare_data(*args, **kwargs):
        import torch
        t = time.perf_counter()
        data = _prepare(*args, **kwargs)
        _dump(prepare_seconds=time.perf_counter() - t, torch_threads=torch.get_num_threads(),
              train_sizes={n: len(td.train_feats) for n, td in data.items()})
        return data

    _trainer.prepare_data = _prepare_data
