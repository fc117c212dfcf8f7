"""DeepPavlov's metrics that mtbert has no built-in for, and DeepPavlov-style training targets.

A converted config reaches this module in two ways:

- a task metric such as `mtbert.compat.dp_metrics:ner_token_f1`, called with `(y_true, y_pred)` like
  any `module:function` metric;
- a target `mtbert.compat.dp_metrics:deeppavlov[NAME](task.kind, ...)`. DeepPavlov calls the first
  metric of its `train` section with the chainer variables its `inputs` name, in that order; mtbert's
  custom targets get `{task: {"y_true", "y_pred", "probas"}}` instead. The converter spells the inputs
  out in the function's name, and the module `__getattr__` below builds the adapter from it, so the
  converted YAML stays a plain, self-contained config.

Scores are on mtbert's 0-1 scale (DeepPavlov's ner_f1 and ner_token_f1 report 0-100).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import chain

import numpy as np
from sklearn import metrics as skm

from mtbert.errors import UserError
from mtbert.evaluation import metrics as mt


def ner_token_f1(y_true, y_pred, probas=None) -> float:
    """DeepPavlov's ner_token_f1: token-level micro F1 over entity types, B-/I- prefixes dropped, O ignored."""
    true = [str(t).split("-")[-1] for t in chain.from_iterable(y_true)]
    pred = [str(t).split("-")[-1] for t in chain.from_iterable(y_pred)]
    hits = sum(t == p != "O" for t, p in zip(true, pred, strict=True))
    n_true = sum(t != "O" for t in true)
    n_pred = sum(p != "O" for p in pred)
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_true if n_true else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def f1_weighted(y_true, y_pred, probas=None) -> float:
    """DeepPavlov's f1_weighted: F1 per class, averaged by class frequency."""
    return float(skm.f1_score(y_true, y_pred, average="weighted", zero_division=0))


def multitask_accuracy(*args) -> float:
    """DeepPavlov's multitask_accuracy: 2n inputs, n gold lists then n predictions; the mean accuracy."""
    n = len(args) // 2
    return float(np.mean([mt.accuracy(true, pred) for true, pred in zip(args[:n], args[n:], strict=True)]))


# DeepPavlov's registered names -> functions with DeepPavlov's positional signature
DP_METRICS: dict[str, Callable] = {
    "accuracy": lambda t, p: mt.accuracy(t, p),
    "multitask_accuracy": multitask_accuracy,
    "f1": lambda t, p: mt.f1(t, p),
    "f1_macro": lambda t, p: mt.f1_macro(t, p),
    "f1_weighted": f1_weighted,
    "matthews_correlation": lambda t, p: mt.mcc(t, p),
    "pearson_correlation": lambda t, p: mt.pearson(t, p),
    "spearman_correlation": lambda t, p: mt.spearman(t, p),
    "roc_auc": lambda t, probas: mt.roc_auc(t, None, probas),
    "ner_f1": lambda t, p: mt.ner_f1(t, p),
    "ner_token_f1": ner_token_f1,
}

KINDS = ("y_true", "y_pred", "probas")
# `minimized_` (train.metric_optimization: minimize): the metric negated, as mtbert keeps the highest target
_TARGET = re.compile(r"(?P<minimized>minimized_)?deeppavlov\[(?P<metric>[^\]]+)\]\((?P<args>[^()]+)\)")


def target_name(metric: str, args: list[tuple[str, str]], minimize: bool = False) -> str:
    """The `module:function` reference of a DeepPavlov-style target (see the module docstring)."""
    prefix = "minimized_" if minimize else ""
    return f"{__name__}:{prefix}deeppavlov[{metric}]({','.join(f'{task}.{kind}' for task, kind in args)})"


def _dp_metric(name: str) -> Callable:
    if ":" in name:
        return mt.resolve_custom(name)
    if name not in DP_METRICS:
        raise UserError(f"DeepPavlov metric '{name}' has no mtbert equivalent; known: {', '.join(DP_METRICS)}")
    return DP_METRICS[name]


def __getattr__(name: str):
    found = _TARGET.fullmatch(name)
    if not found:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    metric = _dp_metric(found["metric"])
    args = [tuple(a.strip().rsplit(".", 1)) for a in found["args"].split(",")]
    for arg in args:
        if len(arg) != 2 or arg[1] not in KINDS:
            raise UserError(f"target '{name}': '{'.'.join(arg)}' is not TASK.{'|'.join(KINDS)}")

    def target(outputs: dict) -> float:
        missing = sorted({task for task, _ in args if task not in outputs})
        if missing:
            raise UserError(f"target metric {found['metric']} needs dev predictions of task(s) "
                            f"{', '.join(missing)}, which have no dev split")
        value = float(metric(*[outputs[task][kind] for task, kind in args]))
        return -value if found["minimized"] else value

    target.__name__ = name
    return target
