"""Where a five-task training step's time goes: torch.profiler over training steps of the five-task example
(configs/deeppavlov_example.yaml, the packaged MiniLM, the trainer's own train_step), each op's self time
put in one of the issue's buckets, and the rest of the step's wall time (collation, the schedule, Python)
as its own line.

    python benchmarks/profile_train.py [--steps 40] [--warmup 10] [--threads 2] [--label before]

Writes the section 'profile_train' (or 'profile_train_<label>') of benchmarks/RESULTS.md: one table per
call, so a change's profile stands beside the one before it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

CONFIG = "configs/deeppavlov_example.yaml"
# op name (aten::..., fused kernels) -> bucket, first match wins; matched against the profiler's key
BUCKETS = [
    ("matmuls", r"aten::(addmm|mm|bmm|matmul|linear|_addmm_activation)$|mkldnn.*(linear|matmul)"),
    ("attention", r"scaled_dot_product|flash_attention|_efficient_attention|aten::_softmax|softmax_backward"),
    ("layer norm / GELU / dropout", r"layer_norm|gelu|dropout|aten::(bernoulli_|native_dropout)"),
    ("embeddings", r"embedding|aten::index_select|aten::index_add_"),
    ("optimiser", r"adam|clip_grad|aten::(_foreach|linalg_vector_norm|norm)"),
    ("loss", r"cross_entropy|nll_loss|log_softmax|mse_loss|_log_softmax"),
]


def bucket(name: str) -> str:
    for label, pattern in BUCKETS:
        if re.search(pattern, name):
            return label
    return "other ops (elementwise, copies, reshapes)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--examples", type=int, default=3000, help="training examples read per task (speed only)")
    ap.add_argument("--label", default="", help="section suffix: profile_train_<label>")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mtbert.config import finish, load_raw
    from mtbert.training.trainer import settle, setup, train_step

    sets = [f"training.threads={args.threads}", "training.progress=false", "training.eval_every=100000",
            f"training.max_steps={args.warmup + args.steps + 1}"]
    raw = load_raw(CONFIG, sets)
    for spec in raw["tasks"].values():
        if isinstance(spec, dict) and "type" in spec:
            spec["max_train_examples"] = args.examples
    cfg = finish(raw, CONFIG)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run = setup(cfg, Path(tmp) / "run")
        for _ in range(args.warmup):
            train_step(run)
        settle(run)
        before = dict(run.state.steps_per_task)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(run)
            settle(run)
            wall = time.perf_counter() - start
        tasks = {k: v - before.get(k, 0) for k, v in sorted(run.state.steps_per_task.items())}
        precision = run.precision
    times: dict[str, float] = defaultdict(float)
    others: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        times[bucket(event.key)] += event.self_cpu_time_total / 1e6
        if bucket(event.key).startswith("other"):
            others[event.key] += event.self_cpu_time_total / 1e6
    ops = sum(times.values())
    # with several threads an op's self time is its wall time on the calling thread; what is left of the
    # step's wall time ran in Python: collation, the schedule, autograd's bookkeeping
    times["collation, schedule and Python (wall time not in any op)"] = max(0.0, wall - ops)
    rows = "\n".join(f"| {name} | {1000 * t / args.steps:.1f} | {100 * t / wall:.1f}% |"
                     for name, t in sorted(times.items(), key=lambda kv: -kv[1]))
    top = ", ".join(f"`{k}` {1000 * t / args.steps:.0f}" for k, t in sorted(others.items(), key=lambda kv: -kv[1])[:6])
    label = f"profile_train_{args.label}" if args.label else "profile_train"
    cmd = (f"python benchmarks/profile_train.py --steps {args.steps} --warmup {args.warmup} --threads {args.threads}"
           f" --examples {args.examples}" + (f" --label {args.label}" if args.label else ""))
    body = f"""## Where a training step's time goes: the five-task example (issue 18)

- command: `{cmd}`
- machine: {machine()}; load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}
- date: {today()}; torch {torch.__version__}
- what: {args.steps} training steps of {CONFIG} (the trainer's own `train_step`, {precision},
  after {args.warmup} warm-up steps; tasks drawn: {", ".join(f"{k} {v}" for k, v in tasks.items())}), under
  torch.profiler; each op's self CPU time in one bucket (BUCKETS in the script), the rest of the wall time
  (collation, the schedule, Python) on its own line. {1000 * wall / args.steps:.0f} ms a step under the profiler,
  whose own cost is in the figures; the shares are what to compare, not the milliseconds.

| where | ms per step | share of the step |
|---|---:|---:|
{rows}

The largest "other ops", ms per step: {top}.
"""
    write_section(label, body)
    print(body)


if __name__ == "__main__":
    main()
