"""DeepPavlov 1.7.0 and mtbert on the same DeepPavlov config: steps per epoch, examples per task, dev scores
(issue 17's "done when").

    python benchmarks/dp_side_by_side.py [--examples 200,160,200,120,240] [--dev-examples 200] [--epochs 3]
                                         [--seeds 42,43] [--threads 1] [--dp-venv /work/dp-venv]

For each seed: the kit's `config-template.json` (../shared/peers/deeppavlov), pointed at a slice of the real
data in ../shared/data (the first N training and dev examples of CoLA, RTE, STS-B, COPA and CoNLL-2003 in the
template's slots sst, nli, sts, mc, ner; --examples per slot in that order), with that seed in every `seed`
the template has. DeepPavlov trains it as it is (`python -m deeppavlov train config.json` in its own venv,
--dp-venv); `mtbert convert config.json -o config.yaml` converts the very same file, and mtbert trains the
result with its defaults for converted configs (`schedule: deeppavlov`, ...), only `training.threads` and
`training.progress` set on the command line. One process at a time, alternating which tool goes first.

What is compared, per epoch:
- steps (batches trained): DeepPavlov's, counted from what `MultiTaskIterator.gen_batches` yields to the
  training loop (benchmarks/hook/sitecustomize.py wraps that generator and only counts); mtbert's from the
  run's `trainer.json` (every optimiser step with its task, `loss_curve`) cut at the epoch ends that
  `metrics.jsonl` records;
- examples per task: DeepPavlov's counted in the yielded batches (the examples in the drawn task's slot);
  mtbert's steps x batch size (schedule deeppavlov trains full batches only);
- dev scores per task after the last epoch (the validation both run at the end of each epoch,
  `val_every_n_epochs: 1`), and where each tool's runs fall against the other's spread.

DeepPavlov draws each step's task with NumPy's global generator (`np.random.choice` in `gen_batches`), which
it never seeds (`random.seed(seed)` seeds Python's generator; the task iterators' shuffling is seeded): its
runs differ even at the same seed. Torch it seeds in `MultiTaskTransformer.__init__` from the transformer's
own `seed` (default 42, which the kit's template leaves), so the benchmark sets that one to the run's seed
too: runs before 2026-12-07 drew DeepPavlov's new pooler and heads from seed 42 in both seeds. mtbert
seeds all of these from `seed`. Results go to the 'dp_side_by_side' section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    KIT,
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

# the dev score compared per slot: (DeepPavlov's metric alias in the template, mtbert's metric, label, scale)
SCORES = {"sst": ("accuracy_sst", "accuracy", "CoLA acc", 1), "nli": ("accuracy_nli", "accuracy", "RTE acc", 1),
          "sts": ("pearson_sts", "pearson", "STS-B r", 1), "mc": ("accuracy_mc", "accuracy", "COPA acc", 1),
          "ner": ("ner_f1", "ner_f1", "CoNLL F1", 100)}  # DeepPavlov's ner_f1 is on 0-100


def per_slot(text: str, name: str) -> dict[str, int]:
    values = [int(x) for x in text.split(",")]
    if len(values) == 1:
        values *= len(SLOTS)
    if len(values) != len(SLOTS):
        sys.exit(f"{name}: one number, or {len(SLOTS)} in the order {', '.join(SLOTS.values())}")
    return dict(zip(SLOTS, values, strict=True))


def run_deeppavlov(args, seed_dir: Path, backbone: str) -> dict:
    run = seed_dir / "deeppavlov"
    run.mkdir()
    timing, log = run / "hook.json", run / "log.txt"
    env = tool_env(args.threads, timing, "deeppavlov", {"HF_DATASETS_CACHE": str(run / "hf-cache")})
    rc, wall, load = run_logged([str(args.dp_venv / "bin/python"), "-m", "deeppavlov", "train",
                                 str(seed_dir / "config.json")], env, run, log)
    res = {"tool": "deeppavlov", "rc": rc, "wall": wall, "load": load}
    if rc != 0 or not timing.exists():
        return {**res, "error": tail(log)}
    return {**res, **read_deeppavlov_run(timing, log, args.epochs)}


def read_deeppavlov_run(timing: Path, log: Path, epochs_asked: int) -> dict:
    """Per epoch: the batches and examples per task DeepPavlov's iterator yielded to the training loop (the
    hook's counts); the dev scores of the validation after the last epoch."""
    res: dict = {}
    hook = json.loads(timing.read_text())
    valid = dp_validations(log)  # one after each epoch, then the saved model's evaluation after training
    epochs = hook.get("epochs", [])
    if len(epochs) != epochs_asked or not all(e["complete"] for e in epochs) or len(valid) < epochs_asked:
        return {"error": f"expected {epochs_asked} whole epochs and validations, saw {len(epochs)} epochs, "
                                f"{len(valid)} validations\n{tail(log)}"}
    res["epochs"] = [{"steps": sum(e["batches"].values()), "draws": e["draws"], "batches": e["batches"],
                      "examples": e["examples"]} for e in epochs]
    res["dev"] = {slot: valid[epochs_asked - 1]["metrics"][key] / scale for slot, (key, _, _, scale) in SCORES.items()}
    res["trainer_examples"] = hook["train_examples"]  # NNTrainer's own count, a cross-check of the hook's
    res["train_seconds"] = hook["train_seconds"]
    return res


def run_mtbert(args, seed_dir: Path) -> dict:
    run = seed_dir / "mtbert"
    log = seed_dir / "mtbert-log.txt"
    env = tool_env(args.threads, seed_dir / "mtbert-hook.json", "mtbert")
    rc, wall, load = run_logged([*MTBERT, "train", str(seed_dir / "config.yaml"), "--run-dir", str(run),
                                 "--set", f"training.threads={args.threads}", "--set", "training.progress=false"],
                                env, ROOT, log)
    res = {"tool": "mtbert", "rc": rc, "wall": wall, "load": load}
    if rc != 0:
        return {**res, "error": tail(log)}
    return {**res, **read_mtbert_run(run, args.epochs, args.batch_size, log)}


def read_mtbert_run(run: Path, epochs: int, batch_size: int, log: Path) -> dict:
    """Per epoch: mtbert's optimiser steps per task (the last checkpoint's loss_curve, cut at the epoch ends
    metrics.jsonl records) and the examples they trained; the dev scores after the last epoch."""
    res: dict = {}
    ckpts = sorted(run.glob("checkpoint-*/trainer.json"))
    if not ckpts:
        return {"error": f"no checkpoint in {run}\n{tail(log)}"}
    state = json.loads(ckpts[-1].read_text())
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    ends = [e["step"] for e in evals if float(e["epoch"]).is_integer()]
    if len(ends) != epochs or state["step"] != ends[-1]:
        return {"error": f"expected evaluations at {epochs} epoch ends, got epochs "
                                f"{[e['epoch'] for e in evals]}\n{tail(log)}"}
    res["epochs"] = []
    for lo, hi in zip([0, *ends], ends, strict=False):
        steps = {t: 0 for t in SLOTS}
        for step, task, _ in state["loss_curve"]:
            if lo < step <= hi:
                steps[task] += 1
        res["epochs"].append({"steps": hi - lo, "batches": steps, "examples": {t: n * batch_size for t, n in steps.items()}})
    skipped = state["step"] - len(state["loss_curve"])  # non-finite losses: stepped over, not trained
    if skipped:
        res["note"] = f"{skipped} steps skipped on a non-finite loss"
    last = next(e for e in evals if e["step"] == ends[-1])["dev"]
    res["dev"] = {slot: last[slot][metric] for slot, (_, metric, _, _) in SCORES.items()}
    res["train_seconds"] = state["train_seconds"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", default="200,160,200,120,240",
                    help="training examples per task: one number, or five (CoLA, RTE, STS-B, COPA, CoNLL-2003)")
    ap.add_argument("--dev-examples", default="200", help="dev examples per task, as --examples (COPA has 100)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16, help="the template's train.batch_size")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seeds", default="42,43")
    ap.add_argument("--threads", type=int, default=1)
    add_dp_venv_argument(ap)
    ap.add_argument("--workdir", type=Path, help="keep slices, configs, logs and runs here (default: a temp dir, removed)")
    ap.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    started, load_start = time.time(), os.getloadavg()

    backbone, dp_versions = deeppavlov_probe(args.dp_venv)
    mt_backbone, mt_versions = mtbert_probe({**os.environ, **OFFLINE})
    same = same_file(Path(backbone) / "model.safetensors", Path(mt_backbone) / "model.safetensors")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dp-side-by-side-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = build_slice(work / "data", per_slot(args.examples, "--examples"), per_slot(args.dev_examples, "--dev-examples"))
    print("slice (train, dev):", {SLOTS[k]: v for k, v in sizes.items()}, "in", work, flush=True)

    runs: list[dict] = []
    for i, seed in enumerate(seeds):
        seed_dir = work / f"seed-{seed}"
        seed_dir.mkdir()
        config = dp_config(work / "data", seed_dir / "dp-root", backbone, args.epochs, args.batch_size,
                           args.max_length, seed)
        (seed_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        # the same file, converted by mtbert
        rc, _, _ = run_logged([*MTBERT, "convert", str(seed_dir / "config.json"), "-o", str(seed_dir / "config.yaml")],
                              {**os.environ, **OFFLINE}, seed_dir, seed_dir / "convert-log.txt")
        if rc != 0:
            sys.exit(f"mtbert convert failed:\n{tail(seed_dir / 'convert-log.txt')}")
        order = ["deeppavlov", "mtbert"] if i % 2 == 0 else ["mtbert", "deeppavlov"]
        for tool in order:
            res = run_deeppavlov(args, seed_dir, backbone) if tool == "deeppavlov" else run_mtbert(args, seed_dir)
            res["seed"] = seed
            runs.append(res)
            if "error" in res:
                print(f"  {tool} seed {seed}: FAILED rc={res['rc']}\n{res['error']}", flush=True)
            else:
                print(f"  {tool} seed {seed}: steps per epoch {[e['steps'] for e in res['epochs']]}, "
                      f"dev {_scores(res)} (wall {res['wall']:.0f} s)", flush=True)

    body = report(args, runs, sizes, seeds, backbone, dp_versions, mt_versions, same,
                  (time.time() - started) / 60, load_start)
    print(body)
    if not args.no_write:
        write_section("dp_side_by_side", body)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def shortfall_probability(train_sizes: dict[str, int], batch_size: int, iterator_batch_size: int = 8,
                          epochs: int = 200_000, seed: int = 0) -> float:
    """How often one epoch of `plain` draws leaves some task with full batches it never trained: the epoch's
    sum(n) // iterator_batch_size draws are multinomial with p ~ n (MultiTaskIterator._get_probs), and a task
    falls short when it is drawn fewer times than it has full batches. Monte Carlo over `epochs` epochs."""
    n = np.array(list(train_sizes.values()), dtype=float)
    counts = np.random.default_rng(seed).multinomial(int(n.sum()) // iterator_batch_size, n / n.sum(), size=epochs)
    return float((counts < (n // batch_size)).any(axis=1).mean())


def _scores(res: dict) -> str:
    return ", ".join(f"{SCORES[s][2]} {v:.3f}" for s, v in res["dev"].items())


def spread_verdict(dp: list[float], mt: list[float]) -> str:
    """Whether the two tools' runs overlap: each range [min, max] over seeds against the other's."""
    lo_dp, hi_dp, lo_mt, hi_mt = min(dp), max(dp), min(mt), max(mt)
    if lo_mt > hi_dp:
        return f"mtbert above ({lo_mt - hi_dp:+.3f} past DeepPavlov's best run)"
    if hi_mt < lo_dp:
        return f"mtbert below ({hi_mt - lo_dp:+.3f} under DeepPavlov's worst run)"
    return "overlap"


def report(args, runs, sizes, seeds, backbone, dp_versions, mt_versions, same, minutes, load_start) -> str:
    ok = [r for r in runs if "error" in r] == []
    dp = [r for r in runs if r["tool"] == "deeppavlov" and "error" not in r]
    mt = [r for r in runs if r["tool"] == "mtbert" and "error" not in r]
    full = {s: n // args.batch_size for s, (n, _) in sizes.items()}  # full batches a task has
    draws = sum(n for n, _ in sizes.values()) // 8  # the iterator's batch_size, 8 by default (not set in the template)

    rows = ["| seed | tool | epoch | steps | draws | " + " | ".join(f"{SLOTS[s]} batches / examples" for s in SLOTS) + " |",
            "|---|---|---|---|---|" + "---|" * len(SLOTS)]
    for r in dp + mt:
        for k, e in enumerate(r["epochs"], 1):
            rows.append(f"| {r['seed']} | {r['tool']} | {k} | {e['steps']} | {e.get('draws', draws)} | " +
                        " | ".join(f"{e['batches'][s]} / {e['examples'][s]}" for s in SLOTS) + " |")

    same_steps = same_examples = 0
    pairs = 0
    for seed in seeds:
        a = next((r for r in dp if r["seed"] == seed), None)
        b = next((r for r in mt if r["seed"] == seed), None)
        if not (a and b):
            continue
        for ea, eb in zip(a["epochs"], b["epochs"], strict=True):
            pairs += 1
            same_steps += ea["steps"] == eb["steps"]
            same_examples += ea["examples"] == eb["examples"]
    whole = {s: full[s] * args.batch_size for s in SLOTS}
    all_epochs = [e for r in dp + mt for e in r["epochs"]]
    one_pass = sum(e["examples"] == whole for e in all_epochs)
    short = shortfall_probability({s: n for s, (n, _) in sizes.items()}, args.batch_size)

    score_rows = ["| task | DeepPavlov runs | mtbert runs | DeepPavlov mean | mtbert mean | verdict |",
                  "|---|---|---|---|---|---|"]
    verdicts = {}
    for s, (_, _, label, _) in SCORES.items():
        d, m = [r["dev"][s] for r in dp], [r["dev"][s] for r in mt]
        if not (d and m):
            continue
        verdicts[s] = spread_verdict(d, m)
        score_rows.append(f"| {label} | {', '.join(f'{x:.3f}' for x in d)} | {', '.join(f'{x:.3f}' for x in m)} | "
                          f"{statistics.mean(d):.3f} | {statistics.mean(m):.3f} | {verdicts[s]} |")
    n_overlap = sum(v == "overlap" for v in verdicts.values())
    timing = ["| seed | tool | process wall s | training s | load avg before -> after |", "|---|---|---|---|---|"]
    for r in runs:
        timing.append(f"| {r['seed']} | {r['tool']} | {r['wall']:.0f} | {r.get('train_seconds', 0):.0f} | "
                      f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} |" + (" FAILED |" if "error" in r else ""))
    failures = "".join(f"\n{r['tool']} seed {r['seed']} failed (rc {r['rc']}):\n\n```\n{r['error']}\n```\n"
                       for r in runs if "error" in r)
    cross = ", ".join(f"seed {r['seed']}: {r['trainer_examples']} = {sum(sum(e['examples'].values()) for e in r['epochs'])}"
                      for r in dp)
    cmd = ("python benchmarks/dp_side_by_side.py " + f"--examples {args.examples} --dev-examples {args.dev_examples} "
           f"--epochs {args.epochs} --batch-size {args.batch_size} --seeds {args.seeds} --threads {args.threads}")
    sz = ", ".join(f"{SLOTS[k]} {n}/{d}" for k, (n, d) in sizes.items())
    load_end = os.getloadavg()
    return f"""## DeepPavlov 1.7.0 and mtbert on the same DeepPavlov config (issue 17)

- command: `{cmd}` (under `nice -n 10`, OMP_NUM_THREADS=1; one training process at a time)
- machine: {machine()}
- date: {today()}; {minutes:.0f} min of wall time; load average (1/5/15 min) {' / '.join(f'{x:.1f}' for x in load_start)}
  -> {' / '.join(f'{x:.1f}' for x in load_end)} (other jobs shared the machine)
- versions: DeepPavlov venv (`{args.dp_venv}`, from `{KIT.name}/install.sh`): deeppavlov, torch, transformers =
  {dp_versions}; mtbert's (`python -m mtbert` from the benchmark's interpreter): mtbert, torch, transformers = {mt_versions}
- config: the kit's `config-template.json` as shipped, pointed at the slice, `epochs` {args.epochs}, `batch_size`
  {args.batch_size}, `MAX_SEQ_LEN` {args.max_length}, `evaluation_targets: [valid]`, and the seed in every `seed`
  key; DeepPavlov trains it, `mtbert convert` converts the same file and mtbert trains the result (only
  `--set training.threads={args.threads} --set training.progress=false`). Backbone: the kit's packaged
  all-MiniLM-L6-v2 folder for both (the same file; mtbert's own copy has identical weights: {same})
- data, train/dev examples (the first N of each file in ../shared/data, in the template's slots):
  {sz}

**Steps per epoch: equal in {same_steps} of {pairs} epochs (same seed, DeepPavlov vs mtbert). Examples per
task per epoch: equal in {same_examples} of {pairs}. Every task's full batches, once ({', '.join(f'{SLOTS[s]} {whole[s]}' for s in SLOTS)}
examples; the last partial batch dropped): {one_pass} of {len(all_epochs)} epochs. Dev scores: the two tools'
seed ranges overlap on {n_overlap} of {len(verdicts)} tasks.**{'' if ok else ' (some runs failed: see below)'}

How an epoch goes in both (DeepPavlov 1.7's `MultiTaskIterator.gen_batches`, mtbert's `schedule: deeppavlov`):
{draws} draws (training examples of all tasks // the iterator's `batch_size`, 8 by default: the template sets
only the trainer's 16), each picking a task with p ~ its training examples (`plain`); the task trains its next
full batch of 16, or, when its full batches have run out this epoch, the draw is skipped. With {draws / max(1, sum(full.values())):.1f} times as many
draws as full batches, a task runs out before the epoch ends unless its draws fall short by chance, so an epoch
is one pass over every task's full batches, as the counts show; by the same rule an epoch leaves some full
batch untrained with probability {short:.1%} here (Monte Carlo of the draws, `shortfall_probability`). Which draws fall short differs between
runs: DeepPavlov's task draws come from NumPy's global generator, which it never seeds (torch it seeds from
the multitask_transformer's `seed`); mtbert draws the same epochs for the same seed. DeepPavlov's counts are those of the batches
its iterator yielded to the training loop (NNTrainer's own example count agrees: {cross}); mtbert's are its
optimiser steps per task (`trainer.json`) between the epoch ends in `metrics.jsonl`, times the batch size.

{chr(10).join(rows)}

Dev scores after the last epoch (each tool's validation at the end of epoch {args.epochs}; dev slices as above,
DeepPavlov's `ner_f1` divided by 100). The converted config keeps mtbert's defaults where they differ from
DeepPavlov and says so in the file: bf16 where the CPU has it (DeepPavlov fp32), NER trained on each word's
first sub-token (DeepPavlov: every sub-token), LayerNorm weights not decayed; and mtbert evaluates in
batches with dynamic padding (DeepPavlov at batch size 1, classification padded to 128).

{chr(10).join(score_rows)}

{chr(10).join(timing)}
{failures}"""


if __name__ == "__main__":
    main()
