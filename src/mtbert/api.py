"""mtbert from Python: train, load and evaluate as the command line does, with the same checks.

    import mtbert

    result = mtbert.train("configs/deeppavlov_example.yaml", overrides={"training.epochs": 1})
    model = mtbert.load(result.run_dir)
    model.predict("cola", ["The book was written."])
    mtbert.evaluate(result.run_dir, split="dev")

A config is a file path, a dict (as the YAML would read: variables and task_defaults are resolved) or a
validated `Config`. Mistakes raise `mtbert.UserError` with the message the command line prints.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from mtbert.config import Config, apply_overrides, apply_values, finish, load_raw, resolve_raw
from mtbert.errors import UserError
from mtbert.training.loggers import Callback

__all__ = ["Callback", "RunResult", "evaluate", "load", "resolve_config", "train"]


@dataclass
class RunResult:
    """What `train` left: the run dir, and the dev evaluation of the model it kept (the best one)."""
    run_dir: Path
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # {task: {metric: value}} on dev
    target: float | None = None  # the value of training.target_metric for those scores
    step: int | None = None  # the step of that evaluation
    summary: dict = field(default_factory=dict)  # everything report.md is written from


def resolve_config(config: str | Path | dict | Config, overrides: dict | list[str] | None = None) -> Config:
    """A validated config from a path, a dict or a Config. `overrides`: {"training.lr": 3e-5} (values as
    they are) or ["training.lr=3e-5"] (the command line's --set, parsed as YAML)."""
    if isinstance(config, Config):
        if overrides:
            raise UserError("overrides apply to a config file or dict; change the Config's fields instead")
        return copy.deepcopy(config)
    strings = list(overrides) if isinstance(overrides, list | tuple) else []
    values = overrides if isinstance(overrides, dict) else {}
    if overrides is not None and not isinstance(overrides, dict | list | tuple):
        raise UserError(f"overrides: expected a dict ({{'training.lr': 3e-5}}) or a list of 'KEY=VALUE', "
                        f"not {type(overrides).__name__}")
    if isinstance(config, dict):  # as a file would read; the run dir defaults to runs/mtbert
        return finish(resolve_raw(apply_values(apply_overrides(config, strings), values), "config"), "mtbert")
    if not isinstance(config, str | Path):
        raise UserError(f"config: expected a file path, a dict or a Config, not {type(config).__name__}")
    return finish(load_raw(config, strings, values), config)


def train(config: str | Path | dict | Config, overrides: dict | list[str] | None = None,
          run_dir: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
          callbacks: list | tuple = ()) -> RunResult:
    """Train as `mtbert train` does: a run dir holding a checkpoint of the same config is resumed; any other
    run there is refused unless `overwrite` (which removes only that run's files). `callbacks`:
    `mtbert.Callback` subclasses, told of every step, evaluation, checkpoint and the end."""
    from mtbert.training.checkpoint import PYTHON, Checkpointer, place_run
    from mtbert.training.trainer import train as run_training

    cfg = resolve_config(config, overrides)
    out = place_run(cfg, run_dir)
    resumed = Checkpointer(out, cfg).start(resume, overwrite, Path(config) if isinstance(config, str | Path) else None,
                                           PYTHON)
    summary = run_training(cfg, out, resume=resumed, callbacks=callbacks)
    best = summary.get("best") or {}
    return RunResult(out, best.get("dev", {}), best.get("target"), best.get("step"), summary)


def load(run_dir: str | Path, engine: str = "torch", **options):
    """The predictor of a run dir (`engine="onnx"`: an exported bundle), as `mtbert predict` loads it;
    `options`: precision, batch_size (and for torch backbone_impl, device)."""
    from mtbert.inference.engines import load_predictor

    return load_predictor(run_dir, engine, **options)


def evaluate(run_dir: str | Path, split: str = "dev", precision: str = "auto") -> dict[str, dict[str, float]]:
    """{task: {metric: value}} on the config's dev or test split, as `mtbert evaluate` scores it (dev gives
    report.md's numbers exactly)."""
    from mtbert.inference.predictor import evaluate_run

    if split not in ("dev", "test"):
        raise UserError(f"split {split!r}: use 'dev' or 'test'")
    return evaluate_run(run_dir, split, precision)[0]
