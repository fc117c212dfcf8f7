"""The premise check: shuffled premises are a derangement, and a model that ignores the premise keeps its
accuracy while one that reads it falls."""

from __future__ import annotations

from pathlib import Path

from mtbert.data.readers import Example
from mtbert.evaluation.premise import premise_check, shuffled_premises


def _items(n):
    return [Example(text=f"premise {i}", question="cause", choices=[f"a{i}", f"b{i}"], label=i % 2) for i in range(n)]


def test_every_item_gets_another_items_premise_and_keeps_its_choices():
    items = _items(50)
    moved = shuffled_premises(items, seed=3)
    assert all(m.text != it.text for m, it in zip(moved, items, strict=True))
    assert sorted(m.text for m in moved) == sorted(it.text for it in items)
    assert [m.choices for m in moved] == [it.choices for it in items]
    assert [m.label for m in moved] == [it.label for it in items]
    assert shuffled_premises(items, seed=3) == moved and shuffled_premises(items, seed=4) != moved


def test_a_model_that_reads_only_the_choices_keeps_its_accuracy_and_one_that_reads_the_premise_does_not():
    items = _items(200)
    answers = {it.text: it.label for it in items}
    from_choices = lambda exs: [int(ex.choices[0][1:]) % 2 for ex in exs]  # noqa: E731 (the choices give it away)
    from_premise = lambda exs: [answers[ex.text] for ex in exs]  # noqa: E731
    assert premise_check(from_choices, items) == (1.0, 1.0)
    real, shuffled = premise_check(from_premise, items)
    assert real == 1.0 and 0.3 < shuffled < 0.7


def test_with_fewer_than_two_different_premises_there_is_no_check_to_report():
    """One item, or items sharing one premise: a swap changes nothing, so no shuffled accuracy is made up."""
    first = lambda exs: [0 for _ in exs]  # noqa: E731
    assert premise_check(first, _items(1)) == (1.0, None)
    same = [Example(text="one premise", question="cause", choices=["a", "b"], label=i % 2) for i in range(4)]
    assert premise_check(first, same) == (0.5, None)


def test_evaluate_prints_the_premise_check_beside_the_real_accuracy(toy_config, tmp_path, capsys):
    import re

    from mtbert.cli import main
    from mtbert.config import validate
    from mtbert.training.trainer import train

    raw = {**toy_config, "training": {**toy_config["training"], "max_steps": 4, "eval_every": 4}}
    train(validate(raw), tmp_path / "run")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    table = re.search(r"\| mc \| multiple_choice \| accuracy \(primary\) \| ([0-9.]+) \|", out)
    line = re.search(r"^mc: accuracy ([0-9.]+); with every premise swapped for another item's ([0-9.]+)", out, re.M)
    assert table and line, out
    assert float(line.group(1)) == float(table.group(1))  # the check's real accuracy is the table's
    assert "sent:" not in out  # only multiple-choice tasks have premises
    # one item: the accuracy, and why there is no check, instead of a number for a swap that never happened
    one = tmp_path / "mc1.jsonl"
    one.write_text((Path(toy_config["data_dir"]) / toy_config["tasks"]["mc"]["dev"]).read_text().splitlines()[0] + "\n")
    assert main(["evaluate", str(tmp_path / "run"), "--task", "mc", "--data", f"mc={one}"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^mc: accuracy [0-9.]+; no premise check: .* fewer than two different premises", out, re.M), out
