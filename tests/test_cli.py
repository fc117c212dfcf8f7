"""End to end on slices of the real files in ../shared/data: train, then evaluate and predict from the
saved run dir in fresh processes (no training data needed to load it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA

from mtbert.cli import main
from mtbert.config import load_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")


def _head(src: Path, dst: Path, lines: int) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(line for _, line in zip(range(lines), f, strict=False)), encoding="utf-8")
    return str(dst)


def _run(*args, env=None, input=None):
    return subprocess.run([sys.executable, "-m", "mtbert", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, input=input, timeout=300)


@pytest.fixture(scope="module")
def five_task_run(tmp_path_factory, tiny_bert):
    """The example config's five tasks on slices of the real files, trained for a few steps."""
    tmp = tmp_path_factory.mktemp("five")
    data = tmp / "data"
    for rel, n in [("glue/cola/train.tsv", 200), ("glue/cola/dev.tsv", 60), ("glue/rte/train.tsv", 120),
                   ("glue/rte/dev.tsv", 60), ("glue/stsb/train.tsv", 200), ("glue/stsb/dev.tsv", 60),
                   ("superglue/copa/train.jsonl", 80), ("superglue/copa/val.jsonl", 40),
                   ("conll2003/train.txt", 2000), ("conll2003/valid.txt", 300)]:
        _head(SHARED_DATA / rel, data / rel, n)
    run_dir = tmp / "run"
    proc = _run("train", "configs/deeppavlov_example.yaml", "--run-dir", str(run_dir),
                "--set", f"backbone={tiny_bert}", "--set", "training.max_steps=10", "--set", "training.eval_every=5",
                "--set", "training.progress=false", env={"MTBERT_DATA": str(data)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, data, proc


def test_train_writes_report_and_prints_it(five_task_run):
    run_dir, _, proc = five_task_run
    assert "| cola | classification | mcc (primary)" in proc.stdout
    report = (run_dir / "report.md").read_text()
    for task in ("cola", "rte", "stsb", "copa", "conll"):
        assert f"| {task} |" in report
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert list(cfg["tasks"]) == ["cola", "rte", "stsb", "copa", "conll"]
    assert cfg["tasks"]["rte"]["format"] == "tsv"  # from task_defaults
    assert "header" not in cfg["tasks"]["conll"] or cfg["tasks"]["conll"]["header"] is True  # opted out: schema default


def test_evaluate_in_a_fresh_process_matches_training(five_task_run):
    run_dir, data, _ = five_task_run
    best = max((json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()), key=lambda r: r["target"])
    proc = _run("evaluate", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| rte |"))
    assert f"{best['dev']['rte']['accuracy']:.4f}" in row
    assert "| **mean** |" in proc.stdout


def test_evaluate_other_data_and_errors(five_task_run, tmp_path):
    run_dir, data, _ = five_task_run
    proc = _run("evaluate", str(run_dir), "--task", "copa", "--data", f"copa={data / 'superglue/copa/train.jsonl'}")
    assert proc.returncode == 0, proc.stderr
    assert "| copa |" in proc.stdout and "| rte |" not in proc.stdout
    proc = _run("evaluate", str(run_dir), "--split", "test")
    assert proc.returncode == 2 and "no task has a test split" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("evaluate", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no such run directory" in proc.stderr
    proc = _run("evaluate", str(run_dir), "--data", "nosuch=x.tsv")
    assert proc.returncode == 2 and "unknown task 'nosuch'" in proc.stderr


def test_predict_every_task_type_from_a_fresh_process(five_task_run, tmp_path):
    run_dir, data, _ = five_task_run
    inputs = {
        "cola": [{"text": "The cat sat on the mat."}, "Him went store."],
        "rte": [{"text": "A man is walking.", "text_pair": "A person moves."}],
        "stsb": [{"text": "A man plays guitar.", "text_pair": "A man plays a guitar."}],
        "copa": [{"text": "The sun rose.", "question": "effect", "choices": ["It got light.", "It got dark."]}],
        "conll": [{"tokens": ["John", "lives", "in", "Paris"]}, {"text": "Mary visited London"}],
    }
    for task, items in inputs.items():
        src = tmp_path / f"{task}.jsonl"
        src.write_text("".join(json.dumps(x) + "\n" for x in items))
        out = tmp_path / f"{task}.out.jsonl"
        proc = _run("predict", str(run_dir), "--task", task, "--input", str(src), "--output", str(out), "--probas")
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == len(items)
        if task == "stsb":
            assert isinstance(rows[0]["score"], float)
        elif task == "conll":
            assert [len(r["label"]) for r in rows] == [4, 3]
        elif task == "copa":
            assert rows[0]["label"] in (0, 1) and abs(sum(rows[0]["probas"]) - 1) < 1e-4
        else:
            assert rows[0]["label"] in rows[0]["probas"] and abs(sum(rows[0]["probas"].values()) - 1) < 1e-4
    proc = _run("predict", str(run_dir), "--task", "cola", input='{"text": "Hello there."}\n')
    assert proc.returncode == 0 and "probas" not in proc.stdout and '"label"' in proc.stdout


def test_predict_errors_name_the_place(five_task_run, tmp_path):
    run_dir, _, _ = five_task_run
    proc = _run("predict", str(run_dir), "--task", "nosuch", input="{}\n")
    assert proc.returncode == 2 and "unknown task 'nosuch'" in proc.stderr and "cola, rte" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "a", \n')
    proc = _run("predict", str(run_dir), "--task", "cola", "--input", str(bad), "--output", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "line 2: not valid JSON" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()  # nothing half-written
    bad.write_text('{"text": "ok"}\n{"text": "x"}\n{"sentence": "no text key"}\n')
    proc = _run("predict", str(run_dir), "--task", "rte", "--input", str(bad))
    assert proc.returncode == 2 and "line 1:" in proc.stderr and "text_pair" in proc.stderr
    proc = _run("predict", str(run_dir), "--task", "cola", "--input", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    for line in (proc.stderr or "").splitlines():
        assert "Traceback" not in line


def test_train_refuses_to_overwrite_a_run(five_task_run, capsys):
    run_dir, data, _ = five_task_run
    os.environ["MTBERT_DATA"] = str(data)
    try:
        rc = main(["train", str(ROOT / "configs/deeppavlov_example.yaml"), "--run-dir", str(run_dir)])
    finally:
        del os.environ["MTBERT_DATA"]
    assert rc == 2
    assert "already holds a run; pass --overwrite" in capsys.readouterr().err
    assert (run_dir / "model/heads.safetensors").is_file()


def test_predictor_from_python(five_task_run):
    from mtbert.inference.predictor import Predictor

    run_dir, _, _ = five_task_run
    p = Predictor(run_dir)
    assert p.tasks == {"cola": "classification", "rte": "classification", "stsb": "regression",
                       "copa": "multiple_choice", "conll": "sequence_labeling"}
    out = p.predict("rte", [{"text": "A dog runs.", "text_pair": "An animal moves."}], return_probas=True)
    assert set(out[0]["probas"]) == {"entailment", "not_entailment"}


def test_example_configs_validate(monkeypatch):
    monkeypatch.setenv("MTBERT_DATA", str(SHARED_DATA))
    cfg = load_config(ROOT / "configs/deeppavlov_example.yaml")
    assert list(cfg.tasks) == ["cola", "rte", "stsb", "copa", "conll"]
    hub = load_config(ROOT / "configs/deeppavlov_example_hub.yaml")
    assert hub.tasks["copa"].hf_path == "super_glue" and hub.tasks["cola"].hf_path == "glue"
    assert hub.tasks["conll"].hf_path == "eriktks/conll2003" and hub.tasks["conll"].dev == "validation"


def test_a_nul_byte_in_an_argument_is_one_line_not_a_traceback(capsys):
    """A shell cannot pass one, but main(argv) from Python can (the fuzz test found `--output '\\x00'`
    reaching os.path.samefile, which raises ValueError)."""
    assert main(["convert", "dp.json", "--output", "\x00"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mtbert: error: argument '\\x00' contains a NUL byte; remove it"]
