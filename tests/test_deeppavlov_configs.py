"""DeepPavlov's own multitask configs as shipped (configs/deeppavlov/original): the one error that names
every task without data and its fix, --only-tasks / --skip-tasks, the training keys of the real configs,
predict on a DeepPavlov config, and mt_glue trained end to end on slices of ../shared/data (tiny BERT)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from mtbert.cli import main
from mtbert.compat import deeppavlov as dp
from mtbert.compat.dp_select import select_tasks
from mtbert.config import finish
from mtbert.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = ROOT / "configs/deeppavlov/original"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")


def _original(name: str) -> dict:
    return json.loads((ORIGINAL / f"{name}.json").read_text())


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_originals_are_deeppavlovs_files_byte_for_byte():
    readme = (ORIGINAL / "README.md").read_text()
    for name in ("multitask_example.json", "mt_glue.json"):
        digest = hashlib.sha256((ORIGINAL / name).read_bytes()).hexdigest()
        assert f"`{name}` {digest}" in readme  # the README's checksum is the file's
    assert _original("mt_glue")["metadata"]["variables"]["BACKBONE"] == "bert-base-uncased"


# ---------------------------------------------------------------- one error naming every task without data


def test_original_example_names_every_task_and_its_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DP_ROOT_PATH", str(tmp_path / "dp"))  # no ~/.deeppavlov of this machine's
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = _run(["convert", str(ORIGINAL / "multitask_example.json")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "5 tasks without data mtbert can read (it downloads nothing; HF_HUB_OFFLINE is set" in err
    assert f"no train.txt in {tmp_path}/dp/downloads/conll2003" in err
    assert "set DP_DOWNLOADS_PATH=FOLDER where FOLDER/conll2003 holds train.txt and valid.txt" in err
    assert 'glue/cola is on the hub: add "data_dir": FOLDER (its train.tsv, dev.tsv) or "data_files"' in err
    assert 'super_glue/copa is on the hub: add "data_dir": FOLDER (its train.jsonl, val.jsonl)' in err
    assert "remove" not in err and "Or train the others" not in err  # no task left to train
    # train says the same, before any model is built
    assert _run(["train", str(ORIGINAL / "multitask_example.json")], capsys)[2] == err


@needs_data
def test_the_env_var_of_the_error_fixes_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DP_DOWNLOADS_PATH", str(SHARED_DATA))
    monkeypatch.setenv("DP_BACKBONE", "minilm")
    code, out, err = _run(["convert", str(ORIGINAL / "multitask_example.json"), "--only-tasks", "conll"], capsys)
    assert code == 0, err
    assert f"train: {SHARED_DATA}/conll2003/train.txt" in out and "cola" not in out


def test_missing_local_files_and_the_others_to_train(tmp_path, monkeypatch):
    raw = _original("mt_glue")
    raw["metadata"]["variables"]["DATA_PATH"] = str(tmp_path / "nowhere")
    readers = raw["dataset_reader"]["tasks"]
    readers["cola"]["data_dir"] = "{DATA_PATH}/glue/cola"
    readers["sst2"]["data_files"] = {"train": str(tmp_path / "sst2.tsv"), "validation": str(tmp_path / "sst2.tsv")}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        dp.convert(raw, "mt_glue.json", check_data=True)
    msg = str(err.value)
    assert (f"cola: dataset_reader.tasks.cola.data_dir: no train.tsv or dev.tsv in {tmp_path}/nowhere/glue/cola; "
            "set DP_DATA_PATH=FOLDER where FOLDER/glue/cola holds train.tsv, dev.tsv") in msg
    assert f"sst2: dataset_reader.tasks.sst2.data_files: no file {tmp_path}/sst2.tsv" in msg
    assert "paths are relative to data_dir" not in msg
    with pytest.raises(UserError, match="8 tasks without data"):
        dp.convert(raw, "mt_glue.json", check_data=True)
    # without the data check (build_model, unit use) a hub task converts as it is
    raw["dataset_reader"]["tasks"] = {t: r for t, r in readers.items()}
    del readers["cola"]["data_dir"], readers["sst2"]["data_files"]
    assert dp.convert(raw)["tasks"]["qqp"]["format"] == "hf"


def test_no_network_fails_fast_without_retries(monkeypatch):
    from mtbert.compat import dp_readers

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    why, tasks = dp_readers.unreachable_hub_tasks({"qqp": ("glue", "qqp", "dataset_reader.tasks.qqp", True)})
    assert "out of reach" in why and "HF_HUB_OFFLINE=1" in why and list(tasks) == ["qqp"]


# ---------------------------------------------------------------- --only-tasks / --skip-tasks


def test_skip_tasks_removes_a_task_everywhere():
    raw = _original("multitask_example")
    out = select_tasks(raw, None, ["conll", "rte"], "dp.json")
    assert list(out["dataset_reader"]["tasks"]) == list(out["dataset_iterator"]["tasks"]) == ["cola", "stsb", "copa"]
    chainer = out["chainer"]
    assert chainer["in"] == ["x_cola", "x_stsb", "x_copa"] and chainer["in_y"] == ["y_cola", "y_stsb", "y_copa"]
    assert chainer["out"] == ["y_cola_pred_ids", "y_stsb_pred", "y_copa_pred_ids"]
    pre, transformer = chainer["pipe"][0], chainer["pipe"][1]
    assert pre["n_task"] == 3 and pre["in"] == chainer["in"]
    assert pre["preprocessors"] == ["TorchTransformersPreprocessor"] * 2 + ["TorchTransformersMultiplechoicePreprocessor"]
    assert transformer["class_name"] == "multitask_transformer"  # the vocabulary of conll is gone with it
    assert list(transformer["tasks"]) == ["cola", "stsb", "copa"]
    assert transformer["out"] == ["y_cola_pred_probas", "y_stsb_pred", "y_copa_pred_probas"]
    assert [c["in"] for c in chainer["pipe"][2:]] == [["y_cola_pred_probas"], ["y_copa_pred_probas"]]  # no ref
    metrics = out["train"]["metrics"]
    assert metrics[0]["inputs"] == ["y_cola", "y_copa", "y_cola_pred_ids", "y_copa_pred_ids"]
    assert [m.get("alias") for m in metrics[1:]] == ["accuracy_cola", "accuracy_copa", "pearson_stsb", "spearman_stsb"]
    assert raw["chainer"]["in"][4] == "x_conll"  # the caller's config is untouched
    assert select_tasks(raw, ["cola", "stsb", "copa"], None, "dp.json") == out


def test_task_selection_refusals(tmp_path, capsys, write_config, toy_config):
    with pytest.raises(UserError, match=r"--only-tasks: unknown tasks sst, qqp; dp.json has: cola, rte, stsb, copa, "
                                        r"conll$"):
        select_tasks(_original("multitask_example"), ["cola", "sst", "qqp"], None, "dp.json")
    with pytest.raises(UserError, match="leaves no task to train"):
        select_tasks(_original("multitask_example"), None, ["cola", "rte", "stsb", "copa", "conll"], "dp.json")
    code, _, err = _run(["convert", str(ORIGINAL / "mt_glue.json"), "--skip-tasks", "cola", "--only-tasks", "rte"],
                        capsys)
    assert code == 2 and "not allowed with argument" in err
    config = write_config(toy_config)
    code, _, err = _run(["train", str(config), "--skip-tasks", "sent"], capsys)
    assert code == 2 and "--skip-tasks: applies to DeepPavlov configs" in err
    code, _, err = _run(["predict", str(tmp_path), "--task", "sent", "--format", "deeppavlov"], capsys)
    assert code == 2 and "--format deeppavlov: give the DeepPavlov config as RUN" in err


# ---------------------------------------------------------------- training keys of the real configs


def _example_training(conll: Path, **train) -> dict:
    raw = json.loads((ROOT / "configs/deeppavlov/multitask_example.json").read_text())
    raw["metadata"]["variables"]["DATA_PATH"] = str(conll)
    raw["train"].update(train)
    return raw


@pytest.fixture
def conll_dir(tmp_path) -> Path:
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "train.txt").write_text("EU NNP B-NP B-ORG\n\n")
    return tmp_path


def test_training_keys_of_the_real_configs(conll_dir, caplog, tmp_path, monkeypatch):
    from mtbert.config import TrainingConfig

    with caplog.at_level(logging.INFO, logger="mtbert"):
        out = dp.convert(_example_training(conll_dir, metric_optimization="Maximize", train_metrics=["accuracy"],
                                           max_test_batches=10))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train.train_metrics: accepted and ignored" in m for m in warnings)
    assert any("train.max_test_batches: accepted and ignored" in m for m in warnings)
    assert "multitask_accuracy" in out["training"]["target_metric"]
    # epochs -1: until early stopping, bounded by max_batches
    t = dp.convert(_example_training(conll_dir, epochs=-1, max_batches=40))["training"]
    assert "epochs" not in t and t["max_steps"] == 40 and t["patience"] == 3
    # epochs -1 alone: until validation_patience stops it, as in DeepPavlov, within mtbert's stated cap
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mtbert"):
        t = dp.convert(_example_training(conll_dir, epochs=-1, val_every_n_epochs=1))["training"]
    assert (t["epochs"], t["patience"], t["eval_every_epochs"]) == (dp.UNTIL_PATIENCE_EPOCHS, 3, 1)
    assert any(f"train.epochs -1: training stops when 3 validations in a row do not improve the target "
               f"(validation_patience), as in DeepPavlov, and at the latest after {dp.UNTIL_PATIENCE_EPOCHS} epochs"
               in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    text = dp.to_yaml(dp.convert(raw := _example_training(conll_dir, epochs=-1, val_every_n_epochs=1)), "dp.json", raw)
    assert ("  # DeepPavlov's epochs -1: no epoch limit, training stops on validation_patience (training.patience); "
            f"this is mtbert's cap\n  epochs: {dp.UNTIL_PATIENCE_EPOCHS}\n") in text
    # where DeepPavlov itself would never stop, the config is refused
    msg = str(pytest.raises(UserError, dp.convert, _example_training(conll_dir, epochs=-1, val_every_n_epochs=-1)).value)
    assert ("train.epochs: -1 with no validation during training (val_every_n_epochs / val_every_n_batches) never "
            "stops in DeepPavlov; give the number of epochs, or train.max_batches") in msg
    msg = str(pytest.raises(UserError, dp.convert, _example_training(
        conll_dir, epochs=-1, val_every_n_epochs=1, validation_patience=None)).value)
    assert "train.epochs: -1 with no validation_patience never stops in DeepPavlov" in msg
    msg = str(pytest.raises(UserError, dp.convert, _example_training(conll_dir, metric_optimization="minimize")).value)
    assert "train.metric_optimization: 'minimize', but the first metric, multitask_accuracy, is better higher" in msg
    # minimize on a custom metric: the target is the metric negated
    (tmp_path / "loss_metrics.py").write_text("def gap(y_true, y_pred):\n    return abs(sum(y_true) - sum(y_pred))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = _example_training(conll_dir, metric_optimization="minimize",
                            metrics=[{"name": "loss_metrics:gap", "inputs": ["y_stsb", "y_stsb_pred"]}])
    target = dp.convert(raw)["training"]["target_metric"]
    assert target == "mtbert.compat.dp_metrics:minimized_deeppavlov[loss_metrics:gap](stsb.y_true,stsb.y_pred)"
    from mtbert.evaluation.metrics import resolve_custom
    assert resolve_custom(target)({"stsb": {"y_true": [3.0], "y_pred": [1.0]}}) == -2.0
    # tensorboard_log_dir: training.loggers where this mtbert has it, else named
    raw = _example_training(conll_dir, tensorboard_log_dir="logs/")
    if "loggers" in TrainingConfig.model_fields:
        assert dp.convert(raw)["training"]["loggers"] == ["tensorboard"]
    else:
        assert "train.tensorboard_log_dir: this mtbert has no TensorBoard logging" in str(
            pytest.raises(UserError, dp.convert, raw).value)


def test_copa_columns_no_row_has(tmp_path):
    rows = [{"premise": "It rained.", "choice1": "Wet.", "choice2": "Dry.", "question": "effect", "label": 0}] * 4
    (tmp_path / "copa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = json.loads((ROOT / "configs/deeppavlov/multitask_example.json").read_text())
    raw["dataset_reader"]["tasks"] = {"copa": {"path": "json", "data_files": {
        "train": str(tmp_path / "copa.jsonl"), "validation": str(tmp_path / "copa.jsonl"),
        "test": str(tmp_path / "copa.jsonl")}}}
    raw = select_tasks(raw, ["copa"], None, "dp.json")
    raw["dataset_iterator"]["tasks"]["copa"]["features"] = ["contexts", "choices"]
    cfg = finish(dp.convert(raw), "dp.json")
    from mtbert.data.readers import read_split
    with pytest.raises(UserError) as err:
        read_split(cfg, "copa", "train")
    msg = str(err.value)
    assert "no row has key 'contexts' (task copa); the rows have premise, choice1, choice2, question, label" in msg
    assert "iterator's features and label" in msg and "on_bad_rows" not in msg


def test_copa_in_deeppavlovs_contexts_and_choices(tmp_path):
    """The peer kit's template reads COPA from JSON Lines in DeepPavlov's shape: `contexts` holds the context once
    per choice (its multiple-choice preprocessor pairs contexts[i] with choices[i]). mtbert reads the one context
    they share; contexts that differ are refused on their row."""
    ctx = "The man broke his toe. What was the cause of this?"
    rows = [{"contexts": [ctx, ctx], "choices": ["He dropped a hammer.", "He got a hole in his sock."], "label": 0},
            {"contexts": ["a", "b"], "choices": ["x", "y"], "label": 1}]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = json.loads((ROOT / "configs/deeppavlov/multitask_example.json").read_text())
    raw["dataset_reader"]["tasks"] = {"copa": {"path": "json", "data_files": {
        "train": str(tmp_path / "mc.jsonl"), "validation": str(tmp_path / "mc.jsonl"),
        "test": str(tmp_path / "mc.jsonl")}}}
    raw = select_tasks(raw, ["copa"], None, "dp.json")
    raw["dataset_iterator"]["tasks"]["copa"]["features"] = ["contexts", "choices"]
    cfg = finish(dp.convert(raw), "dp.json")
    from mtbert.data.readers import read_split
    with pytest.raises(UserError) as err:
        read_split(cfg, "copa", "train")
    assert "line 2: text is a JSON list of 2 different contexts (['a', 'b']); mtbert reads one context" in str(err.value)
    cfg.tasks["copa"].on_bad_rows = "skip"
    [ex] = read_split(cfg, "copa", "train")
    assert (ex.text, ex.choices, ex.label) == (ctx, rows[0]["choices"], 0)


# ---------------------------------------------------------------- mt_glue as shipped, end to end


def _head(src: Path, dst: Path, lines: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(line for _, line in zip(range(lines), f, strict=False)), encoding="utf-8")


@needs_data
def test_original_mt_glue_with_local_glue_trains_and_predicts(tiny_bert, tmp_path, capsys, monkeypatch):
    data = tmp_path / "glue"
    for task in ("cola", "sst2", "mrpc", "rte", "stsb"):
        for split in ("train", "dev"):
            _head(SHARED_DATA / f"glue/{task}/{split}.tsv", data / task / f"{split}.tsv", 60)
    raw = _original("mt_glue")
    for task in ("cola", "sst2", "mrpc", "rte", "stsb"):  # what the error tells a user to add
        raw["dataset_reader"]["tasks"][task]["data_dir"] = str(data / task)
    raw["train"]["max_batches"] = 4
    config = tmp_path / "mt_glue.json"
    config.write_text(json.dumps(raw))
    monkeypatch.setenv("DP_BACKBONE", "minilm")
    monkeypatch.setenv("DP_MODELS_PATH", str(tmp_path / "models"))
    skip = ["--skip-tasks", "qqp,mnli,qnli"]
    code, out, err = _run(["convert", str(config), *skip], capsys)
    assert code == 0, err
    assert "backbone: minilm" in out and "qqp" not in out
    monkeypatch.setenv("DP_BACKBONE", tiny_bert)  # the tiny BERT stands in for MiniLM when training
    code, out, err = _run(["train", str(config), *skip, "--set", "training.progress=false"], capsys)
    assert code == 0, err
    run_dir = tmp_path / "models" / "8task"
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last["dev"]) == {"cola", "sst2", "mrpc", "rte", "stsb"}
    # predict on the DeepPavlov config: its load_path holds the run; DeepPavlov's shapes with --format deeppavlov
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('["A man is walking.", "A person moves."]\n["Good.", "Bad."]\n')
    code, out, err = _run(["predict", str(config), *skip, "--task", "mrpc", "--input", str(inputs),
                           "--format", "deeppavlov"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    # mt_glue's out holds mrpc's probabilities and, after proba2labels, its class id
    assert len(rows) == 2 and all(len(r) == 2 and len(r[0]) == 2 and r[1] == max((0, 1), key=r[0].__getitem__)
                                  for r in rows)
    code, out, _ = _run(["predict", str(config), *skip, "--task", "stsb", "--input", str(inputs),
                         "--format", "deeppavlov"], capsys)
    assert [len(json.loads(line)) for line in out.splitlines()] == [2, 2]  # y_stsb_pred is in out twice
    code, out, _ = _run(["predict", str(config), *skip, "--task", "mrpc", "--input", str(inputs)], capsys)
    first = json.loads(out.splitlines()[0])
    assert first["text"] == "A man is walking." and first["text_pair"] == "A person moves." and "label" in first
    # without the selection the config names tasks the run does not have
    code, _, err = _run(["predict", str(config), "--task", "mrpc", "--input", str(inputs)], capsys)
    assert code == 2 and f"{config}: task qqp (classification) is not a classification task of the trained" in err
    # an inference-only config: no dataset_reader, dataset_iterator or train
    for key in ("dataset_reader", "dataset_iterator", "train"):
        del raw[key]
    inference = tmp_path / "infer.json"
    inference.write_text(json.dumps(raw))
    code, out2, err = _run(["predict", str(inference), *skip, "--task", "mrpc", "--input", str(inputs),
                            "--format", "deeppavlov"], capsys)
    assert code == 0, err
    assert [json.loads(line) for line in out2.splitlines()] == rows
