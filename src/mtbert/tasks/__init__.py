"""Task types: one module per type, each registered under its name (see base.py).

    from mtbert.tasks import registry
    registry.get("classification").default_metrics

The built-in types are registered on import, in this order (the order error messages list them).
"""

import importlib

from mtbert.tasks.base import TaskPredictions, TaskType, registry
from mtbert.tasks.metrics import (
    check_metric_fits,
    check_metric_name,
    default_metrics,
    metric_names,
    resolve_custom,
)

BUILTIN = ("classification", "regression", "multiple_choice", "sequence_labeling", "multilabel")
for _module in BUILTIN:
    importlib.import_module(f"mtbert.tasks.{_module}")

TASK_TYPES = registry.names()

__all__ = ["TASK_TYPES", "TaskPredictions", "TaskType", "build_head", "build_model", "registry", "check_metric_fits", "check_metric_name",
           "default_metrics", "metric_names", "resolve_custom"]


def build_head(spec, hidden_size: int, labels: list[str] | None, train_feats=None, name: str = ""):
    """The head of a task (`spec`, a TaskConfig); see TaskType.head."""
    return registry.get(spec.type).head(spec, hidden_size, labels, train_feats, name)


def build_model(tasks: dict, encoder, labels: dict[str, list[str] | None], train_feats: dict | None = None):
    """The one model factory: `encoder` and a head per task of `tasks` (the config's TaskConfigs), used by
    training (training.trainer.model_for_training adds what only training needs) and by loading a run dir
    (rundir.load_model, whose saved weights then replace the initial ones). `train_feats`: per task, the
    training features a head reads its statistics from (class weights, the regression mean); none when
    loading."""
    from mtbert.modeling.model import MultiTaskModel

    hidden, feats = encoder.config.hidden_size, train_feats or {}
    heads = {name: build_head(spec, hidden, labels.get(name), feats.get(name), name) for name, spec in tasks.items()}
    return MultiTaskModel(encoder, heads, dict(tasks))
