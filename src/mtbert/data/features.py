"""Features: Examples -> token ids (once per dataset), label vocabularies, and padded batches.

Tokenisation happens once, when a dataset is loaded; batches are padded only to their longest member.
Sequence labels sit on the first sub-token of each word; other sub-tokens and padding get -100 so the
loss ignores them. For prediction, a text longer than max_length can be encoded as overlapping
windows, one Feature each (`data.windows`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from mtbert.data.bucketing import length_batches
from mtbert.data.multiple_choice import phrase_questions
from mtbert.data.readers import Example
from mtbert.data.windows import Window
from mtbert.errors import UserError

IGNORE = -100


def _sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def build_labels(task_type: str, train: list[Example], given: list[str] | None = None,
                 num_labels: int | None = None, name: str = "") -> list[str] | None:
    """The label vocabulary of a classification or sequence-labeling task, built from train.

    Numeric labels sort as numbers ('0' < '1' < '10'), so index i is label i in GLUE-style files.
    """
    if task_type not in ("classification", "sequence_labeling"):
        return None
    if given:
        return list(given)
    seen = set()
    for ex in train:
        seen.update(ex.label if task_type == "sequence_labeling" else [ex.label])
    labels = sorted(seen, key=_sort_key)
    if task_type == "sequence_labeling" and "O" in labels:
        labels.remove("O")
        labels.insert(0, "O")
    if num_labels is not None and task_type == "classification" and len(labels) != num_labels:
        raise UserError(f"tasks.{name}.num_labels: {num_labels} given but train has {len(labels)} labels "
                        f"({', '.join(labels[:20])}); fix num_labels or list them under labels:")
    return labels


@dataclass
class Feature:
    input_ids: list  # list[int], or list[list[int]] (one per choice) for multiple choice
    token_type_ids: list
    label: object = None  # class id, float, choice index, or per-sub-token tag ids
    word_ids: list | None = field(default=None, repr=False)  # sequence labeling: sub-token -> word
    window: Window | None = None  # one window of a longer input (sequence labeling, `long_text: window`)
    n_words: int | None = None  # sequence labeling: the input's word count, also those past max_length
    # a teacher's target (distillation): class or choice probabilities, a score, or per-sub-token tag
    # probabilities (zeros where the label is IGNORE)
    soft: object = field(default=None, repr=False)

    @property
    def length(self) -> int:
        if self.input_ids and isinstance(self.input_ids[0], list):
            return max(len(x) for x in self.input_ids)
        return len(self.input_ids)


def _label_id(ex: Example, label: str, label_ids: dict[str, int], name: str) -> int:
    if label not in label_ids:
        known = ", ".join(list(label_ids)[:20])
        raise UserError(f"{ex.where}: label '{label}' of task {name} was not seen in train (labels: {known})")
    return label_ids[label]


def encode(task_type: str, examples: list[Example], tokenizer, max_length: int,
           labels: list[str] | None = None, name: str = "", with_labels: bool = True,
           pair_encoding: str = "cross", stride: int | None = None,
           questions: dict[str, str] | None = None, all_subtokens: bool = False) -> list[Feature]:
    """Tokenise a whole split in one call of the fast tokenizer.

    Multiple choice and `pair_encoding: separate` give a group of sequences per example (one per choice,
    or text and text_pair); everything else one sequence. `questions` rephrases multiple-choice questions
    (`phrase_questions`). Sequence labeling with a `stride` gives every
    window of a text longer than max_length, each a Feature without labels (they are for prediction);
    with `all_subtokens` every sub-token of a word carries the word's tag (`label_all_subtokens`)."""
    label_ids = {label: i for i, label in enumerate(labels or [])}
    if task_type == "sequence_labeling":
        return _encode_words(examples, tokenizer, max_length, label_ids if with_labels else None, name, stride,
                             all_subtokens)
    if task_type == "multiple_choice":
        n = len(examples[0].choices) if examples else 0
        odd = next((i for i, ex in enumerate(examples) if len(ex.choices) != n), None)
        if odd is not None:  # name the first example that differs, and the one it differs from
            ex, first = examples[odd], examples[0]
            where = ex.where or f"input {odd + 1}"
            first_where = f"line {first.line}" if first.line else "input 1"
            raise UserError(f"{where}: {len(ex.choices)} choices, but {first_where} has {n} (task {name}); "
                            "every example of a multiple-choice task needs the same number of choices")
        examples = phrase_questions(examples, questions)
        firsts = [f"{ex.text} {ex.question}" if ex.question else ex.text for ex in examples for _ in ex.choices]
        seconds = [c for ex in examples for c in ex.choices]
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length, return_token_type_ids=True)
        return [
            Feature(enc["input_ids"][i * n:(i + 1) * n], enc["token_type_ids"][i * n:(i + 1) * n],
                    ex.label if with_labels else None)
            for i, ex in enumerate(examples)
        ]
    labels_of = [None] * len(examples)
    if with_labels:
        labels_of = [_label_id(ex, ex.label, label_ids, name) if task_type == "classification" else float(ex.label)
                     for ex in examples]
    pairs = [ex.text_pair for ex in examples] if examples and examples[0].text_pair is not None else None
    if pairs is not None and pair_encoding == "separate":
        # each text encoded alone: a group of two sequences, like two choices of a multiple-choice example
        enc_a = tokenizer([ex.text for ex in examples], truncation=True, max_length=max_length,
                          return_token_type_ids=True)
        enc_b = tokenizer(pairs, truncation=True, max_length=max_length, return_token_type_ids=True)
        return [Feature([enc_a["input_ids"][i], enc_b["input_ids"][i]],
                        [enc_a["token_type_ids"][i], enc_b["token_type_ids"][i]], labels_of[i])
                for i in range(len(examples))]
    enc = tokenizer([ex.text for ex in examples], pairs, truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    return [Feature(enc["input_ids"][i], enc["token_type_ids"][i], labels_of[i]) for i in range(len(examples))]


def _encode_words(examples: list[Example], tokenizer, max_length: int, label_ids: dict[str, int] | None,
                  name: str, stride: int | None, all_subtokens: bool = False) -> list[Feature]:
    """Sequence labeling: words -> sub-tokens, the tag ids (with `label_ids`) on each word's first one
    (on all of them with `all_subtokens`, as DeepPavlov's token_labels_to_subtoken_labels)."""
    if label_ids is not None:
        for ex in examples:  # every word's tag, also past max_length: evaluation scores every word
            for tag in ex.label:
                _label_id(ex, tag, label_ids, name)
    windows = {"return_overflowing_tokens": True, "stride": stride} if stride is not None else {}
    enc = tokenizer([ex.tokens for ex in examples], is_split_into_words=True, truncation=True,
                    max_length=max_length, return_token_type_ids=True, **windows)
    input_of = enc["overflow_to_sample_mapping"] if windows else range(len(examples))
    feats = []
    for r, i in enumerate(input_of):
        ex, word_ids = examples[i], enc.word_ids(r)
        tag_ids = None
        if label_ids is not None and not windows:
            tag_ids, prev = [], None
            for w in word_ids:
                tagged = w is not None and (w != prev or all_subtokens)
                tag_ids.append(label_ids[ex.label[w]] if tagged else IGNORE)
                prev = w
        feats.append(Feature(enc["input_ids"][r], enc["token_type_ids"][r], tag_ids, word_ids,
                             Window(i, stride) if windows else None, len(ex.tokens)))
    return feats


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
        if task_type == "sequence_labeling":
            batch["labels"] = torch.tensor(_pad([f.label for f in feats], IGNORE, width))
        elif task_type == "regression":
            batch["labels"] = torch.tensor([f.label for f in feats], dtype=torch.float32)
        else:
            batch["labels"] = torch.tensor([f.label for f in feats], dtype=torch.long)
    if feats[0].soft is not None:
        if task_type == "sequence_labeling":
            soft = np.zeros((len(feats), width, feats[0].soft.shape[-1]), dtype=np.float32)
            for i, f in enumerate(feats):
                soft[i, :len(f.soft)] = f.soft
        else:
            soft = np.asarray([f.soft for f in feats], dtype=np.float32)
        batch["soft_labels"] = torch.from_numpy(soft)
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
