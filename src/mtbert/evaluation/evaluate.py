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
def raw_outputs(model, tasks: list[str], feats: list[Feature], batch_size: int, pad_id: int, amp,
                ranks=None) -> dict[str, list[np.ndarray]]:
    """Each head's float32 output for every feature, in input order, from one encoder pass per batch:
    probabilities for classification and multiple choice, scores for regression, per-sub-token logits for
    tagging. Batches are sorted by length (less padding).

    With `ranks` (training.distributed.Dist), each process runs every world-th batch and the outputs are
    gathered: the batches are the single process's, so the outputs are too."""
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
    return {t: [rows[i] for i in range(len(feats))] for t, rows in outputs.items()}


def predict_tasks(model, tasks: list[str], feats: list[Feature], batch_size: int, pad_id: int,
                  labels: dict[str, list[str] | None], amp, ranks=None,
                  stitched: Collection[str] | None = None) -> dict[str, TaskPredictions]:
    """Predict several tasks that take the same input with one encoder pass per batch, in input order.
    Features that are windows of a long text (`encode(..., stride=)`) are put back together for the
    tagging tasks in `stitched` (default: every task); the other tasks read each input's first window,
    its truncated text."""
    outputs = raw_outputs(model, tasks, feats, batch_size, pad_id, amp, ranks)
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


def evaluate_run(run_dir, split: str = "dev", tasks: list[str] | None = None, data: dict | None = None,
                 batch_size: int = 64, precision: str = "auto", custom_metrics: bool = False):
    """Score a saved run on a split of its config's data (or `data` {task: path}), as `mtbert evaluate`
    does: ({task: {metric: value}}, {task: primary metric}, precision used). Tasks without that split are
    skipped. Custom `module:function` metrics named by the run run only with `custom_metrics`."""
    from mtbert.data.features import encode
    from mtbert.data.readers import read_split
    from mtbert.inference.predictor import Predictor
    from mtbert.tasks import default_metrics

    predictor = Predictor(run_dir, precision=precision, batch_size=batch_size)
    cfg, data = predictor.cfg, data or {}
    scores, primary = {}, {}
    for name in tasks or list(cfg.tasks):
        task = predictor._task(name)
        if name not in data and getattr(task, split) is None:
            continue
        examples = read_split(cfg, name, split, data.get(name))
        labels = predictor.labels.get(name)
        feats = encode(task.type, examples, predictor.tokenizer, cfg.max_length_for(name), labels, name,
                       pair_encoding=task.pair_encoding)
        preds = predict_task(predictor.model, name, feats, batch_size, predictor.tokenizer.pad_token_id or 0,
                             labels, predictor.amp)
        metrics = task.metrics if custom_metrics else ([m for m in task.metrics if ":" not in m]
                                                       or default_metrics(task.type))
        scores[name] = score_task(task.type, metrics, examples, preds, labels)
        primary[name] = metrics[0]
    return scores, primary, predictor.precision
