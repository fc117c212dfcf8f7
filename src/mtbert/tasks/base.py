"""What a task type is (`TaskType`) and where the types live (`registry`).

A task type holds everything mtbert knows about one kind of task: the columns it reads, how a row or a
request becomes an `Example`, its label vocabulary, how its inputs are tokenised (torch-free), its head,
how the head's outputs become predictions, the gold and predicted values its metrics take, the floor
to beat, the fields a request needs, what its ONNX output holds, and the metrics that score it. Every
other module asks `registry.get(task.type)`; nothing outside mtbert.tasks branches on a type's name.

The registry is spaCy's (catalogue's) shape: `@registry.register("name")` on the class, `registry.get(name)`.
Imports here are light on purpose: the config imports this package, and the torch-free ONNX server
imports the config, so torch (heads) and the metric libraries (sklearn, scipy, seqeval) are imported
inside the methods that need them, never at import time.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mtbert.data.encoding import Feature
from mtbert.data.example import Example
from mtbert.errors import InputError, UserError


@dataclass
class TaskPredictions:
    """Predictions in input order. `labels`: class names, floats, choice indices, tag lists or label lists."""

    labels: list
    # (N, classes) or (N, choices); sequence labeling: per input, per word, its tag probabilities
    # (None for a word the model did not see: no sub-token, or cut by `long_text: truncate`)
    probas: np.ndarray | list | None = None
    ids: np.ndarray | None = None  # class ids (or 0/1 rows per label), for metrics


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def per_label(labels: list[str], p: np.ndarray) -> dict[str, float]:
    """{label: probability}, rounded as answers show them."""
    return dict(zip(labels, np.round(np.asarray(p, dtype=float), 6).tolist(), strict=True))


class TaskType:
    """One kind of task. Subclasses set the class attributes and override what differs from the defaults,
    which are those of a task over one text (or a text pair) with one answer per input."""

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]  # columns a config must map (config.TaskConfig.columns)
    # TaskConfig keys only this type reads: another type's task that sets one is refused at validation
    options: ClassVar[tuple[str, ...]] = ()
    # TaskConfig fields this type adds to the schema: {key: (annotation, pydantic Field or default)}
    fields: ClassVar[dict[str, tuple[Any, Any]]] = {}
    metrics: ClassVar[tuple[str, ...]]  # the metrics that score it (names in mtbert.tasks.metrics)
    default_metrics: ClassVar[tuple[str, ...]]
    label_names: ClassVar[bool] = False  # labels.json names its labels, one model output per label
    one_class_per_row: ClassVar[bool] = False  # a row's label is one class name (a header row would be a class)
    inputs: ClassVar[str] = "text, and text_pair for pair tasks"  # what one request input needs, in words
    onnx_output: ClassVar[tuple[str, str]]  # manifest.json: (shape, what the values are)
    formats: ClassVar[tuple[str, ...]] = ("tsv", "csv", "jsonl", "hf")  # data formats its rows come in
    pair_combines: ClassVar[tuple[str, ...]] = ("concat", "sbert")  # how its head joins separately encoded texts
    reads_words: ClassVar[bool] = False  # its input is pre-split words (predict_all encodes every text so)
    choice_groups: ClassVar[bool] = False  # an input is a group of sequences, one per choice
    premise_check: ClassVar[bool] = False  # `mtbert evaluate --premise-check` applies (evaluation/premise.py)
    single_text: ClassVar[bool] = True  # predict_all may run it on a bare text (unless it reads a pair)
    windows: ClassVar[bool] = False  # reads a text longer than max_length in windows (`long_text`)
    gaussian: ClassVar[bool] = False  # uncertainty weighting: a Gaussian likelihood (0.5 in front of the loss)
    # transformers export (inference/hf_export.py): {encoder family: class}, the Auto class, config.problem_type
    hf_classes: ClassVar[dict[str, str]] = {}
    hf_auto_class: ClassVar[str | None] = None
    hf_problem_type: ClassVar[str | None] = None
    # `mtbert predict --format minbert`: the minBERT project's csv header, for a single text and for a pair
    minbert_headers: ClassVar[dict[str, str]] = {}
    hub_task: ClassVar[str] = "text-classification"  # the Hub's pipeline tag for a model card

    # --- config
    def check(self, spec) -> None:
        """Type-specific validation of a TaskConfig; raise ValueError (the config names the task)."""

    # --- data
    def row_to_example(self, spec, get) -> Example:
        raise NotImplementedError

    def build_labels(self, train: list[Example], given: list[str] | None = None, num_labels: int | None = None,
                     name: str = "") -> list[str] | None:
        """The label vocabulary, from the config's list or from train (None: the type has no classes)."""
        return None

    def encode(self, examples: list[Example], tokenizer, max_length: int, labels: list[str] | None = None,
               name: str = "", with_labels: bool = True, pair_encoding: str = "cross", stride: int | None = None,
               questions: dict[str, str] | None = None, all_subtokens: bool = False) -> list[Feature]:
        raise NotImplementedError

    def label_array(self, feats: list[Feature], width: int) -> np.ndarray:
        """A batch's labels as one array (collate makes it a tensor)."""
        return np.asarray([f.label for f in feats], dtype=np.int64)

    def soft_array(self, feats: list[Feature], width: int) -> np.ndarray:
        return np.asarray([f.soft for f in feats], dtype=np.float32)

    # --- model
    def head(self, spec, hidden_size: int, labels: list[str] | None, train_feats: list[Feature] | None = None,
             name: str = ""):
        """The task's head (torch); `train_feats` gives what training sets from its data (class weights,
        a regression bias), None when a saved head's weights are about to be loaded."""
        raise NotImplementedError

    def teacher_target(self, student: Feature, teacher: Feature, output: np.ndarray, order) -> Any:
        """A teacher model's output for one training feature -> the student's `soft` target; `order` puts
        the teacher's labels in the student's order."""
        return output

    # --- predictions and metrics
    def decode(self, spec, outputs: list[np.ndarray], word_ids, labels: list[str] | None,
               n_words: list[int] | None) -> TaskPredictions:
        """Per-input model outputs (the head's `outputs`) -> predictions."""
        raise NotImplementedError

    def gold(self, examples: list[Example], labels: list[str] | None):
        """The gold values the metrics take."""
        return np.array([ex.label for ex in examples])

    def predicted(self, preds: TaskPredictions, examples: list[Example]):
        return np.array(preds.labels)

    def baseline(self, train: list[Example], train_feats: list[Feature], dev: list[Example],
                 labels: list[str] | None) -> TaskPredictions:
        """The floor to beat, predicted for every dev example without a model."""
        raise NotImplementedError

    def label_summary(self, gold: list) -> str:
        """`mtbert check`'s line on the training labels."""
        from collections import Counter

        return _counts(Counter(gold), "")

    # --- requests and answers
    def input_fields(self, spec) -> list[str]:
        """The fields one input needs, in the order a form would ask for them."""
        return ["text"] + (["text_pair"] if spec.columns.text_pair is not None else [])

    def to_example(self, spec, field) -> Example:
        """One request input -> Example; `field(key, kind=str)` returns a present non-empty value or refuses."""
        ex = Example(text=field("text"))
        if spec.columns.text_pair is not None:
            ex.text_pair = field("text_pair")
        return ex

    def deeppavlov_input(self, spec, item: list | tuple, index: int) -> dict:
        """An input in DeepPavlov's list shape -> mtbert's dict; `index`, its place in the batch, for an InputError."""
        if not all(isinstance(t, str) for t in item) or len(item) != (2 if spec.columns.text_pair is not None else 1):
            shape = "[text, text_pair]" if spec.columns.text_pair is not None else "a string or [text]"
            raise InputError(index, f"expected {shape}")
        return {"text": item[0], "text_pair": item[1]} if len(item) == 2 else {"text": item[0]}

    def answer(self, label, probas, labels: list[str] | None, return_probas: bool) -> dict:
        """One input's answer: `label` and, on request, `probas`."""
        row = {"label": label}
        if return_probas and probas is not None:
            row["probas"] = np.round(np.asarray(probas, dtype=float), 6).tolist()
        return row

    def example_input(self, spec):
        """One input as `mtbert predict` takes it (model cards show it)."""
        if spec.columns.text_pair is not None:
            return {"text": "A man is playing a guitar.", "text_pair": "A man plays the guitar."}
        return "a gripping , funny film"

    def hf_card_note(self, spec) -> str | None:
        """What the card of the task's transformers export says about using it, if anything."""
        return None

    def head_summary(self, spec) -> str:
        """The model card's words for the head."""
        return (f"{spec.pooling} pooling" + (f", pair {spec.pair_encoding}" if spec.columns.text_pair is not None else "")
                + (", bce" if spec.loss == "bce" else "")
                + (f", {spec.output_activation}" if spec.output_activation != "none" else ""))


def _counts(counts, what: str) -> str:
    total = sum(counts.values())
    shown = ", ".join(f"{label} {n} ({n / total:.1%})" for label, n in counts.most_common(12))
    more = f", and {len(counts) - 12} more" if len(counts) > 12 else ""
    return f"{what + ': ' if what else ''}{shown}{more}"


class Registry:
    """Task types by name, in registration order."""

    def __init__(self):
        self._types: dict[str, TaskType] = {}

    def register(self, name: str):
        def add(cls: type[TaskType]) -> type[TaskType]:
            if name in self._types:
                raise ValueError(f"task type '{name}' is registered twice")
            cls.name = name
            self._types[name] = cls()
            return cls

        return add

    def get(self, name) -> TaskType:
        """The type of `name`, or of a TaskConfig (anything with `.type`)."""
        name = getattr(name, "type", name)
        found = self._types.get(name)
        if found is None:
            guess = difflib.get_close_matches(str(name), self._types, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            raise UserError(f"unknown task type '{name}'; {hint}known types: {', '.join(self._types)}")
        return found

    def names(self) -> tuple[str, ...]:
        return tuple(self._types)

    def all(self) -> list[TaskType]:
        return list(self._types.values())

    def __contains__(self, name) -> bool:
        return name in self._types


registry = Registry()
