"""Task schedules, batching and collation."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from mtbert.data.features import IGNORE, Feature, collate, encode, length_grouped_batches, sorted_batches
from mtbert.data.readers import Example
from mtbert.data.schedule import BatchStream, TaskSchedule


def test_proportional_schedule_follows_dataset_sizes():
    s = TaskSchedule("proportional", {"big": 300, "small": 100}, epochs=1, seed=0)
    counts = Counter(s.task_for(i, 0) for i in range(4000))
    assert counts["big"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_uniform_and_round_robin():
    s = TaskSchedule("uniform", {"a": 1000, "b": 10}, epochs=1, seed=0)
    counts = Counter(s.task_for(i, 0) for i in range(4000))
    assert counts["b"] / 4000 == pytest.approx(0.5, abs=0.03)
    rr = TaskSchedule("round_robin", {"a": 5, "b": 1, "c": 2}, epochs=1, seed=0)
    assert [rr.task_for(i, 0) for i in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_annealed_is_deeppavlovs_anneal():
    s = TaskSchedule("annealed", {"a": 400, "b": 100}, epochs=5, seed=0)
    assert s.probabilities(0) == pytest.approx([0.8, 0.2])  # a = 1: proportional
    alpha = 1 - 0.8 * 4 / 5
    expected = np.array([400**alpha, 100**alpha])
    assert s.probabilities(4) == pytest.approx(expected / expected.sum())


def test_schedule_is_seeded():
    draw = lambda seed: [TaskSchedule("proportional", {"a": 3, "b": 2}, 1, seed).task_for(i, 0) for i in range(50)]  # noqa: E731
    assert draw(7) == draw(7) and draw(7) != draw(8)


def _feats(lengths):
    return [Feature(list(range(n)), [0] * n, 0) for n in lengths]


def test_batch_stream_sees_every_example_once_per_pass():
    feats = _feats(random.Random(0).choices(range(3, 60), k=103))
    stream = BatchStream(len(feats), 8, lambda rng: length_grouped_batches(feats, 8, rng), seed=1)
    seen = [i for _ in range(len(stream)) for i in stream.next()]
    assert sorted(seen) == list(range(103))
    again = [i for _ in range(len(stream)) for i in stream.next()]
    assert sorted(again) == list(range(103)) and again != seen  # reshuffled


def test_length_grouping_cuts_padding():
    feats = _feats(random.Random(0).choices(range(3, 120), k=2000))
    def padding(batches):
        return sum(max(feats[i].length for i in b) * len(b) - sum(feats[i].length for i in b) for b in batches)
    grouped = padding(length_grouped_batches(feats, 32, random.Random(0), group=True))
    plain = padding(length_grouped_batches(feats, 32, random.Random(0), group=False))
    assert grouped < plain / 5


def test_sorted_batches_cover_all_indices():
    feats = _feats([5, 1, 9, 3, 7])
    batches = sorted_batches(feats, 2)
    assert batches == [[1, 3], [0, 4], [2]]


def test_sorted_batches_cut_where_padding_costs_more_than_a_call():
    """A server's micro-batch: 20 short texts and 4 long ones. Padding the short ones to the long ones
    would add 20 x 33 tokens; they go in a call of their own."""
    feats = _feats([45, 12] * 4 + [12] * 16)
    batches = sorted_batches(feats, 32)
    assert [len(b) for b in batches] == [20, 4]
    assert {feats[i].length for i in batches[1]} == {45}
    assert [len(b) for b in sorted_batches(_feats([12] * 30 + [13] * 10), 32)] == [32, 8]  # 1 token: not worth a call


@pytest.fixture(scope="module")
def tok(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


def test_sequence_labels_sit_on_first_subtokens(tok):
    ex = Example(tokens=["Zwelithini", "is", "big"], label=["B-LOC", "O", "O"])
    (f,) = encode("sequence_labeling", [ex], tok, 32, ["O", "B-LOC"])
    pieces = tok.convert_ids_to_tokens(f.input_ids)
    assert pieces[0] == "[CLS]" and len(pieces) > 5  # the name splits into several pieces
    expected = [IGNORE] + [1] + [IGNORE] * (pieces.index("is") - 2) + [0, 0, IGNORE]
    assert f.label == expected


def test_collate_pads_to_the_longest_and_shapes_choices(tok):
    exs = [Example(text="short", label="a"), Example(text="a much longer sentence than that", label="b")]
    feats = encode("classification", exs, tok, 64, ["a", "b"])
    batch = collate("classification", feats, tok.pad_token_id)
    assert batch["input_ids"].shape == (2, max(len(f.input_ids) for f in feats))
    assert batch["attention_mask"][0].sum() == len(feats[0].input_ids)
    assert batch["labels"].tolist() == [0, 1]

    mc = [Example(text="p", question="cause", choices=["one", "two three four"], label=1)]
    feats = encode("multiple_choice", mc, tok, 64)
    batch = collate("multiple_choice", feats, tok.pad_token_id)
    assert batch["input_ids"].shape[:2] == (1, 2) and batch["labels"].tolist() == [1]
    text = tok.decode(feats[0].input_ids[1])
    assert "p cause" in text and "two three four" in text

    seq = encode("sequence_labeling", [Example(tokens=["a"], label=["O"]), Example(tokens=["b", "c", "d"], label=["O"] * 3)],
                 tok, 64, ["O"])
    batch = collate("sequence_labeling", seq, tok.pad_token_id)
    assert batch["labels"][0].tolist()[-2:] == [IGNORE, IGNORE]
    assert batch["labels"].dtype == torch.long


def test_choice_count_mismatch_is_a_user_error(tok):
    from mtbert.errors import UserError

    exs = [Example(text="p", choices=["a", "b"], label=0, source="f.jsonl"),
           Example(text="q", choices=["a", "b", "c"], label=0, source="f.jsonl")]
    with pytest.raises(UserError, match="same number of choices"):
        encode("multiple_choice", exs, tok, 32)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_temperature_sampling_follows_the_formula(temperature):
    examples = {"big": 8000, "mid": 2000, "small": 400}
    batches = {t: -(-n // 32) for t, n in examples.items()}
    s = TaskSchedule("temperature", batches, epochs=1, seed=0, temperature=temperature, examples_per_task=examples)
    n = np.array(list(examples.values()), dtype=float)
    expected = n ** (1 / temperature) / (n ** (1 / temperature)).sum()
    assert s.probabilities(0) == pytest.approx(expected)
    counts = Counter(s.task_for(i, 0) for i in range(20000))
    assert [counts[t] / 20000 for t in examples] == pytest.approx(expected, abs=0.015)


def test_temperature_one_is_proportional_and_large_tends_to_uniform():
    examples = {"a": 900, "b": 100}
    s1 = TaskSchedule("temperature", examples, 1, 0, temperature=1.0, examples_per_task=examples)
    assert s1.probabilities(0) == pytest.approx(TaskSchedule("proportional", examples, 1, 0).probabilities(0))
    s_hot = TaskSchedule("temperature", examples, 1, 0, temperature=1e6, examples_per_task=examples)
    assert s_hot.probabilities(0) == pytest.approx([0.5, 0.5], abs=1e-4)
