"""report.md (the final dev table beside a baseline) and curves.png (loss and dev metric over steps)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mtbert.config import Config
from mtbert.io import atomic_write, atomic_write_text


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


def write_report(run_dir: Path, cfg: Config, summary: dict) -> None:
    best = summary["best"]
    lines = [f"# mtbert run: {run_dir.name}", "",
             f"- backbone: `{cfg.backbone}`; tasks: {', '.join(cfg.tasks)}",
             f"- steps: {summary['steps']}; training time: {summary['train_seconds']:.0f} s "
             f"(+ {summary['eval_seconds']:.0f} s evaluating); "
             f"precision: {summary['precision']}; schedule: {cfg.training.schedule}", ""]
    if best:
        lines += [f"Best evaluation at step {best['step']} (epoch {best['epoch']}), target "
                  f"`{cfg.training.target_metric}` = {best['target']:.4f}. Scores on dev:", "",
                  results_table(best["dev"], summary["primary"], summary["baseline"],
                                {n: t.type for n, t in cfg.tasks.items()}), ""]
    else:
        lines += ["No dev split was given, so nothing was evaluated; the final weights were saved.", ""]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))


def write_curves(run_dir: Path, loss_curve: list[tuple[int, str, float]], dev_curve: list[dict],
                 primary: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(12, 4.5))
    by_task = defaultdict(list)
    for step, task, loss in loss_curve:
        by_task[task].append((step, loss))
    for task, points in by_task.items():
        steps, losses = zip(*points, strict=True)
        window = max(1, len(losses) // 50)  # running mean: single-batch losses are too noisy to read
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        ax_loss.plot(steps, smooth, label=task)
    ax_loss.set(title="training loss (running mean)", xlabel="step", yscale="log")
    for task in primary:
        points = [(r["step"], r["dev"][task][primary[task]]) for r in dev_curve if task in r["dev"]]
        if points:
            steps, values = zip(*points, strict=True)
            ax_dev.plot(steps, values, marker="o", label=f"{task} {primary[task]}")
    ax_dev.set(title="dev metric", xlabel="step")
    for ax in (ax_loss, ax_dev):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(run_dir / "curves.png", lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
