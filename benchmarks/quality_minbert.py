"""minBERT's three tasks: `mtbert compare` (multi-task vs single-task) on this machine, beside the
report's own numbers and the issue's bars.

    python benchmarks/quality_minbert.py [--config configs/minbert.yaml] [--modes finetune] [--set KEY=VALUE ...]

Writes the 'minbert_quality' section of benchmarks/RESULTS.md (and compare.md / compare.png in the run dir).
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

from mtbert.config import finish, load_raw  # noqa: E402
from mtbert.training.compare import compare, table  # noqa: E402

# the report (BERT-base on a GPU, 10 epochs): multi-task and single-task, pretrain / finetune
REPORT = {("sst", "single-task"): "0.382 / 0.530", ("para", "single-task"): "0.761 / 0.885",
          ("sts", "single-task"): "0.615 / 0.852", ("sst", "multi-task"): "0.256 / 0.542",
          ("para", "multi-task"): "0.760 / 0.827", ("sts", "multi-task"): "0.001 / 0.864"}
BARS = {"sst": 0.47, "para": 0.80, "sts": 0.82}  # multi-task finetune, on dev
REFERENCE = {"sst": "0.479 (2 ep)", "para": "0.807 (1 ep)", "sts": "0.828 (2 ep, STS-B)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/minbert.yaml")
    ap.add_argument("--modes", default="finetune")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--run-dir")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once, one thread each")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raw = load_raw(args.config, args.set)
    modes = args.modes.split(",")
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="mtbert-minbert-"))
    start = time.time()
    cfg = finish(raw, args.config)
    report = compare(raw, args.config, run_dir, [cfg.seed], ["plain"], modes, args.jobs)
    minutes = (time.time() - start) / 60
    # {task: {scheme: {mode: score}}}, from compare's tables
    scores = {task: {scheme: {mode: t["rows"][task][col][0] for mode, t in report["tables"].items()}
                     for scheme, col in (("single-task", "single-task"), ("multi-task", "plain"))}
              for task in cfg.tasks}
    rows = ["| task | scheme | mtbert (" + " / ".join(modes) + ") | report (pretrain / finetune) | bar (multi-task finetune) | plain single-task MiniLM |",
            "|---|---|---|---|---|---|"]
    met = []
    for task, by_scheme in scores.items():
        for scheme, by_mode in by_scheme.items():
            ours = " / ".join(f"{by_mode[m]:.3f}" if m in by_mode else "n/a" for m in modes)
            bar = ""
            if scheme == "multi-task" and "finetune" in by_mode:
                ok = by_mode["finetune"] >= BARS[task]
                met.append(ok)
                bar = f">= {BARS[task]} {'met' if ok else 'NOT met'}"
            rows.append(f"| {task} | {scheme} | **{ours}** | {REPORT.get((task, scheme), '')} | {bar} | "
                        f"{REFERENCE[task] if scheme == 'single-task' else ''} |")
    cmd = f"python benchmarks/quality_minbert.py --config {args.config} --modes {args.modes} --jobs {args.jobs}" + \
        "".join(f" --set {s}" for s in args.set)
    body = f"""## minBERT three tasks: single-task vs multi-task on dev (issue 3)

- command: `{cmd}`
- machine: {machine()}
- date: {today()}
- backbone: {cfg.backbone} ({cfg.backbone_impl}); schedule {cfg.training.schedule} (keep_remainder
  {cfg.training.keep_remainder}); {cfg.training.epochs:g} epochs per run; {len(modes) * (1 + len(cfg.tasks))} runs
  in {minutes:.0f} min wall (training, evaluation and data loading; {args.jobs} at a time, one thread each)
- bars met (multi-task finetune): {sum(met)} of {len(met)}

{chr(10).join(rows)}

As written by `mtbert compare` (compare.md):

{table(report)}
"""
    write_section("minbert_quality", body)
    print(body)


if __name__ == "__main__":
    main()
