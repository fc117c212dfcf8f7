"""The exception type for mistakes a user can fix (config, data, CLI arguments, inputs to predict), and its
one kind that says which input of a batch was wrong as data.

The CLI prints its message on one line and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input, with a message that names the place and the fix."""


class InputError(UserError):
    """One input of a batch is wrong. `index` is its place in the list (from 0) and `reason` what is wrong,
    as data: the message says "input N: reason" (N from 1), and an edge that knows the input by another
    name (a line of a file, a riseapi argument) says that name with `at`, never by parsing the message."""

    def __init__(self, index: int, reason: str, where: str | None = None):
        self.index, self.reason, self.where = index, reason, where
        super().__init__(f"{where or f'input {index + 1}'}: {reason}")

    def __reduce__(self):  # pickled with its data, as when raised in a worker process
        return InputError, (self.index, self.reason, self.where)

    def at(self, where: str) -> InputError:
        """The same error, the input named `where`."""
        return InputError(self.index, self.reason, where)
