"""DeepPavlov multitask configs in mtbert: conversion (unit tests on the seed's fragments), the seed's
iterator, DeepPavlov's output shapes, and the seed's multitask_example and mt_glue trained for a few steps
on slices of ../shared/data (offline, the tiny BERT)."""

from __future__ import annotations

import copy
import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SHARED_DATA

from mtbert.cli import main
from mtbert.compat import deeppavlov as dp
from mtbert.compat.dp_metrics import ner_token_f1
from mtbert.compat.dp_readers import merge_task_defaults
from mtbert.compat.findings import Findings
from mtbert.config import finish, load_config
from mtbert.data import multitask_batches
from mtbert.errors import UserError
from mtbert.evaluation.metrics import resolve_custom

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs/deeppavlov/multitask_example.json"
MT_GLUE = ROOT / "configs/deeppavlov/mt_glue.json"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")


def _example(data: Path, **variables) -> dict:
    raw = json.loads(EXAMPLE.read_text())
    raw["metadata"]["variables"].update(DATA_PATH=str(data), **variables)
    return raw


@pytest.fixture
def conll_dir(tmp_path) -> Path:
    """The least a multitask_example conversion looks at on disk: the CoNLL folder's train.txt."""
    folder = tmp_path / "conll2003"
    folder.mkdir()
    (folder / "train.txt").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n")
    (folder / "valid.txt").write_text("Peter NNP B-NP B-PER\n\n")
    return tmp_path


def _problems(raw: dict) -> str:
    with pytest.raises(UserError) as err:
        dp.convert(raw, "dp.json")
    return str(err.value)


# ---------------------------------------------------------------- the seed's iterator


def test_multitask_batches_is_the_seed_example():
    assert list(multitask_batches([[0, 1, 2, 3, 4, 5, 6], [7, 8, 9]], 2)) == [
        [(0, 7), (1, 8)], [(2, 9), (3, None)], [(4, None), (5, None)], [(6, None)]]


def test_multitask_batches_edges():
    assert list(multitask_batches([range(3)], 5)) == [[(0,), (1,), (2,)]]
    assert list(multitask_batches([[], []], 2)) == []
    with pytest.raises(ValueError, match="positive integer"):
        list(multitask_batches([[1]], 0))


# ---------------------------------------------------------------- variables and task_defaults


def test_variables_resolve_in_order_keep_their_type_and_dp_env_wins(monkeypatch):
    raw = {"metadata": {"variables": {"ROOT": "/data", "MODELS": "{ROOT}/models", "N": 5}},
           "train": {"epochs": "{N}", "note": "{N} epochs in {MODELS}", "literal": "{{N}}"}}
    out = dp.resolve_variables(raw)
    assert out["train"] == {"epochs": 5, "note": "5 epochs in /data/models", "literal": "{N}"}
    monkeypatch.setenv("DP_ROOT", "/elsewhere")
    monkeypatch.setenv("DP_N", "2")
    out = dp.resolve_variables(raw)
    assert out["train"]["note"] == "2 epochs in /elsewhere/models"  # the env value flows into later variables
    assert out["metadata"]["variables"]["MODELS"] == "/elsewhere/models"


def test_undefined_variable_names_the_key():
    with pytest.raises(UserError, match=r"dp.json: chainer.pipe\[0\].save_path: variable 'MODEL_PATH' is not defined"):
        dp.resolve_variables({"chainer": {"pipe": [{"save_path": "{MODEL_PATH}/x"}]}}, "dp.json")


def test_task_defaults_are_deep_copied_and_can_be_refused():
    f = Findings()
    section = {"task_defaults": {"path": "glue", "data_files": {"train": "a.csv"}},
               "tasks": {"cola": {"name": "cola"}, "copa": {"path": "super_glue"},
                         "conll": {"use_task_defaults": False, "data_path": "x"}}}
    tasks = merge_task_defaults(section, "dataset_reader", f)
    assert tasks["cola"] == {"path": "glue", "data_files": {"train": "a.csv"}, "name": "cola"}
    assert tasks["copa"]["path"] == "super_glue"  # the task's key wins
    assert tasks["conll"] == {"data_path": "x"}
    tasks["cola"]["data_files"]["train"] = "changed.csv"
    assert tasks["copa"]["data_files"]["train"] == "a.csv" and not f.problems


def test_is_deeppavlov_config():
    assert dp.is_deeppavlov_config(json.loads(EXAMPLE.read_text()))
    assert dp.is_deeppavlov_config({"dataset_reader": {"class_name": "multitask_reader"}})
    assert not dp.is_deeppavlov_config(yaml.safe_load((ROOT / "configs/deeppavlov_example.yaml").read_text()))
    assert not dp.is_deeppavlov_config([1, 2])


# ---------------------------------------------------------------- conversion


def test_convert_the_multitask_example(conll_dir):
    out = dp.convert(_example(conll_dir, BACKBONE="my-bert", MODELS_PATH="/models"), "dp.json")
    assert out["backbone"] == "my-bert" and out["run_dir"] == "/models/multitask_example"
    assert out["seed"] == 42 and out["max_length"] == 200
    assert list(out["tasks"]) == ["cola", "rte", "stsb", "copa", "conll"]
    cola, rte, copa, conll = (out["tasks"][t] for t in ("cola", "rte", "copa", "conll"))
    assert cola == {"type": "classification", "format": "tsv", "header": False, "columns": {"text": 3, "label": 1},
                    "train": f"{conll_dir}/glue/cola/train.tsv", "dev": f"{conll_dir}/glue/cola/dev.tsv",
                    "labels": ["0", "1"], "metric": ["accuracy"], "pooling": "dp_pooler"}
    assert rte["columns"] == {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    assert out["tasks"]["stsb"]["columns"]["label"] == "score" and out["tasks"]["stsb"]["metric"] == ["pearson", "spearman"]
    assert out["tasks"]["stsb"]["bias_init"] == "target_mean"  # written out: DeepPavlov's is torch's draw
    assert copa["format"] == "jsonl" and copa["dev"].endswith("superglue/copa/val.jsonl")
    assert copa["columns"] == {"text": "premise", "question": "question", "choices": ["choice1", "choice2"],
                               "label": "label"}
    assert "test" not in cola and "test" not in copa  # GLUE/SuperGLUE test labels are hidden
    # "#vocab_conll.len": the tag set comes from train; no test.txt in the folder, so no test split
    assert conll == {"type": "sequence_labeling", "format": "conll", "columns": {"tokens": 0, "tags": -1},
                     "train": f"{conll_dir}/conll2003/train.txt", "dev": f"{conll_dir}/conll2003/valid.txt",
                     "metric": ["ner_f1", "mtbert.compat.dp_metrics:ner_token_f1"], "label_all_subtokens": False}
    # DeepPavlov 1.7's training semantics (docs/deeppavlov.md): its epoch, AdamW on every parameter, its lr
    # drop, and its validations (once before training, then every epoch as the example's val_every_n_epochs asks)
    assert out["training"] == {
        "gradient_accumulation_steps": 1, "epochs": 5, "batch_size": 32, "schedule": "deeppavlov",
        "sampling": "plain", "iterator_batch_size": 8, "lr": 2e-5, "weight_decay": 0.01,
        "weight_decay_exempt": ["LayerNorm"], "precision": "auto", "warmup": 0.0, "lr_schedule": "constant",
        "clip_norm": None, "lr_drop_patience": 2, "lr_drop_div": 2.0, "lr_drop": "once_per_plateau", "min_lr": 1e-7,
        "lr_drop_reload_best": True, "patience": 3, "validate_first": True, "eval_every_epochs": 1,
        "target_metric": "mtbert.compat.dp_metrics:deeppavlov[multitask_accuracy](rte.y_true,cola.y_true,"
                         "copa.y_true,rte.y_pred,cola.y_pred,copa.y_pred)"}
    cfg = finish(out, "dp.json", check_files=False)
    assert cfg.training.clip_norm is None and cfg.tasks["conll"].num_labels is None


def test_every_unsupported_key_is_named_in_one_error(conll_dir):
    raw = _example(conll_dir)
    raw["dataset_reader"]["tasks"]["cola"]["downsample_ratio"] = 0.5
    raw["dataset_reader"]["tasks"]["conll"]["provide_pos"] = True
    raw["chainer"]["pipe"][2]["focal"] = True
    raw["chainer"]["pipe"][2]["tasks"]["rte"]["multilabel"] = True
    raw["server"] = {}
    msg = _problems(raw)
    assert msg.startswith("dp.json: not supported by mtbert's DeepPavlov import: ") and "\n" not in msg
    for key in ("dataset_reader.tasks.cola.downsample_ratio", "dataset_reader.tasks.conll.provide_pos",
                "chainer.pipe[2].focal", "chainer.pipe[2].tasks.rte.multilabel", "server: not supported"):
        assert key in msg


def test_tensorboard_log_dir_becomes_the_tensorboard_logger(conll_dir):
    raw = _example(conll_dir)
    raw["train"]["tensorboard_log_dir"] = "logs"
    assert dp.convert(raw, "dp.json")["training"]["loggers"] == ["tensorboard"]


def test_unsupported_components_and_wiring_are_named(conll_dir):
    raw = _example(conll_dir)
    raw["chainer"]["pipe"].insert(0, {"class_name": "input_splitter", "in": ["x_rte"], "out": ["x_rte_a"]})
    raw["chainer"]["pipe"][1]["preprocessors"][3] = "TorchTransformersPreprocessor"
    raw["chainer"]["pipe"][3]["tasks"]["conll"]["options"] = "#nosuch.len"
    msg = _problems(raw)
    assert "chainer.pipe[0].class_name: component 'input_splitter' is not supported" in msg
    assert "TorchTransformersPreprocessor does not prepare task copa (multiple_choice)" in msg
    assert "chainer.pipe[3].tasks.conll.options: '#nosuch.len' does not reference" in msg


def test_iterator_and_train_sections(conll_dir):
    def training(it=None, tr=None, tf=None):
        raw = _example(conll_dir)
        raw["dataset_iterator"].update(it or {})
        raw["train"].update(tr or {})
        raw["chainer"]["pipe"][2].update(tf or {})
        return dp.convert(raw)["training"]

    assert training({"sampling_mode": "uniform"})["sampling"] == "uniform"
    assert training({"sampling_mode": "anneal", "batch_size": 16})["iterator_batch_size"] == 16
    acc = {"gradient_accumulation_steps": 2}
    t = training({**acc, "steps_per_epoch": 10}, {"max_batches": 7, "val_every_n_batches": 50}, acc)
    assert (t["gradient_accumulation_steps"], t["steps_per_epoch"], t["max_steps"], t["eval_every"]) == (2, 5, 4, 25)
    # DeepPavlov's passes hold batch_size // gradient_accumulation_steps examples
    assert t["batch_size"] == 16 and t["eval_every_epochs"] == 1
    t = training(tr={"val_every_n_epochs": 2, "val_every_n_batches": 30, "validate_first": False})
    assert (t["eval_every_epochs"], t["eval_every"], t["validate_first"]) == (2, 30, False)
    assert training(tf={"load_before_drop": False})["lr_drop_reload_best"] is False
    assert training(tf={"optimizer_parameters": {"lr": 1e-5, "weight_decay": 0.1}})["weight_decay"] == 0.1
    t = training(tr={"validation_patience": None, "val_every_n_epochs": None}, tf={
        "clip_norm": 1.5, "freeze_embeddings": True, "min_learning_rate": 1e-7, "optimizer_parameters": {"lr": "3e-5"}})
    assert (t["clip_norm"], t["freeze_encoder"], t["min_lr"], t["lr"]) == (1.5, True, 1e-7, 3e-5)
    assert "patience" not in t and "eval_every" not in t  # null patience: no early stopping
    assert training(tr={"validation_patience": 7})["patience"] == 7
    raw = _example(conll_dir)
    del raw["train"]["validation_patience"]
    assert dp.convert(raw)["training"]["patience"] == 5  # DeepPavlov's default
    raw = _example(conll_dir)
    raw["dataset_iterator"].update(sampling_mode="random", gradient_accumulation_steps=2)
    raw["train"].update(epochs=-1, batch_size=1, val_every_n_epochs=-1)  # no validation: DeepPavlov never stops
    msg = _problems(raw)
    for part in ("dataset_iterator.sampling_mode: 'random'", "chainer.pipe[2].gradient_accumulation_steps: 1 but dataset_iterator has 2",
                 "train.epochs: -1 with no validation during training"):
        assert part in msg


def test_transformer_task_settings(conll_dir):
    raw = _example(conll_dir)
    transformer = raw["chainer"]["pipe"][2]
    transformer.update(dropout=0.2)
    transformer["tasks"]["rte"]["weight"] = [1.0, 3.0]
    tasks = dp.convert(raw)["tasks"]
    assert tasks["rte"]["class_weights"] == [1.0, 3.0] and tasks["copa"]["dropout"] == 0.2
    transformer["tasks"]["cola"]["options"] = 3
    transformer["tasks"]["stsb"]["options"] = 2
    transformer["tasks"]["rte"]["type"] = "regression"
    msg = _problems(raw)
    assert ("dataset_reader.tasks.rte.name: glue/rte is a classification dataset, but the multitask_transformer "
            "declares task rte regression") in msg
    assert "chainer.pipe[2].tasks.cola.options: 3, but the dataset has 2 classes (0, 1)" in msg
    assert "chainer.pipe[2].tasks.stsb.options: 2; a regression head has one output" in msg


def test_huggingface_sources_hub_data_files_and_errors(conll_dir):
    raw = _example(conll_dir)
    tasks = raw["dataset_reader"]["tasks"]
    del tasks["cola"]["data_dir"]  # the hub, as in DeepPavlov's own config
    tasks["rte"] = {"name": "rte", "data_files": {"train": "d/rte.csv", "validation": "d/rte_dev.csv"}}
    tasks["stsb"] = {"name": "stsb", "data_files": {"train": "d/sts.json", "validation": "d/sts_dev.json"}}
    out = dp.convert(raw)["tasks"]
    assert out["cola"] == {"type": "classification", "format": "hf", "hf_path": "glue", "hf_name": "cola",
                           "columns": {"text": "sentence", "label": "label"}, "train": "train", "dev": "validation",
                           "labels": ["unacceptable", "acceptable"], "metric": ["accuracy"],
                           "pooling": "dp_pooler"}  # ClassLabel order
    assert out["rte"]["format"] == "csv" and out["rte"]["train"] == "d/rte.csv"
    assert out["rte"]["columns"] == {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    assert out["stsb"]["format"] == "hf" and out["stsb"]["hf_path"] == "json"
    assert out["stsb"]["data_files"] == {"train": "d/sts.json", "validation": "d/sts_dev.json"}
    assert (out["stsb"]["train"], out["stsb"]["dev"]) == ("train", "validation")
    tasks["rte"]["data_files"] = {"train": "d/rte.csv", "validation": "d/rte_dev.jsonl"}
    tasks["stsb"]["data_files"] = {"train": "d/sts.json"}
    tasks["cola"]["path"] = "my/cola"  # no table entry, and the iterator's features are required
    raw["dataset_iterator"]["tasks"]["cola"] = {}
    raw["dataset_iterator"]["tasks"]["copa"]["features"] = ["premise", "choices"]
    tasks["copa"]["path"] = "super_glue"
    msg = _problems(raw)
    for part in ("dataset_reader.tasks.rte.data_files: use one file type", "no 'validation' entry for the valid split",
                 "dataset_iterator.tasks.cola.features: missing",
                 "dataset_iterator.tasks.copa.features: ['premise', 'choices'] for a dataset whose inputs are "
                 "['contexts', 'choices']"):
        assert part in msg


def test_custom_dataset_columns_come_from_the_iterator(conll_dir):
    raw = _example(conll_dir)
    files = {"train": "n.tsv", "validation": "v.tsv", "test": "t.tsv"}  # test: from task_defaults
    raw["dataset_reader"]["tasks"]["rte"] = {"path": "csv", "data_files": files, "delimiter": "\t"}
    raw["dataset_iterator"]["tasks"]["rte"] = {"features": ["premise", "hypothesis"], "label": "gold"}
    rte = dp.convert(raw)["tasks"]["rte"]
    assert rte["format"] == "tsv" and rte["delimiter"] == "\t" and rte["test"] == "t.tsv"
    assert rte["columns"] == {"text": "premise", "text_pair": "hypothesis", "label": "gold"}
    assert "labels" not in rte and rte["num_labels"] == 2


def test_conll_reader_reads_what_the_folder_holds(conll_dir):
    (conll_dir / "conll2003" / "test.txt").write_text("Paris NNP B-NP B-LOC\n\n")
    assert dp.convert(_example(conll_dir))["tasks"]["conll"]["test"] == f"{conll_dir}/conll2003/test.txt"
    (conll_dir / "conll2003" / "train.txt").unlink()
    assert "no train.txt in" in _problems(_example(conll_dir))


def test_metrics_custom_and_target(conll_dir, tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(
        "def mean_abs(y_true, y_pred):\n    return -abs(sum(y_true) - sum(y_pred))\n"
        "def two_tasks(y1, p1, y2, p2):\n    return float(p1[0][1] + y2[0])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = _example(conll_dir)
    raw["train"]["metrics"] = [
        {"name": "my_metrics:two_tasks", "inputs": ["y_cola", "y_cola_pred_probas", "y_stsb", "y_stsb_pred"]},
        {"name": "my_metrics:mean_abs", "inputs": ["y_stsb", "y_stsb_pred"]},
        {"name": "f1_weighted", "inputs": ["y_rte", "y_rte_pred_ids"]},
        "roc_auc"]  # a bare name: DeepPavlov feeds it in_y + out; it spans tasks, so it cannot be mapped
    msg = _problems(raw)
    assert "train.metrics[3].inputs" in msg and "'y_ids_conll'" not in msg
    raw["train"]["metrics"][3] = {"name": "roc_auc", "inputs": ["y_cola", "y_cola_pred_probas"]}
    out = dp.convert(raw)
    assert out["tasks"]["stsb"]["metric"] == ["my_metrics:mean_abs"]
    assert out["tasks"]["rte"]["metric"] == ["mtbert.compat.dp_metrics:f1_weighted"]
    assert out["tasks"]["cola"]["metric"] == ["roc_auc"]
    target = out["training"]["target_metric"]
    assert target == ("mtbert.compat.dp_metrics:deeppavlov[my_metrics:two_tasks]"
                      "(cola.y_true,cola.probas,stsb.y_true,stsb.y_pred)")
    fn = resolve_custom(target)  # what the trainer calls with its dev outputs
    outputs = {"cola": {"y_true": np.array([1]), "y_pred": np.array([1]), "probas": np.array([[0.3, 0.7]])},
               "stsb": {"y_true": np.array([2.0]), "y_pred": np.array([1.5]), "probas": None}}
    assert fn(outputs) == pytest.approx(2.7)
    with pytest.raises(UserError, match="needs dev predictions of task"):
        fn({"cola": outputs["cola"]})
    raw["train"]["metrics"] = [{"name": "bleu", "inputs": ["y_cola", "y_cola_pred_ids"]},
                               {"name": "accuracy", "inputs": ["y_cola", "y_cola_pred_probas"]},
                               {"name": "accuracy", "inputs": ["y_cola", "bert_features_cola"]}]
    msg = _problems(raw)
    assert "train.metrics[0].name: DeepPavlov metric 'bleu' has no mtbert equivalent" in msg
    assert "train.metrics[1].inputs: accuracy on ['y_cola', 'y_cola_pred_probas']" in msg
    assert "train.metrics[2].inputs: 'bert_features_cola' is not gold data" in msg


def test_single_task_first_metric_is_a_plain_target(conll_dir):
    raw = _example(conll_dir)
    raw["train"]["metrics"] = raw["train"]["metrics"][1:]
    assert dp.convert(raw)["training"]["target_metric"] == "conll.ner_f1"


def test_ner_token_f1_is_deeppavlovs_token_level_score():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "B-PER", "O", "O"], ["B-LOC", "B-ORG"]]
    # types without B/I: PER PER O LOC | O ORG vs PER PER O O | LOC ORG -> 3 hits, 4 gold, 4 predicted
    assert ner_token_f1(gold, pred) == pytest.approx(0.75)
    assert ner_token_f1([["O"]], [["O"]]) == 0.0


def test_proba2labels_variants():
    rows = [[0.1, 0.6, 0.3], None, [0.5, 0.2, 0.3]]
    assert dp.proba2labels(rows, max_proba=True) == [1, None, 0]
    assert dp.proba2labels(rows, confidence_threshold=0.25) == [[1, 2], None, [0, 2]]
    assert dp.proba2labels(rows, top_n=2) == [[1, 2], None, [0, 2]]
    assert dp.proba2labels(rows, max_proba=True, confidence_threshold=0.55) == [[1], None, []]  # threshold first
    assert dp.proba2labels([[0.3, 0.7], [0.8, 0.2]], confidence_threshold=0.5, is_binary=True) == [1, 0]
    assert dp.proba2labels([None, None], max_proba=True) == []  # a task not asked


def test_proba2labels_with_several_inputs_and_config_errors(conll_dir):
    raw = _example(conll_dir)
    pipe = raw["chainer"]["pipe"]
    pipe[3:6] = [{"class_name": "proba2labels", "top_n": 1, "in": ["y_cola_pred_probas", "y_rte_pred_probas"],
                  "out": ["y_cola_pred_ids", "y_rte_pred_ids"]},
                 {"class_name": "proba2labels", "max_proba": True, "in": ["y_copa_pred_probas"],
                  "out": ["y_copa_pred_ids"]}]
    raw["train"]["metrics"] = raw["train"]["metrics"][1:]
    _, chain = dp.read_chain_for_prediction(raw)
    assert [s.inputs for s in chain.steps if s.kind == "proba2labels"] == [
        ["y_cola_pred_probas", "y_rte_pred_probas"], ["y_copa_pred_probas"]]
    assert chain.vars["y_rte_pred_ids"].task == "rte"
    assert "train.metrics[2].inputs: 'y_cola_pred_ids' holds lists of class ids (top_n" in _problems(raw)
    pipe[3] = {"class_name": "proba2labels", "in": ["y_stsb_pred"], "out": ["y_stsb_ids"]}
    pipe[2]["return_probas"] = False
    msg = _problems(raw)
    assert "proba2labels needs max_proba: true, confidence_threshold or top_n" in msg
    assert "'y_copa_pred_probas' holds class ids (return_probas is false)" in msg


def test_traps_are_logged_once(conll_dir, caplog):
    with caplog.at_level(logging.INFO, logger="mtbert"):
        dp.convert(_example(conll_dir))
    messages = [r.getMessage() for r in caplog.records]
    for trap in ("mtbert saves the model at every improvement", "idle heads:", "NumPy's unseeded global generator",
                 "hide their test labels"):  # the last one holds for four tasks, and is said once
        assert sum(trap in m for m in messages) == 1
    raw = _example(conll_dir)
    del raw["train"]["val_every_n_epochs"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mtbert"):
        dp.convert(raw)
    assert any(r.levelno == logging.WARNING and "it would evaluate the untrained model" in r.getMessage()
               for r in caplog.records)


def test_inference_only_config_is_not_converted(conll_dir):
    raw = _example(conll_dir)
    for key in ("dataset_reader", "dataset_iterator", "train"):
        del raw[key]
    with pytest.raises(UserError, match=r"inference-only DeepPavlov config \(.*build_model\(config\)"):
        dp.convert(raw, "dp.json")


# ---------------------------------------------------------------- trained end to end on real slices


def _head(src: Path, dst: Path, lines: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(line for _, line in zip(range(lines), f, strict=False)), encoding="utf-8")


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("dp_data")
    for rel, n in [("glue/cola/train.tsv", 100), ("glue/cola/dev.tsv", 40), ("glue/rte/train.tsv", 100),
                   ("glue/rte/dev.tsv", 40), ("glue/stsb/train.tsv", 100), ("glue/stsb/dev.tsv", 40),
                   ("glue/sst2/train.tsv", 100), ("glue/sst2/dev.tsv", 40), ("glue/mrpc/train.tsv", 100),
                   ("glue/mrpc/dev.tsv", 40), ("superglue/copa/train.jsonl", 60), ("superglue/copa/val.jsonl", 30),
                   ("conll2003/train.txt", 2000), ("conll2003/valid.txt", 300)]:
        _head(SHARED_DATA / rel, data / rel, n)
    _head(SHARED_DATA / "conll2003/valid.txt", data / "conll2003/test.txt", 300)
    return data


@pytest.fixture(scope="module")
def five_task(slices, tiny_bert, tmp_path_factory):
    """The seed's multitask_example on the slices, trained for six batches (DeepPavlov's max_batches)."""
    tmp = tmp_path_factory.mktemp("five")
    raw = _example(slices, BACKBONE=tiny_bert, MODELS_PATH=str(tmp / "models"))
    raw["train"].update(max_batches=6, evaluation_targets=["valid", "test"])
    config = tmp / "multitask_example.json"
    config.write_text(json.dumps(raw))
    return config, tmp / "models" / "multitask_example"


def _train(config: Path, capsys) -> str:
    assert main(["train", str(config), "--set", "training.precision=fp32", "--set", "training.progress=false"]) == 0
    return capsys.readouterr().out


@needs_data
def test_multitask_example_trains_saves_and_evaluates_test(five_task, capsys, caplog):
    config, run_dir = five_task
    with caplog.at_level(logging.INFO, logger="mtbert"):
        out = _train(config, capsys)
    assert any("a DeepPavlov config; converted" in r.getMessage() for r in caplog.records)
    assert (run_dir / "model" / "heads.safetensors").is_file()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 6 and set(records[-1]["dev"]) == {"cola", "rte", "stsb", "copa", "conll"}
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["max_steps"] == 6 and saved["tasks"]["cola"]["labels"] == ["0", "1"]
    assert saved["training"]["precision"] == "fp32"  # --set applies to the converted config
    # evaluation_targets test: the CoNLL folder has a test.txt, so conll is scored on it after training
    report, _, test_table = out.partition("run dir:")
    assert "| conll |" in test_table and "| cola |" not in test_table


@needs_data
def test_predictions_come_back_in_deeppavlovs_shapes(five_task, capsys):
    config, run_dir = five_task
    if not (run_dir / "model").exists():
        _train(config, capsys)
    model = dp.build_model(config)
    cola, rte, stsb, copa, conll = model(
        ["The cat sat on the mat.", "Him went store."],
        [("A man is walking.", "A person moves.")] * 2,
        [["A plane takes off.", "An air plane is taking off."], None],
        [("My body cast a shadow. What was the cause of this?", ["The sun was rising.", "The grass was cut."]),
         ("The man turned on the faucet. What happened as a result?", ["The toilet filled.", "Water flowed."])],
        [["John", "lives", "in", "Paris", "."], "Mary visited London"])
    assert len(cola) == 2 and all(i in (0, 1) for i in cola)  # proba2labels: class ids
    assert len(rte) == 2 and all(isinstance(i, int) for i in rte)
    assert isinstance(stsb[0], float) and stsb[1] is None
    assert all(i in (0, 1) for i in copa)
    assert [len(tags) for tags in conll] == [5, 3] and all(isinstance(t, str) for t in conll[0])
    # only conll asked: the other tasks give [] (DeepPavlov's shape)
    only = model([None], [None], [None], [None], [["Ivan", "left", "Oslo"]])
    assert only[:4] == [[], [], [], []] and len(only[4][0]) == 3
    # the dict form, and the probabilities DeepPavlov's return_probas gives
    raw = json.loads(config.read_text())
    raw["chainer"]["out"] = ["y_cola_pred_probas", "y_copa_pred_probas", "y_conll_pred_ids"]
    got = dp.predict_deeppavlov(model.predictor, raw, {"x_cola": ["Hello there."], "x_conll": [["Hi", "Bob"]],
                                                       "x_copa": [{"text": "It rained.", "question": "effect",
                                                                   "choices": ["Wet", "Dry"]}]})
    assert list(got) == raw["chainer"]["out"]
    assert len(got["y_cola_pred_probas"][0]) == 2 and sum(got["y_cola_pred_probas"][0]) == pytest.approx(1, abs=1e-5)
    assert len(got["y_copa_pred_probas"][0]) == 2
    tags = model.predictor.labels["conll"]
    assert [tags[i] for i in got["y_conll_pred_ids"][0]] == model([None], [None], [None], [None], [["Hi", "Bob"]])[4][0]
    with pytest.raises(UserError, match="x_sst: not in the chainer's in"):
        dp.predict_deeppavlov(model.predictor, raw, {"x_sst": ["x"]})
    # DeepPavlov's COPA question sentence is read back as the cause/effect the model was trained with
    copa_probas = dict(raw["chainer"], out=["y_copa_pred_probas"])
    asked = [dp.predict_deeppavlov(model.predictor, {**raw, "chainer": copa_probas}, {"x_copa": [x]})
             for x in (("It rained. What happened as a result?", ["Wet", "Dry"]),
                       {"text": "It rained.", "question": "effect", "choices": ["Wet", "Dry"]})]
    assert asked[0] == asked[1]


@needs_data
def test_inference_only_config_loads_the_trained_model(five_task, capsys, tmp_path):
    config, run_dir = five_task
    if not (run_dir / "model").exists():
        _train(config, capsys)
    raw = json.loads(config.read_text())
    inference = copy.deepcopy(raw)
    for key in ("dataset_reader", "dataset_iterator", "train"):
        del inference[key]
    del inference["chainer"]["in_y"]
    pipe = inference["chainer"]["pipe"]
    pipe[1] = {"id": "vocab_conll", "class_name": "simple_vocab", "load_path": "{MODELS_PATH}/tag.dict"}
    del pipe[2]["in_y"], pipe[2]["optimizer_parameters"], pipe[2]["learning_rate_drop_patience"]
    path = tmp_path / "infer.json"
    path.write_text(json.dumps(inference))
    batches = (["Good."], [("A b.", "C d.")], [("A b.", "C d.")],
               [("It rained. What happened as a result?", ["Wet.", "Dry."])], [["Anna", "sings"]])
    assert dp.build_model(path)(*batches) == dp.build_model(config)(*batches)
    assert main(["train", str(path)]) == 2
    assert "inference-only DeepPavlov config" in capsys.readouterr().err


@needs_data
def test_mt_glue_eight_tasks_train_and_predict(slices, tiny_bert, tmp_path, capsys):
    """The seed's mt_glue: qqp, mnli and qnli have no local data, so they read data_files made from the
    mrpc and rte slices, in the hub datasets' own columns (mnli with two classes, as rte has)."""
    mrpc = [line.rstrip("\n").split("\t") for line in (slices / "glue/mrpc/train.tsv").read_text("utf-8-sig").splitlines()]
    rte = [line.rstrip("\n").split("\t") for line in (slices / "glue/rte/train.tsv").read_text().splitlines()]
    with open(tmp_path / "qqp.csv", "w", newline="") as f:
        csv.writer(f).writerows([["question1", "question2", "label"]] + [[a, b, q] for q, _, _, a, b in mrpc[1:]])
    (tmp_path / "qnli.jsonl").write_text("".join(
        json.dumps({"question": s1, "sentence": s2, "label": y}) + "\n" for _, s1, s2, y in rte[1:]))
    (tmp_path / "mnli.tsv").write_text("premise\thypothesis\tlabel\n" + "".join(
        f"{s1}\t{s2}\t{y}\n" for _, s1, s2, y in rte[1:]))
    raw = json.loads(MT_GLUE.read_text())
    raw["metadata"]["variables"].update(DATA_PATH=str(slices), BACKBONE=tiny_bert, MODELS_PATH=str(tmp_path / "m"))
    readers = raw["dataset_reader"]["tasks"]
    for task, file in (("qqp", "qqp.csv"), ("qnli", "qnli.jsonl"), ("mnli", "mnli.tsv")):
        split = readers[task].get("valid", "validation")
        readers[task]["data_files"] = {"train": str(tmp_path / file), split: str(tmp_path / file)}
    raw["chainer"]["pipe"][1]["tasks"]["mnli"]["options"] = 2
    raw["train"]["max_batches"] = 8
    config = tmp_path / "mt_glue.json"
    config.write_text(json.dumps(raw))
    _train(config, capsys)
    run_dir = tmp_path / "m" / "mt_glue"
    assert set(json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["dev"]) == set(
        raw["chainer"]["in"][i][2:] for i in range(8))
    outputs = dp.build_model(config)(*[[("A man is walking.", "A person moves.")] if i not in (0, 1) else
                                       ["A fine film."] for i in range(8)])
    assert len(outputs) == 16
    probas, ids, stsb = outputs[:7], outputs[8:15], outputs[7]
    assert all(len(p[0]) == 2 and sum(p[0]) == pytest.approx(1, abs=1e-5) for p in probas)
    assert [i[0] for i in ids] == [int(np.argmax(p[0])) for p in probas]
    assert isinstance(stsb[0], float) and outputs[15] == stsb


@needs_data
def test_convert_command_writes_yaml_that_mtbert_trains(slices, tmp_path, capsys):
    raw = _example(slices, MODELS_PATH=str(tmp_path / "m"))
    src = tmp_path / "dp.json"
    src.write_text(json.dumps(raw))
    out = tmp_path / "config.yaml"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Converted from the DeepPavlov config") and "evaluation_targets" not in text
    cfg = load_config(out)  # checks the data files too
    assert list(cfg.tasks) == ["cola", "rte", "stsb", "copa", "conll"] and cfg.training.clip_norm is None
    assert main(["convert", str(src), "-o", "-"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(text)
    assert main(["convert", str(ROOT / "configs/deeppavlov_example.yaml")]) == 2
    assert "not a DeepPavlov config" in capsys.readouterr().err


def test_dp_env_overrides_reach_the_converted_config(conll_dir, tmp_path, monkeypatch, capsys):
    src = tmp_path / "dp.json"
    src.write_text(EXAMPLE.read_text())  # DATA_PATH ../shared/data, BACKBONE minilm
    for rel in ("glue/cola", "glue/rte", "glue/stsb"):  # convert checks that the files are there
        (conll_dir / rel).mkdir(parents=True)
        for name in ("train.tsv", "dev.tsv"):
            (conll_dir / rel / name).write_text("")
    (conll_dir / "superglue/copa").mkdir(parents=True)
    for name in ("train.jsonl", "val.jsonl"):
        (conll_dir / "superglue/copa" / name).write_text("")
    monkeypatch.setenv("DP_DATA_PATH", str(conll_dir))
    monkeypatch.setenv("DP_BACKBONE", "other-bert")
    monkeypatch.setenv("DP_NUM_TRAIN_EPOCHS", "2")
    assert main(["convert", str(src)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["backbone"] == "other-bert" and out["training"]["epochs"] == 2
    assert out["tasks"]["conll"]["train"] == f"{conll_dir}/conll2003/train.txt"
