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
        # tasks whose data mtbert cannot read here (a download DeepPavlov would make, a hub dataset offline,
        # a local file that is not there): task -> what is missing and the fix, told apart from the keys
        # mtbert does not support, whose fix is to change the config
        self.missing: dict[str, list[str]] = {}
        # hub tasks: task -> (path, name, its reader's key path, whether mtbert knows its official files)
        self.hub: dict[str, tuple[str, str | None, str, bool]] = {}
        self.hub_down = ""  # why the hub cannot be used here, when a hub task needs it
        # local files a task names that are not there: told with the tasks above when the data is checked
        # (train, convert), left to the reader otherwise (a config converted to be run elsewhere)
        self.absent: dict[str, list[str]] = {}

    def missing_data(self, task: str, why: str) -> None:
        self.missing.setdefault(task, []).append(why)

    def absent_file(self, task: str, why: str) -> None:
        self.absent.setdefault(task, []).append(why)

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

    def raise_if_any(self, source: str, tasks: Iterable[str] = ()) -> None:
        """One error for everything found: the tasks without data first (each with its fix, and the
        --skip-tasks / --only-tasks that trains the others), then the keys mtbert does not support."""
        parts = []
        if self.missing:
            names = list(self.missing)
            rest = [t for t in tasks if t not in self.missing]
            parts.append(
                f"{len(names)} task{'s' if len(names) > 1 else ''} without data mtbert can read (it downloads "
                f"nothing{'; ' + self.hub_down if self.hub_down else ''}): " + "; ".join(f"{t}: {' and '.join(why)}" for t, why in self.missing.items())
                + (f". Or train the others: --skip-tasks {','.join(names)} (the same as --only-tasks {','.join(rest)})"
                   if rest else ""))
        if self.problems:
            parts.append(f"not supported by mtbert's DeepPavlov import: {'; '.join(self.problems)} "
                         "(remove or change these keys; docs/deeppavlov.md lists what is supported)")
        if parts:
            raise UserError(f"{source}: " + ". Also ".join(parts))

    def log_notes(self) -> None:
        for level, message in self.notes:
            log.log(level, message)
