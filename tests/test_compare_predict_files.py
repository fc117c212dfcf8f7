"""`mtbert compare` and minBERT-format prediction files, on the tiny BERT."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from mtbert.cli import main
from mtbert.errors import UserError


def _config(toy_config, toy_data, write_config, **training):
    (toy_data / "sts_test.tsv").write_text("sid\ts1\ts2\nq1\ta great movie\ta fine movie\nq2\tbad\tawful story\n")
    (toy_data / "sent_test.tsv").write_text("sid\tsentence\nx9\tgreat fun\nx7\tboring bad\nx8\tlovely\n")
    for name in ("sent", "sts"):  # the minBERT files carry an id column in every split
        for split in ("train", "dev"):
            lines = (toy_data / f"{name}_{split}.tsv").read_text().splitlines()
            rows = ["sid\t" + lines[0]] + [f"{split}{i}\t{line}" for i, line in enumerate(lines[1:])]
            (toy_data / f"{name}_{split}.tsv").write_text("\n".join(rows) + "\n")
    cfg = dict(toy_config)
    cfg["tasks"] = {
        "sent": {**toy_config["tasks"]["sent"], "test": "sent_test.tsv", "dataset": "Toy sentiment",
                 "columns": {"id": "sid", "text": "sentence", "label": "label"}, "metric": "accuracy"},
        "sts": {**toy_config["tasks"]["sts"], "test": "sts_test.tsv", "pair_encoding": "separate",
                "output_activation": "relu", "columns": {"id": "sid", "text": "s1", "text_pair": "s2", "label": "score"}},
    }
    cfg["training"] = {**toy_config["training"], "schedule": "minbert_round_robin", **training}
    cfg["training"].pop("lr")
    return write_config(cfg)


def test_compare_modes_write_a_table_per_mode_with_their_presets(toy_config, toy_data, write_config, tmp_path, capsys):
    path = _config(toy_config, toy_data, write_config, max_steps=4, eval_every=4)
    rc = main(["compare", str(path), "--modes", "pretrain,finetune", "--run-dir", str(tmp_path / "cmp")])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "cmp"
    md = (out / "compare.md").read_text()
    assert "## mode: pretrain" in md and "## mode: finetune" in md
    assert "| task | metric | single-task | multi-task: plain | difference (plain) |" in md
    assert (out / "compare.png").stat().st_size > 1000
    report = json.loads((out / "compare.json").read_text())
    assert set(report["tables"]) == {"pretrain", "finetune"}
    assert set(report["tables"]["pretrain"]["rows"]["sts"]) == {"metric", "single-task", "plain"}
    # each run used its mode's preset, and single-task runs hold one task
    pre = yaml.safe_load((out / "pretrain/seed-1/single-sts/config.yaml").read_text())
    assert list(pre["tasks"]) == ["sts"] and pre["training"]["freeze_encoder"] is True and pre["training"]["lr"] == 1e-3
    fine = yaml.safe_load((out / "finetune/seed-1/multi-plain/config.yaml").read_text())
    assert list(fine["tasks"]) == ["sent", "sts"] and fine["training"]["freeze_encoder"] is False
    assert main(["compare", str(path), "--modes", "warmup"]) == 2
    assert "--modes 'warmup'" in capsys.readouterr().err


def test_compare_without_modes_keeps_the_configs_own_hyper_parameters(toy_config, toy_data, write_config, tmp_path):
    """A config without lr trains at the default 5e-5 in compare as in train: no preset behind the user's back."""
    path = _config(toy_config, toy_data, write_config, max_steps=2, eval_every=2)
    assert main(["compare", str(path), "--run-dir", str(tmp_path / "cmp")]) == 0
    cfg = yaml.safe_load((tmp_path / "cmp/seed-1/multi-plain/config.yaml").read_text())
    assert cfg["training"]["lr"] == 5e-5 and cfg["training"]["mode"] is None
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "Dev scores, seed 1; lr 5e-05, 2 steps" in md  # one seed: no spread to speak of
    assert re.search(r"multi-task >= single-task on \d of 2 \(seed 1, best method: plain\)", md)


def test_compare_seeds_and_methods_table_with_spreads_and_resume(toy_config, toy_data, write_config, tmp_path, capsys):
    path = _config(toy_config, toy_data, write_config, max_steps=4, eval_every=2)
    out = tmp_path / "cmp"
    argv = ["compare", str(path), "--seeds", "3,4", "--methods", "plain,temperature,uncertainty", "--run-dir", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "compare.json").read_text())
    assert len(report["runs"]) == 2 * (2 + 3)  # per seed: 2 single-task runs, 3 multi-task methods
    row = report["tables"]["-"]["rows"]["sent"]
    assert len(row["single-task"]) == len(row["temperature"]) == 2  # one score per seed
    assert yaml.safe_load((out / "seed-4/multi-temperature/config.yaml").read_text())["training"]["schedule"] == "temperature"
    assert yaml.safe_load((out / "seed-3/multi-uncertainty/config.yaml").read_text())["training"]["loss_balancing"] == "uncertainty"
    assert yaml.safe_load((out / "seed-3/single-sts/config.yaml").read_text())["seed"] == 3
    md = (out / "compare.md").read_text()
    header = "| task | metric | single-task | multi-task: plain | multi-task: temperature | multi-task: uncertainty |"
    assert header in md and " ± " in md
    assert "| single-task | 2 |" in md and "| multi-task: plain | 1 |" in md  # cost rows: models stored
    assert re.search(r"multi-task >= single-task on \d of 2 \(mean of 2 seeds, best method: \w+\)", md)
    # scores are the evaluate path's: the saved model scored again gives the same numbers
    from mtbert.inference.predictor import evaluate_run
    run = next(r for r in report["runs"] if r["name"] == "seed-3/multi-plain")
    assert evaluate_run(out / "seed-3/multi-plain", "dev")[0] == run["scores"]
    costs = report["costs"]
    assert costs["single-task"]["parameters"] > costs["plain"]["parameters"]  # two encoders against one
    # a second call reuses every finished run: nothing trains again
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("seed-*/*/model/heads.safetensors")}
    (out / "seed-4" / "multi-uncertainty" / "compare-run.json").unlink()  # as if it had been interrupted
    assert main(argv) == 0
    again = {p: p.stat().st_mtime_ns for p in out.glob("seed-*/*/model/heads.safetensors")}
    changed = [p for p in stamps if again[p] != stamps[p]]
    assert changed == [] or all("multi-uncertainty" in str(p) for p in changed)
    # --rescore scores finished runs again through evaluate, and keeps them
    marker = out / "seed-3" / "multi-plain" / "compare-run.json"
    stale = json.loads(marker.read_text())
    stale["scores"] = {"sent": {"accuracy": -1.0}}
    marker.write_text(json.dumps(stale))
    assert main([*argv, "--rescore"]) == 0
    assert json.loads(marker.read_text())["scores"] == run["scores"]
    # every run records what trained it; a comparison whose runs come from two machines says so
    assert all(", torch " in r["machine"] and ", transformers " in r["machine"] for r in report["runs"])
    assert "different machines" not in md
    elsewhere = json.loads(marker.read_text())
    elsewhere["machine"] = "Another CPU, torch 2.13.0+cpu"
    marker.write_text(json.dumps(elsewhere))
    old_style = out / "seed-4" / "single-sts" / "compare-run.json"  # written before machines were recorded
    old_marker = json.loads(old_style.read_text())
    del old_marker["machine"]
    old_style.write_text(json.dumps(old_marker))
    assert main(argv) == 0
    md = (out / "compare.md").read_text()
    assert "trained on different machines" in md and "Another CPU, torch 2.13.0+cpu: seed-3/multi-plain;" in md
    assert "not recorded: seed-4/single-sts" in md
    assert main(["compare", str(path), "--seeds", "3,x"]) == 2
    assert "--seeds '3,x'" in capsys.readouterr().err
    assert main(["compare", str(path), "--methods", "plain,magic"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err


def test_minbert_prediction_files(toy_config, toy_data, write_config, tmp_path, capsys):
    path = _config(toy_config, toy_data, write_config, max_steps=2, eval_every=2)
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    out = tmp_path / "preds"
    assert main(["predict", str(tmp_path / "run"), "--split", "test", "--format", "minbert", "--output", str(out)]) == 0
    sent = (out / "sent-test-output.csv").read_text().splitlines()
    assert sent[0] == "id \t Predicted_Sentiment "
    assert [line.split(" , ")[0] for line in sent[1:]] == ["x9", "x7", "x8"]  # input order
    assert all(line.split(" , ")[1].strip() in ("pos", "neg") for line in sent[1:])
    sts = (out / "sts-test-output.csv").read_text().splitlines()
    assert sts[0] == "id \t Predicted_Similiary "
    assert [line.split(" , ")[0] for line in sts[1:]] == ["q1", "q2"]
    assert all(float(line.split(" , ")[1]) >= 0 for line in sts[1:])  # ReLU head
    assert main(["predict", str(tmp_path / "run"), "--split", "dev", "--output", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "sent-dev-predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and "label" in rows[0] and rows[0]["text"]
    assert main(["predict", str(tmp_path / "run")]) == 2
    assert "give --task TASK" in capsys.readouterr().err


def test_long_method_lengthens_only_the_multi_task_run(tmp_path):
    """`long` trains the multi-task model 1.5x the config's epochs (or max_steps); single-task runs keep theirs."""
    from mtbert.training.compare import plan

    raw = {"tasks": {"a": {}, "b": {}}, "training": {"epochs": 2}}
    jobs = {j.name: j for j in plan(raw, [1], ["temperature+long"], [None], tmp_path)}
    assert jobs["seed-1/multi-temperature+long"].raw["training"] == {"epochs": 3.0, "schedule": "temperature"}
    assert jobs["seed-1/single-a"].raw["training"] == {"epochs": 2}
    steps = {j.name: j for j in plan({"tasks": {"a": {}}, "training": {"max_steps": 101}}, [1], ["long"], [None], tmp_path)}
    assert steps["seed-1/multi-long"].raw["training"] == {"max_steps": 152}
    default = plan({"tasks": {"a": {}}}, [1], ["long"], [None], tmp_path)[-1]
    assert default.raw["training"] == {"epochs": 4.5}  # the default 3 epochs, lengthened


def test_parallel_compare_starts_the_longest_chain_first(tmp_path):
    """With --jobs, the multi-task runs start before the single-task ones, except that a single-task run
    some multi-task run waits for as teacher (distill) comes before everything that nobody waits for."""
    from mtbert.training.compare import critical_path_order, plan

    raw = {"tasks": {"a": {}, "b": {}, "c": {}}, "training": {"epochs": 2}}
    order = [j.name for j in critical_path_order(plan(raw, [1], ["plain", "temperature+long"], [None], tmp_path))]
    assert order == ["seed-1/multi-temperature+long", "seed-1/multi-plain",
                     "seed-1/single-a", "seed-1/single-b", "seed-1/single-c"]
    order = [j.name for j in critical_path_order(plan(raw, [1], ["plain", "distill"], [None], tmp_path))]
    assert order[:3] == ["seed-1/single-a", "seed-1/single-b", "seed-1/single-c"]  # the teachers
    assert order[3:] == ["seed-1/multi-plain", "seed-1/multi-distill"]
    # with the training sets' sizes, the biggest task's single-task run comes first among them, and a
    # multi-task run still before every single-task one
    sized = critical_path_order(plan(raw, [1], ["plain"], [None], tmp_path), {"a": 400, "b": 14000, "c": 8500})
    assert [j.name for j in sized] == ["seed-1/multi-plain", "seed-1/single-b", "seed-1/single-c",
                                       "seed-1/single-a"]
    steps = {"tasks": {"a": {}, "b": {}}, "training": {"max_steps": 100}}  # a multi-task run takes as many steps
    assert [j.name for j in critical_path_order(plan(steps, [1], ["long", "plain"], [None], tmp_path))][0] == \
        "seed-1/multi-long"


def test_train_sizes_are_the_training_sets_as_training_reads_them(toy_config, toy_data, write_config):
    from mtbert.config import finish, load_raw
    from mtbert.training.compare import train_sizes

    path = _config(toy_config, toy_data, write_config)
    expected = {name: len((toy_data / f"{name}_train.tsv").read_text().splitlines()) - 1 for name in ("sent", "sts")}
    assert train_sizes(finish(load_raw(str(path), []), str(path))) == expected


def test_a_damaged_run_marker_is_trained_again_not_a_traceback(tmp_path):
    """compare-run.json that is valid JSON of the wrong shape (a list, scores as text, a task or the primary
    metric missing) counts as unfinished, as a half-written one does: the run resumes and is scored again."""
    from mtbert.training.compare import MARKER, _read_marker, plan

    job = plan({"tasks": {"a": {}, "b": {}}}, [1], ["plain"], [None], tmp_path)[-1]
    good = {"identity": job.identity, "name": job.name, "scheme": "multi-task", "method": "plain", "seed": 1,
            "mode": None, "scores": {"a": {"accuracy": 0.5}, "b": {"pearson": 0.25}},
            "primary": {"a": "accuracy", "b": "pearson"}, "precision": "fp32", "train_minutes": 1, "parameters": 10}
    job.run_dir.mkdir(parents=True)
    marker = job.run_dir / MARKER
    marker.write_text(json.dumps(good))
    assert _read_marker(job) == good
    for damaged in ([], {**good, "scores": "x"}, {**good, "scores": {"a": {"accuracy": "high"}, "b": {"pearson": 0.2}}},
                    {k: v for k, v in good.items() if k != "primary"}, {**good, "scores": {"a": {"accuracy": 0.5}}},
                    {**good, "primary": {"a": "f1", "b": "pearson"}}, {**good, "train_minutes": "long"}):
        marker.write_text(json.dumps(damaged))
        assert _read_marker(job) is None, damaged
    marker.write_text(json.dumps({**good, "identity": "another"}))
    with pytest.raises(UserError, match="trained from another config"):
        _read_marker(job)


def test_compare_methods_and_seeds_are_refused_when_repeated_or_empty():
    from mtbert.training.compare import parse_methods, parse_seeds

    assert parse_methods("long+temperature, distill+temperature") == ["temperature+long", "temperature+distill"]
    for bad, says in (("plain,plain", "named twice"), ("temperature+long,long+temperature", "named twice"),
                      ("long+long", "names a method twice"), ("plain+temperature", "joins with nothing"),
                      ("", "at least one"), ("temprature", "unknown method 'temprature'")):
        with pytest.raises(UserError, match=says):
            parse_methods(bad)
    for bad in ("", " ", "1,1", "x"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)


def test_an_interrupted_run_crosses_from_a_worker_process_intact():
    """compare --jobs gets TrainingInterrupted back from its worker by pickle: it must survive the trip."""
    import pickle

    from mtbert.training.trainer import TrainingInterrupted

    back = pickle.loads(pickle.dumps(TrainingInterrupted(7, Path("run"), 15, False)))
    assert (back.step, back.run_dir, back.signum, back.is_main, str(back)) == (7, Path("run"), 15, False,
                                                                              "interrupted at step 7")


def test_an_interrupted_compare_says_how_to_continue(toy_config, toy_data, write_config, tmp_path, capsys, monkeypatch):
    """Ctrl-C or SIGTERM during compare (in a worker or the parent), or a worker killed outright: one line
    that says the finished runs are kept and gives the command that continues, never a traceback."""
    from concurrent.futures.process import BrokenProcessPool

    import mtbert.training.compare as compare_module
    from mtbert.training.trainer import TrainingInterrupted

    path = _config(toy_config, toy_data, write_config, max_steps=4)
    argv = ["compare", str(path), "--jobs", "2", "--run-dir", str(tmp_path / "cmp"), "--overwrite"]
    for raised, code in ((TrainingInterrupted(3, tmp_path, 15), 143), (KeyboardInterrupt(), 130),
                         (BrokenProcessPool("gone"), 2)):
        def stopped(*args, raised=raised, **kwargs):
            raise raised

        monkeypatch.setattr(compare_module, "compare", stopped)
        assert main(argv) == code
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "finished runs are kept" in err, err
        assert err.endswith(f"continue with mtbert compare {path} --jobs 2 --run-dir {tmp_path / 'cmp'}")
