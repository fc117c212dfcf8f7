"""Config loading and validation: every mistake is one `UserError` line naming the key path, and the CLI
turns it into exit code 2 with no traceback."""

from __future__ import annotations

import copy
import json
import sys

import pytest

from mtbert.cli import main
from mtbert.config import load_config, merge_task_defaults
from mtbert.errors import UserError
from mtbert.evaluation.metrics import get_metric


def sent_task(**extra) -> dict:
    task = {"type": "classification", "train": "train.tsv", "dev": "dev.tsv",
            "columns": {"text": "sentence", "label": "label"}}
    task.update(extra)
    return task


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    rows = "sentence\tlabel\ngood film\tpos\nbad film\tneg\n"
    (d / "train.tsv").write_text(rows)
    (d / "dev.tsv").write_text(rows)
    (d / "other.tsv").write_text("s1\ts2\tscore\na\tb\t1.5\n")
    return d


@pytest.fixture
def base(data_dir) -> dict:
    """A minimal valid config; tests break one thing in a copy of it."""
    return {"data_dir": str(data_dir), "run_dir": str(data_dir.parent / "run"), "tasks": {"sent": sent_task()}}


@pytest.fixture
def no_training(monkeypatch):
    """The CLI must fail in load_config; if a config unexpectedly passed, fail fast instead of training."""
    import mtbert.training.trainer as trainer

    def train(cfg, run_dir, **kwargs):
        raise AssertionError("the config was accepted and training started")

    monkeypatch.setattr(trainer, "train", train)


def expect_error(path, *parts: str, overrides=None) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def expect_cli_error(capsys, path, *parts: str, extra_args=()) -> str:
    rc = main(["train", str(path), *extra_args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mtbert: error: "), err
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


def set_path(cfg: dict, dotted: str, value) -> dict:
    node = cfg
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


# ---------------------------------------------------------------- validation errors, API and CLI

ERROR_CASES = {
    # id: (key to set (None: replace the tasks), value, expected message parts)
    "unknown_key": ("training.lrr", 1e-4, ["training.lrr: unknown key", "did you mean 'lr'?", "allowed keys:"]),
    "unknown_task_key": ("tasks.sent.epochz", 3, ["tasks.sent.epochz: unknown key"]),
    "unknown_column_key": ("tasks.sent.columns.lable", "label",
                           ["tasks.sent.columns.lable: unknown key", "did you mean 'label'?"]),
    "unknown_top_key": ("bogus", 1, ["bogus: unknown key", "allowed keys: backbone"]),
    "wrong_type": ("training.batch_size", "lots", ["training.batch_size:", "valid integer", "'lots'"]),
    "wrong_type_bool": ("tasks.sent.header", "maybe", ["tasks.sent.header:", "boolean", "'maybe'"]),
    "wrong_type_union": ("tasks.sent.columns.text", [1], ["tasks.sent.columns.text: ", "[1]"]),
    "wrong_type_metric": ("tasks.sent.metric", 5, ["tasks.sent.metric: ", "got 5"]),
    "out_of_range": ("training.warmup", 2, ["training.warmup:", "less than or equal to 1"]),
    "unknown_task_type": ("tasks.sent.type", "clasification", ["tasks.sent.type:", "'classification'",
                                                                "got 'clasification'"]),
    "unknown_metric": ("tasks.sent.metric", ["accuracy", "acc"], ["tasks.sent.metric:", "unknown metric 'acc'",
                                                                   "accuracy, f1"]),
    "metric_module_missing": ("tasks.sent.metric", "no_such_module_xyz:score",
                              ["tasks.sent.metric:", "cannot import module 'no_such_module_xyz'"]),
    "metric_function_missing": ("tasks.sent.metric", "json:no_such_function",
                                ["tasks.sent.metric:", "module 'json' has no function 'no_such_function'"]),
    "metric_not_callable": ("tasks.sent.metric", "os:sep", ["tasks.sent.metric:", "has no function 'sep'"]),
    "target_metric_bad_function": ("training.target_metric", "json:nope",
                                   ["training.target_metric:", "has no function 'nope'"]),
    "target_names_no_task": ("training.target_metric", "snet.accuracy",
                             ["training.target_metric 'snet.accuracy' names no task", "(sent)"]),
    "missing_columns_for_type": ("tasks.sent.columns", {"text": "sentence"},
                                 ["tasks.sent: columns.label is required for classification tasks"]),
    "conll_needs_sequence_labeling": ("tasks.sent.format", "conll", ["tasks.sent:", "needs type 'sequence_labeling'"]),
    "empty_tasks": ("tasks", {}, ["tasks: no tasks"]),
    "tasks_not_mapping": ("tasks", ["sent"], ["tasks: must be a mapping"]),
    "bad_task_name": ("tasks", {"my task!": sent_task()}, ["task name 'my task!'", "letters, digits"]),
    "missing_data_file": ("tasks.sent.dev", "nope/dev.tsv", ["tasks.sent.dev: file not found", "dev.tsv"]),
    "undefined_variable": ("tasks.sent.train", "${MTBERT_TEST_UNDEFINED}/train.tsv",
                           ["tasks.sent.train: variable 'MTBERT_TEST_UNDEFINED' is not defined"]),
    "bad_use_task_defaults": ("tasks.sent.use_task_defaults", "no", ["tasks.sent.use_task_defaults:", "'no'"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_config_error(case, base, write_config, capsys, monkeypatch, no_training):
    monkeypatch.delenv("MTBERT_TEST_UNDEFINED", raising=False)
    key, value, parts = ERROR_CASES[case]
    path = write_config(set_path(copy.deepcopy(base), key, value))
    msg = expect_error(path, *parts)
    assert expect_cli_error(capsys, path, *parts) == f"mtbert: error: {msg}"


def test_missing_required_type(base, write_config, capsys, no_training):
    del base["tasks"]["sent"]["type"]
    path = write_config(base)
    expect_error(path, "tasks.sent.type: required key is missing")
    expect_cli_error(capsys, path, "tasks.sent.type: required key is missing")


def test_missing_tasks_key(write_config, capsys, no_training):
    path = write_config({"seed": 1})
    expect_error(path, "tasks: missing")
    expect_cli_error(capsys, path, "tasks: missing")


def test_only_first_error_reported_with_count(base, write_config):
    base["training"] = {"lrr": 1, "batch_size": "x"}
    msg = expect_error(write_config(base), "(and 1 more)")
    assert "training.lrr: unknown key" in msg or "training.batch_size: " in msg


def test_config_file_not_found(tmp_path, capsys, no_training):
    expect_error(tmp_path / "nope.yaml", "nope.yaml: config file not found")
    expect_cli_error(capsys, tmp_path / "nope.yaml", "config file not found")


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    expect_error(path, "must be a mapping")
    path.write_text("")
    expect_error(path, "must be a mapping")


def test_missing_data_file_unchecked(base, write_config):
    base["tasks"]["sent"]["train"] = "nope.tsv"
    cfg = load_config(write_config(base), check_files=False)
    assert cfg.tasks["sent"].train == "nope.tsv"
    expect_error(write_config(base), "tasks.sent.train: file not found")


# ---------------------------------------------------------------- valid configs


def test_valid_config_defaults(base, write_config, data_dir):
    cfg = load_config(write_config(base))
    task = cfg.tasks["sent"]
    assert task.format == "tsv" and task.header is True and task.on_bad_rows == "error"
    assert task.metrics == ["accuracy"]
    assert cfg.training.target_metric == "mean"
    assert cfg.data_path("train.tsv") == (data_dir / "train.tsv").resolve()


def test_default_metrics_per_type(base, write_config):
    base["tasks"]["sts"] = {"type": "regression", "train": "other.tsv",
                            "columns": {"text": "s1", "text_pair": "s2", "label": "score"}}
    base["tasks"]["ner"] = {"type": "sequence_labeling", "format": "conll", "train": "other.tsv"}
    cfg = load_config(write_config(base))
    assert cfg.tasks["sts"].metrics == ["pearson", "spearman"]
    assert cfg.tasks["ner"].metrics == ["ner_f1"]
    # conll fills in tokens from column 0 and tags from the last column
    assert (cfg.tasks["ner"].columns.tokens, cfg.tasks["ner"].columns.tags) == (0, -1)


def test_custom_metric_module_function(base, write_config, tmp_path, monkeypatch):
    name = "mtbert_test_custom_metric_mod"
    pkg = tmp_path / "plugins"
    pkg.mkdir()
    (pkg / f"{name}.py").write_text("def half(y_true, y_pred, probas=None):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        base["tasks"]["sent"]["metric"] = ["accuracy", f"{name}:half"]
        base["training"] = {"target_metric": f"{name}:half"}
        cfg = load_config(write_config(base))
        assert cfg.tasks["sent"].metrics == ["accuracy", f"{name}:half"]
        assert cfg.training.target_metric == f"{name}:half"
        assert get_metric(f"{name}:half")([0], [0]) == 0.5
        # the function must exist in that module
        base["tasks"]["sent"]["metric"] = f"{name}:double"
        expect_error(write_config(base), "tasks.sent.metric:", f"module '{name}' has no function 'double'")
    finally:
        sys.modules.pop(name, None)


def test_target_metric_forms(base, write_config):
    for target in ("mean", "sent", "sent.accuracy"):
        base["training"] = {"target_metric": target}
        assert load_config(write_config(base)).training.target_metric == target


def test_yaml_and_json_load_the_same_in_order(base, write_config):
    tasks = {}
    for name in ("zeta", "alpha", "mid_task", "b-2"):
        tasks[name] = sent_task()
    base["tasks"] = tasks
    from_yaml = load_config(write_config(base, "c.yaml"))
    from_json = load_config(write_config(base, "c.json"))
    assert list(from_yaml.tasks) == ["zeta", "alpha", "mid_task", "b-2"]
    assert list(from_json.tasks) == ["zeta", "alpha", "mid_task", "b-2"]
    assert from_yaml.dump() == from_json.dump()


def test_run_dir_defaults_to_config_stem(base, write_config):
    del base["run_dir"]
    assert load_config(write_config(base, "my_exp.yaml")).run_dir.endswith("my_exp")


def test_invalid_yaml_one_line_with_line_number(tmp_path, capsys, no_training):
    path = tmp_path / "bad.yaml"
    path.write_text("tasks:\n  a:\n    type: classification: x\n    train: a.tsv\n")
    msg = expect_error(path, str(path), "line 3", "not valid YAML")
    assert expect_cli_error(capsys, path, "line 3") == f"mtbert: error: {msg}"


def test_invalid_yaml_tab_indent(tmp_path):
    path = tmp_path / "tab.yaml"
    path.write_text("seed: 1\ntasks:\n\tsent: {}\n")
    expect_error(path, "line 3", "not valid YAML")


def test_invalid_json_one_line_with_line_number(tmp_path, capsys, no_training):
    path = tmp_path / "bad.json"
    path.write_text('{"tasks": {\n  "a": 1,\n}\n}\n')
    msg = expect_error(path, str(path), "line 3", "not valid JSON")
    assert expect_cli_error(capsys, path, "line 3") == f"mtbert: error: {msg}"


# ---------------------------------------------------------------- variables


def test_variables_block_dollar_brace(base, write_config, data_dir):
    base["variables"] = {"ROOT": str(data_dir)}
    base["data_dir"] = "${ROOT}"
    base["tasks"]["sent"]["train"] = "${NAME:-train}.tsv"
    cfg = load_config(write_config(base))
    assert cfg.data_dir == str(data_dir.resolve())
    assert cfg.tasks["sent"].train == "train.tsv"


def test_variables_deeppavlov_braces_and_chaining(base, write_config, data_dir):
    base["variables"] = {"ROOT": str(data_dir.parent), "DATA": "{ROOT}/data", "SPLIT": "${SPLIT_DEFAULT:-dev}"}
    base["data_dir"] = "{DATA}"
    base["tasks"]["sent"]["dev"] = "{SPLIT}.tsv"
    cfg = load_config(write_config(base))
    assert cfg.data_dir == str(data_dir.resolve())
    assert cfg.tasks["sent"].dev == "dev.tsv"
    assert "variables" not in cfg.dump()


def test_variables_from_environment(base, write_config, data_dir, monkeypatch):
    monkeypatch.setenv("MTBERT_TEST_DATA", str(data_dir))
    monkeypatch.setenv("MTBERT_TEST_SEED", "7")
    monkeypatch.setenv("MTBERT_TEST_SPLIT", "train")
    base["data_dir"] = "${MTBERT_TEST_DATA}"
    base["seed"] = "{MTBERT_TEST_SEED}"
    base["tasks"]["sent"]["dev"] = "${MTBERT_TEST_SPLIT:-dev}.tsv"  # the environment beats the default
    cfg = load_config(write_config(base))
    assert cfg.data_dir == str(data_dir.resolve())
    assert cfg.seed == 7
    assert cfg.tasks["sent"].dev == "train.tsv"


def test_variables_block_beats_environment(base, write_config, monkeypatch):
    monkeypatch.setenv("MTBERT_TEST_SPLIT", "dev")
    base["variables"] = {"MTBERT_TEST_SPLIT": "train"}
    base["tasks"]["sent"]["dev"] = "${MTBERT_TEST_SPLIT}.tsv"
    assert load_config(write_config(base)).tasks["sent"].dev == "train.tsv"


def test_undefined_variable_in_variables_block(base, write_config, monkeypatch):
    monkeypatch.delenv("MTBERT_TEST_UNDEFINED", raising=False)
    base["variables"] = {"ROOT": "{MTBERT_TEST_UNDEFINED}/x"}
    expect_error(write_config(base), "variables.ROOT: variable 'MTBERT_TEST_UNDEFINED' is not defined",
                 "set the environment variable MTBERT_TEST_UNDEFINED")


def test_empty_default_and_list_items(base, write_config, monkeypatch):
    monkeypatch.delenv("MTBERT_TEST_UNDEFINED", raising=False)
    base["variables"] = {"M": "accuracy"}
    base["tasks"]["sent"]["metric"] = ["${M}", "f1"]
    base["tasks"]["sent"]["train"] = "train${MTBERT_TEST_UNDEFINED:-}.tsv"
    cfg = load_config(write_config(base))
    assert cfg.tasks["sent"].metrics == ["accuracy", "f1"]
    assert cfg.tasks["sent"].train == "train.tsv"
    base["tasks"]["sent"]["metric"] = ["${M}", "{MTBERT_TEST_UNDEFINED}"]
    expect_error(write_config(base), "tasks.sent.metric[1]: variable 'MTBERT_TEST_UNDEFINED'")


# ---------------------------------------------------------------- task_defaults


def test_task_defaults_fill_tasks(base, write_config):
    base["tasks"] = {
        "task_defaults": {"type": "classification", "dev": "dev.tsv", "metric": ["accuracy", "f1"],
                          "columns": {"text": "sentence", "label": "label"}, "max_train_examples": 5},
        "a": {"train": "train.tsv"},
        "b": {"train": "train.tsv", "metric": "mcc", "dropout": 0.3},
    }
    cfg = load_config(write_config(base))
    assert list(cfg.tasks) == ["a", "b"]  # task_defaults is not a task
    a, b = cfg.tasks["a"], cfg.tasks["b"]
    assert a.type == b.type == "classification"
    assert a.metrics == ["accuracy", "f1"] and a.max_train_examples == 5 and a.dev == "dev.tsv"
    assert b.metrics == ["mcc"] and b.dropout == 0.3 and b.max_train_examples == 5
    assert a.columns.text == b.columns.text == "sentence"


def test_task_defaults_shallow_merge_replaces_columns(base, write_config):
    base["tasks"] = {
        "task_defaults": {"type": "classification", "train": "train.tsv",
                          "columns": {"text": "sentence", "text_pair": "s2", "label": "label"}},
        "pair": {},
        "single": {"columns": {"text": "sentence", "label": "label"}},
    }
    cfg = load_config(write_config(base))
    assert cfg.tasks["pair"].columns.text_pair == "s2"
    # the task's columns replace the default columns as a whole: no text_pair leaks in
    assert cfg.tasks["single"].columns.text_pair is None
    assert cfg.tasks["single"].columns.label == "label"


def test_task_defaults_deep_copied_per_task():
    defaults = {"type": "classification", "columns": {"text": "s", "label": "l"}, "metric": ["accuracy"]}
    raw = {"tasks": {"task_defaults": defaults, "a": {}, "b": {}}}
    merged = merge_task_defaults(raw)
    a, b = merged["tasks"]["a"], merged["tasks"]["b"]
    assert a == b == defaults
    a["columns"]["text"] = "changed"
    a["metric"].append("f1")
    assert b["columns"] == {"text": "s", "label": "l"} and b["metric"] == ["accuracy"]
    assert raw["tasks"]["task_defaults"]["columns"] == {"text": "s", "label": "l"}  # input untouched
    assert "task_defaults" in raw["tasks"] and "task_defaults" not in merged["tasks"]


def test_use_task_defaults_false_ignores_defaults(base, write_config):
    base["tasks"] = {
        "task_defaults": {"type": "regression", "header": False, "metric": "pearson", "max_train_examples": 3},
        "plain": sent_task(use_task_defaults=False),
        "with": {"train": "other.tsv", "columns": {"text": "s1", "label": "score"}},
    }
    cfg = load_config(write_config(base))
    plain = cfg.tasks["plain"]
    assert plain.type == "classification" and plain.header is True
    assert plain.metric is None and plain.max_train_examples is None
    assert cfg.tasks["with"].type == "regression" and cfg.tasks["with"].header is False
    # use_task_defaults is consumed, not passed on as a task key
    assert "use_task_defaults" not in cfg.dump()["tasks"]["plain"]


def test_use_task_defaults_false_missing_type_is_reported(base, write_config):
    base["tasks"] = {"task_defaults": {"type": "classification"},
                     "t": {"use_task_defaults": False, "train": "train.tsv",
                           "columns": {"text": "sentence", "label": "label"}}}
    expect_error(write_config(base), "tasks.t.type: required key is missing")


@pytest.mark.parametrize("value", [1, "false", None])
def test_use_task_defaults_must_be_bool(value, base, write_config):
    base["tasks"]["sent"]["use_task_defaults"] = value
    expect_error(write_config(base), "tasks.sent.use_task_defaults: must be true or false")


def test_task_defaults_must_be_mapping(base, write_config):
    base["tasks"]["task_defaults"] = ["type"]
    expect_error(write_config(base), "tasks.task_defaults: must be a mapping")


def test_task_must_be_mapping(base, write_config):
    base["tasks"]["other"] = "classification"
    expect_error(write_config(base), "tasks.other: must be a mapping")


def test_task_defaults_from_deeppavlov_example_config():
    """The shipped example: defaults merge into four tasks, conll opts out."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "deeppavlov_example.yaml"
    cfg = load_config(path, check_files=False)
    assert list(cfg.tasks) == ["cola", "rte", "stsb", "copa", "conll"]
    assert cfg.tasks["cola"].header is False and cfg.tasks["rte"].header is True
    assert cfg.tasks["copa"].format == "jsonl" and cfg.tasks["conll"].format == "conll"


# ---------------------------------------------------------------- --set overrides


def test_set_overrides(base, write_config):
    path = write_config(base)
    cfg = load_config(path, ["training.lr=3e-5", "tasks.sent.metric=[accuracy, mcc]", "seed=7",
                             "training.freeze_encoder=true", "tasks.sent.columns.text_pair=label"])
    assert cfg.training.lr == pytest.approx(3e-5)
    assert cfg.tasks["sent"].metrics == ["accuracy", "mcc"]
    assert cfg.seed == 7
    assert cfg.training.freeze_encoder is True
    assert cfg.tasks["sent"].columns.text_pair == "label"
    # the file itself is not changed
    assert load_config(path).training.lr == pytest.approx(5e-5)


def test_set_creates_nested_keys(base, write_config):
    assert "training" not in base
    cfg = load_config(write_config(base), ["training.patience=2", "tasks.sent.columns.label=sentence"])
    assert cfg.training.patience == 2
    assert cfg.tasks["sent"].columns.label == "sentence"


def test_set_value_gets_variables_and_validation(base, write_config, data_dir, monkeypatch):
    monkeypatch.setenv("MTBERT_TEST_DATA", str(data_dir))
    cfg = load_config(write_config(base), ["data_dir=${MTBERT_TEST_DATA}"])
    assert cfg.data_dir == str(data_dir.resolve())
    expect_error(write_config(base), "training.lrr: unknown key", "did you mean 'lr'?", overrides=["training.lrr=1"])
    expect_error(write_config(base), "training.lr:", overrides=["training.lr=-1"])


@pytest.mark.parametrize("item", ["foo", "=3", "training.lr"])
def test_set_malformed(item, base, write_config, capsys, no_training):
    path = write_config(base)
    expect_error(path, f"--set {item!r}: expected KEY=VALUE", overrides=[item])
    expect_cli_error(capsys, path, "expected KEY=VALUE", extra_args=["--set", item])


def test_set_through_a_non_mapping(base, write_config):
    base["seed"] = 1
    expect_error(write_config(base), "'seed' is not a mapping", overrides=["seed.x=1"])


def test_json_and_yaml_config_via_cli_options_order(base, write_config, capsys, no_training):
    """--set is applied before validation, so a bad --set value fails like a bad file value."""
    path = write_config(base, "c.json")
    assert json.loads(path.read_text())["tasks"]["sent"]["type"] == "classification"
    expect_cli_error(capsys, path, "training.batch_size:", "'big'", extra_args=["--set", "training.batch_size=big"])


# ---------------------------------------------------------------- labels and class weights (issue 14)


@pytest.mark.parametrize("key, value, parts", [
    ("labels", ["pos", "neg", "pos"], ["tasks.sent.labels: 'pos' is listed twice; list each class once"]),
    ("class_weights", [1.0, -0.5], ["tasks.sent.class_weights: weight -0.5 is not a finite number >= 0"]),
    ("class_weights", [1.0, float("nan")], ["tasks.sent.class_weights: weight nan is not a finite number >= 0"]),
    ("class_weights", [float("inf"), 1.0], ["tasks.sent.class_weights: weight inf is not a finite number >= 0"]),
    ("class_weights", [0, 0.0], ["tasks.sent.class_weights: every weight is 0"]),
])
def test_labels_and_class_weights_refused(key, value, parts, base, write_config, capsys, no_training):
    path = write_config(set_path(copy.deepcopy(base), f"tasks.sent.{key}", value))
    msg = expect_error(path, *parts)
    assert expect_cli_error(capsys, path, *parts) == f"mtbert: error: {msg}"


def test_zero_weight_for_one_class_accepted(base, write_config):
    """0 ignores a class; only a negative, non-finite or all-zero list is refused."""
    path = write_config(set_path(copy.deepcopy(base), "tasks.sent.class_weights", [0.0, 2.0]))
    assert load_config(path).tasks["sent"].class_weights == [0.0, 2.0]
    path = write_config(set_path(copy.deepcopy(base), "tasks.sent.labels", ["neg", "pos"]))
    assert load_config(path).tasks["sent"].labels == ["neg", "pos"]


@pytest.mark.parametrize("seed, says", [(-1, "greater than or equal to 0"), (2**32, "less than 4294967296")])
def test_seed_numpy_cannot_take_refused(seed, says, base, write_config, capsys, no_training):
    """Found by the fuzz: `seed: -1` passed validation and numpy raised at the start of training."""
    path = write_config({**copy.deepcopy(base), "seed": seed})
    expect_cli_error(capsys, path, f"seed: Input should be {says}")
    assert load_config(write_config({**copy.deepcopy(base), "seed": 2**32 - 1})).seed == 2**32 - 1


def test_loggers_take_one_name_or_a_list(base, write_config):
    """`--set training.loggers=mlflow` names one logger; a name listed twice is one logger."""
    one = load_config(write_config(set_path(copy.deepcopy(base), "training.loggers", "mlflow")))
    assert one.training.loggers == ["mlflow"] and one.training.mlflow_uri is None
    both = load_config(write_config(set_path(copy.deepcopy(base), "training.loggers",
                                             ["tensorboard", "mlflow", "tensorboard"])))
    assert both.training.loggers == ["tensorboard", "mlflow"]
    assert load_config(write_config(copy.deepcopy(base))).training.loggers == []
