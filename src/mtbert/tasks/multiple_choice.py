"""Multiple choice: a context (text, and an optional question) and a few choices -> the index of the right
one. Each (context, choice) pair is scored alone; softmax over the choices of an example."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from mtbert.data.encoding import encode_choices
from mtbert.data.example import BadRow, Example, number_field, short, text_field
from mtbert.data.multiple_choice import phrase_questions
from mtbert.errors import InputError
from mtbert.tasks.base import TaskPredictions, TaskType, _counts, registry
from mtbert.tasks.classification import raw_label

# COPA's question, as DeepPavlov's huggingface_dataset_reader writes it at the end of the context
COPA_QUESTIONS = {"What was the cause of this?": "cause", "What happened as a result?": "effect",
                  "Что было причиной этого?": "cause", "Что случилось в результате?": "effect"}


def _one_context(contexts: list):
    """DeepPavlov's multiple-choice `contexts`: the context once per choice (its preprocessor pairs
    contexts[i] with choices[i]; its COPA reader repeats the premise). mtbert reads one context per example."""
    if contexts and all(isinstance(x, str) for x in contexts) and len(set(contexts)) == 1:
        return contexts[0]
    if len({json.dumps(x) for x in contexts}) > 1:
        raise BadRow(f"text is a JSON list of {len(contexts)} different contexts ({short(contexts)}); mtbert reads one "
                     "context per example, shared by its choices: write it as a JSON string, or the same string "
                     "once per choice (DeepPavlov's contexts)")
    return contexts[0] if contexts else None


@registry.register("multiple_choice")
class MultipleChoice(TaskType):
    columns = ("text", "choices", "label")
    options = ("questions", "rotate_choices")
    metrics = ("accuracy", "f1_macro", "mcc", "roc_auc")
    default_metrics = ("accuracy",)
    inputs = "text, choices (a list) and, if trained with one, question"
    onnx_output = ("batch, group", "probabilities over the choices")
    single_text = False
    premise_check = True
    choice_groups = True
    hf_classes = {"bert": "BertForMultipleChoice", "roberta": "RobertaForMultipleChoice"}
    hf_auto_class = "AutoModelForMultipleChoice"
    hub_task = "multiple-choice"

    def check(self, spec):
        if spec.questions is not None and spec.columns.question is None:
            raise ValueError("questions rephrases the question column; name it in columns.question, or remove questions")

    def row_to_example(self, spec, get):
        c = spec.columns
        text = get("text")
        ex = Example(text=text_field(_one_context(text) if isinstance(text, list) else text, "text"))
        if c.text_pair is not None:
            ex.text_pair = text_field(get("text_pair"), "text_pair")
        if c.question is not None:
            ex.question = text_field(get("question"), "question")
        ex.choices = [text_field(v, "choice") for v in get("choices")]
        # one choice is no choice (its softmax is 1 whatever the model says); it is also what a JSON string
        # under `choices: [key]` becomes
        if len(ex.choices) < 2:
            shown = f" ({short(ex.choices[0])})" if ex.choices else ""
            raise BadRow(f"{len(ex.choices)} choice(s){shown}; a multiple-choice example needs at least 2: a JSON "
                         "list of strings under one key, or one key (column) per choice under columns.choices")
        if c.id is not None:
            ex.id = str(get("id")).strip()
        if c.label is None:
            return ex
        raw = raw_label(get)
        index = number_field(raw, "a choice index")
        if not index.is_integer():
            raise BadRow(f"label {raw!r} is not a whole choice index")
        ex.label = int(index)
        if not 0 <= ex.label < len(ex.choices):
            raise BadRow(f"label {ex.label} is not the index of one of the {len(ex.choices)} choices")
        return ex

    def encode(self, examples, tokenizer, max_length, labels=None, name="", with_labels=True, pair_encoding="cross",
               stride=None, questions=None, all_subtokens=False):
        return encode_choices(phrase_questions(examples, questions), tokenizer, max_length, with_labels, name)

    def head(self, spec, hidden_size, labels, train_feats=None, name=""):
        from mtbert.modeling.heads import MultipleChoiceHead

        return MultipleChoiceHead(hidden_size, spec.pooling, spec.dropout, spec.head == "mlp")

    def decode(self, spec, outputs, word_ids, labels, n_words):
        probas = np.stack(outputs)
        ids = probas.argmax(-1)
        return TaskPredictions(labels=[int(i) for i in ids], probas=probas, ids=ids)

    def baseline(self, train, train_feats, dev, labels):
        """Always the first choice."""
        n = len(dev)
        probas = np.zeros((n, len(dev[0].choices)))
        probas[:, 0] = 1.0
        return TaskPredictions([0] * n, probas, np.zeros(n, dtype=int))

    def label_summary(self, gold):
        return _counts(Counter(gold), "choice")

    def input_fields(self, spec):
        return ["text"] + (["question"] if spec.columns.question is not None else []) + ["choices"]

    def to_example(self, spec, field):
        ex = Example(text=field("text"))
        if spec.columns.text_pair is not None:
            ex.text_pair = field("text_pair")
        ex.choices = [field.text(c, f"choices[{i}]") for i, c in enumerate(field("choices", list))]
        if len(ex.choices) < 2:  # as in training: one choice is no choice, its softmax is 1 whatever the model says
            raise InputError(field.index, f"{len(ex.choices)} choice(s); a multiple-choice input needs at least 2")
        if spec.columns.question is not None:
            ex.question = field("question")
        return ex

    def deeppavlov_input(self, spec, item, index):
        """[context, choices] (DeepPavlov's COPA reader repeats the context once per choice and ends it with a
        question sentence) or [premise, question, choices]."""
        if len(item) == 3 and isinstance(item[2], list | tuple):
            context, question, choices = item
            return {"text": context, "question": question, "choices": list(choices)}
        if len(item) != 2 or not isinstance(item[1], list | tuple):
            raise InputError(index, "expected [context, [choice, ...]] or [premise, question, [choice, ...]]")
        context = item[0][0] if isinstance(item[0], list | tuple) and item[0] else item[0]
        if not isinstance(context, str):
            raise InputError(index, "the context must be a string")
        if spec.columns.question is None:
            return {"text": context, "choices": list(item[1])}
        for sentence, question in COPA_QUESTIONS.items():
            if context.endswith(sentence):  # what a model trained on COPA's files read: premise, cause/effect
                return {"text": context[: -len(sentence)].rstrip(), "question": question, "choices": list(item[1])}
        # any other question: the model reads "text question" joined by one space, so splitting at the
        # last space gives it the very text it was sent
        text, _, question = context.rpartition(" ")
        return {"text": text, "question": question, "choices": list(item[1])}

    def hf_card_note(self, spec):
        return ("Inputs are (batch, choices, sequence): encode each choice as the pair (context, choice), as "
                "mtbert did in training" + (" (the context is the text, a space and the question)"
                                             if spec.columns.question is not None else "") + ".")

    def example_input(self, spec):
        item = {"text": "The man broke his toe.", "choices": ["He dropped a hammer on his foot.",
                                                            "He got a hole in his sock."]}
        return {**item, "question": "cause"} if spec.columns.question is not None else item
