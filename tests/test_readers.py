"""Readers on slices of the real benchmark files (read in place, or their first lines copied to tmp_path)
and on small broken files: every bad row is a UserError naming file and line."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import unicodedata
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtbert.config import validate
from mtbert.data.features import build_labels, encode
from mtbert.data.readers import Example, read_split
from mtbert.errors import UserError

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"benchmark data not found at {SHARED_DATA}")


def config(data_dir, seed: int = 42, **task):
    return validate({"data_dir": str(data_dir), "seed": seed, "tasks": {"t": task}})


def read(data_dir, split: str = "train", **task) -> list[Example]:
    task.setdefault(split, f"{split}.file")
    return read_split(config(data_dir, **task), "t", split)


def head(src: Path, dst: Path, lines: int) -> Path:
    """Copy the first `lines` lines of a real file, bytes as they are (BOM included)."""
    with open(src, "rb") as f:
        dst.write_bytes(b"".join(f.readline() for _ in range(lines)))
    return dst


def read_error(data_dir, *parts: str, split: str = "train", **task) -> str:
    with pytest.raises(UserError) as info:
        read(data_dir, split, **task)
    msg = str(info.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


CLS = {"type": "classification", "columns": {"text": "sentence", "label": "label"}}


# ---------------------------------------------------------------- real files


def test_cola_headerless_with_index_columns(tmp_path):
    head(SHARED_DATA / "glue/cola/train.tsv", tmp_path / "cola.tsv", 200)
    examples = read(tmp_path, type="classification", train="cola.tsv", header=False, columns={"text": 3, "label": 1})
    assert len(examples) == 200
    first = examples[0]
    assert first.text == "Our friends won't buy this analysis, let alone the next one we propose."
    assert first.label == "1" and first.text_pair is None
    assert (first.line, examples[-1].line) == (1, 200)
    assert {ex.label for ex in examples} == {"0", "1"}
    assert first.source == str((tmp_path / "cola.tsv").resolve())
    # digits as strings name indices too when there is no header
    again = read(tmp_path, type="classification", train="cola.tsv", header=False, columns={"text": "3", "label": "1"})
    assert [(e.text, e.label) for e in again] == [(e.text, e.label) for e in examples]


def test_cola_column_name_without_header_is_an_error(tmp_path):
    head(SHARED_DATA / "glue/cola/train.tsv", tmp_path / "cola.tsv", 5)
    read_error(tmp_path, "tasks.t.columns.text: 'sentence' is a column name", "no header",
               type="classification", train="cola.tsv", header=False, columns={"text": "sentence", "label": 1})


def test_rte_string_labels_whole_dev():
    examples = read(SHARED_DATA, "dev", type="classification", dev="glue/rte/dev.tsv",
                    columns={"text": "sentence1", "text_pair": "sentence2", "label": "label"})
    assert len(examples) == 277
    assert {ex.label for ex in examples} == {"entailment", "not_entailment"}
    first = examples[0]
    assert first.text.startswith("Dana Reeve, the widow of the actor Christopher Reeve")
    assert first.text_pair == "Christopher Reeve had an accident."
    assert first.label == "not_entailment"
    assert (first.line, examples[-1].line) == (2, 278)
    assert build_labels("classification", examples) == ["entailment", "not_entailment"]


def test_mrpc_bom_header_resolves(tmp_path):
    src = SHARED_DATA / "glue/mrpc/dev.tsv"
    assert src.read_bytes()[:3] == b"\xef\xbb\xbf"  # the point of this test
    head(src, tmp_path / "mrpc.tsv", 31)
    examples = read(tmp_path, type="classification", train="mrpc.tsv",
                    columns={"text": "#1 String", "text_pair": "#2 String", "label": "Quality"})
    assert len(examples) == 30
    assert examples[0].label == "1"
    assert examples[0].text == "He said the foodservice pie business doesn't fit the company's long-term growth strategy."
    assert {ex.label for ex in examples} <= {"0", "1"}
    # the header a wrong column name is shown with carries no BOM either
    msg = read_error(tmp_path, "column 'quality' not in", type="classification", train="mrpc.tsv",
                     columns={"text": "#1 String", "label": "quality"})
    assert "(Quality, #1 ID, #2 ID, #1 String, #2 String)" in msg
    assert "\ufeff" not in msg


def test_stsb_float_labels():
    examples = read(SHARED_DATA, "dev", type="regression", dev="glue/stsb/dev.tsv",
                    columns={"text": "sentence1", "text_pair": "sentence2", "label": "score"})
    assert len(examples) == 1500
    assert [ex.label for ex in examples[:2]] == [5.0, 4.75]
    assert all(isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0 for ex in examples)
    assert examples[0].text == "A man with a hard hat is dancing."
    assert examples[0].text_pair == "A man wearing a hard hat is dancing."
    assert build_labels("regression", examples) is None


def test_copa_jsonl_question_and_choices():
    examples = read(SHARED_DATA, "dev", type="multiple_choice", format="jsonl", dev="superglue/copa/val.jsonl",
                    columns={"text": "premise", "question": "question", "choices": ["choice1", "choice2"],
                             "label": "label"})
    assert len(examples) == 100
    first = examples[0]
    assert first.text == "The man turned on the faucet."
    assert first.question == "effect"
    assert first.choices == ["The toilet filled with water.", "Water flowed from the spout."]
    assert first.label == 1 and first.line == 1
    assert {ex.question for ex in examples} == {"cause", "effect"}
    assert {ex.label for ex in examples} == {0, 1}
    assert all(len(ex.choices) == 2 for ex in examples)


CONLL_FIRST = (["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
               ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"])


def test_conll2003_docstart_skipped_tags_column_3(tmp_path):
    head(SHARED_DATA / "conll2003/train.txt", tmp_path / "train.txt", 400)
    examples = read(tmp_path, type="sequence_labeling", format="conll", train="train.txt",
                    columns={"tokens": 0, "tags": 3})
    first = examples[0]
    assert (first.tokens, first.label) == CONLL_FIRST
    assert first.line == 3  # line 1 is -DOCSTART-, line 2 blank
    tokens = [t for ex in examples for t in ex.tokens]
    tags = {t for ex in examples for t in ex.label}
    assert "-DOCSTART-" not in tokens
    assert all(re.fullmatch(r"O|[BI]-(PER|ORG|LOC|MISC)", t) for t in tags)  # no POS or chunk tags
    assert all(len(ex.tokens) == len(ex.label) for ex in examples)
    # the default tags column is the last one: the same here
    default = read(tmp_path, type="sequence_labeling", format="conll", train="train.txt")
    assert [(e.tokens, e.label) for e in default] == [(e.tokens, e.label) for e in examples]
    labels = build_labels("sequence_labeling", examples)
    assert labels[0] == "O" and sorted(labels[1:]) == labels[1:] and set(labels) == tags


def test_conll2003_count_of_sentences_in_slice(tmp_path):
    lines = (SHARED_DATA / "conll2003/train.txt").read_text(encoding="utf-8").splitlines(keepends=True)[:400]
    (tmp_path / "train.txt").write_text("".join(lines), encoding="utf-8")
    sentences, inside = 0, False
    for line in lines:
        word = line.strip()
        if word and not word.startswith("-DOCSTART-"):
            sentences += not inside
            inside = True
        else:
            inside = False
    examples = read(tmp_path, type="sequence_labeling", format="conll", train="train.txt",
                    columns={"tokens": 0, "tags": 3})
    assert len(examples) == sentences


def test_wnut17_tab_separated(tmp_path):
    head(SHARED_DATA / "wnut17/train.conll", tmp_path / "wnut.conll", 300)
    examples = read(tmp_path, type="sequence_labeling", format="conll", train="wnut.conll", delimiter="\t",
                    columns={"tokens": 0, "tags": 1})
    first = examples[0]
    assert first.tokens[:5] == ["@paulwalk", "It", "'s", "the", "view"]
    assert first.line == 1
    assert all(len(ex.tokens) == len(ex.label) for ex in examples)
    tags = {t for ex in examples for t in ex.label}
    assert "O" in tags and all(re.fullmatch(r"O|[BI]-[a-z-]+", t) for t in tags)
    whitespace = read(tmp_path, type="sequence_labeling", format="conll", train="wnut.conll",
                      columns={"tokens": 0, "tags": 1})
    assert [(e.tokens, e.label) for e in whitespace] == [(e.tokens, e.label) for e in examples]


QUORA = {"type": "classification", "format": "csv", "delimiter": "\t", "train": "minbert/quora-train.csv",
         "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "is_duplicate"}}


def test_quora_blank_label_rows_are_an_error_by_default():
    msg = read_error(SHARED_DATA, str(SHARED_DATA / "minbert/quora-train.csv") + " line 3658:",
                     "on_bad_rows: skip", **QUORA)
    assert "\n" not in msg


def test_quora_blank_label_rows_skipped_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="mtbert"):
        examples = read(SHARED_DATA, **QUORA, on_bad_rows="skip")
    assert len(examples) == 16000 - 2
    assert {ex.label for ex in examples} == {"0", "1"}  # 0.0/1.0 normalised
    assert 3658 not in {ex.line for ex in examples} and 11349 not in {ex.line for ex in examples}
    records = [r for r in caplog.records if r.name == "mtbert" and r.levelno == logging.WARNING]
    assert len(records) == 1
    assert "skipped 2 bad row(s)" in records[0].getMessage()
    assert "quora-train.csv" in records[0].getMessage() and "line 3658" in records[0].getMessage()
    assert examples[0].text == "How can I earn money online without investment?"
    # csv quoting: doubled quotes inside a quoted cell are one quote each
    by_line = {ex.line: ex for ex in examples}
    assert by_line[9].text_pair == '"What does it mean to be ""professionally competent""?"'


# ---------------------------------------------------------------- small broken files


def write(tmp_path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_column_not_in_header_lists_header(tmp_path):
    write(tmp_path, "train.file", "sentence\tlabel\na\tb\n")
    msg = read_error(tmp_path, "tasks.t.columns.label: column 'gold' not in", "(sentence, label)",
                     type="classification", columns={"text": "sentence", "label": "gold"})
    assert str((tmp_path / "train.file").resolve()) in msg


def test_column_index_outside_header(tmp_path):
    write(tmp_path, "train.file", "sentence\tlabel\na\tb\n")
    read_error(tmp_path, "tasks.t.columns.label: index 5 is outside the 2 columns",
               type="classification", columns={"text": 0, "label": 5})


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, "train.file", "sentence\tlabel\ngood\tpos\n\nbad film\tneg\textra\nfine\tpos\n")
    msg = read_error(tmp_path, f"{path.resolve()} line 4:", "expected 2 columns, found 3", **CLS)
    assert "tasks.t.on_bad_rows: skip" in msg


def test_skip_bad_rows_keeps_the_rest(tmp_path, caplog):
    write(tmp_path, "train.file", "sentence\tlabel\ngood\tpos\nbad film\tneg\textra\nawful\t\nfine\tpos\n")
    with caplog.at_level(logging.WARNING, logger="mtbert"):
        examples = read(tmp_path, **CLS, on_bad_rows="skip")
    assert [(e.text, e.line) for e in examples] == [("good", 2), ("fine", 5)]
    assert "skipped 2 bad row(s)" in caplog.text and "line 3: expected 2 columns" in caplog.text


def test_csv_quoted_multiline_cell_keeps_physical_line_numbers(tmp_path):
    path = write(tmp_path, "train.file", 'sentence,label\n"two\nlines, one cell",pos\nok,neg\nbad,neg,extra\n')
    with pytest.raises(UserError, match=re.escape(f"{path.resolve()} line 5: expected 2 columns, found 3")):
        read(tmp_path, **CLS, format="csv")
    examples = read(tmp_path, **CLS, format="csv", on_bad_rows="skip")
    assert [(e.text, e.line) for e in examples] == [("two\nlines, one cell", 2), ("ok", 4)]


def test_blank_label(tmp_path):
    write(tmp_path, "train.file", "sentence\tlabel\ngood\tpos\nbad\t  \n")
    read_error(tmp_path, "line 3: blank label", **CLS)


def test_empty_text(tmp_path):
    write(tmp_path, "train.file", "sentence\tlabel\n \tpos\n")
    read_error(tmp_path, "line 2: empty text", **CLS)


def test_unparsable_regression_number(tmp_path):
    write(tmp_path, "train.file", "s1\ts2\tscore\na\tb\t1.5\nc\td\tfour\n")
    read_error(tmp_path, "line 3: label 'four' is not a number", type="regression",
               columns={"text": "s1", "text_pair": "s2", "label": "score"})


def test_regression_labels_are_floats(tmp_path):
    write(tmp_path, "train.file", "s\tscore\na\t1\nb\t-2.5\nc\t3e-1\n")
    examples = read(tmp_path, type="regression", columns={"text": "s", "label": "score"})
    assert [e.label for e in examples] == [1.0, -2.5, 0.3]


def test_invalid_utf8(tmp_path):
    (tmp_path / "train.file").write_bytes(b"sentence\tlabel\ngood\tpos\nbad \xff\xfe film\tneg\n")
    read_error(tmp_path, str((tmp_path / "train.file").resolve()), "not valid UTF-8", **CLS)


def test_invalid_utf8_conll_and_jsonl(tmp_path):
    (tmp_path / "train.file").write_bytes(b"John B-PER\nlives\xff O\n")
    read_error(tmp_path, "not valid UTF-8", type="sequence_labeling", format="conll")
    (tmp_path / "train.file").write_bytes(b'{"s": "caf\xe9", "l": "a"}\n')
    read_error(tmp_path, "not valid UTF-8", type="classification", format="jsonl", columns={"text": "s", "label": "l"})


def test_empty_file(tmp_path):
    write(tmp_path, "train.file", "")
    read_error(tmp_path, "empty file", **CLS)
    write(tmp_path, "train.file", "\n\n")
    read_error(tmp_path, "empty file", **CLS)
    read_error(tmp_path, "no data rows", type="classification", header=False, columns={"text": 0, "label": 1})
    read_error(tmp_path, "no usable examples", type="sequence_labeling", format="conll")


def test_header_only_file(tmp_path):
    path = write(tmp_path, "train.file", "sentence\tlabel\n")
    read_error(tmp_path, f"{path.resolve()}: no usable examples for task t", **CLS)


def test_missing_split_and_missing_file(tmp_path):
    read_error(tmp_path, "tasks.t.train: file not found", **CLS)
    with pytest.raises(UserError, match="tasks.t.dev: no dev file in the config"):
        read_split(config(tmp_path, **CLS, train="x.tsv"), "t", "dev")


def test_path_override(tmp_path):
    write(tmp_path, "other.tsv", "sentence\tlabel\nhello\tpos\n")
    cfg = config(tmp_path, **CLS, train="train.tsv")
    examples = read_split(cfg, "t", "dev", str(tmp_path / "other.tsv"))
    assert [(e.text, e.label) for e in examples] == [("hello", "pos")]


def test_ragged_conll_line(tmp_path):
    path = write(tmp_path, "train.file", "John NNP B-NP B-PER\nlives VBZ B-VP O\n\nMary NNP B-PER\nruns VBZ B-VP O\n")
    read_error(tmp_path, f"{path.resolve()} line 4:", "line 4 has 3 columns", type="sequence_labeling",
               format="conll", columns={"tokens": 0, "tags": 3})


def test_ragged_conll_line_later_in_sentence(tmp_path):
    path = write(tmp_path, "train.file", "John NNP B-NP B-PER\n\nMary NNP B-NP B-PER\nruns VBZ\n")
    read_error(tmp_path, f"{path.resolve()} line 3:", "line 4 has 2 columns", type="sequence_labeling",
               format="conll", columns={"tokens": 0, "tags": 3})


def test_non_iob2_tag(tmp_path):
    write(tmp_path, "train.file", "John\tB-PER\nSmith\tE-PER\n\nMary\tS-PER\n")
    read_error(tmp_path, "line 1:", "line 2: tag 'E-PER' is not IOB2", type="sequence_labeling", format="conll")


def test_conll_skip_bad_sentence(tmp_path, caplog):
    write(tmp_path, "train.file", "John B-PER\nSmith X-PER\n\nMary B-PER\nruns O\n")
    with caplog.at_level(logging.WARNING, logger="mtbert"):
        examples = read(tmp_path, type="sequence_labeling", format="conll", on_bad_rows="skip")
    assert [(e.tokens, e.label, e.line) for e in examples] == [(["Mary", "runs"], ["B-PER", "O"], 4)]
    assert "skipped 1 bad row(s)" in caplog.text


def mc_file(tmp_path, label) -> None:
    rows = [{"p": "it rained", "c1": "wet", "c2": "dry", "y": 0}, {"p": "sun", "c1": "wet", "c2": "dry", "y": label}]
    write(tmp_path, "train.file", "\n".join(json.dumps(r) for r in rows) + "\n")


MC = {"type": "multiple_choice", "format": "jsonl", "columns": {"text": "p", "choices": ["c1", "c2"], "label": "y"}}


@pytest.mark.parametrize("label", [2, -1, "7"])
def test_multiple_choice_label_out_of_range(tmp_path, label):
    mc_file(tmp_path, label)
    read_error(tmp_path, "line 2:", "is not the index of one of the 2 choices", **MC)


def test_multiple_choice_label_not_a_number(tmp_path):
    mc_file(tmp_path, "first")
    read_error(tmp_path, "line 2: label 'first' is not a choice index", **MC)


def test_jsonl_bad_lines(tmp_path):
    write(tmp_path, "train.file", '{"s": "a", "l": "x"}\n{"s": "b", "l": \n')
    read_error(tmp_path, "line 2: not valid JSON", type="classification", format="jsonl",
               columns={"text": "s", "label": "l"})
    write(tmp_path, "train.file", '{"s": "a", "l": "x"}\n["b", "x"]\n')
    read_error(tmp_path, "line 2: expected a JSON object", type="classification", format="jsonl",
               columns={"text": "s", "label": "l"})
    write(tmp_path, "train.file", '{"s": "a", "l": "x"}\n{"s": "b"}\n')
    read_error(tmp_path, "line 2: missing key 'l'", type="classification", format="jsonl",
               columns={"text": "s", "label": "l"})


def test_max_train_examples_deterministic(tmp_path):
    rows = [f"sentence number {i}\t{i % 3}" for i in range(100)]
    write(tmp_path, "train.file", "sentence\tlabel\n" + "\n".join(rows) + "\n")
    write(tmp_path, "dev.file", "sentence\tlabel\n" + "\n".join(rows) + "\n")
    first = read(tmp_path, **CLS, max_train_examples=10)
    second = read(tmp_path, **CLS, max_train_examples=10)
    assert len(first) == 10
    assert [e.line for e in first] == [e.line for e in second]
    assert [e.line for e in first] == sorted(e.line for e in first)  # file order kept
    assert [e.line for e in first] != list(range(2, 12))  # a sample, not the head
    other_seed = read_split(config(tmp_path, seed=7, **CLS, train="train.file", max_train_examples=10), "t", "train")
    assert [e.line for e in other_seed] != [e.line for e in first]
    # only train is subsampled, and a limit above the size keeps everything
    assert len(read(tmp_path, "dev", **CLS, max_train_examples=10)) == 100
    assert len(read(tmp_path, **CLS, max_train_examples=1000)) == 100


def test_float_labels_normalise(tmp_path):
    write(tmp_path, "train.file", "sentence\tlabel\na\t1.0\nb\t0.0\nc\t1\nd\t 0 \ne\t10.0\nf\t0.5\n")
    examples = read(tmp_path, **CLS)
    assert [e.label for e in examples] == ["1", "0", "1", "0", "10", "0.5"]
    assert build_labels("classification", examples) == ["0", "0.5", "1", "10"]


# ---------------------------------------------------------------- silently misread before (issue 14)

HEADERLESS = {"type": "classification", "header": False, "columns": {"text": 0, "label": 1}}


def test_header_false_on_a_file_with_a_header(tmp_path):
    """The header's label cell would become a class of one example: refused, with both fixes."""
    write(tmp_path, "train.file", "sentence\tlabel\ngood\t1\nbad\t0\n")
    read_error(tmp_path, "train.file line 1: label 'label' of task t occurs only on this first line and every "
               "other label is a number", "set header: true", "list the classes under tasks.t.labels", **HEADERLESS)
    write(tmp_path, "train.file", "sentence\tlabel\ngood\tpos\nbad\tneg\nfine\tpos\nawful\tneg\n")
    read_error(tmp_path, "every other class has two examples or more", **HEADERLESS)
    # the same file with its header read as one reads fine
    assert [e.label for e in read(tmp_path, **{**HEADERLESS, "header": True})] == ["pos", "neg", "pos", "neg"]
    # a class really seen once on line 1 is kept when the classes are listed
    kept = read(tmp_path, **HEADERLESS, labels=["label", "pos", "neg"])
    assert [e.label for e in kept] == ["label", "pos", "neg", "pos", "neg"]
    # dev files are small: a one-example class there is no sign of a header
    write(tmp_path, "dev.file", (tmp_path / "train.file").read_text())
    assert len(read(tmp_path, "dev", **HEADERLESS)) == 5


def test_header_false_on_headerless_files_reads_every_row(tmp_path):
    write(tmp_path, "train.file", "good\tpos\nbad\tneg\n")  # every class once
    assert [e.label for e in read(tmp_path, **HEADERLESS)] == ["pos", "neg"]
    write(tmp_path, "train.file", "good\t1\nbad\t0\nfine\t1\n")
    assert [e.label for e in read(tmp_path, **HEADERLESS)] == ["1", "0", "1"]
    write(tmp_path, "train.file", "odd\tx\ngood\tpos\nbad\tneg\nfine\tpos\n")  # 'neg' is seen once too
    assert [e.label for e in read(tmp_path, **HEADERLESS)] == ["x", "pos", "neg", "pos"]


def test_header_false_regression_first_row_says_header(tmp_path):
    write(tmp_path, "train.file", "s1\tscore\na\t1.5\n")
    read_error(tmp_path, "line 1: label 'score' is not a number (task t; if line 1 is a header, set "
               "tasks.t.header: true; otherwise fix the row", type="regression", header=False,
               columns={"text": 0, "label": 1})


NER_SPACE = "John NNP B-NP B-PER\nNew York NNP B-NP B-LOC\n\n"


@pytest.mark.parametrize("tags", [3, -1])
def test_conll_token_with_a_space_shifts_no_column(tmp_path, tags):
    """Split on whitespace, 'New York' makes five columns: column 3 would be the chunk tag B-NP (valid IOB2)."""
    write(tmp_path, "train.file", NER_SPACE)
    read_error(tmp_path, "line 1: line 2 has 5 columns but line 1 has 4; a token or tag with a space? separate "
               "the columns with tabs", type="sequence_labeling", format="conll", columns={"tokens": 0, "tags": tags})


def test_conll_tab_separated_keeps_tokens_with_spaces(tmp_path):
    write(tmp_path, "train.file", "John\tNNP\tB-NP\tB-PER\nNew York\tNNP\tB-NP\tB-LOC\n\n")
    for delimiter in (None, "\t"):  # found from the first line, or said in the config
        [ex] = read(tmp_path, type="sequence_labeling", format="conll", delimiter=delimiter,
                    columns={"tokens": 0, "tags": 3})
        assert (ex.tokens, ex.label) == (["John", "New York"], ["B-PER", "B-LOC"])


MC_JSON = {"type": "multiple_choice", "format": "jsonl", "columns": {"text": "p", "choices": ["c"], "label": "y"}}
STS_JSON = {"type": "regression", "format": "jsonl", "columns": {"text": "a", "label": "y"}}
CLS_JSON = {"type": "classification", "format": "jsonl", "columns": {"text": "a", "label": "y"}}


def test_json_boolean_is_no_number(tmp_path):
    write(tmp_path, "train.file", '{"a": "x", "y": true}\n')
    read_error(tmp_path, "line 1: label true is a JSON boolean, not a number", **STS_JSON)
    write(tmp_path, "train.file", '{"p": "x", "c": ["a", "b"], "y": true}\n')
    read_error(tmp_path, "line 1: label true is a JSON boolean, not a choice index", **MC_JSON)
    # a class may be a boolean (BoolQ): True/False, as Hugging Face's ClassLabel names them
    write(tmp_path, "train.file", '{"a": "x", "y": true}\n{"a": "z", "y": false}\n')
    assert [e.label for e in read(tmp_path, **CLS_JSON)] == ["True", "False"]
    write(tmp_path, "train.file", '{"a": "x", "y": ["pos"]}\n')
    read_error(tmp_path, "label ['pos'] is a JSON list; a class label is a string or a number", **CLS_JSON)


@pytest.mark.parametrize("cell", ["1_000", "\u0661", "0x10", "1,5", "infinity"])
def test_regression_label_only_plain_numbers(tmp_path, cell):
    """float() takes '1_000', Arabic-Indic digits and 'infinity': typos in a data file, refused."""
    write(tmp_path, "train.file", f"s\tscore\na\t{cell}\n")
    read_error(tmp_path, f"line 2: label '{cell}' is not a", type="regression", columns={"text": "s", "label": "score"})


def test_regression_label_number_forms(tmp_path):
    write(tmp_path, "train.file", "s\tscore\na\t 1.5 \nb\t-2\nc\t+.5\nd\t1e-3\ne\t3.\n")
    examples = read(tmp_path, type="regression", columns={"text": "s", "label": "score"})
    assert [e.label for e in examples] == [1.5, -2.0, 0.5, 0.001, 3.0]


@pytest.mark.parametrize("value, kind", [('{"x": 1}', "a JSON object"), ("[1, 2]", "a JSON list"),
                                         ("true", "a JSON boolean"), ("3", "a JSON number")])
def test_json_text_must_be_a_string(tmp_path, value, kind):
    write(tmp_path, "train.file", f'{{"a": {value}, "y": "pos"}}\n')
    read_error(tmp_path, f"line 1: text is {kind}, not a string; write the text as a JSON string", **CLS_JSON)


def test_choices_string_and_single_choice(tmp_path):
    write(tmp_path, "train.file", '{"p": "x", "c": "ab", "y": 0}\n')
    read_error(tmp_path, "line 1: 1 choice(s) ('ab'); a multiple-choice example needs at least 2", **MC_JSON)
    write(tmp_path, "train.file", '{"p": "x", "c": [], "y": 0}\n')
    read_error(tmp_path, "line 1: 0 choice(s); a multiple-choice example needs at least 2", **MC_JSON)
    write(tmp_path, "train.file", '{"p": "x", "c": ["a", {"b": 1}], "y": 0}\n')
    read_error(tmp_path, "line 1: choice is a JSON object, not a string", **MC_JSON)


@pytest.mark.parametrize("text", ["\u200b", "\u200b\u200d\ufeff", "\x01\x02", "\u200b\u00a0\u2028"])
def test_text_of_invisible_characters_refused(tmp_path, text):
    write(tmp_path, "train.file", json.dumps({"a": text, "y": "pos"}) + "\n")
    read_error(tmp_path, "line 1: text", "has no visible character", **CLS_JSON)


def test_text_with_a_visible_character_kept(tmp_path):
    write(tmp_path, "train.file", json.dumps({"a": "\u200bok\u200d", "y": "pos"}) + "\n")
    assert read(tmp_path, **CLS_JSON)[0].text == "\u200bok\u200d"


def test_duplicate_header_name_named_by_the_config(tmp_path):
    write(tmp_path, "train.file", "sentence\tsentence\tlabel\tx\tx\na\tb\tpos\t1\t2\n")
    read_error(tmp_path, "tasks.t.columns.text: column 'sentence' appears 2 times in the", "(columns 0, 1); rename "
               "one, or give a 0-based column index", **CLS)
    # an index picks one; a duplicate name no column uses ('x') is harmless
    [ex] = read(tmp_path, type="classification", columns={"text": 1, "label": "label"})
    assert (ex.text, ex.label) == ("b", "pos")


def test_jsonl_duplicate_key(tmp_path):
    write(tmp_path, "train.file", '{"a": "x", "y": "pos", "y": "neg"}\n')
    read_error(tmp_path, "line 1: key 'y' appears twice in one object; keep one", **CLS_JSON)


# ---------------------------------------------------------------- label vocabularies and encoding


def ex(label) -> Example:
    return Example(text="x", label=label)


def test_build_labels_numeric_sort():
    labels = build_labels("classification", [ex(x) for x in ["10", "2", "1", "0", "2", "-1"]])
    assert labels == ["-1", "0", "1", "2", "10"]
    assert build_labels("classification", [ex(x) for x in ["b", "10", "a", "9"]]) == ["9", "10", "a", "b"]


def test_build_labels_tags_o_first():
    train = [Example(tokens=["a", "b", "c"], label=["B-PER", "I-PER", "O"]),
             Example(tokens=["d", "e"], label=["B-LOC", "O"])]
    assert build_labels("sequence_labeling", train) == ["O", "B-LOC", "B-PER", "I-PER"]


def test_build_labels_given_and_num_labels():
    train = [ex("a"), ex("b")]
    assert build_labels("classification", train, given=["b", "a", "c"]) == ["b", "a", "c"]
    assert build_labels("classification", train, num_labels=2) == ["a", "b"]
    with pytest.raises(UserError, match="tasks.t.num_labels: 3 given but train has 2 labels"):
        build_labels("classification", train, num_labels=3, name="t")
    assert build_labels("multiple_choice", train) is None


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


def test_dev_label_unseen_in_train(tmp_path, tokenizer):
    write(tmp_path, "train.file", "sentence\tlabel\ngood\tpos\nbad\tneg\n")
    dev = write(tmp_path, "dev.file", "sentence\tlabel\nfine\tpos\nmeh\tneutral\n")
    cfg = config(tmp_path, **CLS, train="train.file", dev="dev.file")
    labels = build_labels("classification", read_split(cfg, "t", "train"))
    feats = encode("classification", read_split(cfg, "t", "train"), tokenizer, 16, labels, "t")
    assert [f.label for f in feats] == [labels.index("pos"), labels.index("neg")]
    with pytest.raises(UserError) as info:
        encode("classification", read_split(cfg, "t", "dev"), tokenizer, 16, labels, "t")
    msg = str(info.value)
    assert f"{dev.resolve()} line 3:" in msg and "label 'neutral' of task t was not seen in train" in msg


def test_dev_tag_unseen_in_train(tmp_path, tokenizer):
    write(tmp_path, "train.file", "John B-PER\nruns O\n")
    dev = write(tmp_path, "dev.file", "Paris B-LOC\n\nMary B-MISC\n")
    cfg = config(tmp_path, type="sequence_labeling", format="conll", train="train.file", dev="dev.file")
    labels = build_labels("sequence_labeling", read_split(cfg, "t", "train"))
    with pytest.raises(UserError, match=re.escape(f"{dev.resolve()} line 1: label 'B-LOC' of task t")):
        encode("sequence_labeling", read_split(cfg, "t", "dev"), tokenizer, 16, labels, "t")


# ---------------------------------------------------------------- properties

TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30).filter(
    lambda t: any(unicodedata.category(c)[0] not in "CZ" for c in t))  # a text of only invisible characters is refused
# labels are stripped and 1.0 is read as 1 (both documented), so generate labels those rules leave alone
LABEL = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12).map(str.strip).filter(
    lambda s: s and not re.fullmatch(r"-?\d+\.0", s))
ROWS = st.lists(st.tuples(TEXT, TEXT, LABEL), min_size=1, max_size=15)
PAIR = {"type": "classification", "train": "train.tsv", "columns": {"text": "a", "text_pair": "b", "label": "label"}}


def _read_text(content: str) -> list[Example]:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "train.tsv").write_text(content, encoding="utf-8", newline="")
        return read_split(config(d, **PAIR), "t", "train")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS)
def test_wellformed_tsv_round_trips(rows):
    content = "a\tb\tlabel\n" + "".join(f"{a}\t{b}\t{label}\n" for a, b, label in rows)
    examples = _read_text(content)
    assert [(e.text, e.text_pair, e.label) for e in examples] == rows
    assert [e.line for e in examples] == list(range(2, len(rows) + 2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, data=st.data())
def test_wrong_column_count_is_a_user_error(rows, data):
    lines = [["a", "b", "label"]] + [list(r) for r in rows]
    i = data.draw(st.integers(0, len(lines) - 1), label="row")
    if data.draw(st.booleans(), label="drop"):
        lines[i] = lines[i][:data.draw(st.integers(1, 2), label="keep")]
    else:
        lines[i] = lines[i] + data.draw(st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs"))),
                                                 min_size=1, max_size=3), label="extra")
    content = "".join("\t".join(cells) + "\n" for cells in lines)
    with pytest.raises(UserError) as info:
        _read_text(content)
    msg = str(info.value)
    assert "train.tsv" in msg
    if i > 0 and len(lines[0]) == 3:
        assert f"line {i + 1}: expected 3 columns, found {len(lines[i])}" in msg


def test_header_cell_with_a_line_break_keeps_the_message_one_line(tmp_path):
    """Found by the fuzz: a quoted CSV header cell holding a line break split the error in two."""
    write(tmp_path, "train.file", '"sen\ntence",label\na,pos\n')
    msg = read_error(tmp_path, "column 'sentence' not in", "('sen\\ntence', label)", type="classification",
                     format="csv", columns={"text": "sentence", "label": "label"})
    assert "\n" not in msg
