"""Model cards in the Hugging Face format: YAML front matter (huggingface_hub's `ModelCardData`, whose
`eval_results` become the hub's `model-index`), then a body saying what the model is and how to load it.

Two cards: a run's (`model/README.md`, written with every saved model) and one exported task's
(`mtbert export --format hf`, where transformers is the library that loads it). Scores are the dev scores
of the evaluation that chose the saved model: report.md's table, unrounded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mtbert.config import Config
from mtbert.evaluation.tables import results_table
from mtbert.modeling.encoder import HUB_NAMES
from mtbert.tasks import registry

# the hub's task for each task type (its STS-B models are text-classification with one regression output)
PIPELINES = {"text-classification", "token-classification"}  # the types transformers' pipeline() runs
HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")


def hub_name(backbone: str) -> str | None:
    """The backbone's hub name: an alias's, or the name itself unless it is a local folder."""
    if backbone in HUB_NAMES:
        return HUB_NAMES[backbone]
    if Path(backbone).expanduser().exists() or not HUB_NAME.fullmatch(backbone):
        return None
    return backbone


def _front_matter(cfg: Config, tasks: list[str], record: dict | None, model_name: str, library: str,
                  pipeline_tag: str | None = None) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    # dataset type: the hub's dataset id where the task reads one, else the task's name; the hub merges the
    # results of one task type on one dataset type, and two tasks of a run must stay two results
    results = [EvalResult(task_type=registry.get(cfg.tasks[t].type).hub_task, task_name=t,
                          dataset_type=cfg.tasks[t].hf_path or t,
                          dataset_name=cfg.tasks[t].dataset or t, dataset_config=cfg.tasks[t].hf_name,
                          dataset_split="validation", metric_type=metric, metric_name=metric, metric_value=value)
               for t in tasks for metric, value in ((record or {}).get("dev", {}).get(t) or {}).items()]
    datasets = sorted({cfg.tasks[t].hf_path for t in tasks if cfg.tasks[t].hf_path})
    data = ModelCardData(library_name=library, tags=["mtbert", "multi-task", *sorted({registry.get(cfg.tasks[t].type).hub_task
                                                                                       for t in tasks})],
                         base_model=hub_name(cfg.backbone), datasets=datasets or None,
                         eval_results=results or None, model_name=model_name, pipeline_tag=pipeline_tag)
    return f"---\n{data.to_yaml()}\n---\n"


def _training(cfg: Config, record: dict | None, precision: str | None) -> list[str]:
    t = cfg.training
    length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"
    lines = [f"- {length}, batch size {t.batch_size}, learning rate {t.lr:g} (warm-up {t.warmup:g}, then "
             f"{t.lr_schedule}), task schedule `{t.schedule}`, precision {precision or t.precision}"]
    if record:
        lines.append(f"- this model: step {record['step']} (epoch {record['epoch']:g}), the best evaluation on dev "
                     f"(target `{t.target_metric}` = {record['target']:.4f})")
    else:
        lines.append("- no dev split was given: these are the final weights, and there are no scores")
    return lines


def _scores(cfg: Config, tasks: list[str], record: dict | None) -> list[str]:
    scores = {t: record["dev"][t] for t in tasks if record and record["dev"].get(t)}
    if not scores:
        return []
    primary = {t: next(iter(m)) for t, m in scores.items()}  # metrics come in the task's order, primary first
    return ["## Dev scores", "", results_table(scores, primary, types={t: cfg.tasks[t].type for t in tasks}), ""]


def example_input(cfg: Config, task: str):
    """One input of the task as `mtbert predict` and `Predictor.predict` take it."""
    spec = cfg.tasks[task]
    return registry.get(spec.type).example_input(spec)


def _tasks_table(cfg: Config, labels: dict) -> list[str]:
    rows = ["| task | type | labels | head |", "|---|---|---|---|"]
    for name, spec in cfg.tasks.items():
        names = labels.get(name)
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "") if names else ""
        head = registry.get(spec.type).head_summary(spec)
        rows.append(f"| {name} | {spec.type} | {shown} | {head} |")
    return rows


def run_card(cfg: Config, run_dir: Path, labels: dict, record: dict | None, precision: str | None,
             model_type: str) -> str:
    """The card of a run's saved model (`model/README.md`)."""
    from mtbert.inference.hf_export import hf_class

    tasks = list(cfg.tasks)
    first = tasks[0]
    lines = [f"# {run_dir.name}", "",
             f"A multi-task model trained with mtbert: one shared `{cfg.backbone}` encoder ({model_type}), a head "
             f"per task.", "", "## Tasks", "", *_tasks_table(cfg, labels), "", "## Training", "",
             *_training(cfg, record, precision), "", *_scores(cfg, tasks, record),
             "## Use it with mtbert", "", f"`{run_dir}` is the run dir that holds this `model/` folder.", "",
             "```bash", f"echo '{json.dumps(example_input(cfg, first))}' | mtbert predict {run_dir} --task {first}",
             "```", "", "```python", "from mtbert.inference.predictor import Predictor", "",
             f"predictor = Predictor({str(run_dir)!r})",
             f"print(predictor.predict({first!r}, [{example_input(cfg, first)!r}]))", "```", "",
             "## Use a task in transformers", ""]
    for name in tasks:
        class_name, why_not = hf_class(name, cfg.tasks[name], model_type)
        if class_name is None:
            lines += [f"- `{name}`: not exportable. {why_not}"]
            continue
        lines += [f"- `{name}` ({class_name}): `mtbert export {run_dir} --format hf --task {name} -o {name}-hf`, "
                  f"then `{registry.get(cfg.tasks[name].type).hf_auto_class}.from_pretrained(\"{name}-hf\")`"]
    return _front_matter(cfg, tasks, record, run_dir.name, "mtbert") + "\n" + "\n".join(lines) + "\n"


def task_card(cfg: Config, task: str, class_name: str, auto_class: str, record: dict | None, out_dir: Path) -> str:
    """The card of one task exported for transformers."""
    spec = cfg.tasks[task]
    hub_task = registry.get(spec.type).hub_task
    folder = out_dir.name
    lines = [f"# {task}", "",
             f"The `{task}` task ({spec.type}) of a multi-task model trained with mtbert on a shared `{cfg.backbone}` "
             f"encoder, exported as transformers' `{class_name}`: the encoder and this task's head, whose logits "
             "are mtbert's.", "", "## Training", "", *_training(cfg, record, None), "", *_scores(cfg, [task], record),
             "## Use it", "", "```python", f"from transformers import {auto_class}, AutoTokenizer", "",
             f"model = {auto_class}.from_pretrained({folder!r})",
             f"tokenizer = AutoTokenizer.from_pretrained({folder!r})"]
    if hub_task in PIPELINES:
        lines += ["", "from transformers import pipeline", "",
                  f"print(pipeline({hub_task!r}, model={folder!r})({_pipeline_input(cfg, task)!r}))"]
    lines += ["```", ""]
    note = registry.get(spec.type).hf_card_note(spec)
    lines += [note, ""] if note else []
    return _front_matter(cfg, [task], record, task, "transformers",
                         hub_task if hub_task in PIPELINES else None) + "\n" + "\n".join(lines) + "\n"


def _pipeline_input(cfg: Config, task: str):
    item = example_input(cfg, task)
    return item if isinstance(item, str) else {"text": item["text"], "text_pair": item["text_pair"]}
