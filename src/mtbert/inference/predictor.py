"""Predictor: a trained run dir -> labels (and probabilities) for new inputs, from Python or the CLI."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from mtbert.data.features import encode
from mtbert.data.readers import Example
from mtbert.errors import UserError
from mtbert.evaluation.evaluate import TaskPredictions, predict_task
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
        spec = self._task(task)
        preds = self.predict_raw(task, inputs)
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
