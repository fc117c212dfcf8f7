"""DeepPavlov's multitask_reader and multitask_iterator -> where each mtbert task reads its data.

Three sources for a `huggingface_dataset_reader` task:

- the hub (`path`, `name`, split names): `format: hf`, read with `datasets.load_dataset` (online);
- `data_files` (a datasets.load_dataset argument, so DeepPavlov accepts it too): local files per split
  name, holding the dataset's own columns; read with mtbert's readers by file type, offline;
- `data_dir` on a GLUE or SuperGLUE task: a folder with the official distribution's files (GLUE's
  train.tsv/dev.tsv, SuperGLUE's train.jsonl/val.jsonl), read in place, offline. The column layout of
  those files is in the table below.

DeepPavlov takes input columns from the iterator's `features` and infers them for its preprocessed
datasets (COPA's `contexts`/`choices`); the table knows the GLUE and SuperGLUE tasks, so `features`
may be left out for them. Class ids follow Hugging Face's ClassLabel order there (`labels`), so
mtbert's class id i is DeepPavlov's id i.
"""

from __future__ import annotations

import copy
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from mtbert.compat.findings import Findings


@dataclass(frozen=True)
class KnownDataset:
    type: str
    columns: dict  # mtbert columns, in the dataset's Hugging Face column names
    features: tuple[str, ...]  # DeepPavlov's iterator features for it
    labels: tuple[str, ...] | None = None  # ClassLabel names in id order
    local: dict = field(default_factory=dict)  # Hugging Face column -> column of the official files
    local_labels: tuple[str, ...] | None = None  # the official files' label values, in id order
    header: bool = True


def _pair(a: str, b: str, labels=None, local=None, local_labels=None, kind="classification") -> KnownDataset:
    return KnownDataset(kind, {"text": a, "text_pair": b, "label": "label"}, (a, b), labels,
                        local or {a: a, b: b, "label": "label"}, local_labels)


KNOWN: dict[tuple[str, str], KnownDataset] = {
    ("glue", "cola"): KnownDataset("classification", {"text": "sentence", "label": "label"}, ("sentence",),
                                   ("unacceptable", "acceptable"), {"sentence": 3, "label": 1}, ("0", "1"),
                                   header=False),  # source, label, original mark, sentence
    ("glue", "sst2"): KnownDataset("classification", {"text": "sentence", "label": "label"}, ("sentence",),
                                   ("negative", "positive"), {"sentence": "sentence", "label": "label"}, ("0", "1")),
    ("glue", "mrpc"): _pair("sentence1", "sentence2", ("not_equivalent", "equivalent"),
                            {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}, ("0", "1")),
    ("glue", "qqp"): _pair("question1", "question2", ("not_duplicate", "duplicate"),
                           {"question1": "question1", "question2": "question2", "label": "is_duplicate"}, ("0", "1")),
    ("glue", "stsb"): _pair("sentence1", "sentence2", None,
                            {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}, kind="regression"),
    ("glue", "mnli"): _pair("premise", "hypothesis", ("entailment", "neutral", "contradiction"),
                            {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
                            ("entailment", "neutral", "contradiction")),
    ("glue", "qnli"): _pair("question", "sentence", ("entailment", "not_entailment"), None,
                            ("entailment", "not_entailment")),
    ("glue", "rte"): _pair("sentence1", "sentence2", ("entailment", "not_entailment"), None,
                           ("entailment", "not_entailment")),
    ("glue", "wnli"): _pair("sentence1", "sentence2", ("not_entailment", "entailment"), None, ("0", "1")),
    ("super_glue", "copa"): KnownDataset(
        "multiple_choice", {"text": "premise", "question": "question", "choices": ["choice1", "choice2"],
                            "label": "label"},
        ("contexts", "choices"),  # DeepPavlov builds them from premise, question and the two choices
        local={k: k for k in ("premise", "question", "choice1", "choice2", "label")}),
    ("super_glue", "boolq"): _pair("question", "passage", ("False", "True"), None, ("False", "True")),
    ("super_glue", "cb"): _pair("premise", "hypothesis", ("entailment", "contradiction", "neutral"), None,
                                ("entailment", "contradiction", "neutral")),
    ("super_glue", "rte"): _pair("premise", "hypothesis", ("entailment", "not_entailment"), None,
                                 ("entailment", "not_entailment")),
}

# the official distributions' file for each Hugging Face split name; test labels are hidden, so no test
LOCAL_FILES = {
    "glue": {"train": "train.tsv", "validation": "dev.tsv", "validation_matched": "dev_matched.tsv",
             "validation_mismatched": "dev_mismatched.tsv"},
    "super_glue": {"train": "train.jsonl", "validation": "val.jsonl"},
}
SPLITS = (("train", "train"), ("valid", "dev"), ("test", "test"))  # DeepPavlov's split key -> mtbert's
HF_READER_KEYS = {"class_name", "path", "name", "train", "valid", "test", "data_files", "data_dir", "delimiter",
                  "sep", "use_task_defaults"}
CONLL_READER_KEYS = {"class_name", "data_path", "dataset_name", "provide_pos", "provide_chunk", "provide_doc_ids",
                     "iob", "iobes", "docstart_token", "use_task_defaults"}
ITERATOR_TASK_KEYS = {"class_name", "iterator_class_name", "features", "label", "use_label_name", "seed", "shuffle",
                      "use_task_defaults"}
# multitask_iterator's own keys that are also per-task fallbacks
ITERATOR_FALLBACKS = ("use_label_name", "seed", "label", "features", "iterator_class_name")


def merge_task_defaults(section: dict, where: str, f: Findings) -> dict[str, dict]:
    """DeepPavlov's multitask_reader / multitask_iterator: each task starts from a deep copy of
    `task_defaults` and its own keys go on top; `use_task_defaults: false` starts from nothing."""
    defaults = section.get("task_defaults") or {}
    tasks = section.get("tasks")
    if not isinstance(tasks, dict) or not isinstance(defaults, dict):
        f.problem(f"{where}.tasks", "expected a mapping of task name to settings")
        return {}
    merged = {}
    for name, params in tasks.items():
        if not isinstance(params, dict):
            f.problem(f"{where}.tasks.{name}", "expected a mapping of settings")
            continue
        params = dict(params)
        use = f.flag(params.pop("use_task_defaults", True), f"{where}.tasks.{name}.use_task_defaults")
        merged[name] = {**copy.deepcopy(defaults), **params} if use else params
    return merged


def iterator_tasks(iterator: dict, f: Findings) -> dict[str, dict]:
    tasks = merge_task_defaults(iterator, "dataset_iterator", f)
    for params in tasks.values():
        for key in ITERATOR_FALLBACKS:
            if key not in params and iterator.get(key) is not None:
                params[key] = iterator[key]
    return tasks


def expand(path: str) -> str:
    """DeepPavlov expands `~` in every path it reads."""
    return str(Path(path).expanduser()) if isinstance(path, str) else path


def env_fix(template, holds: str) -> str | None:
    """How a DeepPavlov user points a path elsewhere without editing the file: DP_<NAME>, when the path
    (as written, before variables are resolved) starts with the variable NAME. DeepPavlov reads DP_<NAME>
    for the variables metadata.variables declares, and only for those."""
    found = re.fullmatch(r"\{(\w+)\}/*(.*)", template) if isinstance(template, str) else None
    if not found:
        return None
    rest = found.group(2).rstrip("/")
    return f"set DP_{found.group(1)}=FOLDER where FOLDER{'/' + rest if rest else ''} holds {holds}"


def task_data(name: str, task_type: str, reader: dict, iterator: dict, f: Findings, template: dict) -> dict:
    """mtbert's task keys for where and how task `name` reads its data. `template` is the task's reader
    settings as written (variables unresolved), to say which DP_<NAME> points a path elsewhere."""
    where = f"dataset_reader.tasks.{name}"
    kind = reader.get("class_name")
    iterator_class = iterator.get("class_name") or iterator.get("iterator_class_name")
    f.check_keys(iterator, f"dataset_iterator.tasks.{name}", ITERATOR_TASK_KEYS)
    f.expect(iterator, "shuffle", f"dataset_iterator.tasks.{name}", (None, True), "mtbert shuffles training data")
    if kind == "conll2003_reader":
        if iterator_class not in (None, "basic_classification_iterator", "data_learning_iterator"):
            f.problem(f"dataset_iterator.tasks.{name}.class_name", f"{iterator_class!r} does not iterate CoNLL data")
        return _conll(name, task_type, reader, where, f, template)
    if kind == "huggingface_dataset_reader":
        if iterator_class not in (None, "huggingface_dataset_iterator"):
            f.problem(f"dataset_iterator.tasks.{name}.class_name", f"{iterator_class!r} does not iterate "
                      "huggingface_dataset_reader data (use huggingface_dataset_iterator)")
        return _huggingface(name, task_type, reader, iterator, where, f, template)
    f.problem(f"{where}.class_name", f"reader {kind!r} is not supported (use huggingface_dataset_reader or "
              "conll2003_reader)")
    return {}


def _conll(name: str, task_type: str, reader: dict, where: str, f: Findings, template: dict) -> dict:
    f.check_keys(reader, where, CONLL_READER_KEYS)
    for key, why in (("provide_pos", "POS tags as model inputs"), ("provide_chunk", "chunk tags as model inputs"),
                     ("provide_doc_ids", "document ids as model inputs"), ("iob", "IOB1 to IOB2 conversion"),
                     ("iobes", "IOBES tags")):
        f.expect(reader, key, where, (False,), f"{why}; the files must hold IOB2 tags, read as they are")
    f.expect(reader, "docstart_token", where, (None, "-DOCSTART-"), "mtbert skips -DOCSTART- lines only")
    if task_type != "sequence_labeling":
        f.problem(f"{where}.class_name", f"conll2003_reader reads tagged tokens; task {name} is {task_type}")
    if not isinstance(reader.get("data_path"), str):
        f.problem(f"{where}.data_path", "missing; the folder with train.txt, valid.txt and test.txt")
        return {}
    folder = Path(expand(reader["data_path"]))
    # DeepPavlov reads every <split>.txt in the folder; it downloads dataset_name when train.txt is missing
    if not (folder / "train.txt").is_file():
        fix = env_fix(template.get("data_path"), "train.txt and valid.txt")
        f.missing_data(name, f"{where}.data_path: no train.txt in {folder} (DeepPavlov would download "
                       f"{reader.get('dataset_name', 'the dataset')} there); {fix + ', or ' if fix else ''}"
                       "point data_path at the folder holding train.txt and valid.txt")
    task = {"format": "conll", "columns": {"tokens": 0, "tags": -1}}  # DeepPavlov: first and last column
    for split, ours in SPLITS:
        path = folder / f"{split}.txt"
        if split == "train" or path.is_file():
            task[ours] = str(path)
    return task


def _known(reader: dict) -> KnownDataset | None:
    return KNOWN.get((reader.get("path"), reader.get("name")))


def _huggingface(name: str, task_type: str, reader: dict, iterator: dict, where: str, f: Findings,
                 template: dict) -> dict:
    f.check_keys(reader, where, HF_READER_KEYS)
    known = _known(reader)
    if not reader.get("path"):
        f.problem(f"{where}.path", "missing; the dataset's hub name (e.g. glue) or a datasets builder (csv, json)")
        return {}
    if known and known.type != task_type:
        f.problem(f"{where}.name", f"{reader['path']}/{reader['name']} is a {known.type} dataset, but the "
                  f"multitask_transformer declares task {name} {task_type}")
        return {}
    splits = {ours: reader[dp] for dp, ours in SPLITS if reader.get(dp)}
    if known and "test" in splits and reader["path"] in LOCAL_FILES:
        del splits["test"]
        f.note("test splits: GLUE and SuperGLUE hide their test labels (-1), so mtbert leaves them out and "
               "scores those tasks on dev")
    columns = _columns(name, task_type, known, iterator, f)
    if columns is None:
        return {}
    if reader.get("data_dir"):
        return _local_distribution(name, reader, known, columns, splits, where, f, template)
    if reader.get("data_files"):
        return _data_files(name, reader, columns, splits, where, f)
    f.hub[name] = (reader["path"], reader.get("name"), where, bool(known and reader["path"] in LOCAL_FILES))
    task = {"format": "hf", "hf_path": reader["path"], "columns": columns, **splits}
    if reader.get("name"):
        task["hf_name"] = reader["name"]
    if known and known.labels and task_type == "classification":
        task["labels"] = list(known.labels)  # mtbert maps ClassLabel ids to these names; keep DeepPavlov's ids
    return task


def _columns(name: str, task_type: str, known: KnownDataset | None, iterator: dict, f: Findings) -> dict | None:
    """mtbert's columns, in the dataset's own column names, from the iterator's features and label."""
    where = f"dataset_iterator.tasks.{name}"
    features = iterator.get("features")
    features = [features] if isinstance(features, str) else features
    label = iterator.get("label") or "label"
    if known:
        if features is not None and tuple(features) != known.features:
            f.problem(f"{where}.features", f"{features} for a dataset whose inputs are {list(known.features)}")
            return None
        if label != "label":
            f.problem(f"{where}.label", f"{label!r}; the dataset's label column is 'label'")
            return None
        return copy.deepcopy(known.columns)
    if not features:
        f.problem(f"{where}.features", "missing; name the dataset columns the task reads")
        return None
    if task_type == "sequence_labeling" and len(features) == 1:
        return {"tokens": features[0], "tags": label}
    if task_type == "multiple_choice" and len(features) == 2:
        return {"text": features[0], "choices": [features[1]], "label": label}  # the second holds the choices
    if task_type in ("classification", "regression") and len(features) in (1, 2):
        return {"text": features[0], **({"text_pair": features[1]} if len(features) == 2 else {}), "label": label}
    f.problem(f"{where}.features", f"{features} does not fit a {task_type} task")
    return None


def _local_distribution(name: str, reader: dict, known: KnownDataset | None, columns: dict, splits: dict,
                        where: str, f: Findings, template: dict) -> dict:
    benchmark = reader["path"]
    if not known or benchmark not in LOCAL_FILES:
        f.problem(f"{where}.data_dir", "mtbert knows the files of the GLUE and SuperGLUE tasks only; "
                  "use data_files for other datasets")
        return {}
    folder = Path(expand(reader["data_dir"]))
    task = {"format": "tsv", "header": known.header} if benchmark == "glue" else {"format": "jsonl"}
    task["columns"] = _rename(columns, known.local)
    for ours, split in splits.items():
        if split not in LOCAL_FILES[benchmark]:
            f.problem(f"{where}.{dict((o, d) for d, o in SPLITS)[ours]}",
                      f"split {split!r} has no file in the {benchmark} distribution "
                      f"({', '.join(LOCAL_FILES[benchmark])})")
            continue
        task[ours] = str(folder / LOCAL_FILES[benchmark][split])
    absent = [Path(task[o]).name for o in splits if o in task and not Path(task[o]).is_file()]
    if absent:
        files = ", ".join(Path(task[o]).name for o in splits if o in task)
        fix = env_fix(template.get("data_dir"), files)
        f.absent_file(name, f"{where}.data_dir: no {' or '.join(absent)} in {folder}; "
                       f"{fix + ', or ' if fix else ''}point data_dir at the folder of {benchmark}'s "
                       f"{reader.get('name')} files ({files})")
    if known.local_labels:
        task["labels"] = list(known.local_labels)
    return task


def _rename(columns: dict, names: dict) -> dict:
    return {k: [names[c] for c in v] if isinstance(v, list) else names[v] for k, v in columns.items()}


DATA_FILE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "hf:json", ".parquet": "hf:parquet"}


def _data_files(name: str, reader: dict, columns: dict, splits: dict, where: str, f: Findings) -> dict:
    files = reader["data_files"]
    files = {"train": files} if isinstance(files, str | list) else files  # datasets: bare files are train
    if not isinstance(files, dict):
        f.problem(f"{where}.data_files", "expected a file, a list of files, or split name -> file(s)")
        return {}
    files = {split: [expand(p) for p in v] if isinstance(v, list) else expand(v) for split, v in files.items()}
    chosen = {}
    for ours, split in splits.items():
        if split not in files:
            f.problem(f"{where}.data_files", f"no {split!r} entry for the {dict((o, d) for d, o in SPLITS)[ours]} split")
            continue
        chosen[ours] = files[split]
        for path in files[split] if isinstance(files[split], list) else [files[split]]:
            # a URL or a glob is datasets' to resolve; a plain path must be there
            if "://" not in path and not any(c in path for c in "*?[") and not Path(path).is_file():
                f.absent_file(name, f"{where}.data_files: no file {path} (the {split!r} split)")
    formats = {DATA_FILE_FORMATS.get(Path(p).suffix.lower()) for v in chosen.values()
               for p in (v if isinstance(v, list) else [v])}
    if len(formats) != 1 or None in formats:
        f.problem(f"{where}.data_files", f"use one file type of {', '.join(DATA_FILE_FORMATS)} for every split")
        return {}
    fmt = formats.pop()
    if fmt.startswith("hf:"):  # read with datasets' own builder, like DeepPavlov does
        return {"format": "hf", "hf_path": fmt[3:], "data_files": {splits[o]: v for o, v in chosen.items()},
                "columns": columns, **{o: splits[o] for o in chosen}}
    if any(isinstance(v, list) and len(v) != 1 for v in chosen.values()):
        f.problem(f"{where}.data_files", f"one {fmt} file per split (several files need .json or .parquet)")
        return {}
    task = {"format": fmt, "columns": columns, **{o: v[0] if isinstance(v, list) else v for o, v in chosen.items()}}
    delimiter = reader.get("delimiter", reader.get("sep"))
    if delimiter is not None:
        task["delimiter"] = delimiter
    return task


def unreachable_hub_tasks(hub: dict[str, tuple]) -> tuple[str, dict[str, str]]:
    """Why the hub cannot be used here, and the hub tasks whose dataset cannot be loaded, each with its
    fix: fast, instead of datasets' five retries per task on a machine without network.

    Offline (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set), datasets reads its cache only, so a cached dataset
    still loads: each one is asked of the cache. Otherwise the hub is tried once, with a short timeout."""
    if not hub:
        return "", {}
    flags = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
             if os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")]
    if flags:
        why = f"{flags[0]} is set and these datasets are not in the datasets cache"
        absent = [t for t, (path, name, _, _) in hub.items() if not _cached(path, name)]
    elif _hub_answers():
        return "", {}
    else:
        why = "the Hugging Face hub is out of reach (no network; with the datasets in your cache, set HF_HUB_OFFLINE=1)"
        absent = list(hub)
    out = {}
    for task in absent:
        path, name, where, distributed = hub[task]
        dataset = f"{path}/{name}" if name else path
        files = ", ".join(f for s, f in LOCAL_FILES.get(path, {}).items() if s in ("train", "validation"))
        local = f'"data_dir": FOLDER (its {files}) or ' if distributed else ""
        out[task] = f"{dataset} is on the hub: add {local}\"data_files\": {{split: FILE}} to {where}"
    return why, out


def _cached(path: str, name: str | None) -> bool:
    try:
        import datasets
    except ImportError:
        return False
    try:
        datasets.load_dataset_builder(path, name)
    except Exception:  # offline: whatever the reason, not loadable from the cache
        return False
    return True


def _hub_answers(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((host.hostname, host.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
