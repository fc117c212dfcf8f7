"""Properties (hypothesis) of the readers and of collation.

Readers: any well-formed CSV, JSON Lines or CoNLL file reads back exactly what was written, with the right
line numbers; any malformed file (random bytes, structural characters, a well-formed file with a piece cut
out or put in) is read, or refused with a `UserError`, never another exception, also once tokenised.
(tests/test_readers.py already has the TSV round trip and the wrong-column-count property.)

Collation: random features of every task type pad to the batch's longest member with the pad id, type 0,
mask 0 and label -100; `length_grouped_batches` and `sorted_batches` give every index exactly once.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import re
import tempfile
import unicodedata
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtbert.config import validate
from mtbert.data.bucketing import CALL_COST_TOKENS
from mtbert.data.features import (
    IGNORE,
    Feature,
    build_labels,
    collate,
    encode,
    length_grouped_batches,
    sorted_batches,
)
from mtbert.data.readers import Example, read_split
from mtbert.errors import UserError

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text without control characters, surrogates or a BOM (utf-8-sig would eat one at the start of a file)
CHARS = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufeff")


def visible(text: str) -> bool:
    """The readers refuse a text of only control, zero-width or space characters (documented)."""
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


TEXT = st.text(CHARS, min_size=1, max_size=20).filter(visible)
# labels are stripped and 1.0 is read as 1 (both documented): generate labels those rules leave alone
LABEL = st.text(CHARS, min_size=1, max_size=10).map(str.strip).filter(lambda s: s and not re.fullmatch(r"-?\d+\.0", s))
WORD = st.text(CHARS, min_size=1, max_size=8).filter(lambda w: len(w.split()) == 1 and w == w.strip()
                                                     and w != "-DOCSTART-")
TAG = st.from_regex(r"\A(O|[BI]-[A-Z]{1,4})\Z")


def read(content: str | bytes, task: dict, name: str = "train.file") -> list[Example]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, name)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        cfg = validate({"data_dir": d, "tasks": {"t": {"train": name, **task}}})
        return read_split(cfg, "t", "train")


def breaks(text: str) -> int:
    """Line breaks as a file iterator counts them (\\r\\n, \\r or \\n; not \\u2028 and friends)."""
    return len(re.findall(r"\r\n|\r|\n", text))


# ---------------------------------------------------------------- well-formed files round-trip

CSV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufeff\x00"),
                   min_size=1, max_size=20).filter(visible)


@FEW
@given(rows=st.lists(st.tuples(CSV_TEXT, CSV_TEXT, LABEL), min_size=1, max_size=10))
def test_csv_with_quoted_cells_round_trips(rows):
    """Cells holding commas, quotes and line breaks survive csv quoting; line numbers are physical lines."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["a", "b", "label"])
    writer.writerows(rows)
    examples = read(out.getvalue(), {"type": "classification", "format": "csv",
                                     "columns": {"text": "a", "text_pair": "b", "label": "label"}})
    assert [(e.text, e.text_pair, e.label) for e in examples] == [tuple(r) for r in rows]
    lines, line = [], 2
    for a, b, label in rows:
        lines.append(line)
        line += 1 + breaks(a) + breaks(b) + breaks(label)
    assert [e.line for e in examples] == lines


JSON_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(visible)


@st.composite
def jsonl_task(draw):
    """(task config, records, expected (text, text_pair, question, choices, tokens, label) per record)."""
    kind = draw(st.sampled_from(["classification", "regression", "multiple_choice", "sequence_labeling"]))
    n = draw(st.integers(1, 8))
    if kind == "sequence_labeling":
        records = []
        for _ in range(n):
            tokens = draw(st.lists(JSON_TEXT, min_size=1, max_size=6))
            records.append({"words": tokens, "tags": draw(st.lists(TAG, min_size=len(tokens), max_size=len(tokens)))})
        expected = [(None, None, None, None, r["words"], r["tags"]) for r in records]
        return {"type": kind, "columns": {"tokens": "words", "tags": "tags"}}, records, expected
    if kind == "multiple_choice":
        k = draw(st.integers(2, 4))
        records = [{"premise": draw(JSON_TEXT), "q": draw(JSON_TEXT),
                    "options": draw(st.lists(JSON_TEXT, min_size=k, max_size=k)), "answer": draw(st.integers(0, k - 1))}
                   for _ in range(n)]
        expected = [(r["premise"], None, r["q"], r["options"], None, r["answer"]) for r in records]
        columns = {"text": "premise", "question": "q", "choices": ["options"], "label": "answer"}
        return {"type": kind, "columns": columns}, records, expected
    label = LABEL if kind == "classification" else st.floats(allow_nan=False, allow_infinity=False)
    records = [{"s1": draw(JSON_TEXT), "s2": draw(JSON_TEXT), "y": draw(label)} for _ in range(n)]
    expected = [(r["s1"], r["s2"], None, None, None, r["y"]) for r in records]
    return {"type": kind, "columns": {"text": "s1", "text_pair": "s2", "label": "y"}}, records, expected


@FEW
@given(case=jsonl_task(), blank=st.lists(st.booleans(), min_size=8, max_size=8), ascii_only=st.booleans())
def test_jsonl_round_trips(case, blank, ascii_only):
    task, records, expected = case
    lines, numbers = [], []
    for record, gap in zip(records, blank, strict=False):
        if gap:
            lines.append("   ")
        lines.append(json.dumps(record, ensure_ascii=ascii_only))
        numbers.append(len(lines))
    examples = read("\n".join(lines) + "\n", {**task, "format": "jsonl"})
    assert [(e.text, e.text_pair, e.question, e.choices, e.tokens, e.label) for e in examples] == expected
    assert [e.line for e in examples] == numbers


SENTENCE = st.lists(st.tuples(WORD, TAG), min_size=1, max_size=6)


@FEW
@given(sentences=st.lists(SENTENCE, min_size=1, max_size=6), tab=st.booleans(), extra=st.integers(0, 2),
       gaps=st.lists(st.integers(1, 3), min_size=6, max_size=6), docstart=st.booleans())
def test_conll_round_trips(sentences, tab, extra, gaps, docstart):
    """Tokens and tags read back, whatever the delimiter, the columns in between and the blank lines."""
    sep = "\t" if tab else " "
    lines = ["-DOCSTART- -X- O", ""] if docstart else []
    starts = []
    for sentence, gap in zip(sentences, gaps, strict=False):
        starts.append(len(lines) + 1)
        lines += [sep.join([token, *["X"] * extra, tag]) for token, tag in sentence]
        lines += [""] * gap
    task = {"type": "sequence_labeling", "format": "conll", "columns": {"tokens": 0, "tags": extra + 1}}
    if tab:
        task["delimiter"] = "\t"
    examples = read("\n".join(lines), task)
    assert [(e.tokens, e.label) for e in examples] == [([t for t, _ in s], [g for _, g in s]) for s in sentences]
    assert [e.line for e in examples] == starts


# ---------------------------------------------------------------- malformed files: UserError, nothing else

TASKS = {
    "tsv": {"type": "classification", "columns": {"text": "sentence", "label": "label"}},
    "tsv-pair-regression": {"type": "regression", "columns": {"text": 0, "text_pair": 1, "label": 2}, "header": False},
    "csv": {"type": "classification", "format": "csv", "columns": {"text": "a", "text_pair": "b", "label": "label"}},
    "jsonl-classification": {"type": "classification", "format": "jsonl", "columns": {"text": "s", "label": "l"}},
    "jsonl-regression": {"type": "regression", "format": "jsonl", "columns": {"text": "s", "label": "l"}},
    "jsonl-choice": {"type": "multiple_choice", "format": "jsonl",
                     "columns": {"text": "s", "choices": ["c1", "c2"], "label": "l"}},
    "jsonl-choice-list": {"type": "multiple_choice", "format": "jsonl",
                          "columns": {"text": "s", "question": "q", "choices": ["c"], "label": "l"}},
    "jsonl-tags": {"type": "sequence_labeling", "format": "jsonl", "columns": {"tokens": "w", "tags": "t"}},
    "conll": {"type": "sequence_labeling", "format": "conll", "columns": {"tokens": 0, "tags": 3}},
    "conll-tab": {"type": "sequence_labeling", "format": "conll", "delimiter": "\t"},
}

WELL_FORMED = {
    "tsv": "sentence\tlabel\ngood film\tpos\nbad film\tneg\n",
    "tsv-pair-regression": "a\tb\t1.5\nc\td\t-2\n",
    "csv": 'a,b,label\n"x, y","z ""q""",pos\nu,v,neg\n',
    "jsonl-classification": '{"s": "good", "l": "pos"}\n{"s": "bad", "l": 1}\n',
    "jsonl-regression": '{"s": "good", "l": 1.5}\n{"s": "bad", "l": "2"}\n',
    "jsonl-choice": '{"s": "rain", "c1": "wet", "c2": "dry", "l": 0}\n{"s": "sun", "c1": "a", "c2": "b", "l": 1}\n',
    "jsonl-choice-list": '{"s": "rain", "q": "effect", "c": ["wet", "dry"], "l": 0}\n'
                         '{"s": "sun", "q": "cause", "c": ["a", "b"], "l": "1"}\n',
    "jsonl-tags": '{"w": ["John", "runs"], "t": ["B-PER", "O"]}\n{"w": ["Paris"], "t": ["B-LOC"]}\n',
    "conll": "-DOCSTART- -X- O O\n\nJohn NNP B-NP B-PER\nruns VBZ B-VP O\n\nParis NNP B-NP B-LOC\n",
    "conll-tab": "John\tB-PER\nruns\tO\n\nParis\tB-LOC\n",
}

STRUCTURE = st.lists(st.sampled_from(list('\t\n\r ,"{}[]:.-0123456789eaxOBI\\') + [
    "sentence", "label", '"s"', '"l"', '"c"', '"w"', '"t"', "B-PER", "I-LOC", "null", "true", "NaN", "1e999",
    "\\ud800", "\\u00e9", "-DOCSTART-", "\u2028", "\x00", "\ufeff"]), max_size=60).map("".join)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from mtbert.modeling.encoder import resolve_backbone

    return AutoTokenizer.from_pretrained(resolve_backbone("minilm"))


def read_and_encode(content: str | bytes, task: dict, tokenizer) -> list[Example] | None:
    """What `mtbert train` does with a train file, up to the features: examples, or None for a UserError."""
    try:
        examples = read(content, task)
        labels = build_labels(task["type"], examples)
        encode(task["type"], examples, tokenizer, 16, labels, "t")
    except UserError as err:
        assert "\n" not in str(err)
        return None
    for ex in examples:  # what a reader returns is what the task type needs
        if task["type"] == "sequence_labeling":
            assert len(ex.tokens) == len(ex.label) and all(isinstance(t, str) for t in ex.tokens + ex.label)
        else:
            assert isinstance(ex.text, str) and ex.text.strip()
        if task["type"] == "regression":
            assert isinstance(ex.label, float) and ex.label == ex.label and abs(ex.label) != float("inf")
        if task["type"] == "multiple_choice":
            assert isinstance(ex.label, int) and 0 <= ex.label < len(ex.choices)
    return examples


@FEW
@given(kind=st.sampled_from(sorted(TASKS)), content=STRUCTURE)
def test_structural_noise_is_read_or_refused(kind, content, tokenizer):
    read_and_encode(content, TASKS[kind], tokenizer)


@FEW
@given(kind=st.sampled_from(sorted(TASKS)), content=st.binary(max_size=120))
def test_random_bytes_are_read_or_refused(kind, content, tokenizer):
    read_and_encode(content, TASKS[kind], tokenizer)


@FEW
@given(kind=st.sampled_from(sorted(TASKS)), data=st.data())
def test_damaged_well_formed_file_is_read_or_refused(kind, data, tokenizer):
    """A well-formed file with a random piece cut out, replaced or put in."""
    text = WELL_FORMED[kind]
    assert read_and_encode(text, TASKS[kind], tokenizer)  # the undamaged file reads
    start = data.draw(st.integers(0, len(text)), label="start")
    end = data.draw(st.integers(start, min(len(text), start + 12)), label="end")
    damaged = text[:start] + data.draw(STRUCTURE.map(lambda s: s[:12]), label="insert") + text[end:]
    read_and_encode(damaged, TASKS[kind], tokenizer)


# ---------------------------------------------------------------- collation

TYPES = ["classification", "regression", "multiple_choice", "sequence_labeling", "separate_pair"]


@st.composite
def batches(draw):
    """(task type, features, pad id): 1-6 features with random ids and lengths, grouped for choices and
    separately encoded pairs."""
    kind = draw(st.sampled_from(TYPES))
    pad = draw(st.integers(0, 5))
    ids = st.lists(st.integers(6, 30000), min_size=1, max_size=12)
    group = {"multiple_choice": draw(st.integers(2, 4)), "separate_pair": 2}.get(kind)
    feats = []
    for _ in range(draw(st.integers(1, 6))):
        if group:
            input_ids = [draw(ids) for _ in range(group)]
            types = [[draw(st.integers(0, 1)) for _ in x] for x in input_ids]
        else:
            input_ids = draw(ids)
            types = [draw(st.integers(0, 1)) for _ in input_ids]
        if kind == "sequence_labeling":
            label = [draw(st.sampled_from([IGNORE, 0, 1, 2, 3])) for _ in input_ids]
        elif kind == "regression":
            label = draw(st.floats(-10, 10, width=32))
        elif kind == "multiple_choice":
            label = draw(st.integers(0, group - 1))
        else:
            label = draw(st.integers(0, 4))
        feats.append(Feature(input_ids, types, label))
    return kind, feats, pad


@FEW
@given(batch=batches(), with_labels=st.booleans())
def test_collate_pads_masks_and_ignores(batch, with_labels):
    kind, feats, pad = batch
    if not with_labels:
        feats = [Feature(f.input_ids, f.token_type_ids, None) for f in feats]
    task_type = "classification" if kind == "separate_pair" else kind
    out = collate(task_type, feats, pad)
    grouped = kind in ("multiple_choice", "separate_pair")
    rows = [(i, j, seq, f.token_type_ids[j]) for i, f in enumerate(feats) for j, seq in enumerate(f.input_ids)] \
        if grouped else [(i, None, f.input_ids, f.token_type_ids) for i, f in enumerate(feats)]
    width = max(len(seq) for _, _, seq, _ in rows)
    shape = (len(feats), len(feats[0].input_ids), width) if grouped else (len(feats), width)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert tuple(out[key].shape) == shape and out[key].dtype == torch.long
    for i, j, seq, types in rows:
        at = (i, j) if grouped else (i,)
        n = len(seq)
        assert out["input_ids"][at].tolist() == seq + [pad] * (width - n)
        assert out["token_type_ids"][at].tolist() == types + [0] * (width - n)
        assert out["attention_mask"][at].tolist() == [1] * n + [0] * (width - n)
    if not with_labels:
        assert "labels" not in out
    elif kind == "sequence_labeling":
        assert tuple(out["labels"].shape) == (len(feats), width) and out["labels"].dtype == torch.long
        for i, f in enumerate(feats):
            assert out["labels"][i].tolist() == f.label + [IGNORE] * (width - len(f.label))
        assert bool((out["labels"][out["attention_mask"] == 0] == IGNORE).all())
    else:
        assert tuple(out["labels"].shape) == (len(feats),)
        assert out["labels"].dtype == (torch.float32 if kind == "regression" else torch.long)
        assert out["labels"].tolist() == pytest.approx([f.label for f in feats])


@FEW
@given(words=st.lists(st.lists(WORD, min_size=1, max_size=8), min_size=1, max_size=5),
       max_length=st.integers(4, 24), data=st.data())
def test_encoded_tags_sit_on_first_sub_tokens(words, max_length, data, tokenizer):
    """encode + collate for sequence labeling: each word that survives truncation has its tag on its first
    sub-token, in order; every other position is -100."""
    labels = ["O", "B-PER", "I-PER"]
    examples = [Example(tokens=w, label=[data.draw(st.sampled_from(labels)) for _ in w]) for w in words]
    feats = encode("sequence_labeling", examples, tokenizer, max_length, labels, "t")
    out = collate("sequence_labeling", feats, tokenizer.pad_token_id)
    for i, (ex, f) in enumerate(zip(examples, feats, strict=True)):
        assert len(f.input_ids) <= max_length
        firsts = [p for p, w in enumerate(f.word_ids) if w is not None and (p == 0 or f.word_ids[p - 1] != w)]
        row = out["labels"][i].tolist()
        assert [p for p, v in enumerate(row) if v != IGNORE] == firsts
        assert [row[p] for p in firsts] == [labels.index(ex.label[f.word_ids[p]]) for p in firsts]
        kept = [f.word_ids[p] for p in firsts]
        assert kept == sorted(set(kept))  # words in order, each once


@st.composite
def lengths(draw):
    return [Feature([1] * n, [0] * n) for n in draw(st.lists(st.integers(1, 40), min_size=1, max_size=120))]


@FEW
@given(feats=lengths(), batch_size=st.integers(1, 16), pool=st.integers(1, 5), group=st.booleans(),
       seed=st.integers(0, 2**16))
def test_length_grouped_batches_yield_every_index_once(feats, batch_size, pool, group, seed):
    batches = length_grouped_batches(feats, batch_size, random.Random(seed), group=group, pool_batches=pool)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(feats)))
    assert len(batches) == -(-len(feats) // batch_size)
    assert sum(len(b) < batch_size for b in batches) <= 1 and all(b for b in batches)
    # deterministic for a seed (resume depends on it)
    assert length_grouped_batches(feats, batch_size, random.Random(seed), group=group, pool_batches=pool) == batches
    if group and batch_size * pool >= len(feats):  # one pool: its length-sorted order, cut into batches
        spans = sorted((min(feats[i].length for i in b), max(feats[i].length for i in b)) for b in batches)
        assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:], strict=False))


@FEW
@given(feats=lengths(), batch_size=st.integers(1, 16))
def test_sorted_batches_yield_every_index_once_by_length(feats, batch_size):
    batches = sorted_batches(feats, batch_size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(feats)))
    assert [feats[i].length for i in flat] == sorted(f.length for f in feats)
    for batch, after in itertools.pairwise(batches):
        # a batch is cut before it is full only where padding it to the next input costs more than a call
        jump = feats[after[0]].length - feats[batch[-1]].length
        assert len(batch) == batch_size or len(batch) * jump > CALL_COST_TOKENS
        assert len(batch) <= batch_size
