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
import unicodedata
from collections import Counter
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
    """A row that cannot become an Example; the reader adds file and line. `missing`: the keys a JSON
    record lacks, and `has` the keys it holds, so a mapping no row fits can be told apart from a bad row."""

    def __init__(self, message: str, missing: tuple = (), has: tuple = ()):
        super().__init__(message)
        self.missing, self.has = missing, has


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
        # a quoted header cell may hold a line break: shown as its repr, the message stays one line
        shown = ", ".join(h if h and h.isprintable() else _short(h) for h in header)
        where = f"tasks.{task}.columns.{key}: column '{spec}' not in {source} header"
        raise ColumnNotInHeader(f"{where} ({shown})", f"{where}; is it this task's file? pass --data {task}=PATH to read another")
    where = [i for i, h in enumerate(header) if h == spec]
    if len(where) > 1:  # which one the user means is a guess; a duplicate name no column uses is harmless
        raise UserError(f"tasks.{task}.columns.{key}: column '{spec}' appears {len(where)} times in the {source} "
                        f"header (columns {', '.join(map(str, where))}); rename one, or give a 0-based column index")
    return where[0]


def _row_to_example(task: TaskConfig, get) -> Example:
    """Build an Example from a row, `get(key)` returning the raw value of a mapped column."""
    c = task.columns
    ex = Example()
    if task.type == "sequence_labeling":
        tokens, tags = get("tokens"), get("tags")
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise BadRow("tokens and tags must be lists of the same length")
        ex.tokens = [_word(t, "token") for t in tokens]
        ex.label = [_word(t, "tag") for t in tags]
        return ex
    text = get("text")
    if task.type == "multiple_choice" and isinstance(text, list):
        text = _one_context(text)
    ex.text = _text(text, "text")
    if c.text_pair is not None:
        ex.text_pair = _text(get("text_pair"), "text_pair")
    if task.type == "multiple_choice":
        if c.question is not None:
            ex.question = _text(get("question"), "question")
        ex.choices = [_text(v, "choice") for v in get("choices")]
        # one choice is no choice (its softmax is 1 whatever the model says); it is also what a JSON string
        # under `choices: [key]` becomes
        if len(ex.choices) < 2:
            shown = f" ({_short(ex.choices[0])})" if ex.choices else ""
            raise BadRow(f"{len(ex.choices)} choice(s){shown}; a multiple-choice example needs at least 2: a JSON "
                         "list of strings under one key, or one key (column) per choice under columns.choices")
    if c.id is not None:
        ex.id = str(get("id")).strip()
    if c.label is None:  # unlabeled inputs (e.g. minBERT's *-test-student.csv), read for prediction
        return ex
    raw_label = get("label")
    if raw_label is None or (isinstance(raw_label, str) and not raw_label.strip()):
        raise BadRow("blank label")
    if task.type == "regression":
        ex.label = _number(raw_label, "a number")
    elif task.type == "multiple_choice":
        index = _number(raw_label, "a choice index")
        if not index.is_integer():
            raise BadRow(f"label {raw_label!r} is not a whole choice index")
        ex.label = int(index)
        if not 0 <= ex.label < len(ex.choices):
            raise BadRow(f"label {ex.label} is not the index of one of the {len(ex.choices)} choices")
    else:
        if isinstance(raw_label, (dict, list)):
            raise BadRow(f"label {_short(raw_label)} is {_json_kind(raw_label)}; a class label is a string or a number")
        # 1.0 and 1 are the same class (the minBERT Quora file writes 0.0/1.0); JSON true/false are the
        # classes 'True'/'False', as Hugging Face's ClassLabel names them (BoolQ)
        label = str(raw_label).strip()
        ex.label = label[:-2] if re.fullmatch(r"-?\d+\.0", label) else label
    return ex


def _one_context(contexts: list):
    """DeepPavlov's multiple-choice `contexts`: the context once per choice (its preprocessor pairs
    contexts[i] with choices[i]; its COPA reader repeats the premise). mtbert reads one context per example."""
    if contexts and all(isinstance(x, str) for x in contexts) and len(set(contexts)) == 1:
        return contexts[0]
    if len({json.dumps(x) for x in contexts}) > 1:
        raise BadRow(f"text is a JSON list of {len(contexts)} different contexts ({_short(contexts)}); mtbert reads one "
                     "context per example, shared by its choices: write it as a JSON string, or the same string "
                     "once per choice (DeepPavlov's contexts)")
    return contexts[0] if contexts else None


def _short(value) -> str:
    """A value for a message: its repr, cut to 60 characters (a bad cell may be a whole line)."""
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)  # true, as the file says
    return text if len(text) <= 60 else text[:57] + "..."


def _word(value, name: str) -> str:
    """A token or tag of a JSON Lines / datasets record: a string (or a number, as tag ids often are)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRow(f"{name} {_short(value)} is {_json_kind(value)}, not a string")
    return str(value)


def _text(value, name: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRow(f"empty {name}")
    if not isinstance(value, str):  # JSON Lines: {"x": 1}, [..], true or 3 would be read as their repr
        raise BadRow(f"{name} is {_json_kind(value)}, not a string; write the {name} as a JSON string")
    if not any(unicodedata.category(c)[0] not in INVISIBLE for c in value):
        raise BadRow(f"{name} {_short(value)} has no visible character (only control, zero-width or space "
                     "characters); the tokenizer would see an empty text")
    return value


# Unicode categories with no glyph: C* (control, format such as U+200B zero-width space, U+FEFF, private
# use, unassigned) and Z* (separators). A text of only these tokenises to nothing but [CLS] [SEP].
INVISIBLE = "CZ"


def _json_kind(value) -> str:
    kinds = ((type(None), "JSON null"), (bool, "a JSON boolean"), (dict, "a JSON object"), (list, "a JSON list"), ((int, float), "a JSON number"))
    return next((name for types, name in kinds if isinstance(value, types)), type(value).__name__)


# A number as people write it in a data file: ASCII digits, optional sign, point and exponent. Python's
# float() also takes '1_000', ' 1e3', 'infinity' and non-ASCII digits ('١'), which are typos here.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def _number(raw, what: str) -> float:
    """A label cell or JSON value as a finite float; a JSON boolean is not a number (float(True) is 1.0)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise BadRow(f"label {_short(raw)} is {_json_kind(raw)}, not {what}")
    if isinstance(raw, str) and not NUMBER.fullmatch(raw.strip()):
        finite_word = raw.strip().lower().lstrip("+-") not in ("nan", "inf", "infinity")
        raise BadRow(f"label {_short(raw)} is not {what}" if finite_word else f"label {raw!r} is not a finite number")
    try:
        value = float(raw)
    except OverflowError:  # a JSON integer with 400 digits
        raise BadRow(f"label {_short(raw)} is not {what}") from None
    if not math.isfinite(value):
        raise BadRow(f"label {raw!r} is not a finite number")
    return value


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
                record = json.loads(text, object_pairs_hook=_one_value_per_key)
            except json.JSONDecodeError as err:
                yield line, BadRow(f"not valid JSON ({err.msg})")
                continue
            except RecursionError:  # json recurses per level: [[[[... 100,000 deep exhausts the stack
                yield line, BadRow("nested too deeply to read")
            except BadRow as bad:
                yield line, bad
                continue
            if not isinstance(record, dict):
                yield line, BadRow("expected a JSON object")
                continue
            if "\\u" in text and not _valid_unicode(record):
                yield line, BadRow("a \\uD800-\\uDFFF escape without its pair; not valid Unicode text")
                continue
            yield line, _record_getter(record, cols)


def _one_value_per_key(pairs: list) -> dict:
    """json's object_pairs_hook: a key twice in one object is refused (json.loads would keep the last)."""
    record = dict(pairs)
    if len(record) != len(pairs):
        key = next(k for i, (k, _) in enumerate(pairs) if any(k == other for other, _ in pairs[:i]))
        raise BadRow(f"key {_short(key)} appears twice in one object; keep one")
    return record


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
                raise BadRow(f"missing key(s) {', '.join(map(str, missing))}", tuple(missing), tuple(record))
            return [record[s] for s in spec]
        if spec not in record:
            raise BadRow(f"missing key '{spec}'", (spec,), tuple(record))
        return record[spec]

    return get


def _read_conll(path: Path, task: TaskConfig, name: str) -> Iterator[tuple[int, Any]]:
    tok_col, tag_col = int(task.columns.tokens), int(task.columns.tags)
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    bad: BadRow | None = None
    split = _conll_splitter(path, task.delimiter)
    width, width_line = None, 0  # the column count of the file's first token line, and that line

    def flush():
        rec = {"tokens": tokens, "tags": tags}
        return first, (bad if bad else (lambda key: rec[key]))

    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            if not text.strip() or text.split()[0] == "-DOCSTART-":  # whatever separates its columns
                if tokens or bad:
                    yield flush()
                tokens, tags, bad = [], [], None
                continue
            parts = split(text)
            if not tokens and bad is None:
                first = line
            if width is None:
                width, width_line = len(parts), line
            if bad:
                continue
            try:
                token, tag = parts[tok_col].strip(), parts[tag_col].strip()
            except IndexError:
                bad = BadRow(f"line {line} has {len(parts)} columns; tokens are column {tok_col}, tags column {tag_col}")
                continue
            if len(parts) != width:
                # a token with a space in a space-separated file: every column after it shifts by one, and
                # a chunk tag such as B-NP (valid IOB2) would be read as the entity tag
                bad = BadRow(f"line {line} has {len(parts)} columns but line {width_line} has {width}; a token or "
                             "tag with a space? separate the columns with tabs (or set tasks."
                             f"{name}.delimiter)")
                continue
            if not IOB2_TAG.match(tag):
                bad = BadRow(f"line {line}: tag {tag!r} is not IOB2 (O, B-TYPE or I-TYPE)")
                continue
            tokens.append(token)
            tags.append(tag)
        if tokens or bad:
            yield flush()


def _conll_splitter(path: Path, delimiter: str | None):
    """How a CoNLL line splits into columns: on `delimiter` if set; else on tabs if the file's first token
    line holds a tab (a tab-separated file may have tokens with spaces, e.g. 'New York'); else on any run
    of whitespace (CoNLL-2003's own files)."""
    if delimiter:
        return lambda text: text.rstrip("\r\n").split(delimiter)
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        first = next((t for t in f if t.strip() and t.split()[0] != "-DOCSTART-"), "")
    if "\t" in first.strip("\r\n"):
        return lambda text: text.rstrip("\r\n").split("\t")
    return str.split
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


def _refuse_header_as_class(examples: list[Example], first_line: int, split: str, name: str) -> None:
    """`header: false` on a file that has a header makes its label cell ('label') a class of one example.

    The first row is taken for a header when its label occurs on no other line and either every other label
    is a number (0/1 files: CoLA, SST-2, MRPC, QQP) or, in train, every other class has two examples or more
    (so the header's value is the file's only one-example class). A real class seen once, on line 1, is
    rare and has a way out: listing the classes under `labels` turns this check off."""
    first = examples[0]
    if first.line != first_line or len(examples) < 2:
        return
    counts = Counter(ex.label for ex in examples)
    if counts[first.label] != 1:
        return
    others = [ex.label for ex in examples[1:]]
    if all(NUMBER.fullmatch(x) for x in others) and not NUMBER.fullmatch(first.label):
        why = "every other label is a number"
    elif split == "train" and all(counts[x] >= 2 for x in others):
        why = "every other class has two examples or more"
    else:
        return
    raise UserError(f"{first.where}: label {first.label!r} of task {name} occurs only on this first line and "
                    f"{why}: it looks like a header row, but tasks.{name}.header is false; set header: true, or "
                    f"if {first.label!r} is a class, list the classes under tasks.{name}.labels")


def _no_row_has(rows: Iterator, task: TaskConfig, keys: tuple) -> bool:
    """Whether none of the rows left holds the keys of `keys` (it reads them: only when about to refuse)."""
    for _, row in rows:
        if isinstance(row, BadRow):
            continue  # not JSON, or not an object: says nothing about the keys
        try:
            _row_to_example(task, row)
        except BadRow as bad:
            if not set(keys) & set(bad.missing):
                return False
            continue
        return False
    return True


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
    headerless = task.format in ("tsv", "csv") and not task.header
    examples, skipped, first_bad, first_line = [], 0, None, None
    try:
        for line, row in rows:
            first_line = first_line or line
            try:
                if isinstance(row, BadRow):
                    raise row
                ex = _row_to_example(task, row)
            except BadRow as bad:
                if bad.missing and not examples and _no_row_has(rows, task, bad.missing):
                    # not a bad row: the mapping names keys this data does not have at all
                    raise UserError(f"{source}: no row has key {', '.join(repr(k) for k in bad.missing)} (task "
                                    f"{name}); the rows have {', '.join(map(str, bad.has))}: map the task's "
                                    f"columns to those (tasks.{name}.columns; from a DeepPavlov config, the "
                                    "iterator's features and label)") from None
                if task.on_bad_rows == "error":
                    fix = (f"if line {line} is a header, set tasks.{name}.header: true; otherwise fix the row"
                           if headerless and line == first_line else "fix the row")
                    raise UserError(f"{source} line {line}: {bad} (task {name}; {fix} or set "
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
    if headerless and with_labels and task.type == "classification" and not task.labels:
        _refuse_header_as_class(examples, first_line, split, name)
    if split == "train" and task.max_train_examples and len(examples) > task.max_train_examples:
        rng = random.Random(cfg.seed)
        keep = sorted(rng.sample(range(len(examples)), task.max_train_examples))
        examples = [examples[i] for i in keep]
    return examples
