"""Live views of a run beside metrics.jsonl: TensorBoard event files and an MLflow run.

The trainer tells a `Callback` what happens (a step, an evaluation, a checkpoint, the end) and never
learns which views are watching; `training.loggers` chooses them and only rank 0 builds any. tensorboard
and mlflow are imported only when a config asks for them (`pip install 'mtbert[tracking]'`).

Names: each step logs train/loss/<task>, train/lr and train/examples_per_s; each evaluation logs its
metrics.jsonl line flattened with '/' (dev/<task>/<metric>, train_loss/<task>, target, lr, epoch), so
both views show metrics.jsonl's numbers.

A resumed run goes on in the same views: TensorBoard writes into the same folder and hides what the
interrupted attempt logged after the checkpoint (purge_step); MLflow continues the run whose id the run
dir keeps in `mlflow_run_id`. MLflow cannot drop points, so the steps after the checkpoint are there twice;
resume is exact on CPU, so both carry the same values (examples/s aside).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import time
from pathlib import Path

from mtbert.errors import UserError
from mtbert.io import atomic_write_text
from mtbert.rundir import MLFLOW, MLFLOW_RUN_ID, MODEL, TENSORBOARD

log = logging.getLogger("mtbert")

EXPERIMENT = "mtbert"
INSTALL = "pip install 'mtbert[tracking]'"


class Callback:
    """What the trainer says while it trains; a subclass overrides what it needs."""

    def on_step(self, step: int, scalars: dict[str, float]) -> None:
        """After optimiser step `step` (1-based): scalars such as train/loss/<task>."""

    def on_evaluate(self, step: int, record: dict) -> None:
        """After a dev evaluation: `record` is the line just appended to metrics.jsonl."""

    def on_checkpoint(self, step: int) -> None:
        """A checkpoint was written: a resume starts here, so what was logged up to `step` must be stored."""

    def on_end(self, step: int, outcome: str) -> None:
        """The run ended: 'finished', 'interrupted' (a signal; it can be resumed) or 'failed'."""


class Callbacks(Callback):
    """Several callbacks as one, called in order."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks

    def on_step(self, step, scalars):
        for c in self.callbacks:
            c.on_step(step, scalars)

    def on_evaluate(self, step, record):
        for c in self.callbacks:
            c.on_evaluate(step, record)

    def on_checkpoint(self, step):
        for c in self.callbacks:
            c.on_checkpoint(step)

    def on_end(self, step, outcome):
        for c in self.callbacks:
            c.on_end(step, outcome)


def flatten(tree: dict, sep: str = "/", prefix: str = "") -> dict:
    """{"dev": {"sent": {"f1": 0.5}}} -> {"dev/sent/f1": 0.5}."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, sep, name + sep))
        else:
            out[name] = value
    return out


def eval_scalars(record: dict) -> dict[str, float]:
    """A metrics.jsonl line as scalar names and values (its step is where they are drawn)."""
    return {k: float(v) for k, v in flatten(record).items() if k != "step"}


def require_packages(names: list[str]) -> None:
    """Refuse loggers whose package is missing before the data is read, not after."""
    for name in names:
        try:
            importlib.import_module(name)  # each logger is named after its package
        except ImportError:
            raise UserError(f"training.loggers: '{name}' needs the {name} package, which is not installed; "
                            f"run: {INSTALL}") from None


def build_loggers(names: list[str], run_dir: Path, start_step: int, params: dict,
                  mlflow_uri: str | None = None) -> list[Callback]:
    """The loggers `training.loggers` names; `start_step` > 0 when resuming from a checkpoint at that step;
    `params`: the resolved config, which a new MLflow run records."""
    require_packages(names)
    makers = {"tensorboard": lambda: TensorBoardLogger(run_dir, start_step),
              "mlflow": lambda: MlflowLogger(run_dir, start_step, params, mlflow_uri)}
    return [makers[name]() for name in names]


class TensorBoardLogger(Callback):
    def __init__(self, run_dir: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run hides the interrupted attempt's events after its checkpoint; a new one (step 0)
        # hides whatever an earlier run left in the folder, as metrics.jsonl starts afresh
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD), purge_step=start_step + 1 if start_step else 0,
                                    flush_secs=30)

    def _write(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def on_step(self, step, scalars):
        self._write(step, scalars)

    def on_evaluate(self, step, record):
        self._write(step, eval_scalars(record))
        self.writer.flush()  # a live view: every evaluation shows at once

    def on_checkpoint(self, step):
        self.writer.flush()

    def on_end(self, step, outcome):
        self.writer.close()


# MLflow's names: letters, digits, _ - . / and space (Windows has no ':', which custom metrics use)
_MLFLOW_NAME_UNSAFE = re.compile(r"[^\w\-./ ]")
_MLFLOW_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


class MlflowLogger(Callback):
    """One MLflow run per run dir, through MlflowClient (no global active run to leak into the caller)."""

    MAX_PARAM_CHARS = 6000  # MLflow refuses a longer param value
    PARAMS_PER_CALL = 100  # and more params in one log_batch
    METRICS_PER_CALL = 1000

    def __init__(self, run_dir: Path, start_step: int, params: dict, uri: str | None):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        self.pending: list = []
        self.own_store = uri is None
        self.uri = uri or self.default_uri(run_dir)
        id_file = run_dir / MLFLOW_RUN_ID
        # MLflow announces each table it creates in a new store at INFO, through its own handler
        quiet = logging.getLogger("mlflow")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            self.run_id = self._resumed_run(id_file.read_text().strip()) \
                if start_step and id_file.is_file() else None
            if self.run_id is None:
                self.run_id = self._new_run(params)
                atomic_write_text(id_file, self.run_id + "\n")
        except MlflowException as err:
            reason = str(err.message).splitlines()[0]
            raise UserError(f"training.mlflow_uri: MLflow cannot use '{self.uri}' ({reason}); give a "
                            "database URI such as sqlite:///mlflow.db, a server's http:// address, or leave it "
                            "unset for the run dir's own store") from None
        finally:
            quiet.setLevel(level)

    @staticmethod
    def default_uri(run_dir: Path) -> str:
        store = run_dir.resolve() / MLFLOW
        store.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{store / 'mlflow.db'}"

    def _resumed_run(self, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.update_run(run_id, status="RUNNING")
        except MlflowException:
            log.warning("%s: MLflow run %s is not in %s; the resumed run is logged as a new MLflow run",
                        self.run_dir / MLFLOW_RUN_ID, run_id, self.uri)
            return None
        return run_id

    def _new_run(self, params: dict) -> str:
        from mlflow.entities import Param

        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # the run dir's own store keeps its artifacts beside it, not in the working directory
            artifacts = (self.run_dir.resolve() / MLFLOW / "artifacts").as_uri() if self.own_store else None
            experiment_id = self.client.create_experiment(EXPERIMENT, artifact_location=artifacts)
        run_id = self.client.create_run(experiment_id, run_name=self.run_dir.name).info.run_id
        values = [Param(key, (value if isinstance(value, str) else json.dumps(value))[:self.MAX_PARAM_CHARS])
                  for key, value in flatten(params, ".").items()]  # the keys --set takes
        for i in range(0, len(values), self.PARAMS_PER_CALL):
            self.client.log_batch(run_id, params=values[i:i + self.PARAMS_PER_CALL])
        return run_id

    def _add(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(_MLFLOW_NAME_UNSAFE.sub("_", k), v, now, step) for k, v in scalars.items()]
        if len(self.pending) >= self.METRICS_PER_CALL:
            self._flush()

    def _flush(self) -> None:
        # one call per evaluation or checkpoint rather than per step: a SQLite write costs milliseconds
        while self.pending:
            batch, self.pending = self.pending[:self.METRICS_PER_CALL], self.pending[self.METRICS_PER_CALL:]
            self.client.log_batch(self.run_id, metrics=batch)

    def on_step(self, step, scalars):
        self._add(step, scalars)

    def on_evaluate(self, step, record):
        self._add(step, eval_scalars(record))
        self._flush()

    def on_checkpoint(self, step):
        self._flush()

    def on_end(self, step, outcome):
        self._flush()
        if outcome == "finished":
            if (self.run_dir / MODEL).is_dir():
                self.client.log_artifacts(self.run_id, str(self.run_dir / MODEL), MODEL)
            for name in ("report.md", "curves.png"):
                if (self.run_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS[outcome])
