"""minBERT's three tasks: `mtbert compare` (multi-task vs single-task) on this machine, beside the
report's own numbers and the issue's bars.

    python benchmarks/quality_minbert.py [--config configs/minbert.yaml] [--modes finetune] [--set KEY=VALUE ...]

Writes the 'minbert_quality' section of benchmarks/RESULTS.md (and compare.md / compare.png in the run dir).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import yaml  # noqa: E402
from common import machine, today, write_section  # noqa: E402

from mtbert.config import finish, load_raw  # noqa: E402
from mtbert.training.compare import _variant, compare, table  # noqa: E402

# the report (BERT-base on a GPU, 10 epochs): multi-task and single-task, pretrain / finetune
REPORT = {("sst", "single-task"): "0.382 / 0.530", ("para", "single-task"): "0.761 / 0.885",
          ("sts", "single-task"): "0.615 / 0.852", ("sst", "multi-task"): "0.256 / 0.542",
          ("para", "multi-task"): "0.760 / 0.827", ("sts", "multi-task"): "0.001 / 0.864"}
BARS = {"sst": 0.47, "para": 0.80, "sts": 0.82}  # multi-task finetune, on dev
REFERENCE = {"sst": "0.479 (2 ep)", "para": "0.807 (1 ep)", "sts": "0.828 (2 ep, STS-B)"}


def best_scores(run: Path) -> dict[str, float]:
    """The primary dev metric of each task at the run's best evaluation."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    best = max(records, key=lambda r: r["target"])
    return {task: next(iter(metrics.values())) for task, metrics in best["dev"].items()}


def compare_parallel(raw: dict, config: str, mode: str, run_dir: Path, multi: Path) -> dict:
    """The same runs `mtbert compare` makes, single-task ones as `mtbert train` processes two at a time."""
    from concurrent.futures import ThreadPoolExecutor

    scores = {t: {"single-task": {}, "multi-task": {mode: v}} for t, v in best_scores(multi).items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def single(task: str) -> None:
        out = run_dir / mode / f"single-{task}"
        out.parent.mkdir(parents=True, exist_ok=True)
        path = run_dir / f"single-{task}.yaml"
        variant = _variant(raw, mode, task)
        variant.setdefault("training", {})["threads"] = 1
        path.write_text(yaml.safe_dump(variant, sort_keys=False))
        subprocess.run([sys.executable, "-m", "mtbert", "-q", "train", str(path), "--run-dir", str(out)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        scores[task]["single-task"][mode] = best_scores(out)[task]

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(single, raw["tasks"]))
    return scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/minbert.yaml")
    ap.add_argument("--modes", default="finetune")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--run-dir")
    ap.add_argument("--multi-from", help="take the multi-task scores from this finished run (its metrics.jsonl) "
                    "and train the single-task runs two at a time, one thread each")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raw = load_raw(args.config, args.set)
    modes = args.modes.split(",")
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="mtbert-minbert-"))
    start = time.time()
    if args.multi_from:
        scores = compare_parallel(raw, args.config, modes[0], run_dir, Path(args.multi_from))
    else:
        scores = compare(raw, args.config, modes, run_dir)
    minutes = (time.time() - start) / 60
    cfg = finish(raw, args.config)
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
    reuse = (f"\n- the multi-task run is `{args.multi_from}` (an earlier run of this command's multi-task half, "
             "scored at its best evaluation); the single-task runs were trained here, two at a time, one thread "
             "each") if args.multi_from else ""
    cmd = f"python benchmarks/quality_minbert.py --config {args.config} --modes {args.modes}" + \
        "".join(f" --set {s}" for s in args.set) + (f" --multi-from {args.multi_from}" if args.multi_from else "")
    body = f"""## minBERT three tasks: single-task vs multi-task on dev (issue 3)

- command: `{cmd}`
- machine: {machine()}
- date: {today()}
- backbone: {cfg.backbone} ({cfg.backbone_impl}); schedule {cfg.training.schedule} (keep_remainder
  {cfg.training.keep_remainder}); {cfg.training.epochs:g} epochs per run; {len(modes) * (1 + len(cfg.tasks))} runs
  in {minutes:.0f} min wall (training, evaluation and data loading)
- bars met (multi-task finetune): {sum(met)} of {len(met)}{reuse}

{chr(10).join(rows)}

The report's table layout, as written by `mtbert compare` (compare.md):

{table(scores, cfg, modes)}
"""
    write_section("minbert_quality", body)
    print(body)


if __name__ == "__main__":
    main()
