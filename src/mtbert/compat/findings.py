"""What a DeepPavlov conversion finds: keys mtbert cannot honour (raised together) and notes for the log."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mtbert.errors import UserError

log = logging.getLogger("mtbert")


class Findings:
    """Collects every unsupported key or value, so one error names them all instead of the first one only.

    A DeepPavlov config is usually converted once; fixing it one key per run would be slow and would
    hide how far the config is from what mtbert can do."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.notes: list[tuple[int, str]] = []

    def problem(self, where: str, why: str) -> None:
        self.problems.append(f"{where}: {why}")

    def note(self, message: str, level: int = logging.INFO) -> None:
        if (level, message) not in self.notes:
            self.notes.append((level, message))

    def check_keys(self, node: dict, where: str, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for key in node:
            if key not in allowed:
                self.problem(f"{where}.{key}" if where else str(key), "not supported")

    def expect(self, node: dict, key: str, where: str, allowed: tuple, why: str) -> None:
        """A key mtbert accepts only with the values in `allowed` (usually DeepPavlov's default)."""
        if key in node and node[key] not in allowed:
            self.problem(f"{where}.{key}", f"{node[key]!r} is not supported ({why})")

    def number(self, value, where: str, integer: bool = True):
        """A number, also from a string: a DP_<NAME> environment override always arrives as one."""
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.problem(where, f"expected a number, got {value!r}")
            return None
        if integer:
            if not x.is_integer():
                self.problem(where, f"expected a whole number, got {value!r}")
                return None
            return int(x)
        return x

    def flag(self, value, where: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.problem(where, f"expected true or false, got {value!r}")
        return False

    def raise_if_any(self, source: str) -> None:
        if self.problems:
            raise UserError(f"{source}: not supported by mtbert's DeepPavlov import: {'; '.join(self.problems)} "
                            "(remove or change these keys; docs/deeppavlov.md lists what is supported)")

    def log_notes(self) -> None:
        for level, message in self.notes:
            log.log(level, message)
