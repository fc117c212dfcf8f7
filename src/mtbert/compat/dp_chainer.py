"""A DeepPavlov multitask chainer, read as a data flow: which variable holds what, for which task.

The pipe of a multitask config is always the same shape: `multitask_pipeline_preprocessor` turns the
inputs `x_<task>` into features, `multitask_transformer` turns features into probabilities, values or
tag ids, `proba2labels` turns probabilities into class ids, and a `simple_vocab` (or a `ref` to it) turns
tag ids into tags. mtbert runs the model itself; this module only tracks what each variable holds, so
metrics can be mapped to tasks and predictions returned under the names the chainer's `out` lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mtbert.compat.findings import Findings
from mtbert.tasks import registry

# what a chainer variable holds
INPUT, FEATURES, GOLD, GOLD_IDS = "input", "features", "gold", "gold_ids"
PROBAS, IDS, ID_LISTS, VALUES, TAG_IDS, TAGS = "probas", "ids", "id_lists", "values", "tag_ids", "tags"

# DeepPavlov's multitask_transformer task types; mtbert registers its own under the same names (mtbert.tasks)
TASK_TYPES = tuple(t for t in ("classification", "regression", "multiple_choice", "sequence_labeling")
                   if t in registry)
# the preprocessor DeepPavlov needs for each task type
PREPROCESSORS = {
    "TorchTransformersPreprocessor": ("classification", "regression"),
    "TorchTransformersMultiplechoicePreprocessor": ("multiple_choice",),
    "TorchTransformersNerPreprocessor": ("sequence_labeling",),
}

PREPROCESSOR_KEYS = {"class_name", "id", "in", "out", "possible_keys_to_extract", "preprocessor", "preprocessors",
                     "vocab_file", "do_lower_case", "max_seq_length", "max_subword_length", "token_masking_prob",
                     "return_features", "n_task", "strict"}
TRANSFORMER_KEYS = {"class_name", "id", "in", "in_y", "out", "tasks", "backbone_model", "optimizer",
                    "optimizer_parameters", "lr_scheduler", "lr_scheduler_parameters", "gradient_accumulation_steps",
                    "steps_per_epoch", "learning_rate_drop_patience", "learning_rate_drop_div", "load_before_drop",
                    "min_learning_rate", "clip_norm", "return_probas", "freeze_embeddings", "dropout", "max_seq_len",
                    "seed", "device", "save_path", "load_path", "focal", "new_model", "binary_threshold"}
TASK_KEYS = {"type", "options", "weight", "multilabel", "one_hot_labels", "type_to_cache"}
VOCAB_KEYS = {"class_name", "id", "in", "out", "fit_on", "save_path", "load_path", "unk_token", "pad_with_zeros"}
PROBA2LABELS_KEYS = {"class_name", "id", "in", "out", "max_proba", "confidence_threshold", "top_n", "is_binary"}


@dataclass
class Var:
    task: str | None
    kind: str


@dataclass
class Step:
    """A component applied after the model at prediction time: proba2labels or a tag vocabulary."""

    kind: str  # "proba2labels" or "vocab"
    inputs: list[str]
    outputs: list[str]
    params: dict = field(default_factory=dict)


@dataclass
class Chain:
    inputs: list[str]
    gold: list[str]
    outputs: list[str]
    tasks: dict[str, dict]  # multitask_transformer.tasks, in order
    transformer: dict
    preprocessor: dict
    vocabs: dict[str, dict]  # component id -> simple_vocab component
    transformer_at: str = "chainer.pipe"  # key paths, for messages
    preprocessor_at: str = "chainer.pipe"
    input_of: dict[str, str] = field(default_factory=dict)  # task -> chainer input variable
    output_of: dict[str, str] = field(default_factory=dict)  # task -> multitask_transformer output variable
    vars: dict[str, Var] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)


def _names(node: dict, key: str, where: str, f: Findings) -> list[str]:
    value = node.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        f.problem(f"{where}.{key}", "expected a list of variable names")
        return []
    return value


def read_chain(raw: dict, f: Findings) -> Chain | None:
    chainer = raw.get("chainer")
    if not isinstance(chainer, dict) or not isinstance(chainer.get("pipe"), list):
        f.problem("chainer", "missing, or without a pipe list")
        return None
    f.check_keys(chainer, "chainer", {"in", "in_y", "out", "pipe"})
    pipe = chainer["pipe"]
    by_class = {}
    for i, comp in enumerate(pipe):
        if isinstance(comp, dict) and comp.get("class_name") in ("multitask_pipeline_preprocessor", "multitask_transformer"):
            by_class.setdefault(comp["class_name"], (i, comp))
    if "multitask_transformer" not in by_class:
        f.problem("chainer.pipe", "no multitask_transformer component; mtbert imports DeepPavlov's multitask configs")
        return None
    transformer = by_class["multitask_transformer"][1]
    tasks = transformer.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        f.problem(f"chainer.pipe[{by_class['multitask_transformer'][0]}].tasks", "missing; name the tasks and their types")
        return None
    chain = Chain(inputs=_names(chainer, "in", "chainer", f), gold=_names(chainer, "in_y", "chainer", f),
                  outputs=_names(chainer, "out", "chainer", f), tasks=tasks, transformer=transformer,
                  preprocessor=by_class.get("multitask_pipeline_preprocessor", (0, {}))[1], vocabs={},
                  transformer_at=f"chainer.pipe[{by_class['multitask_transformer'][0]}]")
    if "multitask_pipeline_preprocessor" in by_class:
        chain.preprocessor_at = f"chainer.pipe[{by_class['multitask_pipeline_preprocessor'][0]}]"
    for name in chain.inputs:
        chain.vars[name] = Var(None, INPUT)
    features_of: dict[str, str] = {}  # features variable -> input variable
    gold_source: dict[str, str] = {}  # gold ids variable -> gold tags variable (through a vocabulary)
    for i, comp in enumerate(pipe):
        where = f"chainer.pipe[{i}]"
        if not isinstance(comp, dict):
            f.problem(where, "expected a component (a JSON object)")
            continue
        if "ref" in comp:
            _vocab_step(chain, comp, where, f, gold_source, ref=True)
            continue
        kind = comp.get("class_name")
        if kind == "multitask_pipeline_preprocessor":
            f.check_keys(comp, where, PREPROCESSOR_KEYS)
            ins, outs = _names(comp, "in", where, f), _names(comp, "out", where, f)
            if len(ins) != len(outs):
                f.problem(where, f"{len(ins)} inputs but {len(outs)} outputs")
            features_of.update(zip(outs, ins, strict=False))
            for out in outs:
                chain.vars[out] = Var(None, FEATURES)
        elif kind == "multitask_transformer":
            f.check_keys(comp, where, TRANSFORMER_KEYS)
            _transformer(chain, comp, where, f, features_of, gold_source)
        elif kind == "simple_vocab":
            f.check_keys(comp, where, VOCAB_KEYS)
            if comp.get("id"):
                chain.vocabs[comp["id"]] = comp
            if comp.get("in"):
                _vocab_step(chain, comp, where, f, gold_source)
        elif kind == "proba2labels":
            f.check_keys(comp, where, PROBA2LABELS_KEYS)
            _proba2labels(chain, comp, where, f)
        else:
            f.problem(f"{where}.class_name", f"component {kind!r} is not supported (mtbert imports "
                      "multitask_pipeline_preprocessor, simple_vocab, multitask_transformer and proba2labels)")
    _check_preprocessors(chain, by_class.get("multitask_pipeline_preprocessor"), f)
    for name in chain.outputs:
        if name not in chain.vars or chain.vars[name].kind in (FEATURES, GOLD, GOLD_IDS):
            f.problem("chainer.out", f"'{name}' is not a prediction of the pipe")
    return chain


def _transformer(chain: Chain, comp: dict, where: str, f: Findings, features_of: dict, gold_source: dict) -> None:
    ins, golds, outs = (_names(comp, k, where, f) for k in ("in", "in_y", "out"))
    probas = f.flag(comp.get("return_probas", False), f"{where}.return_probas")
    for j, (task, spec) in enumerate(chain.tasks.items()):
        at = f"{where}.tasks.{task}"
        if not isinstance(spec, dict):
            f.problem(at, "expected {type, options}")
            continue
        f.check_keys(spec, at, TASK_KEYS)
        if spec.get("type") not in TASK_TYPES:
            f.problem(f"{at}.type", f"{spec.get('type')!r} is not supported (use {', '.join(TASK_TYPES)})")
        for key in ("multilabel", "one_hot_labels"):
            f.expect(spec, key, at, (False,), f"mtbert trains single-label {spec.get('type')} heads")
        if j < len(ins):
            if ins[j] not in features_of:
                f.problem(f"{where}.in", f"'{ins[j]}' is not an output of multitask_pipeline_preprocessor")
            else:
                chain.input_of[task] = features_of[ins[j]]
                chain.vars[features_of[ins[j]]] = Var(task, INPUT)
        if j < len(golds):
            gold = golds[j]
            if gold in gold_source:
                chain.vars[gold_source[gold]] = Var(task, GOLD)
                chain.vars[gold] = Var(task, GOLD_IDS)
            else:
                chain.vars[gold] = Var(task, GOLD)
        if j < len(outs):
            chain.vars[outs[j]] = Var(task, _output_kind(spec.get("type"), probas))
            chain.output_of[task] = outs[j]
    for key, names in (("in", ins), ("out", outs)):
        if len(names) != len(chain.tasks):
            f.problem(f"{where}.{key}", f"{len(names)} names for {len(chain.tasks)} tasks; give one per task, in task order")
    if golds and len(golds) != len(chain.tasks):
        f.problem(f"{where}.in_y", f"{len(golds)} names for {len(chain.tasks)} tasks")


def _output_kind(task_type: str | None, return_probas: bool) -> str:
    if task_type == "regression":
        return VALUES
    if task_type == "sequence_labeling":
        return TAG_IDS  # DeepPavlov returns tag ids here even with return_probas
    return PROBAS if return_probas else IDS


def _in_out_pairs(comp: dict, where: str, f: Findings) -> list[tuple[str, str]] | None:
    """A component's `in` and `out` names side by side; None (and a problem) when their counts differ."""
    ins, outs = _names(comp, "in", where, f), _names(comp, "out", where, f)
    if len(ins) != len(outs):
        f.problem(where, f"{len(ins)} inputs but {len(outs)} outputs")
        return None
    return list(zip(ins, outs, strict=True))


def _vocab_step(chain: Chain, comp: dict, where: str, f: Findings, gold_source: dict, ref: bool = False) -> None:
    """A tag vocabulary: gold tags -> ids before the model (training), predicted ids -> tags after it."""
    if ref:
        f.check_keys(comp, where, {"ref", "in", "out", "id"})
        if comp["ref"] not in chain.vocabs:
            f.problem(f"{where}.ref", f"'{comp['ref']}' is not the id of a simple_vocab defined earlier in the pipe")
            return
    for src, dst in _in_out_pairs(comp, where, f) or []:
        var = chain.vars.get(src)
        if var is None and src in chain.gold:
            gold_source[dst] = src  # gold tags; the transformer's in_y names the ids and ties them to a task
        elif var is not None and var.kind == TAG_IDS:
            chain.vars[dst] = Var(var.task, TAGS)
            chain.steps.append(Step("vocab", [src], [dst]))
        else:
            f.problem(f"{where}.in", f"'{src}' is neither a gold variable of chainer.in_y nor predicted tag ids")


def _proba2labels(chain: Chain, comp: dict, where: str, f: Findings) -> None:
    params = {"max_proba": comp.get("max_proba"), "confidence_threshold": comp.get("confidence_threshold"),
              "top_n": comp.get("top_n"), "is_binary": comp.get("is_binary", False)}
    if params["confidence_threshold"]:
        params["confidence_threshold"] = f.number(params["confidence_threshold"], f"{where}.confidence_threshold",
                                                  integer=False)
        kind = IDS if params["is_binary"] else ID_LISTS
    elif params["max_proba"]:
        kind = IDS
    elif params["top_n"]:
        params["top_n"] = f.number(params["top_n"], f"{where}.top_n")
        kind = ID_LISTS
    else:
        f.problem(where, "proba2labels needs max_proba: true, confidence_threshold or top_n")
        return
    pairs = _in_out_pairs(comp, where, f)
    if pairs is None:
        return
    for src, dst in pairs:
        var = chain.vars.get(src)
        if var is None or var.kind != PROBAS:
            held = "class ids (return_probas is false)" if var is not None and var.kind == IDS else \
                "no probabilities"
            f.problem(f"{where}.in", f"'{src}' holds {held}; proba2labels needs a multitask_transformer "
                      "probability output")
            continue
        chain.vars[dst] = Var(var.task, kind)
    chain.steps.append(Step("proba2labels", [src for src, _ in pairs], [dst for _, dst in pairs], params))


def _check_preprocessors(chain: Chain, found, f: Findings) -> None:
    if found is None:
        f.problem("chainer.pipe", "no multitask_pipeline_preprocessor before the multitask_transformer")
        return
    i, comp = found
    where = f"chainer.pipe[{i}]"
    names = comp.get("preprocessors") or comp.get("preprocessor") or "TorchTransformersPreprocessor"
    names = [names] * len(chain.tasks) if isinstance(names, str) else names
    if len(names) != len(chain.tasks):
        f.problem(f"{where}.preprocessors", f"{len(names)} names for {len(chain.tasks)} tasks")
        return
    for name, (task, spec) in zip(names, chain.tasks.items(), strict=True):
        fits = PREPROCESSORS.get(name)
        if fits is None:
            f.problem(f"{where}.preprocessors", f"{name!r} is not supported (use {', '.join(PREPROCESSORS)})")
        elif isinstance(spec, dict) and spec.get("type") not in fits:
            f.problem(f"{where}.preprocessors", f"{name} does not prepare task {task} ({spec.get('type')})")
    if "n_task" in comp and f.number(comp["n_task"], f"{where}.n_task") not in (None, len(chain.tasks)):
        f.problem(f"{where}.n_task", f"{comp['n_task']} but multitask_transformer has {len(chain.tasks)} tasks")
