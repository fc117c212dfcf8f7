"""minBERT: our own BERT equals transformers' on real weights; the minBERT heads, schedule and modes."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from mtbert.config import validate
from mtbert.data.encoding import Feature
from mtbert.data.features import collate, encode, length_grouped_batches
from mtbert.data.readers import Example
from mtbert.data.schedule import BatchStream, TaskSchedule, minbert_sequence
from mtbert.modeling.encoder import resolve_backbone
from mtbert.modeling.minbert import MinBert
from mtbert.modeling.model import MultiTaskModel
from mtbert.tasks import build_head

SENTENCES = ["A man is playing a guitar.", "Short.", "The quick brown fox jumps over the lazy dog by the river bank."]
PAIRS = ["Someone plays music.", "Tiny", "A fox."]


@pytest.fixture(scope="module")
def minilm():
    path = resolve_backbone("minilm")
    return path, AutoTokenizer.from_pretrained(path)


def test_minbert_equals_transformers_on_the_packaged_minilm(minilm):
    path, tok = minilm
    hf, ours = AutoModel.from_pretrained(path).eval(), MinBert.from_pretrained(path).eval()
    for batch in (tok(SENTENCES, padding=True, return_tensors="pt"),
                  tok(SENTENCES, PAIRS, padding=True, return_tensors="pt")):
        assert (batch["attention_mask"] == 0).any()  # padded batches included
        with torch.no_grad():
            a, b = hf(**batch), ours(**batch)
        real = batch["attention_mask"].bool()
        assert (a.last_hidden_state - b.last_hidden_state)[real].abs().max() < 1e-5
        assert (a.pooler_output - b.pooler_output).abs().max() < 1e-5


def test_gradients_reach_every_parameter(tiny_bert):
    model = MinBert.from_pretrained(tiny_bert)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    batch = tok(SENTENCES, PAIRS, padding=True, return_tensors="pt")
    out = model(**batch)
    (out.last_hidden_state.pow(2).mean() + out.pooler_output.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name != "embeddings.token_type.weight":
            assert p.grad.abs().sum() > 0, name


def test_checkpoint_round_trip_keeps_hf_names(tiny_bert, tmp_path):
    model = MinBert.from_pretrained(tiny_bert)
    model.save_pretrained(tmp_path)
    hf = AutoModel.from_pretrained(tmp_path, use_safetensors=True).eval()
    again = MinBert.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model.eval()(**batch).last_hidden_state
        assert torch.equal(again(**batch).last_hidden_state, ref)
        assert (hf(**batch).last_hidden_state - ref)[batch["attention_mask"].bool()].abs().max() < 1e-5


def test_a_run_trained_on_one_implementation_loads_on_the_other(toy_config, tmp_path):
    from mtbert.inference.predictor import Predictor
    from mtbert.training.trainer import train

    raw = {**toy_config, "backbone_impl": "minbert"}
    raw["training"] = {**toy_config["training"], "max_steps": 6, "eval_every": 6}
    summary = train(validate(raw), tmp_path / "run")
    inputs = [{"text": "a great fine movie"}, {"text": "terrible and bad"}]
    ours = Predictor(tmp_path / "run", precision="fp32")
    theirs = Predictor(tmp_path / "run", precision="fp32", backbone_impl="hf")
    assert type(ours.model.encoder).__name__ == "MinBert" and type(theirs.model.encoder).__name__ == "BertModel"
    a = ours.predict("sent", inputs, return_probas=True)
    b = theirs.predict("sent", inputs, return_probas=True)
    for x, y in zip(a, b, strict=True):
        assert x["label"] == y["label"]
        assert all(abs(x["probas"][k] - y["probas"][k]) < 1e-5 for k in x["probas"])
    assert summary["best"]["dev"]["sent"]["accuracy"] >= 0


# ---------------------------------------------------------------- heads


def _task(**kw):
    base = {"type": "classification", "train": "x", "columns": {"text": 0, "label": 1}}
    base.update(kw)
    return validate({"tasks": {"t": base}}).tasks["t"]


HEADS = {
    # minBERT sentiment: pooler output, dropout, linear to 5 classes, cross-entropy
    "sentiment": (_task(pooling="pooler"), [str(i) for i in range(5)]),
    # paraphrase: separate encoding, mean pooling each, [u; v], dropout, one logit, sigmoid, BCE
    "paraphrase": (_task(pair_encoding="separate", pooling="mean", loss="bce",
                         columns={"text": 0, "text_pair": 1, "label": 2}), ["0", "1"]),
    # similarity: separate encoding, CLS each, [u; v], dropout, linear, ReLU, MSE
    "similarity": (_task(type="regression", pair_encoding="separate", pooling="cls", output_activation="relu",
                         columns={"text": 0, "text_pair": 1, "label": 2}), None),
}


@pytest.mark.parametrize("kind", list(HEADS))
def test_minbert_heads_shapes_loss_and_learning(kind, tiny_bert):
    task, labels = HEADS[kind]
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    torch.manual_seed(0)
    encoder = MinBert.from_pretrained(tiny_bert)
    head = build_head(task, encoder.config.hidden_size, labels, train_feats=[Feature([], [], 1.0)])  # target mean 1
    model = MultiTaskModel(encoder, {"t": head}, {"t": task.type})
    if kind == "sentiment":
        examples = [Example(text=s, label=str(i % 3)) for i, s in enumerate(SENTENCES * 2)]
    elif kind == "paraphrase":
        examples = [Example(text=s, text_pair=p, label=str(i % 3 % 2)) for i, (s, p) in enumerate(zip(SENTENCES * 2, PAIRS * 2, strict=True))]
    else:
        examples = [Example(text=s, text_pair=p, label=float(i % 3)) for i, (s, p) in enumerate(zip(SENTENCES * 2, PAIRS * 2, strict=True))]
    feats = encode(task.type, examples, tok, 32, labels, "t", pair_encoding=task.pair_encoding)
    batch = collate(task.type, feats, tok.pad_token_id)
    out = model("t", batch)
    expected_in = encoder.config.hidden_size * (2 if task.pair_encoding == "separate" else 1)
    assert head.out.in_features == expected_in
    if kind == "sentiment":
        assert out.shape == (6, 5)
    else:
        assert out.shape == (6,)  # one logit / one score per pair
        assert batch["input_ids"].shape[:2] == (6, 2)  # the two texts encoded apart
    if kind == "similarity":
        assert (out >= 0).all()  # ReLU
    if kind == "paraphrase":
        p = head.probas(out)
        assert torch.allclose(p.sum(-1), torch.ones(6)) and torch.allclose(p[:, 1], torch.sigmoid(out))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.eval()  # no dropout, so the loss can only fall through training
    losses = []
    for _ in range(30):
        loss = model.loss("t", batch)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0] * 0.5


# ---------------------------------------------------------------- schedule


def test_minbert_schedule_is_equation_1():
    seq, weights = minbert_sequence({"sst": 3, "para": 7, "sts": 10})
    round_ = ["sst", "para", "para", "sts", "sts", "sts"]
    assert seq == round_ * 3
    assert weights == {"sst": 1.0, "para": 0.5, "sts": pytest.approx(1 / 3)}


def test_keep_remainder_spreads_the_dropped_batches():
    seq, weights = minbert_sequence({"sst": 3, "para": 7, "sts": 10}, keep_remainder=True)
    assert seq.count("sst") == 3 and seq.count("para") == 7 and seq.count("sts") == 10
    assert weights == {"sst": 1.0, "para": 0.5, "sts": pytest.approx(1 / 3)}
    seq, _ = minbert_sequence({"a": 4, "b": 11}, keep_remainder=True)
    per_round = [seq[i + 1:].index("a") if "a" in seq[i + 1:] else len(seq) - i - 1 for i, t in enumerate(seq) if t == "a"]
    assert sorted(per_round) == [2, 3, 3, 3]  # 11 = 4 * 2 + 3 leftovers, one each in three rounds


@pytest.mark.parametrize("keep", [False, True])
def test_every_training_example_is_seen_once_per_epoch_with_keep_remainder(keep):
    sizes = {"sst": 3 * 8 - 2, "para": 7 * 8 - 3, "sts": 10 * 8 - 5}  # examples, batch size 8: 3 / 7 / 10 batches
    feats = {t: [type("F", (), {"length": random.Random(n).randint(3, 40)})() for _ in range(n)]
             for t, n in sizes.items()}
    streams = {t: BatchStream(n, 8, lambda rng, f=feats[t]: length_grouped_batches(f, 8, rng), seed=i)
               for i, (t, n) in enumerate(sizes.items())}
    schedule = TaskSchedule("minbert_round_robin", {t: len(s) for t, s in streams.items()}, 2, 0, keep)
    for epoch in range(2):
        for s in streams.values():
            s.restart()
        seen = {t: [] for t in sizes}
        for step in range(len(schedule.sequence)):
            task = schedule.task_for(step, epoch)
            seen[task] += streams[task].next()
        if keep:
            assert all(sorted(seen[t]) == list(range(n)) for t, n in sizes.items())
        else:
            assert sorted(seen["sst"]) == list(range(sizes["sst"]))
            assert len(set(seen["sts"])) == len(seen["sts"]) < sizes["sts"]  # the floor drops data


def test_trainer_uses_the_minbert_schedule_and_weights(toy_config, tmp_path, monkeypatch):
    from mtbert.training import trainer as tr

    calls = []
    real_forward = tr.MultiTaskModel.forward  # a training step's forward (evaluation runs forward_heads)
    monkeypatch.setattr(tr.MultiTaskModel, "forward",
                        lambda self, task, batch: calls.append(task) or real_forward(self, task, batch))
    raw = {**toy_config}
    raw["tasks"] = {k: {**v, "batch_size": 2} for k, v in toy_config["tasks"].items() if k in ("sent", "mc")}
    raw["training"] = {**toy_config["training"], "schedule": "minbert_round_robin", "keep_remainder": True,
                       "epochs": 2, "max_steps": None, "eval_every": None}
    raw["training"].pop("max_steps")
    summary = tr.train(validate(raw), tmp_path / "run")
    # mc: 6 examples -> 3 batches (smallest); sent: 20 -> 10 batches, R = 3, one leftover
    assert summary["steps"] == 2 * 13
    assert calls[:5] == ["mc", "sent", "sent", "sent", "mc"]
    assert calls.count("sent") == 20 and calls.count("mc") == 6


def test_modes_are_presets_on_freeze_encoder_and_lr():
    def training(**kw):
        return validate({"tasks": {"t": {"type": "classification", "train": "x", "columns": {"text": 0, "label": 1}}},
                         "training": kw}).training

    assert (training(mode="pretrain").freeze_encoder, training(mode="pretrain").lr) == (True, 1e-3)
    assert (training(mode="finetune").freeze_encoder, training(mode="finetune").lr) == (False, 1e-5)
    assert training(mode="finetune", lr=3e-5).lr == 3e-5  # an explicit key wins
    with pytest.raises(Exception, match="gradient_accumulation_steps"):
        training(schedule="minbert_round_robin", gradient_accumulation_steps=2)


def test_cosine_pair_combine_scores_the_scaled_cosine(tiny_bert):
    task = _task(type="regression", pair_encoding="separate", pair_combine="cosine", pooling="mean",
                 columns={"text": 0, "text_pair": 1, "label": 2})
    head = build_head(task, 32, None, train_feats=[Feature([], [], 1.0), Feature([], [], 5.0)])
    assert (head.out.in_features, head.out.weight.item(), head.out.bias.item()) == (1, 5.0, 0.0)  # 5 x cosine
    head.train()  # no dropout on the one number
    hidden, mask = torch.randn(6, 5, 32), torch.ones(6, 5)
    mask[1, 3:] = 0  # padding stays out of the mean
    score = head(hidden, None, mask, groups=2)
    u = torch.stack([hidden[0].mean(0), hidden[2].mean(0), hidden[4].mean(0)])
    v = torch.stack([hidden[1, :3].mean(0), hidden[3].mean(0), hidden[5].mean(0)])
    assert torch.allclose(score, 5.0 * F.cosine_similarity(u, v, dim=-1), atol=1e-5)
    with pytest.raises(Exception, match="pair_combine 'cosine'.*needs pair_encoding 'separate'"):
        _task(type="regression", pair_encoding="cross", pair_combine="cosine",
              columns={"text": 0, "text_pair": 1, "label": 2})
    with pytest.raises(Exception, match="pair_combine 'cosine' applies to type 'regression' tasks, not classification"):
        _task(type="classification", pair_encoding="separate", pair_combine="cosine",
              columns={"text": 0, "text_pair": 1, "label": 2})
    # a join where nothing is joined (one cross-encoded sequence, or no pair at all) is refused, not ignored
    with pytest.raises(Exception, match="pair_combine 'sbert'.*needs pair_encoding 'separate'"):
        _task(type="classification", pair_combine="sbert", columns={"text": 0, "text_pair": 1, "label": 2})
    with pytest.raises(Exception, match="pair_combine 'sbert'.*needs pair_encoding 'separate'"):
        _task(type="sequence_labeling", pair_combine="sbert", columns={"tokens": 0, "tags": 1})


def test_sbert_pair_combine_adds_interaction_features(tiny_bert):
    task = _task(type="regression", pair_encoding="separate", pair_combine="sbert",
                 columns={"text": 0, "text_pair": 1, "label": 2})
    head = build_head(task, 32, None, train_feats=[Feature([], [], 2.0), Feature([], [], 3.0)])  # mean 2.5
    assert head.out.in_features == 4 * 32 and head.out.bias.item() == 2.5
    head.eval()
    hidden = torch.randn(6, 5, 32)  # 3 pairs, each text encoded alone
    x = head.pooled(hidden, None, torch.ones(6, 5), groups=2)
    u, v = hidden[0::2, 0], hidden[1::2, 0]
    assert torch.allclose(x, torch.cat([u, v, (u - v).abs(), u * v], dim=-1))
