"""The command line's papercuts (issue 19): -q anywhere, help for every argument with an example per
subcommand, and predict saying it reads standard input instead of seeming to hang."""

from __future__ import annotations

import argparse
import io
import json
import logging

import pytest
from serve_fixtures import served_run  # noqa: F401 - fixture

from mtbert.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_argument_has_help_and_every_subcommand_an_example():
    commands = _subcommands()
    assert {"train", "check", "evaluate", "predict", "convert", "compare", "serve", "export"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            assert action.help, f"mtbert {name}: {action.dest} has no help"
        text = parser.format_help()
        assert f"example:\n  mtbert {name} " in text or (name == "predict" and "| mtbert predict " in text), text


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_works_before_and_after_the_subcommand(where, toy_config, write_config, capsys):
    path = str(write_config(toy_config))
    argv = ["-q", "check", path, "--no-timing"] if where == "before" else ["check", path, "--no-timing", "-q"]
    assert main(argv) == 0
    assert logging.getLogger("mtbert").level == logging.WARNING  # the info lines ("task sent: ...") are off
    args = build_parser().parse_args(argv)
    assert args.quiet is True
    assert build_parser().parse_args(["check", path]).quiet is False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_predict_from_a_terminal_says_it_reads_standard_input(served_run, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr("sys.stdin", _Terminal(json.dumps({"text": "great fun"}) + "\n"))
    assert main(["predict", str(served_run), "--task", "sent"]) == 0
    out, err = capsys.readouterr()
    assert "reading JSON Lines from standard input" in err and "--input FILE" in err
    assert json.loads(out)["label"] in ("pos", "neg")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"text": "great fun"}) + "\n"))  # a pipe: no notice
    assert main(["predict", str(served_run), "--task", "sent"]) == 0
    assert "standard input" not in capsys.readouterr().err
