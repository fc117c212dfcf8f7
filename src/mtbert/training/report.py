"""report.md (the best dev table beside a baseline) and curves.png (loss, dev metric and learning rate over
steps). Training rewrites both, whole, after every evaluation, so a run stopped at any point leaves a
current report."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mtbert.config import Config
from mtbert.evaluation.tables import results_table
from mtbert.io import atomic_write, atomic_write_text


def write_report(run_dir: Path, cfg: Config, summary: dict) -> None:
    best = summary["best"]
    steps = str(summary["steps"]) if summary["finished"] else \
        f"{summary['steps']} of {summary['total_steps']} so far (rewritten at every evaluation)"
    lines = [f"# mtbert run: {run_dir.name}", "",
             f"- backbone: `{cfg.backbone}`; tasks: {', '.join(cfg.tasks)}",
             f"- steps: {steps}; training time: {summary['train_seconds']:.0f} s "
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


def task_colours(tasks: list[str]) -> dict[str, str]:
    """One colour per task, in the config's order, so a task has the same colour in every panel (and in
    every run of the same config). Ten tasks fit tab10, twenty tab20; beyond, colours repeat."""
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(tasks) <= 10 else "tab20"]
    return {task: matplotlib.colors.to_hex(palette(i % palette.N)) for i, task in enumerate(tasks)}


def write_curves(run_dir: Path, loss_curve: list[tuple[int, str, float]], dev_curve: list[dict],
                 primary: dict[str, str], lr_curve: list[tuple[int, float]]) -> None:
    """`primary`: each task's primary metric, in the config's order; `lr_curve`: (step, learning rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colours = task_colours(list(primary))
    fig, (ax_loss, ax_dev, ax_lr) = plt.subplots(1, 3, figsize=(16, 4.5))
    by_task = defaultdict(list)
    for step, task, loss in loss_curve:
        by_task[task].append((step, loss))
    for task, points in by_task.items():
        steps, losses = zip(*points, strict=True)
        window = max(1, len(losses) // 50)  # running mean: single-batch losses are too noisy to read
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        ax_loss.plot(steps, smooth, label=task, color=colours[task])
    ax_loss.set(title="training loss (running mean)", xlabel="step", yscale="log")
    for task in primary:
        points = [(r["step"], r["dev"][task][primary[task]]) for r in dev_curve if task in r["dev"]]
        if points:
            steps, values = zip(*points, strict=True)
            ax_dev.plot(steps, values, marker="o", label=f"{task} {primary[task]}", color=colours[task])
    ax_dev.set(title="dev metric", xlabel="step")
    if lr_curve:
        steps, rates = zip(*lr_curve, strict=True)
        ax_lr.plot(steps, rates, color="black")
    ax_lr.set(title="learning rate (as in metrics.jsonl)", xlabel="step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in (ax_loss, ax_dev, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no tick at step 2.5
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(run_dir / "curves.png", lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
