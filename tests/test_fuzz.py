"""Fuzz (hypothesis): the readers and the command line's argument space.

The promise tested: whatever a user feeds mtbert (file contents, bytes included, and any argv of train,
evaluate, predict, convert, export and compare), the outcome is success or exit 2 with exactly one stderr
line `mtbert: error: ...`; never a traceback, and never a changed input file (every file of the example's
folder is hashed before and after; only the files a command names as its outputs may change).

Nothing here trains a real model: the config is the tiny random BERT for `training.max_steps: 1`, and most
generated argv fail at validation. By default both tests run in about a minute; MTBERT_FUZZ_SCALE=10 runs ten
times the examples.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtbert.config import validate
from mtbert.data.features import build_labels, encode
from mtbert.data.readers import read_split
from mtbert.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCALE = float(os.environ.get("MTBERT_FUZZ_SCALE", "1"))  # e.g. 10 for a longer hunt than the default minute

# ---------------------------------------------------------------- file contents

# pieces that mean something to one of the formats, so random joins make near-valid files
PIECES = ["\t", ",", ";", '"', "'", "\n", "\r\n", "\r", " ", "  ", "{", "}", "[", "]", ":", "a", "good film",
          "sentence", "label", "pos", "neg", "1", "0", "1.0", "-3e5", "1_000", "nan", "inf", ".", "-", "B-PER",
          "I-PER", "B-NP", "O", "-DOCSTART-", "true", "false", "null", '"a"', '"label"', '"text"', '"choices"',
          "\u200b", "\ufeff", "\x00", "\x1b", "é", "😀", "\\u", "\\ud800", "\u2028", "#"]
TEXTISH = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats()
                          | st.text(max_size=8) | st.sampled_from(["pos", "neg", "good film", "B-PER", "O", "\u200b"]),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                   max_size=4), max_leaves=12)
KEYS = st.sampled_from(["text", "label", "a", "b", "choices", "tokens", "tags", "y", "p", "c1", "c2", "id"])
JSON_LINES = st.lists(st.dictionaries(KEYS, JSON_VALUE, max_size=6).map(lambda r: json.dumps(r) + "\n")
                      | TEXTISH.map(lambda t: t + "\n"), max_size=6).map("".join)
CONTENT = st.one_of(TEXTISH, JSON_LINES, st.binary(max_size=200),
                    TEXTISH.map(lambda t: t.encode("utf-8", "surrogatepass")))

TASKS = [  # one of each format and type, header names and indices, the options the readers branch on
    {"type": "classification", "columns": {"text": "sentence", "label": "label"}},
    {"type": "classification", "header": False, "columns": {"text": 0, "label": 1}},
    {"type": "classification", "format": "csv", "columns": {"text": "a", "text_pair": "b", "label": "label"}},
    {"type": "regression", "format": "csv", "quoting": "none", "delimiter": ";", "header": False,
     "columns": {"text": 0, "label": -1}},
    {"type": "regression", "format": "jsonl", "columns": {"text": "text", "label": "label"}},
    {"type": "classification", "format": "jsonl", "columns": {"text": "text", "label": "y"}, "on_bad_rows": "skip"},
    {"type": "multiple_choice", "format": "jsonl", "columns": {"text": "p", "choices": ["choices"], "label": "y"}},
    {"type": "multiple_choice", "format": "tsv", "header": False, "columns": {"text": 0, "choices": [1, 2], "label": 3}},
    {"type": "sequence_labeling", "format": "jsonl", "columns": {"tokens": "tokens", "tags": "tags"}},
    {"type": "sequence_labeling", "format": "conll", "columns": {"tokens": 0, "tags": -1}},
    {"type": "sequence_labeling", "format": "conll", "delimiter": "\t", "columns": {"tokens": 0, "tags": 1},
     "on_bad_rows": "skip"},
]


def digest(path: Path) -> dict[str, str]:
    """Every file under `path`, by relative name, with the sha256 of its bytes."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


def test_readers_read_or_refuse_in_one_line(tokenizer):
    """read_split, the label vocabulary and the tokenisation of any content: Examples or one UserError line."""

    @settings(FUZZ, max_examples=int(150 * SCALE))
    @given(content=CONTENT, task=st.sampled_from(TASKS), split=st.sampled_from(["train", "dev"]))
    def check(content, task, split):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d, "file")
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
            before = digest(Path(d))
            try:
                cfg = validate({"data_dir": d, "tasks": {"t": {**task, split: "file"}}})
                examples = read_split(cfg, "t", split)
                labels = build_labels(task["type"], examples, name="t")
                feats = encode(task["type"], examples, tokenizer, 32, labels, "t")
                assert len(feats) == len(examples)
            except UserError as err:
                assert "\n" not in str(err) and str(err).strip(), repr(str(err))
            assert digest(Path(d)) == before

    check()


# ---------------------------------------------------------------- the command line


GOOD = "sentence\tlabel\ngood film\tpos\nbad film\tneg\n"


def tiny_config(tiny_bert: str, data: Path, run_dir: Path) -> dict:
    return {"backbone": tiny_bert, "data_dir": data.as_posix(), "run_dir": run_dir.as_posix(), "max_length": 32,
            "tasks": {"sent": {"type": "classification", "train": "train.tsv", "dev": "dev.tsv", "test": "dev.tsv",
                               "columns": {"text": "sentence", "label": "label"}}},
            "training": {"max_steps": 1, "batch_size": 2, "progress": False, "precision": "fp32"}}


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_bert) -> Path:
    """The folder each example starts from: config, data, an --input file, a DeepPavlov config and a
    trained run (one step of the tiny BERT)."""
    from mtbert.config import load_config
    from mtbert.training.trainer import train

    tmp = tmp_path_factory.mktemp("fuzz_template")
    (tmp / "data").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp / "data" / name).write_text(GOOD)
    # relative paths: each example runs in its own copy of this folder, and must write only there
    (tmp / "config.yaml").write_text(yaml.safe_dump(tiny_config(tiny_bert, Path("data"), Path("new-run"))))
    (tmp / "bad.yaml").write_text("tasks:\n  sent:\n    type: classification: x\n")
    (tmp / "in.jsonl").write_text('{"text": "good film"}\n{"text": "bad"}\n')
    shutil.copy(ROOT / "configs" / "deeppavlov" / "multitask_example.json", tmp / "dp.json")
    (tmp / "abs.yaml").write_text(yaml.safe_dump(tiny_config(tiny_bert, tmp / "data", tmp / "run")))
    train(load_config(tmp / "abs.yaml"), tmp / "run")
    (tmp / "abs.yaml").unlink()
    return tmp


# Values are relative to the example's folder (the cwd of the call): never a path outside it.
PATH = st.sampled_from(["config.yaml", "bad.yaml", "dp.json", "in.jsonl", "data", "data/train.tsv", "data/dev.tsv",
                        "run", "run/model", "run/config.yaml", "run/model/labels.json", "missing",
                        "missing/x.jsonl", "out", "out.jsonl", "out/x.yaml", ".", "", "-", "fuzz.data"])
WORD = st.sampled_from(["sent", "nosuch", "0", "-1", "70000", "nan", "", "dev", "test", "jsonl", "minbert", "torch",
                        "onnx", "int8", "pretrain", "finetune", "pretrain,finetune", "bogus", ",", "--", "-h",
                        "\x00", "é\u200b"])
SET = st.sampled_from(["training.lr=3e-5", "training.max_steps=0", "seed=-1", "seed=99999999999999999999",
                       "tasks.sent.labels=[pos, pos]", "tasks.sent.class_weights=[1, -1]", "tasks.sent.header=false",
                       "tasks=[]", "training=", "a.b.c=1", "max_length=100000", "tasks.sent.metric=mcc", "=", "x",
                       "tasks.sent.train=fuzz.data", "tasks.sent.dev=../in.jsonl", "tasks.sent.format=jsonl",
                       "run_dir=data", "backbone=data"])
DATA = st.sampled_from(["sent=fuzz.data", "sent=data/dev.tsv", "sent=missing", "sent=data", "nosuch=data/dev.tsv",
                        "sent=", "=", "x"])
INT = st.sampled_from(["1", "0", "-1", "x", "2.5", "64"])
ANY = st.one_of(PATH, WORD)

# each command's options: a flag with the values it is drawn from (None: a switch)
COMMANDS = {
    "train": (["config"], {"--set": SET, "--run-dir": PATH, "--overwrite": None, "--resume": PATH,
                           "--nproc": st.sampled_from(["1", "0", "-1", "x"])}),  # > 1 would start torchrun
    "evaluate": (["run"], {"--split": WORD, "--data": DATA, "--task": WORD, "--batch-size": INT,
                           "--custom-metrics": None}),
    "predict": (["run"], {"--task": WORD, "--input": PATH, "--output": PATH, "--split": WORD, "--format": WORD,
                          "--probas": None, "--batch-size": INT, "--all": None, "--skip-existing": None,
                          "--engine": WORD}),
    "convert": (["dp.json"], {"-o": PATH, "--output": ANY}),
    "export": (["run"], {"--format": WORD, "--quantize": st.sampled_from(["int8", "int8-smoothquant", "x"]), "-o": PATH,
                         "--smoothquant-alpha": INT}),
    "compare": (["config"], {"--modes": WORD, "--set": SET, "--run-dir": PATH, "--overwrite": None}),
}
POSITIONAL = {"config": st.sampled_from(["config.yaml", "config.yaml", "bad.yaml", "dp.json", "missing", "data"]),
              "run": st.sampled_from(["run", "run", "run", "run/model", "data", "missing", "config.yaml"]),
              "dp.json": st.sampled_from(["dp.json", "dp.json", "config.yaml", "bad.yaml", "missing"])}


@st.composite
def argvs(draw) -> list[str]:
    command = draw(st.sampled_from(list(COMMANDS)))
    positional, options = COMMANDS[command]
    argv = [command] + [draw(POSITIONAL[p]) for p in positional]
    for flag in draw(st.lists(st.sampled_from(list(options)), max_size=4)):
        argv.append(flag)
        if options[flag] is not None:
            argv.append(draw(options[flag]))
    if draw(st.booleans()):
        argv.insert(0, "-q")
    if draw(st.integers(0, 9)) == 0:  # now and then a stray word or an unknown flag
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--bogus", "extra", "-x"])))
    return argv


def outputs(argv: list[str]) -> set[str]:
    """The paths a command is asked to write: they may change, unless they are also what it reads (an
    output that is also an input is refused)."""
    command = argv[argv[:1] == ["-q"]] if argv else ""
    named, read = set(), set()
    for i, arg in enumerate(argv[:-1]):
        value = os.path.normpath(argv[i + 1]) if argv[i + 1] else ""
        if arg in ("--output", "-o"):
            named.add(value)
        elif arg == "--input":
            read.add(value)
        elif arg == "--data":
            read.add(os.path.normpath(argv[i + 1].partition("=")[2] or "."))
    if command == "predict" and "--input" not in argv:
        read.add("-")
    if command in ("train", "compare", "convert") and len(argv) > argv.index(command) + 1:
        read.add(os.path.normpath(argv[argv.index(command) + 1]))  # the config
    if command in ("train", "compare"):
        named.update({"run", "new-run"})  # train's own run dirs: --overwrite and --resume rewrite them
    return named - read


def changed_inputs(before: dict[str, str], after: dict[str, str], argv: list[str]) -> list[str]:
    allowed = outputs(argv)

    def may_change(rel: str) -> bool:
        parts = Path(rel).parts
        # an output named as a file, or a prediction file written into an output folder
        return any(rel == o or (rel.startswith(o + os.sep) and rel.endswith(("-predictions.jsonl", "-output.csv")))
                   or (o in ("run", "new-run") and parts[0] == o) for o in allowed)

    return [rel for rel, h in before.items() if after.get(rel) != h and not may_change(rel)]


def run_cli(argv: list[str], cwd: Path) -> tuple[int, str]:
    """(exit code, stderr) of `mtbert ARGV` in `cwd`; a traceback is code 1 with the traceback as stderr."""
    from mtbert.cli import main

    err, old_cwd, old_stdin = io.StringIO(), os.getcwd(), sys.stdin
    os.chdir(cwd)
    sys.stdin = io.StringIO('{"text": "good film"}\n')  # `--input -` (the default) reads stdin
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse: --help, --version, a bad flag
                code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # what escapes main() is what a user sees as a traceback
        return 1, traceback.format_exc()
    finally:
        os.chdir(old_cwd)
        sys.stdin = old_stdin
    return code, err.getvalue()


def seen_lines(stderr: str) -> list[str]:
    """The non-blank lines a terminal shows: a carriage return (a progress bar redrawn, or wiped) starts the
    line again."""
    return [shown for line in stderr.split("\n") if (shown := line.split("\r")[-1]).strip()]


def test_cli_argument_space(template, tmp_path_factory):
    """Any argv: success, or exit 2 with one line; no traceback; no input file changed."""
    base = tmp_path_factory.mktemp("fuzz_cli")

    @settings(FUZZ, max_examples=int(60 * SCALE))
    @given(argv=argvs(), data=CONTENT)
    def check(argv, data):
        folder = Path(tempfile.mkdtemp(dir=base))
        try:
            shutil.copytree(template, folder, dirs_exist_ok=True)
            (folder / "fuzz.data").write_bytes(data if isinstance(data, bytes)
                                               else data.encode("utf-8", "surrogatepass"))
            before = digest(folder)
            code, err = run_cli(argv, folder)
            assert "Traceback" not in err, f"mtbert {argv}:\n{err}"
            assert code in (0, 2), f"mtbert {argv}: exit {code}\n{err}"
            if code == 2 and "--help" not in argv and "-h" not in argv:
                lines = seen_lines(err)
                assert len(lines) == 1 and lines[0].startswith("mtbert: error: "), f"mtbert {argv}:\n{err}"
            changed = changed_inputs(before, digest(folder), argv)
            assert not changed, f"mtbert {argv} changed {changed}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    check()


def test_progress_bar_leaves_only_the_error_line(template, tmp_path_factory):
    """Found by the fuzz: `predict --all` on a bad --input left its progress bar above the error line."""
    folder = tmp_path_factory.mktemp("fuzz_bar")
    shutil.copytree(template, folder, dirs_exist_ok=True)
    code, err = run_cli(["predict", "run", "--all", "--input", "config.yaml"], folder)
    assert code == 2 and "|" in err, err  # the bar was drawn, then wiped
    assert seen_lines(err) == ["mtbert: error: config.yaml line 1: not valid JSON (Expecting value); each line must "
                               'be one JSON object, e.g. {"text": "..."}'], err
