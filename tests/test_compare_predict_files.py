"""`mtbert compare` and minBERT-format prediction files, on the tiny BERT."""

from __future__ import annotations

import json

import yaml

from mtbert.cli import main


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


def test_compare_writes_table_3_and_a_chart(toy_config, toy_data, write_config, tmp_path, capsys):
    path = _config(toy_config, toy_data, write_config, max_steps=4, eval_every=4)
    rc = main(["compare", str(path), "--run-dir", str(tmp_path / "cmp")])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "cmp"
    md = (out / "compare.md").read_text()
    assert md.splitlines()[0] == "| Task | Dataset | Training scheme | Metric | Score (pretrain / finetune) |"
    rows = [r for r in md.splitlines()[2:]]
    assert len(rows) == 4  # 2 tasks x (single, multi)
    assert any(r.startswith("| sent | Toy sentiment | single-task | accuracy |") for r in rows)
    assert (out / "compare.png").stat().st_size > 1000
    scores = json.loads((out / "compare.json").read_text())
    assert set(scores["sts"]) == {"single-task", "multi-task"}
    assert set(scores["sts"]["multi-task"]) == {"pretrain", "finetune"}
    # each run used its mode's preset, and single-task runs hold one task
    pre = yaml.safe_load((out / "pretrain/single-sts/config.yaml").read_text())
    assert list(pre["tasks"]) == ["sts"] and pre["training"]["freeze_encoder"] is True and pre["training"]["lr"] == 1e-3
    fine = yaml.safe_load((out / "finetune/multi-task/config.yaml").read_text())
    assert list(fine["tasks"]) == ["sent", "sts"] and fine["training"]["freeze_encoder"] is False
    assert main(["compare", str(path), "--run-dir", str(out)]) == 2  # refuses to overwrite
    assert main(["compare", str(path), "--modes", "warmup"]) == 2
    assert "--modes 'warmup'" in capsys.readouterr().err


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
