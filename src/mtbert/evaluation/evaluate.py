"""Run a model over a task's features, decode the outputs, and score them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from mtbert.data.example import Example
from mtbert.data.features import Feature, collate, sorted_batches
from mtbert.errors import UserError
from mtbert.evaluation.decoding import TaskPredictions, decode_rows
from mtbert.evaluation.metrics import get_metric
from mtbert.modeling.precision import to_device
from mtbert.tasks import default_metrics, registry

log = logging.getLogger("mtbert")


@torch.inference_mode()
def raw_outputs(model, tasks: list[str], feats: list[Feature], batch_size: int, pad_id: int, amp,
                ranks=None, on_batch: Callable[[int], None] | None = None) -> dict[str, list[np.ndarray]]:
    """Each head's float32 output for every feature, in input order, from one encoder pass per batch:
    probabilities for classification and multiple choice, scores for regression, per-sub-token logits for
    tagging. Batches are sorted by length (less padding).

    With `ranks` (training.distributed.Dist), each process runs every world-th batch and the outputs are
    gathered: the batches are the single process's, so the outputs are too.

    `on_batch(n)` is told after each batch how many features it held (a progress bar's step); the other
    ranks' share is told once they are gathered."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs: dict[str, dict[int, np.ndarray]] = {t: {} for t in tasks}
    collate_as = model.task_types[tasks[0]]
    batches = sorted_batches(feats, batch_size)
    if ranks is not None and ranks.enabled:
        batches = batches[ranks.rank::ranks.world]
    for idx in batches:
        batch = collate(collate_as, [feats[i] for i in idx], pad_id)
        batch.pop("labels", None)
        batch.pop("soft_labels", None)
        with amp():
            outs = model.forward_heads(tasks, to_device(batch, device))
        for task, out in outs.items():
            out = model.heads[task].outputs(out.float())
            outputs[task].update(zip(idx, out.cpu().numpy(), strict=True))
        if on_batch:
            on_batch(len(idx))
    if ranks is not None and ranks.enabled:
        for part in ranks.gather(outputs):
            for task in tasks:
                outputs[task].update(part[task])
        if on_batch:
            on_batch(len(feats) - sum(len(idx) for idx in batches))
    model.train(was_training)
    return {t: [rows[i] for i in range(len(feats))] for t, rows in outputs.items()}


def predict_tasks(model, tasks: list[str], feats: list[Feature], batch_size: int, pad_id: int,
                  labels: dict[str, list[str] | None], amp, ranks=None,
                  stitched: Collection[str] | None = None,
                  on_batch: Callable[[int], None] | None = None) -> dict[str, TaskPredictions]:
    """Predict several tasks that take the same input with one encoder pass per batch, in input order.
    Features that are windows of a long text (`encode(..., stride=)`) are put back together for the
    tagging tasks in `stitched` (default: every task); the other tasks read each input's first window,
    its truncated text."""
    outputs = raw_outputs(model, tasks, feats, batch_size, pad_id, amp, ranks, on_batch)
    return {t: decode_rows(model.task_specs[t], outputs[t], feats, labels.get(t), stitched is None or t in stitched)
            for t in tasks}


def predict_task(model, task: str, feats: list[Feature], batch_size: int, pad_id: int,
                 labels: list[str] | None, amp, ranks=None,
                 on_batch: Callable[[int], None] | None = None) -> TaskPredictions:
    """One task's predictions, one per input (a tagging task's windows put back together)."""
    return predict_tasks(model, [task], feats, batch_size, pad_id, {task: labels}, amp, ranks,
                         on_batch=on_batch)[task]


@dataclass
class EvalSet:
    """One task's examples to score, their features, its label vocabulary and the metrics to compute."""
    task: str
    type: str
    examples: list[Example]
    feats: list[Feature]
    labels: list[str] | None
    metrics: list[str]


def score_sets(model, sets: list[EvalSet], batch_size: int, pad_id: int, amp, ranks=None,
               progress: bool = False) -> tuple[dict[str, dict[str, float]], dict[str, TaskPredictions]]:
    """The one evaluation: ({task: {metric: score}}, {task: predictions}) of `model` on each set. Training's
    dev evaluations, `mtbert evaluate`, `mtbert.evaluate` and `mtbert compare` all score through here, so
    the same model, precision (`amp`) and batch size give the same numbers. `ranks`: each training
    process predicts a share of the batches."""
    scores, predictions = {}, {}
    bar = tqdm(total=sum(len(s.feats) for s in sets), desc="dev", unit="input", leave=False, disable=not progress,
               dynamic_ncols=True)
    for s in sets:
        preds = predict_task(model, s.task, s.feats, batch_size, pad_id, s.labels, amp, ranks, on_batch=bar.update)
        scores[s.task] = score_task(s.type, s.metrics, s.examples, preds, s.labels)
        predictions[s.task] = preds
    bar.close()
    return scores, predictions


def gold_values(task_type: str, examples: list[Example], labels: list[str] | None):
    return registry.get(task_type).gold(examples, labels)


def prediction_values(task_type: str, preds: TaskPredictions, examples: list[Example]):
    return registry.get(task_type).predicted(preds, examples)


def score_task(task_type: str, metrics: list[str], examples: list[Example], preds: TaskPredictions,
               labels: list[str] | None) -> dict[str, float]:
    y_true = gold_values(task_type, examples, labels)
    y_pred = prediction_values(task_type, preds, examples)
    return {name: float(get_metric(name)(y_true, y_pred, preds.probas) if ":" not in name
                        else get_metric(name)(y_true, y_pred)) for name in metrics}


def target_value(target: str, scores: dict[str, dict[str, float]], primary: dict[str, str], outputs=None) -> float:
    """The number early stopping and lr drops watch: 'mean', 'task', 'task.metric' or 'module:function'.

    A custom function gets {task: {"y_true", "y_pred", "probas"}} and returns a float.
    """
    if target == "mean":
        return float(np.mean([scores[t][primary[t]] for t in scores]))
    if ":" in target:
        return float(get_metric(target)(outputs))
    task, _, metric = target.partition(".")
    return float(scores[task][metric or primary[task]])


def trusted_metrics(task: str, task_type: str, metrics: list[str], allow_custom: bool) -> list[str]:
    """A run dir's `module:function` metrics are code named by whoever trained it: run them only when asked."""
    custom = [m for m in metrics if ":" in m]
    if custom and not allow_custom:
        log.warning("task %s: custom metric(s) %s from the run dir not run; pass --custom-metrics to run them",
                    task, ", ".join(custom))
        metrics = [m for m in metrics if ":" not in m] or default_metrics(task_type)
    return metrics


def _read_examples(predictor, name: str, split: str, overrides: dict[str, str]) -> list[Example] | None:
    """The task's examples of `split` (or of the file given for it), or None when it has none."""
    from mtbert.data.readers import read_split

    if name not in overrides and getattr(predictor._task(name), split) is None:
        log.warning("task %s: no %s split in the config; skipped (pass --data %s=PATH)", name, split, name)
        return None
    return read_split(predictor.cfg, name, split, overrides.get(name), from_run=True)


def _split_examples(predictor, name: str, split: str, overrides: dict[str, str]):
    """The task's examples of `split` and their features, or None without that split."""
    from mtbert.data.features import encode

    examples = _read_examples(predictor, name, split, overrides)
    if examples is None:
        return None
    cfg, task = predictor.cfg, predictor._task(name)
    feats = encode(task.type, examples, predictor.tokenizer, cfg.max_length_for(name), predictor.labels.get(name),
                   name, pair_encoding=task.pair_encoding, stride=cfg.window_stride(name), questions=task.questions)
    return examples, feats


def evaluate_split(predictor, split: str, tasks: list[str], overrides: dict[str, str], custom_metrics: bool,
                   batch_size: int | None = None) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """({task: {metric: score}}, {task: primary metric}) on the split, computed as training computed its dev
    scores: same precision (the predictor's), same batches (training's eval_batch_size unless given)."""
    sets = []
    for name in tasks:
        found = _split_examples(predictor, name, split, overrides)
        if found is not None:
            task = predictor._task(name)
            sets.append(EvalSet(name, task.type, *found, predictor.labels.get(name),
                                trusted_metrics(name, task.type, task.metrics, custom_metrics)))
    if not sets:
        raise UserError(f"nothing to evaluate: no task has a {split} split; pass --data TASK=PATH")
    scores, _ = score_sets(predictor.model, sets, batch_size or predictor.cfg.training.eval_batch_size,
                           predictor.tokenizer.pad_token_id or 0, predictor.amp)
    return scores, {s.task: s.metrics[0] for s in sets}


def premise_checks(predictor, split: str, tasks: list[str], overrides: dict[str, str],
                   batch_size: int | None = None, seed: int = 0) -> dict[str, tuple[float, float | None]]:
    """{multiple-choice task: (accuracy, accuracy with every premise swapped for another item's, or None
    where fewer than two items have different premises)}."""
    from mtbert.data.features import encode
    from mtbert.evaluation.premise import premise_check

    batch_size = batch_size or predictor.cfg.training.eval_batch_size
    out = {}
    for name in tasks:
        task = predictor._task(name)
        # only the examples: the check encodes them itself, with and without their own premises
        if not registry.get(task.type).premise_check or (examples := _read_examples(predictor, name, split, overrides)) is None:
            continue

        def choose(examples, name=name, task=task):
            feats = encode(task.type, examples, predictor.tokenizer, predictor.cfg.max_length_for(name),
                           with_labels=False, questions=task.questions)
            return predict_task(predictor.model, name, feats, batch_size, predictor.tokenizer.pad_token_id or 0,
                                None, predictor.amp).ids

        out[name] = premise_check(choose, examples, seed)
    return out
