"""The one exception type for mistakes a user can fix (config, data, CLI arguments).

The CLI prints its message on one line and exits with code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that names the place and the fix."""
