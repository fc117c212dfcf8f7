"""Loading a run dir or an ONNX bundle never imports what its config names.

A run's config may name custom metrics as `module:function`, which validating a config the user passed
imports (that is how a user's own metric is checked). A run dir or bundle may come from elsewhere: loading
it must not run code. Here a planted module `evilmod`, importable from sys.path and PYTHONPATH, writes a
marker file when imported; the run's saved config (and so the bundle's) names `evilmod:metric` and
`evilmod:target`. Every command that loads a model must work and leave no marker.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import yaml

from mtbert.cli import main

EVIL = "evilmod"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """A folder holding evilmod.py, which writes `ran` beside itself when imported."""
    folder = tmp_path_factory.mktemp("planted")
    (folder / f"{EVIL}.py").write_text(
        "from pathlib import Path\n(Path(__file__).parent / 'ran').write_text('imported')\n"
        "def metric(y_true, y_pred):\n    return 0.0\n"
        "def target(outputs):\n    return 0.0\n")
    return folder


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory, tiny_bert) -> Path:
    """A one-step run whose saved config names evilmod's functions as a metric and as the target."""
    from mtbert.config import load_config
    from mtbert.training.trainer import train

    tmp = tmp_path_factory.mktemp("evil_run")
    (tmp / "data").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp / "data" / name).write_text("sentence\tlabel\ngood film\tpos\nbad film\tneg\n")
    raw = {"backbone": tiny_bert, "data_dir": str(tmp / "data"), "max_length": 32,
           # pooler: a head `export --format hf` takes
           "tasks": {"sent": {"type": "classification", "train": "train.tsv", "dev": "dev.tsv", "pooling": "pooler",
                              "columns": {"text": "sentence", "label": "label"}}},
           "training": {"max_steps": 1, "batch_size": 2, "progress": False, "precision": "fp32"}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(raw))
    run = tmp / "run"
    train(load_config(tmp / "config.yaml"), run)
    for config in (run / "config.yaml", run / "model" / "config.yaml"):
        saved = yaml.safe_load(config.read_text())
        saved["tasks"]["sent"]["metric"] = ["accuracy", f"{EVIL}:metric"]
        saved["training"]["target_metric"] = f"{EVIL}:target"
        config.write_text(yaml.safe_dump(saved, sort_keys=False))
    (tmp / "in.jsonl").write_text('{"text": "good film"}\n')
    return run


@pytest.fixture(scope="module")
def evil_bundle(evil_run, tmp_path_factory) -> Path:
    from mtbert.inference.export import export_onnx

    return export_onnx(evil_run, tmp_path_factory.mktemp("evil_bundle") / "bundle")


@pytest.fixture
def importable(planted, monkeypatch) -> Path:
    """evilmod on sys.path and PYTHONPATH; afterwards forgotten, so every test imports it afresh."""
    monkeypatch.syspath_prepend(str(planted))
    monkeypatch.setenv("PYTHONPATH", str(planted))
    (planted / "ran").unlink(missing_ok=True)
    sys.modules.pop(EVIL, None)
    yield planted / "ran"
    sys.modules.pop(EVIL, None)
    (planted / "ran").unlink(missing_ok=True)


def test_the_planted_module_runs_when_imported(importable):
    """The control: importing evilmod leaves the marker, so its absence below means it was never imported."""
    importlib.import_module(EVIL)
    assert importable.exists()


def test_the_run_really_names_it(evil_run, evil_bundle, importable):
    """The other control: the saved configs name evilmod, and `evaluate --custom-metrics` (the user's explicit
    consent) does import it."""
    for config in (evil_run / "model" / "config.yaml", evil_bundle / "config.yaml"):
        assert f"{EVIL}:metric" in config.read_text()
    assert main(["-q", "evaluate", str(evil_run), "--custom-metrics"]) == 0
    assert importable.exists()


def commands(run: Path, bundle: Path, tmp: Path) -> dict[str, list[str]]:
    inputs = str(run.parent / "in.jsonl")
    return {
        "predict": ["predict", str(run), "--task", "sent", "--input", inputs],
        "predict-onnx": ["predict", str(bundle), "--task", "sent", "--input", inputs, "--engine", "onnx"],
        "predict-all": ["predict", str(run), "--all", "--input", inputs],
        "predict-all-onnx": ["predict", str(bundle), "--all", "--input", inputs, "--engine", "onnx"],
        "predict-split": ["predict", str(run), "--split", "dev", "--output", str(tmp / "split")],
        "evaluate": ["evaluate", str(run)],
        "export": ["export", str(run), "-o", str(tmp / "exported")],
        "export-hf": ["export", str(run), "--format", "hf", "--task", "sent", "-o", str(tmp / "hf")],
    }


@pytest.mark.parametrize("command", ["predict", "predict-onnx", "predict-all", "predict-all-onnx", "predict-split",
                                     "evaluate", "export", "export-hf"])
def test_commands_that_load_a_model_never_import_it(command, evil_run, evil_bundle, importable, tmp_path):
    argv = commands(evil_run, evil_bundle, tmp_path)[command]
    assert main(["-q", *argv]) == 0
    assert not importable.exists() and EVIL not in sys.modules, f"{command} imported {EVIL}"


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_serve_app_creation_never_imports_it(engine, evil_run, evil_bundle, importable):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mtbert.inference.engines import load_predictor
    from mtbert.inference.server import create_app

    predictor = load_predictor(evil_run if engine == "torch" else evil_bundle, engine)
    with TestClient(create_app(predictor)) as client:
        assert client.post("/predict", json={"task": "sent", "inputs": ["good film"]}).status_code == 200
    assert not importable.exists() and EVIL not in sys.modules

