"""`mtbert check`: what `train` would do with a config, without training it.

It validates the config, reads and tokenises every split as training does (so a data mistake fails here,
with the same message and exit code), then reports what a user weighs before an hour of CPU: each task's
sizes and labels, how many inputs max_length cuts, the steps, the schedule's expected task mix per epoch,
and a time estimate from a few steps timed on this machine with the config's model, precision and threads.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from functools import partial
from pathlib import Path

import torch

from mtbert.config import Config
from mtbert.data.features import Feature, collate, encode
from mtbert.evaluation.evaluate import predict_task
from mtbert.modeling.encoder import load_tokenizer
from mtbert.modeling.precision import autocast, resolve_device, resolve_precision, to_device
from mtbert.rundir import config_yaml, holds_run, model_dir
from mtbert.tasks import registry
from mtbert.training.trainer import (
    StepPlan,
    TaskData,
    make_optimizer,
    model_for_training,
    prepare_data,
    step_plan,
)

UNCUT = 1_000_000  # a max_length no input reaches: the lengths before truncation


def truncated_share(td: TaskData, tokenizer, max_length: int) -> float:
    """The share of training inputs longer than max_length in sub-tokens (any choice or text of a group)."""
    if not td.train:
        return 0.0
    feats = encode(td.type, td.train, tokenizer, UNCUT, with_labels=False, pair_encoding=td.cfg.pair_encoding,
                   questions=td.cfg.questions)
    return sum(_longest(f) > max_length for f in feats) / len(feats)


def _longest(feat: Feature) -> int:
    ids = feat.input_ids
    return max(len(g) for g in ids) if ids and isinstance(ids[0], list) else len(ids)


def label_summary(td: TaskData) -> str:
    """Class (or choice, or tag) counts with shares; a regression task's range and mean."""
    gold = [ex.label for ex in td.train]
    if not gold:
        return "no train split"
    return registry.get(td.type).label_summary(gold)


def time_steps(cfg: Config, data: dict[str, TaskData], plan: StepPlan, pad_id: int, repeats: int = 3) -> dict:
    """Seconds per training step of each task (median of `repeats` after one warm-up step, on the batches
    training would draw first) and per dev input, with the config's model, precision and threads."""
    t = cfg.training
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    precision = resolve_precision(t.precision, device)
    amp = partial(autocast, precision, device)
    model = model_for_training(cfg, data).to(device)
    optimizer = make_optimizer(model, cfg)
    step, per_input = {}, {}
    for name, td in data.items():
        if not td.train_feats:
            continue
        times = []
        for _ in range(repeats + 1):
            batch = to_device(collate(td.type, [td.train_feats[i] for i in plan.streams[name].next()], pad_id), device)
            tick = time.perf_counter()
            with amp():
                out = model(name, batch)
            total, count = model.heads[name].loss_terms(out, batch["labels"])
            (total / count).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - tick)
        step[name] = statistics.median(times[1:])
        if td.dev_feats:
            sample = td.dev_feats[:2 * t.eval_batch_size]
            tick = time.perf_counter()
            predict_task(model, name, sample, t.eval_batch_size, pad_id, td.labels, amp)
            per_input[name] = (time.perf_counter() - tick) / len(sample)
    return {"step": step, "per_dev_input": per_input, "precision": precision, "repeats": repeats,
            "threads": torch.get_num_threads()}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def check(cfg: Config, timing: bool = True) -> str:
    """The report `mtbert check` prints; raises UserError on any problem train would raise before step 1."""
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer)
    plan = step_plan(cfg, data)
    t = cfg.training
    lines = [f"config: valid; backbone {cfg.backbone}; {len(data)} task(s)"]
    run_dir = Path(cfg.run_dir)
    if holds_run(run_dir):
        lines.append(f"run dir: {run_dir} holds a run: train resumes it if it checkpointed this config, "
                     "otherwise it needs --overwrite or --run-dir DIR")
    else:
        lines.append(f"run dir: {run_dir}")
    for name, td in data.items():
        if td.cfg.teacher:
            model_dir(td.cfg.teacher)  # a missing or unfinished teacher run: told now, not after tokenising
            lines.append(f"teacher of {name}: {td.cfg.teacher} (its outputs are computed when training starts)")
    lines += ["", "| task | type | train | dev | max_length | train inputs cut at max_length |", "|---|---|---|---|---|---|"]
    for name, td in data.items():
        max_length = cfg.max_length_for(name)
        lines.append(f"| {name} | {td.type} | {len(td.train)} | {len(td.dev)} | {max_length} | "
                     f"{truncated_share(td, tokenizer, max_length):.1%} |")
    lines += ["", "labels (train):"] + [f"- {name}: {label_summary(td)}" for name, td in data.items()]
    has_dev = any(td.dev_feats for td in data.values())
    evaluations = (len(plan.eval_steps) + t.validate_first) if has_dev else 0
    shown = ", ".join(map(str, plan.eval_steps[:6])) + (", ..." if len(plan.eval_steps) > 6 else "")
    lines += ["", f"steps: {plan.total_steps} ({plan.steps_per_epoch} per epoch, {plan.epochs:.3g} epochs), "
              f"{evaluations} dev evaluation(s) ({'before step 1, ' if t.validate_first else ''}after steps {shown})",
              "", f"schedule {t.schedule}: expected steps per task", "",
              "| epoch | steps | " + " | ".join(data) + " |", "|---" * (len(data) + 2) + "|"]
    expected = Counter()
    for epoch in range(math.ceil(plan.epochs)):
        steps = min(plan.epoch_start(epoch + 1), plan.total_steps) - plan.epoch_start(epoch)
        mix = plan.schedule.expected_steps(epoch, steps)
        expected.update(mix)
        lines.append(f"| {epoch + 1} | {steps} | " + " | ".join(f"{mix[n]:.0f}" if mix[n] >= 10 else f"{mix[n]:.1f}" for n in data) + " |")
    if timing:
        timed = time_steps(cfg, data, plan, tokenizer.pad_token_id or 0)
        train_s = sum(expected[n] * s for n, s in timed["step"].items())
        eval_s = evaluations * sum(len(data[n].dev_feats) * s for n, s in timed["per_dev_input"].items())
        per_step = ", ".join(f"{n} {s:.2f} s/step" for n, s in timed["step"].items())
        lines += ["", f"estimate on this machine ({timed['threads']} thread(s), {timed['precision']}): training "
                  f"{_minutes(train_s)}, dev evaluations {_minutes(eval_s)}; from {timed['repeats']} timed steps per task ({per_step})"]
    lines += ["", "resolved config:", "", config_yaml(cfg).rstrip()]
    return "\n".join(lines)
