"""Classification: one text (or a text pair) -> one of a set of classes. Softmax over the classes, or with
`loss: bce` one logit and a sigmoid for two classes."""

from __future__ import annotations

import re

import numpy as np

from mtbert.data.encoding import encode_texts, label_id
from mtbert.data.example import BadRow, Example, json_kind, short, text_field
from mtbert.errors import UserError
from mtbert.tasks.base import TaskPredictions, TaskType, per_label, registry


def _sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def sorted_labels(seen) -> list[str]:
    """Numeric labels sort as numbers ('0' < '1' < '10'), so index i is label i in GLUE-style files."""
    return sorted(seen, key=_sort_key)


def class_label(raw) -> str:
    """A label cell or JSON value as a class name."""
    if isinstance(raw, (dict, list)):
        raise BadRow(f"label {short(raw)} is {json_kind(raw)}; a class label is a string or a number")
    # 1.0 and 1 are the same class (the minBERT Quora file writes 0.0/1.0); JSON true/false are the
    # classes 'True'/'False', as Hugging Face's ClassLabel names them (BoolQ)
    label = str(raw).strip()
    return label[:-2] if re.fullmatch(r"-?\d+\.0", label) else label


def read_text_fields(spec, get) -> Example:
    """The text (and text_pair, and id) of a row, as every text task reads them."""
    ex = Example(text=text_field(get("text"), "text"))
    if spec.columns.text_pair is not None:
        ex.text_pair = text_field(get("text_pair"), "text_pair")
    if spec.columns.id is not None:
        ex.id = str(get("id")).strip()
    return ex


def raw_label(get):
    """The row's label value, or None for an unlabeled input (no label column)."""
    value = get("label")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRow("blank label")
    return value


def checked_count(labels: list[str], num_labels: int | None, name: str) -> list[str]:
    """The labels train shows, refused when the config's num_labels says another number."""
    if num_labels is not None and len(labels) != num_labels:
        raise UserError(f"tasks.{name}.num_labels: {num_labels} given but train has {len(labels)} labels "
                        f"({', '.join(labels[:20])}); fix num_labels or list them under labels:")
    return labels


@registry.register("classification")
class Classification(TaskType):
    columns = ("text", "label")
    options = ("loss",)
    metrics = ("accuracy", "f1", "f1_macro", "mcc", "roc_auc")
    default_metrics = ("accuracy",)
    label_names = True
    one_class_per_row = True
    onnx_output = ("batch, labels", "probabilities")
    minbert_headers = {"single": "Predicted_Sentiment", "pair": "Predicted_Is_Paraphrase"}
    hf_classes = {"bert": "BertForSequenceClassification"}
    hf_auto_class = "AutoModelForSequenceClassification"

    def row_to_example(self, spec, get):
        ex = read_text_fields(spec, get)
        if spec.columns.label is not None:
            ex.label = class_label(raw_label(get))
        return ex

    def build_labels(self, train, given=None, num_labels=None, name=""):
        if given:
            return list(given)
        labels = sorted_labels({ex.label for ex in train})
        return checked_count(labels, num_labels, name)

    def encode(self, examples, tokenizer, max_length, labels=None, name="", with_labels=True, pair_encoding="cross",
               stride=None, questions=None, all_subtokens=False):
        label_ids = {label: i for i, label in enumerate(labels or [])}
        labels_of = ([label_id(ex, ex.label, label_ids, name) for ex in examples] if with_labels
                     else [None] * len(examples))
        return encode_texts(examples, tokenizer, max_length, labels_of, pair_encoding)

    def class_weights(self, spec, labels, train_feats, name: str) -> list[float] | None:
        weights = spec.class_weights
        if weights is None or train_feats is None:
            return None
        if weights == "balanced":
            counts = np.bincount([f.label for f in train_feats], minlength=len(labels)).astype(float)
            return (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()
        if len(weights) != len(labels):
            raise UserError(f"tasks.{name}.class_weights: {len(weights)} weights for {len(labels)} labels "
                            f"({', '.join(labels)})")
        return list(weights)

    def head(self, spec, hidden_size, labels, train_feats=None, name=""):
        from mtbert.modeling.heads import ClassificationHead

        return ClassificationHead(hidden_size, len(labels), spec.pooling, spec.dropout,
                                  self.class_weights(spec, labels, train_feats, name), spec.pair_encoding == "separate",
                                  spec.loss == "bce", spec.pair_combine, spec.head == "mlp")

    def teacher_target(self, student, teacher, output, order):
        return output[order]

    def decode(self, spec, outputs, word_ids, labels, n_words):
        probas = np.stack(outputs)
        ids = probas.argmax(-1)
        return TaskPredictions(labels=[labels[i] for i in ids], probas=probas, ids=ids)

    def gold(self, examples, labels):
        index = {label: i for i, label in enumerate(labels)}
        return np.array([index[ex.label] for ex in examples])

    def predicted(self, preds, examples):
        return preds.ids

    def baseline(self, train, train_feats, dev, labels):
        """The majority class of train."""
        n = len(dev)
        majority = int(np.bincount([f.label for f in train_feats], minlength=len(labels)).argmax())
        probas = np.zeros((n, len(labels)))
        probas[:, majority] = 1.0
        return TaskPredictions([labels[majority]] * n, probas, np.full(n, majority))

    def answer(self, label, probas, labels, return_probas):
        row = {"label": label}
        if return_probas and probas is not None:
            row["probas"] = per_label(labels, probas)
        return row

