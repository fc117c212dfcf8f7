"""The training loop. One step = one task's batch(es) -> loss * weight -> backward -> AdamW step.

Heads of the tasks not in a step get no gradient (grads are reset to None, not zero), so AdamW skips
them: their weights, weight decay and optimiser state stay bit-identical, as in DeepPavlov's seed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from mtbert.config import Config, TaskConfig
from mtbert.data.features import Feature, build_labels, collate, encode, length_grouped_batches
from mtbert.data.multiple_choice import rotate_choices
from mtbert.data.readers import Example, read_split
from mtbert.data.schedule import BatchStream, DeepPavlovSchedule, TaskSchedule
from mtbert.errors import UserError
from mtbert.evaluation.evaluate import (
    TaskPredictions,
    gold_values,
    predict_task,
    prediction_values,
    score_task,
    target_value,
)
from mtbert.io import append_line, atomic_write_text
from mtbert.modeling.encoder import load_encoder, load_tokenizer
from mtbert.modeling.model import MultiTaskModel
from mtbert.modeling.precision import autocast, resolve_device, resolve_precision
from mtbert.rundir import MODEL, remove_leftovers, save_model, write_config
from mtbert.tasks import build_head, registry
from mtbert.training.balancing import UncertaintyWeights
from mtbert.training.checkpoint import checkpoints, fingerprint, load_checkpoint, save_checkpoint
from mtbert.training.console import training_console
from mtbert.training.distill import attach_teacher_targets, gold_weight
from mtbert.training.distributed import Dist, from_env
from mtbert.training.loggers import Callback, Callbacks, build_loggers, require_packages
from mtbert.training.report import write_curves, write_report

log = logging.getLogger("mtbert")


@dataclass
class TaskData:
    name: str
    cfg: TaskConfig
    labels: list[str] | None
    train: list[Example] = field(default_factory=list)
    train_feats: list[Feature] = field(default_factory=list)
    dev: list[Example] = field(default_factory=list)
    dev_feats: list[Feature] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.cfg.type


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(cfg: Config, tokenizer, need_train: bool = True) -> dict[str, TaskData]:
    """Read and tokenise every task's train and dev split once."""
    data = {}
    for name, task in cfg.tasks.items():
        if need_train and not (task.train or task.format == "hf"):
            raise UserError(f"tasks.{name}.train: missing; training needs a train file for every task")
        train = read_split(cfg, name, "train") if need_train else []
        labels = build_labels(task.type, train, task.labels, task.num_labels, name)
        check_bce_labels(name, task, labels)
        if task.rotate_choices:
            train = rotate_choices(train)
        td = TaskData(name, task, labels, train)
        max_len = cfg.max_length_for(name)
        td.train_feats = encode(task.type, train, tokenizer, max_len, labels, name, pair_encoding=task.pair_encoding,
                                questions=task.questions, all_subtokens=task.label_all_subtokens) if train else []
        if task.dev or (task.format == "hf" and task.dev is not None):
            td.dev = read_split(cfg, name, "dev")
            # dev is read as predict reads it: a long text in windows, every gold word scored
            td.dev_feats = encode(task.type, td.dev, tokenizer, max_len, labels, name, pair_encoding=task.pair_encoding,
                                  stride=cfg.window_stride(name), questions=task.questions)
        data[name] = td
        log.info("task %s (%s): %d train, %d dev examples%s", name, task.type, len(train), len(td.dev),
                 f", {len(labels)} labels" if labels else "")
    return data


def check_bce_labels(name: str, task: TaskConfig, labels: list[str] | None) -> None:
    """`loss: bce` with labels read from train (the config checks labels it lists): refused before the first
    step, not by the head's constructor."""
    if task.loss == "bce" and labels and len(labels) != 2:
        shown = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "")
        raise UserError(f"tasks.{name}.loss: 'bce' is one sigmoid output for two classes, but train has "
                        f"{len(labels)} labels ({shown}); use loss: cross_entropy")


@dataclass
class StepPlan:
    """How training walks through the data: each task's batch stream, the schedule choosing the task of
    each step, the step counts, and the steps after which dev is evaluated."""
    streams: dict[str, BatchStream]
    schedule: TaskSchedule | DeepPavlovSchedule
    steps_per_epoch: int  # the mean, where epochs differ in length (schedule deeppavlov)
    total_steps: int
    epochs: float
    eval_steps: list[int]  # the last step is always among them

    def epoch_of(self, step: int) -> int:
        if isinstance(self.schedule, DeepPavlovSchedule):
            return self.schedule.epoch_of(step)
        return step // self.steps_per_epoch

    def epoch_start(self, epoch: int) -> int:
        if isinstance(self.schedule, DeepPavlovSchedule):  # past the plan: its end, which no step passes
            return self.schedule.starts[min(epoch, len(self.schedule.starts) - 1)]
        return epoch * self.steps_per_epoch

    def epochs_done(self, step: int) -> float:
        epoch = self.epoch_of(step)
        start = self.epoch_start(epoch)
        return epoch + (step - start) / max(1, self.epoch_start(epoch + 1) - start)


def step_plan(cfg: Config, data: dict[str, TaskData]) -> StepPlan:
    t = cfg.training
    accum = t.gradient_accumulation_steps
    deeppavlov = t.schedule == "deeppavlov"
    streams = {
        name: BatchStream(len(td.train_feats), cfg.batch_size(name),
                          partial(length_grouped_batches, td.train_feats, cfg.batch_size(name),
                                  group=cfg.length_grouping(name)), seed=cfg.seed + i, drop_last=deeppavlov)
        for i, (name, td) in enumerate(data.items())
    }
    examples = {n: len(td.train_feats) for n, td in data.items()}
    if deeppavlov:
        schedule = deeppavlov_schedule(cfg, streams, examples)
        total_steps = t.max_steps or schedule.total_steps(t.epochs)
        steps_per_epoch = max(1, round(schedule.starts[-1] / len(schedule.plan)))
        epochs = t.epochs
    else:
        schedule = TaskSchedule(t.schedule, {n: len(s) for n, s in streams.items()}, t.epochs, cfg.seed,
                                t.keep_remainder, t.temperature or 1.0, examples)
        if schedule.epoch_aligned:
            steps_per_epoch = len(schedule.sequence)
        else:
            steps_per_epoch = t.steps_per_epoch or max(1, sum(len(s) for s in streams.values()) // accum)
        total_steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
        schedule.epochs = epochs = total_steps / steps_per_epoch
    plan = StepPlan(streams, schedule, steps_per_epoch, total_steps, epochs, [])
    if deeppavlov and t.max_steps:
        plan.epochs = plan.epochs_done(total_steps)
    plan.eval_steps = evaluation_steps(t, plan)
    return plan


def deeppavlov_schedule(cfg: Config, streams: dict[str, BatchStream], examples: dict[str, int]) -> DeepPavlovSchedule:
    """DeepPavlov's epoch: (training examples of all tasks) // its iterator's batch_size draws of a batch, a
    step being gradient_accumulation_steps of them; a task trains at most its full batches an epoch."""
    t = cfg.training
    accum = t.gradient_accumulation_steps
    steps_per_task = {n: len(s) // accum for n, s in streams.items()}
    for name, steps in steps_per_task.items():
        if not steps:  # DeepPavlov drops the partial batch: this task would never train
            raise UserError(f"tasks.{name}: {examples[name]} training examples, fewer than one step of "
                            f"{accum} x {cfg.batch_size(name)} (schedule deeppavlov drops the partial batch); "
                            "lower training.batch_size or add examples")
    draws = t.steps_per_epoch or max(1, sum(examples.values()) // t.iterator_batch_size // accum)
    return DeepPavlovSchedule(t.sampling, examples, steps_per_task, draws, t.epochs, cfg.seed, t.max_steps or 0)


def evaluation_steps(t, plan: StepPlan) -> list[int]:
    """The steps after which dev is evaluated: every eval_every steps, at the end of every
    eval_every_epochs-th epoch (every epoch when neither is given), and after the last step."""
    total = plan.total_steps
    steps = set(range(t.eval_every, total + 1, t.eval_every)) if t.eval_every else set()
    every_epochs = t.eval_every_epochs if t.eval_every_epochs is not None else (0 if t.eval_every else 1)
    if every_epochs:
        epoch = every_epochs
        while (end := plan.epoch_start(epoch)) < total:
            steps.add(end)
            epoch += every_epochs
    steps.add(total)
    return sorted(steps)


def build_model(cfg: Config, data: dict[str, TaskData]) -> MultiTaskModel:
    encoder = load_encoder(cfg.backbone, cfg.backbone_impl)
    hidden = encoder.config.hidden_size
    heads = {name: build_head(td.cfg, hidden, td.labels, td.train_feats, name) for name, td in data.items()}
    model = MultiTaskModel(encoder, heads, {n: td.cfg for n, td in data.items()})
    if cfg.training.loss_balancing == "uncertainty":
        model.balancer = UncertaintyWeights(model.task_types)
    dp_pooler = [n for n, td in data.items() if td.cfg.pooling == "dp_pooler"]
    if dp_pooler:
        # DeepPavlov's head input is a new Linear on [CLS] (then tanh), one for all tasks: the pooler's layout,
        # with the pretrained weights dropped for PyTorch's Linear initialisation, as DeepPavlov's
        pooler = getattr(encoder, "pooler", None)
        if pooler is None:
            raise UserError(f"tasks.{dp_pooler[0]}.pooling: 'dp_pooler' needs an encoder with a pooler layer; "
                            "use pooling: cls")
        for layer in pooler.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
    if cfg.training.freeze_encoder:
        model.encoder.requires_grad_(False)
        if dp_pooler:  # a head layer in DeepPavlov, which trains when freeze_embeddings freezes the encoder
            model.encoder.pooler.requires_grad_(True)
    elif cfg.training.freeze_embeddings:
        model.encoder.get_input_embeddings().requires_grad_(False)
        if hasattr(model.encoder, "embeddings"):
            model.encoder.embeddings.requires_grad_(False)
    return model


def make_optimizer(model: MultiTaskModel, cfg: Config) -> torch.optim.AdamW:
    """AdamW; no decay on `weight_decay_exempt` (biases, LayerNorm weights); heads may have their own lr,
    learned loss weights have theirs."""
    t = cfg.training
    groups: dict[tuple, list] = defaultdict(list)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = name.split(".")[0]  # encoder, heads or balancer
        bias = name.endswith("bias")
        # the other one-dimensional weights are the norms' (LayerNorm, minBERT's norms) and learned loss weights
        no_decay = ("bias" in t.weight_decay_exempt and bias) or ("LayerNorm" in t.weight_decay_exempt
                                                                   and p.ndim < 2 and not bias)
        groups[(part, no_decay)].append(p)
    lr = {"encoder": t.lr, "heads": t.head_lr or t.lr, "balancer": t.loss_balancing_lr}
    param_groups = [
        {"params": ps, "weight_decay": 0.0 if no_decay else t.weight_decay, "lr": lr[part]}
        for (part, no_decay), ps in groups.items()
    ]
    # the fused kernel updates every tensor in one pass: on one CPU thread a MiniLM step takes 12 ms instead
    # of 110 (a third of a training step); tensors without a gradient are skipped as before
    return torch.optim.AdamW(param_groups, lr=t.lr, weight_decay=t.weight_decay, fused=True)


def reload_best(model: MultiTaskModel, run_dir: Path, impl: str) -> bool:
    """Put the best model saved so far (run_dir/model) back into `model`, as DeepPavlov does before an lr
    drop; False when none is saved yet. The encoder is rebuilt from its folder, which maps minBERT's saved
    names back to its own."""
    saved = run_dir / MODEL
    if not (saved / "heads.safetensors").is_file():
        return False
    model.encoder.load_state_dict(load_encoder(str(saved / "encoder"), impl).state_dict())
    model.heads.load_state_dict(load_file(saved / "heads.safetensors"))
    return True


class LrSchedule:
    """Linear warm-up, then linear decay (or a constant rate, DeepPavlov's), times a factor that drops by
    `lr_drop_div` on a plateau (DeepPavlov's learning_rate_drop_patience / _div, floored at min_lr)."""

    def __init__(self, optimizer, total_steps: int, warmup: float, div: float, min_lr: float, kind: str = "linear"):
        self.kind = kind
        self.optimizer = optimizer
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.total = max(total_steps, 1)
        self.warmup = int(warmup * total_steps)
        self.div = div
        self.min_lr = min_lr
        self.factor = 1.0

    def shape(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return 1.0
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))

    def set(self, step: int) -> None:
        for g, base in zip(self.optimizer.param_groups, self.base, strict=True):
            g["lr"] = base * self.shape(step) * self.factor

    def drop(self, floor: bool = False) -> bool:
        """Divide the rate by `div`. Under min_lr: no drop, or with `floor` (DeepPavlov) down to min_lr."""
        if max(self.base) * self.factor / self.div < self.min_lr:
            if not floor:
                return False
            self.factor = self.min_lr / max(self.base)
            return True
        self.factor /= self.div
        return True

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def evaluate_all(model, data: dict[str, TaskData], cfg: Config, pad_id: int, amp,
                 ranks: Dist | None = None, progress: bool = False) -> tuple[dict, dict]:
    scores, outputs = {}, {}
    bar = tqdm(total=sum(len(td.dev_feats) for td in data.values()), desc="dev", unit="input", leave=False,
               disable=not progress, dynamic_ncols=True)
    for name, td in data.items():
        if not td.dev_feats:
            continue
        preds = predict_task(model, name, td.dev_feats, cfg.training.eval_batch_size, pad_id, td.labels, amp, ranks,
                             on_batch=bar.update)
        scores[name] = score_task(td.type, metric_names(cfg, name), td.dev, preds, td.labels)
        outputs[name] = preds
    bar.close()
    return scores, outputs


def metric_names(cfg: Config, task: str) -> list[str]:
    names = cfg.tasks[task].metrics
    target = cfg.training.target_metric
    if target.startswith(f"{task}.") and target.split(".", 1)[1] not in names:
        names = names + [target.split(".", 1)[1]]
    return names


def custom_outputs(data: dict[str, TaskData], outputs: dict[str, TaskPredictions]) -> dict:
    """What a `module:function` target metric receives: {task: {"y_true", "y_pred", "probas"}}."""
    return {n: {"y_true": gold_values(data[n].type, data[n].dev, data[n].labels),
                "y_pred": prediction_values(data[n].type, p, data[n].dev), "probas": p.probas}
            for n, p in outputs.items()}


def baseline_scores(cfg: Config, data: dict[str, TaskData]) -> dict[str, dict[str, float]]:
    """Each task type's floor to beat (majority class, train mean, first choice, all-O...)."""
    out = {}
    for name, td in data.items():
        if not td.dev:
            continue
        preds = registry.get(td.type).baseline(td.train, td.train_feats, td.dev, td.labels)
        with _quiet():
            out[name] = score_task(td.type, [m for m in metric_names(cfg, name) if ":" not in m], td.dev, preds,
                                   td.labels)
    return out


class _quiet:
    """Constant baselines trip the constant-prediction warnings by design; keep them out of the log."""

    def __enter__(self):
        self.level = log.level
        log.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        log.setLevel(self.level)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written at `step` (by rank 0)."""

    def __init__(self, step: int, run_dir: Path, signum: int, is_main: bool = True):
        super().__init__(f"interrupted at step {step}")
        self.step, self.run_dir, self.signum, self.is_main = step, run_dir, signum, is_main


@dataclass
class TrainState:
    """Everything about the loop that a checkpoint must carry besides weights, optimiser and RNGs."""

    step: int = 0
    best: float = -math.inf
    best_eval: dict | None = None
    bad_evals: int = 0
    best_for_drop: float = -math.inf
    bad_for_drop: int = 0
    lr_factor: float = 1.0
    loss_sums: dict = field(default_factory=dict)  # task -> [sum, count] since the last evaluation
    loss_curve: list = field(default_factory=list)  # (step, task, loss)
    lr_curve: list = field(default_factory=list)  # (step, lr)
    dev_curve: list = field(default_factory=list)
    ema: dict = field(default_factory=dict)
    steps_per_task: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    nonfinite_steps: int = 0
    done: bool = False


class _Ending:
    """Tells the callbacks how the run ended, whichever way it ends."""

    def __init__(self, callbacks: Callback, state: TrainState):
        self.callbacks, self.state = callbacks, state

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        outcome = ("finished" if kind is None else
                   "interrupted" if issubclass(kind, TrainingInterrupted | KeyboardInterrupt) else "failed")
        self.callbacks.on_end(self.state.step, outcome)


class _StopSignals:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps, so it can checkpoint and exit."""

    def __init__(self):
        self.signum = 0

    def __enter__(self):
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(cfg: Config, run_dir: str | Path | None = None, resume: bool = False,
          callbacks: list[Callback] | tuple = ()) -> dict:
    """Train from a validated config; returns the best evaluation and where the run was written.

    With `resume`, continue from the run dir's latest checkpoint: the result is identical to a run
    that was never interrupted (on CPU)."""
    t = cfg.training
    run_dir = Path(run_dir or cfg.run_dir)
    if t.threads:
        torch.set_num_threads(t.threads)
    ranks = from_env(t.dist_timeout, t.device)
    try:
        with _rank_logging(ranks), training_console():
            return _train(cfg, run_dir, resume, ranks, list(callbacks))
    finally:
        ranks.close()


class _rank_logging:
    """Only rank 0 logs progress; the others say only what goes wrong."""

    def __init__(self, ranks: Dist):
        self.quiet = not ranks.is_main

    def __enter__(self):
        self.level = log.level
        if self.quiet:
            log.setLevel(logging.WARNING)

    def __exit__(self, *exc):
        log.setLevel(self.level)


def _train(cfg: Config, run_dir: Path, resume: bool, ranks: Dist, user_callbacks: list[Callback]) -> dict:
    t = cfg.training
    main = ranks.is_main
    if main:
        require_packages(t.loggers)
    seed_everything(cfg.seed)
    device = resolve_device(t.device, ranks.local_rank)
    precision = resolve_precision(t.precision, device)
    amp = partial(autocast, precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer)
    for td in data.values():
        if td.cfg.teacher:
            attach_teacher_targets(td, td.cfg.teacher, t.eval_batch_size, precision, device)
    distilling = any(td.cfg.teacher for td in data.values())
    pad_id = tokenizer.pad_token_id or 0
    model = build_model(cfg, data).to(device)
    model.train()
    if t.compile:
        # in place, so parameter names (and checkpoints) stay those of the eager model; dynamic shapes,
        # since every batch is padded to its own length
        model.encoder.compile(dynamic=True)
    balancer = getattr(model, "balancer", None)
    net = model
    if ranks.enabled:
        if balancer is not None:  # used after the forward, outside DDP's graph: reduced by hand below
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, [f"balancer.{n}" for n, _ in balancer.named_parameters()])
        # a step trains one task, so the other heads are unused: DDP must look for them (and then leaves
        # their gradients None, so AdamW skips them as on one process)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True, forward_sync_buffers=False)  # no BatchNorm: nothing to sync

    plan = step_plan(cfg, data)
    streams, schedule = plan.streams, plan.schedule
    steps_per_epoch, total_steps, epochs = plan.steps_per_epoch, plan.total_steps, plan.epochs
    accum = t.gradient_accumulation_steps
    optimizer = make_optimizer(model, cfg)
    lr_schedule = LrSchedule(optimizer, total_steps, t.warmup, t.lr_drop_div, t.min_lr, t.lr_schedule)

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(run_dir)  # what a kill left half-written; never another file
    metrics_path = run_dir / "metrics.jsonl"
    state = TrainState()
    if resume and (found := checkpoints(run_dir)):
        saved = load_checkpoint(found[-1], model, optimizer)
        scaler.load_state_dict(saved.pop("grad_scaler", None) or {})
        if saved.pop("fingerprint") != fingerprint(cfg):
            raise UserError(f"{run_dir}: its checkpoint was made with a different config; "
                            "resume with the same config, or --overwrite to start again")
        schedule.set_state(saved.pop("schedule"))
        for name, stream_state in saved.pop("streams").items():
            streams[name].set_state(stream_state)
        state = TrainState(**saved)
        if main:  # evaluations after the checkpoint will run again: drop their lines
            kept = [line for line in metrics_path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= state.step] if metrics_path.exists() else []
            atomic_write_text(metrics_path, "".join(line + "\n" for line in kept))
        log.info("resuming %s from step %d (%s)", run_dir, state.step, found[-1].name)
    elif main:
        metrics_path.write_text("", encoding="utf-8")
    if ranks.rank:  # dropout: each rank its own masks
        torch.manual_seed(cfg.seed + 7919 * ranks.rank + state.step)
    if main:
        write_config(run_dir, cfg)
    lr_schedule.factor = state.lr_factor
    labels = {n: td.labels for n, td in data.items() if td.labels}
    primary = {n: metric_names(cfg, n)[0] for n in data}
    has_dev = any(td.dev_feats for td in data.values())
    baseline = baseline_scores(cfg, data) if main else {}
    # the caller's callbacks (mtbert.train(callbacks=...)) hear what rank 0 hears, after the loggers
    callbacks = Callbacks([*build_loggers(t.loggers, run_dir, state.step, cfg.dump(), t.mlflow_uri), *user_callbacks]
                          if main else [])
    log.info("training %d steps (%d per epoch, %.2g epochs), schedule %s, precision %s on %s%s, run dir %s",
             total_steps, steps_per_epoch, epochs, t.schedule, precision, device,
             f", {ranks.world} processes" if ranks.enabled else "", run_dir)

    def say(line: str) -> None:
        if main:  # tqdm.write prints even where the bar is disabled
            bar.write(line)

    def checkpoint() -> None:
        if not main:
            return
        state.lr_factor = lr_schedule.factor
        payload = {**asdict(state), "fingerprint": fingerprint(cfg), "schedule": schedule.state(),
                   "streams": {n: s.state() for n, s in streams.items()}, "grad_scaler": scaler.state_dict()}
        save_checkpoint(run_dir, state.step, model, optimizer, payload, t.keep_checkpoints)
        callbacks.on_checkpoint(state.step)

    def summarise(finished: bool) -> dict:
        return {"run_dir": str(run_dir), "steps": state.step, "total_steps": total_steps, "finished": finished,
                "train_seconds": round(state.train_seconds, 1), "eval_seconds": round(state.eval_seconds, 1),
                "train_examples": sum(cfg.batch_size(n) * k for n, k in state.steps_per_task.items()) * accum,
                "nonfinite_steps": state.nonfinite_steps,
                "best": state.best_eval, "baseline": baseline, "primary": primary, "precision": precision}

    def write_progress(finished: bool) -> dict:
        """report.md and curves.png as they stand (rank 0 only)."""
        summary = summarise(finished)
        write_report(run_dir, cfg, summary)
        write_curves(run_dir, state.loss_curve, state.dev_curve, primary, state.lr_curve)
        return summary

    def evaluate(initial: bool = False) -> bool:
        """Score dev (each rank a share of the batches), log it, keep the best model; True when early
        stopping says stop. Every rank gets the same scores, so they all take the same decisions.
        `initial` (validate_first): the untrained model's score becomes the one to beat, nothing is saved."""
        scores, outputs = evaluate_all(model, data, cfg, pad_id, amp, ranks, progress=t.progress and main)
        custom = custom_outputs(data, outputs) if ":" in t.target_metric else None  # only a custom target needs them
        target = target_value(t.target_metric, scores, primary, custom)
        record = {"step": state.step, "epoch": round(plan.epochs_done(state.step), 3), "lr": lr_schedule.lr,
                  "train_loss": {k: v[0] / max(v[1], 1) for k, v in state.loss_sums.items()},
                  "dev": scores, "target": target}
        if balancer is not None:
            record["loss_weights"] = balancer.weights()
        if main:
            append_line(metrics_path, json.dumps(record))
        state.dev_curve.append(record)
        state.loss_sums = {}
        say(f"step {state.step}: target {target:.4f} | " +
            " | ".join(f"{n} {m[primary[n]]:.4f}" for n, m in scores.items()))
        if initial:
            state.best, state.best_eval, state.best_for_drop = target, record, target
            return False
        if target > state.best:
            state.best, state.best_eval, state.bad_evals = target, record, 0
            if main:
                save_model(run_dir, model, tokenizer, cfg, labels, precision, record)
        else:
            state.bad_evals += 1
        if main:  # a run stopped at any point leaves the report of its last evaluation
            write_progress(finished=False)
        callbacks.on_evaluate(state.step, record)
        if t.lr_drop_patience:
            once = t.lr_drop == "once_per_plateau"
            if target > state.best_for_drop:
                state.best_for_drop, state.bad_for_drop = target, 0
            else:
                state.bad_for_drop += 1
                # once: DeepPavlov's torch_model drops when the impatience equals the patience, so one plateau
                # drops once however long it lasts
                if state.bad_for_drop == t.lr_drop_patience:
                    if not once:
                        state.bad_for_drop = 0
                    if t.lr_drop_reload_best and reload_best(model, run_dir, cfg.backbone_impl):
                        log.info("reloaded the best model (step %d) before the learning rate drop",
                                 state.best_eval["step"])
                    if lr_schedule.drop(floor=once):
                        log.info("no improvement for %d evaluations: learning rate divided by %g",
                                 t.lr_drop_patience, t.lr_drop_div)
        if t.patience and state.bad_evals >= t.patience:
            say(f"early stop at step {state.step}: no improvement for {t.patience} evaluations")
            return True
        return False

    bar = tqdm(total=total_steps, initial=state.step, disable=not (t.progress and main), desc="train",
               dynamic_ncols=True)
    eval_steps = set(plan.eval_steps)
    if t.validate_first and has_dev and not state.dev_curve:
        tick = time.time()
        evaluate(initial=True)
        state.eval_seconds += time.time() - tick
    with _StopSignals() as signals, _Ending(callbacks, state):
        while not state.done and state.step < total_steps:
            tick = time.time()
            step = state.step
            epoch = plan.epoch_of(step)
            if schedule.epoch_aligned and step == plan.epoch_start(epoch):
                for stream in streams.values():
                    stream.restart()
            task = schedule.task_for(step, epoch)
            td, weight = data[task], data[task].cfg.loss_weight * schedule.weight(task)
            lr_schedule.set(step)
            step_loss, examples = 0.0, 0
            for k in range(accum):
                # every rank draws the same batch and takes its shard; the all-reduce of the gradients
                # waits for the last accumulation step (no_sync before it)
                drawn = streams[task].next()
                examples += len(drawn)
                idx, share = ranks.shard(drawn)
                batch = {key: v.to(device) for key, v in
                         collate(td.type, [td.train_feats[i] for i in idx], pad_id).items()}
                with net.no_sync() if ranks.enabled and k < accum - 1 else contextlib.nullcontext():
                    with amp():
                        out = net(task, batch)
                    total, count = model.heads[task].loss_terms(
                        out, batch["labels"], batch.get("soft_labels"),
                        gold_weight(step, total_steps) if distilling else 1.0)
                    # the loss of the whole batch: every rank's sum over every rank's count (DDP then
                    # averages the gradients over the ranks, hence the world size)
                    whole = ranks.sum(torch.stack([total.detach(), count]) * share)
                    loss = total * share * ranks.world / whole[1]
                    if balancer is not None:  # DDP averages its s_i term over the ranks: one each
                        loss = balancer(task, loss)
                    scaler.scale(loss * weight / accum).backward()
                step_loss += (whole[0] / whole[1]).item() / accum
            state.step += 1
            if balancer is not None and ranks.enabled:
                for p in balancer.parameters():
                    if p.grad is not None:
                        p.grad = ranks.sum(p.grad) / ranks.world
            if math.isfinite(step_loss):
                scaler.unscale_(optimizer)
                if t.clip_norm:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], t.clip_norm)
                scaler.step(optimizer)
                scaler.update()
                state.steps_per_task[task] = state.steps_per_task.get(task, 0) + 1
                sums = state.loss_sums.setdefault(task, [0.0, 0])
                sums[0] += step_loss
                sums[1] += 1
                state.loss_curve.append((state.step, task, step_loss))
                state.ema[task] = step_loss if task not in state.ema else 0.9 * state.ema[task] + 0.1 * step_loss
                bar.set_postfix({k: f"{v:.3f}" for k, v in state.ema.items()}, refresh=False)
            elif t.on_nonfinite_loss == "stop":
                raise UserError(f"non-finite loss ({step_loss}) on task {task} at step {state.step}; lower "
                                "training.lr, or set training.on_nonfinite_loss: skip")
            else:
                state.nonfinite_steps += 1
                log.warning("non-finite loss (%s) on task %s at step %d: step skipped (%d so far)",
                            step_loss, task, state.step, state.nonfinite_steps)
            optimizer.zero_grad(set_to_none=True)  # None, not zero: AdamW then skips the idle heads entirely
            bar.update(1)
            seconds = time.time() - tick
            state.train_seconds += seconds
            state.lr_curve.append((state.step, lr_schedule.lr))
            scalars = {"train/lr": lr_schedule.lr, "train/examples_per_s": examples / max(seconds, 1e-9)}
            if math.isfinite(step_loss):
                scalars[f"train/loss/{task}"] = step_loss
            callbacks.on_step(state.step, scalars)

            due = has_dev and state.step in eval_steps
            if due:
                tick = time.time()
                state.done = evaluate()
                state.eval_seconds += time.time() - tick
            state.done = state.done or state.step == total_steps
            # a signal reaches the ranks at different steps: they stop together at the first step any saw it
            stop = ranks.any(signals.signum != 0) if ranks.enabled else bool(signals.signum)
            if due or state.done or (t.checkpoint_every and state.step % t.checkpoint_every == 0) or stop:
                checkpoint()
            if stop and not state.done:
                bar.close()
                raise TrainingInterrupted(state.step, run_dir, signals.signum or signal.SIGTERM, main)
        bar.close()
        if not main:
            return {"run_dir": str(run_dir), "steps": state.step, "best": state.best_eval}
        if not has_dev:
            save_model(run_dir, model, tokenizer, cfg, labels, precision)
        elif state.best_eval["step"] == 0:
            # validate_first's score was never beaten, so nothing was saved: keep the trained model rather than none
            log.warning("no evaluation beat the score before training (%.4f): saved the final model", state.best)
            state.best_eval = state.dev_curve[-1]
            save_model(run_dir, model, tokenizer, cfg, labels, precision, state.best_eval)
        # inside _Ending: the loggers' on_end comes after the final model and report, which MLflow stores
        return write_progress(finished=True)
