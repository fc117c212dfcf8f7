"""Training examples/s with 1 and with N processes (torch.distributed through `mtbert train --nproc N`, one
thread each), on the five-task mix, alternating, medians of the repeats; the scaling efficiency is
(examples/s with N) / (N x examples/s with 1).

    python benchmarks/ddp_scaling.py [--config configs/deeppavlov_example.yaml] [--steps 150] [--repeats 2] [--nproc 2]

Only the training loop is timed (the trainer's own clock: it excludes reading and tokenising the data and
the one evaluation at the end). Writes the 'ddp_scaling' section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.config import load_config  # noqa: E402
from mtbert.training.checkpoint import checkpoints  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/deeppavlov_example.yaml")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    sets = [f"training.max_steps={args.steps}", f"training.eval_every={args.steps}", "training.threads=1",
            "training.progress=false", *args.set]
    out = Path(tempfile.mkdtemp(prefix="mtbert-ddp-"))
    rates: dict[int, list[float]] = {1: [], args.nproc: []}
    for r in range(args.repeats):
        for n in rates:
            rates[n].append(run(args.config, sets, out / f"n{n}-{r}", n))
            print(f"repeat {r}, {n} process(es): {rates[n][-1]:.1f} examples/s", flush=True)
    one, many = statistics.median(rates[1]), statistics.median(rates[args.nproc])
    cfg = load_config(args.config, sets)
    body = f"""## Several processes: training throughput with torch.distributed (issue 6)

- command: `python benchmarks/ddp_scaling.py --config {args.config} --steps {args.steps} --repeats {args.repeats} --nproc {args.nproc}`
- machine: {machine()}
- date: {today()}
- setup: `mtbert train --nproc N` (torchrun, gloo on loopback), one thread per process, the five-task mix,
  global batch {cfg.training.batch_size} (each of N processes takes 1/N of it), {args.steps} steps, precision
  {cfg.training.precision}; runs alternate, medians of {args.repeats}; the trainer's clock (data loading and the
  final evaluation excluded)

| processes | examples/s (median) | runs |
|---|---|---|
| 1 | {one:.1f} | {", ".join(f"{x:.1f}" for x in rates[1])} |
| {args.nproc} | {many:.1f} | {", ".join(f"{x:.1f}" for x in rates[args.nproc])} |

- speed-up with {args.nproc} processes: **{many / one:.2f}x**; scaling efficiency **{many / one / args.nproc:.0%}**
"""
    write_section("ddp_scaling", body)
    print(body)


if __name__ == "__main__":
    main()
