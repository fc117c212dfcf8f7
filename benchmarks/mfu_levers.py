"""Issue 18, part 2: training MFU on the five-task mix, and what each lever can give, side by side in one run.

    python benchmarks/mfu_levers.py [--steps 40] [--repeats 3] [--examples 3000]

Contenders, alternating, medians of --repeats, on one seeded sequence of training steps (throughput.py's
mfu part: proportional schedule, length-grouped batches, bf16 autocast, AdamW), all at the threads torch
starts with (2 here):
- today: mtbert's training step as it is.
- ready mask: the 4D boolean SDPA mask mtbert builds on a GPU, on the CPU too (transformers' mask builder
  then skips its padding checks).
- no dropout: every dropout off. Not a lever (it changes training); it bounds what the element-wise ops
  the profile blames on dropout cost.
And two ceilings, measured in the same run:
- packing: the step sequence's padded tokens over its real ones; packing examples into rows without
  padding can speed a step up by at most that ratio.
- matmuls alone: the encoder's linear layers, forward and backward, at each step's padded shapes in bf16,
  timed with nothing else running: model FLOPs (real tokens) over that time is the MFU a step would reach
  if everything but these matmuls took no time at all.
MFU as throughput.py's mfu part: model FLOPs (6 x non-embedding parameters x real tokens + attention) over
wall time, against the bf16 matmul peak (2048^3) measured here. Writes the section 'mfu_levers'.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402
from throughput import five_task_data, matmul_peak, model_flops, mtbert_train, sequences, task_sequence  # noqa: E402

from mtbert.modeling.model import sdpa_ready_mask  # noqa: E402
from mtbert.training.trainer import model_for_training  # noqa: E402


def ready_mask(model) -> None:
    config, encode = model.encoder.config, model.encode
    model.encode = lambda ids, mask, types=None: encode(ids, sdpa_ready_mask(config, mask), types)


def no_dropout(model) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_prob"):  # SDPA attention reads its probability, not a Dropout module
            m.dropout_prob = 0.0


CONTENDERS = {"today": None, "ready mask": ready_mask, "no dropout (bound)": no_dropout}


def step_shapes(data, seq) -> list[tuple[int, int, int]]:
    """(sequences, padded length, real tokens) of each step's encoder batch."""
    shapes = []
    for task, idx in seq:
        seqs = [s for i in idx for s in sequences(data[task].train_feats[i])]
        shapes.append((len(seqs), max(len(s) for s in seqs), sum(len(s) for s in seqs)))
    return shapes


def matmuls_alone(config, shapes) -> float:
    """Seconds the encoder's linear layers take, forward and backward in bf16, at these shapes."""
    h, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    weights = [torch.randn(o, i, dtype=torch.bfloat16, requires_grad=True) for o, i in
               [(h, h)] * 4 + [(inner, h), (h, inner)]]  # query, key, value, output; FFN up, down
    start = time.perf_counter()
    for rows, length, _ in shapes:
        x = torch.randn(rows * length, h, dtype=torch.bfloat16, requires_grad=True)
        for _ in range(layers):
            outs = [torch.nn.functional.linear(x, w) for w in weights[:4]]
            up = torch.nn.functional.linear(x, weights[4])
            outs.append(torch.nn.functional.linear(up, weights[5]))
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=3000)
    args = ap.parse_args()
    cfg, tok, data = five_task_data(args.examples)
    seq = task_sequence(cfg, data, args.steps)
    model = model_for_training(cfg, data)
    flops, non_embedding = model_flops(model, data, seq)
    shapes = step_shapes(data, seq)
    real = sum(tokens for _, _, tokens in shapes)
    padded = sum(rows * length for rows, length, _ in shapes)
    linear_flops = 6 * non_embedding * real
    mtbert_train(cfg, tok, data, seq[:5])  # warm-up: first-call allocations and oneDNN kernels
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    alone: list[float] = []
    for _ in range(args.repeats):
        for name, prepare in CONTENDERS.items():
            start = time.perf_counter()
            mtbert_train(cfg, tok, data, seq, prepare=prepare)
            rates[name].append(flops / (time.perf_counter() - start))
        alone.append(linear_flops / matmuls_alone(model.encoder.config, shapes))
    peak = matmul_peak()
    med = {name: statistics.median(r) for name, r in rates.items()}
    rows = [f"| {name} | {med[name] / 1e9:.0f} | **MFU {100 * med[name] / peak:.0f}%** | {med[name] / med['today']:.2f}x | "
            f"{', '.join(f'{100 * r / peak:.0f}%' for r in rates[name])} |" for name in CONTENDERS]
    ceiling_alone = statistics.median(alone)
    body = f"""## Training MFU: levers and ceilings, side by side (issue 18, part 2)

- command: `python benchmarks/mfu_levers.py --steps {args.steps} --repeats {args.repeats} --examples {args.examples}`
- machine: {machine()}
- date: {today()}
- what: {args.steps} training steps of configs/deeppavlov_example.yaml's five tasks ({args.examples} examples read
  per task; proportional schedule, length-grouped batches, bf16 autocast, AdamW), {flops / 1e12:.2f} TFLOP of model
  FLOPs ({real} real tokens, padding not counted); bf16 matmul peak here (2048^3, best of 5) {peak / 1e9:.0f} GFLOP/s;
  contenders alternating, median of {args.repeats}

| contender | GFLOP/s | MFU | against today | MFU per run |
|---|---:|---:|---:|---|
{chr(10).join(rows)}

Ceilings, measured in the same run:
- packing: {padded} tokens computed for {real} real ones ({100 * (1 - real / padded):.1f}% padding): packing can
  speed a step up by at most **{padded / real:.2f}x**, which would take today's MFU to at most
  {100 * med['today'] / peak * padded / real:.0f}%.
- matmuls alone: the encoder's linear layers at these steps' padded shapes, forward and backward in bf16 with
  nothing else running, reach {100 * ceiling_alone / peak:.0f}% of the peak on the real tokens' FLOPs (median
  of {args.repeats}; runs {', '.join(f'{100 * a / peak:.0f}%' for a in alone)}): the MFU of a step in which
  everything else took no time.
"""
    write_section("mfu_levers", body)
    print(body)


if __name__ == "__main__":
    main()
