"""The Python API (`mtbert.train`, `mtbert.load`, `mtbert.evaluate`): the README's example runs as printed,
configs come as paths, dicts or Configs, and run dirs are treated as the command line treats them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SHARED_DATA

import mtbert
from mtbert.api import resolve_config
from mtbert.config import validate

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Train from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")
def test_the_readme_example_runs_as_printed(tmp_path, monkeypatch, capsys):
    """The README's block, on slices of the five tasks' files (MTBERT_DATA) with the packaged MiniLM."""
    data = tmp_path / "data"
    for rel, n in [("glue/cola/train.tsv", 120), ("glue/cola/dev.tsv", 40), ("glue/rte/train.tsv", 60),
                   ("glue/rte/dev.tsv", 30), ("glue/stsb/train.tsv", 80), ("glue/stsb/dev.tsv", 30),
                   ("superglue/copa/train.jsonl", 40), ("superglue/copa/val.jsonl", 20),
                   ("conll2003/train.txt", 2000), ("conll2003/valid.txt", 300)]:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(SHARED_DATA / rel, encoding="utf-8") as f:
            (data / rel).write_text("".join(line for _, line in zip(range(n), f, strict=False)), encoding="utf-8")
    monkeypatch.setenv("MTBERT_DATA", str(data))
    monkeypatch.chdir(tmp_path)  # the example writes runs/quick under the current directory
    code = _readme_example().replace("configs/deeppavlov_example.yaml", str(ROOT / "configs/deeppavlov_example.yaml"))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    result = scope["result"]
    assert result.run_dir == Path("runs/quick") and (tmp_path / "runs/quick/model").is_dir()
    assert set(result.scores) == {"cola", "rte", "stsb", "copa", "conll"} and result.step == 20
    assert mtbert.evaluate(result.run_dir, split="dev") == result.scores  # evaluate reproduces training's scores
    assert [r["step"] for r in scope["steps"]] == [20]  # the callback heard the evaluation (eval_every 1000)
    assert scope["steps"][0]["dev"] == result.scores
    out = capsys.readouterr().out
    assert "label" in out


def test_configs_as_dict_path_or_config_with_overrides(toy_config, write_config):
    path = write_config(toy_config)
    from_path = resolve_config(path, {"training.lr": 3e-4, "tasks.sent.metric": ["f1"]})
    assert from_path.training.lr == 3e-4 and from_path.tasks["sent"].metric == ["f1"]
    # --set strings are parsed as YAML, dict values are taken as they are
    assert resolve_config(path, ["training.lr=2e-4"]).training.lr == 2e-4
    as_dict = {**toy_config, "tasks": {"task_defaults": {"dropout": 0.2}, **toy_config["tasks"]}}
    cfg = resolve_config(as_dict, {"seed": 9})
    assert cfg.seed == 9 and cfg.tasks["sts"].dropout == 0.2  # task_defaults resolved as from a file
    assert resolve_config(validate(toy_config)).seed == toy_config["seed"]
    with pytest.raises(mtbert.UserError, match="overrides apply to a config file or dict"):
        resolve_config(validate(toy_config), {"seed": 2})
    with pytest.raises(mtbert.UserError, match="expected a file path, a dict or a Config, not int"):
        resolve_config(3)
    with pytest.raises(mtbert.UserError, match="expected a dict"):
        resolve_config(path, "training.lr=1")
    with pytest.raises(mtbert.UserError, match="training.lr"):
        resolve_config(path, {"training.lr": -1.0})  # validated as the command line validates


def test_train_refuses_a_run_in_the_way_in_pythons_words_and_resumes_the_same_config(toy_config, tmp_path):
    raw = {**toy_config, "training": {**toy_config["training"], "max_steps": 4, "eval_every": 2}}
    first = mtbert.train(raw, run_dir=tmp_path / "run")
    assert first.step in (2, 4) and first.scores["sent"]["accuracy"] >= 0 and first.summary["steps"] == 4
    with pytest.raises(mtbert.UserError, match=r"already holds a run; pass overwrite=True to replace it, or run_dir=\.\.\."):
        mtbert.train({**raw, "seed": 5}, run_dir=tmp_path / "run")
    again = mtbert.train({**raw, "seed": 5}, run_dir=tmp_path / "run", overwrite=True)
    assert again.summary["steps"] == 4
    with pytest.raises(mtbert.UserError, match="resume .*: no checkpoint there to resume from"):
        mtbert.train(raw, run_dir=tmp_path / "empty", resume=True)
    model = mtbert.load(tmp_path / "run")
    assert model.predict("sent", ["great fun"])[0]["label"] in ("pos", "neg")
    with pytest.raises(mtbert.UserError, match="split 'train'"):
        mtbert.evaluate(tmp_path / "run", split="train")
