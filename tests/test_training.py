"""Training on the tiny BERT: one task per step, idle heads untouched, repeatable, run dir complete."""

from __future__ import annotations

import json

import pytest
import torch

from mtbert.config import validate
from mtbert.data.features import collate
from mtbert.modeling.encoder import load_tokenizer
from mtbert.training.trainer import (
    LrSchedule,
    make_optimizer,
    model_for_training,
    prepare_data,
    seed_everything,
    train,
)


def _cfg(toy_config, **training):
    raw = dict(toy_config)
    raw["training"] = {**toy_config["training"], **training}
    return validate(raw)


def test_idle_heads_stay_bit_identical_through_a_step(toy_config):
    """DeepPavlov's promise, made true: a step on one task leaves every other head's weights and
    optimiser state exactly as they were, weight decay included."""
    cfg = _cfg(toy_config, weight_decay=0.1)
    tok = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tok)
    seed_everything(0)
    model = model_for_training(cfg, data)
    opt = make_optimizer(model, cfg)

    def step(task):
        td = data[task]
        batch = collate(td.type, td.train_feats[:4], tok.pad_token_id)
        model.loss(task, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step("ner")  # gives ner's head optimiser state, so we can check it is not touched later either
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state_before = {n: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
                    for n, p in model.named_parameters() if p in opt.state}
    step("sent")
    for name, p in model.named_parameters():
        if name.startswith(("heads.sts.", "heads.mc.", "heads.ner.")):
            assert torch.equal(p, before[name]), f"{name} changed in a step of another task"
            for k, v in state_before.get(name, {}).items():
                assert torch.equal(torch.as_tensor(opt.state[p][k]), torch.as_tensor(v)), f"{name} state {k} changed"
            if not name.startswith("heads.ner."):
                assert p not in opt.state
        if name.startswith("heads.sent.") or name == "encoder.embeddings.word_embeddings.weight":
            assert not torch.equal(p, before[name]), f"{name} should have trained"


def test_training_is_repeatable_and_writes_a_complete_run_dir(toy_config, tmp_path):
    cfg = _cfg(toy_config)
    summary = train(cfg, tmp_path / "a")
    run = tmp_path / "a"
    for f in ("config.yaml", "metrics.jsonl", "report.md", "curves.png", "model/heads.safetensors",
              "model/labels.json", "model/config.yaml", "model/encoder/config.json",
              "model/encoder/model.safetensors", "model/encoder/tokenizer.json"):
        assert (run / f).is_file(), f
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [6, 12]
    assert set(lines[0]["dev"]) == {"sent", "sts", "mc", "ner"}
    assert "baseline" in (run / "report.md").read_text()
    labels = json.loads((run / "model/labels.json").read_text())
    assert labels["sent"] == ["neg", "pos"] and labels["ner"][0] == "O"
    assert not list(run.glob(".*tmp")) and not (run / "model.old").exists()

    summary2 = train(_cfg(toy_config), tmp_path / "b")
    assert summary["best"]["dev"] == summary2["best"]["dev"]
    from safetensors.torch import load_file

    a, b = load_file(run / "model/heads.safetensors"), load_file(tmp_path / "b/model/heads.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_learns_the_toy_tasks(toy_config, tmp_path):
    cfg = _cfg(toy_config, max_steps=120, eval_every=120, lr=3e-3, warmup=0.0)
    summary = train(cfg, tmp_path / "run")
    dev = summary["best"]["dev"]
    assert dev["sent"]["accuracy"] >= 0.9
    assert dev["ner"]["ner_f1"] >= 0.5
    assert dev["sts"]["pearson"] > 0.5


def test_freeze_encoder_trains_only_heads(toy_config):
    cfg = _cfg(toy_config, freeze_encoder=True)
    tok = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tok)
    model = model_for_training(cfg, data)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("heads.") for n in trainable)
    names = {id(p) for g in make_optimizer(model, cfg).param_groups for p in g["params"]}
    assert names == {id(p) for p in model.parameters() if p.requires_grad}


def test_freeze_embeddings_keeps_layers_trainable(toy_config):
    cfg = _cfg(toy_config, freeze_embeddings=True)
    model = model_for_training(cfg, prepare_data(cfg, load_tokenizer(cfg.backbone)))
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not any(v for n, v in grads.items() if ".embeddings." in n)
    assert any(v for n, v in grads.items() if ".layer." in n)


def test_optimizer_has_no_decay_on_bias_and_layernorm(toy_config):
    cfg = _cfg(toy_config, weight_decay=0.05, head_lr=1e-2)
    model = model_for_training(cfg, prepare_data(cfg, load_tokenizer(cfg.backbone)))
    opt = make_optimizer(model, cfg)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        g = by_param[id(p)]
        if name.endswith("bias") or "LayerNorm" in name:
            assert g["weight_decay"] == 0.0, name
        else:
            assert g["weight_decay"] == 0.05, name
        assert g["lr"] == (1e-2 if name.startswith("heads.") else cfg.training.lr), name


def test_lr_schedule_warmup_decay_and_plateau_drop():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    s = LrSchedule(opt, total_steps=100, warmup=0.1, div=2.0, min_lr=0.3)
    s.set(0)
    assert s.lr == pytest.approx(1 / 11)
    s.set(10)
    assert s.lr == pytest.approx(1.0)
    s.set(55)
    assert s.lr == pytest.approx(0.5)
    assert s.drop()
    s.set(10)
    assert s.lr == pytest.approx(0.5)
    assert not s.drop()  # 0.25 would fall under min_lr
    assert s.factor == 0.5


def test_early_stopping_and_lr_drop_follow_the_target(toy_config, tmp_path, monkeypatch):
    from mtbert.training import trainer as tr

    values = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    monkeypatch.setattr(tr, "target_value", lambda *a, **k: next(values))
    drops = []
    monkeypatch.setattr(tr.LrSchedule, "drop", lambda self, floor=False: drops.append(1) or True)
    cfg = _cfg(toy_config, max_steps=60, eval_every=2, patience=3, lr_drop_patience=1)
    summary = train(cfg, tmp_path / "run")
    assert summary["steps"] == 8  # evals at 2, 4, 6, 8: best at 2, then three without improvement
    assert summary["best"]["step"] == 2
    assert len(drops) == 3


def test_custom_target_metric(toy_config, tmp_path, monkeypatch):
    mod = tmp_path / "my_target.py"
    mod.write_text("def target(outputs):\n    return float(len(outputs['sent']['y_true']))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _cfg(toy_config, target_metric="my_target:target")
    summary = train(cfg, tmp_path / "run")
    assert summary["best"]["target"] == 10.0


def test_task_metric_target_adds_the_metric(toy_config, tmp_path):
    cfg = _cfg(toy_config, target_metric="sts.spearman", max_steps=4, eval_every=4)
    summary = train(cfg, tmp_path / "run")
    assert summary["best"]["target"] == summary["best"]["dev"]["sts"]["spearman"]


def test_gradient_accumulation_and_class_weights(toy_config, tmp_path):
    raw = dict(toy_config)
    raw["tasks"] = {k: dict(v) for k, v in toy_config["tasks"].items()}
    raw["tasks"]["sent"]["class_weights"] = "balanced"
    raw["training"] = {**toy_config["training"], "gradient_accumulation_steps": 2, "max_steps": 4, "eval_every": 4}
    cfg = validate(raw)
    summary = train(cfg, tmp_path / "run")
    assert summary["steps"] == 4
    from mtbert.rundir import load_model

    _, model, _, _ = load_model(tmp_path / "run")
    assert torch.allclose(model.heads["sent"].class_weights, torch.tensor([1.0, 1.0]))


def test_constant_lr_schedule_keeps_the_rate_after_warmup():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    s = LrSchedule(opt, total_steps=100, warmup=0.0, div=2.0, min_lr=0.0, kind="constant")
    for step in (0, 50, 99):
        s.set(step)
        assert s.lr == 1.0
    s.drop()
    s.set(99)
    assert s.lr == 0.5


def test_compiled_encoder_trains_the_eager_model(toy_config, tiny_bert_no_dropout, tmp_path):
    """training.compile: the encoder compiled in place (inductor, dynamic shapes) gives the eager run's
    losses and weights, and the run dir keeps the eager parameter names."""
    from safetensors.torch import load_file

    raw = {**toy_config, "backbone": tiny_bert_no_dropout,
           "training": {**toy_config["training"], "max_steps": 3, "eval_every": 3}}
    for task in raw["tasks"].values():
        task["dropout"] = 0.0  # compiled and eager dropout draw different masks
    eager = train(validate(raw), tmp_path / "eager")
    raw["training"]["compile"] = True
    compiled = train(validate(raw), tmp_path / "compiled")
    assert compiled["best"]["train_loss"] == pytest.approx(eager["best"]["train_loss"], abs=1e-4)
    a = load_file(tmp_path / "eager/model/encoder/model.safetensors")
    b = load_file(tmp_path / "compiled/model/encoder/model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_every_token_weighs_the_same_however_the_batches_group_lengths(toy_config):
    """The sequence-labeling loss divides by the batch's examples times the training set's mean
    labelled tokens: over an epoch of equal-size batches the mean of the batch losses is then the token
    mean, whether the batches hold mixed lengths or only short (or only long) lines."""
    from mtbert.data.features import IGNORE
    from mtbert.modeling.heads import SequenceLabelingHead

    cfg = _cfg(toy_config)
    data = prepare_data(cfg, load_tokenizer(cfg.backbone))
    model = model_for_training(cfg, data)
    labelled = [sum(t != IGNORE for t in f.label) for f in data["ner"].train_feats]
    assert model.heads["ner"].tokens_per_example == pytest.approx(sum(labelled) / len(labelled))
    assert not hasattr(model.heads["sent"], "tokens_per_example")

    # eight examples with 1..8 labelled tokens
    lengths = torch.arange(1, 9)
    labels = torch.randint(0, 3, (8, 8), generator=torch.Generator().manual_seed(0))
    labels[torch.arange(8)[None, :] >= lengths[:, None]] = IGNORE
    logits = torch.randn(8, 8, 3, generator=torch.Generator().manual_seed(1))
    token_mean = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    head = SequenceLabelingHead(8, 3, tokens_per_example=lengths.float().mean().item())

    def epoch_loss(h, order):
        return torch.stack([h.loss(logits[b], labels[b]) for b in order.view(4, 2)]).mean().item()

    grouped, mixed = torch.arange(8), torch.tensor([0, 7, 1, 6, 2, 5, 3, 4])
    for order in (grouped, mixed):
        assert epoch_loss(head, order) == pytest.approx(token_mean.item(), rel=1e-5)
    # the batch's own token mean instead gives the tokens of short batches more weight when lengths are grouped
    plain = SequenceLabelingHead(8, 3)
    assert epoch_loss(plain, mixed) == pytest.approx(token_mean.item(), rel=1e-5)
    assert epoch_loss(plain, grouped) != pytest.approx(token_mean.item(), rel=1e-2)


def test_length_grouping_can_be_switched_per_task(toy_config, tmp_path, monkeypatch):
    """tasks.X.length_grouping overrides training.length_grouping for that task's batches only."""
    import mtbert.training.trainer as trainer
    from mtbert.data.features import length_grouped_batches

    asked = {}

    def recording(feats, batch_size, rng, group=True):
        asked[id(feats)] = group
        return length_grouped_batches(feats, batch_size, rng, group=group)

    monkeypatch.setattr(trainer, "length_grouped_batches", recording)
    raw = dict(toy_config)
    raw["tasks"] = {**toy_config["tasks"], "ner": {**toy_config["tasks"]["ner"], "length_grouping": False}}
    cfg = validate(raw)
    assert (cfg.length_grouping("ner"), cfg.length_grouping("sent")) == (False, True)
    data = {}
    real_prepare = trainer.prepare_data
    monkeypatch.setattr(trainer, "prepare_data", lambda *a, **k: data.update(real_prepare(*a, **k)) or data)
    train(cfg, tmp_path / "run")
    by_task = {name: asked[id(td.train_feats)] for name, td in data.items() if id(td.train_feats) in asked}
    assert by_task == {"sent": True, "sts": True, "mc": True, "ner": False}
