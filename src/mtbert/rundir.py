"""The run directory: what training leaves behind and what evaluate/predict load.

    run_dir/
      config.yaml        the resolved config (variables substituted, task_defaults merged)
      metrics.jsonl      one line per evaluation
      report.md          best dev table beside a majority/mean baseline (rewritten at every evaluation)
      curves.png         training loss, dev metric per task and learning rate over steps
      tensorboard/       TensorBoard event files (training.loggers: [tensorboard])
      mlflow/            the MLflow store, mlflow.db and artifacts/ (training.loggers: [mlflow])
      mlflow_run_id      the MLflow run this run dir logs to, so that a resume continues it
      model/             the best checkpoint, swapped in whole (see io.atomic_write_dir)
        encoder/         HF save_pretrained: config.json, model.safetensors, tokenizer files
        heads.safetensors
        labels.json      label vocabularies per task
        config.yaml      the config again, so model/ alone is enough to predict; its training.precision
                         is the one the dev scores were computed with (`auto` resolved), which
                         evaluate and predict use by default
        README.md        the model card (Hugging Face format, see modelcard.py): tasks, training, the
                         dev scores that chose this model, how to load it

`model/` is written as one unit, so a crash leaves the previous checkpoint or the new one.

These names (with `checkpoint-<step>/` and what `mtbert compare` adds) are the run's own files: the
only ones `train --overwrite` removes; anything else in the folder is the user's and stays.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtbert.config import Config
from mtbert.errors import UserError
from mtbert.io import atomic_write_dir, atomic_write_text, leftover_of, old_dir, resolve_dir
from mtbert.modeling.encoder import load_saved_encoder
from mtbert.modeling.model import MultiTaskModel
from mtbert.runfiles import RUN_FIX, read_labels, read_saved_config
from mtbert.tasks import build_model

log = logging.getLogger("mtbert")

MODEL = "model"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT = re.compile(rf"{CHECKPOINT_PREFIX}\d{{8,}}")  # f"{CHECKPOINT_PREFIX}{step:08d}"
TENSORBOARD, MLFLOW, MLFLOW_RUN_ID = "tensorboard", "mlflow", "mlflow_run_id"  # training/loggers.py's
TRAIN_FILES = ("config.yaml", "metrics.jsonl", "report.md", "curves.png", MODEL, TENSORBOARD, MLFLOW, MLFLOW_RUN_ID)
COMPARE_FILES = ("compare.json", "compare.md", "compare.png", "compare-run.json")
# compare's runs: [<mode>/]seed-<seed>/multi-<method> and [<mode>/]seed-<seed>/single-<task>
COMPARE_MODES = ("pretrain", "finetune")
COMPARE_SEED = re.compile(r"seed-\d+")
COMPARE_RUN = re.compile(r"multi-.+|single-.+")


def is_run_file(name: str) -> bool:
    """Whether `name`, at the top of a run dir, is a file or folder that train or compare writes."""
    return name in TRAIN_FILES or name in COMPARE_FILES or CHECKPOINT.fullmatch(name) is not None


def run_files(run_dir: Path) -> list[Path]:
    """The run's own files and folders in `run_dir` (not the temporaries a kill may have left)."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if is_run_file(p.name))


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (training/checkpoint.py writes them), oldest first (half-written ones are hidden
    .tmp directories). Only mtbert's names, of 8 digits or more: another trainer's `checkpoint-500/` is
    neither resumed nor pruned."""
    found = [p for p in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and CHECKPOINT.fullmatch(p.name)
             and (p / "trainer.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def after_write_failure(run_dir: Path) -> str:
    """What to do after a write into the run dir failed (full disk, read-only folder): the one step that
    works, whether a checkpoint exists to resume from or not."""
    found = checkpoints(run_dir)
    if found:
        return (f"checkpoint {found[-1].name} is intact: free space or fix permissions, then resume with "
                f"--resume {run_dir}")
    return ("no checkpoint was written yet, so there is nothing to resume: free space or fix permissions, "
            "then train again with --overwrite")


def _compare_seeds(run_dir: Path) -> list[Path]:
    """compare's per-seed folders, [<mode>/]seed-<seed>."""
    parents = [run_dir] + [run_dir / mode for mode in COMPARE_MODES]
    return [p for parent in parents if parent.is_dir() for p in sorted(parent.iterdir())
            if p.is_dir() and COMPARE_SEED.fullmatch(p.name)]


def _compare_runs(run_dir: Path) -> list[Path]:
    return [p for seed in _compare_seeds(run_dir) for p in sorted(seed.iterdir())
            if p.is_dir() and COMPARE_RUN.fullmatch(p.name) and holds_run(p)]


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds (part of) a run of train or compare: a model, metrics, checkpoints, a table."""
    names = ("metrics.jsonl", "compare.md", "compare.json")
    return (resolve_dir(run_dir / MODEL).exists() or any((run_dir / n).exists() for n in names)
            or any(CHECKPOINT.fullmatch(p.name) for p in run_files(run_dir)) or bool(_compare_runs(run_dir)))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(run_dir: Path) -> list[str]:
    """Remove the half-written temporaries of the run's own files that a kill left in `run_dir`, and
    the parked `.<name>.old` of a folder that is in place again; return their names. A parked folder
    whose successor never arrived is renamed back (it is the last complete version)."""
    removed = []
    if not run_dir.is_dir():
        return removed
    for path in sorted(run_dir.iterdir()):
        name = leftover_of(path.name)
        if name is None or not is_run_file(name):
            continue
        final = run_dir / name
        if path == old_dir(final) and not final.exists():
            path.rename(final)
            continue
        _remove(path)
        removed.append(path.name)
    if removed:
        log.info("%s: removed %d half-written file(s) left by an interrupted run: %s", run_dir, len(removed),
                 ", ".join(removed))
    return removed


def clear_run(run_dir: Path) -> list[str]:
    """Remove the run's own files from `run_dir` (and compare's runs below it); return what else is
    there, which stays: mtbert never deletes a file it did not write."""
    if not run_dir.is_dir():
        return []
    remove_leftovers(run_dir)
    for path in run_files(run_dir):
        _remove(path)
    left = []
    for run in _compare_runs(run_dir):
        left += [f"{run.relative_to(run_dir)}/{name}" for name in clear_run(run)]
        if not any(run.iterdir()):
            run.rmdir()
    for folder in [*_compare_seeds(run_dir), *(run_dir / mode for mode in COMPARE_MODES)]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    kept = {name.split("/")[0] for name in left}
    left += [p.name + ("/" if p.is_dir() else "") for p in sorted(run_dir.iterdir()) if p.name not in kept]
    return sorted(left)


def config_yaml(cfg: Config, precision: str | None = None) -> str:
    """The config as YAML; with `precision`, training.precision says the one training evaluated with."""
    raw = cfg.dump()
    if precision is not None:
        raw["training"]["precision"] = precision
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def write_config(run_dir: Path, cfg: Config) -> None:
    atomic_write_text(run_dir / "config.yaml", config_yaml(cfg))


def save_model(run_dir: Path, model: MultiTaskModel, tokenizer, cfg: Config, labels: dict,
               precision: str | None = None, record: dict | None = None) -> None:
    """`precision`: what the dev scores of this model were computed with (fp32, bf16, fp16), recorded so
    that evaluate and predict reproduce them. `record`: the evaluation (metrics.jsonl's line) that chose
    this model, whose dev scores the model card gives."""
    from mtbert.modelcard import run_card

    def write(tmp: Path) -> None:
        model.encoder.save_pretrained(tmp / "encoder", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "encoder")
        state = {k: v.detach().contiguous().cpu() for k, v in model.heads.state_dict().items()}
        save_file(state, tmp / "heads.safetensors")
        (tmp / "labels.json").write_text(json.dumps(labels, indent=2, ensure_ascii=False), encoding="utf-8")
        (tmp / "config.yaml").write_text(config_yaml(cfg, precision), encoding="utf-8")
        model_type = json.loads((tmp / "encoder" / "config.json").read_text(encoding="utf-8"))["model_type"]
        (tmp / "README.md").write_text(run_card(cfg, Path(run_dir), labels, record, precision, model_type),
                                       encoding="utf-8")

    had_model = (run_dir / MODEL).is_dir()
    try:
        atomic_write_dir(run_dir / MODEL, write)
    except (OSError, SafetensorError) as err:  # full disk, read-only run dir: the previous model/ is intact
        kept = "the previous best model is intact; " if had_model else ""
        raise UserError(f"{run_dir}: cannot write the model ({getattr(err, 'strerror', None) or err}); "
                        f"{kept}{after_write_failure(run_dir)}") from None


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl's evaluations, one per line. A last line cut short (training stopped while appending
    it) is left out; any other line that is not an evaluation is refused, naming it."""
    path = run_dir / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; {RUN_FIX}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        elif number == len(lines):
            log.warning("%s:%d: an evaluation line cut short (training stopped while writing it); left out",
                        path, number)
        else:
            raise UserError(f"{path}:{number}: not an evaluation (a JSON object with its step); delete that "
                            f"line, or {RUN_FIX}")
    return records


def best_dev_record(run_dir: Path) -> dict | None:
    """The evaluation in metrics.jsonl that chose the saved model: the first with the highest target, as
    training keeps it; None without dev evaluations (or a metrics file that cannot be read)."""
    try:
        records = [r for r in read_metrics(run_dir) if isinstance(r.get("target"), int | float)]
    except (OSError, UserError):
        return None
    return max(records, key=lambda r: r["target"], default=None)


def model_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    found = resolve_dir(run_dir / MODEL)
    if not (found / "heads.safetensors").is_file():
        if not run_dir.exists():
            raise UserError(f"{run_dir}: no such run directory")
        if (found / "config.yaml").is_file():  # a model/ that lost a file, not a run that never finished
            raise UserError(f"{found / 'heads.safetensors'}: missing; {RUN_FIX}")
        raise UserError(f"{run_dir}: holds no trained model ({run_dir / MODEL} is missing); "
                        "train first with: mtbert train CONFIG")
    return found


def _read_safetensors(file: Path) -> dict:
    """A safetensors file as tensors; anything else (garbage, a pickle under this name, a header claiming
    2^62 bytes, a cut-off file) is refused by safetensors' parser and told in one line, never unpickled."""
    if not file.is_file():
        raise UserError(f"{file}: missing; {RUN_FIX}")
    try:
        return load_file(file)
    except SafetensorError as err:
        raise UserError(f"{file}: not a valid safetensors file ({err}); {RUN_FIX}") from None


def _check_head_state(file: Path, task: str, head, saved: dict, hidden: int, labels: list | None) -> None:
    """The saved weights of one task's head against the head the config, labels.json and the encoder call
    for: a head missing, or one from another run (other labels, another encoder size), is named."""
    expected = head.state_dict()
    if not saved:
        raise UserError(f"{file}: no weights for task '{task}', which config.yaml names; {RUN_FIX}")
    for key, tensor in expected.items():
        if key not in saved:
            raise UserError(f"{file}: task '{task}' lacks its tensor '{key}'; {RUN_FIX}")
        if saved[key].shape != tensor.shape:
            sizes = f"encoder hidden size {hidden}" + (f", {len(labels)} labels in labels.json" if labels else "")
            raise UserError(f"{file}: task '{task}' tensor '{key}' is {list(saved[key].shape)}, but its head takes "
                            f"{list(tensor.shape)} ({sizes}): the files of model/ come from different runs; "
                            f"{RUN_FIX}")
    extra = sorted(set(saved) - set(expected))
    if extra:
        raise UserError(f"{file}: task '{task}' has tensors its head does not ({', '.join(extra[:3])}); {RUN_FIX}")


def load_model(run_dir: str | Path, backbone_impl: str | None = None) -> tuple[Config, MultiTaskModel, object, dict]:
    """(config, model in eval mode, tokenizer, labels) from a run dir; no training data needed.
    `backbone_impl` loads the encoder with another implementation than it was trained with."""
    from transformers import AutoTokenizer

    path = model_dir(run_dir)
    # the saved config names custom metrics by reference only: loading a run never imports them
    cfg = read_saved_config(path / "config.yaml", RUN_FIX)
    labels = read_labels(path / "labels.json", cfg, RUN_FIX)
    # safetensors only: no pickle from a run dir is ever unpickled
    if backbone_impl:
        cfg.backbone_impl = backbone_impl
    encoder = load_saved_encoder(path / "encoder", cfg.backbone_impl)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path / "encoder")
    except Exception as err:  # noqa: BLE001 - a damaged tokenizer file fails as JSON, KeyError or tokenizers' own
        raise UserError(f"{path / 'encoder'}: cannot read the tokenizer ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); {RUN_FIX}") from None
    check_vocabulary(tokenizer, path / "encoder", cfg.backbone)
    hidden = encoder.config.hidden_size
    model = build_model(cfg.tasks, encoder, labels)
    state = _read_safetensors(path / "heads.safetensors")
    for name, head in model.heads.items():
        prefix = f"{name}."
        head_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if "class_weights" in head_state:
            head.class_weights = torch.empty_like(head_state["class_weights"])
        _check_head_state(path / "heads.safetensors", name, head, head_state, hidden, labels.get(name))
        head.load_state_dict(head_state)
    model.eval()
    return cfg, model, tokenizer, labels


def check_vocabulary(tokenizer, folder: Path, backbone: str) -> None:
    """Without its vocabulary file (tokenizer.json, vocab.txt...) transformers still builds a tokenizer
    from the encoder's config.json: one that knows only its special tokens, so every word is [UNK] and
    every prediction garbage."""
    if len(tokenizer) > len(set(tokenizer.all_special_ids)):
        return
    raise UserError(f"{folder}: no tokenizer vocabulary (tokenizer.json or vocab.txt is missing), so every word "
                    f"would be [UNK]; put back the tokenizer files of the backbone it was trained from: "
                    f"AutoTokenizer.from_pretrained('{backbone}').save_pretrained('{folder}')")


def recorded_precision(run_dir: str | Path, cfg: Config) -> str | None:
    """The precision the run's dev scores were computed with: model/config.yaml's (fp32, bf16 or fp16 once
    training resolved `auto`), or for a run dir written before that, the one report.md names; None if
    neither says."""
    if cfg.training.precision != "auto":
        return cfg.training.precision
    try:
        report = (Path(run_dir) / "report.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = re.search(r"; precision: (fp32|bf16|fp16);", report)
    return found.group(1) if found else None
