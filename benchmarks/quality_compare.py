"""Multi-task vs single-task on the five-task DeepPavlov example (or any config): `mtbert compare` with
several seeds and methods, its table written to benchmarks/RESULTS.md with the command, machine and date.

    python benchmarks/quality_compare.py --seeds 42 --methods plain,temperature,uncertainty,distill \
        --run-dir runs/five-compare --jobs 2
    python benchmarks/quality_compare.py --seeds 42,7 --methods plain,BEST --run-dir runs/five-compare --jobs 2

The second call reuses the first's seed-42 runs (compare skips finished runs), so the issue's plan (every
method with one seed, then the best one, plain multi-task and single-task with a second) is two commands.
Writes the section named by --section (default 'five_task_compare').
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.config import finish, load_raw  # noqa: E402
from mtbert.evaluation.evaluate import premise_checks  # noqa: E402
from mtbert.inference.predictor import Predictor  # noqa: E402
from mtbert.training.compare import compare, parse_methods, parse_seeds, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/deeppavlov_example.yaml")
    ap.add_argument("--seeds", default="42,7")
    ap.add_argument("--methods", default="plain")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--section", default="five_task_compare")
    ap.add_argument("--rescore", action="store_true", help="score runs finished earlier again")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    raw = load_raw(args.config, args.set)
    cfg = finish(raw, args.config)
    start = time.time()
    report = compare(raw, args.config, Path(args.run_dir), parse_seeds(args.seeds), parse_methods(args.methods), [None],
            args.jobs, args.rescore)
    wall = (time.time() - start) / 60
    choice_tasks = [name for name, task in cfg.tasks.items() if task.type == "multiple_choice"]
    premise = premise_table(report, Path(args.run_dir), choice_tasks)
    cmd = (f"python benchmarks/quality_compare.py --config {args.config} --seeds {args.seeds} --methods {args.methods}"
           f" --jobs {args.jobs} --run-dir {args.run_dir}" + (" --rescore" if args.rescore else "") + "".join(f" --set {s}" for s in args.set))
    body = f"""## Multi-task vs single-task: {args.config} (issue 15)

- command: `{cmd}`
- machine: {machine()}; {args.jobs} trainings at a time, one thread each
- date: {today()}; this call took {wall:.0f} min of wall time (runs finished by an earlier call are reused)

{table(report)}
{premise}
"""
    write_section(args.section, body)
    print(body)


def premise_table(report: dict, run_dir: Path, choice_tasks: list[str]) -> str:
    """COPA's premise check (issue 15) for every run with a multiple-choice task: dev accuracy, accuracy with
    the premises shuffled (mean of five derangements) and the gap; a model that reads the premise has a gap."""
    rows = []
    for run in report["runs"]:
        tasks = [t for t in choice_tasks if t in run["primary"]]
        checks = premise_checks(Predictor(run_dir / run["name"]), "dev", tasks, {}) if tasks else {}
        for task, (real, shuffled) in checks.items():
            if shuffled is None:  # nothing to swap: see premise_check
                rows.append(f"| {run['name']} | {task} | {real:.3f} | fewer than two different premises | - |")
            else:
                rows.append(f"| {run['name']} | {task} | {real:.3f} | {shuffled:.3f} | {real - shuffled:+.3f} |")
    if not rows:
        return ""
    return "\n".join(["Premise check (multiple choice): dev accuracy, with every premise swapped for another "
                      "item's (mean of five derangements), and the gap", "",
                      "| run | task | accuracy | premises shuffled | gap |", "|---|---|---|---|---|", *rows, ""])


if __name__ == "__main__":
    main()
