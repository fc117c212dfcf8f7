"""format: hf reads Hugging Face datasets: hub names online, local files offline (tested here)."""

from __future__ import annotations

import pytest

from mtbert.config import validate
from mtbert.data.readers import read_split
from mtbert.errors import UserError

datasets = pytest.importorskip("datasets")


@pytest.fixture
def parquet_ner(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    feats = Features({"tokens": Sequence(Value("string")),
                      "ner_tags": Sequence(ClassLabel(names=["O", "B-PER", "B-LOC"]))})
    Dataset.from_dict({"tokens": [["John", "lives", "in", "Paris"], ["Mary"]], "ner_tags": [[1, 0, 0, 2], [1]]},
                      features=feats).to_parquet(tmp_path / "train.parquet")
    return tmp_path


def test_local_files_and_class_label_names(parquet_ner):
    cfg = validate({"data_dir": str(parquet_ner), "tasks": {"ner": {
        "type": "sequence_labeling", "format": "hf", "hf_path": "parquet", "train": "train",
        "data_files": {"train": "train.parquet"}, "columns": {"tokens": "tokens", "tags": "ner_tags"}}}})
    examples = read_split(cfg, "ner", "train")
    assert examples[0].tokens == ["John", "lives", "in", "Paris"]
    assert examples[0].label == ["B-PER", "O", "O", "B-LOC"]  # ClassLabel ids mapped back to names


def test_json_lines_classification(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"s": "good", "y": "pos"}\n{"s": "bad", "y": "neg"}\n')
    cfg = validate({"data_dir": str(tmp_path), "tasks": {"t": {
        "type": "classification", "format": "hf", "hf_path": "json", "train": "train",
        "data_files": {"train": "d.jsonl"}, "columns": {"text": "s", "label": "y"}}}})
    assert [(e.text, e.label) for e in read_split(cfg, "t", "train")] == [("good", "pos"), ("bad", "neg")]


def test_unreachable_hub_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = validate({"data_dir": str(tmp_path), "tasks": {"t": {
        "type": "classification", "format": "hf", "hf_path": "no-such-user/no-such-dataset", "train": "train",
        "columns": {"text": "s", "label": "y"}}}})
    with pytest.raises(UserError, match="tasks.t: cannot load dataset 'no-such-user/no-such-dataset'"):
        read_split(cfg, "t", "train")


def test_choice_index_stays_an_index_and_hidden_labels_are_blank(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    feats = Features({"premise": Value("string"), "choice1": Value("string"), "choice2": Value("string"),
                      "label": ClassLabel(names=["choice1", "choice2"])})
    Dataset.from_dict({"premise": ["It rained."], "choice1": ["Wet."], "choice2": ["Dry."], "label": [0]},
                      features=feats).to_parquet(tmp_path / "copa.parquet")
    cfg = validate({"data_dir": str(tmp_path), "tasks": {"copa": {
        "type": "multiple_choice", "format": "hf", "hf_path": "parquet", "train": "train",
        "data_files": {"train": "copa.parquet"},
        "columns": {"text": "premise", "choices": ["choice1", "choice2"], "label": "label"}}}})
    assert read_split(cfg, "copa", "train")[0].label == 0

    glue = Features({"sentence": Value("string"), "label": ClassLabel(names=["unacceptable", "acceptable"])})
    Dataset.from_dict({"sentence": ["a", "b"], "label": [1, -1]}, features=glue).to_parquet(tmp_path / "t.parquet")
    cfg = validate({"data_dir": str(tmp_path), "tasks": {"cola": {
        "type": "classification", "format": "hf", "hf_path": "parquet", "train": "train", "on_bad_rows": "skip",
        "data_files": {"train": "t.parquet"}, "columns": {"text": "sentence", "label": "label"}}}})
    examples = read_split(cfg, "cola", "train")
    assert [e.label for e in examples] == ["acceptable"]  # the -1 row is a blank label, skipped
