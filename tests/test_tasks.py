"""The task-type registry (src/mtbert/tasks/): every type is complete, nothing outside tasks/ knows a type by
name, and the config reaches the registry without loading torch or the metric libraries."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtbert.errors import UserError
from mtbert.tasks import TaskType, registry

SRC = Path(__file__).resolve().parents[1] / "src" / "mtbert"


def test_every_type_says_what_it_needs():
    from mtbert.evaluation.metrics import METRICS

    assert registry.names()[:4] == ("classification", "regression", "multiple_choice", "sequence_labeling")
    for task_type in registry.all():
        assert task_type.columns and task_type.onnx_output and task_type.default_metrics
        assert set(task_type.default_metrics) <= set(task_type.metrics) <= set(METRICS)
        # a type reads rows, encodes, builds a head and decodes: the base class leaves none of these to chance
        for method in ("row_to_example", "encode", "head", "decode", "baseline"):
            assert getattr(type(task_type), method) is not getattr(TaskType, method), (task_type.name, method)


def test_unknown_type_names_the_known_ones():
    with pytest.raises(UserError, match="unknown task type 'multi_label'; did you mean 'multilabel'"):
        registry.get("multi_label")


def test_no_module_outside_tasks_branches_on_a_type_name():
    """The names may appear in strings and comments (messages, docs), never in a comparison or a lookup
    keyed by them. compat/ maps DeepPavlov's task types, which carry the same names, to ours."""
    names = "|".join(registry.names())
    branch = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*:""")
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("tasks/", "compat/")):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if branch.search(line.split("#")[0]):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_config_and_onnx_engine_load_no_torch_nor_metric_libraries():
    """The torch-free ONNX server validates configs through the registry: neither may pull in torch,
    sklearn, scipy or seqeval (they cost seconds and hundreds of MB the server never uses)."""
    code = ("import sys; import mtbert.config, mtbert.inference.onnx_predictor, mtbert.inference.common; "
            "print(sorted(m for m in ('torch', 'sklearn', 'scipy', 'seqeval') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC.parent), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
