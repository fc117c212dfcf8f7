"""Training checkpoints that hold everything needed to continue exactly where a run stopped.

    run_dir/checkpoint-00001200/
      model.safetensors     every weight (encoder and heads)
      optimizer.pt          AdamW state, read back with torch.load(weights_only=True)
      rng.safetensors       torch's CPU generator state
      average.safetensors   with training.ema_decay: the weights' moving average and its count of updates
      trainer.json          step, schedule and batch-order RNG states, early-stopping and lr-drop state,
                            Python and NumPy RNG states, loss and metric history, config fingerprint

Each checkpoint directory is written whole beside its final name and renamed into place (io.atomic_write_dir),
so a crash (SIGKILL, full disk) leaves the previous checkpoints intact; only the last `keep` are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtbert.config import Config, default_run_dir
from mtbert.errors import UserError
from mtbert.io import atomic_write_dir, same_file
from mtbert.rundir import (
    CHECKPOINT_PREFIX,
    after_write_failure,
    checkpoints,
    clear_run,
    holds_run,
    remove_leftovers,
    run_files,
)
from mtbert.training.distributed import Dist

log = logging.getLogger("mtbert")
AVERAGE = "average.safetensors"


def fingerprint(cfg) -> str:
    """What must match for a checkpoint to continue this config (where the run lives and how it reports
    progress may differ)."""
    dump = cfg.dump()
    dump.pop("run_dir", None)
    # where and how fast it trains, and who watches, not what it trains
    for key in ("progress", "device", "threads", "dist_timeout", "compile", "loggers", "mlflow_uri"):
        dump.get("training", {}).pop(key, None)
    return hashlib.sha256(yaml.safe_dump(dump, sort_keys=True).encode()).hexdigest()[:16]


def global_rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}


def set_global_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def torch_rng_state() -> dict[str, torch.Tensor]:
    """torch's CPU generator and, where CUDA has been used, every GPU's (dropout on a GPU draws from the
    GPU's generator, so exact resume there needs it)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.update({f"cuda:{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_torch_rng_state(state: dict[str, torch.Tensor], path: Path) -> None:
    torch.set_rng_state(state["torch"])
    saved = [state[k] for k in sorted((k for k in state if k.startswith("cuda:")), key=lambda k: int(k[5:]))]
    if not saved:
        return
    if not torch.cuda.is_available():
        log.warning("%s: the checkpoint holds GPU random states, but this run is on the CPU: dropout will "
                    "differ from the uninterrupted run", path)
        return
    here = torch.cuda.device_count()
    if here != len(saved):
        log.warning("%s: the checkpoint holds %d GPUs' random states, this machine has %d: the first %d restored",
                    path, len(saved), here, min(here, len(saved)))
    for i, s in enumerate(saved[:here]):
        torch.cuda.set_rng_state(s, i)


def latest_fingerprint(run_dir: Path) -> str | None:
    found = checkpoints(run_dir)
    if not found:
        return None
    return json.loads((found[-1] / "trainer.json").read_text(encoding="utf-8")).get("fingerprint")


def _weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, model, optimizer, trainer_state: dict, keep: int,
                    average=None) -> Path:
    path = Path(run_dir) / f"{CHECKPOINT_PREFIX}{step:08d}"

    def write(tmp: Path) -> None:
        save_file(_weights(model), tmp / "model.safetensors")
        if average is not None:
            save_file(_weights(average), tmp / AVERAGE)
        _save_optimizer(optimizer.state_dict(), tmp / "optimizer.pt")
        save_file(torch_rng_state(), tmp / "rng.safetensors")
        state = {**trainer_state, "rng": global_rng_state()}
        (tmp / "trainer.json").write_text(json.dumps(state), encoding="utf-8")

    try:
        atomic_write_dir(path, write)
    except (OSError, SafetensorError) as err:  # safetensors reports a full disk as its own error type
        reason = getattr(err, "strerror", None) or str(err)
        raise UserError(f"{run_dir}: cannot write checkpoint at step {step} ({reason}); "
                        f"{after_write_failure(run_dir)}") from None
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _save_optimizer(state: dict, path: Path) -> None:
    # through a Python file: torch's own writer reports a full disk as a RuntimeError ("file write
    # failed"), a file object's write as the OSError it is
    with open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: Path, model, optimizer, average=None) -> dict:
    """Restore weights (and their moving average), optimiser and RNG states in place; return the trainer
    state."""
    model.load_state_dict(load_file(path / "model.safetensors"))
    if average is not None:
        if not (path / AVERAGE).is_file():  # the fingerprint includes ema_decay: only a damaged checkpoint
            raise UserError(f"{path}: {AVERAGE} is missing (training.ema_decay is set); delete this checkpoint "
                            "to resume from the one before")
        average.load_state_dict(load_file(path / AVERAGE))
    try:
        optimizer_state = torch.load(path / "optimizer.pt", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path / 'optimizer.pt'}: refused: it holds more than tensors and plain data (read with "
                        "torch.load(weights_only=True)); delete this checkpoint to resume from the one before") from None
    optimizer.load_state_dict(optimizer_state)
    set_torch_rng_state(load_file(path / "rng.safetensors"), path)
    state = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    set_global_rng_state(state.pop("rng"))
    return state


@dataclass(frozen=True)
class Spelling:
    """How the caller says overwrite, run dir and resume, so that messages name the caller's own words."""
    overwrite: str = "--overwrite"
    run_dir: str = "--run-dir DIR"
    resume: str = "--resume"


CLI = Spelling()
PYTHON = Spelling("overwrite=True", "run_dir=...", "resume=True")


def place_run(cfg: Config, run_dir: str | Path | None = None) -> Path:
    """The run dir a training writes: `run_dir` when given (recorded in the config it writes), else the
    config's, else config.default_run_dir's (a Config built in Python)."""
    if run_dir is not None:
        cfg.run_dir = str(run_dir)
    elif cfg.run_dir is None:
        cfg.run_dir = default_run_dir()
    return Path(cfg.run_dir)


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


class Checkpointer:
    """A run dir's checkpoints for one config: whether a run resumes (the one decision `mtbert train`,
    `mtbert.train` and `mtbert compare` take), making way for a fresh run, writing checkpoints (rank 0)
    and restoring the latest, which must carry this config's fingerprint."""

    def __init__(self, run_dir: str | Path, cfg: Config, ranks: Dist | None = None):
        self.run_dir = Path(run_dir)
        self.fingerprint = fingerprint(cfg)
        self.keep = cfg.training.keep_checkpoints
        self.ranks = ranks or Dist()

    def wants_resume(self, resume: bool = False, overwrite: bool = False, say: Spelling = CLI) -> bool:
        """Resume when asked (a checkpoint must be there), or when the run dir holds a checkpoint of this
        very config and overwrite was not asked for."""
        if resume:
            if not checkpoints(self.run_dir):
                raise UserError(f"{say.resume.split('=')[0]} {self.run_dir}: no checkpoint there to resume from")
            return True
        if not overwrite and latest_fingerprint(self.run_dir) == self.fingerprint:
            log.info("%s holds a checkpoint of this config: resuming it (%s starts again)", self.run_dir,
                     say.overwrite)
            return True
        return False

    def start(self, resume: bool = False, overwrite: bool = False, config: Path | None = None,
              say: Spelling = CLI) -> bool:
        """Whether the run resumes; if not, the run dir made ready for a fresh run (see fresh_run_dir). Under
        torchrun every rank takes the same decision before rank 0 clears anything."""
        resumed = self.wants_resume(resume, overwrite, say)
        if not resumed:
            self.ranks.barrier()
            fresh_run_dir(self.run_dir, overwrite, config, clear=self.ranks.is_main, say=say)
        self.ranks.barrier()
        return resumed

    def open(self) -> None:
        """The run dir, made and rid of what a kill left half-written (never another file); rank 0's."""
        if self.ranks.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.run_dir)

    def save(self, step: int, model, optimizer, trainer_state: dict, average=None) -> None:
        if self.ranks.is_main:
            save_checkpoint(self.run_dir, step, model, optimizer, {**trainer_state, "fingerprint": self.fingerprint},
                            self.keep, average)

    def restore(self, model, optimizer, average=None) -> dict | None:
        """The trainer state of the latest checkpoint, its weights, optimiser and RNG states loaded in place;
        None without a checkpoint. One of another config is refused."""
        found = checkpoints(self.run_dir)
        if not found:
            return None
        saved = load_checkpoint(found[-1], model, optimizer, average)
        if saved.pop("fingerprint") != self.fingerprint:
            raise UserError(f"{self.run_dir}: its checkpoint was made with a different config; "
                            "resume with the same config, or --overwrite to start again")
        log.info("resuming %s from step %d (%s)", self.run_dir, saved["step"], found[-1].name)
        return saved
