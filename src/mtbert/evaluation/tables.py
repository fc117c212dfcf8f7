"""Scores as a markdown table: report.md, the model card and `mtbert evaluate` print the same one."""

from __future__ import annotations


def results_table(scores: dict[str, dict[str, float]], primary: dict[str, str],
                  baseline: dict[str, dict[str, float]] | None = None, types: dict[str, str] | None = None) -> str:
    """A markdown table: one row per task and metric, then the mean of the primary metrics."""
    head = "| task | type | metric | score |" + (" baseline |" if baseline else "")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for task, metrics in scores.items():
        for metric, value in metrics.items():
            mark = " (primary)" if metric == primary.get(task) else ""
            row = f"| {task} | {(types or {}).get(task, '')} | {metric}{mark} | {value:.4f} |"
            if baseline:
                base = baseline.get(task, {}).get(metric)
                row += f" {base:.4f} |" if base is not None else " |"
            rows.append(row)
    mean = sum(scores[t][primary[t]] for t in scores) / max(len(scores), 1)
    rows.append(f"| **mean** | | primary metrics | {mean:.4f} |" + (" |" if baseline else ""))
    return "\n".join(rows)
