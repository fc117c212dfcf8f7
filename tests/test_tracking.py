"""Watching a run: TensorBoard and MLflow log metrics.jsonl's numbers and continue on resume; report.md
and curves.png are current after every evaluation; each distinct warning is shown once per run, above the
progress bar."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mtbert.config import validate
from mtbert.errors import UserError
from mtbert.training import trainer as trainer_module
from mtbert.training.checkpoint import fingerprint
from mtbert.training.loggers import Callback
from mtbert.training.report import task_colours
from mtbert.training.trainer import train

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def _cfg(toy_config, **training):
    raw = dict(toy_config)
    raw["training"] = {**toy_config["training"], **training}
    return validate(raw)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _tensorboard(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}, events


def _mlflow(run: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow' / 'mlflow.db'}")
    run_id = (run / "mlflow_run_id").read_text().strip()
    return client, run_id


def _history(client, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


class _Raise(Callback):
    """Stops the run at a step, as a crash would; remembers report.md as each evaluation left it."""

    def __init__(self, run: Path, at_step: int, error: type[BaseException] = RuntimeError):
        self.run, self.at_step, self.error = run, at_step, error
        self.reports: dict[int, str] = {}

    def on_evaluate(self, step, record):
        self.reports[step] = (self.run / "report.md").read_text()

    def on_step(self, step, scalars):
        if step == self.at_step:
            raise self.error(f"stopped at step {step}")


def _with_callback(monkeypatch, callback: Callback) -> None:
    """The configured loggers, and `callback` after them."""
    build = trainer_module.build_loggers
    monkeypatch.setattr(trainer_module, "build_loggers", lambda *a, **k: [*build(*a, **k), callback])


def test_tensorboard_and_mlflow_log_the_numbers_of_metrics_jsonl(toy_config):
    cfg = _cfg(toy_config, loggers=["tensorboard", "mlflow"])
    summary = train(cfg)
    run = Path(summary["run_dir"])
    records = _records(run)
    assert [r["step"] for r in records] == [6, 12]

    scalars, _ = _tensorboard(run)
    client, run_id = _mlflow(run)
    for record in records:
        step = record["step"]
        expected = {"target": record["target"], "lr": record["lr"], "epoch": record["epoch"],
                    **{f"train_loss/{t}": v for t, v in record["train_loss"].items()},
                    **{f"dev/{t}/{m}": v for t, ms in record["dev"].items() for m, v in ms.items()}}
        assert "dev/sent/accuracy" in expected and "dev/ner/ner_f1" in expected
        for name, value in expected.items():
            assert scalars[name][step] == pytest.approx(value, rel=1e-6), name  # event files hold float32
            assert dict(_history(client, run_id, name))[step] == pytest.approx(value, rel=1e-12), name

    # every step: its task's loss, the learning rate and the speed
    assert sorted(scalars["train/lr"]) == list(range(1, 13))
    assert sorted(dict(_history(client, run_id, "train/examples_per_s"))) == list(range(1, 13))
    loss_steps = sorted(s for tag, points in scalars.items() if tag.startswith("train/loss/") for s in points)
    assert loss_steps == list(range(1, 13))
    assert {tag for tag in scalars if tag.startswith("train/loss/")} <= {f"train/loss/{t}" for t in cfg.tasks}
    for tag in (t for t in scalars if t.startswith("train/loss/")):
        logged = _history(client, run_id, tag)
        assert [s for s, _ in logged] == sorted(scalars[tag])
        assert [v for _, v in logged] == pytest.approx([scalars[tag][s] for s, _ in logged], rel=1e-6)
    for before, record in zip([0, 6], records, strict=True):  # metrics.jsonl's train_loss: the steps' mean
        for task, mean in record["train_loss"].items():
            points = [v for s, v in _history(client, run_id, f"train/loss/{task}") if before < s <= record["step"]]
            assert sum(points) / len(points) == pytest.approx(mean, rel=1e-12)

    mlflow_run = client.get_run(run_id)
    assert mlflow_run.info.status == "FINISHED"
    params = mlflow_run.data.params
    assert params["training.max_steps"] == "12" and params["tasks.sent.type"] == "classification"
    assert params["training.loggers"] == '["tensorboard", "mlflow"]'
    model_files = {f.path for f in client.list_artifacts(run_id, "model")}
    assert "model/heads.safetensors" in model_files
    assert {"report.md", "curves.png"} <= {f.path for f in client.list_artifacts(run_id)}
    assert (run / "mlflow" / "artifacts").is_dir()  # beside the run, not in the working directory


def test_resume_continues_the_same_tensorboard_dir_and_mlflow_run(toy_config, monkeypatch):
    cfg = _cfg(toy_config, loggers=["tensorboard", "mlflow"])
    run = Path(cfg.run_dir)
    with monkeypatch.context() as patch:
        _with_callback(patch, _Raise(run, at_step=9, error=KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    client, first_id = _mlflow(run)
    assert client.get_run(first_id).info.status == "KILLED"
    assert max(s for s, _ in _history(client, first_id, "train/lr")) == 9  # logged up to the crash
    first_files = sorted((run / "tensorboard").iterdir())

    train(cfg, resume=True)  # from the checkpoint of step 6
    client, run_id = _mlflow(run)
    assert run_id == first_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_experiment_by_name("mtbert").experiment_id])) == 1
    records = _records(run)
    assert [r["step"] for r in records] == [6, 12]
    assert _history(client, run_id, "target") == [(r["step"], pytest.approx(r["target"])) for r in records]

    files = sorted((run / "tensorboard").iterdir())
    assert files[:len(first_files)] == first_files and len(files) == len(first_files) + 1  # the same dir
    scalars, events = _tensorboard(run)
    # steps 7 to 9 of the interrupted attempt are purged: each step once, the resumed values
    assert sorted(scalars["train/lr"]) == list(range(1, 13))
    assert {s: pytest.approx(v) for s, v in scalars["target"].items()} == {r["step"]: r["target"] for r in records}


def test_report_and_curves_are_current_after_each_evaluation_of_a_run_that_crashes(toy_config, monkeypatch):
    cfg = _cfg(toy_config)
    run = Path(cfg.run_dir)
    stopper = _Raise(run, at_step=9)
    _with_callback(monkeypatch, stopper)
    with pytest.raises(RuntimeError, match="stopped at step 9"):
        train(cfg)
    report = (run / "report.md").read_text()
    assert stopper.reports[6] == report  # written at the evaluation of step 6, before anything else
    assert "- steps: 6 of 12 so far" in report
    record = _records(run)[0]
    assert f"= {record['target']:.4f}" in report and "| sent | classification | accuracy (primary)" in report
    assert "; precision: fp32;" in report  # what evaluate reads back (rundir.recorded_precision)
    assert (run / "curves.png").stat().st_size > 0
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # atomic writes left no temporaries


def test_finished_report_says_the_steps_only(toy_config):
    run = Path(train(_cfg(toy_config))["run_dir"])
    assert "- steps: 12; training time" in (run / "report.md").read_text()


def test_each_distinct_warning_once_per_run_through_tqdm_write(toy_config, monkeypatch, caplog):
    """The first evaluation's warnings pass; the same ones at the next evaluation do not; the lines reach a
    console handler through tqdm.write, which keeps the progress bar whole."""
    log = logging.getLogger("mtbert")
    evaluate_all = trainer_module.evaluate_all
    evaluations = []
    same = "mcc: all predictions are the same class; the score is 0.0"

    def noisy_evaluate(*args, **kwargs):
        evaluations.append(1)
        log.warning(same)
        log.warning("evaluation %d", len(evaluations))
        return evaluate_all(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate_all", noisy_evaluate)
    written = []
    monkeypatch.setattr("tqdm.std.tqdm.write", classmethod(lambda cls, s, file=None, end="\n", nolock=False:
                                                           written.append(s)))
    console = logging.StreamHandler(sys.stderr)
    logging.root.addHandler(console)
    try:
        with caplog.at_level(logging.WARNING, logger="mtbert"):
            train(_cfg(toy_config))
            warned = [r.getMessage() for r in caplog.records if r.name == "mtbert"]
            assert len(evaluations) == 2
            assert warned.count(same) == 1
            assert warned.count("evaluation 1") == 1 and warned.count("evaluation 2") == 1
            assert same in written and "evaluation 2" in written
            assert console in logging.root.handlers  # the redirect is undone after training

            caplog.clear()
            train(_cfg(toy_config, max_steps=6), toy_config["run_dir"] + "2")  # another run: shown again
            assert [r.getMessage() for r in caplog.records if r.name == "mtbert"].count(same) == 1
    finally:
        logging.root.removeHandler(console)


@pytest.mark.parametrize("progress", [True, False])
def test_dev_evaluation_has_a_progress_bar_that_follows_training_progress(toy_config, monkeypatch, progress):
    """Each evaluation runs a 'dev' bar over every dev input (shown only with training.progress)."""
    from tqdm import tqdm

    bars = []

    class Recorded(tqdm):
        def __init__(self, *args, desc=None, **kwargs):
            super().__init__(*args, desc=desc, **kwargs)
            bars.append((desc, self.disable, self))  # a disabled bar keeps no desc; close() disables any

    from mtbert.evaluation import evaluate as evaluation_module

    monkeypatch.setattr(evaluation_module, "tqdm", Recorded)  # the dev bar: evaluation's one scoring function
    train(_cfg(toy_config, progress=progress))
    dev = [(disabled, bar) for desc, disabled, bar in bars if desc == "dev"]
    assert len(dev) == 2  # the evaluations at steps 6 and 12
    assert all(disabled is not progress for disabled, _ in dev)
    if progress:  # a disabled bar counts nothing
        assert all(bar.n == bar.total == 28 for _, bar in dev)  # 10 + 10 + 6 + 2 dev inputs


def test_task_colours_one_per_task_stable_across_calls():
    tasks = ["sent", "sts", "mc", "ner"]
    colours = task_colours(tasks)
    assert list(colours) == tasks and len(set(colours.values())) == 4
    assert all(c.startswith("#") and len(c) == 7 for c in colours.values())
    assert task_colours(tasks) == colours  # the same task gets the same colour every time it is drawn
    assert task_colours(["sent", "sts"]) == {"sent": colours["sent"], "sts": colours["sts"]}
    many = task_colours([f"t{i}" for i in range(20)])
    assert len(set(many.values())) == 20  # tab20 beyond ten tasks


def test_curves_draw_each_task_in_its_colour_in_every_panel(toy_config, monkeypatch):
    """The loss and dev panels draw a task's lines with task_colours' colour; the lr panel has its line."""
    import matplotlib.pyplot as plt

    figures = []
    subplots = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: figures.append(subplots(*a, **k)) or figures[-1])
    cfg = _cfg(toy_config)
    train(cfg)
    _, (ax_loss, ax_dev, ax_lr) = figures[-1]
    colours = task_colours(list(cfg.tasks))
    from matplotlib.colors import to_hex

    assert {line.get_label(): to_hex(line.get_color()) for line in ax_loss.lines} == \
        {t: colours[t] for t in {line.get_label() for line in ax_loss.lines}}
    assert {line.get_label().split()[0]: to_hex(line.get_color()) for line in ax_dev.lines} == colours
    assert len(ax_lr.lines) == 1 and list(ax_lr.lines[0].get_xdata()) == list(range(1, 13))
    assert all(float(t).is_integer() for t in ax_loss.get_xticks())


def test_loggers_do_not_change_the_fingerprint(toy_config):
    """Adding a logger to a run being resumed is allowed: it changes who watches, not what is trained."""
    assert fingerprint(_cfg(toy_config)) == fingerprint(_cfg(toy_config, loggers=["tensorboard", "mlflow"],
                                                             mlflow_uri="sqlite:///elsewhere.db"))


def test_missing_package_is_one_clear_error_before_reading_data(toy_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without mlflow gives on import
    monkeypatch.setattr(trainer_module, "prepare_data", lambda *a, **k: pytest.fail("data read before the check"))
    with pytest.raises(UserError) as info:
        train(_cfg(toy_config, loggers=["mlflow"]))
    assert str(info.value) == ("training.loggers: 'mlflow' needs the mlflow package, which is not installed; "
                               "run: pip install 'mtbert[tracking]'")


def test_an_unusable_mlflow_uri_is_one_clear_error(toy_config):
    with pytest.raises(UserError, match=r"^training.mlflow_uri: MLflow cannot use 'nosuchscheme://x' \("):
        train(_cfg(toy_config, loggers=["mlflow"], mlflow_uri="nosuchscheme://x"))


def test_training_without_loggers_never_imports_them():
    code = ("import sys; import mtbert.training.trainer, mtbert.cli; "
            "print(sorted(m for m in ('mlflow', 'tensorboard', 'torch.utils.tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
