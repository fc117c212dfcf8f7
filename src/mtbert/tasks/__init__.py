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

__all__ = ["TASK_TYPES", "TaskPredictions", "TaskType", "build_head", "registry", "check_metric_fits", "check_metric_name",
           "default_metrics", "metric_names", "resolve_custom"]


def build_head(spec, hidden_size: int, labels: list[str] | None, train_feats=None, name: str = ""):
    """The head of a task (`spec`, a TaskConfig); see TaskType.head."""
    return registry.get(spec.type).head(spec, hidden_size, labels, train_feats, name)
