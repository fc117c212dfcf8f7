"""Run a model over a task's features, decode the outputs, and score them."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch

from mtbert.data.features import Feature, collate, sorted_batches
from mtbert.data.readers import Example
from mtbert.evaluation.decoding import TaskPredictions, decode_rows
from mtbert.evaluation.metrics import get_metric


@torch.inference_mode()
def predict_tasks(model, tasks: list[str], feats: list[Feature], batch_size: int, pad_id: int,
                  labels: dict[str, list[str] | None], amp, ranks=None,
                  stitched: Collection[str] | None = None) -> dict[str, TaskPredictions]:
    """Predict several tasks that take the same input with one encoder pass per batch. Batches are sorted
    by length (less padding) and the results put back in input order. Features that are windows of a
    long text (`encode(..., stride=)`) are put back together for the tagging tasks in `stitched`
    (default: every task); the other tasks read each input's first window, its truncated text.

    With `ranks` (training.distributed.Dist), each process runs every world-th batch and the outputs are
    gathered: the batches are the single process's, so the predictions are too."""
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
        with amp():
            outs = model.forward_heads(tasks, {k: v.to(device) for k, v in batch.items()})
        for task, out in outs.items():
            out = out.float()
            if model.task_types[task] in ("classification", "multiple_choice"):
                out = model.heads[task].probas(out)
            outputs[task].update(zip(idx, out.cpu().numpy(), strict=True))
    if ranks is not None and ranks.enabled:
        for part in ranks.gather(outputs):
            for task in tasks:
                outputs[task].update(part[task])
    model.train(was_training)
    outputs = {t: [rows[i] for i in range(len(feats))] for t, rows in outputs.items()}
    return {t: decode_rows(model.task_types[t], outputs[t], feats, labels.get(t), stitched is None or t in stitched)
            for t in tasks}


def predict_task(model, task: str, feats: list[Feature], batch_size: int, pad_id: int,
                 labels: list[str] | None, amp, ranks=None) -> TaskPredictions:
    """One task's predictions, one per input (a tagging task's windows put back together)."""
    return predict_tasks(model, [task], feats, batch_size, pad_id, {task: labels}, amp, ranks)[task]


def gold_values(task_type: str, examples: list[Example], labels: list[str] | None):
    if task_type == "classification":
        index = {label: i for i, label in enumerate(labels)}
        return np.array([index[ex.label] for ex in examples])
    if task_type == "sequence_labeling":
        return [ex.label for ex in examples]
    return np.array([ex.label for ex in examples])


def prediction_values(task_type: str, preds: TaskPredictions, examples: list[Example]):
    if task_type == "classification":
        return preds.ids
    if task_type == "sequence_labeling":
        return preds.labels  # one tag per word, as predict gives them (words cut by truncation are 'O')
    return np.array(preds.labels)


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
