"""head: mlp, a hidden layer of the task's own (tanh(dense(x)), BERT's pooler layout) before dropout and the
output layer: what each head type computes with it, what validation refuses, that a trained run keeps it
through save, load and the ONNX export, and that compare's `mlp` method gives it to the multi-task run only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serve_fixtures import serve_config, write_toy_data

from mtbert.config import validate
from mtbert.data.encoding import Feature
from mtbert.tasks import build_head


def _task(**kw):
    base = {"type": "classification", "train": "x", "columns": {"text": 0, "label": 1}, "head": "mlp"}
    return validate({"tasks": {"t": {**base, **kw}}}).tasks["t"]


PAIR = {"text": 0, "text_pair": 1, "label": 2}


@pytest.mark.parametrize("kw, labels, groups, pooled", [
    ({}, ["a", "b", "c"], 1, lambda h: h[:, 0]),
    ({"pooling": "mean"}, ["a", "b"], 1, lambda h: h.mean(1)),
    ({"type": "regression", "columns": PAIR}, None, 1, lambda h: h[:, 0]),
    ({"type": "regression", "columns": PAIR, "pair_encoding": "separate", "pair_combine": "sbert"}, None, 1,
     lambda h: (lambda u, v: torch.cat([u, v, (u - v).abs(), u * v], -1))(h[0::2, 0], h[1::2, 0])),
    ({"type": "multiple_choice", "format": "jsonl", "columns": {"text": "p", "choices": ["a", "b"], "label": "l"}},
     None, 2, lambda h: h[:, 0]),
    ({"type": "sequence_labeling", "format": "conll", "columns": {"tokens": 0, "tags": 1}}, ["O", "B-X"], 1,
     lambda h: h),
])
def test_each_head_reads_its_hidden_layer(kw, labels, groups, pooled):
    task = _task(**kw)
    feats = [Feature([], [], [0, 1])] if task.type == "sequence_labeling" else [Feature([], [], 1.0), Feature([], [], 3.0)]
    head = build_head(task, 16, labels, train_feats=feats).eval()
    assert head.dense is not None and head.dense.out_features == 16 and head.out.in_features == 16
    hidden = torch.randn(4, 5, 16)
    out = head(hidden, None, torch.ones(4, 5), groups=groups)
    want = head.out(torch.tanh(head.dense(pooled(hidden))))
    if task.type == "regression":
        want = want.squeeze(-1)
    assert torch.allclose(out, want.view(out.shape), atol=1e-6)


def test_linear_head_keeps_its_weights_and_cosine_refuses_a_hidden_layer():
    linear = build_head(_task(head="linear"), 16, ["a", "b"])
    assert linear.dense is None and set(linear.state_dict()) == {"out.weight", "out.bias"}  # runs saved before load
    assert validate({"tasks": {"t": {"type": "classification", "train": "x", "columns": {"text": 0, "label": 1}}}}
                    ).tasks["t"].head == "linear"
    with pytest.raises(Exception, match="head 'mlp' on pair_combine 'cosine': the cosine is one number"):
        _task(type="regression", columns=PAIR, pair_encoding="separate", pair_combine="cosine")
    with pytest.raises(Exception, match="head"):
        _task(head="deep")


def test_a_trained_mlp_run_loads_and_exports_as_it_answers(tiny_bert, tmp_path):
    """Every head type with its hidden layer, trained, saved, loaded again and exported to ONNX: the loaded
    model has its hidden layers (load_model is strict) and the ONNX graph answers as torch does."""
    from mtbert.inference.export import export_onnx
    from mtbert.inference.onnx_predictor import OnnxPredictor
    from mtbert.inference.predictor import Predictor
    from mtbert.rundir import load_model
    from mtbert.training.trainer import train

    write_toy_data(tmp_path / "data")
    cfg = serve_config(tiny_bert, tmp_path / "data", max_steps=8)
    for task in cfg["tasks"].values():
        task["head"] = "mlp"
    train(validate(cfg), tmp_path / "run")
    _, model, _, _ = load_model(tmp_path / "run")
    assert all(head.dense is not None for head in model.heads.values())
    export_onnx(tmp_path / "run", tmp_path / "onnx")
    torch_p, onnx_p = Predictor(tmp_path / "run", precision="fp32"), OnnxPredictor(tmp_path / "onnx")
    texts = ["a good film", "bad , really bad", "Paris is in France"]
    got, want = onnx_p.predict_all(texts), torch_p.predict_all(texts)
    for g, w in zip(got, want, strict=True):
        for task in ("sent", "polar", "ner"):
            assert g[task]["label"] == w[task]["label"], task
        assert np.isclose(g["len"]["score"], w["len"]["score"], atol=1e-4)


def test_mlp_method_gives_every_multi_task_head_a_hidden_layer(tmp_path):
    from mtbert.training.compare import plan

    raw = {"tasks": {"a": {"type": "classification"}, "b": {"type": "regression"}}}
    jobs = {j.name: j for j in plan(raw, [1], ["temperature+mlp"], [None], tmp_path)}
    multi = jobs["seed-1/multi-temperature+mlp"].raw
    assert {t["head"] for t in multi["tasks"].values()} == {"mlp"} and multi["training"]["schedule"] == "temperature"
    assert "head" not in jobs["seed-1/single-a"].raw["tasks"]["a"]  # single-task runs keep the config's heads
    assert raw["tasks"]["a"] == {"type": "classification"}  # the caller's config is not touched


def test_compare_refuses_a_method_the_config_cannot_take_before_any_run(toy_config, write_config, tmp_path, capsys):
    """mlp on a cosine-scored pair is refused when the comparison starts, naming the run, not after the
    single-task runs have trained."""
    from mtbert.cli import main

    toy_config["tasks"]["sts"].update(pair_encoding="separate", pair_combine="cosine", pooling="mean")
    path = write_config(toy_config)
    assert main(["compare", str(path), "--methods", "mlp", "--run-dir", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "/multi-mlp)" in err and "head 'mlp' on pair_combine 'cosine'" in err and "set by --methods mlp" in err, err
    assert not list((tmp_path / "cmp").glob("seed-*/*"))  # nothing trained
