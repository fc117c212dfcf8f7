"""Multi-label classification (`type: multilabel`, src/mtbert/tasks/multilabel.py): read, trained, scored,
predicted, served and exported like the other task types."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtbert.cli import main
from mtbert.config import load_config, validate
from mtbert.data.readers import read_split
from mtbert.errors import UserError

FIXTURES = Path(__file__).parent / "data"


def topic_task(**extra) -> dict:
    task = {"type": "multilabel", "format": "jsonl", "train": "multilabel_train.jsonl", "dev": "multilabel_dev.jsonl",
            "columns": {"text": "text", "label": "labels"}}
    task.update(extra)
    return task


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(FIXTURES, d)
    return d


def test_config_defaults_and_what_it_refuses(data_dir):
    cfg = validate({"data_dir": str(data_dir), "tasks": {"topic": topic_task()}})
    spec = cfg.tasks["topic"]
    assert (spec.threshold, spec.label_separator, spec.metrics) == (0.5, ",", ["micro_f1", "macro_f1"])
    for task, where, message in [
        (topic_task(metric="accuracy"), "tasks.topic.metric", "'accuracy' does not apply to multilabel tasks; "
                                                              "use one of micro_f1, macro_f1"),
        (topic_task(threshold=1.5), "tasks.topic.threshold", "less than 1"),
        ({"type": "classification", "train": "x.tsv", "columns": {"text": "t", "label": "l"}, "threshold": 0.3},
         "tasks.topic", "threshold applies to multilabel tasks, not classification; remove it"),
        (topic_task(format="tsv", label_separator="\t"), "tasks.topic", "label_separator '\\t' also separates"),
    ]:
        with pytest.raises(UserError, match=r"^config: ") as err:
            validate({"data_dir": str(data_dir), "tasks": {"topic": task}})
        assert where in str(err.value) and message in str(err.value)


def test_reads_json_lists_and_separated_cells(data_dir):
    cfg = validate({"data_dir": str(data_dir), "tasks": {"topic": topic_task()}})
    train = read_split(cfg, "topic", "train")
    assert [ex.label for ex in train[:1]] == [["sports"]]
    assert ["sports", "politics"] in [ex.label for ex in train] and [] in [ex.label for ex in train]
    (data_dir / "t.tsv").write_text("text\tlabels\nthe match and the vote\tsports| politics |sports\nthe vote\t1.0\n")
    cfg = validate({"data_dir": str(data_dir), "tasks": {"topic": topic_task(
        format="tsv", train="t.tsv", dev=None, label_separator="|")}})
    # each label once, stripped, in the row's order; 1.0 is the class '1', as a classification label
    assert [ex.label for ex in read_split(cfg, "topic", "train")] == [["sports", "politics"], ["1"]]
    (data_dir / "bad.jsonl").write_text('{"text": "x", "labels": ["a", {"b": 1}]}\n')
    cfg = validate({"data_dir": str(data_dir), "tasks": {"topic": topic_task(train="bad.jsonl", dev=None)}})
    with pytest.raises(UserError, match=r"bad.jsonl line 1: label \{'b': 1\} in the label list is not a string"):
        read_split(cfg, "topic", "train")


def test_trains_evaluates_predicts_serves_and_exports(data_dir, tiny_bert, tmp_path):
    """A few steps of the tiny BERT, then every way out: dev scores, Predictor, the server, an ONNX bundle."""
    from fastapi.testclient import TestClient

    from mtbert.inference.onnx_predictor import OnnxPredictor
    from mtbert.inference.predictor import Predictor, evaluate_run
    from mtbert.inference.server import create_app
    from mtbert.training.trainer import train

    raw = {"backbone": tiny_bert, "data_dir": str(data_dir), "max_length": 32, "seed": 3,
           "tasks": {"topic": topic_task(threshold=0.4)},
           "training": {"max_steps": 30, "eval_every": 10, "batch_size": 4, "lr": 3e-3, "progress": False, "precision": "fp32"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    train(load_config(tmp_path / "config.yaml"), run)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"]["topic"] for r in records if "train_loss" in r]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # the sigmoid heads learn (BCE starts near log 2)
    dev = [r for r in records if "dev" in r][-1]["dev"]["topic"]
    assert set(dev) == {"micro_f1", "macro_f1"} and all(0.0 <= v <= 1.0 for v in dev.values())
    assert json.loads((run / "model" / "labels.json").read_text())["topic"] == ["politics", "sports"]
    scores, primary, _ = evaluate_run(run)
    assert primary == {"topic": "micro_f1"} and scores["topic"]["micro_f1"] == pytest.approx(dev["micro_f1"])

    predictor = Predictor(run)
    texts = ["the match was exciting", "the vote and the match", "a quiet day"]
    answers = predictor.predict("topic", texts, return_probas=True)
    for answer in answers:
        assert set(answer["probas"]) == {"politics", "sports"}
        # a label is predicted exactly when its probability reaches the task's threshold, 0.4
        assert answer["label"] == [label for label, p in answer["probas"].items() if p >= 0.4]

    with TestClient(create_app(predictor)) as client:
        got = client.post("/predict", json={"task": "topic", "inputs": texts[:1], "probas": True})
        assert got.status_code == 200 and got.json()["predictions"][0] == answers[0]
        info = client.get("/tasks").json()[0]
        assert (info["type"], info["labels"], info["single_text"]) == ("multilabel", ["politics", "sports"], True)

    bundle = tmp_path / "onnx"
    assert main(["-q", "export", str(run), "-o", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["outputs"]["topic"]["type"] == "multilabel"
    onnx = OnnxPredictor(bundle)
    onnx_answers = onnx.predict("topic", texts, return_probas=True)
    assert [a["label"] for a in onnx_answers] == [a["label"] for a in answers]
    for a, b in zip(onnx_answers, answers, strict=True):
        assert np.allclose(list(a["probas"].values()), list(b["probas"].values()), atol=1e-4)
