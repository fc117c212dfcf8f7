"""Examples -> token ids, the one encoding both engines use (torch-free: numpy and a tokenizer).

The torch engine hands in a transformers tokenizer, the ONNX engine a `tokenizers.Tokenizer` factory;
`as_tokens` wraps either in a `Tokens`, which knows only two calls: a batch of texts (or text pairs), and a
batch of pre-split words (with their sub-token -> word map, and the windows of a long text). The task
types (mtbert.tasks) build their Features from these calls, so a task's inputs become the same ids
whichever engine runs the model: transformers' fast tokenizers are the tokenizers library, set up here
as transformers sets it (special tokens, `longest_first` truncation, no padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mtbert.data.example import Example
from mtbert.data.windows import Window
from mtbert.errors import UserError

IGNORE = -100  # the label of a sub-token no loss reads: torch's cross_entropy ignore_index default


@dataclass
class Feature:
    input_ids: list  # list[int], or list[list[int]] (one per choice) for multiple choice
    token_type_ids: list
    label: object = None  # class id, float, choice index, per-sub-token tag ids, or a 0/1 row per label
    word_ids: list | None = field(default=None, repr=False)  # sequence labeling: sub-token -> word
    window: Window | None = None  # one window of a longer input (sequence labeling, `long_text: window`)
    n_words: int | None = None  # sequence labeling: the input's word count, also those past max_length
    # a teacher's target (distillation): class or choice probabilities, a score, or per-sub-token tag
    # probabilities (zeros where the label is IGNORE)
    soft: object = field(default=None, repr=False)

    @property
    def grouped(self) -> bool:
        return bool(self.input_ids) and isinstance(self.input_ids[0], list)

    @property
    def length(self) -> int:
        if self.grouped:
            return max(len(x) for x in self.input_ids)
        return len(self.input_ids)


@dataclass
class WordRow:
    """One encoded row of pre-split words: the input it belongs to, and its window of that input (None
    when the row is the input, whole or truncated)."""

    ids: list[int]
    types: list[int]
    word_ids: list[int | None]
    input: int
    window: Window | None


class Tokens:
    """What the task types ask of a tokenizer."""

    def texts(self, firsts: list[str], seconds: list[str] | None, max_length: int) -> list[tuple[list, list]]:
        """(ids, token type ids) per text, or per (first, second) pair joined with [SEP]."""
        raise NotImplementedError

    def words(self, words: list[list[str]], max_length: int, stride: int | None) -> list[WordRow]:
        """Rows of pre-split words; with a `stride`, every window of a text longer than max_length, in
        input order (the text, then its overflow)."""
        raise NotImplementedError


class TransformersTokens(Tokens):
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def texts(self, firsts, seconds, max_length):
        enc = self.tokenizer(firsts, seconds, truncation=True, max_length=max_length, return_token_type_ids=True)
        return list(zip(enc["input_ids"], enc["token_type_ids"], strict=True))

    def words(self, words, max_length, stride):
        windows = {"return_overflowing_tokens": True, "stride": stride} if stride is not None else {}
        enc = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                             return_token_type_ids=True, **windows)
        input_of = enc["overflow_to_sample_mapping"] if windows else range(len(words))
        return [WordRow(enc["input_ids"][r], enc["token_type_ids"][r], enc.word_ids(r), i,
                        Window(i, stride) if windows else None) for r, i in enumerate(input_of)]


class TokenizersTokens(Tokens):
    """The tokenizers library's Tokenizer, one per (max_length, stride) from `tokenizer_for`: truncation is
    the tokenizer's state, so tasks of different lengths never share one."""

    def __init__(self, tokenizer_for):
        self.tokenizer_for = tokenizer_for

    def texts(self, firsts, seconds, max_length):
        batch = firsts if seconds is None else list(zip(firsts, seconds, strict=True))
        return [(e.ids, e.type_ids) for e in self.tokenizer_for(max_length, 0).encode_batch(batch)]

    def words(self, words, max_length, stride):
        encs = self.tokenizer_for(max_length, stride or 0).encode_batch(words, is_pretokenized=True)
        if stride is None:
            return [WordRow(e.ids, e.type_ids, e.word_ids, i, None) for i, e in enumerate(encs)]
        # the order transformers gives with return_overflowing_tokens: the text, then its overflow
        return [WordRow(w.ids, w.type_ids, w.word_ids, i, Window(i, stride))
                for i, e in enumerate(encs) for w in [e, *e.overflowing]]


def as_tokens(tokenizer) -> Tokens:
    return tokenizer if isinstance(tokenizer, Tokens) else TransformersTokens(tokenizer)


def label_id(ex: Example, label: str, label_ids: dict[str, int], name: str) -> int:
    if label not in label_ids:
        known = ", ".join(list(label_ids)[:20])
        raise UserError(f"{ex.where}: label '{label}' of task {name} was not seen in train (labels: {known})")
    return label_ids[label]


def encode_texts(examples: list[Example], tokenizer, max_length: int, labels_of: list,
                 pair_encoding: str = "cross") -> list[Feature]:
    """A text (or a text pair) per example: one sequence, [SEP] between a pair; with `pair_encoding:
    separate`, a group of two sequences (text, text_pair), each encoded alone."""
    tokens = as_tokens(tokenizer)
    pairs = [ex.text_pair for ex in examples] if examples and examples[0].text_pair is not None else None
    if pairs is not None and pair_encoding == "separate":
        a = tokens.texts([ex.text for ex in examples], None, max_length)
        b = tokens.texts(pairs, None, max_length)
        return [Feature([x[0], y[0]], [x[1], y[1]], label) for x, y, label in zip(a, b, labels_of, strict=True)]
    encoded = tokens.texts([ex.text for ex in examples], pairs, max_length)
    return [Feature(ids, types, label) for (ids, types), label in zip(encoded, labels_of, strict=True)]


def encode_choices(examples: list[Example], tokenizer, max_length: int, with_labels: bool, name: str) -> list[Feature]:
    """A group of (context, choice) pairs per example, the context being the text and its question."""
    n = len(examples[0].choices) if examples else 0
    odd = next((i for i, ex in enumerate(examples) if len(ex.choices) != n), None)
    if odd is not None:  # name the first example that differs, and the one it differs from
        ex, first = examples[odd], examples[0]
        where = ex.where or f"input {odd + 1}"
        first_where = f"line {first.line}" if first.line else "input 1"
        raise UserError(f"{where}: {len(ex.choices)} choices, but {first_where} has {n} (task {name}); "
                        "every example of a multiple-choice task needs the same number of choices")
    firsts = [f"{ex.text} {ex.question}" if ex.question else ex.text for ex in examples for _ in ex.choices]
    seconds = [c for ex in examples for c in ex.choices]
    encoded = as_tokens(tokenizer).texts(firsts, seconds, max_length)
    return [Feature([ids for ids, _ in encoded[i * n:(i + 1) * n]], [t for _, t in encoded[i * n:(i + 1) * n]],
                    ex.label if with_labels else None)
            for i, ex in enumerate(examples)]


def encode_words(examples: list[Example], tokenizer, max_length: int, label_ids: dict[str, int] | None,
                 name: str, stride: int | None, all_subtokens: bool = False) -> list[Feature]:
    """Words -> sub-tokens, the tag ids (with `label_ids`) on each word's first one (on all of them with
    `all_subtokens`, as DeepPavlov's token_labels_to_subtoken_labels). With a `stride`, every window of a
    text longer than max_length, each a Feature without labels (they are for prediction)."""
    if label_ids is not None:
        for ex in examples:  # every word's tag, also past max_length: evaluation scores every word
            for tag in ex.label:
                label_id(ex, tag, label_ids, name)
    feats = []
    for row in as_tokens(tokenizer).words([ex.tokens for ex in examples], max_length, stride):
        ex = examples[row.input]
        tag_ids = None
        if label_ids is not None and stride is None:
            tag_ids, prev = [], None
            for w in row.word_ids:
                tagged = w is not None and (w != prev or all_subtokens)
                tag_ids.append(label_ids[ex.label[w]] if tagged else IGNORE)
                prev = w
        feats.append(Feature(row.ids, row.types, tag_ids, row.word_ids, row.window, len(ex.tokens)))
    return feats
