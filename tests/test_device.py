"""GPU-ready training. On the CPU: nothing inside train_step reads a tensor on the host (the losses are read
in one go at settle()), deferring those reads changes nothing the run computes, a non-finite step is
skipped on the device (weights and AdamW's step count untouched), and the GPUs' random states go into
checkpoints and come back. The tests marked `device` run the same on a GPU (benchmarks/gpu_smoke.sh);
without CUDA they are skipped."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from test_export import FAMILIES, TINY  # tiny encoder configs of every family

from mtbert.config import validate
from mtbert.errors import UserError
from mtbert.modeling.model import READY_MASK_FAMILIES, sdpa_ready_mask
from mtbert.training import checkpoint as ck
from mtbert.training.trainer import checkpoint, evaluate, finish, settle, setup, train_step

CUDA = pytest.param("cuda", marks=[pytest.mark.device,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")])
# what makes the host wait for a GPU's queue when called on one of its tensors
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu")


def _cfg(toy_config, device="cpu", **training):
    raw = {**toy_config, "training": {**toy_config["training"], "device": device, **training}}
    for task in raw["tasks"].values():  # dropout on: resume must restore the random generators exactly
        task["dropout"] = 0.3
    return validate(raw)


def _count_host_reads(monkeypatch) -> Counter:
    count: Counter = Counter()

    def counting(name, real):
        def counted(self, *a, **k):
            count[name] += 1
            return real(self, *a, **k)
        return counted

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    return count


def _drive(cfg, run_dir, settle_every=None, stop_at=None, resume=False):
    """The training recipe by hand; `stop_at` checkpoints and leaves, as an interrupted run does."""
    run = setup(cfg, run_dir, resume=resume)
    if settle_every:
        run.settle_every = settle_every
    while run.state.step < run.plan.total_steps:
        train_step(run)
        if run.state.step in run.plan.eval_steps:
            evaluate(run)
        if run.state.step == stop_at:
            checkpoint(run)
            return run
    finish(run)
    return run


def _weights(run) -> dict:
    return {k: v.detach().float().cpu().clone() for k, v in run.model.state_dict().items()}


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])  # the weights' moving average reads nothing either
def test_train_step_reads_no_tensor_on_the_host(toy_config, tmp_path, monkeypatch, ema_decay):
    run = setup(_cfg(toy_config, max_steps=8, eval_every=100, ema_decay=ema_decay), tmp_path / "run")
    run.settle_every = 10**6
    count = _count_host_reads(monkeypatch)
    for _ in range(6):
        train_step(run)
    # one read per forward is transformers' SDPA mask check (padding_mask.all()); on a GPU the model hands it
    # a ready mask instead (test below), on the CPU there is nothing to wait for
    assert count == Counter(__bool__=6), count
    assert run.state.loss_curve == [] and len(run.pending) == 6
    settle(run)
    assert count == Counter(__bool__=6, tolist=1)  # the six steps' losses in one read
    assert [s for s, _, _ in run.state.loss_curve] == [1, 2, 3, 4, 5, 6] and not run.pending


def test_deferred_loss_reads_change_nothing(toy_config, tmp_path):
    cfg = _cfg(toy_config, max_steps=9, eval_every=4)
    now, later = _drive(cfg, tmp_path / "now", settle_every=1), _drive(cfg, tmp_path / "later", settle_every=5)
    assert now.state.loss_curve == later.state.loss_curve and len(now.state.loss_curve) == 9
    assert now.state.steps_per_task == later.state.steps_per_task
    a, b = _weights(now), _weights(later)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _nan_on_third_forward(monkeypatch):
    from mtbert.modeling.model import MultiTaskModel

    real, calls = MultiTaskModel.forward, {"n": 0}

    def third_is_nan(self, task, batch):  # the training step's forward; evaluation runs forward_heads
        calls["n"] += 1
        out = real(self, task, batch)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(MultiTaskModel, "forward", third_is_nan)


def _adam_steps(run) -> dict[int, float]:
    return {id(p): float(s["step"]) for p, s in run.optimizer.state.items()}


def test_nonfinite_step_is_skipped_on_the_device(toy_config, tmp_path, monkeypatch, caplog):
    _nan_on_third_forward(monkeypatch)
    run = setup(_cfg(toy_config, max_steps=8, eval_every=100), tmp_path / "run")
    run.settle_every = 10**6
    for _ in range(2):
        train_step(run)
    before, adam_steps = _weights(run), _adam_steps(run)
    train_step(run)  # its loss is NaN: no update, and AdamW's bias correction does not count it
    after = _weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a head the step's task trains for the first time gets its AdamW state, at step 0
    assert _adam_steps(run) == {**{k: 0.0 for k in _adam_steps(run)}, **adam_steps}
    train_step(run)
    assert not all(torch.equal(after[k], v) for k, v in _weights(run).items())
    with caplog.at_level(logging.WARNING):
        settle(run)
    assert run.state.nonfinite_steps == 1 and [s for s, _, _ in run.state.loss_curve] == [1, 2, 4]
    assert "non-finite loss or gradient (loss nan) on task" in caplog.text and "at step 3" in caplog.text


def test_nonfinite_stop_is_raised_when_the_losses_are_read(toy_config, tmp_path, monkeypatch):
    _nan_on_third_forward(monkeypatch)
    run = setup(_cfg(toy_config, max_steps=8, eval_every=100, on_nonfinite_loss="stop"), tmp_path / "run")
    run.settle_every = 10**6
    for _ in range(4):
        train_step(run)
    with pytest.raises(UserError, match=r"non-finite loss or gradient \(nan\) on task \w+ at step 3"):
        settle(run)


def test_gpu_random_states_go_into_the_checkpoint_and_come_back(toy_config, tmp_path, monkeypatch, caplog):
    """Two pretend GPUs: their generators' states are written beside torch's and restored one by one."""
    run = setup(_cfg(toy_config, max_steps=4, eval_every=100), tmp_path / "run")
    train_step(run)
    gpus = [torch.arange(i, i + 16, dtype=torch.uint8) for i in (3, 40)]
    restored: dict[int, torch.Tensor] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.__setitem__(i, s))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    checkpoint(run)
    saved = ck.checkpoints(tmp_path / "run")[-1]
    assert set(load_file(saved / "rng.safetensors")) == {"torch", "cuda:0", "cuda:1"}
    ck.load_checkpoint(saved, run.model, run.optimizer)
    assert sorted(restored) == [0, 1] and all(torch.equal(restored[i], gpus[i]) for i in (0, 1))

    restored.clear()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with caplog.at_level(logging.WARNING):
        ck.load_checkpoint(saved, run.model, run.optimizer)
    assert list(restored) == [0] and "2 GPUs' random states, this machine has 1" in caplog.text

    restored.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        ck.load_checkpoint(saved, run.model, run.optimizer)
    assert not restored and "this run is on the CPU" in caplog.text


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_interrupted_and_resumed_run_is_exact(toy_config, tmp_path, device):
    cfg = _cfg(toy_config, device, max_steps=8, eval_every=4)
    whole = _drive(cfg, tmp_path / "whole")
    _drive(cfg, tmp_path / "cut", stop_at=3)
    resumed = _drive(cfg, tmp_path / "cut", resume=True)
    assert [tuple(x) for x in resumed.state.loss_curve] == whole.state.loss_curve  # read back from JSON: lists
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_train_step_never_waits_for_the_gpu(toy_config, tmp_path):
    run = setup(_cfg(toy_config, "cuda", max_steps=12, eval_every=100, precision="bf16"), tmp_path / "run")
    assert run.settle_every > 1
    train_step(run)  # the first step's one-time set-up (kernels, allocator) may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(6):
            train_step(run)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    settle(run)
    assert len(run.state.loss_curve) == 7


@pytest.mark.parametrize("family", sorted(READY_MASK_FAMILIES))
def test_ready_sdpa_mask_encodes_as_the_2d_mask_without_asking_the_host(family, monkeypatch):
    """On a GPU the encoder gets the 4D mask (transformers' own one asks padding_mask.all() each forward):
    the same hidden states, and no host read."""
    import transformers

    config_class, model_class, extra = FAMILIES[family]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=100, **{**TINY, **extra})
    config._attn_implementation = "sdpa"
    encoder = getattr(transformers, model_class)(config).eval()
    ids = torch.randint(5, 100, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 7:], mask[2, 3:] = 0, 0
    with torch.no_grad():
        plain = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        count = _count_host_reads(monkeypatch)
        ready = encoder(input_ids=ids, attention_mask=sdpa_ready_mask(config, mask)).last_hidden_state
    assert sum(count.values()) == 0, count
    real = mask.bool()
    torch.testing.assert_close(ready[real], plain[real], rtol=1e-5, atol=1e-5)


def test_fp16_overflow_is_the_grad_scalers_business_not_a_nonfinite_step(toy_config, tmp_path, monkeypatch):
    """Under fp16 the grad scaler skips a step whose scaled gradients overflow and lowers its scale, as a
    routine part of finding the scale: the step is booked as trained, and on_nonfinite_loss: stop stays quiet."""
    from mtbert.training import trainer as tr

    monkeypatch.setattr(tr, "resolve_precision", lambda precision, device: "fp16")
    run = setup(_cfg(toy_config, max_steps=8, eval_every=100, on_nonfinite_loss="stop"), tmp_path / "run")
    run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # fp16 gradients overflow at this scale
    before = _weights(run)
    train_step(run)
    settle(run)
    assert run.state.nonfinite_steps == 0 and sum(run.state.steps_per_task.values()) == 1
    assert run.scaler.get_scale() < 2.0**100
    assert all(torch.equal(before[k], v) for k, v in _weights(run).items())
