"""`mtbert compare`: is one shared model as good as one model per task?

For each seed (and minBERT mode, when asked for), trains one single-task model per task and one multi-task
model per method, every run from the same config (same backbone, data, epochs and lr), and writes:

- compare.md:   DeepPavlov's multi- vs single-task layout, one row per task: metric, single-task,
                multi-task per method, the best method's difference, each as mean ± half the range over
                seeds, best in bold; then what each scheme costs (training minutes, parameters stored,
                inference sentences/s through every single-text head);
- compare.png:  the same scores as bars with the seed spread as error bars;
- compare.json: every run's dev scores.

Methods are config changes on top of the user's config, named as in the field:
`plain` (the config as it is), `temperature` (schedule: temperature), `uncertainty`
(training.loss_balancing: uncertainty), `distill` (every task learns from its single-task run of the
same seed as teacher, training/distill.py), `long` (the multi-task model trains LONGER times the config's
epochs or max_steps: under temperature sampling a big task gets fewer updates in the mix than alone, and
1.5x gives the five-task example's biggest task, CoNLL at T=2, at least its single-task updates; the cost
columns show the extra minutes), `ema` (training.ema_decay: 0.998, the weights' moving average over
about the last 500 steps, a sixth of the five-task example's run, is what is scored and kept); `a+b`
combines them.

Every finished run leaves `compare-run.json` (its config's hash and its scores): running the same command
again skips finished runs, resumes interrupted ones from their checkpoint, and trains the rest, so a
comparison of several CPU-hours can stop and continue. Runs are scored after training by loading the
saved model, as `mtbert evaluate` does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from mtbert.config import TrainingConfig, finish, validate
from mtbert.errors import UserError
from mtbert.io import atomic_write, atomic_write_text

log = logging.getLogger("mtbert")

METHODS = {
    "plain": {},
    "temperature": {"training": {"schedule": "temperature"}},
    "uncertainty": {"training": {"loss_balancing": "uncertainty"}},
    "distill": {},  # teachers are filled in per seed: they are that seed's single-task runs
    "long": {},  # the training length is scaled per config, in plan()
    "ema": {"training": {"ema_decay": 0.998}},
    "mlp": {},  # every task's head gets a hidden layer of its own (head: mlp), set per task in plan()
}
LONGER = 1.5
MARKER = "compare-run.json"
# where and how fast a run trains, not what it trains: never part of a run's identity
_NOT_IDENTITY = ("progress", "threads", "device", "dist_timeout", "compile")


def parse_methods(text: str) -> list[str]:
    """The methods, each with its parts in METHODS' order: `long+temperature` is `temperature+long`, so a
    reordered combination reuses the runs it already trained."""
    methods = []
    for method in (m.strip() for m in text.split(",") if m.strip()):
        parts = [part.strip() for part in method.split("+")]
        for part in parts:
            if part not in METHODS:
                raise UserError(f"--methods {text!r}: unknown method '{part}'; use {', '.join(METHODS)} "
                                "or several joined by '+' (e.g. temperature+uncertainty), comma-separated")
        if len(set(parts)) != len(parts):
            raise UserError(f"--methods {text!r}: '{method}' names a method twice; name each part once")
        if "plain" in parts and len(parts) > 1:
            raise UserError(f"--methods {text!r}: 'plain' is the config as it is and joins with nothing; "
                            f"write '{'+'.join(p for p in parts if p != 'plain')}'")
        methods.append("+".join(sorted(parts, key=list(METHODS).index)))
    if not methods:
        raise UserError(f"--methods {text!r}: name at least one method ({', '.join(METHODS)})")
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods {text!r}: a method is named twice (parts in any order are one method); "
                        "name each once")
    return methods


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: give whole numbers, comma-separated, e.g. --seeds 42,7") from None
    if not seeds or len(set(seeds)) != len(seeds) or any(not 0 <= s < 2**32 for s in seeds):
        raise UserError(f"--seeds {text!r}: give distinct whole numbers from 0 to 2**32-1, e.g. --seeds 42,7")
    return seeds


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _lengthen(training: dict) -> None:
    if training.get("max_steps"):
        training["max_steps"] = round(training["max_steps"] * LONGER)
    else:
        training["epochs"] = training.get("epochs", TrainingConfig.model_fields["epochs"].default) * LONGER


@dataclass
class Job:
    name: str  # e.g. "seed-42/single-cola" or "finetune/seed-42/multi-plain"
    raw: dict
    run_dir: Path
    scheme: str  # "single-task" or "multi-task"
    method: str | None
    seed: int
    mode: str | None
    needs: list[str] = field(default_factory=list)  # jobs that must finish first (distillation teachers)

    @property
    def identity(self) -> str:
        raw = copy.deepcopy(self.raw)
        raw.pop("run_dir", None)
        for key in _NOT_IDENTITY:
            raw.get("training", {}).pop(key, None)
        return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan(raw: dict, seeds: list[int], methods: list[str], modes: list[str | None], run_dir: Path) -> list[Job]:
    """Every run of the comparison, single-task ones first (they are the distillation teachers)."""
    tasks = list(raw["tasks"])
    jobs = []
    for mode in modes:
        for seed in seeds:
            prefix = f"{mode}/seed-{seed}" if mode else f"seed-{seed}"
            base = copy.deepcopy(raw)
            base["seed"] = seed
            if mode:  # minBERT's presets apply only where the user asked for a mode
                base.setdefault("training", {})["mode"] = mode
            singles = {}
            for task in tasks:
                single = copy.deepcopy(base)
                single["tasks"] = {task: single["tasks"][task]}
                target = single.get("training", {}).get("target_metric", "mean")
                if target != "mean" and ":" not in target and target.split(".")[0] != task:
                    single["training"]["target_metric"] = "mean"
                name = f"{prefix}/single-{task}"
                singles[task] = run_dir / name
                jobs.append(Job(name, single, run_dir / name, "single-task", None, seed, mode))
            for method in methods:
                multi = copy.deepcopy(base)
                needs = []
                for part in method.split("+"):
                    _merge(multi, METHODS[part])
                    if part == "distill":
                        for task in tasks:
                            multi["tasks"][task]["teacher"] = str(singles[task])
                        needs = [f"{prefix}/single-{t}" for t in tasks]
                    if part == "long":
                        _lengthen(multi.setdefault("training", {}))
                    if part == "mlp":
                        for task in tasks:
                            multi["tasks"][task]["head"] = "mlp"
                name = f"{prefix}/multi-{method}"
                jobs.append(Job(name, multi, run_dir / name, "multi-task", method, seed, mode, needs))
    return jobs


class RunMarker(BaseModel):
    """What a finished run of the comparison leaves in its MARKER file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    identity: str
    name: str
    scheme: str
    method: str | None
    seed: int
    mode: str | None
    scores: dict[str, dict[str, float]]
    primary: dict[str, str]
    precision: str
    train_minutes: float
    parameters: int
    # the CPU (or GPU), torch and transformers that trained the run: kernels and library code differ between
    # them, so the same config and seed give another run elsewhere; None in markers written before it was
    # recorded
    machine: str | None = None


def _read_marker(job: Job) -> dict | None:
    path = job.run_dir / MARKER
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        done = None
    if isinstance(done, dict) and "identity" in done and done["identity"] != job.identity:
        raise UserError(f"{job.run_dir}: this run was trained from another config than the comparison now "
                        "asks for; pass --run-dir DIR for a new comparison, or --overwrite to start again")
    try:
        marker = RunMarker.model_validate(done)
    except ValidationError:
        marker = None
    if marker is None or set(marker.scores) != set(job.raw["tasks"]) or \
            any(marker.primary.get(task) not in metrics for task, metrics in marker.scores.items()):
        # half-written or damaged: the run is trained (or resumed from its checkpoint) and scored again
        log.warning("compare: %s is damaged; %s is resumed and scored again", path, job.name)
        return None
    return done


def run_job(job: Job, config_path: str, threads: int | None, quiet: bool) -> dict:
    """Train (or resume) one run, then score its saved model on dev. Runs in a worker process with --jobs."""
    import torch

    from mtbert.inference.predictor import evaluate_run
    from mtbert.training.checkpoint import Checkpointer
    from mtbert.training.trainer import train

    if quiet:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if threads:
        torch.set_num_threads(threads)
    raw = copy.deepcopy(job.raw)
    if threads or quiet:
        raw.setdefault("training", {})
        if threads:
            raw["training"]["threads"] = threads
        if quiet:
            raw["training"]["progress"] = False
    cfg = finish(raw, config_path)
    resume = Checkpointer(job.run_dir, cfg).wants_resume()  # train's decision, the same
    log.info("compare: %s%s", job.name, " (resumed)" if resume else "")
    start = time.time()
    summary = train(cfg, job.run_dir, resume=resume)
    scores, primary, precision = evaluate_run(job.run_dir, "dev")
    # built through RunMarker, the shape _read_marker checks: a field added here without it would fail
    # every marker's check and retrain every run
    done = RunMarker(identity=job.identity, name=job.name, scheme=job.scheme, method=job.method, seed=job.seed,
                     mode=job.mode, scores=scores, primary=primary, precision=precision,
                     train_minutes=summary.get("train_seconds", time.time() - start) / 60,
                     parameters=_parameters(job.run_dir), machine=trained_on(cfg)).model_dump()
    atomic_write_text(job.run_dir / MARKER, json.dumps(done, indent=2))
    return done


def trained_on(cfg) -> str:
    """The processor and libraries a run trains with, e.g. 'Intel(R) Xeon(R) Processor, torch 2.13.0+cpu,
    transformers 5.25.0'."""
    import platform

    import torch
    import transformers

    from mtbert.modeling.precision import cpu_info, resolve_device

    device = resolve_device(cfg.training.device, 0)
    if device.type == "cuda":
        chip = torch.cuda.get_device_name(device)
    else:
        chip = cpu_info()[0] or platform.processor() or platform.machine()
    return f"{chip}, torch {torch.__version__}, transformers {transformers.__version__}"


def _parameters(run_dir: Path) -> int:
    """Parameters a user stores and serves for this run: its encoder and heads."""
    from safetensors import safe_open

    from mtbert.rundir import model_dir

    path = model_dir(run_dir)
    total = 0
    for file in [*sorted((path / "encoder").glob("*.safetensors")), path / "heads.safetensors"]:
        with safe_open(file, "pt") as f:
            for key in f.keys():
                total += int(np.prod(f.get_slice(key).get_shape()))
    return total


def rescore(job: Job, done: dict) -> dict:
    """A finished run scored again by today's evaluate path (its saved model, its precision)."""
    from mtbert.inference.predictor import evaluate_run

    done = {**done}
    done["scores"], done["primary"], done["precision"] = evaluate_run(job.run_dir, "dev")
    atomic_write_text(job.run_dir / MARKER, json.dumps(done, indent=2))
    return done


def compare(raw: dict, config_path: str, run_dir: Path, seeds: list[int], methods: list[str],
            modes: list[str | None], jobs: int = 1, rescore_finished: bool = False) -> dict:
    """Train (or reuse) every run of the comparison and write compare.md, compare.png and compare.json.
    With `rescore_finished`, runs finished earlier are scored again (after a change to evaluation)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = finish(copy.deepcopy(raw), config_path)
    todo = plan(raw, seeds, methods, modes, run_dir)
    results = {}
    for job in todo:
        if (done := _read_marker(job)) is not None:
            results[job.name] = rescore(job, done) if rescore_finished else done
    pending = [j for j in todo if j.name not in results]
    for job in pending:  # a method the config cannot take (mlp on a cosine head) stops here, before any run
        try:
            validate(copy.deepcopy(job.raw), f"{config_path} ({job.name})")
        except UserError as err:  # the config alone passed: the method set what is refused
            raise UserError(f"{err}; the key was set by --methods {job.method}: leave that method out, "
                            "or change the config") from None
    if results:
        log.info("compare: %d of %d runs already finished in %s", len(results), len(todo), run_dir)
    if jobs <= 1:
        for job in pending:
            results[job.name] = run_job(job, config_path, None, False)
    else:
        _run_parallel(pending, results, config_path, jobs, train_sizes(cfg) if pending else None)
    report = summarise(todo, results, cfg, seeds, methods, modes)
    report["costs"] = costs(todo, results, run_dir)
    atomic_write_text(run_dir / "compare.json", json.dumps(report, indent=2))
    atomic_write_text(run_dir / "compare.md", table(report))
    chart(report, run_dir / "compare.png")
    return report


def train_sizes(cfg) -> dict[str, int]:
    """Each task's training examples, read as training reads them (a data mistake stops the comparison
    here, before any run starts)."""
    from mtbert.data.readers import read_split

    return {task: len(read_split(cfg, task, "train")) for task in cfg.tasks}


def _work(job: Job, sizes: dict[str, int]) -> float:
    """A run's length relative to the comparison's other runs, which share its data, batch size and lr:
    with max_steps, its steps; with epochs, its tasks' training examples (`sizes`, 1 each where unknown)
    times its epochs."""
    training = job.raw.get("training", {})
    if training.get("max_steps"):
        return training["max_steps"]
    examples = sum(sizes.get(task, 1) for task in job.raw["tasks"])
    return examples * training.get("epochs", TrainingConfig.model_fields["epochs"].default)


def critical_path_order(jobs: list[Job], sizes: dict[str, int] | None = None) -> list[Job]:
    """Longest chain of work first: a run's own length plus the longest run waiting for it as teacher.
    With two workers, starting the multi-task runs before the short single-task ones, and the biggest
    task's single-task run before the small ones', ends a comparison when the longest run does, not a
    long run's length after the last short one."""
    sizes = sizes or {}
    waiting_on = {}
    for job in jobs:
        for name in job.needs:
            waiting_on[name] = max(waiting_on.get(name, 0.0), _work(job, sizes))
    return sorted(jobs, key=lambda j: -(_work(j, sizes) + waiting_on.get(j.name, 0.0)))  # stable: ties keep plan order


def _run_parallel(pending: list[Job], results: dict, config_path: str, jobs: int,
                  sizes: dict[str, int] | None = None) -> None:
    """Up to `jobs` trainings at once, one thread each, each in its own process (spawned, so every run
    starts from a clean interpreter); a run starts once the runs it needs have finished, the longest
    chain first."""
    waiting = critical_path_order(pending, sizes)
    running = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        while waiting or running:
            for job in [j for j in waiting if all(n in results for n in j.needs)][: jobs - len(running)]:
                waiting.remove(job)
                log.info("compare: started %s", job.name)
                running[pool.submit(run_job, job, config_path, 1, True)] = job
            if not running:
                raise UserError("compare: runs wait for runs that cannot finish: " +
                                ", ".join(j.name for j in waiting))
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                results[job.name] = future.result()  # a failed run raises here, after its error was logged
                log.info("compare: finished %s", job.name)


def _spread(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), (float(max(values) - min(values)) / 2 if len(values) > 1 else 0.0)


def summarise(todo: list[Job], results: dict, cfg, seeds, methods, modes) -> dict:
    """{mode: {task: {"metric", "single-task": [per seed], method: [per seed]}}} and the outcome."""
    tables = {}
    for mode in modes:
        rows = {}
        for job in todo:
            if job.mode != mode:
                continue
            done = results[job.name]
            column = "single-task" if job.scheme == "single-task" else job.method
            for task, metrics in done["scores"].items():
                metric = done["primary"][task]
                row = rows.setdefault(task, {"metric": metric})
                row.setdefault(column, []).append(metrics[metric])
        outcome = {}
        for method in methods:
            wins = [t for t, row in rows.items() if np.mean(row[method]) >= np.mean(row["single-task"])]
            outcome[method] = {"at_or_above": len(wins), "tasks": len(rows), "which": wins,
                               "mean": float(np.mean([np.mean(row[method]) for row in rows.values()]))}
        best = max(methods, key=lambda m: (outcome[m]["at_or_above"], outcome[m]["mean"]))
        tables[mode or "-"] = {"rows": rows, "outcome": outcome, "best": best}
    t = cfg.training
    return {"seeds": seeds, "methods": methods, "modes": [m or "-" for m in modes],
            "settings": {"lr": t.lr, "epochs": t.epochs, "max_steps": t.max_steps, "batch_size": t.batch_size,
                         "schedule": t.schedule, "backbone": cfg.backbone},
            "tables": tables, "runs": [results[j.name] for j in todo]}


def costs(todo: list[Job], results: dict, run_dir: Path) -> dict:
    """What each scheme costs: training minutes and stored parameters (mean over seeds), and all-tasks
    inference speed (sentences/s over one batch of dev sentences, measured on the first seed's runs)."""
    out = {}
    first_seed = todo[0].seed
    first_mode = todo[0].mode
    schemes: dict[str, list[Job]] = {}
    for job in todo:
        key = "single-task" if job.scheme == "single-task" else job.method
        schemes.setdefault(key, []).append(job)
    for key, jobs in schemes.items():
        per_seed: dict[tuple, list[dict]] = {}
        for job in jobs:
            per_seed.setdefault((job.mode, job.seed), []).append(results[job.name])
        minutes = [sum(r["train_minutes"] for r in runs) for runs in per_seed.values()]
        params = [sum(r["parameters"] for r in runs) for runs in per_seed.values()]
        speed_runs = [j.run_dir for j in jobs if j.seed == first_seed and j.mode == first_mode]
        out[key] = {"train_minutes": float(np.mean(minutes)), "parameters": int(np.mean(params)),
                    "models": len(speed_runs), "sentences_per_s": inference_speed(speed_runs)}
    return out


def inference_speed(run_dirs: list[Path], n: int = 256) -> float | None:
    """Sentences/s for every single-text head of the runs on the same `n` dev sentences: one pass of the
    multi-task model, or each single-task model in turn. None when no task takes a single text."""
    from mtbert.data.readers import read_split
    from mtbert.inference.predictor import Predictor

    predictors = [Predictor(d, precision="auto") for d in run_dirs]
    predictors = [p for p in predictors if p.single_text_tasks()]
    if not predictors:
        return None
    first = predictors[0]
    task = first.single_text_tasks()[0]
    examples = read_split(first.cfg, task, "dev")
    sentences = [" ".join(ex.tokens) if ex.tokens else ex.text for ex in examples][:n]
    for p in predictors:  # warm-up: the first call pays for allocations, not for the model
        p.predict_all(sentences[:8])
    start = time.perf_counter()
    for p in predictors:
        p.predict_all(sentences)
    return len(sentences) / (time.perf_counter() - start)


def _cell(values: list[float] | None, bold: bool) -> str:
    if not values:
        return "n/a"
    mean, spread = _spread(values)
    text = f"{mean:.3f} ± {spread:.3f}" if len(values) > 1 else f"{mean:.3f}"
    return f"**{text}**" if bold else text


def table(report: dict) -> str:
    s = report["settings"]
    seeds = ", ".join(map(str, report["seeds"]))
    lines = [f"# Multi-task vs single-task ({s['backbone']})", "",
             (f"Dev scores, mean ± half the range over seeds {seeds}" if len(report["seeds"]) > 1
              else f"Dev scores, seed {seeds}") + f"; lr {s['lr']:g}, "
             + (f"{s['max_steps']} steps" if s["max_steps"] else f"{s['epochs']:g} epochs")
             + f", batch {s['batch_size']}, schedule {s['schedule']} (methods change it where they say so). "
             "Best per task in bold; the difference is the best method's mean minus single-task.", ""]
    methods = report["methods"]
    for mode, t in report["tables"].items():
        if mode != "-":
            lines += [f"## mode: {mode}", ""]
        head = ["task", "metric", "single-task", *[f"multi-task: {m}" for m in methods], f"difference ({t['best']})"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for task, row in t["rows"].items():
            columns = ["single-task", *methods]
            means = {c: float(np.mean(row[c])) for c in columns if row.get(c)}
            top = max(means.values())
            cells = [_cell(row.get(c), means.get(c) == top) for c in columns]
            diff = means[t["best"]] - means["single-task"]
            lines.append(f"| {task} | {row['metric']} | " + " | ".join(cells) + f" | {diff:+.3f} |")
        o = t["outcome"][t["best"]]
        lines += ["", f"multi-task >= single-task on {o['at_or_above']} of {o['tasks']} "
                      + (f"(mean of {len(report['seeds'])} seeds" if len(report["seeds"]) > 1 else f"(seed {seeds}")
                      + f", best method: {t['best']})", ""]
    machines: dict[str, list[str]] = {}
    for run in report["runs"]:
        machines.setdefault(run.get("machine") or "not recorded", []).append(run["name"])
    if len(machines) > 1:  # a comparison resumed elsewhere: its columns may differ by hardware alone
        lines += ["Read with care: these runs were trained on different machines (processor, torch, transformers), "
                  "which give the same config and seed different runs: " + "; ".join(f"{m}: {', '.join(names)}"
                                                                  for m, names in machines.items()), ""]
    costs = report.get("costs") or {}
    if costs:
        lines += ["| scheme | models | training minutes | parameters stored | sentences/s, every single-text head |",
                  "|---|---|---|---|---|"]
        for key, c in costs.items():
            speed = "n/a" if c["sentences_per_s"] is None else f"{c['sentences_per_s']:.0f}"
            name = "single-task" if key == "single-task" else f"multi-task: {key}"
            lines.append(f"| {name} | {c['models']} | {c['train_minutes']:.1f} | {c['parameters'] / 1e6:.1f} M | {speed} |")
        lines.append("")
    return "\n".join(lines)


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = report["tables"]
    fig, axes = plt.subplots(len(tables), 1, figsize=(8, 3.5 * len(tables)), squeeze=False)
    columns = ["single-task", *report["methods"]]
    width = 0.8 / len(columns)
    for ax, (mode, t) in zip(axes[:, 0], tables.items(), strict=True):
        tasks = list(t["rows"])
        for k, column in enumerate(columns):
            stats = [_spread(t["rows"][task].get(column) or [0.0]) for task in tasks]
            xs = np.arange(len(tasks)) + (k - (len(columns) - 1) / 2) * width
            ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=3,
                   label=column if column == "single-task" else f"multi-task: {column}")
        ax.set_xticks(np.arange(len(tasks)), [f"{task}\n{t['rows'][task]['metric']}" for task in tasks])
        ax.set(ylabel="dev score", title="single-task vs multi-task" + ("" if mode == "-" else f" ({mode})"))
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)

