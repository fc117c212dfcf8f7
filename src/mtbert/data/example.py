"""One input as the readers, the request edge and the task types see it: `Example`, and the checks that
turn one raw value of a row (a cell, a JSON value) into a field of it, raising `BadRow` with the reason.

No config, no tokenizer, no torch: the task types (mtbert.tasks) build Examples with these, and the
config imports the task types.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any


@dataclass
class Example:
    """One input with its gold label. `label` is a string (classification), a float (regression), the
    index of the right choice (multiple_choice) or a list of tags (sequence_labeling)."""

    text: str | None = None
    text_pair: str | None = None
    question: str | None = None
    choices: list[str] | None = None
    tokens: list[str] | None = None
    label: Any = None
    source: str = ""
    line: int = 0
    id: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}" if self.line else self.source


class BadRow(Exception):
    """A row that cannot become an Example; the reader adds file and line. `missing`: the keys a JSON
    record lacks, and `has` the keys it holds, so a mapping no row fits can be told apart from a bad row."""

    def __init__(self, message: str, missing: tuple = (), has: tuple = ()):
        super().__init__(message)
        self.missing, self.has = missing, has




def short(value) -> str:
    """A value for a message: its repr, cut to 60 characters (a bad cell may be a whole line)."""
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)  # true, as the file says
    return text if len(text) <= 60 else text[:57] + "..."


def word_field(value, name: str) -> str:
    """A token or tag of a JSON Lines / datasets record: a string (or a number, as tag ids often are)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRow(f"{name} {short(value)} is {json_kind(value)}, not a string")
    return str(value)


def text_field(value, name: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRow(f"empty {name}")
    if not isinstance(value, str):  # JSON Lines: {"x": 1}, [..], true or 3 would be read as their repr
        raise BadRow(f"{name} is {json_kind(value)}, not a string; write the {name} as a JSON string")
    if not any(unicodedata.category(c)[0] not in INVISIBLE for c in value):
        raise BadRow(f"{name} {short(value)} has no visible character (only control, zero-width or space "
                     "characters); the tokenizer would see an empty text")
    return value


# Unicode categories with no glyph: C* (control, format such as U+200B zero-width space, U+FEFF, private
# use, unassigned) and Z* (separators). A text of only these tokenises to nothing but [CLS] [SEP].
INVISIBLE = "CZ"


def json_kind(value) -> str:
    kinds = ((type(None), "JSON null"), (bool, "a JSON boolean"), (dict, "a JSON object"), (list, "a JSON list"), ((int, float), "a JSON number"))
    return next((name for types, name in kinds if isinstance(value, types)), type(value).__name__)


# A number as people write it in a data file: ASCII digits, optional sign, point and exponent. Python's
# float() also takes '1_000', ' 1e3', 'infinity' and non-ASCII digits ('١'), which are typos here.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def number_field(raw, what: str) -> float:
    """A label cell or JSON value as a finite float; a JSON boolean is not a number (float(True) is 1.0)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise BadRow(f"label {short(raw)} is {json_kind(raw)}, not {what}")
    if isinstance(raw, str) and not NUMBER.fullmatch(raw.strip()):
        finite_word = raw.strip().lower().lstrip("+-") not in ("nan", "inf", "infinity")
        raise BadRow(f"label {short(raw)} is not {what}" if finite_word else f"label {raw!r} is not a finite number")
    try:
        value = float(raw)
    except OverflowError:  # a JSON integer with 400 digits
        raise BadRow(f"label {short(raw)} is not {what}") from None
    if not math.isfinite(value):
        raise BadRow(f"label {raw!r} is not a finite number")
    return value
