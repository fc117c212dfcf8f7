"""Dev/test metrics. Each takes gold and predicted values (and class probabilities where they help).

Degenerate inputs (constant predictions, one gold class) give a defined score and a warning instead of
NaN, so early stopping and lr drops keep working: the minBERT report lost epochs to a NaN Pearson.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.scheme import IOB2
from sklearn import metrics as skm

from mtbert.errors import UserError
from mtbert.tasks import registry
from mtbert.tasks.metrics import resolve_custom  # noqa: F401  (re-exported: scoring and tests import it here)

log = logging.getLogger("mtbert")


def _constant(values) -> bool:
    arr = np.asarray(values, dtype=float)
    return arr.size < 2 or np.all(arr == arr[0])


def accuracy(y_true, y_pred, probas=None) -> float:
    return float(skm.accuracy_score(y_true, y_pred))


def f1(y_true, y_pred, probas=None) -> float:
    """Binary F1 of class index 1 when there are two classes, macro F1 otherwise."""
    binary = set(np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)]))) <= {0, 1}
    return float(skm.f1_score(y_true, y_pred, average="binary" if binary else "macro", zero_division=0))


def f1_macro(y_true, y_pred, probas=None) -> float:
    return float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


def mcc(y_true, y_pred, probas=None) -> float:
    if _constant(y_pred):
        log.warning("mcc: all predictions are the same class; the score is 0.0")
        return 0.0
    return float(skm.matthews_corrcoef(y_true, y_pred))


def _correlation(fn, name: str, y_true, y_pred) -> float:
    if _constant(y_pred) or _constant(y_true):
        log.warning("%s: predictions or gold scores are constant, so correlation is undefined; the score is 0.0", name)
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = fn(np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float))[0]
    return float(value) if np.isfinite(value) else 0.0


def pearson(y_true, y_pred, probas=None) -> float:
    return _correlation(stats.pearsonr, "pearson", y_true, y_pred)


def spearman(y_true, y_pred, probas=None) -> float:
    return _correlation(stats.spearmanr, "spearman", y_true, y_pred)


def roc_auc(y_true, y_pred, probas=None) -> float:
    if probas is None:
        raise UserError("metric roc_auc needs class probabilities; it applies to classification tasks")
    y_true = np.asarray(y_true)
    probas = np.asarray(probas, dtype=float)
    if len(np.unique(y_true)) < 2:
        log.warning("roc_auc: only one class in the gold labels, so AUC is undefined; the score is 0.5")
        return 0.5
    if probas.shape[1] == 2:
        return float(skm.roc_auc_score(y_true, probas[:, 1]))
    present = np.unique(y_true)
    if len(present) < probas.shape[1]:
        # one-vs-rest AUC of a class with no gold example is undefined (sklearn gives NaN): average the others
        log.warning("roc_auc: %d of %d classes have no gold example; AUC is averaged over the %d present",
                    probas.shape[1] - len(present), probas.shape[1], len(present))
        return float(np.mean([skm.roc_auc_score(y_true == k, probas[:, k]) for k in present]))
    return float(skm.roc_auc_score(y_true, probas, multi_class="ovr", labels=list(range(probas.shape[1]))))


def micro_f1(y_true, y_pred, probas=None) -> float:
    """Multi-label F1 over every (example, label) decision pooled: y_true and y_pred are 0/1 matrices."""
    return float(skm.f1_score(np.asarray(y_true), np.asarray(y_pred), average="micro", zero_division=0))


def macro_f1(y_true, y_pred, probas=None) -> float:
    """Multi-label F1 of each label alone, averaged over the labels (a rare label weighs as a common one)."""
    return float(skm.f1_score(np.asarray(y_true), np.asarray(y_pred), average="macro", zero_division=0))


def ner_f1(y_true, y_pred, probas=None) -> float:
    """Span-level F1 over IOB2 entities (seqeval, strict mode)."""
    return float(seqeval_f1(y_true, y_pred, mode="strict", scheme=IOB2, zero_division=0))


METRICS: dict[str, Callable] = {
    "accuracy": accuracy,
    "f1": f1,
    "f1_macro": f1_macro,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
    "roc_auc": roc_auc,
    "ner_f1": ner_f1,
    "micro_f1": micro_f1,
    "macro_f1": macro_f1,
}

# which built-in metrics make sense for which task type (the config refuses the others: they would fail, or
# score nonsense, only at the first dev evaluation); each type lists its own (mtbert.tasks)
METRICS_FOR_TYPE = {t.name: list(t.metrics) for t in registry.all()}


def get_metric(name: str) -> Callable:
    if ":" in name:
        return resolve_custom(name)
    return METRICS[name]
