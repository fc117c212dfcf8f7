"""Sequence labeling: words -> one IOB2 tag per word (NER). The tag sits on each word's first sub-token
(on all of them with `label_all_subtokens`); a text longer than max_length is read in windows
(`long_text: window`, data/windows.py) or cut (`truncate`)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from mtbert.data.encoding import IGNORE, encode_words
from mtbert.data.example import BadRow, Example, word_field
from mtbert.errors import InputError
from mtbert.tasks.base import TaskPredictions, TaskType, _counts, per_label, registry, softmax
from mtbert.tasks.classification import sorted_labels


def tag_words(outputs: list[np.ndarray], word_ids: list[list[int | None]], n_words: list[int],
              labels: list[str]) -> TaskPredictions:
    """Per-sub-token logits -> one tag per word, from the word's first sub-token. A word the model did
    not see (no sub-token: a zero-width character, an empty token; or cut by max_length) is 'O' in its
    own place, so no tag moves onto another word."""
    tags, probas = [], []
    for out, ids, n in zip(outputs, word_ids, n_words, strict=True):
        first: dict[int, int] = {}
        for pos, w in enumerate(ids):
            if w is not None:
                first.setdefault(w, pos)
        seen = sorted(w for w in first if w < n)
        p = softmax(np.asarray(out, dtype=np.float32)[[first[w] for w in seen]]) if seen else np.zeros((0, len(labels)))
        word_p: list = [None] * n
        for w, row in zip(seen, p, strict=True):
            word_p[w] = row
        tags.append([labels[int(row.argmax())] if row is not None else "O" for row in word_p])
        probas.append(word_p)
    return TaskPredictions(labels=tags, probas=probas)


@registry.register("sequence_labeling")
class SequenceLabeling(TaskType):
    columns = ("tokens", "tags")
    options = ("label_all_subtokens", "long_text", "window_stride")
    metrics = ("ner_f1",)
    default_metrics = ("ner_f1",)
    label_names = True
    inputs = "tokens (a list of words) or text (split on spaces)"
    onnx_output = ("batch, sequence, labels", "logits per sub-token")
    windows = True
    reads_words = True
    hf_classes = {"bert": "BertForTokenClassification", "roberta": "RobertaForTokenClassification",
                  "electra": "ElectraForTokenClassification", "distilbert": "DistilBertForTokenClassification",
                  "deberta-v2": "DebertaV2ForTokenClassification"}
    formats = ("tsv", "csv", "jsonl", "conll", "hf")
    hf_auto_class = "AutoModelForTokenClassification"
    hub_task = "token-classification"

    def check(self, spec):
        if spec.long_text is None:
            spec.long_text = "window"

    def row_to_example(self, spec, get):
        tokens, tags = get("tokens"), get("tags")
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise BadRow("tokens and tags must be lists of the same length")
        return Example(tokens=[word_field(t, "token") for t in tokens], label=[word_field(t, "tag") for t in tags])

    def build_labels(self, train, given=None, num_labels=None, name=""):
        if given:
            return list(given)
        labels = sorted_labels({tag for ex in train for tag in ex.label})
        if "O" in labels:
            labels.remove("O")
            labels.insert(0, "O")
        return labels

    def encode(self, examples, tokenizer, max_length, labels=None, name="", with_labels=True, pair_encoding="cross",
               stride=None, questions=None, all_subtokens=False):
        label_ids = {label: i for i, label in enumerate(labels or [])} if with_labels else None
        return encode_words(examples, tokenizer, max_length, label_ids, name, stride, all_subtokens)

    def label_array(self, feats, width):
        return np.asarray([f.label + [IGNORE] * (width - len(f.label)) for f in feats], dtype=np.int64)

    def soft_array(self, feats, width):
        soft = np.zeros((len(feats), width, feats[0].soft.shape[-1]), dtype=np.float32)
        for i, f in enumerate(feats):
            soft[i, :len(f.soft)] = f.soft
        return soft

    def head(self, spec, hidden_size, labels, train_feats=None, name=""):
        from mtbert.modeling.heads import SequenceLabelingHead

        # training divides the loss by the mean labelled tokens per example (see SequenceLabelingHead)
        per_example = (float(np.mean([sum(t != IGNORE for t in f.label) for f in train_feats]))
                       if train_feats else None)
        return SequenceLabelingHead(hidden_size, len(labels), spec.dropout, per_example, spec.head == "mlp")

    def teacher_target(self, student, teacher, output, order):
        """Per student sub-token: the teacher's tag distribution for that word where the gold tag sits."""
        n_labels = len(order)
        probas = softmax(np.asarray(output[:, order]))
        word_probas, prev = {}, None
        for pos, w in enumerate(teacher.word_ids):
            if w is not None and w != prev:
                word_probas[w] = probas[pos]
            prev = w
        soft = np.zeros((len(student.input_ids), n_labels), dtype=np.float32)
        for pos, (w, gold) in enumerate(zip(student.word_ids, student.label, strict=True)):
            if gold != IGNORE:
                soft[pos] = word_probas[w] if w in word_probas else np.eye(n_labels, dtype=np.float32)[gold]
        return soft

    def decode(self, spec, outputs, word_ids, labels, n_words):
        return tag_words(outputs, word_ids, n_words, labels)

    def gold(self, examples, labels):
        return [ex.label for ex in examples]

    def predicted(self, preds, examples):
        return preds.labels  # one tag per word, as predict gives them (words cut by truncation are 'O')

    def baseline(self, train, train_feats, dev, labels):
        """Every word 'O'."""
        return TaskPredictions([["O"] * len(ex.tokens) for ex in dev])

    def label_summary(self, gold):
        return _counts(Counter(tag for tags in gold for tag in tags), "tags")

    def input_fields(self, spec):
        return ["text"]

    def to_example(self, spec, field):
        item = field.item
        tokens = item.get("tokens") if "tokens" in item else field("text").split()
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise InputError(field.index, f"task {field.task} needs tokens as a non-empty list of strings")
        return Example(tokens=tokens)

    def deeppavlov_input(self, spec, item, index):
        if not all(isinstance(t, str) for t in item):
            raise InputError(index, "expected the words as a list of strings")
        return {"tokens": list(item)}

    def answer(self, label, probas, labels, return_probas):
        row = {"label": label}
        if return_probas:
            row["probas"] = [None if p is None else per_label(labels, p) for p in probas]
        return row

    def example_input(self, spec):
        return "John lives in Paris"

    def head_summary(self, spec):
        return "token tags"
