"""Does a multiple-choice model read the premise? (Kavumba et al. 2019, "When Choosing Plausible
Alternatives, Clever Hans can be Clever".)

COPA-style items can often be answered from the choices alone: one choice is simply the more plausible
sentence. The check keeps every item's choices and gold answer but gives it another item's premise
(seeded derangements, so no item keeps its own; the mean over five). A model that reads the premise falls toward chance
there; one that answers from the choices alone keeps its accuracy. `mtbert evaluate` prints the
shuffled-premise accuracy beside the real one for every multiple-choice task.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mtbert.data.readers import Example


def shuffled_premises(examples: list[Example], seed: int = 0) -> list[Example]:
    """The examples with each premise (text and question) taken from another example."""
    n = len(examples)
    if n < 2:
        return list(examples)
    rng = np.random.default_rng(seed)
    # a random derangement: a permutation with no fixed point (rejection sampling; about e tries)
    while True:
        order = rng.permutation(n)
        if not np.any(order == np.arange(n)):
            break
    return [dataclasses.replace(ex, text=examples[j].text, question=examples[j].question)
            for ex, j in zip(examples, order, strict=True)]


def premise_check(predict, examples: list[Example], seed: int = 0, rounds: int = 5) -> tuple[float, float | None]:
    """(accuracy, accuracy with shuffled premises, averaged over `rounds` derangements: with COPA's 100 dev
    items one derangement moves the figure by several points); `predict` maps examples to choice indices.
    With fewer than two different premises nothing can be swapped: the second is None."""
    gold = np.array([ex.label for ex in examples])
    real = float(np.mean(np.asarray(predict(examples)) == gold))
    if len({(ex.text, ex.question) for ex in examples}) < 2:
        return real, None
    shuffled = np.mean([np.mean(np.asarray(predict(shuffled_premises(examples, seed + r))) == gold)
                        for r in range(rounds)])
    return real, float(shuffled)
