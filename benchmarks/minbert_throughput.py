"""Training throughput of our own BERT (`backbone_impl: minbert`) vs transformers' BertModel (`hf`) on the
same config, batches and steps, alternating, medians of several repeats.

    python benchmarks/minbert_throughput.py [--config configs/minbert.yaml] [--steps 30] [--repeats 5]

Writes the 'minbert_throughput' section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.config import load_config  # noqa: E402
from mtbert.data.features import collate, length_grouped_batches  # noqa: E402
from mtbert.data.schedule import TaskSchedule  # noqa: E402
from mtbert.modeling.encoder import load_tokenizer  # noqa: E402
from mtbert.modeling.precision import autocast, resolve_precision  # noqa: E402
from mtbert.training.trainer import make_optimizer, model_for_training, prepare_data, seed_everything  # noqa: E402


def fixed_batches(cfg, data, pad_id, steps):
    """The same (task, batch) sequence for both implementations: the config's schedule, seeded."""
    import random

    rng = random.Random(0)
    pools = {n: length_grouped_batches(td.train_feats, cfg.batch_size(n), rng) for n, td in data.items()}
    sizes = {n: len(p) for n, p in pools.items()}
    schedule = TaskSchedule(cfg.training.schedule, sizes, 1, 0, cfg.training.keep_remainder)
    out, used = [], {n: 0 for n in data}
    for step in range(steps):
        task = schedule.task_for(step, 0)
        idx = pools[task][used[task] % sizes[task]]
        used[task] += 1
        out.append((task, collate(data[task].type, [data[task].train_feats[i] for i in idx], pad_id), len(idx)))
    return out


def run(cfg, data, batches, impl, amp) -> float:
    cfg = cfg.model_copy(update={"backbone_impl": impl})
    seed_everything(0)
    model = model_for_training(cfg, data)
    model.train()
    opt = make_optimizer(model, cfg)
    for task, batch, _ in batches[:3]:  # warm-up: allocator, kernels
        with amp():
            model.loss(task, batch).backward()
        opt.zero_grad(set_to_none=True)
    start = time.perf_counter()
    for task, batch, _ in batches:
        with amp():
            loss = model.loss(task, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return sum(n for _, _, n in batches) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/minbert.yaml")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-examples", type=int, default=2000, help="per task, to keep tokenisation short")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    overrides = [f"tasks.{t}.max_train_examples={args.max_examples}" for t in load_config(args.config).tasks]
    cfg = load_config(args.config, overrides)
    tok = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tok)
    device = torch.device("cpu")
    precision = resolve_precision(cfg.training.precision, device)
    amp = partial(autocast, precision, device)
    batches = fixed_batches(cfg, data, tok.pad_token_id, args.steps)
    results = {"hf": [], "minbert": []}
    for r in range(args.repeats):
        for impl in (("hf", "minbert") if r % 2 == 0 else ("minbert", "hf")):
            results[impl].append(run(cfg, data, batches, impl, amp))
            print(f"repeat {r + 1} {impl}: {results[impl][-1]:.1f} examples/s", flush=True)
    hf, mb = statistics.median(results["hf"]), statistics.median(results["minbert"])
    body = f"""## minBERT vs transformers' BertModel: training throughput (issue 3)

- command: `python benchmarks/minbert_throughput.py --config {args.config} --steps {args.steps} --repeats {args.repeats}`
- machine: {machine()}
- date: {today()}
- setup: the config's tasks, heads and schedule, {args.steps} optimiser steps on the same batches (seeded),
  precision {precision}, implementations alternating, median of {args.repeats} repeats

| implementation | training examples/s (median) | all repeats |
|---|---|---|
| `hf` (transformers BertModel) | {hf:.1f} | {', '.join(f'{x:.1f}' for x in results['hf'])} |
| `minbert` (ours) | {mb:.1f} | {', '.join(f'{x:.1f}' for x in results['minbert'])} |

Ratio minbert / hf: **{mb / hf:.3f}** (bar: >= 0.95).
"""
    write_section("minbert_throughput", body)
    print(body)


if __name__ == "__main__":
    main()
