"""`mtbert compare`: the multi-task model against one single-task model per task, in each mode.

Same backbone, data and budget (epochs) for every run; single-task runs are the same code path with
one task. Writes the minBERT report's Table 3 layout as compare.md and a bar chart, compare.png.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from mtbert.config import finish
from mtbert.io import atomic_write, atomic_write_text
from mtbert.training.trainer import train

log = logging.getLogger("mtbert")


def _variant(raw: dict, mode: str, task: str | None) -> dict:
    raw = copy.deepcopy(raw)
    raw.setdefault("training", {})["mode"] = mode
    if task is not None:
        raw["tasks"] = {task: raw["tasks"][task]}
        target = raw["training"].get("target_metric", "mean")
        if target != "mean" and ":" not in target and target.split(".")[0] != task:
            raw["training"]["target_metric"] = "mean"
    return raw


def compare(raw: dict, config_path: str, modes: list[str], run_dir: Path) -> dict:
    """Train every (mode, scheme) and return {task: {scheme: {mode: score}}} of primary dev metrics."""
    tasks = list(raw["tasks"])
    scores: dict[str, dict[str, dict[str, float]]] = {t: {"single-task": {}, "multi-task": {}} for t in tasks}
    cfg = None
    for mode in modes:
        for task in [None, *tasks]:
            scheme = "multi-task" if task is None else "single-task"
            cfg = finish(_variant(raw, mode, task), config_path)
            out = run_dir / mode / ("multi-task" if task is None else f"single-{task}")
            log.info("compare: %s, %s%s", mode, scheme, f" ({task})" if task else "")
            summary = train(cfg, out)
            for name, metrics in (summary["best"] or {}).get("dev", {}).items():
                scores[name][scheme][mode] = metrics[summary["primary"][name]]
    cfg = finish(_variant(raw, modes[0], None), config_path)
    atomic_write_text(run_dir / "compare.json", json.dumps(scores, indent=2))
    atomic_write_text(run_dir / "compare.md", table(scores, cfg, modes))
    chart(scores, modes, run_dir / "compare.png")
    return scores


def table(scores: dict, cfg, modes: list[str]) -> str:
    """Task | Dataset | Training scheme | Metric | Score (mode / mode), best per task in bold."""
    lines = [f"| Task | Dataset | Training scheme | Metric | Score ({' / '.join(modes)}) |", "|---|---|---|---|---|"]
    for task, by_scheme in scores.items():
        spec = cfg.tasks[task]
        values = [v for s in by_scheme.values() for v in s.values()]
        best = max(values) if values else None
        for scheme, by_mode in by_scheme.items():
            cells = []
            for mode in modes:
                v = by_mode.get(mode)
                cells.append("n/a" if v is None else (f"**{v:.3f}**" if v == best else f"{v:.3f}"))
            lines.append(f"| {task} | {spec.dataset or task} | {scheme} | {spec.metrics[0]} | {' / '.join(cells)} |")
    return "\n".join(lines) + "\n"


def chart(scores: dict, modes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(task, scheme, mode) for task in scores for scheme in ("single-task", "multi-task") for mode in modes]
    fig, ax = plt.subplots(figsize=(max(6, len(bars) * 0.6), 4))
    colors = {("single-task", m): c for m, c in zip(modes, ("#9ecae1", "#3182bd", "#08519c"), strict=False)}
    colors.update({("multi-task", m): c for m, c in zip(modes, ("#fdae6b", "#e6550d", "#a63603"), strict=False)})
    for i, (task, scheme, mode) in enumerate(bars):
        v = scores[task][scheme].get(mode, 0.0)
        ax.bar(i, v, color=colors[(scheme, mode)], label=f"{scheme} {mode}")
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    per_task = 2 * len(modes)
    ax.set_xticks([i * per_task + (per_task - 1) / 2 for i in range(len(scores))], list(scores))
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=7)
    ax.set(ylabel="dev score (primary metric)", title="single-task vs multi-task")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
