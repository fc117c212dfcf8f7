"""The config: YAML/JSON in, one validated `Config` out.

Order of work: read the file -> apply `--set` overrides -> substitute `${VAR}` / `{VAR}` variables ->
merge `task_defaults` into each task (DeepPavlov's multitask_reader semantics) -> validate with pydantic.
Every mistake becomes one `UserError` line naming the key path and the fix.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from mtbert.errors import UserError
from mtbert.tasks import TASK_TYPES, check_metric_fits, check_metric_name, default_metrics, registry

Column = int | str
LOGGERS = ("tensorboard", "mlflow")  # training.loggers; training/loggers.py builds one of each


def _import_metrics(info: ValidationInfo) -> bool:
    return (info.context or {}).get("import_metrics", True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Columns(_Strict):
    """Where each input field lives: a header name, a 0-based column index, or a JSON key."""

    text: Column | None = None
    text_pair: Column | None = None
    question: Column | None = None
    choices: list[Column] | None = None
    tokens: Column | None = None
    tags: Column | None = None
    label: Column | None = None
    id: Column | None = None  # carried into prediction files (the minBERT format needs it)


class _TaskConfig(_Strict):
    """A task's config; `TaskConfig` below is this with the keys the task types add (TaskType.fields)."""

    type: Literal[TASK_TYPES]  # the registered task types (mtbert.tasks)
    # reading
    format: Literal["tsv", "csv", "jsonl", "conll", "hf"] = "tsv"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    header: bool = True
    delimiter: str | None = None
    quoting: Literal["none", "csv"] | None = None
    columns: Columns = Field(default_factory=Columns)
    on_bad_rows: Literal["error", "skip"] = "error"
    max_train_examples: Annotated[int, Field(gt=0)] | None = None
    hf_path: str | None = None
    hf_name: str | None = None
    data_files: dict[str, str | list[str]] | None = None
    # labels and metrics
    labels: list[str] | None = None
    num_labels: Annotated[int, Field(gt=0)] | None = None
    metric: str | list[str] | None = None
    # head and loss
    # dp_pooler: DeepPavlov's head input, tanh(W h_[CLS] + b) through one layer shared by every task that
    # uses it; it is the encoder's pooler, freshly initialised as DeepPavlov's is (trained, saved and
    # exported with the encoder)
    pooling: Literal["cls", "pooler", "mean", "dp_pooler"] = "cls"
    # pair tasks: one sequence with [SEP] between (cross), or each text encoded alone, pooled and
    # concatenated (separate, minBERT's paraphrase and similarity heads)
    pair_encoding: Literal["cross", "separate"] = "cross"
    # separate pairs: [u; v], [u; v; |u-v|; u*v], or (regression) the scaled cosine of u and v
    pair_combine: Literal["concat", "sbert", "cosine"] = "concat"
    loss: Literal["cross_entropy", "bce"] = "cross_entropy"  # bce: two classes, one logit, sigmoid
    # linear: dropout and the output layer on the pooled vector (or each token's). mlp: a hidden layer of
    # the task's own before them, dense (hidden size) + tanh, as BERT's pooler and RoBERTa's classification
    # head: capacity no other task's gradient moves
    head: Literal["linear", "mlp"] = "linear"
    # sequence labeling: train on every sub-token of a word with the word's tag (DeepPavlov), not on its
    # first sub-token only; prediction reads the first sub-token either way
    label_all_subtokens: bool = False
    output_activation: Literal["none", "relu"] = "none"  # regression: minBERT's similarity head ends in ReLU
    # regression: the output bias starts at the mean training target (mtbert), or as torch's Linear draws it
    # (default: DeepPavlov, the minBERT report)
    bias_init: Literal["target_mean", "default"] = "target_mean"
    dataset: str | None = None  # display name in comparison tables
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    class_weights: list[float] | Literal["balanced"] | None = None
    loss_weight: Annotated[float, Field(gt=0)] = 1.0
    batch_size: Annotated[int, Field(gt=0)] | None = None
    max_length: Annotated[int, Field(gt=8)] | None = None
    length_grouping: bool | None = None  # None: training.length_grouping
    teacher: str | None = None  # a finished run dir trained on this task: distil from it (training/distill.py)
    # sequence labeling, a text longer than max_length: tag it in overlapping windows (every word gets
    # its own tag) or only its first max_length sub-tokens (the words after them get 'O')
    # (None: 'window' for sequence labeling; other task types read the first max_length sub-tokens)
    long_text: Literal["window", "truncate"] | None = None
    window_stride: Annotated[int, Field(gt=0)] | None = None  # sub-tokens a window repeats; None: max_length // 2
    # multiple choice: the words the model reads for a question value (COPA's bare 'cause' / 'effect' as a
    # sentence, e.g. {cause: "What was the cause of this?"}); values not listed are read as written
    questions: dict[str, str] | None = None
    # multiple choice, training only: each example also with its choices rotated (n-1 more copies), so the
    # right answer sits in every position and the head cannot learn an order
    rotate_choices: bool = False

    @model_validator(mode="after")
    def _options_of_the_type(self):
        """A key only some task types read (TaskType.options), set on a task of another type, is refused."""
        for task_type in registry.all():
            if task_type.name == self.type:
                continue
            for key in task_type.options:
                if key in registry.get(self.type).options or key not in self.model_fields_set:
                    continue
                if getattr(self, key) == type(self).model_fields[key].default:
                    continue
                owners = [t.name for t in registry.all() if key in t.options]
                raise ValueError(f"{key} applies to {' and '.join(owners)} tasks, not {self.type}; remove it")
        return self

    @model_validator(mode="after")
    def _all_subtokens_for_words(self):
        if self.label_all_subtokens and self.teacher:
            raise ValueError("label_all_subtokens with a teacher: the teacher's tags sit on first sub-tokens only; "
                             "remove one of them")
        return self

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value, info: ValidationInfo):
        for name in [value] if isinstance(value, str) else value or []:
            check_metric_name(name, _import_metrics(info))
            if "type" in info.data:  # fields validate in order: type is known unless it was itself wrong
                check_metric_fits(name, info.data["type"])
        return value

    @field_validator("loss")
    @classmethod
    def _bce_two_labels(cls, value, info: ValidationInfo):
        labels, num_labels = info.data.get("labels"), info.data.get("num_labels")
        count = len(labels) if labels is not None else num_labels
        if value == "bce" and count is not None and count != 2:
            raise ValueError(f"'bce' is one sigmoid output for two classes, but the task has {count} labels; "
                             "use loss: cross_entropy")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_once(cls, labels):
        seen = set()
        for label in labels or []:
            if label in seen:  # two indices for one class: the second is never predicted, never trained
                raise ValueError(f"'{label}' is listed twice; list each class once")
            seen.add(label)
        return labels

    @field_validator("class_weights")
    @classmethod
    def _weights_usable(cls, weights):
        if isinstance(weights, list):
            if not all(math.isfinite(w) and w >= 0 for w in weights):
                bad = next(w for w in weights if not (math.isfinite(w) and w >= 0))
                raise ValueError(f"weight {bad} is not a finite number >= 0; a class weight scales that class's "
                                 "loss (0 ignores the class)")
            if weights and not any(weights):  # the weighted mean of the loss would be 0/0
                raise ValueError("every weight is 0; give at least one class a weight above 0")
        return weights

    @model_validator(mode="after")
    def _columns_for_type(self):
        c = self.columns
        if self.format == "conll":
            c.tokens = 0 if c.tokens is None else c.tokens
            c.tags = -1 if c.tags is None else c.tags
            for key in ("tokens", "tags"):
                value = getattr(c, key)
                if isinstance(value, str) and not re.fullmatch(r"\s*-?\d+\s*", value):
                    raise ValueError(f"columns.{key}: format 'conll' has no header; give a 0-based column index "
                                     f"(e.g. tokens: 0, tags: 3), not {value!r}")
        if self.delimiter and (len(self.delimiter) != 1 or self.delimiter in "\r\n") and self.format in ("tsv", "csv"):
            raise ValueError(f"delimiter {self.delimiter!r}: {self.format} files need a single character other than "
                             "a line break, e.g. \"\\t\" or \",\"")
        task_type = registry.get(self.type)
        if self.format not in task_type.formats:
            readers = [t.name for t in registry.all() if self.format in t.formats]
            raise ValueError(f"format '{self.format}' holds tagged tokens; it needs type '{readers[0]}', not "
                             f"'{self.type}'")
        for name in task_type.columns:
            if getattr(c, name) is None:
                raise ValueError(
                    f"columns.{name} is required for {self.type} tasks; name the column "
                    "(a header name, a 0-based index, or a JSON key)"
                )
        if self.pair_encoding == "separate" and c.text_pair is None:
            raise ValueError("pair_encoding 'separate' encodes text and text_pair apart; columns.text_pair is required")
        task_type.check(self)
        if self.pair_combine != "concat" and self.pair_encoding != "separate":  # cross: one sequence, nothing to join
            raise ValueError(f"pair_combine '{self.pair_combine}' joins the two texts of a pair encoded apart: it "
                             "needs pair_encoding 'separate' (and columns.text_pair); remove pair_combine otherwise")
        if self.pair_combine not in task_type.pair_combines:
            kinds = " or ".join(f"'{t.name}'" for t in registry.all() if self.pair_combine in t.pair_combines)
            raise ValueError(f"pair_combine '{self.pair_combine}' applies to type {kinds} tasks, not {self.type}; "
                             f"use {' or '.join(task_type.pair_combines)}")
        if self.head == "mlp" and self.pair_encoding == "separate" and self.pair_combine == "cosine":
            raise ValueError("head 'mlp' on pair_combine 'cosine': the cosine is one number, with nothing for a "
                             "hidden layer to read; use head 'linear' or another pair_combine")
        if self.window_stride is not None and self.long_text == "truncate":
            raise ValueError("window_stride applies to long_text 'window', not 'truncate'; remove one of them")
        if self.format == "hf" and not self.hf_path:
            raise ValueError("format 'hf' needs hf_path, the dataset's hub name or local folder (e.g. hf_path: glue)")
        if self.format != "hf" and not (self.train or self.dev or self.test):
            raise ValueError("no data: give at least one of train, dev, test (file paths relative to data_dir)")
        return self

    @property
    def metrics(self) -> list[str]:
        if self.metric is None:
            return default_metrics(self.type)
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)


TaskConfig = create_model("TaskConfig", __base__=_TaskConfig, __module__=__name__,
                          **{key: spec for task_type in registry.all() for key, spec in task_type.fields.items()})


class TrainingConfig(_Strict):
    epochs: Annotated[float, Field(gt=0)] = 3
    max_steps: Annotated[int, Field(gt=0)] | None = None
    steps_per_epoch: Annotated[int, Field(gt=0)] | None = None
    batch_size: Annotated[int, Field(gt=0)] = 32
    eval_batch_size: Annotated[int, Field(gt=0)] = 64
    schedule: Literal["proportional", "uniform", "annealed", "temperature", "round_robin",
                      "minbert_round_robin", "deeppavlov"] = "proportional"
    # schedule 'deeppavlov' (DeepPavlov 1.7's epoch, data/schedule.py): its iterator's sampling_mode, and its
    # batch_size, which sets the draws of an epoch: (training examples of all tasks) // iterator_batch_size
    # batches, unless steps_per_epoch gives them in steps (None elsewhere; plain and 8 there)
    sampling: Literal["plain", "uniform", "anneal"] | None = None
    iterator_batch_size: Annotated[int, Field(gt=0)] | None = None
    # schedule 'temperature': p_i ~ n_i ** (1 / T); unset means 2 there (None elsewhere, so a dumped
    # config loads back)
    temperature: Annotated[float, Field(gt=0)] | None = None
    keep_remainder: bool = False  # minbert_round_robin: spread the batches the floor would drop over the epoch
    mode: Literal["pretrain", "finetune"] | None = None  # minBERT presets, see _mode_presets
    lr: Annotated[float, Field(gt=0)] = 5e-5
    # learned task weights (training/balancing.py); their lr is their own: at the encoder's 5e-5 they
    # would move by about 0.25 over a five-thousand-step run, too little to weigh anything
    loss_balancing: Literal["none", "uncertainty"] = "none"
    loss_balancing_lr: Annotated[float, Field(gt=0)] = 1e-2
    head_lr: Annotated[float, Field(gt=0)] | None = None
    # evaluate and save an exponential moving average of the weights (training/averaging.py); 0: the
    # weights as they are
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    # parameters AdamW does not decay: biases and the LayerNorm weights (BERT's recipe); [] decays every
    # parameter, as DeepPavlov does
    weight_decay_exempt: list[Literal["bias", "LayerNorm"]] = Field(default_factory=lambda: ["bias", "LayerNorm"])
    warmup: Annotated[float, Field(ge=0, le=1)] = 0.1
    lr_schedule: Literal["linear", "constant"] = "linear"  # after warm-up: decay to 0, or keep (DeepPavlov)
    gradient_accumulation_steps: Annotated[int, Field(gt=0)] = 1
    clip_norm: Annotated[float, Field(gt=0)] | None = 1.0
    eval_every: Annotated[int, Field(gt=0)] | None = None
    # evaluate at the end of every n-th epoch; None: every epoch unless eval_every is given; 0: never
    # (as eval_every, on top of the evaluation after the last step, which always runs)
    eval_every_epochs: Annotated[int, Field(ge=0)] | None = None
    validate_first: bool = False  # evaluate before the first step: the score to beat, nothing saved
    target_metric: str = "mean"
    patience: Annotated[int, Field(gt=0)] | None = None
    lr_drop_patience: Annotated[int, Field(gt=0)] | None = None
    lr_drop_div: Annotated[float, Field(gt=1)] = 2.0
    min_lr: Annotated[float, Field(ge=0)] = 0.0
    # repeat: divide again after every lr_drop_patience evaluations without improvement, skipping a drop
    # that would go under min_lr; once_per_plateau (DeepPavlov): divide when the evaluations without
    # improvement reach lr_drop_patience, not again until the target improves, and floor at min_lr
    lr_drop: Literal["repeat", "once_per_plateau"] = "repeat"
    lr_drop_reload_best: bool = False  # reload the best saved weights before dividing (DeepPavlov's load_before_drop)
    freeze_encoder: bool = False
    freeze_embeddings: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # fp16 (with a grad scaler) is for CUDA only
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when torch sees a GPU
    length_grouping: bool = True
    compile: bool = False  # torch.compile the encoder (inductor, shapes dynamic); see the README for when it pays
    threads: Annotated[int, Field(gt=0)] | None = None
    dist_timeout: Annotated[float, Field(gt=0)] = 1800.0  # seconds a process waits for the others (torchrun)
    # several processes: gradients all-reduced as they are, or halved to bf16 / fp16 on the wire (PyTorch's
    # DDP communication hooks; lossy: the model drifts from one process's)
    grad_compression: Literal["none", "bf16", "fp16"] = "none"
    # several processes: all-reduce only the word-embedding rows the step's batches touched (exact), or the
    # whole matrix through DDP as every other weight
    embedding_sync: Literal["touched_rows", "all"] = "touched_rows"
    progress: bool = True
    checkpoint_every: Annotated[int, Field(gt=0)] | None = None  # steps; checkpoints are also written at every evaluation
    keep_checkpoints: Annotated[int, Field(gt=0)] = 2
    on_nonfinite_loss: Literal["skip", "stop"] = "skip"
    # live views beside metrics.jsonl (training/loggers.py): TensorBoard into RUN/tensorboard, an MLflow run into
    # mlflow_uri (unset: a SQLite store in RUN/mlflow; MLflow 3 refuses plain-folder stores by default)
    loggers: list[str] = Field(default_factory=list)
    mlflow_uri: str | None = None

    @field_validator("loggers", mode="before")
    @classmethod
    def _one_logger_is_a_list(cls, value):
        return [value] if isinstance(value, str) else value  # --set training.loggers=tensorboard

    @field_validator("loggers")
    @classmethod
    def _known_loggers(cls, value: list[str]):
        for name in value:
            if name not in LOGGERS:
                guess = difflib.get_close_matches(name, LOGGERS, n=1)
                hint = f"did you mean '{guess[0]}'? " if guess else ""
                raise ValueError(f"unknown logger '{name}'; {hint}known loggers: {', '.join(LOGGERS)}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _mlflow_uri_needs_mlflow(self):
        if self.mlflow_uri is not None and "mlflow" not in self.loggers:
            raise ValueError("mlflow_uri applies to the mlflow logger; add mlflow to training.loggers "
                             "or remove mlflow_uri")
        return self

    @model_validator(mode="after")
    def _mode_presets(self):
        """minBERT's modes: pretrain = frozen encoder, lr 1e-3; finetune = everything trains, lr 1e-5.
        A key set explicitly in the config wins over the preset."""
        if self.mode:
            preset = {"pretrain": {"freeze_encoder": True, "lr": 1e-3},
                      "finetune": {"freeze_encoder": False, "lr": 1e-5}}[self.mode]
            for key, value in preset.items():
                if key not in self.model_fields_set:
                    setattr(self, key, value)
        return self

    @model_validator(mode="after")
    def _temperature_needs_its_schedule(self):
        if self.temperature is not None and self.schedule != "temperature":
            raise ValueError(f"temperature applies to schedule 'temperature', not '{self.schedule}'; "
                             "set schedule: temperature or remove temperature")
        if self.schedule == "temperature" and self.temperature is None:
            self.temperature = 2.0
        return self

    @model_validator(mode="after")
    def _deeppavlov_schedule_keys(self):
        for key in ("sampling", "iterator_batch_size"):
            if getattr(self, key) is not None and self.schedule != "deeppavlov":
                raise ValueError(f"{key} applies to schedule 'deeppavlov', not '{self.schedule}'; set schedule: "
                                 f"deeppavlov or remove {key}")
        if self.schedule == "deeppavlov":
            self.sampling = self.sampling or "plain"
            self.iterator_batch_size = self.iterator_batch_size or 8  # DeepPavlov's default
        return self

    @model_validator(mode="after")
    def _minbert_schedule(self):
        if self.schedule == "minbert_round_robin" and self.gradient_accumulation_steps != 1:
            raise ValueError("schedule 'minbert_round_robin' is a fixed sequence of batches an epoch; "
                             "set gradient_accumulation_steps: 1 (or use batch sizes instead)")
        return self

    @field_validator("target_metric")
    @classmethod
    def _target(cls, value: str, info: ValidationInfo):
        if value != "mean" and ":" in value:
            check_metric_name(value, _import_metrics(info))
        return value


class Config(_Strict):
    backbone: str = "minilm"
    backbone_impl: Literal["hf", "minbert"] = "hf"  # transformers' AutoModel, or our own BERT (modeling/minbert.py)
    data_dir: str = "."
    run_dir: str | None = None
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42  # what numpy's and torch's generators take
    max_length: Annotated[int, Field(gt=8)] = 128
    tasks: dict[str, TaskConfig]
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, tasks):
        if not tasks:
            raise ValueError("no tasks; add at least one task under tasks:")
        for name in tasks:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
                raise ValueError(f"task name '{name}' must be letters, digits, '_' or '-'")
        return tasks

    @model_validator(mode="after")
    def _target_names_a_task(self):
        target = self.training.target_metric
        if target != "mean" and ":" not in target:
            task, _, metric = target.partition(".")
            if task not in self.tasks:
                raise ValueError(
                    f"training.target_metric '{target}' names no task; use 'mean', a task name "
                    f"({', '.join(self.tasks)}), 'task.metric' or 'module:function'"
                )
            if metric:
                try:
                    check_metric_name(metric)
                    check_metric_fits(metric, self.tasks[task].type)
                except ValueError as err:
                    raise ValueError(f"training.target_metric '{target}': {err}") from None
        return self

    @model_validator(mode="after")
    def _stride_fits_a_window(self):
        for name, task in self.tasks.items():
            length = task.max_length or self.max_length
            # a window holds max_length sub-tokens less [CLS] and [SEP]; repeating all of them would never advance
            if task.window_stride is not None and task.window_stride >= length - 2:
                raise ValueError(f"tasks.{name}.window_stride: {task.window_stride} sub-tokens repeated per window, "
                                 f"but a window holds {length - 2} (max_length {length} less 2 special tokens); "
                                 f"give a smaller stride, e.g. {length // 2}")
        return self

    def data_path(self, relative: str) -> Path:
        return (Path(self.data_dir) / relative).resolve()

    def batch_size(self, task: str) -> int:
        return self.tasks[task].batch_size or self.training.batch_size

    def length_grouping(self, task: str) -> bool:
        own = self.tasks[task].length_grouping
        return self.training.length_grouping if own is None else own

    def max_length_for(self, task: str) -> int:
        return self.tasks[task].max_length or self.max_length

    def window_stride(self, task: str, max_length: int | None = None) -> int | None:
        """Sub-tokens each window of a long text repeats from the one before (the tokenizers' `stride`),
        or None when the task reads only the first `max_length` sub-tokens (`long_text: truncate`, and
        every task other than sequence labeling). `max_length`: the windows' length, if not the task's."""
        spec = self.tasks[task]
        if not registry.get(spec.type).windows or spec.long_text != "window":
            return None
        return spec.window_stride or (max_length or self.max_length_for(task)) // 2

    def dump(self) -> dict:
        # every key, nulls included: `clip_norm: null` must not come back as the default 1.0
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- loading


class _DuplicateKey(Exception):
    def __init__(self, key, line: int | None = None, first: int | None = None):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first

    def message(self, lines: bool = True) -> str:
        where = f"line {self.line}: " if self.line and lines else ""
        first = f" (already on line {self.first})" if self.first and lines else ""
        return (f"{where}duplicate key '{self.key}'{first}; a key may appear only once in a mapping "
                "(otherwise the last one silently wins): rename or remove one")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a config must not (a second task named
    like the first would replace it silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults`: explicit keys may override merged ones
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, line, seen[key])
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    continue
        return super().construct_mapping(node, deep)


def _unique_pairs(pairs: list) -> dict:
    """json's object_pairs_hook: refuse a key repeated within one object."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _json_duplicate(text: str) -> _DuplicateKey | None:
    """The first key repeated within one object of a valid JSON text, with its two lines
    (json's hook knows the key, not where it is)."""
    stack: list[dict | None] = []  # per open container: the keys seen so far (objects) or None (arrays)
    expect_key, line, i = False, 1, 0
    while i < len(text):
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "{":
            stack.append({})
            expect_key = True
        elif c == "[":
            stack.append(None)
            expect_key = False
        elif c in "}]":
            stack.pop()
            expect_key = False
        elif c == ",":
            expect_key = bool(stack) and stack[-1] is not None
        elif c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if expect_key:
                key, keys = json.loads(text[i:j + 1]), stack[-1]
                if key in keys:
                    return _DuplicateKey(key, line, keys[key])
                keys[key] = line
                expect_key = False
            i = j
        i += 1
    return None


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of the config
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not valid UTF-8 ({err.reason}); re-save the config as UTF-8") from None
    try:
        if kind == "JSON":
            try:
                raw = json.loads(text, object_pairs_hook=_unique_pairs)
            except _DuplicateKey as dup:
                json.loads(text)  # a syntax error later in the file is reported first, as it would be anyway
                raise _json_duplicate(text) or dup from None
        else:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except _DuplicateKey as dup:
        raise UserError(f"{path}: {dup.message()}") from None
    except RecursionError:  # the parsers recurse per level: [[[[... 100,000 deep exhausts the stack
        raise UserError(f"{path}: nested too deeply to read as {kind}; a config is a mapping a few levels "
                        "deep (tasks, training, columns)") from None
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        detail = getattr(err, "problem", None) or getattr(err, "msg", None) or type(err).__name__
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else f"line {getattr(err, 'lineno', '?')}"
        raise UserError(f"{path}: {where}: not valid {kind}: {detail}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping with at least a 'tasks' key")
    return raw


def _parent(raw: dict, key: str, where: str) -> tuple[dict, str]:
    """The mapping a dotted key's last part lives in (made where missing), and that part."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{where}: '{part}' is not a mapping in the config")
        node = child
    return node, parts[-1]


def apply_values(raw: dict, values: dict) -> dict:
    """{"training.lr": 3e-5} -> raw['training']['lr'] = 3e-5: Python values, set as they are."""
    raw = copy.deepcopy(raw)
    for key, value in values.items():
        node, last = _parent(raw, key, f"overrides[{key!r}]")
        node[last] = copy.deepcopy(value)
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`training.lr=3e-5` -> raw['training']['lr'] = 3e-5 (values parsed as YAML scalars)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.lr=3e-5")
        node, last = _parent(raw, key, f"--set {item!r}")
        try:
            node[last] = yaml.load(value, Loader=_UniqueKeyLoader) if value else ""
        except _DuplicateKey as dup:
            raise UserError(f"--set {item!r}: {dup.message(lines=False)}") from None
        except yaml.YAMLError as err:
            detail = getattr(err, "problem", None) or type(err).__name__
            raise UserError(f"--set {item!r}: the value is not valid YAML ({detail}); e.g. "
                            "--set training.lr=3e-5 or --set 'tasks.t.metric=[accuracy, f1]'") from None
    return raw


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute_variables(raw: dict) -> dict:
    """Replace `${NAME}`, `${NAME:-default}` and DeepPavlov's `{NAME}` in every string.

    Values come from the config's `variables` block first (which may itself use variables and the
    environment), then from the environment.
    """
    raw = copy.deepcopy(raw)
    declared = raw.pop("variables", None) or {}
    if not isinstance(declared, dict):
        raise UserError("variables: must be a mapping of NAME: value")
    values: dict[str, str] = {}

    def lookup(name: str, default: str | None, where: str) -> str:
        if name in values:
            return values[name]
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise UserError(
            f"{where}: variable '{name}' is not defined; add it under variables: or set the environment variable {name}"
        )

    def sub(text: str, where: str) -> str:
        def one(m: re.Match) -> str:
            if m.group(1):
                return lookup(m.group(1), m.group(2), where)
            return lookup(m.group(3), None, where)

        return _VAR.sub(one, text)

    for name, value in declared.items():
        values[str(name)] = sub(str(value), f"variables.{name}")

    def walk(node, where: str):
        if isinstance(node, str):
            return sub(node, where)
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    return walk(raw, "")


def merge_task_defaults(raw: dict) -> dict:
    """DeepPavlov's multitask_reader: a deep copy of `task_defaults`, then the task's own keys on top;
    `use_task_defaults: false` makes a task ignore the defaults."""
    raw = copy.deepcopy(raw)
    tasks = raw.get("tasks")
    if not isinstance(tasks, dict):
        if "tasks" not in raw:
            raise UserError("tasks: missing; add a tasks: mapping with one entry per task")
        raise UserError("tasks: must be a mapping of task name to task settings")
    defaults = tasks.pop("task_defaults", None) or {}
    if not isinstance(defaults, dict):
        raise UserError("tasks.task_defaults: must be a mapping of settings shared by every task")
    merged = {}
    for name, params in tasks.items():
        if not isinstance(params, dict):
            raise UserError(f"tasks.{name}: must be a mapping of settings (type, train, dev, columns, ...)")
        params = dict(params)
        use = params.pop("use_task_defaults", True)
        if not isinstance(use, bool):
            raise UserError(f"tasks.{name}.use_task_defaults: must be true or false, not {use!r}")
        if use:
            task = copy.deepcopy(defaults)
            task.update(params)
        else:
            task = params
        merged[name] = task
    raw["tasks"] = merged
    return raw


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model whose fields the key at `loc` belongs to (for 'did you mean' hints)."""
    model: Any = Config
    for part in loc[:-1]:
        if model is Config and part == "tasks":
            model = dict[str, TaskConfig]
            continue
        if typing.get_origin(model) is dict:
            model = typing.get_args(model)[1]
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        if typing.get_origin(ann) in (Union, types.UnionType):
            ann = next((a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
        model = ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _user_loc(loc: tuple, raw, kind: str) -> tuple:
    """The key path as written in the config: pydantic's union-member tags ('int', 'str', ...) name types,
    not keys, so parts the config does not hold are dropped (except the key a 'missing' error names)."""
    out, node = [], raw
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        elif not (kind == "missing" and i == len(loc) - 1):
            continue
        out.append(part)
    return tuple(out)


def _format_error(err: dict, raw: dict | None = None) -> str:
    kind = err["type"]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    if raw is not None:
        loc = _user_loc(loc, raw, kind)
    where = ".".join(str(p) for p in loc) or "config"
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = list(model.model_fields) if model else []
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        return f"{where}: unknown key; {hint}allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return f"{where}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check of the whole config: its message names the keys itself
        return msg
    if kind in ("literal_error", "enum") or "type" in kind or kind.endswith("_parsing"):
        return f"{where}: {msg} (got {err.get('input')!r})"
    return f"{where}: {msg}"


def validate(raw: dict, source: str = "config", import_metrics: bool = True) -> Config:
    """`import_metrics=False` checks `module:function` metrics by form only, without importing them."""
    try:
        return Config.model_validate(raw, context={"import_metrics": import_metrics})
    except ValidationError as exc:
        messages = list(dict.fromkeys(_format_error(e, raw) for e in exc.errors()))
        # a value that fits no member of a union (int | str) yields one error per member: count places, not members
        places = {m.split(":", 1)[0] for m in messages}
        more = f" (and {len(places) - 1} more)" if len(places) > 1 else ""
        raise UserError(f"{source}: {messages[0]}{more}") from None


def check_data_files(cfg: Config, source: str = "config") -> None:
    for name, task in cfg.tasks.items():
        if task.teacher and not (Path(task.teacher) / "model" / "heads.safetensors").is_file():
            raise UserError(f"{source}: tasks.{name}.teacher: no trained model in {task.teacher} (a run dir of "
                            "mtbert train, relative to the current directory); train the teacher first")
        if task.format == "hf":
            continue
        for split in ("train", "dev", "test"):
            rel = getattr(task, split)
            if rel and not cfg.data_path(rel).is_file():
                raise UserError(
                    f"{source}: tasks.{name}.{split}: file not found: {cfg.data_path(rel)} "
                    f"(paths are relative to data_dir '{cfg.data_dir}'; set data_dir or MTBERT_DATA)"
                )


def check_backbone(cfg: Config, source: str = "config") -> None:
    """What the config asks of the encoder, checked against its config.json (no weights are loaded), so a
    mismatch is told before any data is read rather than at the first step or the first dev evaluation."""
    from mtbert.modeling.encoder import encoder_config, has_pooler, position_limit

    try:
        encoder = encoder_config(cfg.backbone)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    limit = position_limit(encoder)
    lengths = {"max_length": cfg.max_length} | {f"tasks.{n}.max_length": t.max_length
                                                 for n, t in cfg.tasks.items() if t.max_length}
    for key, length in lengths.items():
        if limit is not None and length > limit:
            raise UserError(f"{source}: {key}: {length} is more than the {limit} positions backbone "
                            f"'{cfg.backbone}' has ({encoder.model_type}); use {limit} or less")
    pooled = [n for n, t in cfg.tasks.items() if t.pooling in ("pooler", "dp_pooler")]
    if pooled and has_pooler(encoder, cfg.backbone_impl) is False:
        raise UserError(f"{source}: tasks.{pooled[0]}.pooling: '{cfg.tasks[pooled[0]].pooling}' needs an encoder with a pooler layer, and "
                        f"backbone '{cfg.backbone}' ({encoder.model_type}) has none; use pooling: cls or mean")


def load_raw(path: str | Path, overrides: list[str] | None = None, values: dict | None = None) -> dict:
    """The config as a dict, after overrides (--set strings, then Python `values`), variables and
    task_defaults, before validation."""
    return resolve_raw(apply_values(apply_overrides(read_config_file(path), overrides or []), values or {}), path)


def resolve_raw(raw: dict, source: str | Path) -> dict:
    """Variables substituted and task_defaults merged (`source` names the config in messages)."""
    try:
        return merge_task_defaults(substitute_variables(raw))
    except UserError as err:
        raise UserError(f"{source}: {err}") from None


def default_run_dir(path: str | Path | None = None) -> str:
    """Where a run goes when neither the config nor the caller says: runs/<config file name>, or runs/mtbert
    for a config given in Python. The one default (config.finish and training.checkpoint.place_run use it)."""
    return str(Path("runs") / (Path(path).stem if path is not None else "mtbert"))


def finish(raw: dict, path: str | Path, check_files: bool = True) -> Config:
    """Validate a raw config and resolve its paths."""
    cfg = validate(raw, str(path))
    cfg.data_dir = str(Path(cfg.data_dir).resolve())
    if cfg.run_dir is None:
        cfg.run_dir = default_run_dir(path)
    if check_files:  # what lies outside the config: the backbone, then the data files
        check_backbone(cfg, str(path))
        check_data_files(cfg, str(path))
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None, check_files: bool = True) -> Config:
    return finish(load_raw(path, overrides), path, check_files)


__all__ = ["Config", "TaskConfig", "TrainingConfig", "Columns", "TASK_TYPES", "load_config", "validate"]
