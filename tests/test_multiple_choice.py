"""The multiple-choice levers of issue 15: `questions` (the words the model reads for a question value) and
`rotate_choices` (training copies with the right answer in every position)."""

from __future__ import annotations

import json

import pytest

from mtbert.config import validate
from mtbert.data.features import encode
from mtbert.data.multiple_choice import phrase_questions, rotate_choices
from mtbert.data.readers import Example
from mtbert.errors import UserError

COPA_QUESTIONS = {"cause": "What was the cause of this?", "effect": "What happened as a result?"}


def test_questions_are_read_in_the_configured_words_and_unknown_values_as_written():
    items = [Example(text="He fell.", question=q, choices=["a", "b"], label=0) for q in ("cause", "effect", "why")]
    phrased = phrase_questions(items, COPA_QUESTIONS)
    assert [ex.question for ex in phrased] == ["What was the cause of this?", "What happened as a result?", "why"]
    assert [ex.question for ex in items] == ["cause", "effect", "why"]  # the caller's examples are untouched
    assert phrase_questions(items, None) is items


def test_encode_with_questions_equals_encoding_the_rephrased_examples(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    items = [Example(text="the film was great", question="effect", choices=["people liked it", "people left"], label=0)]
    via_config = encode("multiple_choice", items, tok, 32, questions=COPA_QUESTIONS)
    by_hand = encode("multiple_choice", [Example(text="the film was great", question="What happened as a result?",
                                                 choices=["people liked it", "people left"], label=0)], tok, 32)
    assert via_config[0].input_ids == by_hand[0].input_ids
    assert via_config[0].input_ids != encode("multiple_choice", items, tok, 32)[0].input_ids


@pytest.mark.parametrize("n", [2, 3, 4])
def test_rotated_copies_put_the_right_answer_in_every_position(n):
    items = [Example(text=f"p{i}", choices=[f"c{i}-{j}" for j in range(n)], label=i % n) for i in range(6)]
    out = rotate_choices(items)
    assert out[:6] == items and len(out) == 6 * n
    for ex in out:
        original = items[int(ex.text[1:])]
        assert ex.choices[ex.label] == original.choices[original.label]  # the label follows its choice
        assert sorted(ex.choices) == sorted(original.choices)
    for i in range(6):  # each example's answer sits once in every position
        assert sorted(ex.label for ex in out if ex.text == f"p{i}") == list(range(n))


def _mc(**extra):
    return {"backbone": "minilm", "tasks": {"t": {"type": "multiple_choice", "format": "jsonl", "train": "x.jsonl",
            "columns": {"text": "premise", "question": "question", "choices": ["a", "b"], "label": "label"}, **extra}}}


def test_validation_takes_the_levers_on_multiple_choice_and_refuses_them_elsewhere():
    cfg = validate(_mc(questions=COPA_QUESTIONS, rotate_choices=True))
    assert cfg.tasks["t"].questions == COPA_QUESTIONS and cfg.tasks["t"].rotate_choices
    cls = {"backbone": "minilm", "tasks": {"t": {"type": "classification", "train": "x.tsv",
                                                  "columns": {"text": "s", "label": "l"}}}}
    for key, value in (("questions", COPA_QUESTIONS), ("rotate_choices", True)):
        bad = json.loads(json.dumps(cls))
        bad["tasks"]["t"][key] = value
        with pytest.raises(UserError, match=f"{key} applies to multiple_choice tasks, not classification"):
            validate(bad)
    no_question = _mc(questions=COPA_QUESTIONS)
    del no_question["tasks"]["t"]["columns"]["question"]
    with pytest.raises(UserError, match="columns.question"):
        validate(no_question)


def test_a_model_trained_with_questions_predicts_from_the_bare_value_as_evaluate_scores(toy_config, toy_data, tmp_path):
    """Training, evaluate and predict (both forms of input) read the same rephrased question."""
    from mtbert.inference.predictor import Predictor, evaluate_run
    from mtbert.training.trainer import train

    rows = [json.loads(line) for line in (toy_data / "mc_train.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        r["question"] = "cause" if i % 2 else "effect"
    for split in ("mc_train.jsonl", "mc_dev.jsonl"):
        (toy_data / split).write_text("".join(json.dumps(r) + "\n" for r in rows))
    mc = {**toy_config["tasks"]["mc"], "questions": COPA_QUESTIONS, "rotate_choices": True}
    mc["columns"] = {**mc["columns"], "question": "question"}
    raw = {**toy_config, "tasks": {"mc": mc}, "training": {**toy_config["training"], "max_steps": 6, "eval_every": 6}}
    train(validate(raw), tmp_path / "run")
    scores, _, _ = evaluate_run(tmp_path / "run", "dev")
    got = Predictor(tmp_path / "run").predict("mc", [
        {"text": r["premise"], "question": r["question"], "choices": [r["choice1"], r["choice2"]]} for r in rows])
    accuracy = sum(g["label"] == r["label"] for g, r in zip(got, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(scores["mc"]["accuracy"])
