"""Dev quality of the five-task DeepPavlov example (CoLA, RTE, STS-B, COPA, CoNLL-2003) on this machine,
beside a majority/mean baseline from the same run and the issue's bars.

    python benchmarks/quality_five_task.py [--config configs/deeppavlov_example.yaml] [--set KEY=VALUE ...]

Writes the 'five_task' section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.config import load_config  # noqa: E402
from mtbert.training.trainer import train  # noqa: E402

# (task, metric): bar for the multi-task run, and plain single-task fine-tuning of the same MiniLM
# measured here (bf16, dynamic padding, no tuning), as given in the issue
BARS = {("stsb", "pearson"): (0.83, "0.828 (2 ep)"), ("conll", "ner_f1"): (0.82, "0.798 (1 ep)"),
        ("rte", "accuracy"): (0.56, "0.567 (3 ep)"), ("cola", "mcc"): (0.22, "0.242 (2 ep)"),
        ("copa", "accuracy"): (0.55, "0.57 (5 ep)")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/deeppavlov_example.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--run-dir")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.config, args.set)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="mtbert-five-"))
    start = time.time()
    summary = train(cfg, run_dir)
    wall = time.time() - start
    best = summary["best"]
    rows = ["| task | metric | mtbert multi-task (dev) | majority/mean baseline | bar | single-task reference |",
            "|---|---|---|---|---|---|"]
    met = 0
    for (task, metric), (bar, ref) in BARS.items():
        score = best["dev"][task][metric]
        base = summary["baseline"][task].get(metric, float("nan"))
        ok = score >= bar
        met += ok
        rows.append(f"| {task} | {metric} | **{score:.3f}** | {base:.3f} | >= {bar} {'met' if ok else 'NOT met'} | {ref} |")
    cmd = "python benchmarks/quality_five_task.py " + " ".join(f"--config {args.config}".split() +
                                                                [f"--set {s}" for s in args.set])
    body = f"""## Five-task DeepPavlov example: dev quality (issue 2)

- command: `{cmd}`
- machine: {machine()}
- date: {today()}
- training: {summary['steps']} steps, {summary['train_seconds'] / 60:.1f} min of training ({wall / 60:.1f} min wall
  with data loading and evaluations), precision {summary['precision']}, schedule {cfg.training.schedule},
  best evaluation at step {best['step']} (epoch {best['epoch']})
- bars met: {met} of {len(BARS)}

{chr(10).join(rows)}
"""
    write_section("five_task", body)
    print(body)


if __name__ == "__main__":
    main()
