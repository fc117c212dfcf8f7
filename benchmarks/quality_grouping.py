"""Dev quality with and without length-grouped batches: the same config and steps trained with
`training.length_grouping` true and false, for each of several seeds; the two runs of a seed train side by
side (one thread each). Every task's dev metrics at the last evaluation, per seed and averaged.

    python benchmarks/quality_grouping.py [--config configs/deeppavlov_example.yaml] [--seeds 42,7] [--epochs 1]
                                          [--set KEY=VALUE ...] [--out DIR]

Writes the 'quality_grouping' section of benchmarks/RESULTS.md ('quality_grouping_3ep' for --epochs 3, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.data.features import POOL_BATCHES  # noqa: E402
from mtbert.training.checkpoint import checkpoints  # noqa: E402

VARIANTS = {"grouped": "true", "ungrouped": "false"}


def last_eval(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "dev" in r][-1]


def train_minutes(run_dir: Path) -> float:
    """The trainer's own clock: training steps and evaluations, not data loading."""
    state = json.loads((checkpoints(run_dir)[-1] / "trainer.json").read_text())
    return (state["train_seconds"] + state["eval_seconds"]) / 60


def train_pair(config: str, sets: list[str], seed: int, out: Path) -> None:
    """Both variants of one seed at once (a run already finished in `out` is kept: --out DIR resumes a stopped benchmark)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    procs = {}
    for name, value in VARIANTS.items():
        if (out / f"{name}-{seed}" / "report.md").exists():
            continue
        cmd = [sys.executable, "-m", "mtbert", "-q", "train", config, "--run-dir", str(out / f"{name}-{seed}"),
               "--overwrite", "--set", f"training.length_grouping={value}", "--set", "training.threads=1",
               "--set", "training.progress=false", "--set", f"seed={seed}"]
        for s in sets:
            cmd += ["--set", s]
        procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"the {name} run of seed {seed} failed (exit {proc.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/deeppavlov_example.yaml")
    ap.add_argument("--seeds", default="42,7")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", help="parent of the run dirs (default: a new temporary directory)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out or tempfile.mkdtemp(prefix="mtbert-grouping-"))
    for seed in seeds:
        train_pair(args.config, [f"training.epochs={args.epochs}", *args.set], seed, out)
    evals = {(name, seed): last_eval(out / f"{name}-{seed}") for name in VARIANTS for seed in seeds}
    first = evals["grouped", seeds[0]]
    seed_cols = " | ".join(f"seed {s} grouped / ungrouped" for s in seeds)
    rows = [f"| task | metric | {seed_cols} | mean grouped | mean ungrouped | difference |",
            "|---|---|" + "---|" * (len(seeds) + 3)]
    for task, metrics in first["dev"].items():
        for metric in metrics:
            score = {(n, s): evals[n, s]["dev"][task][metric] for n in VARIANTS for s in seeds}
            mean = {n: float(np.mean([score[n, s] for s in seeds])) for n in VARIANTS}
            cells = " | ".join(f"{score['grouped', s]:.3f} / {score['ungrouped', s]:.3f}" for s in seeds)
            rows.append(f"| {task} | {metric} | {cells} | {mean['grouped']:.3f} | {mean['ungrouped']:.3f} | "
                        f"{mean['grouped'] - mean['ungrouped']:+.3f} |")
    target = {n: float(np.mean([evals[n, s]["target"] for s in seeds])) for n in VARIANTS}
    took = {n: float(np.mean([train_minutes(out / f"{n}-{s}") for s in seeds])) for n in VARIANTS}
    cmd = " ".join(["python benchmarks/quality_grouping.py", "--config", args.config, "--seeds", args.seeds,
                    "--epochs", str(args.epochs)] + [f"--set {s}" for s in args.set])
    body = f"""## Length-grouped batches: dev quality with and without, {args.epochs} epoch(s) (issue 4)

- command: `{cmd}`
- machine: {machine()}
- date: {today()}
- every run: the same config, {first['step']} steps, one thread; scores at the last evaluation (step
  {first['step']}); length grouping sorts within pools of {POOL_BATCHES} batches
- target metric (mean of the tasks' primary metrics), averaged over {len(seeds)} seeds: grouped
  **{target['grouped']:.4f}**, ungrouped **{target['ungrouped']:.4f}** ({target['grouped'] - target['ungrouped']:+.4f})
- minutes of training and evaluation (the trainer's clock, mean over seeds; other runs shared the 2 cores,
  so only the ratio means something): grouped {took['grouped']:.1f}, ungrouped {took['ungrouped']:.1f}

{chr(10).join(rows)}
"""
    write_section("quality_grouping" if args.epochs == 1 else f"quality_grouping_{args.epochs}ep", body)
    print(body)


if __name__ == "__main__":
    main()
