"""DeepPavlov 1.7's training semantics (issue 17), each checked against what DeepPavlov 1.7.0's code does:
its epoch, the accumulation split, the validations, the shared pooler, all-sub-token NER labels, weight
decay, the lr drop, and exact resume of the new schedule."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import validate
from mtbert.data import schedule as sched
from mtbert.data.features import IGNORE, encode, length_grouped_batches
from mtbert.data.readers import Example
from mtbert.data.schedule import BatchStream, DeepPavlovSchedule
from mtbert.errors import UserError
from mtbert.modeling.encoder import load_tokenizer
from mtbert.training import trainer as tr
from mtbert.training.checkpoint import checkpoints
from mtbert.training.trainer import (
    LrSchedule,
    make_optimizer,
    model_for_training,
    prepare_data,
    reload_best,
    seed_everything,
    step_plan,
    train,
)


class _Draws:
    """Stands in for the generator: hands out the given task draws, one array per epoch."""

    def __init__(self, *epochs):
        self.epochs = [np.array(e) for e in epochs]

    def choice(self, n, size, p):
        return self.epochs.pop(0)[:size]


def test_an_epoch_draws_as_deeppavlovs_multitask_iterator(monkeypatch):
    """deeppavlov/dataset_iterators/multitask_iterator.py, MultiTaskIterator.gen_batches: an epoch is
    steps_per_epoch = sum(train sizes) // batch_size draws (__init__, batch_size being the iterator's);
    each draw calls the drawn task's SingleTaskBatchGenerator.__next__, which returns Nones once the task's
    gen_batches runs out before a full batch, and gen_batches does not yield those. So with a: 10 examples,
    b: 5, batches of 4 and iterator batch_size 2 (7 draws): a has 2 full batches, b 1 (10 % 4 and 5 % 4
    examples are dropped), and the draws b b a b a a b yield b, a, a; the draws a a a a a a a yield a, a."""
    monkeypatch.setattr(sched.np.random, "default_rng", lambda seed: _Draws([1, 1, 0, 1, 0, 0, 1], [0] * 7))
    s = DeepPavlovSchedule("plain", {"a": 10, "b": 5}, {"a": 10 // 4, "b": 5 // 4}, (10 + 5) // 2, 2, seed=0)
    assert [s.task_for(i, s.epoch_of(i)) for i in range(s.total_steps(2))] == ["b", "a", "a", "a", "a"]
    assert s.starts == [0, 3, 5] and [s.epoch_of(i) for i in range(5)] == [0, 0, 0, 1, 1]
    assert s.expected_steps(0, 3) == {"a": 2.0, "b": 1.0} and s.expected_steps(1, 2) == {"a": 2.0, "b": 0.0}
    assert s.total_steps(1.5) == 3 + 1  # half of the second epoch's two steps


def test_sampling_modes_are_deeppavlovs():
    """MultiTaskIterator._get_probs: plain p_i = n_i / sum n (examples, not batches), uniform 1 / T,
    anneal n_i ** a / sum with a = 1 - 0.8 * epochs_done / num_train_epochs."""
    sizes = {"a": 300, "b": 100}
    args = ({"a": 3, "b": 1}, 4, 4, 0)
    assert np.allclose(DeepPavlovSchedule("plain", sizes, *args).probabilities(0), [0.75, 0.25])
    assert np.allclose(DeepPavlovSchedule("uniform", sizes, *args).probabilities(3), [0.5, 0.5])
    annealed = DeepPavlovSchedule("anneal", sizes, *args).probabilities(2)
    alpha = 1 - 0.8 * 2 / 4
    assert np.allclose(annealed, np.array([300, 100]) ** alpha / (300 ** alpha + 100 ** alpha))


def test_streams_restart_each_epoch_without_the_partial_batch():
    """SingleTaskBatchGenerator is made anew each epoch (a fresh shuffled pass) and never yields a batch short
    of batch_size: 10 examples in batches of 4 give two batches of 4 a pass."""
    feats = [type("F", (), {"length": 1})() for _ in range(10)]
    stream = BatchStream(10, 4, lambda rng: length_grouped_batches(feats, 4, rng, group=False), 0, drop_last=True)
    assert len(stream) == 2
    for _ in range(3):
        stream.restart()
        batches = [stream.next(), stream.next()]
        assert [len(b) for b in batches] == [4, 4] and len(set(batches[0]) | set(batches[1])) == 8


def _cfg(toy_config, **training):
    raw = {**toy_config, "training": {**{k: v for k, v in toy_config["training"].items()
                                         if k not in ("max_steps", "eval_every")},
                                      "schedule": "deeppavlov", "epochs": 2, **training}}
    return validate(raw)


def test_plan_counts_passes_of_batch_size_and_accumulation(toy_config):
    """A step is gradient_accumulation_steps passes of one task (DeepPavlov's pass: batch_size //
    gradient_accumulation_steps examples, which `convert` writes as batch_size); a task trains at most its
    full passes // accumulation steps an epoch; draws: all train examples // iterator_batch_size // accumulation."""
    cfg = _cfg(toy_config, batch_size=2, gradient_accumulation_steps=2, iterator_batch_size=4)
    data = prepare_data(cfg, load_tokenizer(cfg.backbone))
    plan = step_plan(cfg, data)
    sizes = {n: len(td.train_feats) for n, td in data.items()}
    assert plan.schedule.draws_per_epoch == sum(sizes.values()) // 4 // 2
    assert list(plan.schedule.capacity) == [n // 2 // 2 for n in sizes.values()]
    for epoch in range(2):
        counts = plan.schedule.expected_steps(epoch, len(plan.schedule.plan[epoch]))
        assert all(counts[n] <= (sizes[n] // 2) // 2 for n in sizes)
    with pytest.raises(UserError, match=r"tasks\.mc: 6 training examples, fewer than one step of 1 x 8"):
        step_plan(_cfg(toy_config, batch_size=8), data)


def test_validations_where_asked_and_the_final_model_is_kept(toy_config, tmp_path, monkeypatch):
    """NNTrainer.train_on_batches: validate_first validates before training, val_every_n_epochs at epoch ends.
    mtbert also evaluates after the last step; when nothing beat the score before training (DeepPavlov would
    then save nothing and evaluate the untrained model), the final model is saved."""
    cfg = _cfg(toy_config, validate_first=True, eval_every_epochs=1)
    values = iter([0.9, 0.1, 0.2])  # before training, after epoch 1, after epoch 2 (the last step)
    monkeypatch.setattr(tr, "target_value", lambda *a, **k: next(values))
    summary = train(cfg, tmp_path / "run")
    plan = step_plan(cfg, prepare_data(cfg, load_tokenizer(cfg.backbone)))
    steps = [json.loads(x)["step"] for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert steps == [0, plan.schedule.starts[1], plan.total_steps] == [0] + plan.eval_steps
    assert summary["best"]["step"] == plan.total_steps and (tmp_path / "run/model/heads.safetensors").is_file()
    # no periodic evaluation: before training and after the last step only
    assert step_plan(_cfg(toy_config, eval_every_epochs=0), prepare_data(cfg, load_tokenizer(cfg.backbone))).eval_steps \
        == [plan.total_steps]


def test_epochs_until_patience_stop_on_patience_within_the_cap(toy_config, tmp_path, monkeypatch):
    """A converted `epochs: -1` (DeepPavlov: no epoch limit, NNTrainer stops when validation_patience validations
    in a row do not improve) trains UNTIL_PATIENCE_EPOCHS epochs at most and stops on patience: here the first
    validation is the best, so training ends after the third epoch's (patience 2)."""
    from mtbert.compat.deeppavlov import UNTIL_PATIENCE_EPOCHS

    cfg = _cfg(toy_config, epochs=UNTIL_PATIENCE_EPOCHS, patience=2, eval_every_epochs=1)
    values = iter([0.9, 0.5, 0.4, 0.3])
    monkeypatch.setattr(tr, "target_value", lambda *a, **k: next(values))
    summary = train(cfg, tmp_path / "run")
    plan = step_plan(cfg, prepare_data(cfg, load_tokenizer(cfg.backbone)))
    assert len(plan.schedule.plan) == UNTIL_PATIENCE_EPOCHS and plan.total_steps == plan.schedule.starts[-1]
    steps = [json.loads(x)["step"] for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert steps == plan.schedule.starts[1:4] and summary["steps"] == plan.schedule.starts[3] < plan.total_steps
    assert summary["best"]["step"] == plan.schedule.starts[1]


def test_dp_pooler_is_one_new_layer_for_all_tasks(toy_config):
    """BertForMultiTask: self.bert.pooler = nn.Linear(hidden, hidden), one for every task, fed [CLS], then
    tanh (predict_on_top); it still trains when freeze_embeddings freezes the encoder."""
    raw = {**toy_config, "tasks": {n: {**t, "pooling": "dp_pooler"} if t["type"] != "sequence_labeling" else t
                                   for n, t in toy_config["tasks"].items()},
           "training": {**toy_config["training"], "freeze_encoder": True}}
    cfg = validate(raw)
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer)
    seed_everything(cfg.seed)
    model = model_for_training(cfg, data)
    pretrained = model_for_training(validate(toy_config), data).encoder.pooler.dense.weight
    dense = model.encoder.pooler.dense
    assert not torch.equal(dense.weight, pretrained)  # PyTorch's Linear init, not the checkpoint's
    assert all(p.requires_grad for p in model.encoder.pooler.parameters())
    assert not any(p.requires_grad for n, p in model.encoder.named_parameters() if not n.startswith("pooler."))
    batch = {"input_ids": torch.tensor([[101, 2000, 102], [101, 2001, 102]]), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    hidden, pooled = model.encode(**batch)
    assert pooled.shape == (2, hidden.shape[-1])
    assert torch.allclose(pooled, torch.tanh(dense(hidden[:, 0])))
    model.eval()
    assert torch.equal(model.heads["sent"].pooled(hidden, pooled, None), pooled)  # the same layer's output for both
    assert torch.equal(model.heads["sts"].pooled(hidden, pooled, None), pooled)


def test_label_all_subtokens_tags_every_piece_of_a_word(toy_config):
    """token_labels_to_subtoken_labels (models/torch_bert/torch_transformers_sequence_tagger.py) gives each
    sub-token its word's tag; mtbert's default tags the first sub-token only."""
    tokenizer = load_tokenizer(validate(toy_config).backbone)
    ex = Example(tokens=["Unbelievably", "Paris"], label=["O", "B-LOC"])
    pieces = tokenizer(ex.tokens, is_split_into_words=True).word_ids()
    assert pieces.count(0) > 1  # the first word is several sub-tokens
    labels = ["O", "B-LOC"]
    first = encode("sequence_labeling", [ex], tokenizer, 32, labels)[0].label
    every = encode("sequence_labeling", [ex], tokenizer, 32, labels, all_subtokens=True)[0].label
    assert every == [IGNORE if w is None else w for w in pieces]  # tag id = word index here
    assert sum(t != IGNORE for t in first) == 2 and sum(t != IGNORE for t in every) == len(pieces) - 2
    # the loss is the mean over every tagged sub-token
    from mtbert.modeling.heads import SequenceLabelingHead

    head = SequenceLabelingHead(8, 2, dropout=0.0)
    logits = torch.randn(1, len(every), 2)
    total, count = head.loss_terms(logits, torch.tensor([every]))
    tagged = torch.tensor(every) != IGNORE
    assert count == len(pieces) - 2
    assert torch.isclose(total / count, torch.nn.functional.cross_entropy(logits[0][tagged], torch.tensor(every)[tagged]))
    with pytest.raises(Exception, match="label_all_subtokens applies to sequence_labeling"):
        validate({**toy_config, "tasks": {"sent": {**toy_config["tasks"]["sent"], "label_all_subtokens": True}}})


def test_regression_bias_starts_at_the_mean_target_or_as_torch_draws_it(toy_config):
    """BertForMultiTask's regression output is a plain nn.Linear (torch's uniform draw for its bias); mtbert
    starts it at the mean training target unless bias_init: default."""
    from mtbert.modeling.heads import RegressionHead
    from mtbert.tasks import registry

    cfg = validate(toy_config)
    feats = [Example(text="a", label=v) for v in (1.0, 2.0, 4.5)]
    mean = registry.get("regression").head(cfg.tasks["sts"], 16, None, feats)
    assert torch.allclose(mean.out.bias, torch.tensor([2.5]))
    spec = validate({**toy_config, "tasks": {**toy_config["tasks"], "sts": {**toy_config["tasks"]["sts"],
                                                                          "bias_init": "default"}}}).tasks["sts"]
    torch.manual_seed(3)
    drawn = registry.get("regression").head(spec, 16, None, feats)
    torch.manual_seed(3)
    assert torch.equal(drawn.out.bias, RegressionHead(16, target_mean=None).out.bias)
    with pytest.raises(Exception, match="bias_init applies to regression"):
        validate({**toy_config, "tasks": {"sent": {**toy_config["tasks"]["sent"], "bias_init": "default"}}})


def test_weight_decay_on_every_parameter_or_not_biases_and_layernorm(toy_config):
    """TorchModel builds AdamW(self.model.parameters(), **optimizer_parameters): one group, torch's decay 0.01
    on every parameter; mtbert's default leaves biases and LayerNorm weights undecayed."""
    def decay_of(**training):
        cfg = validate({**toy_config, "training": {**toy_config["training"], **training}})
        model = model_for_training(cfg, prepare_data(cfg, load_tokenizer(cfg.backbone)))
        groups = make_optimizer(model, cfg).param_groups
        return {id(p): g["weight_decay"] for g in groups for p in g["params"]}, dict(model.named_parameters())

    decay, params = decay_of()
    assert decay[id(params["encoder.encoder.layer.0.output.dense.bias"])] == 0.0
    assert decay[id(params["encoder.embeddings.LayerNorm.weight"])] == 0.0
    assert decay[id(params["encoder.encoder.layer.0.output.dense.weight"])] == 0.01
    decay, params = decay_of(weight_decay_exempt=[])
    assert set(decay.values()) == {0.01} and len(decay) == len(params)
    decay, params = decay_of(weight_decay_exempt=["LayerNorm"])
    assert decay[id(params["encoder.encoder.layer.0.output.dense.bias"])] == 0.01
    assert decay[id(params["encoder.embeddings.LayerNorm.weight"])] == 0.0


def test_lr_floor_is_deeppavlovs_min_learning_rate():
    """TorchModel.process_event: lr = max(lr / learning_rate_drop_div, min_learning_rate)."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = LrSchedule(opt, total_steps=10, warmup=0.0, div=4.0, min_lr=0.1, kind="constant")
    assert s.drop(floor=True) and s.drop(floor=True)  # 1 -> 0.25 -> 0.1 (not 0.0625)
    s.set(0)
    assert s.lr == pytest.approx(0.1)
    assert s.drop(floor=True)  # at the floor already: it stays there
    s.set(0)
    assert s.lr == pytest.approx(0.1)
    s.factor = 1.0
    assert s.drop() and not s.drop()  # mtbert's repeat drops skip a drop that would go under min_lr


def test_lr_drops_once_per_plateau_after_reloading_the_best(toy_config, tmp_path, monkeypatch):
    """TorchModel.process_event drops when the impatience *equals* learning_rate_drop_patience, loading the
    saved best model first (load_before_drop): a long plateau drops once; an improvement re-arms it."""
    values = iter([0.5, 0.4, 0.3, 0.2, 0.6, 0.1, 0.0])
    monkeypatch.setattr(tr, "target_value", lambda *a, **k: next(values))
    drops, reloads = [], []
    monkeypatch.setattr(tr.LrSchedule, "drop", lambda self, floor=False: drops.append(floor) or True)
    real_reload = tr.reload_best
    monkeypatch.setattr(tr, "reload_best", lambda *a: reloads.append(real_reload(*a)) or True)
    cfg = validate({**toy_config, "training": {**toy_config["training"], "max_steps": 14, "eval_every": 2,
                                               "lr_drop_patience": 1, "lr_drop": "once_per_plateau",
                                               "lr_drop_reload_best": True}})
    train(cfg, tmp_path / "run")
    # bad evaluations at steps 4, 6, 8 (one drop), 12, 14 (one more, after step 10's improvement)
    assert drops == [True, True] and reloads == [True, True]


def test_reload_best_puts_the_saved_model_back(toy_config, tmp_path):
    cfg = validate({**toy_config, "training": {**toy_config["training"], "max_steps": 2, "eval_every": 2}})
    train(cfg, tmp_path / "run")
    model = model_for_training(cfg, prepare_data(cfg, load_tokenizer(cfg.backbone)))
    assert reload_best(model, tmp_path / "run", cfg.backbone_impl)
    heads = load_file(tmp_path / "run/model/heads.safetensors")
    assert all(torch.equal(v, heads[k]) for k, v in model.heads.state_dict().items())
    assert not reload_best(model, tmp_path / "nothing", cfg.backbone_impl)


class _StopAfter:
    """SIGTERM as the loop sees it, after `n` steps."""

    def __init__(self, n):
        self.n, self.reads = n, 0

    def __call__(self):
        outer = self

        class Signals:
            previous = {}

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

            @property
            def signum(self):
                outer.reads += 1
                return signal.SIGTERM if outer.reads >= outer.n else 0

        return Signals()


def test_deeppavlov_schedule_resumes_exactly(toy_config, tmp_path, monkeypatch):
    raw = {**toy_config, "training": {**{k: v for k, v in toy_config["training"].items() if k != "max_steps"},
                                      "schedule": "deeppavlov", "epochs": 3, "iterator_batch_size": 2,
                                      "sampling": "anneal", "validate_first": True}}
    for task in raw["tasks"].values():
        task["dropout"] = 0.3  # the torch RNG must be restored too
    cfg = validate(raw)
    whole = train(cfg, tmp_path / "whole")
    monkeypatch.setattr(tr, "_StopSignals", _StopAfter(5))
    with pytest.raises(tr.TrainingInterrupted):
        train(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert json.loads((checkpoints(tmp_path / "run")[-1] / "trainer.json").read_text())["step"] == 5
    resumed = train(cfg, tmp_path / "run", resume=True)
    assert resumed["steps"] == whole["steps"] and resumed["best"] == whole["best"]
    a, b = load_file(checkpoints(tmp_path / "whole")[-1] / "model.safetensors"), \
        load_file(checkpoints(tmp_path / "run")[-1] / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole/metrics.jsonl").read_text() == (tmp_path / "run/metrics.jsonl").read_text()
