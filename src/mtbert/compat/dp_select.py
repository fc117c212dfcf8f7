"""`--only-tasks` / `--skip-tasks` on a DeepPavlov multitask config: the config without some tasks.

A task of a multitask config is named in a dozen places (the reader's and the iterator's tasks, the
chainer's in/in_y/out, the preprocessor's per-task lists and n_task, the transformer's tasks and its
positional in/in_y/out, proba2labels and vocabularies, the metrics). Leaving one out by hand means
editing all of them consistently; this does it on the config as read, before variables are resolved,
so `mtbert convert` writes and `mtbert predict` loads the same reduced config.
"""

from __future__ import annotations

import copy
import logging

from mtbert.compat.dp_chainer import read_chain
from mtbert.compat.findings import Findings
from mtbert.errors import UserError

log = logging.getLogger("mtbert")


def parse_task_list(value: str | None, flag: str) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UserError(f"{flag} {value!r}: give task names, comma-separated")
    return names


def select_tasks(raw: dict, only: list[str] | None, skip: list[str] | None, source: str = "config") -> dict:
    """`raw` with only the tasks of `only`, or without those of `skip` (at most one of the two), everywhere
    they appear. Unknown names are refused with the list of the config's tasks."""
    if only is None and skip is None:
        return raw
    if only is not None and skip is not None:
        raise UserError("--only-tasks and --skip-tasks: give one of them")
    out = copy.deepcopy(raw)
    chain = read_chain(out, Findings())  # its own problems are convert's to name, with the tasks that stay
    if chain is None:
        raise UserError(f"{source}: no multitask_transformer with tasks: --only-tasks/--skip-tasks need one")
    known = list(chain.tasks)
    flag, names = ("--only-tasks", only) if only is not None else ("--skip-tasks", skip)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"{flag}: unknown task{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                        f"{source} has: {', '.join(known)}")
    dropped = [t for t in known if (t not in only if only is not None else t in skip)]
    if len(dropped) == len(known):
        raise UserError(f"{flag} {','.join(names)}: leaves no task to train; {source} has: {', '.join(known)}")
    if not dropped:
        return raw
    _prune(out, chain, set(dropped))  # chain's components are out's own dicts: pruned in place
    log.info("%s: left out task%s %s everywhere they appear", flag, "s" if len(dropped) > 1 else "", ", ".join(dropped))
    return out


def _prune(dp: dict, chain, dropped: set[str]) -> None:
    index = {t: j for j, t in enumerate(chain.tasks)}
    gone_at = {index[t] for t in dropped}
    transformer = chain.transformer
    # every chainer variable of a dropped task: its input, features, gold, outputs and what is made of them
    gone = {name for name, var in chain.vars.items() if var.task in dropped}
    gone |= {name for key in ("in", "in_y", "out") for j, name in enumerate(_list(transformer, key)) if j in gone_at}
    for section in ("dataset_reader", "dataset_iterator"):
        tasks = (dp.get(section) or {}).get("tasks")
        if isinstance(tasks, dict):
            for t in dropped:
                tasks.pop(t, None)
    chainer = dp["chainer"]
    pipe = chainer["pipe"]
    for comp in pipe:
        if not isinstance(comp, dict):
            continue
        if comp is transformer:
            transformer["tasks"] = {t: v for t, v in transformer["tasks"].items() if t not in dropped}
            for key in ("in", "in_y", "out"):
                if isinstance(transformer.get(key), list):
                    transformer[key] = [v for j, v in enumerate(transformer[key]) if j not in gone_at]
        elif isinstance(comp.get("in"), list) and isinstance(comp.get("out"), list) \
                and len(comp["in"]) == len(comp["out"]):
            # in/out side by side (preprocessor, proba2labels, vocabularies): a pair goes when either side does
            keep = [i for i, (a, b) in enumerate(zip(comp["in"], comp["out"], strict=True))
                    if a not in gone and b not in gone]
            comp["in"], comp["out"] = [comp["in"][i] for i in keep], [comp["out"][i] for i in keep]
        if comp is chain.preprocessor:
            if isinstance(comp.get("preprocessors"), list) and len(comp["preprocessors"]) == len(index):
                comp["preprocessors"] = [p for j, p in enumerate(comp["preprocessors"]) if j not in gone_at]
            if "n_task" in comp:
                comp["n_task"] = len(index) - len(dropped)
    referenced = {c.get("ref") for c in pipe if isinstance(c, dict) and c.get("in")}
    chainer["pipe"] = [c for c in pipe if not _emptied(c, gone, referenced)]
    for key in ("in", "in_y", "out"):
        if isinstance(chainer.get(key), list):
            chainer[key] = [v for v in chainer[key] if v not in gone]
    train = dp.get("train")
    if isinstance(train, dict):
        for key in ("metrics", "train_metrics"):
            if isinstance(train.get(key), list):
                train[key] = _metrics(train[key], gone, key)


def _list(comp: dict, key: str) -> list:
    value = comp.get(key, [])
    return [value] if isinstance(value, str) else value if isinstance(value, list) else []


def _emptied(comp, gone: set[str], referenced: set) -> bool:
    """A component that served only dropped tasks: its inputs all went (or, a vocabulary that only
    loads, all it was fitted on), and no component still refers to it."""
    if not isinstance(comp, dict) or comp.get("class_name") == "multitask_transformer":
        return False
    if comp.get("id") is not None and comp["id"] in referenced:
        return False
    fitted = _list(comp, "fit_on")
    return (("in" in comp and not comp["in"]) or (not comp.get("in") and bool(fitted))) \
        and all(v in gone for v in fitted)


def _metrics(specs: list, gone: set[str], key: str) -> list:
    """Metrics on the tasks that stay. multitask_accuracy takes n gold and n predicted variables, so
    removing a task's pair keeps it whole; any other metric that read a dropped task goes, said once."""
    kept = []
    for i, spec in enumerate(specs):
        inputs = spec.get("inputs") if isinstance(spec, dict) else None
        if not isinstance(inputs, list) or not any(v in gone for v in inputs):
            kept.append(spec)
            continue
        left = [v for v in inputs if v not in gone]
        if spec.get("name") == "multitask_accuracy" and left:
            kept.append({**spec, "inputs": left})
        elif left:
            log.warning("train.%s[%d] (%s) reads left-out tasks too: left out with them", key, i, spec.get("name"))
    return kept
