"""Every built-in metric on tiny inputs whose scores are worked out by hand, and the degenerate inputs
that must give a defined score and a warning instead of NaN."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from mtbert.errors import UserError
from mtbert.evaluation.metrics import (
    METRICS,
    METRICS_FOR_TYPE,
    accuracy,
    f1,
    f1_macro,
    get_metric,
    macro_f1,
    mcc,
    micro_f1,
    ner_f1,
    pearson,
    resolve_custom,
    roc_auc,
    spearman,
)

GOLD = [0, 1, 1, 0]
PRED = [0, 1, 0, 0]  # TP=1 TN=2 FP=0 FN=1 for class 1


def test_every_metric_is_covered_here():
    """A new metric must get hand-computed tests in this file."""
    assert set(METRICS) == {"accuracy", "f1", "f1_macro", "mcc", "pearson", "spearman", "roc_auc", "ner_f1",
                            "micro_f1", "macro_f1"}
    for names in METRICS_FOR_TYPE.values():
        assert set(names) <= set(METRICS)
    # every metric scores some task type: the config knows metric names from the types (mtbert.tasks)
    assert set().union(*METRICS_FOR_TYPE.values()) == set(METRICS)
    for name, fn in METRICS.items():
        assert get_metric(name) is fn


def test_accuracy():
    assert accuracy(GOLD, PRED) == pytest.approx(0.75)
    assert accuracy(np.array([2, 0, 1]), np.array([2, 0, 1])) == 1.0
    assert accuracy([1, 1], [0, 0]) == 0.0


def test_f1_binary_for_0_1():
    # class 1: precision 1/1, recall 1/2 -> F1 = 2/3 (macro would be (0.8 + 2/3) / 2)
    assert f1(GOLD, PRED) == pytest.approx(2 / 3)
    assert f1(np.array(GOLD), np.array(PRED)) == pytest.approx(2 / 3)
    # only class 0 predicted and present: class 1 has no true positive -> 0, not an error
    assert f1([0, 0, 1], [0, 0, 0]) == 0.0


def test_f1_macro_otherwise():
    # three classes: per-class F1 1, 2/3, 0
    assert f1([0, 1, 2], [0, 1, 1]) == pytest.approx(5 / 9)
    # two classes that are not 0/1: macro over classes 1 and 2 (0.8 and 2/3)
    assert f1([1, 2, 2, 1], [1, 2, 1, 1]) == pytest.approx((0.8 + 2 / 3) / 2)


def test_f1_macro():
    # class 0: P 2/3 R 1 -> 0.8; class 1: P 1 R 1/2 -> 2/3
    assert f1_macro(GOLD, PRED) == pytest.approx((0.8 + 2 / 3) / 2)
    assert f1_macro([0, 1, 2], [0, 1, 1]) == pytest.approx(5 / 9)


def test_mcc():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 2 / sqrt(1*2*2*3)
    assert mcc(GOLD, PRED) == pytest.approx(2 / math.sqrt(12))
    assert mcc([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert mcc([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)


def test_pearson():
    # x deviations -1,0,1; y = 1,2,4 has mean 7/3: cov 3, var_x 2, var_y 14/3 -> r = 3 / sqrt(28/3)
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(28 / 3))
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_spearman():
    # ranks of 1,5,4 are 1,3,2: Pearson of ranks (1,2,3) and (1,3,2) is 1/2
    assert spearman([1, 2, 3], [1, 5, 4]) == pytest.approx(0.5)
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)


def test_roc_auc_binary():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of 4 pairs ranked right
    probas = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert roc_auc([0, 0, 1, 1], None, probas) == pytest.approx(0.75)


def test_roc_auc_multiclass_one_vs_rest():
    probas = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    # class 0: 1.0; class 1: 1.0; class 2: positives 0.7, 0.3 vs negatives 0.1, 0.3 -> 3.5 / 4
    assert roc_auc([0, 1, 2, 2], None, probas) == pytest.approx((1 + 1 + 0.875) / 3)


def test_roc_auc_multiclass_with_a_class_absent_from_gold(caplog):
    """A 3-class task whose dev sample lacks a class: AUC over the classes present, never NaN."""
    probas = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]])
    # class 0: positives 0.8, 0.2 vs negatives 0.1, 0.6 -> 3/4; class 1: positives 0.8, 0.3 vs 0.1, 0.2 -> 1
    with caplog.at_level(logging.WARNING, logger="mtbert"):
        value = roc_auc([0, 1, 0, 1], None, probas)
    assert math.isfinite(value)
    assert value == pytest.approx((0.75 + 1.0) / 2)
    assert any(r.name == "mtbert" and r.levelno == logging.WARNING and "roc_auc" in r.getMessage()
               for r in caplog.records)


def test_roc_auc_one_gold_class_is_half(caplog):
    with caplog.at_level(logging.WARNING, logger="mtbert"):
        assert roc_auc([1, 1, 1], None, np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])) == 0.5
    assert any(r.name == "mtbert" and r.levelno == logging.WARNING and "roc_auc" in r.getMessage()
               for r in caplog.records)


def test_roc_auc_needs_probabilities():
    with pytest.raises(UserError, match="roc_auc needs class probabilities"):
        roc_auc([0, 1], [0, 1], None)


def test_ner_f1_span_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    # the person is cut short: a partly matched entity is wrong; tokens would be 3/4 right
    pred = [["B-PER", "O", "O", "B-LOC"]]
    assert ner_f1(gold, pred) == pytest.approx(0.5)
    assert ner_f1(gold, gold) == 1.0
    # a wrong type over the right span is wrong too
    assert ner_f1(gold, [["B-ORG", "I-ORG", "O", "B-LOC"]]) == pytest.approx(0.5)
    assert ner_f1(gold, [["O", "O", "O", "O"]]) == 0.0


def test_ner_f1_strict_iob2_and_several_sentences():
    # strict IOB2: an entity must start with B-, so I-PER I-PER is not the gold person
    assert ner_f1([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]) == 0.0
    gold = [["B-PER", "O"], ["B-LOC", "I-LOC", "O", "B-MISC"]]
    pred = [["B-PER", "O"], ["B-LOC", "O", "O", "B-MISC"]]
    # 3 gold entities (PER, LOC over 2 tokens, MISC), 3 predicted (LOC over 1 token), 2 right -> P = R = 2/3
    assert ner_f1(gold, pred) == pytest.approx(2 / 3)


@pytest.mark.parametrize("fn, gold, pred", [
    (pearson, [1.0, 2.0, 3.0], [2.0, 2.0, 2.0]),
    (spearman, [1.0, 2.0, 3.0], [2.0, 2.0, 2.0]),
    (pearson, [3.0, 3.0, 3.0], [1.0, 2.0, 3.0]),
    (spearman, [3.0, 3.0, 3.0], [1.0, 2.0, 3.0]),
    (pearson, [1.0], [1.0]),
    (mcc, [0, 1, 0, 1], [1, 1, 1, 1]),
    (mcc, [0, 1, 0, 1], [0, 0, 0, 0]),
], ids=["pearson", "spearman", "pearson_gold", "spearman_gold", "pearson_one", "mcc_ones", "mcc_zeros"])
def test_constant_gives_zero_and_warns(fn, gold, pred, caplog, recwarn):
    with caplog.at_level(logging.WARNING, logger="mtbert"):
        assert fn(gold, pred) == 0.0
    records = [r for r in caplog.records if r.name == "mtbert" and r.levelno == logging.WARNING]
    assert len(records) == 1 and fn.__name__ in records[0].getMessage()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_metrics_return_plain_floats():
    probas = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    for name in ("accuracy", "f1", "f1_macro", "mcc", "roc_auc"):
        assert type(METRICS[name](np.array(GOLD), np.array(PRED), probas)) is float
    for name in ("pearson", "spearman"):
        assert type(METRICS[name](np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))) is float
    assert type(ner_f1([["B-PER"]], [["B-PER"]])) is float


def test_custom_metric_resolution_errors():
    assert resolve_custom("math:sqrt") is math.sqrt
    assert get_metric("math:sqrt") is math.sqrt
    with pytest.raises(UserError, match="expected 'module.submodule:function'"):
        resolve_custom("math:")
    with pytest.raises(UserError, match="cannot import module 'no_such_module_xyz'"):
        resolve_custom("no_such_module_xyz:f")
    with pytest.raises(UserError, match="module 'math' has no function 'pi'"):
        resolve_custom("math:pi")


def test_multilabel_f1_micro_and_macro():
    """Two labels over three examples. Label 0: gold 1,1,0, predicted 1,0,0 (TP 1, FN 1: F1 2/3).
    Label 1: gold 0,1,1, predicted 1,1,1 (TP 2, FP 1: F1 4/5). Pooled: TP 3, FP 1, FN 1: micro F1 3/4."""
    gold = [[1, 0], [1, 1], [0, 1]]
    pred = [[1, 1], [0, 1], [0, 1]]
    assert micro_f1(gold, pred) == pytest.approx(0.75)
    assert macro_f1(gold, pred) == pytest.approx((2 / 3 + 4 / 5) / 2)
    # a label never gold and never predicted scores 0 in the macro mean (sklearn's zero_division=0), no warning
    assert macro_f1([[1, 0]], [[1, 0]]) == pytest.approx(0.5)
