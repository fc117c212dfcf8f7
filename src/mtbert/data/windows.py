"""Sequence labeling of texts longer than max_length: the windows a tokenizer cuts them into, put back
together (`long_text: window`).

Both engines ask their tokenizer for overflowing windows (transformers' `return_overflowing_tokens`
and the tokenizers library's `Encoding.overflowing` are one Rust implementation, so the windows are
the same): window k of a text holds its sub-tokens [k * step, k * step + n), step = n - stride, between
the tokenizer's special tokens, and window 0 is exactly the truncated text. `stitch` reads every
sub-token from the window where it sits most centrally (the most context on its shorter side), so
a word near the edge of one window is tagged from the next, where it has context on both sides, and
the text's sub-tokens come out once each and in order, as if the model had read it whole.

Numpy only: the torch-free ONNX engine uses it as the torch engine and evaluation do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Window:
    """A model row that is one window of a longer input."""

    input: int  # index of the input (example) it is a window of
    stride: int  # sub-tokens it repeats from the window before


class Row(Protocol):
    """What an encoded row tells (`data.encoding.Feature`, whichever engine encoded it)."""

    word_ids: list[int | None] | None  # sequence labeling: sub-token -> word (None: a special token)
    window: Window | None  # None: the row is its input, whole or truncated
    n_words: int | None  # sequence labeling: the input's word count, seen by the model or not


def group_rows(rows: list[Row]) -> list[list[int]]:
    """Row indices per input, in input order, each input's windows in order."""
    if all(row.window is None for row in rows):
        return [[r] for r in range(len(rows))]
    groups: dict[int, list[int]] = {}
    for r, row in enumerate(rows):
        groups.setdefault(r if row.window is None else row.window.input, []).append(r)
    return [groups[key] for key in sorted(groups)]


def stitch(word_ids: list[list[int | None]], outputs: list[np.ndarray], stride: int) -> tuple[list[int], np.ndarray]:
    """One input's windows, in order -> the word id and output of each of its sub-tokens (special tokens
    dropped), each sub-token's from the window where it has the most context on its shorter side (ties:
    the earlier window)."""
    content = [[p for p, w in enumerate(ids) if w is not None] for ids in word_ids]
    step = len(content[0]) - stride  # window 0 is full whenever there is a window 1 (else step is unused)
    total = step * (len(content) - 1) + len(content[-1])
    context = np.full(total, -1)
    source = np.zeros((total, 2), dtype=np.int64)  # (window, position in it)
    for k, positions in enumerate(content):
        n = len(positions)
        j = np.arange(n)
        here = np.minimum(j, n - 1 - j)
        at = k * step + j
        better = here > context[at]
        context[at[better]] = here[better]
        source[at[better]] = np.stack([np.full(n, k), np.asarray(positions, dtype=np.int64)], axis=1)[better]
    ids = [word_ids[k][p] for k, p in source.tolist()]
    out = np.stack([outputs[k][p] for k, p in source.tolist()]) if total else outputs[0][:0]
    return ids, out


def per_input(rows: list[Row], outputs: list[np.ndarray], stitched: bool) -> tuple[list, list, list]:
    """Per-row model outputs -> (outputs, word ids, word counts) per input. `stitched`: a tagging task
    that reads the whole text gets its windows stitched; any other task reads an input's first window,
    which is the input truncated to max_length (a sentence head, or `long_text: truncate`)."""
    outs, word_ids, n_words = [], [], []
    for group in group_rows(rows):
        first = rows[group[0]]
        if stitched and first.window is not None:
            ids, out = stitch([rows[r].word_ids for r in group], [outputs[r] for r in group], first.window.stride)
        else:
            ids, out = first.word_ids, outputs[group[0]]
        outs.append(out)
        word_ids.append(ids)
        n_words.append(first.n_words)
    return outs, word_ids, n_words
