"""Model outputs -> labels, shared by every engine (torch and ONNX); needs numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtbert.data.windows import Row, per_input


@dataclass
class TaskPredictions:
    """Predictions in input order. `labels`: class names, floats, choice indices or tag lists."""

    labels: list
    # (N, classes) or (N, choices); sequence labeling: per input, per word, its tag probabilities
    # (None for a word the model did not see: no sub-token, or cut by `long_text: truncate`)
    probas: np.ndarray | list | None = None
    ids: np.ndarray | None = None  # class ids, for metrics


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


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
        p = _softmax(np.asarray(out, dtype=np.float32)[[first[w] for w in seen]]) if seen else np.zeros((0, len(labels)))
        word_p: list = [None] * n
        for w, row in zip(seen, p, strict=True):
            word_p[w] = row
        tags.append([labels[int(row.argmax())] if row is not None else "O" for row in word_p])
        probas.append(word_p)
    return TaskPredictions(labels=tags, probas=probas)


def decode(task_type: str, outputs: list[np.ndarray], word_ids: list[list[int | None]] | None,
           labels: list[str] | None, n_words: list[int] | None = None) -> TaskPredictions:
    """Per-input model outputs -> labels: argmax over classes or choices; tags, one per word (`tag_words`)."""
    if task_type == "regression":
        return TaskPredictions(labels=[float(o) for o in outputs])
    if task_type == "sequence_labeling":
        return tag_words(outputs, word_ids, n_words, labels)
    probas = np.stack(outputs)
    ids = probas.argmax(-1)
    names = [labels[i] for i in ids] if task_type == "classification" else [int(i) for i in ids]
    return TaskPredictions(labels=names, probas=probas, ids=ids)


def decode_rows(task_type: str, outputs: list[np.ndarray], rows: list[Row], labels: list[str] | None,
                stitched: bool = True) -> TaskPredictions:
    """Per-row model outputs -> predictions in input order; a long text's windows are put back together
    for a tagging task with `stitched` (see `data.windows`)."""
    outs, word_ids, n_words = per_input(rows, outputs, stitched)
    return decode(task_type, outs, word_ids, labels, n_words)
