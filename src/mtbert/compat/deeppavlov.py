"""Bring your DeepPavlov config: a DeepPavlov multitask config -> an mtbert config, and DeepPavlov's
output shapes for predictions.

`convert(raw, source)` returns the raw mtbert config (the dict a YAML config holds before validation;
`mtbert.config.finish` validates it). Every key mtbert cannot honour is collected and raised in one
`UserError`; nothing is dropped silently. Where DeepPavlov's behaviour is a trap (the model saved only
after a validation, unseeded task sampling), mtbert does the right thing
and says so once in the log. docs/deeppavlov.md is the user's guide to all of it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import yaml

from mtbert.compat import dp_metrics
from mtbert.compat.dp_chainer import (
    GOLD,
    ID_LISTS,
    IDS,
    PROBAS,
    TAGS,
    VALUES,
    Chain,
    read_chain,
)
from mtbert.compat.dp_readers import (
    expand,
    iterator_tasks,
    merge_task_defaults,
    task_data,
    unreachable_hub_tasks,
)
from mtbert.compat.findings import Findings
from mtbert.errors import InputError, UserError
from mtbert.inference.common import deeppavlov_example

log = logging.getLogger("mtbert")

TOP_KEYS = {"dataset_reader", "dataset_iterator", "chainer", "train", "metadata"}
METADATA_KEYS = {"variables", "download", "requirements", "labels"}
ITERATOR_KEYS = {"class_name", "tasks", "task_defaults", "num_train_epochs", "steps_per_epoch", "batch_size",
                 "sampling_mode", "gradient_accumulation_steps", "seed", "use_label_name", "label", "features",
                 "iterator_class_name", "one_element_tuples"}
TRAIN_KEYS = {"class_name", "epochs", "batch_size", "max_batches", "metrics", "validation_patience",
              "val_every_n_epochs", "val_every_n_batches", "log_every_n_epochs", "log_every_n_batches",
              "log_on_k_batches", "validate_first", "show_examples", "evaluation_targets", "pytest_max_batches",
              "pytest_batch_size", "metric_optimization", "train_metrics", "tensorboard_log_dir", "max_test_batches"}
SAMPLING_MODES = ("plain", "uniform", "anneal")  # the multitask_iterator's sampling_mode
# Where a converted config keeps an mtbert default that differs from DeepPavlov, `convert` writes the key
# explicitly and `to_yaml` heads it with this comment (key path -> how DeepPavlov does it)
DIFFERS = {
    "training.precision": "differs from DeepPavlov, which trains in fp32 (precision: fp32); auto is bf16 "
                          "where the hardware has it",
    "training.weight_decay_exempt": "differs from DeepPavlov, which decays every parameter, LayerNorm weights "
                                    "too (weight_decay_exempt: [])",
    "tasks.label_all_subtokens": "differs from DeepPavlov, which trains every sub-token of a word on its tag "
                                 "(label_all_subtokens: true)",
    "tasks.bias_init": "differs from DeepPavlov, whose regression output bias starts as torch draws it "
                       "(bias_init: default)",
}
# train.epochs -1 without max_batches: DeepPavlov trains until validation_patience stops it; mtbert stops there
# too, or after this many epochs (a safety cap DeepPavlov does not have)
UNTIL_PATIENCE_EPOCHS = 100
_UNTIL_PATIENCE = object()  # _steps' mark for _training, which knows the validations
# DeepPavlov's metric names -> mtbert's (a task metric taking one task's gold and predictions)
METRICS = {"accuracy": "accuracy", "f1": "f1", "f1_macro": "f1_macro", "matthews_correlation": "mcc",
           "pearson_correlation": "pearson", "spearman_correlation": "spearman", "roc_auc": "roc_auc",
           "ner_f1": "ner_f1", "ner_token_f1": f"{dp_metrics.__name__}:ner_token_f1",
           "f1_weighted": f"{dp_metrics.__name__}:f1_weighted"}


# ---------------------------------------------------------------- recognising and reading


def is_deeppavlov_config(raw) -> bool:
    """DeepPavlov's shape: a chainer, or a multitask dataset_reader/iterator, and no mtbert `tasks` key."""
    if not isinstance(raw, dict) or "tasks" in raw:
        return False
    if isinstance(raw.get("chainer"), dict):
        return True
    return any(isinstance(raw.get(k), dict) and str(raw[k].get("class_name", "")).startswith("multitask_")
               for k in ("dataset_reader", "dataset_iterator"))


def resolve_variables(raw: dict, source: str = "config") -> dict:
    """DeepPavlov's `metadata.variables`: `{NAME}` in any string, in the order the variables are declared.

    As in DeepPavlov, an environment variable `DP_<NAME>` replaces the declared value; a string that is
    exactly `{NAME}` takes the variable's value with its type (a number stays a number); other strings
    are filled with `str.format`."""
    metadata = raw.get("metadata") or {}
    declared = metadata.get("variables") or {}
    if not isinstance(declared, dict):
        raise UserError(f"{source}: metadata.variables: must be a mapping of NAME: value")
    values: dict = {}
    if "DP_DEEPPAVLOV_PATH" in os.environ:
        values["DEEPPAVLOV_PATH"] = os.environ["DP_DEEPPAVLOV_PATH"]
    for name, value in declared.items():
        value = os.environ.get(f"DP_{name}", value)
        values[name] = _fill(value, values, f"metadata.variables.{name}", source)

    def walk(node, where: str):
        if isinstance(node, str):
            return _fill(node, values, where, source)
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    body = walk({k: v for k, v in raw.items() if k != "metadata"}, "")
    if isinstance(metadata, dict):
        body["metadata"] = {**metadata, "variables": values}
    return body


def _fill(value, values: dict, where: str, source: str):
    if not isinstance(value, str):
        return value
    exact = re.fullmatch(r"\{(\w+)\}", value)
    if exact and exact.group(1) in values:
        return values[exact.group(1)]
    try:
        return value.format(**values)
    except KeyError as err:
        name = err.args[0]
        raise UserError(f"{source}: {where}: variable '{name}' is not defined; declare it in metadata.variables "
                        f"(or set DP_{name} for a declared one)") from None
    except (ValueError, IndexError, AttributeError) as err:
        raise UserError(f"{source}: {where}: {value!r} is not a valid DeepPavlov template ({err}); "
                        "write literal braces as {{ and }}") from None


def is_inference_only(dp: dict) -> bool:
    return not any(k in dp for k in ("dataset_reader", "dataset_iterator", "train"))


def evaluation_targets(raw: dict) -> list[str]:
    """The splits DeepPavlov evaluates after training (`train.evaluation_targets`, default valid and test)."""
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    targets = train.get("evaluation_targets", ["valid", "test"])
    return [t for t in targets if isinstance(t, str)] if isinstance(targets, list) else []


# ---------------------------------------------------------------- converting


def convert(raw: dict, source: str = "config", check_data: bool = False) -> dict:
    """A DeepPavlov multitask config -> mtbert's raw config (validate it with mtbert.config.finish).

    `check_data`: also refuse the tasks whose files are not there or whose Hugging Face hub dataset cannot
    be loaded here (offline, or no network), with the CoNLL downloads that are missing (always refused),
    so one error names every task to fix and how."""
    dp = resolve_variables(raw, source)
    if is_inference_only(dp):
        raise UserError(f"{source}: an inference-only DeepPavlov config (no dataset_reader, dataset_iterator or "
                        "train): nothing to train; load it for prediction with "
                        "mtbert.compat.deeppavlov.build_model(config)")
    f = Findings()
    f.check_keys(dp, "", TOP_KEYS)
    if isinstance(dp.get("metadata"), dict):
        f.check_keys(dp["metadata"], "metadata", METADATA_KEYS)
        if dp["metadata"].get("download"):
            f.note("metadata.download: mtbert downloads nothing; backbones come from the hub or a local folder")
    chain = read_chain(dp, f)
    sections = [k for k in ("dataset_reader", "dataset_iterator", "train") if not isinstance(dp.get(k), dict)]
    for key in sections:
        f.problem(key, "missing; a training config needs dataset_reader, dataset_iterator and train")
    if chain is None or sections:  # nothing else can be mapped without the model's tasks and the data
        f.raise_if_any(source)
    out = {"backbone": _backbone(chain, f), "data_dir": "."}
    save_path = chain.transformer.get("save_path")
    if save_path:
        out["run_dir"] = expand(save_path)
    out.update(seed=_seed(dp, chain, f), max_length=_preprocessor(chain, f), tasks=_tasks(dp, raw, chain, f))
    if check_data:
        f.hub_down, unreachable = unreachable_hub_tasks(f.hub)
        for task, whys in [*f.absent.items(), *((t, [why]) for t, why in unreachable.items())]:
            for why in whys:
                f.missing_data(task, why)
    if chain.transformer.get("load_path") not in (None, save_path):
        f.note("multitask_transformer.load_path differs from save_path: mtbert trains from the backbone into "
               "save_path; load_path is where build_model() loads a trained model from")
    out["training"] = _training(dp, chain, f)
    _metrics(dp, chain, out, f)
    _trap_notes(dp, chain, out, f)
    f.raise_if_any(source, chain.tasks)
    f.log_notes()
    return out


def _backbone(chain: Chain, f: Findings) -> str:
    model = chain.transformer.get("backbone_model", "bert-base-cased")  # DeepPavlov's default
    vocab = chain.preprocessor.get("vocab_file")
    if vocab is not None and vocab != model:
        f.problem(f"{chain.preprocessor_at}.vocab_file",
                  f"{vocab!r} differs from backbone_model {model!r}; mtbert uses the backbone's own tokenizer")
    if "do_lower_case" in chain.preprocessor:
        f.note("do_lower_case: mtbert lower-cases as the backbone's tokenizer does (uncased models lower-case)")
    return expand(model) if str(model).startswith("~") else model


def _seed(dp: dict, chain: Chain, f: Findings) -> int:
    iterator = dp.get("dataset_iterator") or {}
    seed = iterator.get("seed", chain.transformer.get("seed", 42))
    return f.number(seed, "dataset_iterator.seed") or 0


def _preprocessor(chain: Chain, f: Findings) -> int:
    """Checks the multitask_pipeline_preprocessor; returns max_length."""
    p = chain.preprocessor
    where = chain.preprocessor_at
    f.expect(p, "token_masking_prob", where, (0, 0.0), "mtbert does not mask tokens")
    f.expect(p, "return_features", where, (True,), "the multitask_transformer needs features")
    if p.get("max_subword_length") is not None:
        f.note("max_subword_length: mtbert keeps every sub-token of a word within max_length; a word's tag is "
               "predicted on its first sub-token")
    length = f.number(p.get("max_seq_length", 512), f"{where}.max_seq_length")  # DeepPavlov's default
    if length is not None and length <= 8:
        f.problem(f"{where}.max_seq_length", f"{length} is too short for mtbert (more than 8 sub-tokens)")
    return length or 512


def _tasks(dp: dict, raw: dict, chain: Chain, f: Findings) -> dict:
    reader, iterator = dp.get("dataset_reader") or {}, dp.get("dataset_iterator") or {}
    # the reader settings as written, to tell which DP_<NAME> variable points a task's path elsewhere
    written = raw.get("dataset_reader")
    templates = merge_task_defaults(written, "dataset_reader", Findings()) if isinstance(written, dict) else {}
    f.expect(reader, "class_name", "dataset_reader", ("multitask_reader",), "mtbert imports multitask configs")
    f.check_keys(reader, "dataset_reader", {"class_name", "tasks", "task_defaults"})
    f.expect(iterator, "class_name", "dataset_iterator", ("multitask_iterator",), "mtbert imports multitask configs")
    f.check_keys(iterator, "dataset_iterator", ITERATOR_KEYS)
    readers = merge_task_defaults(reader, "dataset_reader", f)
    iterators = iterator_tasks(iterator, f)
    for section, names in (("dataset_reader", readers), ("dataset_iterator", iterators)):
        if names and list(names) != list(chain.tasks):
            f.problem(f"{section}.tasks", f"{', '.join(names)} differ from the multitask_transformer's tasks "
                      f"({', '.join(chain.tasks)}); name the same tasks in the same order")
    tasks = {}
    for name, spec in chain.tasks.items():
        if not isinstance(spec, dict) or name not in readers:
            continue
        task = {"type": spec.get("type")}
        task.update(task_data(name, spec.get("type"), readers[name], iterators.get(name, {}), f,
                              templates.get(name, {})))
        _options(name, spec, task, chain, f)
        if spec.get("weight") is not None:
            task["class_weights"] = spec["weight"]
        if chain.transformer.get("dropout") is not None:
            task["dropout"] = f.number(chain.transformer["dropout"], f"{chain.transformer_at}.dropout", integer=False)
        if task["type"] == "sequence_labeling":
            task["label_all_subtokens"] = False  # see DIFFERS: the first sub-token only
        elif task["type"] in ("classification", "regression", "multiple_choice"):
            task["pooling"] = "dp_pooler"  # BertForMultiTask's one new Linear + tanh on [CLS] for every task
        if task["type"] == "regression":
            task["bias_init"] = "target_mean"  # see DIFFERS: mtbert starts the output at the mean target
        tasks[name] = task
    return tasks


def _options(name: str, spec: dict, task: dict, chain: Chain, f: Findings) -> None:
    """`options`: the number of classes (or choices); `#<vocab id>.len` means "count them in train"."""
    where = f"{chain.transformer_at}.tasks.{name}.options"
    options = spec.get("options", 1)
    if isinstance(options, str) and options.startswith("#"):
        ref = re.fullmatch(r"#([\w\-]+)\.len", options)
        if not ref or ref.group(1) not in chain.vocabs:
            f.problem(where, f"{options!r} does not reference the .len of a simple_vocab in the pipe")
        return  # the label set is built from train, like DeepPavlov's vocabulary
    n = f.number(options, where)
    if n is None:
        return
    if task["type"] == "classification":
        if not task.get("labels"):
            task["num_labels"] = n  # checked against the classes found in train
        elif len(task["labels"]) != n:
            f.problem(where, f"{n}, but the dataset has {len(task['labels'])} classes ({', '.join(task['labels'])})")
    elif task["type"] == "regression" and n != 1:
        f.problem(where, f"{n}; a regression head has one output")
    elif task["type"] == "sequence_labeling":
        f.note(f"{where}: the tag set of task {name} is read from its train data ({n} given)")


def _training(dp: dict, chain: Chain, f: Findings) -> dict:
    it, tr = dp.get("dataset_iterator") or {}, dp.get("train") or {}
    f.check_keys(tr, "train", TRAIN_KEYS)
    f.expect(tr, "class_name", "train", (None, "torch_trainer", "nn_trainer"), "mtbert has its own trainer")
    f.expect(tr, "show_examples", "train", (None, False), "see mtbert predict")
    for bad in set(evaluation_targets(dp)) - {"valid", "test"}:
        f.problem("train.evaluation_targets", f"{bad!r} (mtbert evaluates valid and test)")
    t = _steps(it, tr, chain, f)
    t.update(_optimizer(chain, f))
    patience = tr.get("validation_patience", 5)  # DeepPavlov's default; null: no early stopping
    t["patience"] = None if patience is None else f.number(patience, "train.validation_patience")
    t.update(_evaluations(tr, t, f))
    if t.get("epochs") is _UNTIL_PATIENCE:
        t["epochs"] = _until_patience(tr.get("epochs", it.get("num_train_epochs")), t, f)
    t.update(_logging_keys(tr, f))
    if any(k in tr for k in ("log_every_n_epochs", "log_every_n_batches", "log_on_k_batches")):
        f.note("log_every_n_*: mtbert logs the training loss per task with every evaluation (metrics.jsonl) "
               "and live in the progress bar")
    return {k: v for k, v in t.items() if v is not None or k == "clip_norm"}


def _until_patience(epochs, t: dict, f: Findings) -> int | None:
    """`train.epochs: -1` (or 0) without `max_batches`: DeepPavlov's NNTrainer has no epoch limit and stops only
    when `validation_patience` validations in a row do not improve the first metric. mtbert trains the same
    way (training.patience, the same validations) up to UNTIL_PATIENCE_EPOCHS epochs, a cap DeepPavlov does
    not have: a run whose dev score keeps creeping up ends there instead of running for days."""
    validates = t.get("eval_every") or t.get("eval_every_epochs")
    if not t.get("patience") or not validates:
        why = ("no validation_patience" if not t.get("patience") else
               "no validation during training (val_every_n_epochs / val_every_n_batches)")
        f.problem("train.epochs", f"{epochs} with {why} never stops in DeepPavlov; give the number of epochs, "
                  "or train.max_batches" + ("" if t.get("patience") else ", or validation_patience"))
        return None
    f.note(f"train.epochs {epochs}: training stops when {t['patience']} validations in a row do not improve the "
           f"target (validation_patience), as in DeepPavlov, and at the latest after {UNTIL_PATIENCE_EPOCHS} epochs "
           "(mtbert's cap; --set training.epochs=N moves it)", logging.WARNING)
    return UNTIL_PATIENCE_EPOCHS


def _logging_keys(tr: dict, f: Findings) -> dict:
    """train_metrics, tensorboard_log_dir and max_test_batches: what DeepPavlov logs and how much it evaluates."""
    from mtbert.config import TrainingConfig

    t: dict = {}
    if "train_metrics" in tr:
        f.note("train.train_metrics: accepted and ignored; DeepPavlov scores them on training batches for its log, "
               "mtbert logs the training loss per task (metrics.jsonl) and scores metrics on dev", logging.WARNING)
    if tr.get("tensorboard_log_dir"):
        if "loggers" in TrainingConfig.model_fields:  # training.loggers: TensorBoard events beside metrics.jsonl
            t["loggers"] = ["tensorboard"]
            f.note(f"train.tensorboard_log_dir: mtbert writes the TensorBoard events into the run dir, not "
                   f"{tr['tensorboard_log_dir']}")
        else:
            f.problem("train.tensorboard_log_dir", "this mtbert has no TensorBoard logging (training.loggers)")
    if tr.get("max_test_batches", -1) not in (-1, None):
        f.number(tr["max_test_batches"], "train.max_test_batches")
        f.note("train.max_test_batches: accepted and ignored; mtbert scores the whole dev split every time, so "
               "the scores early stopping compares are on the same examples", logging.WARNING)
    return t


def _steps(it: dict, tr: dict, chain: Chain, f: Findings) -> dict:
    """How long and in what order: accumulation, epochs, batch size, task sampling, steps."""
    tf, where = chain.transformer, chain.transformer_at
    accum = [f.number(it.get("gradient_accumulation_steps", 1), "dataset_iterator.gradient_accumulation_steps"),
             f.number(tf.get("gradient_accumulation_steps", 1), f"{where}.gradient_accumulation_steps")]
    if accum[0] != accum[1]:
        f.problem(f"{where}.gradient_accumulation_steps",
                  f"{accum[1]} but dataset_iterator has {accum[0]}; mtbert accumulates one task's batches per step")
    t: dict = {"gradient_accumulation_steps": accum[1] or 1}
    epochs = tr.get("epochs", it.get("num_train_epochs"))
    if epochs is not None:
        t["epochs"] = f.number(epochs, "train.epochs")
        if t["epochs"] is not None and t["epochs"] <= 0:
            # DeepPavlov: no epoch limit (NNTrainer checks max_epochs only when positive); training ends when
            # max_batches or validation_patience stops it. Without max_batches, _until_patience sets the cap.
            del t["epochs"]
            if tr.get("max_batches", -1) in (-1, None):
                t["epochs"] = _UNTIL_PATIENCE  # until validation_patience stops it: _training sets mtbert's cap
        if "num_train_epochs" in it and \
                f.number(it["num_train_epochs"], "dataset_iterator.num_train_epochs") != t.get("epochs"):
            f.note("dataset_iterator.num_train_epochs differs from train.epochs: mtbert anneals over train.epochs")
    batch_size = tr.get("batch_size", it.get("batch_size"))
    if batch_size is not None:
        batch_size = f.number(batch_size, "train.batch_size")
    if batch_size is not None and t["gradient_accumulation_steps"]:
        # DeepPavlov's iterator cuts each batch into gradient_accumulation_steps passes of batch_size // steps
        # examples (MultiTaskIterator.gen_batches); mtbert's batch_size is the pass's
        t["batch_size"] = batch_size // t["gradient_accumulation_steps"]
        if not t["batch_size"]:
            f.problem("train.batch_size", f"{batch_size} is smaller than gradient_accumulation_steps "
                      f"({t['gradient_accumulation_steps']}): DeepPavlov's passes would hold no examples")
    # DeepPavlov's epoch: random draws, a task that ran out skipped (mtbert.data.schedule.DeepPavlovSchedule)
    t["schedule"] = "deeppavlov"
    t["sampling"] = it.get("sampling_mode", "plain")
    if t["sampling"] not in SAMPLING_MODES:
        f.problem("dataset_iterator.sampling_mode", f"{t['sampling']!r} (use plain, uniform or anneal)")
    t["iterator_batch_size"] = f.number(it.get("batch_size", 8), "dataset_iterator.batch_size")
    steps = it.get("steps_per_epoch", tf.get("steps_per_epoch"))
    if steps:  # DeepPavlov counts batches; mtbert counts optimiser steps of gradient_accumulation_steps batches
        steps = f.number(steps, "dataset_iterator.steps_per_epoch") or 1
        t["steps_per_epoch"] = max(1, steps // t["gradient_accumulation_steps"])
    if t["gradient_accumulation_steps"] > 1:
        f.note("gradient_accumulation_steps: mtbert draws the task once per optimiser step; DeepPavlov 1.7's "
               "iterator means to, but its step counter only moves at epoch ends, so it keeps one task for whole "
               "epochs and re-draws every batch in others")
    if tr.get("max_batches", -1) not in (-1, None):  # DeepPavlov's cap on training batches
        batches = f.number(tr["max_batches"], "train.max_batches") or 1
        t["max_steps"] = max(1, -(-batches // t["gradient_accumulation_steps"]))
    return t


def _optimizer(chain: Chain, f: Findings) -> dict:
    """The multitask_transformer's optimiser, clipping, learning-rate drops and freezing."""
    tf, where = chain.transformer, chain.transformer_at
    f.expect(tf, "optimizer", where, (None, "AdamW"), "mtbert trains with AdamW")
    f.expect(tf, "lr_scheduler", where, (None,), "mtbert's schedules are training.lr_schedule: linear or constant")
    f.expect(tf, "lr_scheduler_parameters", where, (None, {}), "mtbert's schedules are training.lr_schedule: linear or constant")
    f.expect(tf, "focal", where, (None, False), "focal loss")
    f.expect(tf, "new_model", where, (None, False), "DeepPavlov's experimental heads")
    f.expect(tf, "binary_threshold", where, (None, 0.5), "binary heads")
    params = tf.get("optimizer_parameters") or {"lr": 2e-5}  # DeepPavlov's default
    if not isinstance(params, dict):
        f.problem(f"{where}.optimizer_parameters", "expected a mapping such as {\"lr\": 2e-5}")
        params = {}
    f.check_keys(params, f"{where}.optimizer_parameters", {"lr", "weight_decay"})
    t = {"lr": f.number(params.get("lr", 2e-5), f"{where}.optimizer_parameters.lr", integer=False)}
    # torch's AdamW over model.parameters() (TorchModel): one group, decay 0.01 unless given, biases included
    t["weight_decay"] = f.number(params.get("weight_decay", 0.01), f"{where}.optimizer_parameters.weight_decay",
                                 integer=False)
    t["weight_decay_exempt"] = ["LayerNorm"]  # see DIFFERS
    t["precision"] = "auto"  # see DIFFERS
    t["warmup"] = 0.0  # DeepPavlov has no warm-up
    t["lr_schedule"] = "constant"  # and no decay: the rate changes only by learning_rate_drop_div
    t["clip_norm"] = f.number(tf["clip_norm"], f"{where}.clip_norm", integer=False) if tf.get("clip_norm") else None
    for dp_key, key, integer in (("learning_rate_drop_patience", "lr_drop_patience", True),
                                 ("learning_rate_drop_div", "lr_drop_div", False),
                                 ("min_learning_rate", "min_lr", False)):
        if tf.get(dp_key) is not None:
            t[key] = f.number(tf[dp_key], f"{where}.{dp_key}", integer=integer)
    if tf.get("learning_rate_drop_patience"):
        # TorchModel.process_event: divide when the impatience equals the patience (once per plateau), to no
        # less than min_learning_rate (default 1e-7), after reloading the saved best model (load_before_drop)
        t["lr_drop"] = "once_per_plateau"
        t.setdefault("min_lr", 1e-7)
        t["lr_drop_reload_best"] = f.flag(tf.get("load_before_drop", True), f"{where}.load_before_drop")
    if tf.get("freeze_embeddings") and f.flag(tf["freeze_embeddings"], f"{where}.freeze_embeddings"):
        # DeepPavlov's freeze_embeddings freezes every encoder parameter but the pooler, not only the embeddings
        t["freeze_encoder"] = True
        f.note("freeze_embeddings: DeepPavlov freezes the whole encoder with it, and so does mtbert "
               "(training.freeze_encoder); use training.freeze_embeddings to freeze the embeddings only")
    if tf.get("device") not in (None, "cpu"):
        f.note(f"multitask_transformer.device {tf['device']!r}: mtbert trains on the CPU")
    return t


def _evaluations(tr: dict, t: dict, f: Findings) -> dict:
    """NNTrainer's validations: before training (validate_first, default true), every val_every_n_batches
    batches and every val_every_n_epochs epochs (each only when positive; default never)."""
    out = {"validate_first": f.flag(tr.get("validate_first", True), "train.validate_first")}
    batches, epochs = tr.get("val_every_n_batches", -1), tr.get("val_every_n_epochs", -1)
    batches = f.number(batches, "train.val_every_n_batches") if batches is not None else None
    epochs = f.number(epochs, "train.val_every_n_epochs") if epochs is not None else None
    if batches is not None and batches > 0:
        out["eval_every"] = max(1, batches // t["gradient_accumulation_steps"])
    out["eval_every_epochs"] = epochs if epochs is not None and epochs > 0 else 0
    return out


# ---------------------------------------------------------------- metrics and the target


def _metrics(dp: dict, chain: Chain, out: dict, f: Findings) -> None:
    """train.metrics -> each task's metric list; the first one (what DeepPavlov stops and saves on) -> target."""
    specs = (dp.get("train") or {}).get("metrics") or []
    if not isinstance(specs, list):
        f.problem("train.metrics", "expected a list of metric names or {name, inputs}")
        specs = []
    per_task: dict[str, list[str]] = {}
    target = None
    for i, spec in enumerate(specs):
        where = f"train.metrics[{i}]"
        if isinstance(spec, str):
            spec = {"name": spec, "inputs": chain.gold + chain.outputs}
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            f.problem(where, "expected a metric name or {name, inputs}")
            continue
        f.check_keys(spec, where, {"name", "alias", "inputs"})
        name, inputs = spec["name"], spec.get("inputs") or chain.gold + chain.outputs
        args = _metric_args(inputs, chain, where, f)
        if args is None:
            continue
        tasks = list(dict.fromkeys(task for task, _ in args))
        kinds = [kind for _, kind in args]
        one_task = len(tasks) == 1 and (kinds == ["y_true", "y_pred"] or (name == "roc_auc" and kinds == ["y_true", "probas"]))
        if name == "multitask_accuracy":
            for task in tasks:
                per_task.setdefault(task, []).append("accuracy")
        elif one_task and (name in METRICS or ":" in name):
            per_task.setdefault(tasks[0], []).append(METRICS.get(name, name))
        elif name not in METRICS and ":" not in name:
            f.problem(f"{where}.name", f"DeepPavlov metric {name!r} has no mtbert equivalent "
                      f"(supported: {', '.join([*METRICS, 'multitask_accuracy', 'module:function'])})")
            continue
        elif name in METRICS or i:
            # mtbert calls a task's metric with its gold and predicted values; anything else can only be the target
            f.problem(f"{where}.inputs", f"{name} on {inputs}: mtbert takes a task metric on one task's gold and "
                      "predictions; a custom metric over several tasks or probabilities only as the first metric")
            continue
        if i == 0:
            target = f"{tasks[0]}.{METRICS[name]}" if one_task and name in METRICS and ":" not in METRICS[name] \
                else dp_metrics.target_name(name, args, _minimize(dp, name, f))
    for task, names in per_task.items():
        if task in out["tasks"]:
            out["tasks"][task]["metric"] = list(dict.fromkeys(names))
    if target:
        out["training"]["target_metric"] = target


def _minimize(dp: dict, first_metric: str, f: Findings) -> bool:
    """train.metric_optimization: mtbert keeps the checkpoint with the highest target, so a custom first
    metric to minimise becomes the target negated; DeepPavlov's own metrics are all better higher, where
    'minimize' would keep the worst model."""
    value = (dp.get("train") or {}).get("metric_optimization", "maximize")
    value = value.strip().lower() if isinstance(value, str) else value
    if value not in ("maximize", "minimize"):
        f.problem("train.metric_optimization", f"{value!r}; use maximize or minimize")
    if value != "minimize":
        return False
    if first_metric in METRICS or first_metric == "multitask_accuracy":
        f.problem("train.metric_optimization", f"'minimize', but the first metric, {first_metric}, is better "
                  "higher: early stopping would keep the worst model (use maximize)")
        return False
    f.note(f"train.metric_optimization minimize: the target is -{first_metric}, so higher is better as "
           "mtbert's early stopping and best checkpoint expect")
    return True


def _metric_args(inputs, chain: Chain, where: str, f: Findings) -> list[tuple[str, str]] | None:
    """A metric's input variables -> (task, y_true | y_pred | probas)."""
    if not isinstance(inputs, list):
        f.problem(f"{where}.inputs", "expected a list of chainer variables")
        return None
    args = []
    for name in inputs:
        var = chain.vars.get(name)
        kind = {GOLD: "y_true", PROBAS: "probas", IDS: "y_pred", VALUES: "y_pred", TAGS: "y_pred"}.get(
            var.kind if var else None)
        if var is not None and var.kind == ID_LISTS:
            f.problem(f"{where}.inputs", f"'{name}' holds lists of class ids (top_n or confidence_threshold); "
                      "mtbert's metrics take one class id per example (max_proba)")
            return None
        if var is None or var.task is None or kind is None:
            f.problem(f"{where}.inputs", f"'{name}' is not gold data (chainer.in_y) or a prediction mtbert "
                      "can give (probabilities, class ids, values, tags)")
            return None
        args.append((var.task, kind))
    return args


# ---------------------------------------------------------------- DeepPavlov's traps, said once


def _trap_notes(dp: dict, chain: Chain, out: dict, f: Findings) -> None:
    t = out["training"]
    if not t.get("eval_every") and not t.get("eval_every_epochs"):
        f.note("DeepPavlov saves the model only after a validation that beats the one before training, and this "
               "config validates during training never (no val_every_n_epochs / val_every_n_batches): it would "
               "evaluate the untrained model after training. mtbert evaluates dev after the last step too and "
               "saves that model (or the best one, with validations during training)", logging.WARNING)
    else:
        f.note("mtbert saves the model at every improvement on dev, evaluates dev after the last step too, and "
               "saves the final model when no evaluation beat the one before training")
    f.note("idle heads: DeepPavlov's optimizer.zero_grad() leaves the other tasks' heads without a gradient "
           "under torch >= 2 (set_to_none), so AdamW skips them, as mtbert does (under torch < 2 they moved "
           "by momentum and weight decay)")
    f.note(f"task sampling: DeepPavlov draws each step's task from NumPy's unseeded global generator, so runs "
           f"differ; mtbert seeds it (seed {out['seed']})")


# ---------------------------------------------------------------- writing a converted config


def to_yaml(converted: dict, source: str, raw: dict | None = None) -> str:
    """The converted config as YAML, headed by where it came from."""
    lines = [f"# Converted from the DeepPavlov config {source} by `mtbert convert`.",
             "# Variables are resolved (DP_<NAME> overrides as they were at conversion); docs/deeppavlov.md",
             "# explains each mapping."]
    comments = dict(DIFFERS)
    if raw is not None:
        dp = resolve_variables(raw, source)
        if "test" in evaluation_targets(dp):
            lines.append("# DeepPavlov's evaluation_targets include test: mtbert evaluate RUN_DIR --split test")
        tr = dp.get("train") or {}
        epochs = tr.get("epochs", (dp.get("dataset_iterator") or {}).get("num_train_epochs"))
        if isinstance(epochs, int | float) and epochs <= 0 and (converted.get("training") or {}).get("epochs"):
            comments["training.epochs"] = (f"DeepPavlov's epochs {epochs}: no epoch limit, training stops on "
                                           "validation_patience (training.patience); this is mtbert's cap")
    return "\n".join(lines) + "\n" + _commented(yaml.safe_dump(converted, sort_keys=False, allow_unicode=True),
                                                 comments)


def _commented(text: str, comments: dict[str, str]) -> str:
    """Put each comment (DIFFERS and the conversion's own) above its key: `training.<key>` at two spaces, a
    task's key at four."""
    out, section = [], None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        key = line.strip().split(":", 1)[0]
        if indent == 0:
            section = key
        path = f"{section}.{key}" if (section, indent) in (("training", 2), ("tasks", 4)) else None
        if path in comments:
            out.append(f"{' ' * indent}# {comments[path]}")
        out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- predictions in DeepPavlov's shapes


def read_chain_for_prediction(raw: dict, source: str = "config") -> tuple[dict, Chain]:
    """The chainer of a training or inference-only config, checked, with variables resolved."""
    dp = resolve_variables(raw, source)
    f = Findings()
    chain = read_chain(dp, f)
    f.raise_if_any(source)
    return dp, chain


def predict_deeppavlov(predictor, dp_raw: dict, inputs: dict[str, list], source: str = "config") -> dict[str, list]:
    """Predict as DeepPavlov's chainer would: `inputs` keyed by the chainer's `in` names, the result keyed by
    its `out` names, in that order (`DeepPavlovModel.predict`; build the model once to predict many batches).

    Tasks not asked (no key, or a batch of None) give [] as in DeepPavlov; a None inside a batch gives
    None at its place. Classes are ids (Hugging Face's ClassLabel order for the GLUE/SuperGLUE tasks),
    probabilities are lists in id order, regression values floats, and tags strings after the vocab."""
    return DeepPavlovModel(predictor, dp_raw, source).predict(inputs)


def _check_model(predictor, chain: Chain, source: str) -> None:
    for task, spec in chain.tasks.items():
        have = predictor.tasks.get(task)
        if have != spec.get("type"):
            raise UserError(f"{source}: task {task} ({spec.get('type')}) is not a {spec.get('type')} task of "
                            f"the trained model (it has: {', '.join(f'{n} ({t})' for n, t in predictor.tasks.items())})")


def _task_values(predictor, task: str, examples: list, return_probas: bool) -> list:
    """One task's values in DeepPavlov's shape for its Examples (None for an input not asked)."""
    if not examples or all(x is None for x in examples):
        return []  # DeepPavlov: a task with no inputs in this call gives an empty list
    spec = predictor.cfg.tasks[task]
    where = [i for i, x in enumerate(examples) if x is not None]
    preds = predictor.predict_examples(task, [examples[i] for i in where])
    if spec.type == "regression":
        got = [float(v) for v in preds.labels]
    elif spec.type == "sequence_labeling":
        index = {label: i for i, label in enumerate(predictor.labels[task])}
        got = [[index[tag] for tag in tags] for tags in preds.labels]
    elif return_probas:
        got = [[float(p) for p in row] for row in preds.probas]
    else:
        got = [int(i) for i in preds.ids]
    result: list = [None] * len(examples)
    for i, value in zip(where, got, strict=True):
        result[i] = value
    return result


def proba2labels(rows: list, max_proba=None, confidence_threshold=None, top_n=None, is_binary=False) -> list:
    """DeepPavlov's proba2labels on one input: class ids from probabilities, with its precedence
    (confidence_threshold, then max_proba, then top_n). `is_binary` with a threshold reads the
    probability of class 1 (the positive class of a two-class head)."""
    if all(row is None for row in rows):
        return []
    out = []
    for row in rows:
        if row is None:
            out.append(None)
            continue
        p = np.asarray(row, dtype=float)
        if confidence_threshold:
            if is_binary:
                out.append(int((p[-1] if p.ndim else p) > confidence_threshold))
            else:
                out.append([int(i) for i in np.where(p > confidence_threshold)[0]])
        elif max_proba:
            out.append(int(np.argmax(p)))
        else:
            out.append([int(i) for i in np.argsort(p)[::-1][:top_n]])
    return out


class DeepPavlovModel:
    """What DeepPavlov's `build_model(config)` returns, on an mtbert run: call it with one batch per
    chainer input, positionally (`None` items for tasks not asked); it returns the chainer's outputs,
    one list per `out` name (or that list alone when there is one). The chainer is read and checked
    against the run once, here."""

    def __init__(self, predictor, raw: dict, source: str = "config"):
        self.predictor = predictor
        self.raw = raw
        self.source = source
        _, self.chain = read_chain_for_prediction(raw, source)
        _check_model(predictor, self.chain, source)
        self.return_probas = bool(self.chain.transformer.get("return_probas", False))

    def __call__(self, *batches):
        if len(batches) != len(self.chain.inputs):
            raise UserError(f"expected {len(self.chain.inputs)} inputs ({', '.join(self.chain.inputs)}), "
                            f"got {len(batches)}")
        outputs = self.predict(dict(zip(self.chain.inputs, batches, strict=True)))
        values = [outputs[name] for name in self.chain.outputs]
        return values[0] if len(values) == 1 else values

    def predict(self, inputs: dict[str, list]) -> dict[str, list]:
        """`predict_deeppavlov` on this model: DeepPavlov's inputs become Examples here, once."""
        unknown = [k for k in inputs if k not in self.chain.inputs]
        if unknown:
            raise UserError(f"inputs {', '.join(unknown)}: not in the chainer's in ({', '.join(self.chain.inputs)})")
        values: dict[str, list] = {name: inputs.get(name, []) for name in self.chain.inputs}
        examples = {task: self.examples(task, values.get(var) or []) for task, var in self.chain.input_of.items()}
        return self.outputs(examples, values)

    def examples(self, task: str, batch: list) -> list:
        """One task's batch in DeepPavlov's shapes -> Examples (None stays None)."""
        spec = self.predictor.cfg.tasks[task]
        try:
            return [None if x is None else deeppavlov_example(task, spec, x, i) for i, x in enumerate(batch)]
        except InputError as err:
            raise err.at(f"task {task} input {err.index + 1}") from None

    def outputs(self, examples: dict[str, list], values: dict[str, list] | None = None) -> dict[str, list]:
        """The chainer's `out` values from each task's Examples (a task not in `examples` is not asked);
        `values`: the `in` variables, as sent."""
        values = dict(values or {})
        for task in self.chain.input_of:
            values[self.chain.output_of[task]] = _task_values(self.predictor, task, examples.get(task) or [],
                                                              self.return_probas)
        for step in self.chain.steps:
            for src, dst in zip(step.inputs, step.outputs, strict=True):
                task = self.chain.vars[src].task
                if step.kind == "proba2labels":
                    values[dst] = proba2labels(values[src], **step.params)
                else:
                    labels = self.predictor.labels[task]
                    values[dst] = [None if row is None else [labels[i] for i in row] for row in values[src]]
        return {name: values.get(name, []) for name in self.chain.outputs}


def build_model(config: str | Path | dict, run_dir: str | Path | None = None, batch_size: int = 64,
                precision: str = "auto") -> DeepPavlovModel:
    """DeepPavlov's build_model for a training or inference-only config: the trained run is read from
    the multitask_transformer's load_path (or save_path), unless `run_dir` says otherwise. `precision`
    'auto' is the one the run's dev scores were computed with (see `Predictor`)."""
    from mtbert.config import read_config_file
    from mtbert.inference.predictor import Predictor

    source = str(config) if not isinstance(config, dict) else "config"
    raw = config if isinstance(config, dict) else read_config_file(config)
    if not is_deeppavlov_config(raw):
        raise UserError(f"{source}: not a DeepPavlov config (no chainer)")
    path = run_dir or trained_run(raw, source)
    return DeepPavlovModel(Predictor(path, batch_size=batch_size, precision=precision), raw, source)


def trained_run(raw: dict, source: str = "config") -> str:
    """Where the trained run of a DeepPavlov config is: the multitask_transformer's load_path (or save_path)."""
    _, chain = read_chain_for_prediction(raw, source)
    path = chain.transformer.get("load_path") or chain.transformer.get("save_path")
    if not path:
        raise UserError(f"{source}: multitask_transformer has no load_path or save_path naming the trained run")
    return expand(str(path))

