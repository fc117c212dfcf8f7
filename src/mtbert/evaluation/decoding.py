"""Model outputs -> labels, shared by every engine (torch and ONNX); needs numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TaskPredictions:
    """Predictions in input order. `labels`: class names, floats, choice indices or tag lists."""

    labels: list
    probas: np.ndarray | None = None  # (N, classes) or (N, choices)
    ids: np.ndarray | None = None  # class ids, for metrics


def decode(task_type: str, outputs: list[np.ndarray], word_ids: list[list[int | None]] | None,
           labels: list[str] | None) -> TaskPredictions:
    """Per-input model outputs -> labels: argmax over classes or choices; for tags, the first sub-token
    of each word decides, and words cut off by max_length are 'O'."""
    if task_type == "regression":
        return TaskPredictions(labels=[float(o) for o in outputs])
    if task_type == "sequence_labeling":
        tags = []
        for out, ids in zip(outputs, word_ids, strict=True):
            word_tags, prev = {}, None
            for pos, w in enumerate(ids):
                if w is not None and w != prev:
                    word_tags[w] = labels[int(out[pos].argmax())]
                prev = w
            n_words = max((w for w in ids if w is not None), default=-1) + 1
            tags.append([word_tags.get(j, "O") for j in range(n_words)])
        return TaskPredictions(labels=tags)
    probas = np.stack(outputs)
    ids = probas.argmax(-1)
    names = [labels[i] for i in ids] if task_type == "classification" else [int(i) for i in ids]
    return TaskPredictions(labels=names, probas=probas, ids=ids)
