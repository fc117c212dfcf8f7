"""`mtbert evaluate` gives report.md's scores, in the precision the run was evaluated with during training.

The toy STS task's targets are 5.0 and 0.5: a few steps in, every dev score sits near 2.85, closer together
than bf16's step there (2^-6), so a score rounded to bf16 anywhere on the way would change the metrics.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from conftest import toy_tasks, write_toy_files

from mtbert.cli import main
from mtbert.data.readers import read_split
from mtbert.evaluation.evaluate import evaluate_split
from mtbert.inference.predictor import Predictor
from mtbert.modeling import precision as precision_module
from mtbert.rundir import recorded_precision

PRECISIONS = ["fp32", "bf16"]


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    """The toy tasks trained for six steps in fp32 and in bf16 (trained on first use), by `mtbert train`."""
    tmp = tmp_path_factory.mktemp("precision_runs")
    data = write_toy_files(tmp / "data")
    trained = {}

    def run(precision: str):
        if precision not in trained:
            raw = {"backbone": tiny_bert, "data_dir": str(data), "seed": 1, "max_length": 32, "tasks": toy_tasks(),
                   "training": {"max_steps": 6, "batch_size": 4, "eval_every": 3, "lr": 1e-3, "progress": False,
                                "precision": precision}}
            config = tmp / f"{precision}.yaml"
            config.write_text(yaml.safe_dump(raw))
            assert main(["-q", "train", str(config), "--run-dir", str(tmp / precision)]) == 0
            trained[precision] = tmp / precision
        return trained[precision]

    return run


def table_rows(text: str) -> list[tuple[str, ...]]:
    """(task, type, metric, score) of every row of a results table (baseline column left out)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("task", "---") and len(cells) >= 4:
            rows.append(tuple(cells[:4]))
    return rows


def best_dev(run) -> dict:
    """The dev scores of the best evaluation in metrics.jsonl, at full precision (report.md shows 4 digits)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return max(records, key=lambda r: r["target"])["dev"]  # max keeps the first of equals, as training does


def sts_scores(predictor) -> list[float]:
    examples = read_split(predictor.cfg, "sts", "dev")
    return [r["score"] for r in predictor.predict("sts", [{"text": e.text, "text_pair": e.text_pair}
                                                         for e in examples])]


def as_bf16(values: list[float]) -> list[float]:
    return torch.tensor(values).bfloat16().float().tolist()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_evaluate_reproduces_report(runs, precision, capsys, monkeypatch):
    run = runs(precision)
    # on a machine where `auto` alone would pick the other precision (the fp32 run in bf16 on a CPU with
    # AVX512-BF16, as in the issue; the bf16 run in fp32 on one without)
    monkeypatch.setattr(precision_module, "bf16_supported", lambda device: precision == "fp32")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "dev"]) == 0
    printed = table_rows(capsys.readouterr().out)
    report = table_rows((run / "report.md").read_text())
    assert printed == report and len(printed) == 9  # every metric of every task, and the mean
    predictor = Predictor(run)
    assert predictor.precision == precision
    scores, _ = evaluate_split(predictor, "dev", list(predictor.cfg.tasks), {}, False)
    assert scores == best_dev(run)  # exactly, not to 4 digits


@pytest.mark.parametrize("precision", PRECISIONS)
def test_another_precision_gives_other_scores(runs, precision):
    """What the default protects against: the run evaluated in the other precision scores differently."""
    run = runs(precision)
    other = Predictor(run, precision="bf16" if precision == "fp32" else "fp32")
    scores, _ = evaluate_split(other, "dev", list(other.cfg.tasks), {}, False)
    assert scores["sts"] != best_dev(run)["sts"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_regression_scores_are_float32_not_bf16(runs, precision):
    scores = sts_scores(Predictor(run := runs(precision)))
    rounded = as_bf16(scores)
    assert len(set(rounded)) <= 2 < len(set(scores))  # the case that matters: closer together than bf16's step
    assert scores != rounded
    assert scores == torch.tensor(scores, dtype=torch.float32).tolist()  # float32 values, as computed
    assert best_dev(run)["sts"]["pearson"] > 0.5


def test_minbert_prediction_file_keeps_float32_scores(runs, tmp_path):
    run = runs("bf16")
    assert main(["-q", "predict", str(run), "--split", "dev", "--format", "minbert", "--task", "sts",
                 "--output", str(tmp_path)]) == 0
    lines = (tmp_path / "sts-dev-output.csv").read_text().splitlines()[1:]
    written = [float(line.split(",")[1]) for line in lines]
    assert written == sts_scores(Predictor(run))
    assert written != as_bf16(written)


def test_deeppavlov_outputs_keep_float32_scores(runs, tiny_bert):
    from mtbert.compat.deeppavlov import build_model

    run = runs("bf16")
    config = {"chainer": {"in": ["x_sts"], "out": ["y_sts"], "pipe": [
        {"class_name": "multitask_pipeline_preprocessor", "preprocessors": ["TorchTransformersPreprocessor"],
         "vocab_file": tiny_bert, "in": ["x_sts"], "out": ["f_sts"]},
        {"id": "multitask_transformer", "class_name": "multitask_transformer", "backbone_model": tiny_bert,
         "load_path": str(run), "tasks": {"sts": {"type": "regression", "options": 1}},
         "in": ["f_sts"], "out": ["y_sts"]}]}}
    model = build_model(config)
    assert model.predictor.precision == "bf16"
    examples = read_split(model.predictor.cfg, "sts", "dev")
    got = model([(e.text, e.text_pair) for e in examples])
    assert got == sts_scores(Predictor(run))
    assert got != as_bf16(got)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_older_run_dir_without_the_record(runs, precision, tmp_path, monkeypatch):
    """Before the record, model/config.yaml kept `auto`: report.md's line says what training used, and
    without report.md (a run stopped before its end), auto is resolved here as training resolved it."""
    run = shutil.copytree(runs(precision), tmp_path / "run")
    saved = run / "model" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["training"]["precision"] == precision  # what training records
    raw = yaml.safe_load(saved.read_text())
    raw["training"]["precision"] = "auto"
    saved.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(precision_module, "bf16_supported", lambda device: precision == "fp32")  # the other one
    assert Predictor(run).precision == precision
    (run / "report.md").unlink()
    assert recorded_precision(run, Predictor(run).cfg) is None
    assert Predictor(run).precision == ("bf16" if precision == "fp32" else "fp32")


def test_precision_chosen_or_refused(runs, capsys):
    run = runs("fp32")
    assert Predictor(run, precision="bf16").precision == "bf16"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--precision", "fp16"]) == 2
    assert capsys.readouterr().err.strip() == ("mtbert: error: --precision: fp16 needs a CUDA GPU (this run is on "
                                               "the CPU); use bf16, fp32 or auto")


def test_python_api_refuses_a_string_or_dict_for_a_list(runs):
    predictor = Predictor(runs("fp32"))
    with pytest.raises(TypeError, match=r"^predict\(task, inputs\): expected a list with one item per input, not a "
                                        r"str; for one input, put it in a list: predict\('sent', \['great fun'\]\)$"):
        predictor.predict("sent", "great fun")
    with pytest.raises(TypeError, match=r"not a dict; .*predict\('sts', \[\{'text': 'a', 'text_pair': 'b'\}\]\)"):
        predictor.predict("sts", {"text": "a", "text_pair": "b"})
    with pytest.raises(TypeError, match=r"^predict_all\(texts\): .* not a str; .*predict_all\(\['John'\]\)$"):
        predictor.predict_all("John")
    with pytest.raises(TypeError, match=r"^predict_all\(texts, tasks\): .* not a str"):
        predictor.predict_all(["John"], tasks="ner")
    # the shapes meant still work
    assert len(predictor.predict("sent", ["great fun"])) == 1
    assert len(predictor.predict("sent", ("great fun", {"text": "bad"}))) == 2
    assert list(predictor.predict_all(["John lives here"], tasks=["ner"])[0]) == ["ner"]
