"""Task types (DeepPavlov's names) and what each needs."""

from __future__ import annotations

from mtbert.evaluation.metrics import METRICS, METRICS_FOR_TYPE, resolve_custom

TASK_TYPES = ("classification", "regression", "multiple_choice", "sequence_labeling")

DEFAULT_METRICS = {
    "classification": ["accuracy"],
    "regression": ["pearson", "spearman"],
    "multiple_choice": ["accuracy"],
    "sequence_labeling": ["ner_f1"],
}


def default_metrics(task_type: str) -> list[str]:
    return list(DEFAULT_METRICS[task_type])


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
    if name not in METRICS:
        raise ValueError(f"unknown metric '{name}'; use one of {', '.join(METRICS)} or 'module:function'")



def check_metric_fits(name: str, task_type: str) -> None:
    """Raise ValueError for a built-in metric that does not score this task type (ner_f1 on a classifier,
    accuracy on a regression): found at validation, not at the first dev evaluation after training time."""
    if ":" in name or name not in METRICS:
        return
    fitting = METRICS_FOR_TYPE[task_type]
    if name not in fitting:
        raise ValueError(f"'{name}' does not apply to {task_type} tasks; use one of {', '.join(fitting)} "
                         "or 'module:function'")
