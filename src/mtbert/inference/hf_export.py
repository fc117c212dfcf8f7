"""Hugging Face export of one task: a folder that transformers' AutoModelFor* classes and `pipeline` load as
they are, holding the shared encoder and that task's head.

    out_dir/
      config.json        the encoder's config, with the task's class in `architectures`, its labels as
                         id2label/label2id (regression: problem_type regression, one output)
      model.safetensors  encoder and head weights, named as the transformers class names them
      tokenizer files    the run's tokenizer
      README.md          the task's model card (see `modelcard.py`)
      manifest.json      what mtbert wrote: the task, the class, the parity measured at export, the files

A task is exported only when a transformers class computes exactly what its head does; see `hf_class`.
The folder follows the ONNX export's rules (`export.check_out_dir`): a new or empty folder, or with
`force` an earlier export's own files; never inside a model folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mtbert.errors import UserError
from mtbert.inference.export import HF_FORMAT, check_out_dir, graph_inputs, sample_inputs
from mtbert.io import atomic_write_dir
from mtbert.rundir import best_dev_record, load_model, model_dir
from mtbert.tasks import registry

log = logging.getLogger("mtbert")

# The transformers class per task type (TaskType.hf_classes) and encoder family (config.json's model_type) whose head is
# mtbert's: dropout, then one linear layer, on every token's hidden state (token classification) or on the
# pooler output (sequence classification, multiple choice), or the head 'mlp' on [CLS], whose hidden layer
# is the pooler's layout and goes in its place. Families left out differ: ModernBERT's token
# head has a dense layer, activation and norm first; the sequence-classification heads of RoBERTa
# (dropout before its dense+tanh), ELECTRA (dense+gelu), DistilBERT (dense+ReLU) and DeBERTa-v2 (its own
# pooler), and the multiple-choice heads of ELECTRA, DistilBERT and DeBERTa-v2, read [CLS] through layers
# no mtbert head has.
HF_REGRESSION = "regression"  # transformers' config.problem_type of a one-score head
PARITY = 1e-4  # as the ONNX export: far above fp32 rounding, far below any mapping mistake


def hf_class(name: str, spec, model_type: str) -> tuple[str | None, str | None]:
    """(transformers class, None) for a task whose head that class computes exactly, or (None, why not and
    what to set instead). A `bce` classifier maps too: its one logit z becomes the two logits [0, z],
    whose softmax is exactly mtbert's [1 - sigmoid(z), sigmoid(z)]."""
    task_type = registry.get(spec.type)
    found = task_type.hf_classes.get(model_type)
    if found is None:
        if not task_type.hf_classes:
            return None, (f"tasks.{name}: transformers has no class for {spec.type} tasks; use the ONNX export "
                          "(mtbert export RUN) instead")
        families = ", ".join(task_type.hf_classes)
        return None, (f"tasks.{name}: no transformers class computes this {spec.type} head on a '{model_type}' "
                      f"encoder (exact ones exist for {families}); use the ONNX export (mtbert export RUN) instead")
    if task_type.reads_words:  # a token head reads every hidden state: no pooling to match
        if spec.head == "mlp":
            return None, (f"tasks.{name}.head: 'mlp' puts a hidden layer before the output layer, which {found} "
                          "does not have; use the ONNX export (mtbert export RUN) instead")
        return found, None
    if spec.head == "mlp":
        # the class's pooler, tanh(W h_[CLS] + b), is the mlp head's hidden layer on [CLS]; on a pooler output
        # it would be a second one
        if spec.pooling != "cls":
            return None, (f"tasks.{name}.head: 'mlp' on pooling '{spec.pooling}' is two dense layers on [CLS], "
                          f"{found} has one; use the ONNX export (mtbert export RUN) instead")
    elif spec.pooling not in ("pooler", "dp_pooler"):
        read = {"cls": "[CLS]'s hidden state", "mean": "the mean of the hidden states"}[spec.pooling]
        return None, (f"tasks.{name}.pooling: '{spec.pooling}' gives the head {read}, but {found} gives it the "
                      "pooler output (a dense+tanh layer on [CLS]); set pooling: pooler (or head: mlp) and train again")
    if spec.pair_encoding == "separate":
        return None, (f"tasks.{name}.pair_encoding: 'separate' encodes text and text_pair apart, which {found} "
                      "does not; set pair_encoding: cross and train again")
    if spec.output_activation != "none":
        return None, (f"tasks.{name}.output_activation: '{spec.output_activation}' clips the score, which "
                      f"{found} does not; set output_activation: none and train again")
    return found, None


def encoder_type(source: Path) -> str:
    """The encoder family of a saved model folder (minbert saves BERT's config.json)."""
    return json.loads((source / "encoder" / "config.json").read_text(encoding="utf-8"))["model_type"]


def default_out_dir(run_dir: str | Path, task: str) -> Path:
    return Path(run_dir) / f"hf-{task}"


def _hf_config(source: Path, name: str, spec, class_name: str, labels: list[str] | None):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source / "encoder")
    config.architectures = [class_name]
    problem_type = registry.get(spec.type).hf_problem_type
    if problem_type:
        config.problem_type = problem_type  # multi_label_classification: the pipeline applies a sigmoid
    # regression: the pipeline's answer is {"label": <task>, "score": <score>}
    names = [name] if problem_type == HF_REGRESSION else labels or []
    if names:
        config.id2label = dict(enumerate(names))
        config.label2id = {label: i for i, label in enumerate(names)}
    if hasattr(config, "classifier_dropout"):  # the head's dropout, should the model be trained further
        config.classifier_dropout = spec.dropout
    return config


def _build(source: Path, name: str, spec, class_name: str, labels, head):
    """The transformers model: the encoder's weights loaded by transformers from the run's own folder, the
    head's copied into its classifier."""
    import transformers

    config = _hf_config(source, name, spec, class_name, labels)
    model, info = getattr(transformers, class_name).from_pretrained(source / "encoder", config=config,
                                                                   output_loading_info=True)
    # the classifier is the only new layer; the pooler is left out by the token classes, which have none
    missing = [k for k in info["missing_keys"] if not k.startswith("classifier.")]
    unexpected = [k for k in info["unexpected_keys"] if ".pooler." not in f".{k}"]
    if missing or unexpected:
        raise RuntimeError(f"{class_name} does not take the encoder's weights as they are: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    weight, bias = head.out.weight.detach(), head.out.bias.detach()
    if getattr(head, "bce", False):
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
        if head.dense is not None:  # head 'mlp': its hidden layer in the pooler's place (hf_class)
            model.base_model.pooler.dense.load_state_dict(head.dense.state_dict())
    return model.float().eval()


def comparable_logits(task_type: str, head, out: torch.Tensor) -> torch.Tensor:
    """mtbert's head output in the transformers model's shape: a regression score as one logit, a `bce`
    logit z as [0, z]."""
    if registry.get(task_type).hf_problem_type == HF_REGRESSION:
        return out.unsqueeze(-1)
    if getattr(head, "bce", False):
        return torch.stack([torch.zeros_like(out), out], dim=-1)
    return out


def max_abs_diff(model, hf_model, task: str, tokenizer) -> float:
    """Largest difference between the transformers model's logits and mtbert's on padded sample inputs
    (grouped in threes for multiple choice, one sequence each otherwise)."""
    task_type = model.task_types[task]
    group = 3 if registry.get(task_type).choice_groups else 1
    names = graph_inputs(model)
    batch = {k: v for k, v in sample_inputs(tokenizer, batch=3, group=group).items() if k in names}
    if group == 1:
        batch = {k: v[:, 0] for k, v in batch.items()}
    with torch.no_grad():
        want = comparable_logits(task_type, model.heads[task], model(task, batch))
        got = hf_model(**batch).logits
    return float((want.float() - got).abs().max())


def export_hf(run_dir: str | Path, task: str, out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Write the Hugging Face folder of one task of a run dir (default `RUN_DIR/hf-TASK`); returns it.
    Its logits are checked against mtbert's before anything is written."""
    from mtbert.modelcard import task_card

    source = model_dir(run_dir)
    cfg, model, tokenizer, labels = load_model(run_dir)
    if task not in cfg.tasks:
        raise UserError(f"--task {task}: {run_dir} has no such task; its tasks: {', '.join(cfg.tasks)}")
    spec = cfg.tasks[task]
    class_name, why_not = hf_class(task, spec, encoder_type(source))
    if class_name is None:
        raise UserError(why_not)
    out_dir = Path(out_dir) if out_dir else default_out_dir(run_dir, task)
    check_out_dir(out_dir, Path(run_dir), source, force, default_out_dir(run_dir, task))
    model.float().eval()
    hf_model = _build(source, task, spec, class_name, labels.get(task), model.heads[task])
    diff = max_abs_diff(model, hf_model, task, tokenizer)
    if diff > PARITY:
        raise RuntimeError(f"{class_name} export of {run_dir} task {task}: transformers differs from mtbert by "
                           f"{diff:.2e} (> {PARITY:g})")
    record = best_dev_record(Path(run_dir))

    def write(tmp: Path) -> None:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(task_card(cfg, task, class_name, registry.get(spec.type).hf_auto_class, record, out_dir),
                                       encoding="utf-8")
        manifest = {"format": HF_FORMAT, "task": task, "type": spec.type, "class": class_name,
                    "parity": {"max_abs_diff": diff},
                    "files": sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
                                    + ["manifest.json"])}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    atomic_write_dir(out_dir, write)
    log.info("exported task %s of %s to %s as %s; max |transformers - mtbert|: %.1e", task, run_dir, out_dir,
             class_name, diff)
    return out_dir
