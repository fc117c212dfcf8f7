"""The training recipe from Python: setup -> train_step / evaluate -> checkpoint, the Plateau's decisions
(lr drops, early stopping) and the Checkpointer's resume decision."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import validate
from mtbert.errors import UserError
from mtbert.training.checkpoint import PYTHON, Checkpointer, place_run
from mtbert.training.plateau import Plateau
from mtbert.training.trainer import checkpoint, evaluate, finish, setup, train, train_step


def _cfg(toy_config, **training):
    return validate({**toy_config, "training": {**toy_config["training"], **training}})


def test_steps_driven_by_hand_match_train(toy_config, tmp_path):
    """setup + train_step + evaluate + checkpoint, called one by one, make the run train() makes."""
    cfg = _cfg(toy_config, max_steps=4, eval_every=2)
    whole = train(cfg, tmp_path / "whole")
    run = setup(cfg, tmp_path / "hand")
    assert (run.plan.total_steps, run.state.step, run.main) == (4, 0, True)
    while run.state.step < run.plan.total_steps:
        train_step(run)
        if run.state.step in run.plan.eval_steps:
            assert evaluate(run) is False  # no patience: never stops early
            checkpoint(run)
    summary = finish(run)
    assert summary["best"] == whole["best"]
    a, b = load_file(tmp_path / "whole/model/heads.safetensors"), load_file(tmp_path / "hand/model/heads.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_plateau_drops_every_patience_evaluations_or_once_per_plateau():
    again, once = Plateau(drop_patience=2), Plateau(drop_patience=2, once_per_plateau=True)
    targets = [0.5, 0.4, 0.4, 0.4, 0.4, 0.6, 0.5, 0.5]
    assert [again.update(t).drop for t in targets] == [False, False, True, False, True, False, False, True]
    assert [once.update(t).drop for t in targets] == [False, False, True, False, False, False, False, True]


def test_plateau_stops_after_patience_and_its_state_round_trips():
    p = Plateau(patience=2)
    verdicts = [p.update(t) for t in (0.5, 0.7, 0.6)]
    assert [(v.improved, v.stop) for v in verdicts] == [(True, False), (True, False), (False, False)]
    copy = Plateau(patience=2)
    copy.set_state(p.state())
    assert copy.update(0.6).stop and p.update(0.6).stop
    assert p.state() == {"best": 0.7, "bad_evals": 2, "best_for_drop": -math.inf, "bad_for_drop": 0}


def test_plateau_baseline_is_the_score_to_beat():
    p = Plateau(patience=1)
    p.baseline(0.8)
    v = p.update(0.7)
    assert not v.improved and v.stop


def test_drop_lr_reloads_only_when_asked_and_respects_min_lr():
    class Schedule:
        div = 10.0

        def __init__(self):
            self.floors = []

        def drop(self, floor=False):
            self.floors.append(floor)
            return len(self.floors) < 2  # the second drop would go under min_lr

    reloads = []
    s = Schedule()
    p = Plateau(drop_patience=1, once_per_plateau=True, reload_best=True)
    assert p.drop_lr(s, lambda: reloads.append(1) or True)
    assert not p.drop_lr(s, lambda: reloads.append(1) or True)
    assert s.floors == [True, True] and reloads == [1, 1]
    assert Plateau(drop_patience=1).drop_lr(Schedule(), lambda: reloads.append(2)) and reloads == [1, 1]


def test_checkpointer_resumes_its_own_config_only(toy_config, tmp_path):
    cfg = _cfg(toy_config, max_steps=2, eval_every=2)
    run_dir = tmp_path / "run"
    train(cfg, run_dir)
    assert Checkpointer(run_dir, cfg).wants_resume()
    assert not Checkpointer(run_dir, cfg).wants_resume(overwrite=True)
    other = validate({**toy_config, "seed": 99, "training": {**toy_config["training"], "max_steps": 2,
                                                                "eval_every": 2}})
    assert not Checkpointer(run_dir, other).wants_resume()
    with pytest.raises(UserError, match="already holds a run; pass overwrite=True"):
        Checkpointer(run_dir, other).start(say=PYTHON)
    with pytest.raises(UserError, match="resume .*empty: no checkpoint there"):
        Checkpointer(tmp_path / "empty", cfg).start(resume=True, say=PYTHON)
    assert Checkpointer(run_dir, other).start(overwrite=True) is False
    assert not (run_dir / "metrics.jsonl").exists()  # the previous run's files are gone


def test_place_run_gives_the_one_default(toy_config, tmp_path):
    cfg = _cfg(toy_config)
    cfg.run_dir = None
    assert place_run(cfg) == place_run(cfg, None) and str(place_run(cfg)) == "runs/mtbert"
    assert place_run(cfg, tmp_path / "x") == tmp_path / "x" and cfg.run_dir == str(tmp_path / "x")


def test_the_readme_step_by_step_block_runs(toy_config, write_config, tmp_path, monkeypatch, capsys):
    """The Layout section's block, on the toy config: it trains, evaluates and leaves a model."""
    import ast
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("Training from Python step by step", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    path = write_config({**toy_config, "training": {**toy_config["training"], "eval_every": 10}})
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("configs/deeppavlov_example.yaml", str(path)), "README.md", "exec"), {})  # noqa: S102
    assert (tmp_path / "runs/by-hand/model/heads.safetensors").is_file()
    scores = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(scores) == set(toy_config["tasks"])


def test_benchmark_constraints_pin_only_mtberts_own_dependencies():
    """benchmarks/constraints.txt (the versions RESULTS.md was measured with) pins exact versions, and only of
    packages mtbert installs: a name pyproject.toml does not know would be a typo pip silently ignores."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    # huggingface_hub comes with transformers, not from pyproject, and is pinned because it loads the backbone
    known = {re.split(r"[<>=\[ ]", d)[0].lower().replace("_", "-") for d in wanted} | {"huggingface-hub"}
    pins = [line.split("==") for line in (root / "benchmarks" / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and all(len(pin) == 2 and pin[1].strip() for pin in pins), pins
    assert {name.lower().replace("_", "-") for name, _ in pins} <= known
    assert ["torch", "2.13.0"] in pins  # the CPU wheel the project pins
