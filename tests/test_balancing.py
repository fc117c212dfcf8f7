"""Learned loss weights (Kendall et al. 2018): the loss and its gradients follow the formula, the weights
train with the model, and a resumed run continues them exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mtbert.config import validate
from mtbert.errors import UserError
from mtbert.training.balancing import UncertaintyWeights
from mtbert.training.checkpoint import checkpoints
from mtbert.training.trainer import train


@pytest.mark.parametrize(("kind", "scale"), [("regression", 0.5), ("classification", 1.0),
                                             ("sequence_labeling", 1.0)])
def test_uncertainty_loss_and_gradients_follow_the_formula(kind, scale):
    balancer = UncertaintyWeights({"t": kind})
    with torch.no_grad():
        balancer.log_vars["t"].fill_(0.3)
    task_loss = torch.tensor(2.0, requires_grad=True)
    out = balancer("t", task_loss)
    out.backward()
    s = 0.3
    assert out.item() == pytest.approx(scale * torch.exp(torch.tensor(-s)).item() * 2.0 + 0.5 * s)
    # d/ds = -scale * exp(-s) * L + 0.5;  d/dL = scale * exp(-s)
    assert balancer.log_vars["t"].grad.item() == pytest.approx(-scale * torch.exp(torch.tensor(-s)).item() * 2.0 + 0.5)
    assert task_loss.grad.item() == pytest.approx(scale * torch.exp(torch.tensor(-s)).item())
    # the minimum over s is at exp(s) = 2 * scale * L: a task with a higher loss gets a lower weight
    assert balancer.weights()["t"] == pytest.approx(scale * torch.exp(torch.tensor(-s)).item())


def _raw(toy_config, **training):
    return {**toy_config, "training": {**toy_config["training"], "loss_balancing": "uncertainty",
                                       "max_steps": 16, "eval_every": 4, "keep_checkpoints": 10, **training}}


def test_uncertainty_weights_train_and_are_logged(toy_config, tmp_path):
    train(validate(_raw(toy_config)), tmp_path / "run")
    weights = load_file(checkpoints(tmp_path / "run")[-1] / "model.safetensors")
    log_vars = {k: v for k, v in weights.items() if k.startswith("balancer.log_vars.")}
    assert set(log_vars) == {f"balancer.log_vars.{t}" for t in toy_config["tasks"]}
    assert any(v.item() != 0.0 for v in log_vars.values())  # they moved from their start at 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert set(lines[-1]["loss_weights"]) == set(toy_config["tasks"])
    # inference needs no balancer: the saved model holds the heads only
    assert not any(k.startswith("balancer") for k in load_file(tmp_path / "run" / "model" / "heads.safetensors"))


def test_uncertainty_weights_resume_exactly(toy_config, whole_and_resumed):
    whole, part = whole_and_resumed(_raw(toy_config), after=8)
    a = load_file(checkpoints(whole)[-1] / "model.safetensors")
    b = load_file(checkpoints(part)[-1] / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (whole / "metrics.jsonl").read_text() == (part / "metrics.jsonl").read_text()


def test_balancing_keys_are_validated(toy_config):
    with pytest.raises(UserError, match="loss_balancing"):
        validate({**toy_config, "training": {**toy_config["training"], "loss_balancing": "gradnorm"}})
    with pytest.raises(UserError, match="temperature applies to schedule 'temperature'"):
        validate({**toy_config, "training": {**toy_config["training"], "temperature": 3}})
    assert validate({**toy_config, "training": {**toy_config["training"], "schedule": "temperature"}}
                    ).training.temperature == 2.0
