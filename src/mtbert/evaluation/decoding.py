"""Model outputs -> predictions, shared by every engine (torch and ONNX); needs numpy only. How a task's
outputs become labels is its type's `decode` (mtbert.tasks); this puts a long text's windows back together
first."""

from __future__ import annotations

import numpy as np

from mtbert.data.windows import Row, per_input
from mtbert.tasks import registry
from mtbert.tasks.base import TaskPredictions
from mtbert.tasks.sequence_labeling import tag_words  # noqa: F401  (its home was here)

__all__ = ["TaskPredictions", "decode", "decode_rows"]


def decode(spec, outputs: list[np.ndarray], word_ids: list[list[int | None]] | None,
           labels: list[str] | None, n_words: list[int] | None = None) -> TaskPredictions:
    """Per-input model outputs -> predictions (argmax over classes or choices, tags one per word, labels
    over a threshold...). `spec`: the task's TaskConfig, or its type's name (then the type's defaults)."""
    return registry.get(spec).decode(spec, outputs, word_ids, labels, n_words)


def decode_rows(spec, outputs: list[np.ndarray], rows: list[Row], labels: list[str] | None,
                stitched: bool = True) -> TaskPredictions:
    """Per-row model outputs -> predictions in input order; a long text's windows are put back together
    for a tagging task with `stitched` (see `data.windows`)."""
    outs, word_ids, n_words = per_input(rows, outputs, stitched)
    return decode(spec, outs, word_ids, labels, n_words)
