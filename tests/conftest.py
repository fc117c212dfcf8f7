"""Shared fixtures: a tiny randomly initialised BERT (fast, offline) with the packaged MiniLM tokenizer,
and helpers to write configs and small data files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(os.environ.get("MTBERT_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 BERT folder with MiniLM's uncased WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtbert.modeling.encoder import resolve_backbone

    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_backbone("minilm")).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert_no_dropout(tiny_bert, tmp_path_factory) -> str:
    """The tiny BERT without dropout, for comparing two ways of training the same model (several processes,
    a compiled encoder), whose dropout masks would differ."""
    import json
    import shutil

    path = tmp_path_factory.mktemp("tiny_bert_no_dropout")
    shutil.copytree(tiny_bert, path, dirs_exist_ok=True)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict as YAML (or JSON with suffix='.json') and return its path."""

    def write(cfg: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        if name.endswith(".json"):
            import json

            path.write_text(json.dumps(cfg))
        else:
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return write


@pytest.fixture
def whole_and_resumed(tmp_path):
    """Train a config straight through, and again as if killed right after step `after`'s checkpoint and
    resumed (the first run's dir copied, later checkpoints removed); returns both run dirs."""
    import shutil

    from mtbert.config import validate
    from mtbert.training.checkpoint import checkpoints
    from mtbert.training.trainer import train

    def run(raw: dict, after: int) -> tuple[Path, Path]:
        whole, part = tmp_path / "whole", tmp_path / "part"
        train(validate(raw), whole)
        shutil.copytree(whole, part)
        for later in checkpoints(part):
            if int(later.name.split("-")[1]) > after:
                shutil.rmtree(later)
        train(validate(raw), part, resume=True)
        return whole, part

    return run


POS = ["a great fine movie", "good and lovely", "great fun", "lovely good story", "fine great acting"]
NEG = ["a bad awful movie", "terrible and bad", "awful boring", "boring bad story", "terrible awful acting"]


def write_toy_files(d: Path) -> Path:
    """Small files in every format, with learnable signals: sentiment (TSV), similarity pairs (TSV),
    multiple choice (JSON Lines) and NER (CoNLL)."""
    import json

    d.mkdir(parents=True, exist_ok=True)
    rows = ["sentence\tlabel"] + [f"{s}\tpos" for s in POS] + [f"{s}\tneg" for s in NEG]
    (d / "sent_train.tsv").write_text("\n".join(rows + rows[1:]) + "\n")
    (d / "sent_dev.tsv").write_text("\n".join(rows) + "\n")
    pairs = ["s1\ts2\tscore"] + [f"{a}\t{a}\t5.0" for a in POS] + [f"{a}\t{b}\t0.5" for a, b in zip(POS, NEG, strict=True)]
    (d / "sts_train.tsv").write_text("\n".join(pairs) + "\n")
    (d / "sts_dev.tsv").write_text("\n".join(pairs) + "\n")
    mc = [{"premise": f"the film was {w}", "choice1": "people liked it", "choice2": "people left", "label": 0}
          for w in ("great", "good", "lovely")] + \
         [{"premise": f"the film was {w}", "choice1": "people liked it", "choice2": "people left", "label": 1}
          for w in ("bad", "awful", "boring")]
    (d / "mc_train.jsonl").write_text("\n".join(json.dumps(r) for r in mc) + "\n")
    (d / "mc_dev.jsonl").write_text("\n".join(json.dumps(r) for r in mc) + "\n")
    conll = ["-DOCSTART- -X- -X- O", "",
             "John NNP B-NP B-PER", "lives VBZ B-VP O", "in IN B-PP O", "Paris NNP B-NP B-LOC", "",
             "Mary NNP B-NP B-PER", "Smith NNP I-NP I-PER", "likes VBZ B-VP O", "London NNP B-NP B-LOC", ""]
    (d / "ner_train.txt").write_text("\n".join(conll + conll[2:]) + "\n")
    (d / "ner_dev.txt").write_text("\n".join(conll) + "\n")
    return d


@pytest.fixture
def toy_data(tmp_path) -> Path:
    return write_toy_files(tmp_path / "data")


def toy_tasks() -> dict:
    return {
        "sent": {"type": "classification", "train": "sent_train.tsv", "dev": "sent_dev.tsv",
                 "columns": {"text": "sentence", "label": "label"}, "metric": ["accuracy", "f1", "mcc", "roc_auc"]},
        "sts": {"type": "regression", "train": "sts_train.tsv", "dev": "sts_dev.tsv",
                "columns": {"text": "s1", "text_pair": "s2", "label": "score"}},
        "mc": {"type": "multiple_choice", "format": "jsonl", "train": "mc_train.jsonl", "dev": "mc_dev.jsonl",
               "columns": {"text": "premise", "choices": ["choice1", "choice2"], "label": "label"}},
        "ner": {"type": "sequence_labeling", "format": "conll", "train": "ner_train.txt", "dev": "ner_dev.txt",
                "columns": {"tokens": 0, "tags": 3}},
    }


@pytest.fixture
def toy_config(tiny_bert, toy_data, tmp_path) -> dict:
    return {
        "backbone": tiny_bert,
        "data_dir": str(toy_data),
        "run_dir": str(tmp_path / "run"),
        "seed": 1,
        "max_length": 32,
        "tasks": toy_tasks(),
        "training": {"max_steps": 12, "batch_size": 4, "eval_every": 6, "lr": 1e-3, "progress": False,
                     "precision": "fp32"},
    }
