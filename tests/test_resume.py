"""Crash safety: a run killed with SIGKILL and resumed ends identical to one never interrupted;
SIGTERM writes a checkpoint and exits cleanly; an unwritable run dir keeps the previous checkpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import validate
from mtbert.errors import UserError
from mtbert.training.checkpoint import checkpoints
from mtbert.training.trainer import train

TRAIN = """
import sys, yaml
from mtbert.config import validate
from mtbert.training.trainer import train
cfg = validate(yaml.safe_load(open(sys.argv[1])))
train(cfg, sys.argv[2], resume=len(sys.argv) > 3)
"""


def _config(toy_config, **training):
    raw = {**toy_config, "training": {**toy_config["training"], "max_steps": 24, "eval_every": 8,
                                       "checkpoint_every": 1, "keep_checkpoints": 3, **training}}
    for task in raw["tasks"].values():  # dropout on: the torch RNG must be restored exactly too
        task["dropout"] = 0.3
    return raw


def _final(run: Path) -> tuple[dict, list]:
    weights = load_file(checkpoints(run)[-1] / "model.safetensors")
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return weights, metrics


def _same(a: Path, b: Path) -> None:
    (wa, ma), (wb, mb) = _final(a), _final(b)
    assert ma == mb
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ha, hb = load_file(a / "model/heads.safetensors"), load_file(b / "model/heads.safetensors")
    assert all(torch.equal(ha[k], hb[k]) for k in ha)


def _run(cfg_path, run_dir, *extra):
    return subprocess.Popen([sys.executable, "-c", TRAIN, str(cfg_path), str(run_dir), *extra],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)


def test_sigkill_at_random_steps_then_resume_is_exact(toy_config, write_config, tmp_path):
    raw = _config(toy_config)
    path = write_config(raw)
    train(validate(raw), tmp_path / "whole")
    rng = random.Random(os.getpid())
    for attempt, kill_after in enumerate(sorted(rng.sample(range(2, 20), 2))):
        run = tmp_path / f"killed{attempt}"
        proc = _run(path, run)
        deadline = time.time() + 120
        while len(checkpoints(run)) == 0 or int(checkpoints(run)[-1].name.split("-")[1]) < kill_after:
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        stopped_at = int(checkpoints(run)[-1].name.split("-")[1])
        assert stopped_at < 24, "the run finished before it could be killed"
        resumed = _run(path, run, "--resume")
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
        _same(tmp_path / "whole", run)


def test_sigterm_checkpoints_and_exits_cleanly(toy_config, write_config, tmp_path):
    raw = _config(toy_config, checkpoint_every=None)
    path = write_config(raw)
    run = tmp_path / "run"
    proc = _run(path, run)
    deadline = time.time() + 120
    while not checkpoints(run):  # first evaluation at step 8 writes a checkpoint; then we stop it
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "TrainingInterrupted" in err  # the library raises; the CLI turns it into a message
    last = checkpoints(run)[-1]
    state = json.loads((last / "trainer.json").read_text())
    assert 8 <= state["step"] < 24 and not state["done"]
    resumed = _run(path, run, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    train(validate(raw), tmp_path / "whole")
    _same(tmp_path / "whole", run)


def test_only_the_last_checkpoints_are_kept(toy_config, tmp_path):
    train(validate(_config(toy_config, max_steps=10, keep_checkpoints=2)), tmp_path / "run")
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-00000009", "checkpoint-00000010"]


def test_resume_refuses_another_config(toy_config, tmp_path):
    train(validate(_config(toy_config, max_steps=4)), tmp_path / "run")
    with pytest.raises(UserError, match="different config"):
        train(validate(_config(toy_config, max_steps=4, lr=5e-4)), tmp_path / "run", resume=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_run_dir_keeps_the_previous_checkpoint(toy_config, tmp_path):
    run = tmp_path / "run"
    train(validate(_config(toy_config, max_steps=4)), run)
    before = checkpoints(run)[-1]
    os.chmod(run, 0o555)
    try:
        with pytest.raises(UserError, match="cannot write"):
            train(validate(_config(toy_config, max_steps=8)), run, resume=False)
    finally:
        os.chmod(run, 0o755)
    assert before.is_dir()


def test_full_disk_error_keeps_the_previous_checkpoint(toy_config, tmp_path, monkeypatch):
    from mtbert.training import checkpoint as ck

    real, calls = ck.save_file, {"n": 0}

    def full_after_first_checkpoint(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # model and rng of the first checkpoint went through
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(ck, "save_file", full_after_first_checkpoint)
    run = tmp_path / "run"
    with pytest.raises(UserError, match="No space left on device.*checkpoint-00000004 is intact"):
        train(validate(_config(toy_config, max_steps=8, eval_every=4, checkpoint_every=None)), run)
    assert [p.name for p in checkpoints(run)] == ["checkpoint-00000004"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no half-written directory left


def test_nonfinite_loss_is_skipped_and_counted_or_stops(toy_config, tmp_path, monkeypatch):
    from mtbert.modeling.model import MultiTaskModel

    real = MultiTaskModel.forward
    calls = {"n": 0}

    def sometimes_nan(self, task, batch):  # the training step's forward; evaluation runs forward_heads
        calls["n"] += 1
        out = real(self, task, batch)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(MultiTaskModel, "forward", sometimes_nan)
    summary = train(validate(_config(toy_config, max_steps=6, checkpoint_every=None)), tmp_path / "a")
    assert summary["nonfinite_steps"] == 1 and summary["steps"] == 6
    calls["n"] = 0
    with pytest.raises(UserError, match=r"non-finite loss or gradient \(nan\) on task \w+ at step 3"):
        train(validate(_config(toy_config, max_steps=6, on_nonfinite_loss="stop")), tmp_path / "b")


def test_safetensors_io_error_is_reported_like_a_full_disk(toy_config, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from mtbert.training import checkpoint as ck

    def fail(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ck, "save_file", fail)
    with pytest.raises(UserError, match="cannot write checkpoint at step 4 .*No space left"):
        train(validate(_config(toy_config, max_steps=4, checkpoint_every=None)), tmp_path / "run")


def test_model_write_failure_keeps_the_previous_best_model(toy_config, tmp_path, monkeypatch):
    from mtbert import rundir

    run = tmp_path / "run"
    train(validate(_config(toy_config, max_steps=4, checkpoint_every=None)), run)
    before = load_file(run / "model/heads.safetensors")

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir, "save_file", full)
    with pytest.raises(UserError, match="cannot write the model .*previous best model is intact"):
        rundir.save_model(run, *_trained_parts(run))
    after = load_file(run / "model/heads.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def _trained_parts(run):
    from mtbert.rundir import load_model

    cfg, model, tok, labels = load_model(run)
    return model, tok, cfg, labels


def test_run_dir_config_does_not_import_custom_metrics(toy_config, tmp_path, monkeypatch):
    """A run dir from elsewhere must not run code on load: its config's module:function is not imported."""
    from mtbert.rundir import load_model

    mod = tmp_path / "evil_metric.py"
    mod.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\ndef m(y_true, y_pred):\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = _config(toy_config, max_steps=2, checkpoint_every=None)
    raw["tasks"]["sent"]["metric"] = ["accuracy"]
    train(validate(raw), tmp_path / "run")
    saved = tmp_path / "run/model/config.yaml"
    saved.write_text(saved.read_text().replace("- accuracy", "- evil_metric:m", 1))
    cfg, *_ = load_model(tmp_path / "run")
    assert cfg.tasks["sent"].metrics[0] == "evil_metric:m"
    assert not (tmp_path / "ran").exists()


def test_cli_sigterm_message_then_automatic_resume(toy_config, write_config, tmp_path):
    """The command line: SIGTERM -> checkpoint, a message saying how to resume, exit 128 + 15; running the
    same command again resumes (no --resume needed) and ends as an uninterrupted run."""
    raw = _config(toy_config, checkpoint_every=None)
    path = write_config(raw)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mtbert", "train", str(path), "--run-dir", str(run)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not checkpoints(run):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"a checkpoint is saved. Resume with: mtbert train {path} --resume {run}" in err
    assert "Traceback" not in err
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming it" in again.stderr
    train(validate(raw), tmp_path / "whole")
    _same(tmp_path / "whole", run)


def test_fp16_grad_scaler_state_is_checkpointed_and_resumed(toy_config, tmp_path, monkeypatch):
    """The GPU's fp16 path (autocast fp16 + GradScaler), run on the CPU: the scaler's state is in every
    checkpoint and a resumed run ends as the uninterrupted one."""
    import shutil

    from mtbert.training import trainer as tr

    monkeypatch.setattr(tr, "resolve_precision", lambda precision, device: "fp16")
    cfg = validate(_config(toy_config, max_steps=6, eval_every=3))
    train(cfg, tmp_path / "a")
    scaler = json.loads((checkpoints(tmp_path / "a")[-1] / "trainer.json").read_text())["grad_scaler"]
    assert 0 < scaler["scale"] <= 65536.0 and "_growth_tracker" in scaler
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for late in checkpoints(tmp_path / "b")[-2:]:  # as if killed after step 4
        shutil.rmtree(late)
    train(cfg, tmp_path / "b", resume=True)
    _same(tmp_path / "a", tmp_path / "b")


def test_metrics_lines_cut_short_by_a_kill_are_left_out_and_other_damage_is_named(tmp_path, caplog):
    """metrics.jsonl is appended line by line: a kill mid-append leaves a torn last line, which resume
    drops (its evaluation runs again); a bad line anywhere else is a damaged file, named with its line."""
    from mtbert.errors import UserError
    from mtbert.rundir import best_dev_record, read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "target": 0.5}\n{"step": 4, "target": 0.7}\n{"step": 6, "tar')
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4]
    assert "metrics.jsonl:3: an evaluation line cut short" in caplog.text
    assert best_dev_record(tmp_path) == {"step": 4, "target": 0.7}
    for bad in ('[1]\n{"step": 4}\n', '{"target": 1}\n{"step": 4}\n', '{"step": "2"}\n{"step": 4}\n'):
        path.write_text(bad)
        with pytest.raises(UserError, match=r"metrics.jsonl:1: not an evaluation .* delete that line"):
            read_metrics(tmp_path)
        assert best_dev_record(tmp_path) is None  # reading a model's provenance never fails on it
    assert read_metrics(tmp_path / "nothing") == []
