"""How large is each task's gradient against training.clip_norm? A multi-task step trains one task, and clipping
scales a step whose gradient norm is above clip_norm down to clip_norm: where a task's norm is above it, its
steps are the same whatever its loss weight (the weight scales the gradient, clipping scales it back), so loss
weights and learned uncertainty weights change nothing in those steps.

    python benchmarks/grad_norms.py --run-dir RUN [RUN ...]

For each run: its config's training data, a few batches per task drawn as training draws them, the
gradient norm over the parameters clipping reads (the encoder and the task's head), with the pretrained
encoder and fresh heads (the start) and with the run's saved model (the end). Writes the section
'grad_norms' of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.config import load_config  # noqa: E402
from mtbert.data.features import collate  # noqa: E402
from mtbert.modeling.precision import to_device  # noqa: E402
from mtbert.rundir import load_model  # noqa: E402
from mtbert.training.trainer import setup  # noqa: E402


def norms(run, batches: int) -> dict[str, list[float]]:
    """Per task: the clipped parameters' gradient norm of `batches` training batches, one at a time."""
    out = {}
    for task, td in run.data.items():
        out[task] = []
        for _ in range(batches):
            drawn = run.plan.streams[task].next()
            batch = to_device(collate(td.type, [td.train_feats[i] for i in drawn], run.pad_id), run.device)
            run.model.zero_grad(set_to_none=True)
            with run.amp():
                pred = run.model(task, batch)
            total, count = run.model.heads[task].loss_terms(pred, batch["labels"], batch.get("soft_labels"), 1.0)
            (total / count).backward()
            grads = [p.grad for p in run.model.parameters() if p.grad is not None]
            out[task].append(torch.nn.utils.get_total_norm(grads).item())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", nargs="+", required=True, help="finished runs; their config.yaml is read")
    ap.add_argument("--batches", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = [f"- command: `python benchmarks/grad_norms.py --run-dir {' '.join(args.run_dir)} --batches {args.batches}`",
             f"- machine: {machine()}", f"- date: {today()}",
             "- gradient norm over the parameters `clip_grad_norm_` reads (encoder and the task's head), "
             f"{args.batches} training batches per task, median (min-max)", ""]
    for run_dir in map(Path, args.run_dir):
        cfg = load_config(run_dir / "config.yaml")
        with tempfile.TemporaryDirectory() as tmp:
            run = setup(cfg, tmp)
            start = norms(run, args.batches)
            run.model.load_state_dict(load_model(run_dir)[1].state_dict())
            end = norms(run, args.batches)
        clip = cfg.training.clip_norm
        lines += [f"### {run_dir}", "",
                  f"| task | start: pretrained encoder, fresh head | end: the run's model | clip_norm {clip}: "
                  "batches above it (start / end) |", "|---|---|---|---|"]
        for task in start:
            cells = [f"{np.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for v in (start[task], end[task])]
            above = "/".join(f"{sum(x > clip for x in v) if clip else 0}" for v in (start[task], end[task]))
            lines.append(f"| {task} | {cells[0]} | {cells[1]} | {above} of {args.batches} |")
        lines.append("")
    body = "## Gradient norms per task against clip_norm (issue 15)\n\n" + "\n".join(lines)
    print(body)
    write_section("grad_norms", body)


if __name__ == "__main__":
    main()
