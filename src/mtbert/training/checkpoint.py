"""Training checkpoints that hold everything needed to continue exactly where a run stopped.

    run_dir/checkpoint-00001200/
      model.safetensors     every weight (encoder and heads)
      optimizer.pt          AdamW state, read back with torch.load(weights_only=True)
      rng.safetensors       torch's CPU generator state
      trainer.json          step, schedule and batch-order RNG states, early-stopping and lr-drop state,
                            Python and NumPy RNG states, loss and metric history, config fingerprint

Each checkpoint directory is written whole beside its final name and renamed into place (io.atomic_write_dir),
so a crash (SIGKILL, full disk) leaves the previous checkpoints intact; only the last `keep` are kept.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtbert.errors import UserError
from mtbert.io import atomic_write_dir

PREFIX = "checkpoint-"
CHECKPOINT = re.compile(rf"{PREFIX}\d{{8,}}")  # f"{PREFIX}{step:08d}"


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


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written ones are hidden .tmp directories). Only mtbert's
    names, of 8 digits or more: another trainer's `checkpoint-500/` is neither resumed nor pruned."""
    found = [p for p in Path(run_dir).glob(f"{PREFIX}*") if p.is_dir() and CHECKPOINT.fullmatch(p.name)
             and (p / "trainer.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_fingerprint(run_dir: Path) -> str | None:
    found = checkpoints(run_dir)
    if not found:
        return None
    return json.loads((found[-1] / "trainer.json").read_text(encoding="utf-8")).get("fingerprint")


def save_checkpoint(run_dir: Path, step: int, model, optimizer, trainer_state: dict, keep: int) -> Path:
    path = Path(run_dir) / f"{PREFIX}{step:08d}"

    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        _save_optimizer(optimizer.state_dict(), tmp / "optimizer.pt")
        save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
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


def after_write_failure(run_dir: Path) -> str:
    """What to do after a write into the run dir failed (full disk, read-only folder): the one step that
    works, whether a checkpoint exists to resume from or not."""
    found = checkpoints(run_dir)
    if found:
        return (f"checkpoint {found[-1].name} is intact: free space or fix permissions, then resume with "
                f"--resume {run_dir}")
    return ("no checkpoint was written yet, so there is nothing to resume: free space or fix permissions, "
            "then train again with --overwrite")


def load_checkpoint(path: Path, model, optimizer) -> dict:
    """Restore weights, optimiser and RNG states in place; return the trainer state."""
    model.load_state_dict(load_file(path / "model.safetensors"))
    try:
        optimizer_state = torch.load(path / "optimizer.pt", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path / 'optimizer.pt'}: refused: it holds more than tensors and plain data (read with "
                        "torch.load(weights_only=True)); delete this checkpoint to resume from the one before") from None
    optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(load_file(path / "rng.safetensors")["torch"])
    state = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    set_global_rng_state(state.pop("rng"))
    return state
