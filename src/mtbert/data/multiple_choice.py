"""Multiple-choice Examples before tokenisation: questions in the words the model reads, and choice
rotations for training. Torch-free: the ONNX engine rephrases questions too."""

from __future__ import annotations

from dataclasses import replace

from mtbert.data.example import Example


def phrase_questions(examples: list[Example], questions: dict[str, str] | None) -> list[Example]:
    """Multiple choice: each question value replaced by the words a task's `questions` gives for it."""
    if not questions:
        return examples
    return [replace(ex, question=questions.get(ex.question, ex.question)) for ex in examples]


def rotate_choices(examples: list[Example]) -> list[Example]:
    """Multiple choice training data: every example, then every other rotation of its choices (the label
    follows its choice), so each position holds the right answer equally often."""
    out = list(examples)
    for k in range(1, len(examples[0].choices) if examples else 0):
        for ex in examples:
            n = len(ex.choices)
            out.append(replace(ex, choices=ex.choices[k:] + ex.choices[:k],
                               label=(int(ex.label) - k) % n))
    return out
