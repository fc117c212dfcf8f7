"""training.ema_decay: the weights' moving average follows its formula, is what evaluation scores and the
run dir keeps, and a resumed run continues it exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import validate
from mtbert.errors import UserError
from mtbert.inference.predictor import evaluate_run
from mtbert.training.averaging import WeightAverage
from mtbert.training.checkpoint import AVERAGE, checkpoints
from mtbert.training.compare import METHODS, _merge, parse_methods
from mtbert.training.trainer import train


def test_average_is_the_debiased_moving_average():
    model = torch.nn.Linear(3, 1)
    average = WeightAverage(model, decay=0.9)
    shadow = torch.zeros_like(model.weight)
    for n in range(1, 31):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        average.update_parameters(model)
        shadow = 0.9 * shadow + 0.1 * model.weight.detach()  # starts at zero: no trace of the first weights
        assert torch.allclose(average.module.weight, shadow / (1 - 0.9 ** n), atol=1e-5), n
    assert average.n_averaged.item() == 30
    assert not torch.equal(average.module.weight, model.weight)


def _raw(toy_config, **training):
    return {**toy_config, "training": {**toy_config["training"], "ema_decay": 0.9, "max_steps": 16,
                                       "eval_every": 4, "keep_checkpoints": 10, **training}}


def test_the_average_is_scored_and_saved_not_the_raw_weights(toy_config, tmp_path):
    summary = train(validate(_raw(toy_config)), tmp_path / "run")
    last = checkpoints(tmp_path / "run")[-1]
    assert load_file(last / AVERAGE)["n_averaged"].item() == 16
    # the saved model is the average at the best evaluation (a checkpoint is written at each), which
    # differs from the raw weights there once training has moved them
    best = tmp_path / "run" / f"checkpoint-{summary['best']['step']:08d}"
    raw_weights, averaged = load_file(best / "model.safetensors"), load_file(best / AVERAGE)
    heads = load_file(tmp_path / "run" / "model" / "heads.safetensors")
    for key in heads:
        assert torch.equal(heads[key], averaged[f"module.heads.{key}"]), key
    assert any(not torch.equal(averaged[f"module.heads.{k}"], raw_weights[f"heads.{k}"]) for k in heads)
    # what training logged for the kept model is what evaluate computes from the saved files
    scores, primary, _ = evaluate_run(tmp_path / "run", "dev")
    for task, metric in primary.items():
        assert scores[task][metric] == pytest.approx(summary["best"]["dev"][task][metric], abs=1e-6)


def test_average_resumes_exactly(toy_config, whole_and_resumed):
    whole, part = whole_and_resumed(_raw(toy_config), after=8)
    for name in ("model.safetensors", AVERAGE):
        a = load_file(checkpoints(whole)[-1] / name)
        b = load_file(checkpoints(part)[-1] / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert (whole / "metrics.jsonl").read_text() == (part / "metrics.jsonl").read_text()


def test_a_checkpoint_without_its_average_is_named(toy_config, tmp_path):
    raw = _raw(toy_config, max_steps=8)
    train(validate(raw), tmp_path / "run")
    (checkpoints(tmp_path / "run")[-1] / AVERAGE).unlink()
    with pytest.raises(UserError, match=f"{AVERAGE} is missing"):
        train(validate(raw), tmp_path / "run", resume=True)


def test_decay_is_validated_and_zero_trains_without_an_average(toy_config, tmp_path):
    for bad in (1.0, -0.1):
        with pytest.raises(UserError, match="ema_decay"):
            validate(_raw(toy_config, ema_decay=bad))
    train(validate(_raw(toy_config, ema_decay=0.0, max_steps=4)), tmp_path / "run")
    assert not (checkpoints(tmp_path / "run")[-1] / AVERAGE).exists()
    # compare's method: a config change that validates, joinable with the others
    assert parse_methods("ema,ema+temperature") == ["ema", "temperature+ema"]
    assert validate(_merge(_raw(toy_config), METHODS["ema"])).training.ema_decay == 0.998
