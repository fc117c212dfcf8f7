"""Metric names as the config checks them, without the metric libraries: which names exist, which fit a
task type, and `module:function` references. The functions themselves are in evaluation/metrics.py
(sklearn, scipy, seqeval), imported only where scores are computed."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from mtbert.errors import UserError
from mtbert.tasks.base import registry


def metric_names() -> list[str]:
    """Every built-in metric, in the order the task types list them."""
    return list(dict.fromkeys(m for t in registry.all() for m in t.metrics))


def default_metrics(task_type: str) -> list[str]:
    return list(registry.get(task_type).default_metrics)


def resolve_custom(ref: str) -> Callable:
    """`package.module:function` -> the function. Runs user code by design: the one place a custom metric is
    imported, called only for a config the user passed (never for a saved run's or bundle's)."""
    module_name, _, func_name = ref.partition(":")
    if not module_name or not func_name:
        raise UserError(f"metric '{ref}': expected 'module.submodule:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"metric '{ref}': cannot import module '{module_name}' ({err}); is it on PYTHONPATH?") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise UserError(f"metric '{ref}': module '{module_name}' has no function '{func_name}'")
    return fn


def check_metric_name(name: str, import_custom: bool = True) -> None:
    """Raise ValueError (which the config turns into a key-path message) for an unknown metric.

    A `module:function` is imported to check it, unless `import_custom` is False: a run dir's saved config
    is loaded without importing the code it names (a run dir from elsewhere must not run code on load)."""
    if ":" in name:
        if not import_custom:
            module, _, func = name.partition(":")
            if not module or not func:
                raise ValueError(f"metric '{name}': expected 'module.submodule:function'")
            return
        try:
            resolve_custom(name)
        except Exception as err:  # UserError or anything the import raised
            raise ValueError(str(err)) from None
        return
    if name not in metric_names():
        raise ValueError(f"unknown metric '{name}'; use one of {', '.join(metric_names())} or 'module:function'")


def check_metric_fits(name: str, task_type: str) -> None:
    """Raise ValueError for a built-in metric that does not score this task type (ner_f1 on a classifier,
    accuracy on a regression): found at validation, not at the first dev evaluation after training time."""
    if ":" in name or name not in metric_names():
        return
    fitting = registry.get(task_type).metrics
    if name not in fitting:
        raise ValueError(f"'{name}' does not apply to {task_type} tasks; use one of {', '.join(fitting)} "
                         "or 'module:function'")
