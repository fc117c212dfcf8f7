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

from mtbert.config import Config, TaskConfig, TrainingConfig
from mtbert.data.features import Feature, build_labels, collate, encode, length_grouped_batches
from mtbert.data.multiple_choice import rotate_choices
from mtbert.data.readers import Example, read_split
from mtbert.data.schedule import BatchStream, DeepPavlovSchedule, TaskSchedule
from mtbert.errors import UserError
from mtbert.evaluation.evaluate import (
    EvalSet,
    TaskPredictions,
    gold_values,
    prediction_values,
    score_sets,
    score_task,
    target_value,
)
from mtbert.io import append_line, atomic_write_text
from mtbert.modeling.encoder import load_encoder, load_tokenizer
from mtbert.modeling.model import MultiTaskModel
from mtbert.modeling.precision import autocast, resolve_device, resolve_precision, to_device
from mtbert.rundir import MODEL, read_metrics, save_model, write_config
from mtbert.tasks import build_model, registry
from mtbert.training.averaging import WeightAverage
from mtbert.training.balancing import UncertaintyWeights
from mtbert.training.checkpoint import Checkpointer, place_run
from mtbert.training.console import training_console
from mtbert.training.distill import attach_teacher_targets, gold_weight
from mtbert.training.distributed import Dist, compression_hook, from_env, reduce_rows, touched_rows
from mtbert.training.loggers import Callback, Callbacks, build_loggers, require_packages
from mtbert.training.plateau import Plateau
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


def model_for_training(cfg: Config, data: dict[str, TaskData]) -> MultiTaskModel:
    """tasks.build_model's model from the backbone, with what training adds: the heads' data
    statistics, learned loss weights, DeepPavlov's re-initialised pooler, frozen parts."""
    encoder = load_encoder(cfg.backbone, cfg.backbone_impl)
    model = build_model({n: td.cfg for n, td in data.items()}, encoder, {n: td.labels for n, td in data.items()},
                        {n: td.train_feats for n, td in data.items()})
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
    """Every task's dev scores and predictions, through evaluation's one scoring function."""
    sets = [EvalSet(name, td.type, td.dev, td.dev_feats, td.labels, metric_names(cfg, name))
            for name, td in data.items() if td.dev_feats]
    return score_sets(model, sets, cfg.training.eval_batch_size, pad_id, amp, ranks, progress)


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

    def __reduce__(self):  # `compare --jobs` sends it from a worker process to the parent, by pickle
        return type(self), (self.step, self.run_dir, self.signum, self.is_main)


@dataclass
class TrainState:
    """Everything about the loop that a checkpoint must carry besides weights, optimiser, RNGs, schedule,
    streams and the plateau's state."""

    step: int = 0
    best_eval: dict | None = None  # the evaluation that chose the saved model (its target: plateau.best)
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


SETTLE_EVERY_ON_GPU = 50  # steps between host reads of the losses on a GPU


@dataclass
class Run:
    """One training, as `setup` builds it: the model, data, streams, optimiser, schedules and state that
    `train_step` and `evaluate` work on. `net` is the model as it runs forward (its DDP wrapper under
    torchrun); `bar` the progress bar (disabled off rank 0 or without training.progress)."""

    cfg: Config
    run_dir: Path
    ranks: Dist
    device: torch.device
    precision: str
    amp: partial
    scaler: torch.amp.GradScaler
    tokenizer: object
    data: dict[str, TaskData]
    model: MultiTaskModel
    net: torch.nn.Module
    plan: StepPlan
    optimizer: torch.optim.Optimizer
    lr_schedule: LrSchedule
    plateau: Plateau
    checkpointer: Checkpointer
    state: TrainState = field(default_factory=TrainState)
    callbacks: Callbacks = field(default_factory=lambda: Callbacks([]))
    baseline: dict = field(default_factory=dict)
    bar: tqdm | None = None
    # steps whose loss the host has not read yet (step, task, loss, skipped, lr, examples/s), and how many
    # may wait: on a GPU reading a loss waits for the queued work, so settle() reads them in one go
    pending: list = field(default_factory=list)
    settle_every: int = 1
    # several processes: the word-embedding matrix DDP leaves out, whose touched rows train_step averages
    word_rows: torch.nn.Parameter | None = None
    # training.ema_decay: the weights' moving average, which evaluation scores and the run dir keeps
    average: WeightAverage | None = None

    @property
    def kept(self) -> MultiTaskModel:
        """The model evaluation scores and save_model writes: the moving average where there is one."""
        return self.average.module if self.average is not None else self.model

    @property
    def main(self) -> bool:
        return self.ranks.is_main

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    @property
    def labels(self) -> dict[str, list[str]]:
        return {n: td.labels for n, td in self.data.items() if td.labels}

    @property
    def primary(self) -> dict[str, str]:
        return {n: metric_names(self.cfg, n)[0] for n in self.data}

    @property
    def has_dev(self) -> bool:
        return any(td.dev_feats for td in self.data.values())

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def say(self, line: str) -> None:
        if self.main and self.bar is not None:  # tqdm.write prints even where the bar is disabled
            self.bar.write(line)


def train(cfg: Config, run_dir: str | Path | None = None, resume: bool = False,
          callbacks: list[Callback] | tuple = (), ranks: Dist | None = None) -> dict:
    """Train from a validated config; returns the best evaluation and where the run was written.

    With `resume`, continue from the run dir's latest checkpoint: the result is identical to a run
    that was never interrupted (on CPU). `ranks`: the process group the caller joined (from_env), else
    joined here; closed at the end either way. Whether to resume is training.checkpoint.Checkpointer's
    decision (`start`), which `mtbert train` and `mtbert.train` take before calling this."""
    t = cfg.training
    run_dir = Path(run_dir) if run_dir is not None else place_run(cfg)
    if t.threads:
        torch.set_num_threads(t.threads)
    ranks = ranks or from_env(t.dist_timeout, t.device)
    try:
        with _rank_logging(ranks), training_console():
            return _loop(setup(cfg, run_dir, resume, ranks, callbacks))
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


def setup(cfg: Config, run_dir: str | Path, resume: bool = False, ranks: Dist | None = None,
          callbacks: list[Callback] | tuple = ()) -> Run:
    """Everything a training needs, in the order exact resume depends on (the RNG draws of the model's
    initialisation come before a checkpoint's RNG states are restored): data read and tokenised once,
    the model (wrapped for DDP under torchrun), the step plan, AdamW and its schedule, then the run dir
    opened and, with `resume`, its latest checkpoint restored."""
    t, run_dir = cfg.training, Path(run_dir)
    ranks = ranks or Dist()
    if ranks.is_main:
        require_packages(t.loggers)
    seed_everything(cfg.seed)
    device = resolve_device(t.device, ranks.local_rank)
    precision = resolve_precision(t.precision, device)
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer)
    for td in data.values():
        if td.cfg.teacher:
            attach_teacher_targets(td, td.cfg.teacher, t.eval_batch_size, precision, device)
    model = model_for_training(cfg, data).to(device)
    model.train()
    average = WeightAverage(model, t.ema_decay) if t.ema_decay else None  # a copy of the eager model
    if t.compile:
        # in place, so parameter names (and checkpoints) stay those of the eager model; dynamic shapes,
        # since every batch is padded to its own length
        model.encoder.compile(dynamic=True)
    plan = step_plan(cfg, data)
    optimizer = make_optimizer(model, cfg)
    words = word_embeddings(model) if ranks.enabled and t.embedding_sync == "touched_rows" else None
    run = Run(cfg, run_dir, ranks, device, precision, partial(autocast, precision, device),
              torch.amp.GradScaler(device.type, enabled=precision == "fp16"), tokenizer, data, model,
              _distributed(model, ranks, device, t, words[0] if words else None), plan, optimizer,
              LrSchedule(optimizer, plan.total_steps, t.warmup, t.lr_drop_div, t.min_lr, t.lr_schedule),
              Plateau(t.patience, t.lr_drop_patience, t.lr_drop == "once_per_plateau", t.lr_drop_reload_best),
              Checkpointer(run_dir, cfg, ranks), average=average)
    _open_run_dir(run, resume)
    run.baseline = baseline_scores(cfg, data) if run.main else {}
    # the caller's callbacks (mtbert.train(callbacks=...)) hear what rank 0 hears, after the loggers
    if run.main:
        run.callbacks = Callbacks([*build_loggers(t.loggers, run_dir, run.state.step, cfg.dump(), t.mlflow_uri),
                                   *callbacks])
    log.info("training %d steps (%d per epoch, %.2g epochs), schedule %s, precision %s on %s%s, run dir %s",
             plan.total_steps, plan.steps_per_epoch, plan.epochs, t.schedule, precision, device,
             f", {ranks.world} processes" if ranks.enabled else "", run_dir)
    run.bar = tqdm(total=plan.total_steps, initial=run.state.step, disable=not (t.progress and run.main),
                   desc="train", dynamic_ncols=True)
    # the CPU runs each op as it is issued, so reading a loss there costs nothing and a 'stop' stops at its
    # step; a GPU's queue would drain at every read
    run.settle_every = 1 if device.type == "cpu" else SETTLE_EVERY_ON_GPU
    run.word_rows = words[1] if words else None
    return run


def word_embeddings(model: MultiTaskModel) -> tuple[str, torch.nn.Parameter] | None:
    """The encoder's word-embedding matrix and its name in `model`, where the encoder says which it is."""
    get = getattr(model.encoder, "get_input_embeddings", None)
    weight = getattr(get(), "weight", None) if get else None
    return next(((n, p) for n, p in model.named_parameters() if p is weight), None)


def _distributed(model: MultiTaskModel, ranks: Dist, device: torch.device, t: TrainingConfig,
                 word_rows: str | None) -> torch.nn.Module:
    """The model as it runs forward: itself on one process, its DDP wrapper under torchrun. DDP leaves out
    the learned loss weights (used after the forward, outside its graph) and `word_rows`, the word
    embeddings' name (only the rows a batch touched are all-reduced): train_step reduces both by hand."""
    if not ranks.enabled:
        return model
    by_hand = [f"balancer.{n}" for n, _ in getattr(model, "balancer", torch.nn.Module()).named_parameters()]
    if word_rows is not None:
        by_hand.append(word_rows)
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, by_hand)
    # a step trains one task, so the other heads are unused: DDP must look for them (and then leaves
    # their gradients None, so AdamW skips them as on one process)
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True, forward_sync_buffers=False)  # no BatchNorm: nothing to sync
    if t.grad_compression != "none":
        net.register_comm_hook(None, compression_hook(t.grad_compression))  # None: the default process group
    return net


def _open_run_dir(run: Run, resume: bool) -> None:
    """The run dir made ready; with `resume`, the latest checkpoint's weights, optimiser, RNG, schedule,
    streams, plateau and loop state restored, and metrics.jsonl cut back to its step."""
    cfg, plan = run.cfg, run.plan
    run.checkpointer.open()
    saved = run.checkpointer.restore(run.model, run.optimizer, run.average) if resume else None
    if saved is not None:
        run.scaler.load_state_dict(saved.pop("grad_scaler", None) or {})
        plan.schedule.set_state(saved.pop("schedule"))
        for name, stream_state in saved.pop("streams").items():
            plan.streams[name].set_state(stream_state)
        run.plateau.set_state({key: saved.pop(key) for key in list(run.plateau.state())})
        run.state = TrainState(**saved)
        if run.main:  # evaluations after the checkpoint will run again: drop their lines
            kept = [record for record in read_metrics(run.run_dir) if record["step"] <= run.state.step]
            atomic_write_text(run.metrics_path, "".join(json.dumps(record) + "\n" for record in kept))
    elif run.main:
        run.metrics_path.write_text("", encoding="utf-8")
    if run.ranks.rank:  # dropout: each rank its own masks
        torch.manual_seed(cfg.seed + 7919 * run.ranks.rank + run.state.step)
    if run.main:
        write_config(run.run_dir, cfg)
    run.lr_schedule.factor = run.state.lr_factor


def train_step(run: Run) -> None:
    """One optimiser step: the schedule's task for this step, gradient_accumulation_steps batches of it,
    backward, clipping and AdamW. Nothing in it reads a tensor on the host: a step whose loss (or, when
    clipping computes it, gradient norm) is not finite is skipped on the device (fused AdamW's found_inf:
    no update, no step count), and the loss bookkeeping, on_nonfinite_loss and the callbacks' on_step
    come at settle()."""
    t, state, plan = run.cfg.training, run.state, run.plan
    tick = time.time()
    step = state.step
    epoch = plan.epoch_of(step)
    if plan.schedule.epoch_aligned and step == plan.epoch_start(epoch):
        for stream in plan.streams.values():
            stream.restart()
    task = plan.schedule.task_for(step, epoch)
    run.lr_schedule.set(step)
    step_loss, drawn = _accumulate(run, task, step)
    examples = len(drawn)
    state.step += 1
    if run.ranks.enabled:
        _reduce_by_hand(run, task, drawn)
    finite = torch.isfinite(step_loss)
    run.scaler.unscale_(run.optimizer)
    if t.clip_norm:
        norm = torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.grad is not None], t.clip_norm)
        # fp16: an overflowing gradient is the grad scaler's business (it skips the step and lowers its
        # scale, routinely), not a non-finite step to count or stop for
        if not run.scaler.is_enabled():
            finite = finite & torch.isfinite(norm)
    skipped = (~finite).float()
    if not run.scaler.is_enabled():  # fp16: the scaler sets its own found_inf, which a NaN loss trips too
        run.optimizer.found_inf = skipped
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.average is not None:
        run.average.update_parameters(run.model)
    run.optimizer.zero_grad(set_to_none=True)  # None, not zero: AdamW then skips the idle heads entirely
    run.bar.update(1)
    seconds = time.time() - tick
    state.train_seconds += seconds
    state.lr_curve.append((state.step, run.lr_schedule.lr))
    run.pending.append((state.step, task, step_loss.detach(), skipped, run.lr_schedule.lr,
                        examples / max(seconds, 1e-9)))
    if len(run.pending) >= run.settle_every:
        settle(run)


def settle(run: Run) -> None:
    """Read the pending steps' losses (one host sync) and book them: loss sums and curve, the progress bar,
    the skipped-step count or on_nonfinite_loss: stop, and the callbacks' on_step."""
    if not run.pending:
        return
    t, state = run.cfg.training, run.state
    tick = time.time()
    read = torch.stack([torch.stack([loss.float(), skipped]) for _, _, loss, skipped, _, _ in run.pending]).tolist()
    pending, run.pending = run.pending, []
    for (step, task, _, _, lr, speed), (loss, skipped) in zip(pending, read, strict=True):
        scalars = {"train/lr": lr, "train/examples_per_s": speed}
        if not skipped:
            state.steps_per_task[task] = state.steps_per_task.get(task, 0) + 1
            sums = state.loss_sums.setdefault(task, [0.0, 0])
            sums[0] += loss
            sums[1] += 1
            state.loss_curve.append((step, task, loss))
            state.ema[task] = loss if task not in state.ema else 0.9 * state.ema[task] + 0.1 * loss
            scalars[f"train/loss/{task}"] = loss
        elif t.on_nonfinite_loss == "stop":
            raise UserError(f"non-finite loss or gradient ({loss}) on task {task} at step {step}; lower "
                            "training.lr, or set training.on_nonfinite_loss: skip")
        else:
            state.nonfinite_steps += 1
            log.warning("non-finite loss or gradient (loss %s) on task %s at step %d: step skipped (%d so far)",
                        loss, task, step, state.nonfinite_steps)
        run.callbacks.on_step(step, scalars)
    run.bar.set_postfix({k: f"{v:.3f}" for k, v in state.ema.items()}, refresh=False)
    # on a GPU the read waits for the queued steps: that wait is training time the steps' clocks missed
    state.train_seconds += time.time() - tick


def _reduce_by_hand(run: Run, task: str, drawn: list[int]) -> None:
    """What DDP leaves out (see _distributed), averaged over the ranks: the learned loss weights, and the
    word-embedding rows of the step's batches."""
    for p in getattr(run.model, "balancer", torch.nn.Module()).parameters():
        if p.grad is not None:
            p.grad = run.ranks.sum(p.grad) / run.ranks.world
    if run.word_rows is not None:
        feats = run.data[task].train_feats
        reduce_rows(run.word_rows, touched_rows([feats[i].input_ids for i in drawn], run.pad_id), run.ranks)


def _accumulate(run: Run, task: str, step: int) -> tuple[torch.Tensor, list[int]]:
    """Forward and backward of the step's gradient_accumulation_steps batches of `task`; the step's mean
    loss (over every rank's batch, a tensor on the device) and the examples it drew (every rank's)."""
    td, ranks, accum = run.data[task], run.ranks, run.cfg.training.gradient_accumulation_steps
    weight = td.cfg.loss_weight * run.plan.schedule.weight(task)
    distilling = any(d.cfg.teacher for d in run.data.values())
    balancer = getattr(run.model, "balancer", None)
    step_loss, every = torch.zeros((), device=run.device), []
    for k in range(accum):
        # every rank draws the same batch and takes its shard; the all-reduce of the gradients
        # waits for the last accumulation step (no_sync before it)
        drawn = run.plan.streams[task].next()
        every += drawn
        idx, share = ranks.shard(drawn)
        batch = to_device(collate(td.type, [td.train_feats[i] for i in idx], run.pad_id), run.device)
        with run.net.no_sync() if ranks.enabled and k < accum - 1 else contextlib.nullcontext():
            with run.amp():
                out = run.net(task, batch)
            total, count = run.model.heads[task].loss_terms(
                out, batch["labels"], batch.get("soft_labels"),
                gold_weight(step, run.plan.total_steps) if distilling else 1.0)
            # the loss of the whole batch: every rank's sum over every rank's count (DDP then
            # averages the gradients over the ranks, hence the world size)
            whole = ranks.sum(torch.stack([total.detach(), count]) * share)
            loss = total * share * ranks.world / whole[1]
            if balancer is not None:  # DDP averages its s_i term over the ranks: one each
                loss = balancer(task, loss)
            run.scaler.scale(loss * weight / accum).backward()
        step_loss += whole[0] / whole[1] / accum
    return step_loss, every


def evaluate(run: Run, initial: bool = False) -> bool:
    """Score dev (each rank a share of the batches), log it, keep the best model, and let the plateau drop
    the learning rate; True when early stopping says stop. Every rank gets the same scores, so they all
    take the same decisions. `initial` (validate_first): the untrained model's score becomes the one to
    beat, nothing is saved."""
    t, state = run.cfg.training, run.state
    settle(run)
    tick = time.time()
    scores, outputs = evaluate_all(run.kept, run.data, run.cfg, run.pad_id, run.amp, run.ranks,
                                   progress=t.progress and run.main)
    custom = custom_outputs(run.data, outputs) if ":" in t.target_metric else None  # only a custom target needs them
    primary = run.primary
    target = target_value(t.target_metric, scores, primary, custom)
    record = {"step": state.step, "epoch": round(run.plan.epochs_done(state.step), 3), "lr": run.lr_schedule.lr,
              "train_loss": {k: v[0] / max(v[1], 1) for k, v in state.loss_sums.items()},
              "dev": scores, "target": target}
    if (balancer := getattr(run.model, "balancer", None)) is not None:
        record["loss_weights"] = balancer.weights()
    if run.main:
        append_line(run.metrics_path, json.dumps(record))
    state.dev_curve.append(record)
    state.loss_sums = {}
    run.say(f"step {state.step}: target {target:.4f} | " +
            " | ".join(f"{n} {m[primary[n]]:.4f}" for n, m in scores.items()))
    if initial:
        run.plateau.baseline(target)
        state.best_eval = record
        state.eval_seconds += time.time() - tick
        return False
    verdict = run.plateau.update(target)
    if verdict.improved:
        state.best_eval = record
        if run.main:
            save_model(run.run_dir, run.kept, run.tokenizer, run.cfg, run.labels, run.precision, record)
    if run.main:  # a run stopped at any point leaves the report of its last evaluation
        write_progress(run, finished=False)
    run.callbacks.on_evaluate(state.step, record)
    if verdict.drop:
        run.plateau.drop_lr(run.lr_schedule, partial(_reload_best, run))
    if verdict.stop:
        run.say(f"early stop at step {state.step}: no improvement for {t.patience} evaluations")
    state.eval_seconds += time.time() - tick
    return verdict.stop


def _reload_best(run: Run) -> bool:
    reloaded = reload_best(run.model, run.run_dir, run.cfg.backbone_impl)
    if reloaded:
        log.info("reloaded the best model (step %d) before the learning rate drop", run.state.best_eval["step"])
    return reloaded


def checkpoint(run: Run) -> None:
    """Everything exact resume needs, written by rank 0 (training/checkpoint.py)."""
    settle(run)  # every rank: on_nonfinite_loss 'stop' must stop them all
    if not run.main:
        return
    state = run.state
    state.lr_factor = run.lr_schedule.factor
    payload = {**asdict(state), **run.plateau.state(), "schedule": run.plan.schedule.state(),
               "streams": {n: s.state() for n, s in run.plan.streams.items()}, "grad_scaler": run.scaler.state_dict()}
    run.checkpointer.save(state.step, run.model, run.optimizer, payload, run.average)
    run.callbacks.on_checkpoint(state.step)


def summarise(run: Run, finished: bool) -> dict:
    state, cfg = run.state, run.cfg
    return {"run_dir": str(run.run_dir), "steps": state.step, "total_steps": run.plan.total_steps,
            "finished": finished, "train_seconds": round(state.train_seconds, 1),
            "eval_seconds": round(state.eval_seconds, 1),
            "train_examples": sum(cfg.batch_size(n) * k for n, k in state.steps_per_task.items())
            * cfg.training.gradient_accumulation_steps,
            "nonfinite_steps": state.nonfinite_steps, "best": state.best_eval, "baseline": run.baseline,
            "primary": run.primary, "precision": run.precision}


def write_progress(run: Run, finished: bool) -> dict:
    """report.md and curves.png as they stand (rank 0 only)."""
    summary = summarise(run, finished)
    write_report(run.run_dir, run.cfg, summary)
    write_curves(run.run_dir, run.state.loss_curve, run.state.dev_curve, run.primary, run.state.lr_curve)
    return summary


def _loop(run: Run) -> dict:
    """Steps until the plan's end or early stopping: dev evaluated at the plan's steps, a checkpoint at
    each evaluation, every checkpoint_every steps and on SIGINT/SIGTERM (then TrainingInterrupted)."""
    t, state, ranks = run.cfg.training, run.state, run.ranks
    total_steps = run.plan.total_steps
    eval_steps = set(run.plan.eval_steps)
    if t.validate_first and run.has_dev and not state.dev_curve:
        evaluate(run, initial=True)
    with _StopSignals() as signals, _Ending(run.callbacks, state):
        while not state.done and state.step < total_steps:
            train_step(run)
            due = run.has_dev and state.step in eval_steps
            if due:
                state.done = evaluate(run)
            state.done = state.done or state.step == total_steps
            # a signal reaches the ranks at different steps: they stop together at the first step any saw it
            # (asked where the host reads losses anyway: the question is a sync of its own)
            if ranks.enabled:
                stop = ranks.any(signals.signum != 0) if not run.pending else False
            else:
                stop = bool(signals.signum)
            if due or state.done or (t.checkpoint_every and state.step % t.checkpoint_every == 0) or stop:
                checkpoint(run)
            if stop and not state.done:
                run.bar.close()
                raise TrainingInterrupted(state.step, run.run_dir, signals.signum or signal.SIGTERM, run.main)
        # inside _Ending: the loggers' on_end comes after the final model and report, which MLflow stores
        return finish(run)


def finish(run: Run) -> dict:
    """The final model (where no evaluation chose one) and report; the summary report.md is written from."""
    state = run.state
    settle(run)
    run.bar.close()
    if not run.main:
        return {"run_dir": str(run.run_dir), "steps": state.step, "best": state.best_eval}
    if not run.has_dev:
        save_model(run.run_dir, run.kept, run.tokenizer, run.cfg, run.labels, run.precision)
    elif state.best_eval["step"] == 0:
        # validate_first's score was never beaten, so nothing was saved: keep the trained model rather than none
        log.warning("no evaluation beat the score before training (%.4f): saved the final model", run.plateau.best)
        state.best_eval = state.dev_curve[-1]
        save_model(run.run_dir, run.kept, run.tokenizer, run.cfg, run.labels, run.precision, state.best_eval)
    return write_progress(run, finished=True)
