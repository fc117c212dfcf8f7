"""Where a run starts: the decision to resume a run dir or to make way for a fresh run in it, shared by
`mtbert train` and `mtbert.train()` so the two cannot disagree. Messages name the caller's own way of
saying overwrite, run dir and resume (command-line flags or keyword arguments)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mtbert.config import Config
from mtbert.errors import UserError
from mtbert.io import same_file
from mtbert.rundir import clear_run, holds_run, run_files
from mtbert.training.checkpoint import checkpoints, fingerprint, latest_fingerprint

log = logging.getLogger("mtbert")


@dataclass(frozen=True)
class Spelling:
    overwrite: str = "--overwrite"
    run_dir: str = "--run-dir DIR"
    resume: str = "--resume"


CLI = Spelling()
PYTHON = Spelling("overwrite=True", "run_dir=...", "resume=True")


def wants_resume(run_dir: Path, cfg: Config, resume: bool, overwrite: bool, say: Spelling = CLI) -> bool:
    """Resume when asked (a checkpoint must be there), or when the run dir holds a checkpoint of this very
    config and overwrite was not asked for."""
    if resume:
        if not checkpoints(run_dir):
            raise UserError(f"{say.resume.split('=')[0]} {run_dir}: no checkpoint there to resume from")
        return True
    if checkpoints(run_dir) and not overwrite and latest_fingerprint(run_dir) == fingerprint(cfg):
        log.info("%s holds a checkpoint of this config: resuming it (%s starts again)", run_dir, say.overwrite)
        return True
    return False


def fresh_run_dir(run_dir: Path, overwrite: bool, config: Path | None = None, clear: bool = True,
                  say: Spelling = CLI) -> None:
    """Make way for a new run in `run_dir`: refuse to write over anything without overwrite, and with it
    remove only the previous run's own files, saying which others stay. `config`: the file being trained,
    which is never written over."""
    if holds_run(run_dir):
        if not overwrite:
            raise UserError(f"{run_dir}: already holds a run; pass {say.overwrite} to replace it, "
                            f"or {say.run_dir} to train into another directory")
    elif in_the_way := [p.name for p in run_files(run_dir)]:
        if config is not None and any(same_file(run_dir / name, config) for name in in_the_way):
            raise UserError(f"{run_dir}: its {config.name} is the config being trained, which a run would "
                            f"overwrite; mtbert never writes over its inputs: give another {say.run_dir.split()[0]}")
        if not overwrite:
            raise UserError(f"{run_dir}: holds {', '.join(in_the_way)}, which a run would overwrite; pass "
                            f"{say.overwrite} to replace it, or {say.run_dir} to train into another directory")
    if overwrite and clear:
        left = clear_run(run_dir)
        if left:
            log.warning("%s: %s removed the previous run's files only; left %d other(s): %s", run_dir,
                        say.overwrite, len(left), ", ".join(left))
