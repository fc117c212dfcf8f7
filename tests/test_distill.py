"""Distillation with teacher annealing (Clark et al. 2019): the loss mixes gold and teacher targets as
the formula says, the cached teacher outputs are the teacher's own, and compare's distill method trains
from the single-task runs it just made."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtbert.config import validate
from mtbert.data.features import IGNORE, collate
from mtbert.errors import UserError
from mtbert.modeling.encoder import load_tokenizer
from mtbert.modeling.heads import ClassificationHead, MultipleChoiceHead, RegressionHead, SequenceLabelingHead
from mtbert.training.distill import attach_teacher_targets, gold_weight
from mtbert.training.trainer import prepare_data, train


def _heads_and_targets():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    soft = torch.softmax(torch.randn(4, 3), -1)
    gold = torch.tensor([0, 2, 1, 1])
    tag_logits = torch.randn(2, 5, 3)
    tag_gold = torch.tensor([[0, 1, IGNORE, 2, IGNORE], [1, IGNORE, 0, IGNORE, IGNORE]])
    tag_soft = torch.softmax(torch.randn(2, 5, 3), -1) * (tag_gold != IGNORE).unsqueeze(-1)
    scores, targets, teacher_scores = torch.randn(4), torch.rand(4) * 5, torch.rand(4) * 5
    return [
        (ClassificationHead(8, 3), logits, gold, soft, F.cross_entropy(logits, soft, reduction="sum")),
        (ClassificationHead(8, 2, bce=True), logits[:, 0], gold.clamp(max=1),
         torch.stack([1 - soft[:, 0], soft[:, 0]], -1),
         F.binary_cross_entropy_with_logits(logits[:, 0], soft[:, 0], reduction="sum")),
        (MultipleChoiceHead(8), logits, gold, soft, F.cross_entropy(logits, soft, reduction="sum")),
        (RegressionHead(8), scores, targets, teacher_scores, F.mse_loss(scores, teacher_scores, reduction="sum")),
        (SequenceLabelingHead(8, 3), tag_logits, tag_gold, tag_soft,
         F.cross_entropy(tag_logits[tag_gold != IGNORE], tag_soft[tag_gold != IGNORE], reduction="sum")),
    ]


@pytest.mark.parametrize("case", range(5), ids=["classification", "bce", "multiple_choice", "regression", "tagging"])
def test_gold_weight_one_is_the_plain_loss_and_zero_the_teacher_loss(case):
    head, out, gold, soft, teacher_loss = _heads_and_targets()[case]
    plain = head.loss_terms(out, gold)
    assert torch.allclose(head.loss_terms(out, gold, soft, 1.0)[0], plain[0])
    assert torch.allclose(head.loss_terms(out, gold, soft, 0.0)[0], teacher_loss, atol=1e-5)
    assert torch.equal(head.loss_terms(out, gold, soft, 0.0)[1], plain[1])  # same count: same mean
    half = head.loss_terms(out, gold, soft, 0.25)[0]
    if isinstance(head, RegressionHead):  # the target is mixed, not the loss
        expected = F.mse_loss(out, 0.25 * gold + 0.75 * soft, reduction="sum")
    else:
        expected = 0.25 * plain[0] + 0.75 * teacher_loss
    assert torch.allclose(half, expected, atol=1e-5)


def test_gold_weight_rises_linearly_from_zero_to_one():
    assert [gold_weight(s, 5) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def _raw(toy_config, tmp_path, tasks, **training):
    return {**toy_config, "run_dir": str(tmp_path / "run"), "tasks": {t: toy_config["tasks"][t] for t in tasks},
            "training": {**toy_config["training"], "max_steps": 6, "eval_every": 6, **training}}


@pytest.fixture
def teacher(toy_config, tmp_path):
    """One run over all four toy tasks, as a teacher for each."""
    run = tmp_path / "teacher"
    train(validate(_raw(toy_config, tmp_path, list(toy_config["tasks"]))), run)
    return run


def test_cached_teacher_outputs_equal_a_fresh_teacher_forward(toy_config, tmp_path, teacher):
    from mtbert.inference.predictor import Predictor

    raw = _raw(toy_config, tmp_path, list(toy_config["tasks"]))
    cfg = validate(raw)
    data = prepare_data(cfg, load_tokenizer(cfg.backbone))
    fresh = Predictor(teacher, precision="fp32")
    for name, td in data.items():
        attach_teacher_targets(td, teacher, 16, "fp32", torch.device("cpu"))
        examples = td.train[:5]
        if td.type == "classification":
            want = fresh.predict(name, [{"text": ex.text} for ex in examples], return_probas=True)
            got = [dict(zip(td.labels, f.soft.tolist(), strict=True)) for f in td.train_feats[:5]]
            for g, w in zip(got, want, strict=True):
                assert g == pytest.approx(w["probas"], abs=1e-5)
        elif td.type == "regression":
            want = fresh.predict(name, [{"text": ex.text, "text_pair": ex.text_pair} for ex in examples])
            assert [f.soft for f in td.train_feats[:5]] == pytest.approx([w["score"] for w in want], abs=1e-5)
        elif td.type == "multiple_choice":
            want = fresh.predict(name, [{"text": ex.text, "choices": ex.choices} for ex in examples], return_probas=True)
            for f, w in zip(td.train_feats[:5], want, strict=True):
                assert f.soft == pytest.approx(np.array(w["probas"]), abs=1e-5)
        else:
            want = fresh.predict(name, [{"tokens": ex.tokens} for ex in examples])
            for f, w in zip(td.train_feats[:5], want, strict=True):
                firsts = [pos for pos, gold in enumerate(f.label) if gold != IGNORE]
                # each word's target is a distribution, and its argmax is the teacher's tag for the word
                assert np.allclose(f.soft[firsts].sum(-1), 1.0, atol=1e-5)
                assert [td.labels[int(f.soft[p].argmax())] for p in firsts] == w["label"][:len(firsts)]
        batch = collate(td.type, td.train_feats[:3], 0)
        assert batch["soft_labels"].shape[0] == 3


def test_training_with_teachers_runs_and_validates_the_teacher(toy_config, tmp_path, teacher):
    raw = _raw(toy_config, tmp_path, list(toy_config["tasks"]))
    for task in raw["tasks"].values():
        task["teacher"] = str(teacher)
    summary = train(validate(raw), tmp_path / "student")
    assert summary["steps"] == 6 and (tmp_path / "student" / "model" / "heads.safetensors").is_file()
    from mtbert.config import finish

    missing = {**raw, "tasks": {"sent": {**raw["tasks"]["sent"], "teacher": str(tmp_path / "nowhere")}}}
    with pytest.raises(UserError, match=r"tasks\.sent\.teacher: no trained model in .*nowhere"):
        finish(missing, tmp_path / "c.yaml")
    wrong = {**raw, "tasks": {"sts": {**raw["tasks"]["sent"], "teacher": str(teacher)}}}  # 'sts' there is regression
    with pytest.raises(UserError, match=r"tasks\.sts\.teacher: .* trained 'sts' as regression"):
        train(validate(wrong), tmp_path / "wrong")


def test_compare_distill_learns_from_the_single_task_runs_it_made(toy_config, write_config, tmp_path, capsys):
    from mtbert.cli import main

    raw = _raw(toy_config, tmp_path, ["sent", "sts"])
    path = write_config(raw)
    out = tmp_path / "cmp"
    assert main(["compare", str(path), "--methods", "plain,distill", "--run-dir", str(out)]) == 0, capsys.readouterr().err
    import yaml

    cfg = yaml.safe_load((out / "seed-1" / "multi-distill" / "config.yaml").read_text())
    assert cfg["tasks"]["sent"]["teacher"] == str(out / "seed-1" / "single-sent")
    assert cfg["tasks"]["sts"]["teacher"] == str(out / "seed-1" / "single-sts")
    report = json.loads((out / "compare.json").read_text())
    assert set(report["tables"]["-"]["rows"]["sent"]) == {"metric", "single-task", "plain", "distill"}
