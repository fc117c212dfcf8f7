"""Every row of docs/bad-inputs.md, proved: one test per row, all driven by CASES below.

A case writes its bad config, data file or run dir into tmp_path, runs the real command line
(`mtbert.cli.main`) or, for the rows that have no command yet, the Python call, and compares what the user
sees with the row: exit code 2 means stderr is exactly one line, `mtbert: error: ...`, matching the row's
message; 0 means the input works (the case's `check` looks closer); 1 means a traceback whose exception line
matches. `test_doc_matches_cases` parses the doc and asserts its rows and CASES are the same, in the same
order, so the two cannot drift: after changing CASES, `python tests/test_bad_inputs.py` prints the tables
to paste into the doc.

In a message, `<tmp>`, `<data>` and `<run>` stand for the test's paths and `…` for any text.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-inputs.md"
GROUPS = {"config": "Config", "data": "Data", "cli": "Command line", "run": "Run dirs, bundles and outputs",
          "eval": "Evaluate and predict", "security": "Security", "files": "Files"}
UNDEFINED = "MTBERT_BAD_INPUT_UNDEFINED"


class Env:
    """What a case's setup works with: tmp_path and helpers to write configs, data files and run dirs."""

    def __init__(self, tmp_path: Path, request):
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.data.mkdir()
        self.run = tmp_path / "run"
        self._request = request
        self.config_path: Path | None = None  # the config `config()` wrote last

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.data / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return path

    def config(self, tasks: dict | None = None) -> Path:
        """config.yaml: the tiny BERT trained for one step on `tasks` (default: the one task `sent`)."""
        raw = {"backbone": self.tiny_bert(), "data_dir": str(self.data), "run_dir": str(self.run), "max_length": 32,
               "tasks": tasks if tasks is not None else {"sent": sent()},
               "training": {"max_steps": 1, "batch_size": 2, "progress": False, "precision": "fp32"}}
        self.config_path = self.tmp / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        return self.config_path

    def tiny_bert(self) -> str:
        return self._request.getfixturevalue("tiny_bert")

    def trained_run(self) -> Path:
        """The module's one trained run (read only); `copy_run` for a run dir a case may change."""
        return self._request.getfixturevalue("trained_run")

    def copy_run(self) -> Path:
        shutil.copytree(self.trained_run(), self.run)
        return self.run

    def copy_bundle(self) -> Path:
        """A copy of the ONNX bundle exported from the trained run, at <run>, for a case to damage."""
        shutil.copytree(self._request.getfixturevalue("onnx_bundle"), self.run)
        return self.run

    def read_only(self, path: Path) -> Path:
        """Make `path` a folder nobody may write into until the test ends: its mode for a user, the immutable
        flag for root (who ignores modes); skipped where neither works."""
        import os
        import subprocess

        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            os.chmod(path, 0o555)
            self._request.addfinalizer(lambda: os.chmod(path, 0o755))
            return path
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("cannot make a folder read-only for root here (chattr +i)")
        self._request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(path)], check=True))
        return path

    def monkeypatch(self):
        return self._request.getfixturevalue("monkeypatch")


def sent(**extra) -> dict:
    task = {"type": "classification", "train": "train.tsv", "dev": "dev.tsv",
            "columns": {"text": "sentence", "label": "label"}}
    task.update(extra)
    return task


GOOD = "sentence\tlabel\ngood film\tpos\nbad film\tneg\n"


def with_good_data(env: Env) -> None:
    env.write("train.tsv", GOOD)
    env.write("dev.tsv", GOOD)


def train_with(tasks: dict | None = None, files: dict | None = None) -> Callable[[Env], list[str]]:
    """Setup: the good files (or `files`) and a config (one task `sent` unless `tasks`), then `mtbert train`."""

    def setup(env: Env) -> list[str]:
        with_good_data(env)
        for name, content in (files or {}).items():
            env.write(name, content)
        return ["train", str(env.config(tasks))]

    return setup


def train_with_config(mutate: Callable[[dict], None]) -> Callable[[Env], list[str]]:
    """Setup: good data, the default config changed by `mutate(raw)`, then `mtbert train`."""

    def setup(env: Env) -> list[str]:
        with_good_data(env)
        path = env.config()
        raw = yaml.safe_load(path.read_text())
        mutate(raw)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return ["train", str(path)]

    return setup


def train_with_text(text: str | bytes, name: str = "config.yaml") -> Callable[[Env], list[str]]:
    """Setup: good data and a config written as raw text (`{tiny}`, `{data}` and `{run}` filled in) or bytes."""

    def setup(env: Env) -> list[str]:
        with_good_data(env)
        path = env.tmp / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text.format(tiny=env.tiny_bert(), data=env.data, run=env.run), encoding="utf-8")
        return ["train", str(path)]

    return setup


def setting(dotted: str, value) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def deleting(dotted: str) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


# ---------------------------------------------------------------- files for the data and security rows

CONLL_GOOD = "John NNP B-NP B-PER\nlives VBZ B-VP O\nin IN B-PP O\nParis NNP B-NP B-LOC\n\n"
NER = {"type": "sequence_labeling", "format": "conll", "train": "ner.txt", "dev": "ner.txt", "columns": {"tokens": 0, "tags": 3}}
MC_ROWS = [{"p": "it rained", "choices": ["the grass got wet", "the sun shone"], "y": 0},
           {"p": "the sun shone", "choices": ["it got warm", "it snowed"], "y": 0}]
MC = {"type": "multiple_choice", "format": "jsonl", "train": "mc.jsonl", "dev": "mc.jsonl",
      "columns": {"text": "p", "choices": ["choices"], "label": "y"}}
STS = {"type": "regression", "train": "sts.tsv", "dev": "sts.tsv",
       "columns": {"text": "s1", "text_pair": "s2", "label": "score"}}


def jsonl(rows: list[dict], newline: str = "\n") -> str:
    return "".join(json.dumps(r) + newline for r in rows)


HEADED = "sentence\tlabel\ngood film\tpos\nbad film\tneg\nfine film\tpos\nawful film\tneg\n"
STS_JSON = {**STS, "format": "jsonl", "train": "sts.jsonl", "dev": "sts.jsonl"}
BOOL_JSON = {"type": "classification", "format": "jsonl", "train": "bool.jsonl", "dev": "bool.jsonl",
             "columns": {"text": "t", "label": "y"}}
CONLL_TAB = "John\tNNP\tB-NP\tB-PER\nlives\tVBZ\tB-VP\tO\nin\tIN\tB-PP\tO\nNew York\tNNP\tB-NP\tB-LOC\n\n"


def conll_tab_setup(env: Env) -> list[str]:
    with_good_data(env)
    env.write("ner.txt", CONLL_TAB)
    return ["train", str(env.config({"ner": NER}))]


def conll_tab_check(env: Env) -> None:
    from mtbert.config import load_config
    from mtbert.data.readers import read_split

    [ex] = read_split(load_config(env.config_path), "ner", "train")
    assert ex.tokens == ["John", "lives", "in", "New York"] and ex.label == ["B-PER", "O", "O", "B-LOC"]
    assert json.loads((env.run / "model" / "labels.json").read_text()) == {"ner": ["O", "B-LOC", "B-PER"]}


def bool_check(env: Env) -> None:
    assert json.loads((env.run / "model" / "labels.json").read_text()) == {"sent": ["False", "True"]}


def crlf_setup(env: Env) -> list[str]:
    """The same small tasks in every text format, every line ending in CRLF."""
    env.write("train.tsv", GOOD.replace("\n", "\r\n"))
    env.write("dev.tsv", GOOD.replace("\n", "\r\n"))
    env.write("pairs.csv", 'a,b,label\r\n"good, really",fine,pos\r\n"a ""bad"" one",awful,neg\r\n')
    env.write("mc.jsonl", jsonl(MC_ROWS, "\r\n"))
    env.write("ner.txt", CONLL_GOOD.replace("\n", "\r\n"))
    tasks = {"sent": sent(),
             "pairs": {"type": "classification", "format": "csv", "train": "pairs.csv", "dev": "pairs.csv",
                       "columns": {"text": "a", "text_pair": "b", "label": "label"}},
             "mc": MC, "ner": NER}
    return ["train", str(env.config(tasks))]


def crlf_check(env: Env) -> None:
    from mtbert.config import load_config
    from mtbert.data.readers import read_split

    cfg = load_config(env.config_path)
    for name in cfg.tasks:
        for ex in read_split(cfg, name, "train"):
            fields = [ex.text, ex.text_pair, ex.question, *(ex.choices or []), *(ex.tokens or []),
                      *(ex.label if isinstance(ex.label, list) else [ex.label])]
            assert not any("\r" in str(f) for f in fields if f is not None), (name, ex)
    labels = json.loads((env.run / "model" / "labels.json").read_text())
    assert labels == {"sent": ["neg", "pos"], "pairs": ["neg", "pos"], "ner": ["O", "B-LOC", "B-PER"]}
    pairs = read_split(cfg, "pairs", "train")
    assert [(e.text, e.text_pair) for e in pairs] == [("good, really", "fine"), ('a "bad" one', "awful")]


LONG = " ".join(["word"] * 200_001)  # 1 MB in one cell


def long_line_setup(env: Env) -> list[str]:
    env.write("train.tsv", f"sentence\tlabel\n{LONG}\tpos\nbad film\tneg\n")
    env.write("dev.tsv", GOOD)
    return ["train", str(env.config())]


def long_line_check(env: Env) -> None:
    from mtbert.config import load_config
    from mtbert.data.readers import read_split

    assert len(LONG) >= 1_000_000
    examples = read_split(load_config(env.config_path), "sent", "train")
    assert examples[0].text == LONG and examples[0].label == "pos"
    assert (env.run / "model" / "heads.safetensors").is_file()


class Payload:
    """Unpickling this creates `marker`: proof that the pickle ran. It must never run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_encoder_setup(env: Env) -> list[str]:
    import torch

    run = env.copy_run()
    encoder = run / "model" / "encoder"
    (encoder / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": Payload(env.tmp / "pwned")}, encoder / "pytorch_model.bin")
    (env.tmp / "in.jsonl").write_text('{"text": "good film"}\n')
    return ["predict", str(run), "--task", "sent", "--input", str(env.tmp / "in.jsonl")]


def missing_tokenizer_setup(env: Env) -> list[str]:
    """Without tokenizer.json, transformers builds a tokenizer of 5 special tokens from config.json."""
    run = env.copy_run()
    for name in ("tokenizer.json", "vocab.txt"):
        (run / "model" / "encoder" / name).unlink(missing_ok=True)
    (env.tmp / "in.jsonl").write_text('{"text": "good film"}\n')
    return ["predict", str(run), "--task", "sent", "--input", str(env.tmp / "in.jsonl")]


def malicious_optimizer_setup(env: Env) -> list[str]:
    import torch

    from mtbert.training.checkpoint import checkpoints

    run = env.copy_run()
    torch.save({"state": Payload(env.tmp / "pwned"), "param_groups": []}, checkpoints(run)[-1] / "optimizer.pt")
    return ["train", str(run / "config.yaml"), "--resume", str(run)]


def damaged_metrics_setup(env: Env) -> list[str]:
    """metrics.jsonl with a line in the middle that is no evaluation (a hand edit; a torn last line is dropped)."""
    run = env.copy_run()
    path = run / "metrics.jsonl"
    path.write_text('{"step": 0, "trunc\n' + path.read_text(), encoding="utf-8")
    return ["train", str(run / "config.yaml"), "--resume", str(run)]


def payload_never_ran(env: Env) -> None:
    assert not (env.tmp / "pwned").exists(), "the pickle was unpickled"


def over_a_run(env: Env) -> list[str]:
    env.copy_run()
    return train_with()(env)


def unreadable_input_setup(kind: str) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        path = {"missing": env.tmp / "missing.jsonl", "directory": env.tmp}[kind]
        return ["predict", str(env.trained_run()), "--task", "sent", "--input", str(path)]

    return setup


def input_file(content: str | bytes, *extra: str) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        path = env.tmp / "in.jsonl"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["predict", str(env.trained_run()), "--task", "sent", "--input", str(path), *extra]

    return setup


# ---------------------------------------------------------------- run dirs, bundles and outputs (issue 14, part 3)


def train_with_backbone(make: Callable[[Env], str], **task) -> Callable[[Env], list[str]]:
    """Setup: a config whose backbone is `make(env)` and whose task has `task` on top; train.tsv is empty, so
    a check made only after reading data would report the data instead."""

    def setup(env: Env) -> list[str]:
        with_good_data(env)
        env.write("train.tsv", "")
        path = env.config({"sent": sent(**task)})
        raw = yaml.safe_load(path.read_text())
        raw["backbone"] = make(env)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return ["train", str(path)]

    return setup


# ---------------------------------------------------------------- files for the files rows (outputs never destroy data)

IN_JSONL = '{"text": "good film"}\n'


def predict_into(output: Callable[[Env, Path], Path], *extra: str, copy: bool = False) -> Callable[[Env], list[str]]:
    """Setup: in.jsonl, then `mtbert predict` of the run (a copy at <run> if `copy`) with --output `output(env, run)`."""

    def setup(env: Env) -> list[str]:
        (env.tmp / "in.jsonl").write_text(IN_JSONL)
        run = env.copy_run() if copy else env.trained_run()
        return ["predict", str(run), *extra, "--input", str(env.tmp / "in.jsonl"),
                "--output", str(output(env, run))]

    return setup


def distilbert_config(env: Env) -> str:
    """A DistilBERT folder holding only its config.json: validation reads no more."""
    from transformers import DistilBertConfig

    path = env.tmp / "distilbert"
    DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64).save_pretrained(path)
    return str(path)


def run_dir_is_a_file(env: Env) -> list[str]:
    (env.tmp / "afile").write_text("not a folder\n")
    argv = train_with_config(setting("run_dir", str(env.tmp / "afile")))(env)
    return argv


def in_jsonl(env: Env, content: str = '{"text": "good film"}\n') -> Path:
    path = env.tmp / "in.jsonl"
    path.write_text(content, encoding="utf-8")
    return path


def predict_to(output: Callable[[Env], Path], *flags: str) -> Callable[[Env], list[str]]:
    """Setup: predict the trained run with `flags` (default --task sent --input in.jsonl) into `output(env)`."""

    def setup(env: Env) -> list[str]:
        flags_ = list(flags) or ["--task", "sent", "--input", str(in_jsonl(env))]
        if "--all" in flags_:
            flags_ += ["--input", str(in_jsonl(env))]
        return ["predict", str(env.trained_run()), *flags_, "--output", str(output(env))]

    return setup


DEEP = "[" * 100_000 + "]" * 100_000


def damaged(damage: Callable[[Path, Env], None], engine: str = "torch") -> Callable[[Env], list[str]]:
    """Setup: a copy of the trained run (its model/) or of its ONNX bundle, damaged, then predicted."""

    def setup(env: Env) -> list[str]:
        target = env.copy_run() / "model" if engine == "torch" else env.copy_bundle()
        damage(target, env)
        return ["predict", str(env.run), "--task", "sent", "--input", str(in_jsonl(env)), "--engine", engine]

    return setup


def writing(name: str, content: str | bytes) -> Callable[[Path, Env], None]:
    def damage(model: Path, env: Env) -> None:
        path = model / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")

    return damage


def truncating(name: str, keep: int) -> Callable[[Path, Env], None]:
    return lambda model, env: (model / name).write_bytes((model / name).read_bytes()[:keep])


def removing(name: str) -> Callable[[Path, Env], None]:
    return lambda model, env: (model / name).unlink()


def heads_of_another_task(model: Path, env: Env) -> None:
    from safetensors.torch import load_file, save_file

    heads = load_file(model / "heads.safetensors")
    save_file({k.replace("sent.", "other.", 1): v for k, v in heads.items()}, model / "heads.safetensors")


def encoder_of_another_size(model: Path, env: Env) -> None:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(model / "encoder")


def pickle_as_safetensors(model: Path, env: Env) -> None:
    import pickle

    (model / "heads.safetensors").write_bytes(pickle.dumps({"sent.out.weight": Payload(env.tmp / "pwned")}))


def huge_header(model: Path, env: Env) -> None:
    import struct

    (model / "encoder" / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b'{"a": 1}')


def reading_outside_the_run(env: Env) -> list[str]:
    """A run whose saved config names a file of the user's as its dev split."""
    secret = env.tmp / "secret.txt"
    secret.write_text("password=hunter2\n")
    run = env.copy_run()
    config = run / "model" / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["tasks"]["sent"]["dev"] = str(secret)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return ["evaluate", str(run)]


def train_read_only(env: Env) -> list[str]:
    argv = train_with()(env)
    return argv + ["--run-dir", str(env.read_only(env.tmp / "ro") / "run")]


def resume_read_only(env: Env) -> list[str]:
    run = env.read_only(env.copy_run())
    return ["train", str(run / "config.yaml"), "--resume", str(run)]


def export_read_only(env: Env) -> list[str]:
    return ["export", str(env.read_only(env.copy_run()))]


def full_disk_at(what: str) -> Callable[[Env], list[str]]:
    """Setup: train (one step, then the dev evaluation appends to metrics.jsonl, writes model/, then the
    checkpoint) on a disk that is full from the first write of `what`: "optimizer.pt" (a write of the
    checkpoint's file raises ENOSPC), "model" (the model's safetensors) or "metrics.jsonl" (its append, whose
    OSError names no file, as a real full disk's does not)."""
    import errno
    import io

    def setup(env: Env) -> list[str]:
        from mtbert import rundir
        from mtbert.training import checkpoint, trainer

        def no_space(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        class FullDisk(io.FileIO):
            def write(self, data):
                no_space()

        monkeypatch = env.monkeypatch()
        if what == "optimizer.pt":
            monkeypatch.setattr(checkpoint, "open", lambda path, mode="r", *a, **k: FullDisk(path, "wb")
                                if str(path).endswith("optimizer.pt") else open(path, mode, *a, **k), raising=False)
        elif what == "metrics.jsonl":
            monkeypatch.setattr(trainer, "append_line", no_space)
        else:
            monkeypatch.setattr(rundir, "save_file", no_space)
        return train_with()(env)

    return setup


def symlink_to_input(env: Env, run: Path) -> Path:
    (env.tmp / "link.jsonl").symlink_to(env.tmp / "in.jsonl")
    return env.tmp / "link.jsonl"


def input_unchanged(env: Env) -> None:
    assert (env.tmp / "in.jsonl").read_text() == IN_JSONL


def split_over_data_setup(env: Env) -> list[str]:
    """A run whose config reads its dev file from <data> under the name `predict --split` writes."""
    run = env.copy_run()
    config = run / "model" / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["data_dir"], raw["tasks"]["sent"]["dev"] = str(env.data), "sent-dev-predictions.jsonl"
    config.write_text(yaml.safe_dump(raw))
    env.write("sent-dev-predictions.jsonl", GOOD)
    return ["predict", str(run), "--split", "dev", "--output", str(env.data)]


def dev_file_unchanged(env: Env) -> None:
    assert (env.data / "sent-dev-predictions.jsonl").read_text() == GOOD


def export_into_data(env: Env) -> list[str]:
    env.write("notes.txt", "mine")
    return ["export", str(env.trained_run()), "-o", str(env.data)]


def exported_run(extra_file: bool = False) -> Callable[[Env], list[str]]:
    """Setup: a run exported once to <run>/onnx (with a file of the user's added if `extra_file`), then export again."""

    def setup(env: Env) -> list[str]:
        from mtbert.inference.export import export_onnx

        export_onnx(env.copy_run())
        if extra_file:
            (env.run / "onnx" / "Dockerfile").write_text("FROM scratch\n")
        return ["export", str(env.run), *(["--force"] if extra_file else [])]

    return setup


def the_fix_given_works(env: Env) -> None:
    """The message's one fix, once the disk has room again: train again with --overwrite."""
    from mtbert.cli import main

    env.monkeypatch().undo()
    assert main(["-q", "train", str(env.config_path), "--overwrite"]) == 0
    assert (env.run / "model" / "heads.safetensors").is_file()


def over_a_run_with_notes(env: Env) -> list[str]:
    env.copy_run()
    (env.run / "notes.txt").write_text("mine\n")
    return train_with()(env) + ["--overwrite"]


def notes_kept(env: Env) -> None:
    assert (env.run / "notes.txt").read_text() == "mine\n"
    assert (env.run / "model" / "heads.safetensors").is_file()


def users_config_in_run_dir(env: Env) -> list[str]:
    env.run.mkdir()
    (env.run / "config.yaml").write_text("# my notes on this config\n")
    return train_with()(env)


def config_in_run_dir(env: Env) -> list[str]:
    with_good_data(env)
    return ["train", str(env.config()), "--run-dir", str(env.tmp), "--overwrite"]


def convert_over_itself(env: Env) -> list[str]:
    dp = env.tmp / "dp.json"
    dp.write_text((ROOT / "configs/deeppavlov/multitask_example.json").read_text())
    return ["convert", str(dp), "-o", str(dp)]


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    group: str  # config | data | cli | security: the doc's sections
    what: str  # the bad input, as the doc's row says it
    command: str  # as the doc shows it
    setup: Callable[[Env], list[str] | Callable[[], object]]  # writes the files; argv of `mtbert`, or a call
    sees: str  # exit 2: the stderr line; 1: the exception line of the traceback; 0: what happens
    code: int  # exit code
    check: Callable[[Env], None] | None = None  # more assertions after the run


ERR = "mtbert: error: "
TRAIN = "mtbert train config.yaml"
CFG = "<tmp>/config.yaml: "

CASES = [
    # ------------------------------------------------ config
    Case("config-unknown-key", "config", "unknown key (`training.lrr`)", TRAIN,
         train_with_config(setting("training.lrr", 1e-4)),
         ERR + CFG + "training.lrr: unknown key; did you mean 'lr'? allowed keys: epochs, max_steps, …", 2),
    Case("config-unknown-task-key", "config", "unknown key in a task (`columns.lable`)", TRAIN,
         train_with_config(setting("tasks.sent.columns.lable", "label")),
         ERR + CFG + "tasks.sent.columns.lable: unknown key; did you mean 'label'? allowed keys: text, text_pair, …", 2),
    Case("config-wrong-type", "config", "wrong type (`batch_size: lots`)", TRAIN,
         train_with_config(setting("training.batch_size", "lots")),
         ERR + CFG + "training.batch_size: Input should be a valid integer, unable to parse string as an integer "
         "(got 'lots')", 2),
    Case("config-out-of-range", "config", "value out of range (`warmup: 2`)", TRAIN,
         train_with_config(setting("training.warmup", 2)),
         ERR + CFG + "training.warmup: Input should be less than or equal to 1", 2),
    Case("config-unknown-logger", "config", "unknown logger (`loggers: [tensorbord]`)", TRAIN,
         train_with_config(setting("training.loggers", ["tensorbord"])),
         ERR + CFG + "training.loggers: unknown logger 'tensorbord'; did you mean 'tensorboard'? known loggers: "
         "tensorboard, mlflow", 2),
    Case("config-mlflow-uri-alone", "config", "`mlflow_uri` without the mlflow logger", TRAIN,
         train_with_config(setting("training.mlflow_uri", "sqlite:///mlflow.db")),
         ERR + CFG + "training: mlflow_uri applies to the mlflow logger; add mlflow to training.loggers or remove "
         "mlflow_uri", 2),
    Case("config-missing-required", "config", "missing required key (a task without `type`)", TRAIN,
         train_with_config(deleting("tasks.sent.type")),
         ERR + CFG + "tasks.sent.type: required key is missing", 2),
    Case("config-missing-tasks", "config", "no `tasks:` at all", TRAIN,
         train_with_config(deleting("tasks")),
         ERR + CFG + "tasks: missing; add a tasks: mapping with one entry per task", 2),
    Case("config-missing-columns", "config", "a column the task type needs is not named", TRAIN,
         train_with_config(setting("tasks.sent.columns", {"text": "sentence"})),
         ERR + CFG + "tasks.sent: columns.label is required for classification tasks; name the column "
         "(a header name, a 0-based index, or a JSON key)", 2),
    Case("config-bad-delimiter", "config", "a delimiter of more than one character", TRAIN,
         train_with_config(setting("tasks.sent.delimiter", "::")),
         ERR + CFG + "tasks.sent: delimiter '::': tsv files need a single character other than a line break, "
         'e.g. "\\t" or ","', 2),
    Case("config-conll-column-name", "config", "CoNLL columns given by name", TRAIN,
         train_with_config(lambda raw: raw["tasks"].update(ner={**NER, "columns": {"tokens": "word", "tags": 3}})),
         ERR + CFG + "tasks.ner: columns.tokens: format 'conll' has no header; give a 0-based column index "
         "(e.g. tokens: 0, tags: 3), not 'word'", 2),
    Case("config-unknown-task-type", "config", "unknown task type (`clasification`)", TRAIN,
         train_with_config(setting("tasks.sent.type", "clasification")),
         ERR + CFG + "tasks.sent.type: Input should be 'classification', 'regression', 'multiple_choice', "
         "'sequence_labeling' or 'multilabel' (got 'clasification')", 2),
    Case("config-bad-metric-name", "config", "unknown metric name (`acc`)", TRAIN,
         train_with_config(setting("tasks.sent.metric", ["accuracy", "acc"])),
         ERR + CFG + "tasks.sent.metric: unknown metric 'acc'; use one of accuracy, f1, … or 'module:function'", 2),
    Case("config-metric-module-missing", "config", "`module:function` whose module does not import", TRAIN,
         train_with_config(setting("tasks.sent.metric", "no_such_module_xyz:score")),
         ERR + CFG + "tasks.sent.metric: metric 'no_such_module_xyz:score': cannot import module "
         "'no_such_module_xyz' (No module named 'no_such_module_xyz'); is it on PYTHONPATH?", 2),
    Case("config-metric-function-missing", "config", "`module:function` whose function does not exist", TRAIN,
         train_with_config(setting("tasks.sent.metric", "json:no_such_function")),
         ERR + CFG + "tasks.sent.metric: metric 'json:no_such_function': module 'json' has no function "
         "'no_such_function'", 2),
    Case("config-target-metric-no-task", "config", "`target_metric` naming no task", TRAIN,
         train_with_config(setting("training.target_metric", "snet.accuracy")),
         ERR + CFG + "training.target_metric 'snet.accuracy' names no task; use 'mean', a task name (sent), "
         "'task.metric' or 'module:function'", 2),
    Case("config-missing-data-file", "config", "a data file that does not exist", TRAIN,
         train_with_config(setting("tasks.sent.dev", "nope/dev.tsv")),
         ERR + CFG + "tasks.sent.dev: file not found: <data>/nope/dev.tsv (paths are relative to data_dir "
         "'<data>'; set data_dir or MTBERT_DATA)", 2),
    Case("config-empty-tasks", "config", "empty task list (`tasks: {}`)", TRAIN,
         train_with_config(setting("tasks", {})),
         ERR + CFG + "tasks: no tasks; add at least one task under tasks:", 2),
    Case("config-duplicate-task-yaml", "config", "duplicate task names (YAML)", TRAIN,
         train_with_text("backbone: {tiny}\ndata_dir: {data}\ntasks:\n"
                         "  sent: {{type: classification, train: train.tsv, columns: {{text: sentence, label: label}}}}\n"
                         "  sent: {{type: regression, train: train.tsv, columns: {{text: sentence, label: label}}}}\n"),
         ERR + CFG + "line 5: duplicate key 'sent' (already on line 4); a key may appear only once in a mapping "
         "(otherwise the last one silently wins): rename or remove one", 2),
    Case("config-duplicate-task-json", "config", "duplicate task names (JSON)", "mtbert train config.json",
         train_with_text('{{"backbone": "{tiny}",\n "data_dir": "{data}",\n "tasks": {{\n'
                         '  "sent": {{"type": "classification", "train": "train.tsv",\n'
                         '           "columns": {{"text": "sentence", "label": "label"}}}},\n'
                         '  "sent": {{"type": "regression", "train": "train.tsv"}}\n }}\n}}\n', "config.json"),
         ERR + "<tmp>/config.json: line 6: duplicate key 'sent' (already on line 4); a key may appear only once "
         "in a mapping (otherwise the last one silently wins): rename or remove one", 2),
    Case("config-duplicate-key", "config", "any other duplicate key (`lr` twice)", TRAIN,
         train_with_text("backbone: {tiny}\ndata_dir: {data}\ntasks:\n"
                         "  sent: {{type: classification, train: train.tsv, columns: {{text: sentence, label: label}}}}\n"
                         "training:\n  lr: 1.0e-4\n  batch_size: 2\n  lr: 3.0e-5\n"),
         ERR + CFG + "line 8: duplicate key 'lr' (already on line 6); a key may appear only once in a mapping "
         "(otherwise the last one silently wins): rename or remove one", 2),
    Case("config-undefined-variable", "config", "a variable that does not resolve (`${" + UNDEFINED + "}`)", TRAIN,
         train_with_config(setting("tasks.sent.train", "${" + UNDEFINED + "}/train.tsv")),
         ERR + CFG + f"tasks.sent.train: variable '{UNDEFINED}' is not defined; add it under variables: or set "
         f"the environment variable {UNDEFINED}", 2),
    Case("config-undefined-variable-braces", "config", "a DeepPavlov `{NAME}` variable that does not resolve",
         TRAIN, train_with_config(setting("variables", {"ROOT": "{" + UNDEFINED + "}/glue"})),
         ERR + CFG + f"variables.ROOT: variable '{UNDEFINED}' is not defined; add it under variables: or set "
         f"the environment variable {UNDEFINED}", 2),
    Case("config-file-not-found", "config", "config file that does not exist", "mtbert train nope.yaml",
         lambda env: ["train", str(env.tmp / "nope.yaml")],
         ERR + "<tmp>/nope.yaml: config file not found", 2),
    Case("config-invalid-yaml", "config", "YAML syntax error", TRAIN,
         train_with_text("tasks:\n  sent:\n    type: classification: x\n"),
         ERR + CFG + "line 3: not valid YAML: mapping values are not allowed here", 2),
    Case("config-not-utf8", "config", "config file not in UTF-8", TRAIN,
         train_with_text(b"seed: 1\nrun_dir: caf\xe9\n"),
         ERR + CFG + "line 2: not valid UTF-8 (invalid continuation byte); re-save the config as UTF-8", 2),
    Case("config-set-invalid-yaml", "config", "`--set` value that is not YAML", TRAIN + " --set training.lr=[",
         lambda env: train_with()(env) + ["--set", "training.lr=["],
         ERR + "--set 'training.lr=[': the value is not valid YAML (expected the node content, but found "
         "'<stream end>'); e.g. --set training.lr=3e-5 or --set 'tasks.t.metric=[accuracy, f1]'", 2),
    Case("config-seqlab-long-text-not-tagging", "config", "`long_text` on a task that is not sequence labeling",
         TRAIN, train_with_config(setting("tasks.sent.long_text", "window")),
         ERR + CFG + "tasks.sent: long_text applies to sequence_labeling tasks, not classification; remove it", 2),
    Case("config-seqlab-long-text-unknown", "config", "unknown `long_text` (`slide`)", TRAIN,
         train_with_config(lambda raw: raw["tasks"].update(ner={**NER, "long_text": "slide"})),
         ERR + CFG + "tasks.ner.long_text: Input should be 'window' or 'truncate' (got 'slide')", 2),
    Case("config-seqlab-stride-too-long", "config", "`window_stride` as long as a window (`max_length: 32`)", TRAIN,
         train_with_config(lambda raw: raw["tasks"].update(ner={**NER, "window_stride": 30})),
         ERR + CFG + "tasks.ner.window_stride: 30 sub-tokens repeated per window, but a window holds 30 (max_length "
         "32 less 2 special tokens); give a smaller stride, e.g. 16", 2),
    Case("config-seqlab-stride-with-truncate", "config", "`window_stride` with `long_text: truncate`", TRAIN,
         train_with_config(lambda raw: raw["tasks"].update(ner={**NER, "long_text": "truncate", "window_stride": 8})),
         ERR + CFG + "tasks.ner: window_stride applies to long_text 'window', not 'truncate'; remove one of them", 2),
    # ------------------------------------------------ issue 14, part 3: caught at validation, before any data is read
    Case("config-metric-wrong-type", "config", "`metric: accuracy` on a regression task", TRAIN,
         train_with({"sts": {**STS, "metric": "accuracy"}}),
         ERR + CFG + "tasks.sts.metric: 'accuracy' does not apply to regression tasks; use one of pearson, spearman "
         "or 'module:function'", 2),
    Case("config-ner-f1-on-classification", "config", "`metric: ner_f1` on a classification task", TRAIN,
         train_with_config(setting("tasks.sent.metric", "ner_f1")),
         ERR + CFG + "tasks.sent.metric: 'ner_f1' does not apply to classification tasks; use one of accuracy, f1, "
         "f1_macro, mcc, roc_auc or 'module:function'", 2),
    Case("config-roc-auc-on-ner", "config", "`metric: roc_auc` on a sequence-labeling task", TRAIN,
         train_with({"ner": {**NER, "metric": ["ner_f1", "roc_auc"]}}),
         ERR + CFG + "tasks.ner.metric: 'roc_auc' does not apply to sequence_labeling tasks; use one of ner_f1 or "
         "'module:function'", 2),
    Case("config-target-metric-wrong-type", "config", "`target_metric: sent.pearson` on a classification task", TRAIN,
         train_with_config(setting("training.target_metric", "sent.pearson")),
         ERR + CFG + "training.target_metric 'sent.pearson': 'pearson' does not apply to classification tasks; use "
         "one of accuracy, f1, f1_macro, mcc, roc_auc or 'module:function'", 2),
    Case("config-bce-three-labels", "config", "`loss: bce` with three `labels`", TRAIN,
         train_with_config(setting("tasks.sent", sent(loss="bce", labels=["neg", "neutral", "pos"]))),
         ERR + CFG + "tasks.sent.loss: 'bce' is one sigmoid output for two classes, but the task has 3 labels; use "
         "loss: cross_entropy", 2),
    Case("config-bce-three-labels-in-data", "config",
         "`loss: bce` on train data with three labels (none listed in the config): found when train is read",
         TRAIN, train_with({"sent": sent(loss="bce")}, files={"train.tsv": GOOD + "so-so film\tneutral\n"}),
         ERR + "tasks.sent.loss: 'bce' is one sigmoid output for two classes, but train has 3 labels (neg, neutral, "
         "pos); use loss: cross_entropy", 2),
    Case("config-pooler-without-pooler", "config", "`pooling: pooler` on an encoder without a pooler (DistilBERT)",
         TRAIN, train_with_backbone(distilbert_config, pooling="pooler"),
         ERR + CFG + "tasks.sent.pooling: 'pooler' needs an encoder with a pooler layer, and backbone "
         "'<tmp>/distilbert' (distilbert) has none; use pooling: cls or mean", 2),
    Case("config-max-length-over-positions", "config", "`max_length` above the encoder's position limit", TRAIN,
         train_with_config(setting("max_length", 1024)),
         ERR + CFG + "max_length: 1024 is more than the 512 positions backbone '…' has (bert); use 512 or less", 2),
    Case("config-backbone-data-folder", "config", "`backbone` naming a data folder", TRAIN,
         train_with_backbone(lambda env: str(env.data)),
         ERR + CFG + "backbone '<data>': the folder holds no config.json, so it is not a model (a data folder?); use "
         "'minilm', a hub name or a folder holding config.json and weights", 2),
    Case("config-seed-negative", "config", "`seed: -1`", TRAIN, train_with_config(setting("seed", -1)),
         ERR + CFG + "seed: Input should be greater than or equal to 0", 2),
    Case("config-seed-too-large", "config", "`seed: 4294967296` (2**32)", TRAIN,
         train_with_config(setting("seed", 2**32)),
         ERR + CFG + "seed: Input should be less than 4294967296", 2),
    Case("config-run-dir-file", "config", "`run_dir` that is a file", TRAIN, run_dir_is_a_file,
         ERR + "run_dir <tmp>/afile: a file, not a folder; give a folder", 2),
    Case("config-deep-json", "config", "JSON config nested 100,000 deep", "mtbert train config.json",
         train_with_text(DEEP, "config.json"),
         ERR + "<tmp>/config.json: nested too deeply to read as JSON; a config is a mapping a few levels deep "
         "(tasks, training, columns)", 2),
    # ------------------------------------------------ data
    Case("data-empty-file", "data", "empty file", TRAIN, train_with(files={"train.tsv": ""}),
         ERR + "<data>/train.tsv: empty file; expected a header row and data", 2),
    Case("data-header-only", "data", "header only", TRAIN, train_with(files={"train.tsv": "sentence\tlabel\n"}),
         ERR + "<data>/train.tsv: no usable examples for task sent", 2),
    Case("data-missing-column", "data", "column named in the config not in the header", TRAIN,
         train_with(files={"train.tsv": "text\tlabel\ngood\tpos\n"}),
         ERR + "tasks.sent.columns.text: column 'sentence' not in <data>/train.tsv header (text, label)", 2),
    Case("data-wrong-column-count", "data", "a row with more (or fewer) cells than the header", TRAIN,
         train_with(files={"train.tsv": "sentence\tlabel\ngood\tpos\nbad\tneg\textra\n"}),
         ERR + "<data>/train.tsv line 3: expected 2 columns, found 3 (task sent; fix the row or set "
         "tasks.sent.on_bad_rows: skip)", 2),
    Case("data-blank-label", "data", "blank label", TRAIN,
         train_with(files={"train.tsv": "sentence\tlabel\ngood\tpos\nbad\t \n"}),
         ERR + "<data>/train.tsv line 3: blank label (task sent; fix the row or set tasks.sent.on_bad_rows: skip)", 2),
    Case("data-empty-text", "data", "empty text", TRAIN,
         train_with(files={"train.tsv": "sentence\tlabel\ngood\tpos\n \tneg\n"}),
         ERR + "<data>/train.tsv line 3: empty text (task sent; fix the row or set tasks.sent.on_bad_rows: skip)", 2),
    Case("data-label-unseen", "data", "dev label never seen in train", TRAIN,
         train_with(files={"dev.tsv": "sentence\tlabel\nfine\tpos\nmeh\tneutral\n"}),
         ERR + "<data>/dev.tsv line 3: label 'neutral' of task sent was not seen in train (labels: neg, pos)", 2),
    Case("data-unparsable-number", "data", "regression label that is not a number", TRAIN,
         train_with({"sts": STS}, files={"sts.tsv": "s1\ts2\tscore\na\tb\t1.5\nc\td\tfour\n"}),
         ERR + "<data>/sts.tsv line 3: label 'four' is not a number (task sts; fix the row or set "
         "tasks.sts.on_bad_rows: skip)", 2),
    Case("data-nonfinite-number", "data", "regression label `nan`", TRAIN,
         train_with({"sts": STS}, files={"sts.tsv": "s1\ts2\tscore\na\tb\t1.5\nc\td\tnan\n"}),
         ERR + "<data>/sts.tsv line 3: label 'nan' is not a finite number (task sts; fix the row or set "
         "tasks.sts.on_bad_rows: skip)", 2),
    Case("data-invalid-utf8", "data", "invalid UTF-8", TRAIN,
         train_with(files={"train.tsv": b"sentence\tlabel\ngood\tpos\nbad \xff film\tneg\n"}),
         ERR + "<data>/train.tsv: not valid UTF-8 (byte … of a line: invalid start byte); re-save the file as UTF-8", 2),
    Case("data-lone-surrogate", "data", "JSON Lines string with a lone `\\ud800` escape", TRAIN,
         train_with({"mc": MC}, files={"mc.jsonl": jsonl(MC_ROWS) + '{"p": "x\\ud800", "choices": ["a", "b"], "y": 0}\n'}),
         ERR + "<data>/mc.jsonl line 3: a \\uD800-\\uDFFF escape without its pair; not valid Unicode text (task mc; fix "
         "the row or set tasks.mc.on_bad_rows: skip)", 2),
    Case("data-huge-number", "data", "regression label that overflows a float (a 400-digit integer in JSON)", TRAIN,
         train_with({"sts": {**STS, "format": "jsonl", "train": "sts.jsonl", "dev": "sts.jsonl"}},
                    files={"sts.jsonl": '{"s1": "a", "s2": "b", "score": 1.5}\n{"s1": "c", "s2": "d", "score": 1'
                           + "0" * 400 + "}\n"}),
         ERR + "<data>/sts.jsonl line 2: label 1000… is not a number (task sts; fix the row or set tasks.sts.on_bad_rows: skip)", 2),
    Case("data-crlf", "data", "CRLF line ends (TSV, CSV, JSON Lines, CoNLL)", TRAIN, crlf_setup,
         "works: trains; no CR reaches a text, choice, token or label", 0, crlf_check),
    Case("data-1mb-line", "data", "a 1 MB line", TRAIN, long_line_setup,
         "works: trains; the cell is read whole and truncated to max_length when tokenised", 0, long_line_check),
    Case("data-jsonl-not-json", "data", "JSON Lines line that is not JSON", TRAIN,
         train_with({"mc": MC}, files={"mc.jsonl": jsonl(MC_ROWS) + '{"p": "x", \n'}),
         ERR + "<data>/mc.jsonl line 3: not valid JSON (Expecting property name enclosed in double quotes) "
         "(task mc; fix the row or set tasks.mc.on_bad_rows: skip)", 2),
    Case("data-deep-json", "data", "JSON Lines line nested 100,000 deep", TRAIN,
         train_with({"mc": MC}, files={"mc.jsonl": jsonl(MC_ROWS) + '{"p": ' + DEEP + '}\n'}),
         ERR + "<data>/mc.jsonl line 3: nested too deeply to read (task mc; fix the row or set tasks.mc.on_bad_rows: "
         "skip)", 2),
    Case("data-ragged-conll", "data", "ragged CoNLL (a line with too few columns)", TRAIN,
         train_with({"ner": NER}, files={"ner.txt": CONLL_GOOD + "Mary NNP B-PER\nruns VBZ B-VP O\n"}),
         ERR + "<data>/ner.txt line 6: line 6 has 3 columns; tokens are column 0, tags column 3 (task ner; fix the "
         "row or set tasks.ner.on_bad_rows: skip)", 2),
    Case("data-not-iob2", "data", "tags not in IOB2 (`E-PER`)", TRAIN,
         train_with({"ner": NER}, files={"ner.txt": CONLL_GOOD + "Mary NNP B-NP B-PER\nSmith NNP I-NP E-PER\n"}),
         ERR + "<data>/ner.txt line 6: line 7: tag 'E-PER' is not IOB2 (O, B-TYPE or I-TYPE) (task ner; fix the "
         "row or set tasks.ner.on_bad_rows: skip)", 2),
    Case("data-choices-mismatch", "data", "multiple choice: examples with different numbers of choices", TRAIN,
         train_with({"mc": MC}, files={"mc.jsonl": jsonl(MC_ROWS + [{"p": "x", "choices": ["a", "b", "c"], "y": 2}])}),
         ERR + "<data>/mc.jsonl line 3: 3 choices, but line 1 has 2 (task mc); every example of a multiple-choice "
         "task needs the same number of choices", 2),
    Case("data-choice-label-out-of-range", "data", "multiple choice: label not the index of a choice", TRAIN,
         train_with({"mc": MC}, files={"mc.jsonl": jsonl(MC_ROWS + [{"p": "x", "choices": ["a", "b"], "y": 2}])}),
         ERR + "<data>/mc.jsonl line 3: label 2 is not the index of one of the 2 choices (task mc; fix the row or "
         "set tasks.mc.on_bad_rows: skip)", 2),
    # ------------------------------------------------ data: silently misread before (issue 14, readers)
    Case("data-header-false-with-header", "data", "`header: false` on a file that has a header", TRAIN,
         train_with({"sent": sent(header=False, columns={"text": 0, "label": 1})},
                    files={"train.tsv": HEADED, "dev.tsv": HEADED.split("\n", 1)[1]}),
         ERR + "<data>/train.tsv line 1: label 'label' of task sent occurs only on this first line and every other "
         "class has two examples or more: it looks like a header row, but tasks.sent.header is false; set header: "
         "true, or if 'label' is a class, list the classes under tasks.sent.labels", 2),
    Case("data-header-false-numeric", "data", "`header: false` on a file with a header and 0/1 labels", TRAIN,
         train_with({"sent": sent(header=False, columns={"text": 0, "label": 1})},
                    files={"train.tsv": "sentence\tlabel\ngood\t1\nbad\t0\n", "dev.tsv": "good\t1\nbad\t0\n"}),
         ERR + "<data>/train.tsv line 1: label 'label' of task sent occurs only on this first line and every other "
         "label is a number: it looks like a header row, but tasks.sent.header is false; set header: true, or if "
         "'label' is a class, list the classes under tasks.sent.labels", 2),
    Case("data-conll-space-in-token", "data", "CoNLL token with a space (`New York`), columns split on spaces",
         TRAIN, train_with({"ner": NER}, files={"ner.txt": CONLL_GOOD + "New York NNP B-NP B-LOC\n"}),
         ERR + "<data>/ner.txt line 6: line 6 has 5 columns but line 1 has 4; a token or tag with a space? separate "
         "the columns with tabs (or set tasks.ner.delimiter) (task ner; fix the row or set tasks.ner.on_bad_rows: "
         "skip)", 2),
    Case("data-conll-tab-token-with-space", "data", "CoNLL token with a space in a tab-separated file", TRAIN,
         conll_tab_setup, "works: trains; the file is split on tabs (its first line has one), `New York` is one "
         "token and B-NP never reaches the tags", 0, conll_tab_check),
    Case("data-json-true-number", "data", "JSON `true` as a regression label (or a choice index)", TRAIN,
         train_with({"sts": STS_JSON}, files={"sts.jsonl": '{"s1": "a", "s2": "b", "score": 1.5}\n'
                                                            '{"s1": "c", "s2": "d", "score": true}\n'}),
         ERR + "<data>/sts.jsonl line 2: label true is a JSON boolean, not a number (task sts; fix the row or set "
         "tasks.sts.on_bad_rows: skip)", 2),
    Case("data-json-true-class", "data", "JSON `true`/`false` as a class label (BoolQ)", TRAIN,
         train_with({"sent": BOOL_JSON}, files={"bool.jsonl": jsonl([{"t": "yes it is", "y": True},
                                                                      {"t": "no it is not", "y": False}])}),
         "works: trains; the classes are `True` and `False`, as Hugging Face's ClassLabel names them", 0,
         bool_check),
    Case("data-underscore-number", "data", "regression label `1_000` (Python's float() takes it)", TRAIN,
         train_with({"sts": STS}, files={"sts.tsv": "s1\ts2\tscore\na\tb\t1.5\nc\td\t1_000\n"}),
         ERR + "<data>/sts.tsv line 3: label '1_000' is not a number (task sts; fix the row or set "
         "tasks.sts.on_bad_rows: skip)", 2),
    Case("data-json-object-text", "data", 'JSON Lines text that is not a string (`{"x": 1}`)', TRAIN,
         train_with({"sent": BOOL_JSON}, files={"bool.jsonl": '{"t": "fine", "y": "pos"}\n{"t": {"x": 1}, "y": "neg"}\n'}),
         ERR + "<data>/bool.jsonl line 2: text is a JSON object, not a string; write the text as a JSON string "
         "(task sent; fix the row or set tasks.sent.on_bad_rows: skip)", 2),
    Case("data-choices-string", "data", "multiple choice: `choices` a string, not a list", TRAIN,
         train_with({"mc": MC}, files={"mc.jsonl": jsonl(MC_ROWS + [{"p": "x", "choices": "ab", "y": 0}])}),
         ERR + "<data>/mc.jsonl line 3: 1 choice(s) ('ab'); a multiple-choice example needs at least 2: a JSON list "
         "of strings under one key, or one key (column) per choice under columns.choices (task mc; fix the row or "
         "set tasks.mc.on_bad_rows: skip)", 2),
    Case("data-invisible-text", "data", "text of only zero-width or control characters", TRAIN,
         train_with(files={"train.tsv": "sentence\tlabel\ngood\tpos\n\u200b\u200d\tneg\n"}),
         ERR + "<data>/train.tsv line 3: text '\\u200b\\u200d' has no visible character (only control, zero-width "
         "or space characters); the tokenizer would see an empty text (task sent; fix the row or set "
         "tasks.sent.on_bad_rows: skip)", 2),
    Case("data-duplicate-header", "data", "a column named in the config appears twice in the header", TRAIN,
         train_with(files={"train.tsv": "sentence\tsentence\tlabel\na\tb\tpos\n"}),
         ERR + "tasks.sent.columns.text: column 'sentence' appears 2 times in the <data>/train.tsv header "
         "(columns 0, 1); rename one, or give a 0-based column index", 2),
    Case("data-duplicate-json-key", "data", "JSON Lines object with a key twice", TRAIN,
         train_with({"sent": BOOL_JSON}, files={"bool.jsonl": '{"t": "fine", "y": "pos", "y": "neg"}\n'}),
         ERR + "<data>/bool.jsonl line 1: key 'y' appears twice in one object; keep one (task sent; fix the row or "
         "set tasks.sent.on_bad_rows: skip)", 2),
    Case("data-duplicate-labels", "data", "the same class twice in `labels`", TRAIN,
         train_with_config(setting("tasks.sent.labels", ["pos", "neg", "pos"])),
         ERR + CFG + "tasks.sent.labels: 'pos' is listed twice; list each class once", 2),
    Case("data-negative-class-weight", "data", "a negative class weight", TRAIN,
         train_with_config(setting("tasks.sent.class_weights", [1.0, -1.0])),
         ERR + CFG + "tasks.sent.class_weights: weight -1.0 is not a finite number >= 0; a class weight scales that "
         "class's loss (0 ignores the class)", 2),
    Case("cli-bad-argument", "cli", "an argument argparse refuses (`--batch-size x`)",
         "mtbert predict RUN --batch-size x", lambda env: ["predict", str(env.trained_run()), "--batch-size", "x"],
         ERR + "predict: argument --batch-size: invalid int value: 'x'; see mtbert predict --help", 2),
    Case("cli-predict-all-input-directory", "cli", "`predict --all --input` that is a directory",
         "mtbert predict RUN --all --input DIR", lambda env: ["predict", str(env.trained_run()), "--all", "--input",
                                                              str(env.tmp)],
         ERR + "--input <tmp>: cannot read (Is a directory)", 2),
    Case("cli-run-dir-is-a-file", "cli", "`--run-dir` that is a file (train, compare)",
         "mtbert compare config.yaml --run-dir config.yaml",
         lambda env: ["compare", *train_with()(env)[1:], "--run-dir", str(env.config_path)],
         ERR + "--run-dir <tmp>/config.yaml: a file, not a folder; give a folder", 2),
    # ------------------------------------------------ command line
    Case("cli-unknown-run-dir", "cli", "run dir that does not exist", "mtbert evaluate nope",
         lambda env: ["evaluate", str(env.tmp / "nope")],
         ERR + "<tmp>/nope: no such run directory", 2),
    Case("cli-run-dir-without-model", "cli", "a directory that holds no trained model", "mtbert predict DIR --task sent",
         lambda env: ["predict", str(env.tmp), "--task", "sent"],
         ERR + "<tmp>: holds no trained model (<tmp>/model is missing); train first with: mtbert train CONFIG", 2),
    Case("cli-wrong-task-name", "cli", "task the model does not have", "mtbert predict RUN --task nosuch",
         lambda env: ["predict", str(env.trained_run()), "--task", "nosuch"],
         ERR + "unknown task 'nosuch'; this model has: sent", 2),
    Case("cli-evaluate-wrong-task-data", "cli", "`--data` for a task the model does not have",
         "mtbert evaluate RUN --data nosuch=x.tsv",
         lambda env: ["evaluate", str(env.trained_run()), "--data", "nosuch=x.tsv"],
         ERR + "--data 'nosuch=x.tsv': unknown task 'nosuch'; this model has: sent", 2),
    Case("cli-input-missing", "cli", "`--input` file that does not exist", "mtbert predict RUN --task sent --input missing.jsonl",
         unreadable_input_setup("missing"),
         ERR + "--input <tmp>/missing.jsonl: cannot read (No such file or directory)", 2),
    Case("cli-input-directory", "cli", "`--input` that is a directory", "mtbert predict RUN --task sent --input DIR",
         unreadable_input_setup("directory"),
         ERR + "--input <tmp>: cannot read (Is a directory)", 2),
    Case("cli-input-not-json", "cli", "`--input` line that is not JSON", "mtbert predict RUN --task sent --input in.jsonl",
         input_file('{"text": "fine"}\n{"text": "a", \n'),
         ERR + "<tmp>/in.jsonl line 2: not valid JSON (Expecting property name enclosed in double quotes); each line "
         'must be one JSON object, e.g. {"text": "..."}', 2),
    Case("cli-input-wrong-fields", "cli", "`--input` object without the task's fields",
         "mtbert predict RUN --task sent --input in.jsonl", input_file('{"text": "fine"}\n{"sentence": "x"}\n'),
         ERR + "<tmp>/in.jsonl line 2: task sent (classification) needs text, and text_pair for pair tasks; 'text' is "
         "missing or not a str", 2),
    Case("cli-input-invalid-utf8", "cli", "`--input` not in UTF-8", "mtbert predict RUN --task sent --input in.jsonl",
         input_file(b'{"text": "caf\xe9"}\n'),
         ERR + "<tmp>/in.jsonl line 1: not valid UTF-8 (invalid continuation byte); re-save the file as UTF-8", 2),
    Case("cli-input-lone-surrogate", "cli", "`--input` text with a lone `\\ud800` escape",
         "mtbert predict RUN --task sent --input in.jsonl", input_file('{"text": "x\\ud800"}\n'),
         ERR + "<tmp>/in.jsonl line 1: not valid Unicode (a lone surrogate, U+D800, at character 1)", 2),
    Case("cli-train-over-a-run", "cli", "training into a run dir that holds a run", "mtbert train config.yaml",
         over_a_run,
         ERR + "<run>: already holds a run; pass --overwrite to replace it, or --run-dir DIR to train into another "
         "directory", 2),
    Case("cli-nproc-zero", "cli", "`--nproc 0`", "mtbert train config.yaml --nproc 0",
         lambda env: train_with_config(lambda raw: None)(env) + ["--nproc", "0"],
         ERR + "--nproc 0: give the number of processes, 1 or more", 2),
    Case("cli-serve-max-batch-zero", "cli", "`serve --max-batch 0`", "mtbert serve RUN --max-batch 0",
         lambda env: ["serve", str(env.trained_run()), "--max-batch", "0"],
         ERR + "--max-batch 0: give 1 or more", 2),
    Case("cli-serve-negative-wait", "cli", "`serve --max-wait-ms -1`", "mtbert serve RUN --max-wait-ms -1",
         lambda env: ["serve", str(env.trained_run()), "--max-wait-ms", "-1"],
         ERR + "--max-wait-ms -1.0: give 0 or more milliseconds", 2),
    # ------------------------------------------------ issue 14: serve (ids cli-serve-…: ids start with their group)
    Case("cli-serve-read-timeout-zero", "cli", "`serve --read-timeout 0`", "mtbert serve RUN --read-timeout 0",
         lambda env: ["serve", str(env.trained_run()), "--read-timeout", "0"],
         ERR + "--read-timeout 0: give a number of seconds above 0", 2),
    # ------------------------------------------------ evaluate and predict: the run's precision, its tokenizer
    Case("eval-corrupt-tokenizer", "eval", "run dir whose `model/encoder/tokenizer.json` is not JSON",
         "mtbert predict RUN --task sent --input in.jsonl", damaged(writing("encoder/tokenizer.json", "[\n")),
         ERR + "<run>/model/encoder: cannot read the tokenizer (JSONDecodeError: …); restore it from a copy of the "
         "run, or train the run again", 2),
    Case("eval-missing-tokenizer", "eval", "run dir whose `model/encoder` lost its tokenizer files",
         "mtbert predict RUN --task sent --input in.jsonl", missing_tokenizer_setup,
         ERR + "<run>/model/encoder: no tokenizer vocabulary (tokenizer.json or vocab.txt is missing), so every "
         "word would be [UNK]; put back the tokenizer files of the backbone it was trained from: "
         "AutoTokenizer.from_pretrained('…').save_pretrained('<run>/model/encoder')", 2),
    Case("eval-precision-fp16-cpu", "eval", "`--precision fp16` without a GPU", "mtbert evaluate RUN --precision fp16",
         lambda env: ["evaluate", str(env.trained_run()), "--precision", "fp16"],
         ERR + "--precision: fp16 needs a CUDA GPU (this run is on the CPU); use bf16, fp32 or auto", 2),
    Case("eval-precision-onnx", "eval", "`--precision` with the onnx engine",
         "mtbert predict RUN --engine onnx --precision bf16",
         lambda env: ["predict", str(env.trained_run()), "--engine", "onnx", "--precision", "bf16"],
         ERR + "--precision bf16: the onnx engine runs the bundle as exported (fp32 or int8); drop --precision, "
         "or use --engine torch", 2),
    # ------------------------------------------------ run dirs, bundles and outputs (issue 14, part 3)
    Case("run-output-folder", "run", "`predict --output` naming a folder",
         "mtbert predict RUN --task sent --input in.jsonl --output DIR", predict_to(lambda env: env.tmp),
         ERR + "--output <tmp>: a folder; give the path of the JSON Lines file to write", 2),
    Case("run-all-output-folder", "run", "`predict --all --output` naming a folder",
         "mtbert predict RUN --all --input in.jsonl --output DIR", predict_to(lambda env: env.tmp, "--all"),
         ERR + "--output <tmp>: a folder; give the path of the JSON Lines file to write", 2),
    Case("run-split-output-file", "run", "`predict --split dev --output` naming a file",
         "mtbert predict RUN --split dev --output FILE", predict_to(in_jsonl, "--split", "dev"),
         ERR + "--output <tmp>/in.jsonl: a file; with --split, --output names the folder for the prediction files "
         "(one per task)", 2),
    Case("run-serve-port", "run", "`serve --port 70000`", "mtbert serve RUN --port 70000",
         lambda env: ["serve", str(env.trained_run()), "--port", "70000"],
         ERR + "--port 70000: a TCP port is 0 to 65535 (0: any free port)", 2),
    Case("run-deep-json-input", "run", "`--input` line nested 100,000 deep",
         "mtbert predict RUN --task sent --input in.jsonl", input_file('{"text": ' + DEEP + "}\n"),
         ERR + '<tmp>/in.jsonl line 1: nested too deeply to read; each line must be one JSON object, e.g. '
         '{"text": "..."}', 2),
    Case("run-deep-json-all", "run", "`predict --all` input line nested 100,000 deep",
         "mtbert -q predict RUN --all --input in.jsonl",  # -q: no progress bar on stderr
         lambda env: ["-q", "predict", str(env.trained_run()), "--all", "--input", str(in_jsonl(env, DEEP + "\n"))],
         ERR + '<tmp>/in.jsonl line 1: nested too deeply to read; each line must be one JSON object, e.g. '
         '{"text": "..."}', 2),
    # ------------------------------------------------ read-only folders and a full disk
    Case("run-read-only-train", "run", "training into a read-only folder", "mtbert train config.yaml --run-dir RO/run",
         train_read_only,
         ERR + "--run-dir <tmp>/ro/run: cannot write in <tmp>/ro (…); make it writable, or train into another "
         "folder with --run-dir DIR", 2),
    Case("run-metrics-damaged", "run", "resuming a run whose `metrics.jsonl` has a line that is no evaluation",
         "mtbert train RUN/config.yaml --resume RUN", damaged_metrics_setup,
         ERR + "<run>/metrics.jsonl:1: not an evaluation (a JSON object with its step); delete that line, or restore "
         "it from a copy of the run, or train the run again", 2),
    Case("run-read-only-resume", "run", "resuming a read-only run dir", "mtbert train RUN/config.yaml --resume RUN",
         resume_read_only, ERR + "--resume <run>: cannot write in <run> (…); make it writable to resume", 2),
    Case("run-read-only-export", "run", "exporting a read-only run dir", "mtbert export RUN", export_read_only,
         ERR + "<run>/onnx: cannot write in <run> (…); make it writable, or give another -o FOLDER", 2),
    Case("run-read-only-output", "run", "`predict --output` into a read-only folder",
         "mtbert predict RUN --task sent --input in.jsonl --output RO/out.jsonl",
         predict_to(lambda env: env.read_only(env.tmp / "ro") / "out.jsonl"),
         ERR + "--output <tmp>/ro/out.jsonl: cannot write in <tmp>/ro (…); make it writable, or give another file", 2),
    Case("run-read-only-split-output", "run", "`predict --split --output` into a read-only folder",
         "mtbert predict RUN --split dev --output RO", predict_to(lambda env: env.read_only(env.tmp / "ro"),
                                                                     "--split", "dev"),
         ERR + "--output <tmp>/ro: cannot write in <tmp>/ro (…); make it writable, or give another folder", 2),
    Case("run-full-disk-optimizer", "run", "disk full while writing the first checkpoint's `optimizer.pt`", TRAIN,
         full_disk_at("optimizer.pt"),
         ERR + "<run>: cannot write checkpoint at step 1 (No space left on device); no checkpoint was written yet, "
         "so there is nothing to resume: free space or fix permissions, then train again with --overwrite", 2,
         the_fix_given_works),
    Case("run-full-disk-model", "run", "disk full before the first checkpoint (writing the best model)", TRAIN,
         full_disk_at("model"),
         ERR + "<run>: cannot write the model (No space left on device); no checkpoint was written yet, so there is "
         "nothing to resume: free space or fix permissions, then train again with --overwrite", 2,
         the_fix_given_works),
    Case("run-full-disk-metrics", "run", "disk full while appending to `metrics.jsonl`", TRAIN,
         full_disk_at("metrics.jsonl"),
         ERR + "<run>: cannot write (No space left on device); no checkpoint was written yet, so there is nothing "
         "to resume: free space or fix permissions, then train again with --overwrite", 2, the_fix_given_works),
    # ------------------------------------------------ damaged or tampered run dirs
    Case("run-config-invalid", "run", "run dir whose `model/config.yaml` is not YAML", "mtbert predict RUN --task sent",
         damaged(writing("config.yaml", "tasks: [\n")),
         ERR + "<run>/model/config.yaml: line 2: not valid YAML (expected the node content, but found "
         "'<stream end>'); restore it from a copy of the run, or train the run again", 2),
    Case("run-labels-missing", "run", "run dir without `model/labels.json`", "mtbert predict RUN --task sent",
         damaged(removing("labels.json")),
         ERR + "<run>/model/labels.json: missing; restore it from a copy of the run, or train the run again", 2),
    Case("run-labels-invalid", "run", "`labels.json` that is not JSON", "mtbert predict RUN --task sent",
         damaged(writing("labels.json", '{"sent": ["neg", ')),
         ERR + "<run>/model/labels.json: not valid JSON (Expecting value, line 1); restore it from a copy of the run, "
         "or train the run again", 2),
    Case("run-labels-no-task", "run", "`labels.json` without a task's labels", "mtbert predict RUN --task sent",
         damaged(writing("labels.json", '{"other": ["a", "b"]}')),
         ERR + "<run>/model/labels.json: no list of label names for task 'sent' (classification), which config.yaml "
         "names; restore it from a copy of the run, or train the run again", 2),
    Case("run-labels-mismatch", "run", "`labels.json` with more labels than the head has outputs",
         "mtbert predict RUN --task sent", damaged(writing("labels.json", '{"sent": ["neg", "neutral", "pos"]}')),
         ERR + "<run>/model/heads.safetensors: task 'sent' tensor 'out.weight' is [2, 32], but its head takes [3, 32] "
         "(encoder hidden size 32, 3 labels in labels.json): the files of model/ come from different runs; restore "
         "it from a copy of the run, or train the run again", 2),
    Case("run-heads-truncated", "run", "`heads.safetensors` cut short", "mtbert predict RUN --task sent",
         damaged(truncating("heads.safetensors", 100)),
         ERR + "<run>/model/heads.safetensors: not a valid safetensors file (Error while deserializing header: "
         "invalid header length); restore it from a copy of the run, or train the run again", 2),
    Case("run-heads-missing-task", "run", "`heads.safetensors` without a task's head", "mtbert predict RUN --task sent",
         damaged(heads_of_another_task),
         ERR + "<run>/model/heads.safetensors: no weights for task 'sent', which config.yaml names; restore it from "
         "a copy of the run, or train the run again", 2),
    Case("run-encoder-other-size", "run", "an encoder of another size than the heads'", "mtbert predict RUN --task sent",
         damaged(encoder_of_another_size),
         ERR + "<run>/model/heads.safetensors: task 'sent' tensor 'out.weight' is [2, 32], but its head takes [2, 64] "
         "(encoder hidden size 64, 2 labels in labels.json): the files of model/ come from different runs; restore "
         "it from a copy of the run, or train the run again", 2),
    Case("run-encoder-garbage", "run", "encoder `model.safetensors` that is random bytes",
         "mtbert predict RUN --task sent", damaged(writing("encoder/model.safetensors", bytes(range(256)) * 20)),
         ERR + "<run>/model/encoder/model.safetensors: not a valid safetensors file (Error while deserializing "
         "header: …); restore it from a copy of the run, or train the run again", 2),
    Case("run-pickle-as-safetensors", "run", "a (malicious) pickle named `heads.safetensors`",
         "mtbert predict RUN --task sent", damaged(pickle_as_safetensors),
         ERR + "<run>/model/heads.safetensors: not a valid safetensors file (Error while deserializing header: "
         "header too large); restore it from a copy of the run, or train the run again", 2, payload_never_ran),
    Case("run-huge-header", "run", "safetensors header claiming 2^62 bytes", "mtbert predict RUN --task sent",
         damaged(huge_header),
         ERR + "<run>/model/encoder/model.safetensors: not a valid safetensors file (Error while deserializing "
         "header: header too large); restore it from a copy of the run, or train the run again", 2),
    Case("run-encoder-config-missing", "run", "encoder without `config.json`", "mtbert predict RUN --task sent",
         damaged(removing("encoder/config.json")),
         ERR + "<run>/model/encoder/config.json: missing; restore it from a copy of the run, or train the run again",
         2),
    Case("run-reads-outside", "run", "a run whose config names a file of yours as `dev` (`/etc/passwd`)",
         "mtbert evaluate RUN", reading_outside_the_run,
         ERR + "tasks.sent.columns.text: column 'sentence' not in <tmp>/secret.txt header; is it this task's file? "
         "pass --data sent=PATH to read another", 2),
    # ------------------------------------------------ damaged or tampered ONNX bundles
    Case("run-bundle-onnx-truncated", "run", "bundle whose `model.onnx` is cut short",
         "mtbert predict BUNDLE --task sent --engine onnx", damaged(truncating("model.onnx", 5000), "onnx"),
         ERR + "<run>/model.onnx: onnxruntime cannot load it (…); export the bundle again (mtbert export RUN_DIR -o "
         "FOLDER)", 2),
    Case("run-bundle-manifest-corrupt", "run", "bundle whose `manifest.json` is not JSON",
         "mtbert predict BUNDLE --task sent --engine onnx", damaged(writing("manifest.json", "{"), "onnx"),
         ERR + "<run>/manifest.json: not valid JSON (Expecting property name enclosed in double quotes, line 1); "
         "export the bundle again (mtbert export RUN_DIR -o FOLDER)", 2),
    Case("run-bundle-manifest-foreign", "run", "bundle whose `manifest.json` is another format's",
         "mtbert predict BUNDLE --task sent --engine onnx", damaged(writing("manifest.json", '{"format": "x/2"}'), "onnx"),
         ERR + "<run>/manifest.json: format 'x/2' is not 'mtbert-onnx/1', the bundles this mtbert reads; export the "
         "bundle again (mtbert export RUN_DIR -o FOLDER)", 2),
    Case("run-bundle-config-invalid", "run", "bundle whose `config.yaml` is not YAML",
         "mtbert predict BUNDLE --task sent --engine onnx", damaged(writing("config.yaml", "tasks: [\n"), "onnx"),
         ERR + "<run>/config.yaml: line 2: not valid YAML (expected the node content, but found '<stream end>'); "
         "export the bundle again (mtbert export RUN_DIR -o FOLDER)", 2),
    Case("run-bundle-labels-mismatch", "run", "bundle whose `labels.json` has more labels than the graph's outputs",
         "mtbert predict BUNDLE --task sent --engine onnx",
         damaged(writing("labels.json", '{"sent": ["neg", "neutral", "pos"]}'), "onnx"),
         ERR + "<run>/labels.json: task 'sent' lists 3 labels, but model.onnx gives 2 per input; export the bundle "
         "again (mtbert export RUN_DIR -o FOLDER)", 2),
    Case("run-bundle-tokenizer-corrupt", "run", "bundle whose `tokenizer.json` is not JSON",
         "mtbert predict BUNDLE --task sent --engine onnx", damaged(writing("tokenizer.json", "{"), "onnx"),
         ERR + "<run>/tokenizer.json: not a tokenizer the tokenizers library reads (…); export the bundle again "
         "(mtbert export RUN_DIR -o FOLDER)", 2),
    # ------------------------------------------------ security
    Case("security-pickled-encoder", "security",
         "run dir whose encoder is a (malicious) pickled `pytorch_model.bin` instead of `model.safetensors`",
         "mtbert predict RUN --task sent", pickled_encoder_setup,
         ERR + "<run>/model/encoder: no model.safetensors; mtbert loads weights from safetensors only and never "
         "unpickles a .bin/.pt file. Re-save the encoder with save_pretrained(safe_serialization=True)", 2,
         payload_never_ran),
    Case("security-malicious-optimizer", "security", "checkpoint whose `optimizer.pt` holds a malicious pickle",
         "mtbert train RUN/config.yaml --resume RUN", malicious_optimizer_setup,
         ERR + "<run>/checkpoint-…/optimizer.pt: refused: it holds more than tensors and plain "
         "data (read with torch.load(weights_only=True)); delete this checkpoint to resume from the one before", 2,
         payload_never_ran),
    # ------------------------------------------------ files: outputs never destroy data
    Case("files-predict-output-is-input", "files", "`--output` that is the `--input` file",
         "mtbert predict RUN --task sent --input in.jsonl --output in.jsonl",
         predict_into(lambda env, run: env.tmp / "in.jsonl", "--task", "sent"),
         ERR + "--output <tmp>/in.jsonl: is the --input file; mtbert never writes over its inputs: give another "
         "--output", 2, input_unchanged),
    Case("files-predict-all-output-links-to-input", "files", "`predict --all --output` a symlink to the `--input` file",
         "mtbert predict RUN --all --input in.jsonl --output link.jsonl",
         predict_into(symlink_to_input, "--all"),
         ERR + "--output <tmp>/link.jsonl: is the --input file; mtbert never writes over its inputs: give another "
         "--output", 2, input_unchanged),
    Case("files-predict-output-in-model", "files", "`--output` inside the run's model folder",
         "mtbert predict RUN --task sent --output RUN/model/out.jsonl",
         predict_into(lambda env, run: run / "model" / "out.jsonl", "--task", "sent", copy=True),
         ERR + "--output <run>/model/out.jsonl: is inside the model <run>/model; mtbert never writes over its inputs: "
         "give another --output", 2),
    Case("files-predict-output-run-metrics", "files", "`--output` that is the run's own `metrics.jsonl`",
         "mtbert predict RUN --task sent --output RUN/metrics.jsonl",
         predict_into(lambda env, run: run / "metrics.jsonl", "--task", "sent", copy=True),
         ERR + "--output <run>/metrics.jsonl: is the run's own metrics.jsonl, which training rewrites or removes; "
         "mtbert never writes over its inputs: give another --output", 2),
    Case("files-predict-split-over-data", "files", "`predict --split --output DIR` where a prediction file would "
         "replace one of the config's data files", "mtbert predict RUN --split dev --output DIR", split_over_data_setup,
         ERR + "--output <data>/sent-dev-predictions.jsonl: is tasks.sent.dev; mtbert never writes over its inputs: "
         "give another --output", 2, dev_file_unchanged),
    Case("files-export-folder-of-other-files", "files", "`export -o` a folder that holds other files",
         "mtbert export RUN -o DIR", export_into_data,
         ERR + "<data>: holds files that mtbert export did not write (notes.txt); give a new or empty folder with "
         "-o DIR", 2),
    Case("files-export-earlier-bundle", "files", "`export` over an earlier export, without `--force`",
         "mtbert export RUN", exported_run(),
         ERR + "<run>/onnx: holds an earlier export; pass --force to replace it, or -o DIR to write another folder", 2),
    Case("files-export-force-other-files", "files", "`export --force` over an earlier export that holds a file of "
         "the user's", "mtbert export RUN --force", exported_run(extra_file=True),
         ERR + "<run>/onnx: holds an earlier export and files it did not write (Dockerfile); --force replaces only an "
         "export's own files: move them, or give another -o DIR", 2),
    Case("files-export-over-the-model", "files", "`export -o` the run's model folder", "mtbert export RUN -o RUN/model",
         lambda env: ["export", str(env.copy_run()), "-o", str(env.run / "model")],
         ERR + "<run>/model: holds the run's model <run>/model; replacing it would lose the model: give a new folder "
         "with -o DIR (default <run>/onnx)", 2),
    Case("files-export-inside-the-model", "files", "`export -o` a folder inside the run's model folder",
         "mtbert export RUN -o RUN/model/onnx",
         lambda env: ["export", str(env.copy_run()), "-o", str(env.run / "model" / "onnx")],
         ERR + "<run>/model/onnx: inside the model folder <run>/model; export never writes into a model: give a folder "
         "outside it with -o DIR (default <run>/onnx)", 2),
    Case("files-export-a-file", "files", "`export -o` a file", "mtbert export RUN -o notes.txt",
         lambda env: ["export", str(env.trained_run()), "-o", str(env.write("notes.txt", "mine"))],
         ERR + "<data>/notes.txt: is a file; export writes a folder: give a new one with -o DIR", 2),
    Case("files-train-over-a-users-file", "files", "run dir holding a file named like a run's (`config.yaml`), but "
         "no run", "mtbert train config.yaml", users_config_in_run_dir,
         ERR + "<run>: holds config.yaml, which a run would overwrite; pass --overwrite to replace it, or --run-dir DIR "
         "to train into another directory", 2),
    Case("files-train-overwrite-its-config", "files", "`--overwrite` of a run dir whose `config.yaml` is the user's "
         "config being trained", "mtbert train DIR/config.yaml --run-dir DIR --overwrite", config_in_run_dir,
         ERR + "<tmp>: its config.yaml is the config being trained, which a run would overwrite; mtbert never writes "
         "over its inputs: give another --run-dir", 2),
    Case("files-train-overwrite-keeps-other-files", "files", "`--overwrite` of a run dir that also holds the user's "
         "files", "mtbert train config.yaml --overwrite", over_a_run_with_notes,
         "works: removes only the run's own files (checkpoints, model, metrics, report, curves, config), trains, and "
         "warns which other files it left", 0, notes_kept),
    Case("files-convert-over-its-input", "files", "`convert -o` the DeepPavlov config being converted",
         "mtbert convert dp.json -o dp.json", convert_over_itself,
         ERR + "-o <tmp>/dp.json: is the config being converted; mtbert never writes over its inputs: give another -o", 2),
]


# ---------------------------------------------------------------- running a case


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_bert) -> Path:
    """One step of training on the good files: the run dir of the command-line and security rows."""
    from mtbert.config import load_config
    from mtbert.training.trainer import train

    tmp = tmp_path_factory.mktemp("bad_inputs_run")
    (tmp / "data").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp / "data" / name).write_text(GOOD)
    raw = {"backbone": tiny_bert, "data_dir": str(tmp / "data"), "max_length": 32, "tasks": {"sent": sent()},
           "training": {"max_steps": 1, "batch_size": 2, "progress": False, "precision": "fp32"}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(raw))
    run = tmp / "run"
    train(load_config(tmp / "config.yaml"), run)
    return run


@pytest.fixture(scope="module")
def onnx_bundle(trained_run, tmp_path_factory) -> Path:
    """The trained run exported to ONNX: the bundle the bundle rows damage (each a copy)."""
    from mtbert.inference.export import export_onnx

    return export_onnx(trained_run, tmp_path_factory.mktemp("bad_inputs_bundle") / "bundle")


def pattern(sees: str, env: Env) -> re.Pattern:
    """The row's message as a regex: paths filled in, `…` any text."""
    out = re.escape(sees)
    for name, path in (("<data>", env.data.resolve()), ("<run>", env.run), ("<tmp>", env.tmp)):
        out = out.replace(re.escape(name), re.escape(str(path)))
    return re.compile(out.replace(re.escape("…"), ".*"))


def outcome(what, capsys) -> tuple[int, str]:
    """(exit code, stderr) as a user would see them: an exception escaping main() is a traceback and code 1."""
    from mtbert.cli import main

    try:
        code = main(what) if isinstance(what, list) else (what(), 0)[1]
        return code, capsys.readouterr().err
    except Exception:  # what escapes main() is what a user sees as a traceback
        capsys.readouterr()
        return 1, traceback.format_exc()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, request, monkeypatch, capsys):
    monkeypatch.delenv(UNDEFINED, raising=False)
    env = Env(tmp_path, request)
    what = case.setup(env)
    capsys.readouterr()
    code, err = outcome(what, capsys)
    if case.code == 2:
        assert code == 2, err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert pattern(case.sees, env).fullmatch(lines[0]), f"\n{lines[0]}\n{case.sees}"
    elif case.code == 1:
        assert code == 1 and "Traceback" in err, err
        exc_line = next(line for line in err.splitlines() if re.match(r"^[\w.]+(Error|Exception)\b", line))
        assert pattern(case.sees, env).fullmatch(exc_line), f"\n{exc_line}\n{case.sees}"
    else:
        assert code == 0, err
        assert "mtbert: error" not in err
    if case.check:
        case.check(env)


def test_a_real_process_prints_the_same_one_line(tmp_path, request):
    """In-process, pytest captures the log; one row in a real process shows stderr holds only that line."""
    import os
    import subprocess

    case = next(c for c in CASES if c.id == "data-label-unseen")
    env = Env(tmp_path, request)
    argv = case.setup(env)
    proc = subprocess.run([sys.executable, "-m", "mtbert", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert pattern(case.sees, env).fullmatch(proc.stderr.rstrip("\n")), proc.stderr


# ---------------------------------------------------------------- the doc and the cases, one to one


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def doc_row(case: Case) -> str:
    sees = cell(case.sees) if case.code == 0 else f"`{cell(case.sees)}`"  # a message, or what happens instead
    return f"| `{case.id}` | {cell(case.what)} | `{cell(case.command)}` | {sees} | {case.code} |"


HEADER = "| id | bad input | command | what the user sees | exit |\n|---|---|---|---|---|"


def doc_tables() -> str:
    parts = []
    for group, title in GROUPS.items():
        rows = "\n".join(doc_row(c) for c in CASES if c.group == group)
        parts.append(f"## {title}\n\n{HEADER}\n{rows}\n")
    return "\n".join(parts)


def parse_doc(text: str) -> list[tuple[str, str, str, str, str, int]]:
    """(section, id, bad input, command, message, exit) for every table row of the doc."""
    rows, section = [], None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        ident, what, command, sees, code = cells
        sees = sees[1:-1] if sees.startswith("`") and sees.endswith("`") else sees
        rows.append((section, ident.strip("`"), what, command.strip("`"), sees, int(code)))
    return rows


def test_doc_matches_cases():
    documented = parse_doc(DOC.read_text(encoding="utf-8"))
    # the doc has a section per group, in GROUPS' order
    expected = [(GROUPS[c.group], c.id, c.what, c.command, c.sees, c.code)
                for group in GROUPS for c in CASES if c.group == group]
    assert [r[1] for r in documented] == [r[1] for r in expected], \
        "docs/bad-inputs.md and CASES list different rows; `python tests/test_bad_inputs.py` prints the tables"
    for doc, case in zip(documented, expected, strict=True):
        assert doc == case, f"row {case[1]} differs between docs/bad-inputs.md and CASES"


def test_case_ids_unique_and_groups_known():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert all(c.group in GROUPS and c.id.startswith(c.group) for c in CASES)
    assert "## Server" in DOC.read_text(encoding="utf-8")


if __name__ == "__main__":
    sys.stdout.write(doc_tables())
