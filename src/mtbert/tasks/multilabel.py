"""Multi-label classification: one text (or a text pair) -> any number of labels from a set (topics, emotions,
tags of a question). One sigmoid per label, binary cross-entropy on each (BCEWithLogits); a label is
predicted when its probability reaches the task's `threshold` (default 0.5).

The label column holds the example's labels: a JSON list in JSON Lines or a Hugging Face dataset, or a
string joined by `label_separator` (default ",") in a TSV/CSV cell (`sports,politics`). An example may have
no label (an empty JSON list).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import numpy as np
from pydantic import Field

from mtbert.data.encoding import encode_texts, label_id
from mtbert.data.example import BadRow
from mtbert.errors import UserError
from mtbert.tasks.base import TaskPredictions, TaskType, _counts, per_label, registry
from mtbert.tasks.classification import checked_count, class_label, raw_label, read_text_fields, sorted_labels

THRESHOLD = 0.5
SEPARATOR = ","


@registry.register("multilabel")
class MultiLabel(TaskType):
    columns = ("text", "label")
    options = ("threshold", "label_separator")
    fields = {
        # a label is predicted when its sigmoid probability is at least this
        "threshold": (Annotated[float, Field(gt=0, lt=1)] | None, None),
        # what joins an example's labels in a TSV/CSV cell (JSON lists need none)
        "label_separator": (Annotated[str, Field(min_length=1)] | None, None),
    }
    metrics = ("micro_f1", "macro_f1")
    default_metrics = ("micro_f1", "macro_f1")
    label_names = True
    onnx_output = ("batch, labels", "probability of each label (sigmoid)")
    hf_classes = {"bert": "BertForSequenceClassification"}
    hf_auto_class = "AutoModelForSequenceClassification"
    hf_problem_type = "multi_label_classification"

    def check(self, spec):
        spec.threshold = THRESHOLD if spec.threshold is None else spec.threshold
        spec.label_separator = spec.label_separator or SEPARATOR
        # a quoted CSV cell may hold the delimiter; an unquoted one (TSV's default) may not
        unquoted = (spec.quoting or ("none" if spec.format == "tsv" else "csv")) == "none"
        if unquoted and spec.label_separator == (spec.delimiter or {"tsv": "\t", "csv": ","}.get(spec.format)):
            raise ValueError(f"label_separator {spec.label_separator!r} also separates the columns of the "
                             f"{spec.format} file; use another character, e.g. '|'")

    def row_to_example(self, spec, get):
        ex = read_text_fields(spec, get)
        if spec.columns.label is None:
            return ex
        raw = get("label")
        if isinstance(raw, list):  # JSON: a list of labels, maybe empty
            values = raw
        else:
            values = [v for v in str(raw_label(get)).split(spec.label_separator) if v.strip()]
        if any(isinstance(v, (dict, list)) or v is None or isinstance(v, bool) for v in values):
            bad = next(v for v in values if isinstance(v, (dict, list)) or v is None or isinstance(v, bool))
            raise BadRow(f"label {bad!r} in the label list is not a string or a number")
        ex.label = list(dict.fromkeys(class_label(v) for v in values))  # each label once, in the row's order
        return ex

    def build_labels(self, train, given=None, num_labels=None, name=""):
        if given:
            return list(given)
        labels = sorted_labels({label for ex in train for label in ex.label})
        if not labels:
            raise UserError(f"tasks.{name}: no example of train has a label; list the labels under "
                            f"tasks.{name}.labels or label some examples")
        return checked_count(labels, num_labels, name)

    def encode(self, examples, tokenizer, max_length, labels=None, name="", with_labels=True, pair_encoding="cross",
               stride=None, questions=None, all_subtokens=False):
        label_ids = {label: i for i, label in enumerate(labels or [])}
        labels_of = [None] * len(examples)
        if with_labels:
            labels_of = []
            for ex in examples:
                row = [0.0] * len(label_ids)
                for label in ex.label:
                    row[label_id(ex, label, label_ids, name)] = 1.0
                labels_of.append(row)
        return encode_texts(examples, tokenizer, max_length, labels_of, pair_encoding)

    def label_array(self, feats, width):
        return np.asarray([f.label for f in feats], dtype=np.float32)

    def head(self, spec, hidden_size, labels, train_feats=None, name=""):
        from mtbert.modeling.heads import MultiLabelHead

        return MultiLabelHead(hidden_size, len(labels), spec.pooling, spec.dropout,
                              spec.pair_encoding == "separate", spec.pair_combine, spec.head == "mlp")

    def teacher_target(self, student, teacher, output, order):
        return output[order]

    def decode(self, spec, outputs, word_ids, labels, n_words):
        threshold = getattr(spec, "threshold", None) or THRESHOLD
        probas = np.stack(outputs)
        on = (probas >= threshold).astype(int)
        return TaskPredictions(labels=[[labels[j] for j in np.flatnonzero(row)] for row in on], probas=probas, ids=on)

    def gold(self, examples, labels):
        index = {label: i for i, label in enumerate(labels)}
        gold = np.zeros((len(examples), len(labels)), dtype=int)
        for i, ex in enumerate(examples):
            gold[i, [index[label] for label in ex.label]] = 1
        return gold

    def predicted(self, preds, examples):
        return preds.ids

    def baseline(self, train, train_feats, dev, labels):
        """Each label on where it is on in most training examples (usually none)."""
        share = np.mean([f.label for f in train_feats], axis=0)
        on = (share > 0.5).astype(int)
        probas = np.tile(share, (len(dev), 1))
        return TaskPredictions([[labels[j] for j in np.flatnonzero(on)]] * len(dev), probas,
                               np.tile(on, (len(dev), 1)))

    def label_summary(self, gold):
        sizes = Counter(len(labels) for labels in gold)
        return (_counts(Counter(label for labels in gold for label in labels), "labels")
                + f"; labels per example: {', '.join(f'{k} ({n})' for k, n in sorted(sizes.items()))}")

    def answer(self, label, probas, labels, return_probas):
        row = {"label": label}
        if return_probas and probas is not None:
            row["probas"] = per_label(labels, probas)
        return row

    def example_input(self, spec):
        if spec.columns.text_pair is not None:
            return {"text": "A man is playing a guitar.", "text_pair": "A man plays the guitar."}
        return "the match was delayed by the vote"

    def hf_card_note(self, spec):
        return ("config.json says `problem_type: multi_label_classification`, so the pipeline applies a sigmoid "
                f"to each label; pass `top_k=None` to get them all, and keep those of at least {spec.threshold} "
                "as mtbert does.")

    def head_summary(self, spec):
        return f"{spec.pooling} pooling, a sigmoid per label (threshold {spec.threshold})"
