"""bf16 only where the hardware has it; fp32 untouched by autocast."""

from __future__ import annotations

import torch

from mtbert.modeling import precision


def test_auto_picks_bf16_only_when_supported(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert precision.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert precision.resolve_precision("auto", cpu) == "bf16"
    assert precision.resolve_precision("fp32", cpu) == "fp32"


def test_fp32_runs_without_autocast_and_bf16_with_it():
    cpu = torch.device("cpu")
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with precision.autocast("fp32", cpu):
        assert lin(x).dtype == torch.float32
        assert torch.equal(lin(x), x @ lin.weight.T + lin.bias)
    with precision.autocast("bf16", cpu):
        assert lin(x).dtype == torch.bfloat16


def test_gpu_choices_fall_back_or_explain_on_a_cpu_only_torch(monkeypatch):
    import pytest

    from mtbert.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve_device("auto") == torch.device("cpu")
    assert precision.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="training.device: cuda, but torch sees no GPU"):
        precision.resolve_device("cuda")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        precision.resolve_precision("fp16", torch.device("cpu"))


def test_a_gpu_without_bf16_gets_fp16(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert precision.resolve_precision("auto", cuda) == "fp16"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert precision.resolve_precision("auto", cuda) == "bf16"
    assert precision.resolve_precision("fp16", cuda) == "fp16"
