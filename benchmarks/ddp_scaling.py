"""Training examples/s with 1 and with N processes (torch.distributed through `mtbert train --nproc N`, one
thread each), on the five-task mix, alternating, medians of the repeats; the scaling efficiency is
(examples/s with N) / (N x examples/s with 1).

    python benchmarks/ddp_scaling.py [--config configs/deeppavlov_example.yaml] [--steps 150] [--repeats 2] [--nproc 2]
                                     [--accumulation 1,4]

Each gradient-accumulation setting is measured on its own (with accumulation k the gradients are all-reduced
once per k batches, and a step holds k batches). Only the training loop is timed (the trainer's own clock:
reading and tokenising the data is not in it; the dev sets are left out). Writes the 'ddp_scaling' section
of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.config import load_config  # noqa: E402
from mtbert.training.checkpoint import checkpoints  # noqa: E402

# the N-process contenders: (label, --set overrides); all alternate with one process in every repeat
VARIANTS = [
    ("DDP on every weight, fp32 (before issue 18)", ["training.embedding_sync=all", "training.grad_compression=none"]),
    ("word-embedding rows the batch touched, fp32", ["training.embedding_sync=touched_rows", "training.grad_compression=none"]),
    ("touched rows + bf16 compression", ["training.embedding_sync=touched_rows", "training.grad_compression=bf16"]),
]


def run(config: str, sets: list[str], run_dir: Path, nproc: int) -> float:
    """Train; examples per second of training time, from the final checkpoint's own accounting."""
    cmd = [sys.executable, "-m", "mtbert", "-q", "train", config, "--run-dir", str(run_dir), "--overwrite",
           "--nproc", str(nproc)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    state = json.loads((checkpoints(run_dir)[-1] / "trainer.json").read_text())
    cfg = load_config(config, sets)
    examples = sum(cfg.batch_size(task) * steps for task, steps in state["steps_per_task"].items())
    return examples * cfg.training.gradient_accumulation_steps / state["train_seconds"]


def no_dropout_backbone(config: str, out: Path) -> Path:
    """A copy of the config's backbone folder whose config.json turns the encoder's dropout off."""
    from mtbert.modeling.encoder import resolve_backbone

    copy = out / "backbone-no-dropout"
    if not copy.exists():
        shutil.copytree(resolve_backbone(load_config(config).backbone), copy)
        cfg = json.loads((copy / "config.json").read_text())
        cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        (copy / "config.json").write_text(json.dumps(cfg))
    return copy


def drift(a: Path, b: Path) -> float:
    """|w_b - w_a| / |w_a| over every weight of the two runs' final checkpoints."""
    wa, wb = (load_file(checkpoints(r)[-1] / "model.safetensors") for r in (a, b))
    return float(torch.cat([(wa[k].float() - wb[k].float()).flatten() for k in wa]).norm()
                 / torch.cat([wa[k].float().flatten() for k in wa]).norm())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/deeppavlov_example.yaml")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--accumulation", default="1,4", help="gradient_accumulation_steps settings to measure")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="mtbert-ddp-"))
    table, summary = [], []
    for accum in [int(a) for a in args.accumulation.split(",")]:
        sets = [f"training.max_steps={max(1, args.steps // accum)}", f"training.gradient_accumulation_steps={accum}",
                "training.threads=1", "training.progress=false", *args.set]
        tasks = load_config(args.config, sets).tasks
        sets += [f"tasks.{task}.dev=null" for task in tasks]  # training only
        # no dropout, in the heads or the encoder: N processes draw other masks than one, and the drift
        # column is to show the rounding
        sets += [f"tasks.{task}.dropout=0" for task in tasks] + [f"backbone={no_dropout_backbone(args.config, out)}"]
        contenders = [("one process", [], 1)] + [(label, extra, args.nproc) for label, extra in VARIANTS]
        rates: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
        for r in range(args.repeats):
            for v, (label, extra, n) in enumerate(contenders):
                rates[label].append(run(args.config, sets + extra, out / f"a{accum}-v{v}-r{r}", n))
                print(f"accumulation {accum}, repeat {r}, {label}: {rates[label][-1]:.1f} examples/s", flush=True)
        one = statistics.median(rates["one process"])
        last = args.repeats - 1
        for v, (label, _, n) in enumerate(contenders):
            median = statistics.median(rates[label])
            gap = "" if n == 1 else f"{drift(out / f'a{accum}-v0-r{last}', out / f'a{accum}-v{v}-r{last}'):.1e}"
            table.append(f"| {accum} | {n} | {label} | {median:.1f} | {median / one:.2f}x | {gap} | "
                         f"{', '.join(f'{x:.1f}' for x in rates[label])} |")
        best = max(VARIANTS, key=lambda v: statistics.median(rates[v[0]]))[0]
        default = VARIANTS[1][0]  # the defaults: touched rows, no compression
        many = statistics.median(rates[default])
        summary.append(f"- accumulation {accum}: speed-up with {args.nproc} processes **{many / one:.2f}x**, "
                       f"scaling efficiency **{many / one / args.nproc:.0%}** (the defaults: {default}); "
                       f"fastest: {best}, {statistics.median(rates[best]) / one:.2f}x")
    cfg = load_config(args.config, sets)
    body = f"""## Several processes: training throughput with torch.distributed (issues 6, 18)

- command: `python benchmarks/ddp_scaling.py --config {args.config} --steps {args.steps} --repeats {args.repeats} --nproc {args.nproc} --accumulation {args.accumulation}`
- machine: {machine()}
- date: {today()}
- setup: `mtbert train --nproc N` (torchrun, gloo on loopback), one thread per process, the five-task mix,
  global batch {cfg.training.batch_size} (each of N processes takes 1/N of it), {args.steps} batches per run,
  precision {cfg.training.precision}; contenders alternate, medians of {args.repeats}; the trainer's clock (data loading
  excluded; no dev evaluation)

Weight drift: |w - w_1| / |w_1| between the final weights of the last repeat's run and the one-process run,
dropout off in all, heads and encoder (bf16 autocast and sharding the batch alone already round differently).

| gradient accumulation | processes | what is all-reduced | examples/s (median) | vs one process | weight drift | runs |
|---|---|---|---|---|---|---|
{chr(10).join(table)}

{chr(10).join(summary)}
"""
    write_section("ddp_scaling", body)
    print(body)


if __name__ == "__main__":
    main()
