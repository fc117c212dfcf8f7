"""mtbert never deletes or overwrites a file it did not create.

`test_output_flag` walks every output flag of every command (train and compare --run-dir and --overwrite,
each form of predict --output, export -o and --force, convert -o) against a folder of sentinel files:
the user's notes, a private key, a script, a backup named like mtbert's old parking folder, another
trainer's checkpoint, someone else's temporary file, and inputs given again as outputs. After each command
every sentinel and input has its bytes and mode, the trained run it reads is unchanged, a refusal wrote
nothing at all, and whatever the command did write has the modes of the umask (0640 and 0750 under 027),
not tempfile's 0600 and 0700. The other tests look closer at --overwrite, the leftovers of a kill, the
mode of a file written over and export's --force.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mtbert.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOOD = "sentence\tlabel\ngood film\tpos\nbad film\tneg\nfine fun\tpos\nawful plot\tneg\n"
UMASK = 0o027
TEMPORARY = re.compile(r"\..+\.([a-z0-9_]{8}\.tmp|old)")  # io.py's names, and tempfile's
SENTINELS = {
    "notes.txt": (b"my notes\n", 0o644),
    "private.key": (b"\x00\x01 a secret", 0o600),
    "run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
    "data/train.tsv": (b"sentence\tlabel\nmine\tpos\n", 0o640),
    "model.old/backup.bin": (b"my backup of a model", 0o644),  # the name mtbert once parked its model under
    "bundle.old/model.onnx": (b"an older bundle I keep", 0o644),
    "checkpoint-500/trainer.json": (b'{"another": "trainer"}', 0o644),  # not mtbert's: 3 digits, not 8
    ".cache.abcdefgh.tmp": (b"someone else's temporary file", 0o600),  # a temp name, not of a run's file
}


def _config(tiny_bert: str, data: Path, run: Path) -> dict:
    return {"backbone": tiny_bert, "data_dir": str(data), "run_dir": str(run), "max_length": 16, "seed": 1,
            "tasks": {"sent": {"type": "classification", "train": "train.tsv", "dev": "dev.tsv",
                               "columns": {"text": "sentence", "label": "label"}}},
            "training": {"max_steps": 2, "batch_size": 2, "progress": False, "precision": "fp32"}}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_bert) -> Path:
    from mtbert.config import load_config
    from mtbert.training.trainer import train

    tmp = tmp_path_factory.mktemp("file_safety_run")
    (tmp / "data").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp / "data" / name).write_text(GOOD)
    (tmp / "config.yaml").write_text(yaml.safe_dump(_config(tiny_bert, tmp / "data", tmp / "run")))
    train(load_config(tmp / "config.yaml"), tmp / "run")
    return tmp / "run"


@pytest.fixture
def umask():
    old = os.umask(UMASK)
    yield UMASK
    os.umask(old)


def snapshot(paths: list[Path]) -> dict[Path, tuple]:
    """Bytes and mode of every file under `paths` (a symlink as its target's name)."""
    out = {}
    for root in paths:
        for p in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if p.is_symlink():
                out[p] = ("link", os.readlink(p))
            elif p.is_file():
                out[p] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def stamps(root: Path) -> dict[Path, tuple[int, int, bool]]:
    """(inode, mtime, is a folder) of every path under `root`: what changes when anything is written."""
    out = {}
    for p in (root, *root.rglob("*")):
        st = p.lstat()
        out[p] = (st.st_ino, st.st_mtime_ns, stat.S_ISDIR(st.st_mode))
    return out


def written(before: dict, after: dict) -> list[Path]:
    """Files and folders that are new, and files replaced or rewritten."""
    return [p for p, s in after.items() if p not in before or (not s[2] and s != before[p])]


class Env:
    """A test's folders: `folder` of sentinels, `inputs` (config, data, JSON Lines) and the trained run."""

    def __init__(self, tmp: Path, tiny_bert: str, run: Path):
        self.tmp, self.run, self.tiny_bert = tmp, run, tiny_bert
        self.folder = tmp / "folder"
        self.inputs = tmp / "inputs"
        self.kept: list[Path] = []  # what no command may change: sentinels and inputs
        for name, (content, mode) in SENTINELS.items():
            self.plant(name, content, mode)
        (self.inputs / "data").mkdir(parents=True)
        for name in ("train.tsv", "dev.tsv"):
            (self.inputs / "data" / name).write_text(GOOD)
        self.config = self.inputs / "config.yaml"
        self.config.write_text(yaml.safe_dump(_config(tiny_bert, self.inputs / "data", tmp / "unused-run")))
        self.texts = self.inputs / "in.jsonl"
        self.texts.write_text('{"text": "good film"}\n"bad film"\n')
        self.kept.append(self.inputs)

    def plant(self, name: str, content: bytes, mode: int = 0o644) -> Path:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
        self.kept.append(path)
        return path

    def link(self, name: str, target: Path, hard: bool = False) -> Path:
        path = self.folder / name
        (os.link if hard else os.symlink)(target, path)
        self.kept.append(path)
        return path

    def own_run_in_folder(self) -> None:
        """The trained run's files, copied into the folder: a run that --overwrite may replace."""
        shutil.copytree(self.run, self.folder, dirs_exist_ok=True)

    def export(self, out: Path) -> Path:
        from mtbert.inference.export import export_onnx

        export_onnx(self.run, out)
        return out

    def dp_config(self) -> Path:
        raw = json.loads((ROOT / "configs/deeppavlov/multitask_example.json").read_text())
        raw["metadata"]["variables"].update(DATA_PATH=str(self.inputs), BACKBONE=self.tiny_bert)
        (self.inputs / "conll2003").mkdir(exist_ok=True)
        (self.inputs / "conll2003" / "train.txt").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n")
        (self.inputs / "conll2003" / "valid.txt").write_text("Peter NNP B-NP B-PER\n\n")
        path = self.inputs / "dp.json"
        path.write_text(json.dumps(raw))
        return path

    def split_run_over(self, name: str) -> Path:
        """A copy of the trained run whose config reads its dev file from the folder, under `name`."""
        run = self.tmp / "split-run"
        shutil.copytree(self.run, run)
        config = run / "model" / "config.yaml"
        raw = yaml.safe_load(config.read_text())
        raw["data_dir"] = str(self.folder)
        raw["tasks"]["sent"]["dev"] = name
        config.write_text(yaml.safe_dump(raw))
        self.plant(name, GOOD.encode())
        return run


@dataclass(frozen=True)
class Flag:
    id: str
    setup: Callable[[Env], list[str]]  # plants what the case needs; returns the argv of `mtbert`
    code: int  # 0: the command runs; 2: it is refused in one line
    says: str = ""  # a refusal's message contains this


def predict(env: Env, *extra: str) -> list[str]:
    return ["predict", str(env.run), "--task", "sent", "--input", str(env.texts), *extra]


def predict_all(env: Env, *extra: str) -> list[str]:
    return ["predict", str(env.run), "--all", "--input", str(env.texts), *extra]


def train_over_a_run(env: Env) -> list[str]:
    env.own_run_in_folder()
    return ["train", str(env.config), "--run-dir", str(env.folder), "--overwrite"]


def train_over_a_users_config(env: Env) -> list[str]:
    env.plant("config.yaml", b"# my config, not a run's\n")
    return ["train", str(env.config), "--run-dir", str(env.folder)]


def train_config_in_run_dir(env: Env) -> list[str]:
    """`mtbert train DIR/config.yaml --run-dir DIR --overwrite`: the config is the user's, not a run's."""
    config = env.plant("config.yaml", env.config.read_bytes())
    return ["train", str(config), "--run-dir", str(env.folder), "--overwrite"]


def compare_over_a_compare(env: Env) -> list[str]:
    argv = ["compare", str(env.config), "--modes", "finetune", "--run-dir", str(env.folder)]
    assert main(["-q", *argv]) == 0
    return [*argv, "--overwrite"]


def exported(then: Callable[[Env, Path], list[str]]) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        bundle = env.export(env.folder / "bundle")
        return then(env, bundle)

    return setup


def bundle_without_force(env: Env, bundle: Path) -> list[str]:
    env.kept.append(bundle)
    return ["export", str(env.run), "-o", str(bundle)]


def bundle_with_a_user_file(env: Env, bundle: Path) -> list[str]:
    env.kept.append(bundle)  # the whole bundle: --force must not replace it when it holds another file
    env.plant("bundle/README.md", b"how we deploy this\n")
    return ["export", str(env.run), "-o", str(bundle), "--force"]


FLAGS = [
    Flag("train-run-dir", lambda env: ["train", str(env.config), "--run-dir", str(env.folder)], 0),
    Flag("train-overwrite", train_over_a_run, 0),
    Flag("train-over-a-users-config", train_over_a_users_config, 2, "holds config.yaml, which a run would overwrite"),
    Flag("train-overwrite-its-own-config", train_config_in_run_dir, 2, "is the config being trained"),
    Flag("compare-run-dir", lambda env: ["compare", str(env.config), "--modes", "finetune", "--run-dir",
                                         str(env.folder)], 0),
    Flag("compare-overwrite", compare_over_a_compare, 0),
    Flag("predict-output", lambda env: predict(env, "--output", str(env.folder / "out.jsonl")), 0),
    Flag("predict-output-is-input", lambda env: predict(env, "--output", str(env.texts)), 2, "is the --input file"),
    Flag("predict-output-symlink-to-input",
         lambda env: predict(env, "--output", str(env.link("in.jsonl", env.texts))), 2, "is the --input file"),
    Flag("predict-output-hard-link-to-input",
         lambda env: predict(env, "--output", str(env.link("in.jsonl", env.texts, hard=True))), 2,
         "is the --input file"),
    Flag("predict-output-in-model", lambda env: predict(env, "--output", str(env.run / "model" / "out.jsonl")), 2,
         "is inside the model"),
    Flag("predict-all-output", lambda env: predict_all(env, "--output", str(env.folder / "out.jsonl")), 0),
    Flag("predict-all-output-is-input", lambda env: predict_all(env, "--output", str(env.texts)), 2,
         "is the --input file"),
    Flag("predict-all-skip-existing-input", lambda env: predict_all(env, "--output", str(env.texts),
                                                                    "--skip-existing"), 2, "is the --input file"),
    Flag("predict-all-output-symlink-to-input",
         lambda env: predict_all(env, "--output", str(env.link("in.jsonl", env.texts))), 2, "is the --input file"),
    Flag("predict-split-output", lambda env: ["predict", str(env.run), "--split", "dev", "--output",
                                              str(env.folder)], 0),
    Flag("predict-split-minbert-output", lambda env: ["predict", str(env.run), "--split", "dev", "--format",
                                                      "minbert", "--output", str(env.folder)], 0),
    Flag("predict-split-output-over-data",
         lambda env: ["predict", str(env.split_run_over("sent-dev-predictions.jsonl")), "--split", "dev",
                      "--output", str(env.folder)], 2, "sent-dev-predictions.jsonl: is tasks.sent.dev"),
    Flag("export-new-folder", lambda env: ["export", str(env.run), "-o", str(env.folder / "bundle")], 0),
    Flag("export-folder-of-other-files", lambda env: ["export", str(env.run), "-o", str(env.folder)], 2,
         "holds files that mtbert export did not write"),
    Flag("export-a-file", lambda env: ["export", str(env.run), "-o", str(env.folder / "notes.txt")], 2, "is a file"),
    Flag("export-over-the-model", lambda env: ["export", str(env.run), "-o", str(env.run / "model")], 2,
         "holds the run's model"),
    Flag("export-over-the-run", lambda env: ["export", str(env.run), "-o", str(env.run)], 2, "holds the run's model"),
    Flag("export-inside-the-model", lambda env: ["export", str(env.run), "-o", str(env.run / "model" / "onnx")], 2,
         "inside the model folder"),
    Flag("export-earlier-bundle", exported(bundle_without_force), 2, "pass --force to replace it"),
    Flag("export-force", exported(lambda env, b: ["export", str(env.run), "-o", str(b), "--force"]), 0),
    Flag("export-force-bundle-with-a-user-file", exported(bundle_with_a_user_file), 2,
         "files it did not write (README.md)"),
    Flag("convert-output", lambda env: ["convert", str(env.dp_config()), "--only-tasks", "conll", "-o",
                                         str(env.folder / "converted.yaml")],
         0),
    Flag("convert-output-is-input",
         lambda env: ["convert", str(src := env.dp_config()), "--only-tasks", "conll", "-o", str(src)], 2,
         "is the config being converted"),
]


def _new_modes_follow_the_umask(new: list[Path], mask: int) -> None:
    for path in new:
        if path.is_symlink():
            continue
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, f"{path}: {oct(path.stat().st_mode)}, not {oct(want)}"


@pytest.mark.parametrize("flag", FLAGS, ids=[f.id for f in FLAGS])
def test_output_flag(flag: Flag, trained_run, tiny_bert, tmp_path, umask, capsys):
    env = Env(tmp_path, tiny_bert, trained_run)
    argv = flag.setup(env)
    kept, run_before = snapshot(env.kept), snapshot([trained_run])
    before = stamps(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == flag.code, err
    assert snapshot(env.kept) == kept, "a sentinel or an input changed"
    assert snapshot([trained_run]) == run_before, "the run that was read changed"
    after = stamps(tmp_path)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("mtbert: error: ") and flag.says in lines[0], err
        assert after == before, f"a refused command wrote {sorted(set(after) ^ set(before))}"
    else:
        new = written(before, after)
        assert new, "the command wrote nothing"
        assert not [p for p in new if TEMPORARY.fullmatch(p.name)], "a temporary file was left"
        _new_modes_follow_the_umask(new, umask)


def test_overwrite_removes_only_the_runs_files_and_names_the_others(trained_run, tiny_bert, tmp_path, caplog):
    env = Env(tmp_path, tiny_bert, trained_run)
    env.own_run_in_folder()
    stale = env.folder / "checkpoint-99999999"  # a checkpoint of the previous run, later than any of the new one
    shutil.copytree(next(trained_run.glob("checkpoint-*")), stale)
    with caplog.at_level(logging.WARNING, logger="mtbert"):
        assert main(["train", str(env.config), "--run-dir", str(env.folder), "--overwrite"]) == 0
    assert not stale.exists()
    assert yaml.safe_load((env.folder / "config.yaml").read_text())["run_dir"] == str(env.folder)
    assert all(json.loads(line)["step"] <= 2 for line in (env.folder / "metrics.jsonl").read_text().splitlines())
    left = next(r.getMessage() for r in caplog.records if "--overwrite" in r.getMessage())
    for name in (".cache.abcdefgh.tmp", "checkpoint-500/", "data/", "model.old/", "notes.txt", "private.key"):
        assert name in left, left


def test_leftovers_of_a_kill_are_removed_when_training_resumes(trained_run, tiny_bert, tmp_path):
    from mtbert.training.checkpoint import checkpoints

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    last = checkpoints(run)[-1]
    leftovers = [run / f".{last.name[:-1]}9.k1ll3d_x.tmp", run / ".model.abcd_123.tmp", run / ".metrics.jsonl.zz9zz9zz.tmp",
                 run / f".{last.name}.old"]
    for path in leftovers[:2] + leftovers[3:]:
        shutil.copytree(last, path)
    leftovers[2].write_text("half a line")
    others = {run / ".notes.abcdefgh.tmp": b"not mtbert's", run / "model.old": None, run / ".data.old": b"mine"}
    for path, content in others.items():
        path.mkdir() if content is None else path.write_bytes(content)
    assert main(["-q", "train", str(run / "config.yaml"), "--resume", str(run)]) == 0
    assert [p for p in leftovers if p.exists()] == []
    assert all(p.exists() for p in others)


def test_a_parked_model_whose_successor_never_arrived_is_put_back(trained_run, tmp_path):
    from mtbert.rundir import remove_leftovers

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "model").rename(run / ".model.old")  # killed between atomic_write_dir's two renames
    assert remove_leftovers(run) == []
    assert (run / "model" / "heads.safetensors").is_file() and not (run / ".model.old").exists()


def test_predict_output_over_an_existing_file_keeps_its_mode(trained_run, tiny_bert, tmp_path, umask):
    env = Env(tmp_path, tiny_bert, trained_run)
    out = env.folder / "shared.jsonl"
    out.write_text("old answers\n")
    out.chmod(0o644)  # readable by the team, though this user's umask is 027
    assert main(predict(env, "--output", str(out))) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 and '"label"' in out.read_text()


def test_output_through_a_symlink_writes_its_target(trained_run, tiny_bert, tmp_path):
    env = Env(tmp_path, tiny_bert, trained_run)
    target = env.folder / "answers-v1.jsonl"
    target.write_text("")
    link = env.folder / "latest.jsonl"
    link.symlink_to(target.name)
    assert main(predict(env, "--output", str(link))) == 0
    assert link.is_symlink() and len(target.read_text().splitlines()) == 2


def test_export_force_replaces_an_earlier_bundle_and_nothing_beside_it(trained_run, tiny_bert, tmp_path):
    env = Env(tmp_path, tiny_bert, trained_run)
    bundle = env.export(env.folder / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(p.name for p in bundle.iterdir()) == manifest["files"]
    (bundle / "model.onnx").write_bytes(b"stale")
    assert main(["-q", "export", str(trained_run), "-o", str(bundle), "--force"]) == 0
    assert (bundle / "model.onnx").stat().st_size > 1000
    assert (env.folder / "bundle.old" / "model.onnx").read_bytes() == SENTINELS["bundle.old/model.onnx"][0]
    # a bundle of an earlier version names no files: its own are the fixed ones and the tokenizer's
    del manifest["files"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert main(["-q", "export", str(trained_run), "-o", str(bundle), "--force"]) == 0
    (bundle / "Dockerfile").write_text("FROM scratch\n")
    assert main(["-q", "export", str(trained_run), "-o", str(bundle), "--force"]) == 2
    assert (bundle / "Dockerfile").read_text() == "FROM scratch\n"
