"""Readers: a task's files (TSV/CSV, JSON Lines, CoNLL, Hugging Face datasets) -> `Example`s.

Readers know nothing of tokenizers or models. A bad row is an error naming file, line and problem,
or, with `on_bad_rows: skip`, skipped and counted in the log.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtbert.config import Config, TaskConfig
from mtbert.errors import UserError

log = logging.getLogger("mtbert")

csv.field_size_limit(sys.maxsize)  # real files have long cells (1 MB lines included)

IOB2_TAG = re.compile(r"^(O|[BI]-.+)$")


@dataclass
class Example:
    """One input with its gold label. `label` is a string (classification), a float (regression), the
    index of the right choice (multiple_choice) or a list of tags (sequence_labeling)."""

    text: str | None = None
    text_pair: str | None = None
    question: str | None = None
    choices: list[str] | None = None
    tokens: list[str] | None = None
    label: Any = None
    source: str = ""
    line: int = 0
    id: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}" if self.line else self.source


class BadRow(Exception):
    """A row that cannot become an Example; the reader adds file and line."""


class ColumnNotInHeader(UserError):
    """A configured column the header lacks; `without_header` is the message that does not quote the
    header line, for a file named by a loaded run's config (it may be any file of the user's)."""

    def __init__(self, message: str, without_header: str):
        super().__init__(message)
        self.without_header = without_header


def _column_index(spec, header: list[str] | None, key: str, source: str, task: str) -> int:
    if isinstance(spec, int):
        return spec
    if header is None:
        if spec.lstrip("-").isdigit():
            return int(spec)
        raise UserError(f"tasks.{task}.columns.{key}: '{spec}' is a column name but {source} has no header "
                        "(header: false); give a 0-based column index")
    if spec not in header:
        shown = ", ".join(h if h else "''" for h in header)
        where = f"tasks.{task}.columns.{key}: column '{spec}' not in {source} header"
        raise ColumnNotInHeader(f"{where} ({shown})", f"{where}; is it this task's file? pass --data {task}=PATH to read another")
    return header.index(spec)


def _row_to_example(task: TaskConfig, get) -> Example:
    """Build an Example from a row, `get(key)` returning the raw value of a mapped column."""
    c = task.columns
    ex = Example()
    if task.type == "sequence_labeling":
        tokens, tags = get("tokens"), get("tags")
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise BadRow("tokens and tags must be lists of the same length")
        ex.tokens = [str(t) for t in tokens]
        ex.label = [str(t) for t in tags]
        return ex
    ex.text = _text(get("text"), "text")
    if c.text_pair is not None:
        ex.text_pair = _text(get("text_pair"), "text_pair")
    if task.type == "multiple_choice":
        if c.question is not None:
            ex.question = _text(get("question"), "question")
        ex.choices = [_text(v, "choice") for v in get("choices")]
        if not ex.choices:
            raise BadRow("no choices")
    if c.id is not None:
        ex.id = str(get("id")).strip()
    if c.label is None:  # unlabeled inputs (e.g. minBERT's *-test-student.csv), read for prediction
        return ex
    raw_label = get("label")
    if raw_label is None or (isinstance(raw_label, str) and not raw_label.strip()):
        raise BadRow("blank label")
    if task.type == "regression":
        try:
            ex.label = float(raw_label)
        except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer with 400 digits
            raise BadRow(f"label {_short(raw_label)} is not a number") from None
        if not math.isfinite(ex.label):
            raise BadRow(f"label {raw_label!r} is not a finite number")
    elif task.type == "multiple_choice":
        try:
            index = float(raw_label)
        except (TypeError, ValueError, OverflowError):
            raise BadRow(f"label {_short(raw_label)} is not a choice index") from None
        if not index.is_integer():
            raise BadRow(f"label {raw_label!r} is not a whole choice index")
        ex.label = int(index)
        if not 0 <= ex.label < len(ex.choices):
            raise BadRow(f"label {ex.label} is not the index of one of the {len(ex.choices)} choices")
    else:
        # 1.0 and 1 are the same class (the minBERT Quora file writes 0.0/1.0)
        label = str(raw_label).strip()
        ex.label = label[:-2] if re.fullmatch(r"-?\d+\.0", label) else label
    return ex


def _short(value) -> str:
    """A value for a message: its repr, cut to 60 characters (a bad cell may be a whole line)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value, name: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRow(f"empty {name}")
    return str(value)


def _read_delimited(path: Path, task: TaskConfig, name: str) -> Iterator[tuple[int, Any]]:
    delimiter = task.delimiter or ("\t" if task.format == "tsv" else ",")
    # GLUE TSVs carry stray quote characters: quoting is off for TSV unless asked for
    quoting = task.quoting or ("none" if task.format == "tsv" else "csv")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL)
        header = None
        width = None
        start = 1
        indices: dict[str, Any] = {}
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None and task.header:
                header = [h.strip() for h in row]
                width = len(header)
                indices = _indices(task, header, str(path), name)
                continue
            if width is None:
                width = len(row)
                indices = _indices(task, None, str(path), name)
            if len(row) != width:
                yield line, BadRow(f"expected {width} columns, found {len(row)}")
                continue
            yield line, _getter(row, indices)
        if header is None and task.header:
            raise UserError(f"{path}: empty file; expected a header row and data")
        if width is None:
            raise UserError(f"{path}: no data rows")


def _indices(task: TaskConfig, header, source: str, name: str) -> dict[str, Any]:
    out = {}
    for key, spec in task.columns.model_dump(exclude_none=True).items():
        if isinstance(spec, list):
            out[key] = [_column_index(s, header, key, source, name) for s in spec]
        else:
            out[key] = _column_index(spec, header, key, source, name)
        width = len(header) if header is not None else None
        for i in out[key] if isinstance(out[key], list) else [out[key]]:
            if width is not None and not -width <= i < width:
                raise UserError(f"tasks.{name}.columns.{key}: index {i} is outside the {width} columns of {source}")
    return out


def _getter(row: list[str], indices: dict[str, Any]):
    def get(key):
        idx = indices[key]
        try:
            return [row[i] for i in idx] if isinstance(idx, list) else row[idx]
        except IndexError:
            raise BadRow(f"column {idx} of '{key}' is missing") from None

    return get


def _read_jsonl(path: Path, task: TaskConfig, name: str) -> Iterator[tuple[int, Any]]:
    cols = task.columns.model_dump(exclude_none=True)
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                yield line, BadRow(f"not valid JSON ({err.msg})")
                continue
            except RecursionError:  # json recurses per level: [[[[... 100,000 deep exhausts the stack
                yield line, BadRow("nested too deeply to read")
                continue
            if not isinstance(record, dict):
                yield line, BadRow("expected a JSON object")
                continue
            if "\\u" in text and not _valid_unicode(record):
                yield line, BadRow("a \\uD800-\\uDFFF escape without its pair; not valid Unicode text")
                continue
            yield line, _record_getter(record, cols)


def _valid_unicode(record) -> bool:
    """False if a string holds a lone surrogate (JSON allows the escape; no tokenizer takes the text)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _record_getter(record: dict, cols: dict):
    def get(key):
        spec = cols[key]
        if isinstance(spec, list):
            if len(spec) == 1 and isinstance(record.get(spec[0]), list):
                return record[spec[0]]
            missing = [s for s in spec if s not in record]
            if missing:
                raise BadRow(f"missing key(s) {', '.join(map(str, missing))}")
            return [record[s] for s in spec]
        if spec not in record:
            raise BadRow(f"missing key '{spec}'")
        return record[spec]

    return get


def _read_conll(path: Path, task: TaskConfig, name: str) -> Iterator[tuple[int, Any]]:
    tok_col, tag_col = int(task.columns.tokens), int(task.columns.tags)
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    bad: BadRow | None = None

    def flush():
        rec = {"tokens": tokens, "tags": tags}
        return first, (bad if bad else (lambda key: rec[key]))

    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            parts = text.split(task.delimiter) if task.delimiter else text.split()
            if not text.strip() or text.split()[0] == "-DOCSTART-":  # whatever separates its columns
                if tokens or bad:
                    yield flush()
                tokens, tags, bad = [], [], None
                continue
            if not tokens and bad is None:
                first = line
            if bad:
                continue
            try:
                token, tag = parts[tok_col].strip(), parts[tag_col].strip()
            except IndexError:
                bad = BadRow(f"line {line} has {len(parts)} columns; tokens are column {tok_col}, tags column {tag_col}")
                continue
            if not IOB2_TAG.match(tag):
                bad = BadRow(f"line {line}: tag '{tag}' is not IOB2 (O, B-TYPE or I-TYPE)")
                continue
            tokens.append(token)
            tags.append(tag)
        if tokens or bad:
            yield flush()


def _local_data_files(cfg: Config, files):
    """Relative `data_files` are taken from data_dir, like every other data path in the config."""
    if files is None:
        return None
    resolve = lambda f: str(cfg.data_path(f)) if not Path(f).is_absolute() and "://" not in f else f  # noqa: E731
    return {split: [resolve(f) for f in v] if isinstance(v, list) else resolve(v) for split, v in files.items()}


def _read_hf(cfg: Config, task: TaskConfig, split: str, name: str) -> Iterator[tuple[int, Any]]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"tasks.{name}: format 'hf' needs the datasets package: pip install 'mtbert[datasets]'") from None
    split_name = getattr(task, split)
    try:
        ds = datasets.load_dataset(task.hf_path, task.hf_name, data_files=_local_data_files(cfg, task.data_files),
                                   split=split_name)
    except Exception as err:  # the hub, the network or the files: all the user's to fix
        raise UserError(f"tasks.{name}: cannot load dataset {task.hf_path!r}/{task.hf_name!r} split {split_name!r}: "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    cols = task.columns.model_dump(exclude_none=True)
    names = {}
    for key, spec in cols.items():
        if key == "label" and task.type == "multiple_choice":
            continue  # a choice index stays an index (super_glue COPA's ClassLabel names are choice1/choice2)
        feature = ds.features.get(spec) if isinstance(spec, str) else None
        inner = getattr(feature, "feature", feature)  # Sequence(ClassLabel) for NER tags
        if hasattr(inner, "names"):
            names[spec] = inner.names
    for i, record in enumerate(ds, 1):
        record = dict(record)
        for spec, label_names in names.items():
            value = record[spec]
            # -1 marks a hidden label (GLUE test splits): a blank label, not the last class name
            record[spec] = ([label_names[v] for v in value] if isinstance(value, list)
                            else None if value == -1 else label_names[value])
        yield i, _record_getter(record, cols)


def read_split(cfg: Config, name: str, split: str, path_override: str | None = None,
               with_labels: bool = True, from_run: bool = False) -> list[Example]:
    """All examples of one task's split ('train', 'dev' or 'test'); `with_labels=False` reads inputs only.
    `from_run`: the config is a loaded run's, whose paths may name any file of the user's (/etc/passwd):
    an error then quotes no more of the file than the offending field."""
    task = cfg.tasks[name]
    if not with_labels and task.type != "sequence_labeling":
        task = task.model_copy(update={"columns": task.columns.model_copy(update={"label": None})})
    if task.format == "hf" and path_override is None:
        source, rows = f"{task.hf_path}:{getattr(task, split)}", _read_hf(cfg, task, split, name)
    else:
        rel = path_override or getattr(task, split)
        if rel is None:
            raise UserError(f"tasks.{name}.{split}: no {split} file in the config; add one or pass --data {name}=PATH")
        path = Path(path_override) if path_override else cfg.data_path(rel)
        if not path.is_file():
            raise UserError(f"tasks.{name}.{split}: file not found: {path}")
        source = str(path)
        fmt = "tsv" if task.format == "hf" else task.format
        rows = {"tsv": _read_delimited, "csv": _read_delimited, "jsonl": _read_jsonl, "conll": _read_conll}[fmt](
            path, task, name)
    examples, skipped, first_bad = [], 0, None
    try:
        for line, row in rows:
            try:
                if isinstance(row, BadRow):
                    raise row
                ex = _row_to_example(task, row)
            except BadRow as bad:
                if task.on_bad_rows == "error":
                    raise UserError(f"{source} line {line}: {bad} (task {name}; fix the row or set "
                                    f"tasks.{name}.on_bad_rows: skip)") from None
                skipped += 1
                first_bad = first_bad or f"line {line}: {bad}"
                continue
            ex.source, ex.line = source, line
            examples.append(ex)
    except UnicodeDecodeError as err:
        raise UserError(f"{source}: not valid UTF-8 (byte {err.start} of a line: {err.reason}); "
                        "re-save the file as UTF-8") from None
    except ColumnNotInHeader as err:
        if from_run and not path_override:
            raise UserError(err.without_header) from None
        raise
    if skipped:
        log.warning("tasks.%s: skipped %d bad row(s) in %s (first: %s)", name, skipped, source, first_bad)
    if not examples:
        raise UserError(f"{source}: no usable examples for task {name}")
    if split == "train" and task.max_train_examples and len(examples) > task.max_train_examples:
        rng = random.Random(cfg.seed)
        keep = sorted(rng.sample(range(len(examples)), task.max_train_examples))
        examples = [examples[i] for i in keep]
    return examples
