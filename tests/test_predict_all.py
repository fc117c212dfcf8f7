"""predict_all: one encoder pass answers every single-text head, with the per-task path's answers."""

from __future__ import annotations

import numpy as np
import pytest

from mtbert.config import validate
from mtbert.errors import UserError
from mtbert.inference.predictor import Predictor
from mtbert.training.trainer import train


def test_predict_all_equals_per_task_predictions(toy_config, tmp_path):
    raw = dict(toy_config)
    # a second single-text classifier and a single-text regression, all sharing one pass with ner
    raw["tasks"] = {**toy_config["tasks"],
                    "sent2": {**toy_config["tasks"]["sent"], "pooling": "mean", "metric": "accuracy"},
                    "len": {"type": "regression", "train": "sts_train.tsv", "dev": "sts_dev.tsv",
                            "columns": {"text": "s1", "label": "score"}}}
    raw["training"] = {**toy_config["training"], "max_steps": 8, "eval_every": 8}
    train(validate(raw), tmp_path / "run")
    p = Predictor(tmp_path / "run", precision="fp32")
    assert p.single_text_tasks() == ["sent", "ner", "sent2", "len"]
    texts = ["John lives in Paris", "a great fine movie , really", "terrible", "Mary Smith likes London and Paris"]
    both = p.predict_all(texts, return_probas=True)
    for task in ("sent", "sent2", "len", "ner"):
        inputs = [{"tokens": t.split()} for t in texts] if task == "ner" else [{"text": t} for t in texts]
        alone = p.predict(task, inputs, return_probas=True)
        for a, b in zip(both, alone, strict=True):
            if task == "len":
                assert abs(a[task]["score"] - b["score"]) < 1e-4
            else:
                assert a[task]["label"] == b["label"]
            if "probas" in b:  # per class {label: p}; per word [{tag: p}, ...]
                per = b["probas"] if isinstance(b["probas"], list) else [b["probas"]]
                got = a[task]["probas"] if isinstance(a[task]["probas"], list) else [a[task]["probas"]]
                assert np.allclose([list(x.values()) for x in got], [list(x.values()) for x in per], atol=1e-4)
    assert [len(r["ner"]["label"]) for r in both] == [len(t.split()) for t in texts]
    subset = p.predict_all(texts[:1], tasks=["sent"])
    assert list(subset[0]) == ["sent"]
    with pytest.raises(UserError, match="does not take a single text"):
        p.predict_all(texts, tasks=["sts"])
    with pytest.raises(UserError, match="input 2: expected a non-empty text"):
        p.predict_all(["ok", "  "])
