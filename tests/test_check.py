"""`mtbert check`: what train would do, told before training: sizes, labels, truncation, steps, the
schedule's task mix and a time estimate; a config or data mistake exits 2 as train would."""

from __future__ import annotations

import re

import pytest

from mtbert.cli import main
from mtbert.data.schedule import TaskSchedule


def _row(out: str, task: str) -> list[str]:
    row = re.search(rf"^\| {task} \|.*$", out, re.M)
    assert row, out
    return [c.strip() for c in row.group(0).strip("|").split("|")]


def test_check_reports_sizes_labels_steps_mix_and_an_estimate(toy_config, write_config, capsys):
    path = write_config({**toy_config, "training": {**toy_config["training"], "schedule": "proportional"}})
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    # sizes as the readers give them: sent has 20 train rows (the file twice), 10 dev
    assert _row(out, "sent")[:4] == ["sent", "classification", "20", "10"]
    assert _row(out, "ner")[:4] == ["ner", "sequence_labeling", "4", "2"]
    assert re.search(r"- sent: (pos|neg) 10 \(50\.0%\), (pos|neg) 10 \(50\.0%\)", out)
    assert re.search(r"- sts: scores 0\.5 to 5, mean", out)
    assert re.search(r"- ner: tags: O \d+", out)
    steps = re.search(r"^steps: 12 \((\d+) per epoch, ([0-9.]+) epochs\), 2 dev evaluation\(s\) \(after steps 6, 12\)",
                      out, re.M)
    assert steps, out
    # the expected mix of the first epoch: proportional to each task's batches, summing to its steps
    header = next(line for line in out.splitlines() if line.startswith("| epoch | steps |"))
    tasks = [c.strip() for c in header.strip("|").split("|")][2:]
    first = [float(c) for c in _row(out, "1")[1:]]
    assert first[0] == pytest.approx(sum(first[1:]), abs=len(tasks))  # each cell is rounded
    assert re.search(r"estimate on this machine \(\d+ thread\(s\), fp32\): training [0-9.]+ (s|min), dev "
                     r"evaluations [0-9.]+ (s|min)", out)
    assert "resolved config:" in out and "backbone:" in out.split("resolved config:")[1]


def test_check_counts_the_inputs_max_length_cuts(toy_config, write_config, capsys):
    # max_length 9 (the smallest allowed is above 8) cuts the toy pairs and choices, and never NER's words alone
    raw = {**toy_config, "max_length": 9}
    assert main(["check", str(write_config(raw)), "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert float(_row(out, "sts")[5].rstrip("%")) > 0
    assert "estimate on this machine" not in out
    assert main(["check", str(write_config(toy_config)), "--no-timing"]) == 0
    assert _row(capsys.readouterr().out, "sts")[5] == "0.0%"


def test_check_fails_as_train_would(toy_config, write_config, toy_data, capsys):
    (toy_data / "sent_train.tsv").write_text("sentence\tlabel\nfine\n")
    assert main(["check", str(write_config(toy_config))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtbert: error: ") and "sent_train.tsv" in err
    assert main(["check", str(write_config(toy_config)), "--set", "training.lr=-1"]) == 2


def test_check_says_when_the_run_dir_already_holds_a_run(toy_config, write_config, tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    assert main(["check", str(write_config(toy_config)), "--run-dir", str(run), "--no-timing"]) == 0
    assert f"run dir: {run} holds a run" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["proportional", "uniform", "annealed", "temperature", "round_robin",
                                  "minbert_round_robin"])
def test_expected_steps_sum_to_the_epoch_and_follow_the_schedule(kind):
    sizes = {"a": 40, "b": 10, "c": 5}
    schedule = TaskSchedule(kind, sizes, epochs=3, seed=0, temperature=2.0)
    mix = schedule.expected_steps(1, 55)
    assert sum(mix.values()) == pytest.approx(55)
    assert mix["a"] >= mix["b"] >= mix["c"] if kind not in ("uniform", "round_robin") else len(set(mix.values())) == 1
    if kind == "minbert_round_robin":  # the fixed order: the counts in one cycle, scaled to the steps
        cycle = schedule.sequence
        assert mix["b"] == pytest.approx(55 * cycle.count("b") / len(cycle))
    if kind in ("proportional", "annealed", "temperature"):
        assert mix["a"] / 55 == pytest.approx(schedule.probabilities(1)[0])
