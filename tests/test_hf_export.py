"""A trained task leaves mtbert: `export --format hf` writes a folder transformers' AutoModelFor* classes and
pipeline() load as they are, with mtbert's logits and labels; heads no transformers class computes are
refused; every saved model carries a Hugging Face model card with the run's dev scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from serve_fixtures import serve_config, write_toy_data

from mtbert.cli import main
from mtbert.config import validate
from mtbert.data.features import collate, encode
from mtbert.data.readers import read_split
from mtbert.inference.predictor import Predictor
from mtbert.rundir import load_model

EXPORTABLE = {"sent": "AutoModelForSequenceClassification", "sts": "AutoModelForSequenceClassification",
              "mc": "AutoModelForMultipleChoice", "ner": "AutoModelForTokenClassification",
              "polar": "AutoModelForSequenceClassification", "mlp": "AutoModelForSequenceClassification"}


@pytest.fixture(scope="module")
def pooler_run(tiny_bert, tmp_path_factory) -> Path:
    """The serving run's tasks with the pooler heads transformers has (a softmax and a bce classifier, a
    pair regression, choices with a question, tags), and three it has not: a separately encoded pair, a
    ReLU regression and a [CLS]-pooled classifier. Head 'mlp' on [CLS] is the pooler's layout and exports; on
    the pooler or on tags it does not."""
    from mtbert.training.trainer import train

    root = tmp_path_factory.mktemp("hf")
    write_toy_data(root / "data")
    cfg = serve_config(tiny_bert, root / "data")
    tasks = cfg["tasks"]
    for name in ("sent", "sts", "mc", "polar", "para", "len"):
        tasks[name]["pooling"] = "pooler"
    tasks["sent"]["dataset"] = "toy sentiment"
    tasks["len"]["output_activation"] = "relu"
    tasks["cls"] = {**tasks["sent"], "pooling": "cls"}
    tasks["mlp"] = {**tasks["sent"], "pooling": "cls", "head": "mlp"}
    tasks["pmlp"] = {**tasks["sent"], "head": "mlp"}
    tasks["nermlp"] = {**tasks["ner"], "head": "mlp"}
    train(validate(cfg), root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def exported(pooler_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    for task in EXPORTABLE:
        assert main(["-q", "export", str(pooler_run), "--format", "hf", "--task", task, "-o", str(root / task)]) == 0
    return {task: root / task for task in EXPORTABLE}


def mtbert_batch(cfg, tokenizer, labels, task: str) -> dict[str, torch.Tensor]:
    spec = cfg.tasks[task]
    feats = encode(spec.type, read_split(cfg, task, "dev"), tokenizer, cfg.max_length_for(task), labels.get(task), task,
                   with_labels=False, pair_encoding=spec.pair_encoding, questions=spec.questions)
    return {k: v for k, v in collate(spec.type, feats, tokenizer.pad_token_id).items() if k != "labels"}


@pytest.mark.parametrize("task", list(EXPORTABLE))
def test_transformers_loads_the_task_with_mtberts_logits(pooler_run, exported, task):
    import transformers

    folder = exported[task]
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.bin"))
    model = getattr(transformers, EXPORTABLE[task]).from_pretrained(folder).eval()
    config = json.loads((folder / "config.json").read_text())
    cfg, mt, tokenizer, labels = load_model(pooler_run)
    kind = cfg.tasks[task].type
    assert config["architectures"] == [{"sequence_labeling": "BertForTokenClassification",
                                        "multiple_choice": "BertForMultipleChoice"}.get(kind,
                                                                                         "BertForSequenceClassification")]
    if task in labels:
        assert model.config.id2label == dict(enumerate(labels[task]))
    if kind == "regression":
        assert config["problem_type"] == "regression" and model.config.num_labels == 1
    batch = mtbert_batch(cfg, tokenizer, labels, task)
    with torch.no_grad():
        want, got = mt(task, batch), model(**batch).logits
    if task == "polar":  # a bce head's one logit z is exported as the two logits [0, z]
        assert torch.equal(got[:, 0], torch.zeros_like(want))
        got = got[:, 1]
    elif kind == "regression":
        got = got.squeeze(-1)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5


def test_pipeline_gives_mtberts_labels(pooler_run, exported):
    from transformers import pipeline

    predictor = Predictor(pooler_run, precision="fp32")
    texts = ["a great fine movie", "terrible and bad", "boring bad story", "good and lovely", "Paris is lovely"]
    for task in ("sent", "polar"):
        got = pipeline("text-classification", model=str(exported[task]))(texts)
        want = predictor.predict(task, texts, return_probas=True)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert [g["score"] for g in got] == pytest.approx([w["probas"][w["label"]] for w in want], abs=1e-5)
    pairs = [{"text": a, "text_pair": b} for a, b in zip(texts, reversed(texts), strict=True)]
    got = pipeline("text-classification", model=str(exported["sts"]))(pairs)
    assert [g["label"] for g in got] == ["sts"] * len(pairs)  # the score, no sigmoid: problem_type regression
    assert [g["score"] for g in got] == pytest.approx([w["score"] for w in predictor.predict("sts", pairs)], abs=1e-5)

    sentences = ["John lives in Paris", "Mary Smith likes London", "great fun"]
    tagger = pipeline("token-classification", model=str(exported["ner"]), ignore_labels=[])
    for sentence, want in zip(sentences, predictor.predict("ner", sentences), strict=True):
        # mtbert tags a word by its first sub-token, as the pipeline's sub-tokens that start a word
        firsts = [t["entity"] for t in tagger(sentence) if t["start"] == 0 or sentence[t["start"] - 1] == " "]
        assert firsts == want["label"]


@pytest.mark.parametrize("task, message", [
    ("para", "tasks.para.pair_encoding: 'separate' encodes text and text_pair apart, which "
             "BertForSequenceClassification does not; set pair_encoding: cross and train again"),
    ("len", "tasks.len.output_activation: 'relu' clips the score, which BertForSequenceClassification does not; "
            "set output_activation: none and train again"),
    ("cls", "tasks.cls.pooling: 'cls' gives the head [CLS]'s hidden state, but BertForSequenceClassification gives "
            "it the pooler output (a dense+tanh layer on [CLS]); set pooling: pooler (or head: mlp) and train again"),
    ("pmlp", "tasks.pmlp.head: 'mlp' on pooling 'pooler' is two dense layers on [CLS], BertForSequenceClassification "
             "has one; use the ONNX export (mtbert export RUN) instead"),
    ("nermlp", "tasks.nermlp.head: 'mlp' puts a hidden layer before the output layer, which BertForTokenClassification "
               "does not have; use the ONNX export (mtbert export RUN) instead"),
    ("nope", "--task nope: {run} has no such task; its tasks: sent, sts, mc, ner, polar, para, len, cls, mlp, pmlp, "
             "nermlp"),
])
def test_heads_transformers_cannot_compute_are_refused(pooler_run, tmp_path, capsys, task, message):
    out = tmp_path / "out"
    assert main(["export", str(pooler_run), "--format", "hf", "--task", task, "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"mtbert: error: {message.format(run=pooler_run)}\n"
    assert not out.exists()


def test_electra_sequence_classification_is_refused_and_its_tagger_exported(tmp_path, capsys):
    """ELECTRA's classification head is a dense+gelu on [CLS] and ELECTRA has no pooler: nothing to set,
    the ONNX export is the way out. Its token head is mtbert's."""
    import transformers
    from transformers import AutoTokenizer, ElectraConfig, ElectraModel

    from mtbert.modeling.encoder import resolve_backbone
    from mtbert.training.trainer import train

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    torch.manual_seed(0)
    ElectraModel(ElectraConfig(vocab_size=len(tokenizer), hidden_size=32, embedding_size=16, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path / "electra")
    tokenizer.save_pretrained(tmp_path / "electra")
    write_toy_data(tmp_path / "data")
    cfg = serve_config(str(tmp_path / "electra"), tmp_path / "data", max_steps=2)
    cfg["tasks"] = {k: cfg["tasks"][k] for k in ("sent", "ner")}
    train(validate(cfg), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "hf", "--task", "sent", "-o", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == (
        "mtbert: error: tasks.sent: no transformers class computes this classification head on a 'electra' encoder "
        "(exact ones exist for bert); use the ONNX export (mtbert export RUN) instead\n")
    assert main(["-q", "export", str(tmp_path / "run"), "--format", "hf", "--task", "ner", "-o", str(tmp_path / "n")]) == 0
    model = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "n").eval()
    assert type(model).__name__ == "ElectraForTokenClassification"
    _, mt, tok, labels = load_model(tmp_path / "run")
    batch = {k: v for k, v in tok(["John lives in Paris", "great fun"], padding=True, return_tensors="pt").items()}
    with torch.no_grad():
        assert (model(**batch).logits - mt("ner", batch)).abs().max() <= 1e-5


def test_export_folder_rules_and_argument_errors(pooler_run, tmp_path, capsys):
    def export(*extra) -> int:
        return main(["-q", "export", str(pooler_run), "--format", "hf", *extra])

    earlier = tmp_path / "earlier"
    assert export("--task", "sent", "-o", str(earlier)) == 0
    manifest = json.loads((earlier / "manifest.json").read_text())
    assert export("--task", "sent", "-o", str(earlier)) == 2
    assert "holds an earlier export; pass --force to replace it" in capsys.readouterr().err
    assert export("--task", "polar", "-o", str(earlier), "--force") == 0  # replaces its own files only
    assert json.loads((earlier / "manifest.json").read_text())["task"] == "polar"
    assert manifest["task"] == "sent" and manifest["class"] == "BertForSequenceClassification"
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert export("--task", "sent", "-o", str(mine), "--force") == 2
    assert "holds files that mtbert export did not write (notes.txt)" in capsys.readouterr().err
    assert export("--task", "sent", "-o", str(pooler_run / "model" / "hf")) == 2
    assert "export never writes into a model" in capsys.readouterr().err
    assert export("-o", str(tmp_path / "x")) == 2
    assert capsys.readouterr().err == "mtbert: error: --format hf exports one task: add --task TASK\n"
    assert export("--task", "sent", "--quantize", "int8", "-o", str(tmp_path / "x")) == 2
    assert "--quantize applies to --format onnx" in capsys.readouterr().err
    assert main(["export", str(pooler_run), "--task", "sent", "-o", str(tmp_path / "x")]) == 2
    assert "--task applies to --format hf" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert export("--task", "ner") == 0  # default folder: RUN_DIR/hf-TASK
    assert (pooler_run / "hf-ner" / "config.json").is_file()


def report_scores(run: Path) -> dict[tuple[str, str], float]:
    rows = re.findall(r"^\| (\w+) \| \w+ \| (\w+)(?: \(primary\))? \| (-?[\d.]+) \|", (run / "report.md").read_text(),
                      re.MULTILINE)
    return {(task, metric): float(value) for task, metric, value in rows}


def card_scores(card: ModelCard) -> dict[tuple[str, str], float]:
    return {(r.task_name, r.metric_type): round(r.metric_value, 4) for r in card.data.eval_results}


def test_model_card_parses_and_gives_reports_scores(pooler_run, exported):
    card = ModelCard.load(pooler_run / "model" / "README.md")
    assert card.data.library_name == "mtbert" and "multi-task" in card.data.tags
    assert card.data.base_model is None  # the tiny BERT is a local folder, not a hub name
    want = report_scores(pooler_run)
    assert len(want) == 25 and card_scores(card) == want
    by_task = {r.task_name: r for r in card.data.eval_results}
    assert by_task["sent"].dataset_name == "toy sentiment" and by_task["sts"].dataset_name == "sts"
    assert by_task["ner"].task_type == "token-classification" and by_task["mc"].task_type == "multiple-choice"
    for section in ("## Tasks", "## Training", "## Dev scores", "## Use it with mtbert", "## Use a task in transformers",
                    f"mtbert export {pooler_run} --format hf --task ner -o ner-hf", "`para`: not exportable"):
        assert section in card.text
    assert "- 12 steps, batch size 4, learning rate 0.001" in card.text

    task = ModelCard.load(exported["ner"] / "README.md")
    assert task.data.library_name == "transformers" and task.data.pipeline_tag == "token-classification"
    assert card_scores(task) == {k: v for k, v in want.items() if k[0] == "ner"}
    assert "AutoModelForTokenClassification.from_pretrained('ner')" in task.text


def test_hub_backbones_are_named_as_base_model():
    from mtbert.modelcard import hub_name

    assert hub_name("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_name("bert-base-uncased") == "bert-base-uncased" and hub_name("google/electra-small-discriminator")
    assert hub_name("/tmp") is None and hub_name("./my model") is None


def test_a_minbert_run_exports_to_transformers_bert(tiny_bert, tmp_path):
    """minbert saves BERT's checkpoint format: its runs load into transformers' BERT classes as they are."""
    import transformers

    from mtbert.training.trainer import train

    write_toy_data(tmp_path / "data")
    cfg = serve_config(tiny_bert, tmp_path / "data", max_steps=2)
    cfg["backbone_impl"] = "minbert"
    cfg["tasks"] = {"sent": {**cfg["tasks"]["sent"], "pooling": "pooler"}, "ner": cfg["tasks"]["ner"]}
    train(validate(cfg), tmp_path / "run")
    _, mt, tokenizer, _ = load_model(tmp_path / "run")
    batch = dict(tokenizer(["John lives in Paris", "great fun"], padding=True, return_tensors="pt"))
    for task, auto in (("sent", "AutoModelForSequenceClassification"), ("ner", "AutoModelForTokenClassification")):
        out = tmp_path / task
        assert main(["-q", "export", str(tmp_path / "run"), "--format", "hf", "--task", task, "-o", str(out)]) == 0
        model = getattr(transformers, auto).from_pretrained(out).eval()
        with torch.no_grad():
            assert (model(**batch).logits - mt(task, batch)).abs().max() <= 1e-5, task
