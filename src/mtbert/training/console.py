"""What training prints while its progress bars run.

Log lines go through tqdm.write, above the bars, instead of cutting a bar in two; and each distinct
warning is shown once per run: a dev set a young model predicts as one class repeats "mcc: all
predictions are the same class" at every evaluation, which says nothing new after the first.
"""

from __future__ import annotations

import contextlib
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("mtbert")


class OncePerRun(logging.Filter):
    """Let each distinct warning (or worse) through once; lower levels always pass."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _prints_to_console(logger: logging.Logger) -> bool:
    return any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr) for h in logger.handlers)


@contextlib.contextmanager
def training_console():
    once = OncePerRun()
    log.addFilter(once)
    # tqdm's redirect adds a console handler even where none was (a library caller that configured no
    # logging, or one logging to a file): redirect only a console that is there
    redirect = logging_redirect_tqdm() if _prints_to_console(logging.root) else contextlib.nullcontext()
    try:
        with redirect:
            yield
    finally:
        log.removeFilter(once)
