"""Predictor: a trained run dir -> labels (and probabilities) for new inputs, from Python or the CLI."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from mtbert.data.features import encode
from mtbert.data.readers import Example
from mtbert.errors import UserError
from mtbert.evaluation.evaluate import TaskPredictions, predict_task, predict_tasks
from mtbert.modeling.precision import autocast, resolve_precision
from mtbert.rundir import load_model

INPUT_FIELDS = {
    "classification": "text, and text_pair for pair tasks",
    "regression": "text, and text_pair for pair tasks",
    "multiple_choice": "text, choices (a list) and, if trained with one, question",
    "sequence_labeling": "tokens (a list of words) or text (split on spaces)",
}


class Predictor:
    def __init__(self, run_dir: str | Path, precision: str = "auto", batch_size: int = 64,
                 backbone_impl: str | None = None):
        self.cfg, self.model, self.tokenizer, self.labels = load_model(run_dir, backbone_impl)
        self.batch_size = batch_size
        self.amp = partial(autocast, resolve_precision(precision, torch.device("cpu")), torch.device("cpu"))

    @property
    def tasks(self) -> dict[str, str]:
        return {name: task.type for name, task in self.cfg.tasks.items()}

    def _task(self, task: str):
        if task not in self.cfg.tasks:
            raise UserError(f"unknown task '{task}'; this model has: {', '.join(self.cfg.tasks)}")
        return self.cfg.tasks[task]

    def _example(self, task: str, item, i: int) -> Example:
        spec = self._task(task)
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise UserError(f"input {i}: expected a JSON object or string, got {type(item).__name__}")

        def field(key, kind=str):
            value = item.get(key)
            if not isinstance(value, kind) or not value:
                raise UserError(f"input {i}: task {task} ({spec.type}) needs {INPUT_FIELDS[spec.type]}; "
                                f"'{key}' is missing or not a {kind.__name__}")
            return value

        if spec.type == "sequence_labeling":
            tokens = item.get("tokens") if "tokens" in item else field("text").split()
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
                raise UserError(f"input {i}: task {task} needs tokens as a non-empty list of strings")
            return Example(tokens=tokens)
        ex = Example(text=field("text"))
        if spec.columns.text_pair is not None:
            ex.text_pair = field("text_pair")
        if spec.type == "multiple_choice":
            ex.choices = [str(c) for c in field("choices", list)]
            if spec.columns.question is not None:
                ex.question = field("question")
        return ex

    def predict_raw(self, task: str, inputs: list) -> TaskPredictions:
        spec = self._task(task)
        examples = [self._example(task, item, i) for i, item in enumerate(inputs, 1)]
        if not examples:
            return TaskPredictions(labels=[])
        feats = encode(spec.type, examples, self.tokenizer, self.cfg.max_length_for(task), self.labels.get(task),
                       task, with_labels=False, pair_encoding=spec.pair_encoding)
        return predict_task(self.model, task, feats, self.batch_size, self.tokenizer.pad_token_id or 0,
                            self.labels.get(task), self.amp)

    def predict(self, task: str, inputs: list, return_probas: bool = False) -> list[dict]:
        """One dict per input: `label` (class, choice index or tag list) or `score`; `probas` on request."""
        return self._results(task, self.predict_raw(task, inputs), return_probas)

    def single_text_tasks(self) -> list[str]:
        """Tasks that read one text: single-text classification and regression, and sequence labeling."""
        return [n for n, t in self.cfg.tasks.items()
                if t.type == "sequence_labeling" or (t.type in ("classification", "regression") and t.columns.text_pair is None)]

    def predict_all(self, texts: list[str], tasks: list[str] | None = None,
                    return_probas: bool = False) -> list[dict[str, dict]]:
        """Every single-text head (or those in `tasks`) on each text, from one encoder pass per batch.

        The text is split on whitespace into words, which gives the sequence-labeling heads their word
        alignment and the sentence heads the same sub-tokens as plain tokenisation (BERT's pre-tokenizer
        splits on whitespace first), so the answers equal the per-task path."""
        shared = self.single_text_tasks()
        tasks = list(tasks) if tasks else shared
        for t in tasks:
            self._task(t)
            if t not in shared:
                raise UserError(f"task {t} does not take a single text; predict it with its own inputs "
                                f"(tasks answering a text: {', '.join(shared)})")
        if not tasks:
            raise UserError("this model has no task that takes a single text")
        examples = []
        for i, text in enumerate(texts, 1):
            if isinstance(text, dict):
                text = text.get("text")
            if not isinstance(text, str) or not text.split():
                raise UserError(f"input {i}: expected a non-empty text")
            examples.append(Example(tokens=text.split()))
        if not examples:
            return []
        max_length = max(self.cfg.max_length_for(t) for t in tasks)
        feats = encode("sequence_labeling", examples, self.tokenizer, max_length, with_labels=False)
        preds = predict_tasks(self.model, tasks, feats, self.batch_size, self.tokenizer.pad_token_id or 0,
                              self.labels, self.amp)
        per_task = {t: self._results(t, preds[t], return_probas) for t in tasks}
        return [{t: per_task[t][i] for t in tasks} for i in range(len(examples))]

    def _results(self, task: str, preds: TaskPredictions, return_probas: bool) -> list[dict]:
        spec = self.cfg.tasks[task]
        out = []
        for i, label in enumerate(preds.labels):
            if spec.type == "regression":
                out.append({"score": label})
                continue
            row = {"label": label}
            if return_probas and preds.probas is not None:
                p = np.round(preds.probas[i].astype(float), 6)
                row["probas"] = dict(zip(self.labels[task], p.tolist(), strict=True)) if spec.type == "classification" \
                    else p.tolist()
            out.append(row)
        return out
