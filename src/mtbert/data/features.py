"""Features: Examples -> token ids (once per dataset), label vocabularies, and padded batches.

Tokenisation happens once, when a dataset is loaded; batches are padded only to their longest member.
Sequence labels sit on the first sub-token of each word; other sub-tokens and padding get -100 so the
loss ignores them. For prediction, a text longer than max_length can be encoded as overlapping
windows, one Feature each (`data.windows`).
"""

from __future__ import annotations

import random

import torch

from mtbert.data.bucketing import length_batches
from mtbert.data.encoding import IGNORE, Feature  # noqa: F401  (re-exported: the features' home was here)
from mtbert.data.example import Example
from mtbert.tasks import registry


def build_labels(task_type: str, train: list[Example], given: list[str] | None = None,
                 num_labels: int | None = None, name: str = "") -> list[str] | None:
    """The label vocabulary of a task with classes (TaskType.build_labels), None for one without."""
    return registry.get(task_type).build_labels(train, given, num_labels, name)


def encode(task_type: str, examples: list[Example], tokenizer, max_length: int,
           labels: list[str] | None = None, name: str = "", with_labels: bool = True,
           pair_encoding: str = "cross", stride: int | None = None,
           questions: dict[str, str] | None = None, all_subtokens: bool = False) -> list[Feature]:
    """Tokenise a whole split in one call of the fast tokenizer, as the task type does it (data/encoding.py).

    Multiple choice and `pair_encoding: separate` give a group of sequences per example (one per choice,
    or text and text_pair); everything else one sequence. `questions` rephrases multiple-choice questions
    (`phrase_questions`). Sequence labeling with a `stride` gives every
    window of a text longer than max_length, each a Feature without labels (they are for prediction);
    with `all_subtokens` every sub-token of a word carries the word's tag (`label_all_subtokens`)."""
    return registry.get(task_type).encode(examples, tokenizer, max_length, labels, name, with_labels, pair_encoding,
                                          stride, questions, all_subtokens)


def _pad(rows: list[list[int]], value: int, width: int) -> list[list[int]]:
    return [r + [value] * (width - len(r)) for r in rows]


def collate(task_type: str, feats: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member. Grouped features (choices, separate pairs) give (batch, group, length)."""
    if isinstance(feats[0].input_ids[0], list):
        n = len(feats[0].input_ids)
        flat = [ids for f in feats for ids in f.input_ids]
        types = [t for f in feats for t in f.token_type_ids]
        width = max(len(x) for x in flat)
        batch = {
            "input_ids": torch.tensor(_pad(flat, pad_id, width)).view(len(feats), n, width),
            "token_type_ids": torch.tensor(_pad(types, 0, width)).view(len(feats), n, width),
            "attention_mask": torch.tensor(_pad([[1] * len(x) for x in flat], 0, width)).view(len(feats), n, width),
        }
    else:
        width = max(len(f.input_ids) for f in feats)
        batch = {
            "input_ids": torch.tensor(_pad([f.input_ids for f in feats], pad_id, width)),
            "token_type_ids": torch.tensor(_pad([f.token_type_ids for f in feats], 0, width)),
            "attention_mask": torch.tensor(_pad([[1] * len(f.input_ids) for f in feats], 0, width)),
        }
    if feats[0].label is not None:
        batch["labels"] = torch.from_numpy(registry.get(task_type).label_array(feats, width))
    if feats[0].soft is not None:
        batch["soft_labels"] = torch.from_numpy(registry.get(task_type).soft_array(feats, width))
    return batch


POOL_BATCHES = 8  # batches sorted together by length_grouped_batches


def length_grouped_batches(feats: list[Feature], batch_size: int, rng: random.Random,
                           group: bool = True, pool_batches: int = POOL_BATCHES) -> list[list[int]]:
    """Shuffled batches of indices; with `group`, each batch holds examples of similar length
    (sorted within a pool of `pool_batches` batches, then the batches shuffled), so padding stays small.
    The pool is a few hundred examples: sorting 50 batches at a time made batches of only the shortest
    CoNLL lines (score tables, headlines) and cost dev quality (benchmarks/quality_grouping.py)."""
    order = list(range(len(feats)))
    rng.shuffle(order)
    if group:
        pool = batch_size * pool_batches
        order = [i for s in range(0, len(order), pool)
                 for i in sorted(order[s:s + pool], key=lambda j: feats[j].length)]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(feats: list[Feature], batch_size: int) -> list[list[int]]:
    """Evaluation batches sorted and cut by length (`bucketing.length_batches`); callers put results
    back in input order by index."""
    return length_batches([f.length for f in feats], batch_size)
