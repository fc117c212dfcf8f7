"""The files of a saved model, a run dir's `model/` or an ONNX bundle, read as untrusted input.

Whatever is missing, damaged or tampered with (a truncated file, invalid YAML or JSON, labels that do not
fit the config) becomes one line naming the file and what to do; nothing a file names is imported: the
saved config's `module:function` metrics are checked by form only. No torch here: the ONNX engine uses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mtbert.config import Config, validate
from mtbert.errors import UserError
from mtbert.tasks import registry

RUN_FIX = "restore it from a copy of the run, or train the run again"
BUNDLE_FIX = "export the bundle again (mtbert export RUN_DIR -o FOLDER)"


def read_text(file: Path, fix: str) -> str:
    if not file.is_file():
        raise UserError(f"{file}: missing; {fix}")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{file}: not valid UTF-8 ({err.reason}); {fix}") from None


def read_json(file: Path, fix: str, kind: type = dict):
    """A JSON file whose top level must be `kind` (an object unless told otherwise)."""
    try:
        value = json.loads(read_text(file, fix))
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: not valid JSON ({err.msg}, line {err.lineno}); {fix}") from None
    except RecursionError:
        raise UserError(f"{file}: nested too deeply to be what mtbert writes; {fix}") from None
    if not isinstance(value, kind):
        raise UserError(f"{file}: expected a JSON {'object' if kind is dict else kind.__name__}, "
                        f"found {type(value).__name__}; {fix}")
    return value


def read_saved_config(file: Path, fix: str) -> Config:
    """The config a run was trained with, validated without importing any custom metric it names
    (a run dir or bundle from elsewhere must not run code when it is loaded)."""
    try:
        raw = yaml.safe_load(read_text(file, fix))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise UserError(f"{file}: {where}not valid YAML ({getattr(err, 'problem', None) or type(err).__name__}); "
                        f"{fix}") from None
    except RecursionError:
        raise UserError(f"{file}: nested too deeply to be what mtbert writes; {fix}") from None
    try:
        return validate(raw, str(file), import_metrics=False)
    except UserError as err:
        raise UserError(f"{err}; {fix}") from None


def read_labels(file: Path, cfg: Config, fix: str) -> dict[str, list[str]]:
    """labels.json: for each classification and sequence-labeling task of `cfg`, its distinct label names."""
    labels = read_json(file, fix)
    for name, task in cfg.tasks.items():
        if not registry.get(task.type).label_names:  # its labels.json entry names the classes
            continue
        names = labels.get(name)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{file}: no list of label names for task '{name}' ({task.type}), which config.yaml "
                            f"names; {fix}")
        if len(set(names)) != len(names):
            raise UserError(f"{file}: task '{name}' lists a label twice; {fix}")
        if task.loss == "bce" and len(names) != 2:
            raise UserError(f"{file}: task '{name}' was trained with loss 'bce' (two classes) but lists "
                            f"{len(names)} labels; {fix}")
    return labels
