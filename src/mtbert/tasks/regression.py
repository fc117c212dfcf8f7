"""Regression: one text (or a text pair) -> a score. One output, mean squared error."""

from __future__ import annotations

import statistics

import numpy as np

from mtbert.data.encoding import encode_texts
from mtbert.data.example import number_field
from mtbert.tasks.base import TaskPredictions, TaskType, registry
from mtbert.tasks.classification import raw_label, read_text_fields


@registry.register("regression")
class Regression(TaskType):
    columns = ("text", "label")
    pair_combines = ("concat", "sbert", "cosine")  # cosine: a score, so regression only
    options = ("output_activation", "bias_init")
    metrics = ("pearson", "spearman")
    default_metrics = ("pearson", "spearman")
    onnx_output = ("batch", "score")
    gaussian = True
    # sic: the minBERT project's spelling
    minbert_headers = {"single": "Predicted_Similiary", "pair": "Predicted_Similiary"}
    hf_classes = {"bert": "BertForSequenceClassification"}
    hf_auto_class = "AutoModelForSequenceClassification"
    hf_problem_type = "regression"

    def row_to_example(self, spec, get):
        ex = read_text_fields(spec, get)
        if spec.columns.label is not None:
            ex.label = number_field(raw_label(get), "a number")
        return ex

    def encode(self, examples, tokenizer, max_length, labels=None, name="", with_labels=True, pair_encoding="cross",
               stride=None, questions=None, all_subtokens=False):
        labels_of = [float(ex.label) for ex in examples] if with_labels else [None] * len(examples)
        return encode_texts(examples, tokenizer, max_length, labels_of, pair_encoding)

    def label_array(self, feats, width):
        return np.asarray([f.label for f in feats], dtype=np.float32)

    def head(self, spec, hidden_size, labels, train_feats=None, name=""):
        from mtbert.modeling.heads import RegressionHead

        # the head's bias starts at the mean training target (see RegressionHead) unless bias_init: default
        mean = None
        if spec.bias_init == "target_mean":
            mean = float(np.mean([f.label for f in train_feats])) if train_feats else 0.0
        top = max((abs(f.label) for f in train_feats or []), default=0.0) or 1.0  # pair_combine cosine's scale
        return RegressionHead(hidden_size, spec.pooling, spec.dropout, spec.pair_encoding == "separate",
                              spec.output_activation == "relu", mean, spec.pair_combine, top,
                              spec.head == "mlp")

    def teacher_target(self, student, teacher, output, order):
        return float(output)

    def decode(self, spec, outputs, word_ids, labels, n_words):
        return TaskPredictions(labels=[float(o) for o in outputs])

    def baseline(self, train, train_feats, dev, labels):
        """The mean training score."""
        return TaskPredictions([float(np.mean([ex.label for ex in train]))] * len(dev))

    def label_summary(self, gold):
        return f"scores {min(gold):g} to {max(gold):g}, mean {statistics.fmean(gold):.3g}"

    def hf_card_note(self, spec):
        return ("The pipeline's `score` is the predicted value (config.json says `problem_type: regression`, so "
                "no sigmoid is applied).")

    def answer(self, label, probas, labels, return_probas):
        return {"score": label}
