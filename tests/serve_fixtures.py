"""A small trained run with every kind of head, built once per test session for the serving, export and
browser tests (import the fixtures into a test module to use them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NEG, POS, toy_tasks, write_toy_files


def write_toy_data(d: Path) -> None:
    """conftest's toy files, written where a session-scoped fixture can reach them, plus a separately
    encoded pair task and a multiple-choice task with a question."""
    write_toy_files(d)
    para = ["s1\ts2\tlabel"] + [f"{a}\t{a}\tsame" for a in POS] + [f"{a}\t{b}\tdiff" for a, b in zip(POS, NEG, strict=True)]
    (d / "para.tsv").write_text("\n".join(para) + "\n")
    mc = [{"premise": f"the film was {w}", "question": "what happened?", "choice1": "people liked it",
           "choice2": "people left", "label": int(w in ("bad", "awful", "boring"))}
          for w in ("great", "good", "lovely", "bad", "awful", "boring")]
    (d / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in mc) + "\n")


def serve_config(backbone: str, data_dir: Path, max_steps: int = 12) -> dict:
    """Every head kind the export has to get right: softmax and bce classifiers, cls and mean pooling,
    cross and separate pairs, regression on one text and on a pair, choices with a question, tags."""
    tasks = toy_tasks()
    tasks["mc"] = {**tasks["mc"], "train": "mc.jsonl", "dev": "mc.jsonl",
                   "columns": {**tasks["mc"]["columns"], "question": "question"}}
    tasks["polar"] = {**tasks["sent"], "pooling": "mean", "loss": "bce", "metric": "accuracy"}
    tasks["para"] = {"type": "classification", "train": "para.tsv", "dev": "para.tsv", "pair_encoding": "separate",
                     "pair_combine": "sbert", "columns": {"text": "s1", "text_pair": "s2", "label": "label"}}
    tasks["len"] = {"type": "regression", "train": "sts_train.tsv", "dev": "sts_dev.tsv",
                    "columns": {"text": "s1", "label": "score"}}
    return {"backbone": backbone, "data_dir": str(data_dir), "seed": 1, "max_length": 32, "tasks": tasks,
            "training": {"max_steps": max_steps, "batch_size": 4, "eval_every": max_steps, "lr": 1e-3,
                         "progress": False, "precision": "fp32"}}


@pytest.fixture(scope="session")
def served_run(tiny_bert, tmp_path_factory) -> Path:
    """A trained run dir of the tiny BERT with seven tasks (sent, sts, mc, ner, polar, para, len)."""
    from mtbert.config import validate
    from mtbert.training.trainer import train

    root = tmp_path_factory.mktemp("served")
    write_toy_data(root / "data")
    train(validate(serve_config(tiny_bert, root / "data")), root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def onnx_dir(served_run, tmp_path_factory) -> Path:
    """The run exported to ONNX (fp32)."""
    from mtbert.inference.export import export_onnx

    return export_onnx(served_run, tmp_path_factory.mktemp("onnx") / "onnx")
