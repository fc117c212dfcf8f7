"""SmoothQuant before int8 (inference/smoothquant.py, `export --quantize int8-smoothquant`): the smoothed
fp32 model answers as the original, calibration draws seeded inputs from the training split only, the
bundle uses the per-tensor dynamic kernel, and the export options are checked with a clear message."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
import yaml

from mtbert.cli import main
from mtbert.config import validate
from mtbert.errors import UserError
from mtbert.inference import smoothquant
from mtbert.inference.export import check_smoothquant_alpha

SIZES = {"vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 32}


def tiny(layout: str):
    torch.manual_seed(0)
    if layout == "minbert":
        from mtbert.modeling.minbert import MinBert, MinBertConfig

        return MinBert(MinBertConfig(**SIZES)).eval()
    import transformers

    if layout == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=100, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
        return transformers.DistilBertModel(config).eval()
    return transformers.BertModel(transformers.BertConfig(**SIZES)).eval()


def outlier_channels(encoder) -> None:
    """Make a few hidden channels 30x larger than the rest, as trained transformers have them, so that
    the smoothing scales are far from 1 and a wrong fold would show."""
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[:3] *= 30.0
                module.bias[:3] += 5.0


@pytest.mark.parametrize("layout", ["bert", "minbert", "distilbert"])
@pytest.mark.parametrize("alpha", [0.5, 0.85])
def test_smoothing_keeps_the_fp32_outputs(layout, alpha):
    encoder = tiny(layout)
    outlier_channels(encoder)
    assert smoothquant.layout(encoder) == layout
    found = smoothquant.sites(encoder)
    assert len(found) == 4 * 2  # q/k/v, attention output, ffn input and output, in each of 2 layers
    ids = torch.randint(1, 100, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padding too
    hooks = [site.reads.register_forward_pre_hook(
        lambda m, args, site=site: setattr(site, "act_max", args[0].abs().reshape(-1, args[0].shape[-1]).amax(0)))
        for site in found]
    with torch.no_grad():
        before = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    for h in hooks:
        h.remove()
    scales = [smoothquant.smoothing_scales(site, alpha) for site in found]
    assert max(float(s.max() / s.min()) for s in scales) > 5  # the smoothing is far from the identity
    weights = {id(site): site.linears[0].weight.clone() for site in found}
    smoothquant.smooth(found, alpha)
    with torch.no_grad():
        after = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not any(torch.allclose(site.linears[0].weight, weights[id(site)]) for site in found)
    assert torch.allclose(before, after, atol=1e-4 * max(1.0, float(before.abs().max())), rtol=0)


def test_smoothing_divides_the_activation_and_multiplies_the_weights():
    """What a per-tensor int8 scale sees after smoothing: the outlier channels of a projection's input
    shrink by s, and the projection's weight columns grow by s."""
    encoder = tiny("bert")
    outlier_channels(encoder)
    site = smoothquant.sites(encoder, ("ffn_input",))[0]
    seen = {}

    def observe():  # a pre-hook runs after those registered before it: after smoothing's Mul, once there
        return site.linears[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))

    ids = torch.randint(1, 100, (2, 7))
    hook = observe()
    with torch.no_grad():
        encoder(input_ids=ids)
    hook.remove()
    x = seen["x"]
    site.act_max = x.abs().reshape(-1, x.shape[-1]).amax(0)
    s = smoothquant.smoothing_scales(site, 0.5)
    w = site.linears[0].weight.clone()
    smoothquant.smooth([site], 0.5)
    hook = observe()
    with torch.no_grad():
        encoder(input_ids=ids)
    hook.remove()
    assert torch.allclose(seen["x"], x / s, atol=1e-5)
    assert torch.allclose(site.linears[0].weight, w * s[None, :], atol=1e-6)
    # the range per tensor over the range per channel: what one int8 scale must cover
    spread = lambda t: float(t.abs().max() / t.abs().reshape(-1, t.shape[-1]).amax(0).median())  # noqa: E731
    assert spread(seen["x"]) < spread(x) / 2


def test_unknown_layouts_are_not_smoothed():
    import transformers

    config = transformers.DebertaV2Config(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=32, relative_attention=True, pos_att_type=["p2c", "c2p"])
    assert smoothquant.layout(transformers.DebertaV2Model(config)) is None
    assert smoothquant.sites(transformers.DebertaV2Model(config)) == []


@pytest.mark.parametrize("layout", ["bert", "minbert", "distilbert"])
def test_onnx_scopes_name_the_exported_matmuls(layout, tmp_path):
    encoder = tiny(layout)

    class Wrapped(torch.nn.Module):  # as ExportGraph holds it: the scopes before the encoder's vary
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.encoder = encoder

        def forward(self, ids, mask):
            return self.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    path = tmp_path / "enc.onnx"
    ids = torch.randint(0, 100, (2, 5))
    with torch.no_grad():
        torch.onnx.export(Wrapped(), (ids, torch.ones_like(ids)), str(path), dynamo=False, opset_version=17)
    matmuls = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"]
    scopes = smoothquant.onnx_scopes(encoder, smoothquant.sites(encoder))
    assert len(scopes) == 2 * 6  # q, k, v, attention output, ffn in, ffn out
    assert all(sum(m.endswith(s) for m in matmuls) == 1 for s in scopes), (scopes, matmuls)


def calibration_config(toy_config, seed: int):
    return validate({**toy_config, "seed": seed})


def test_calibration_draws_from_the_training_split_only_and_is_seeded(toy_config, toy_data):
    # the training files hold texts no dev file has: every drawn input must be one of them
    (toy_data / "sent_train.tsv").write_text("sentence\tlabel\n" + "".join(
        f"train sentence number {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(300)))
    cfg = calibration_config(toy_config, 7)
    drawn = smoothquant.calibration_examples(cfg, n=20)
    assert set(drawn) == set(cfg.tasks)
    sent = [ex.text for ex in drawn["sent"]]
    assert len(sent) == 20 and all(t.startswith("train sentence number") for t in sent)
    assert sent == [ex.text for ex in smoothquant.calibration_examples(cfg, n=20)["sent"]]  # seeded
    other = [ex.text for ex in smoothquant.calibration_examples(calibration_config(toy_config, 8), n=20)["sent"]]
    assert other != sent  # by the run's seed
    assert all(ex.label is None for ex in drawn["sent"])  # inputs only
    # a task without a training split is skipped; fewer examples than n: all of them
    no_train = validate({**toy_config, "tasks": {**toy_config["tasks"],
                                                 "sts": {**toy_config["tasks"]["sts"], "train": None}}})
    drawn = smoothquant.calibration_examples(no_train, n=1000)
    assert "sts" not in drawn and len(drawn["mc"]) == 6


def test_the_alpha_option_is_checked():
    check_smoothquant_alpha(None, None)
    check_smoothquant_alpha(0.75, "int8-smoothquant")
    for quantize in (None, "int8"):
        with pytest.raises(UserError, match="--smoothquant-alpha applies to --quantize int8-smoothquant"):
            check_smoothquant_alpha(0.5, quantize)
    for bad in (0.0, 1.0, 1.5, -0.2, float("nan")):
        with pytest.raises(UserError, match="between 0 and 1"):
            check_smoothquant_alpha(bad, "int8-smoothquant")


@pytest.fixture
def trained_run(toy_config, tmp_path):
    from mtbert.training.trainer import train

    run = tmp_path / "run"
    train(validate({**toy_config, "training": {**toy_config["training"], "max_steps": 4}}), run)
    return run


def test_int8_export_smooths_and_uses_the_dynamic_kernel(trained_run, tmp_path, capsys):
    assert main(["-q", "export", str(trained_run), "--quantize", "int8-smoothquant", "--smoothquant-alpha", "0.75",
                 "-o", str(tmp_path / "int8")]) == 0
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["quantization"] == "int8-smoothquant"
    assert manifest["quantization_scheme"].startswith("SmoothQuant alpha 0.75")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node]
    # 2 layers x (one quantisation of the attention input for q, k and v; attention output; ffn in; ffn out)
    assert ops.count("DynamicQuantizeLinear") == 2 * 4 and ops.count("MatMulInteger") == 2 * 6
    assert "MatMulNBits" not in ops
    assert manifest["parity"]["fp32_max_abs_diff"] <= 1e-4

    assert main(["export", str(trained_run), "--quantize", "int8", "--smoothquant-alpha", "0.5",
                 "-o", str(tmp_path / "x")]) == 2
    assert "--smoothquant-alpha applies to --quantize int8-smoothquant" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--quantize", "int8-smoothquant", "--smoothquant-alpha", "2",
                 "-o", str(tmp_path / "x")]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_int8_export_without_the_training_data_says_what_it_needs(trained_run, tmp_path, capsys):
    config = trained_run / "model" / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["data_dir"] = str(tmp_path / "gone")
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["export", str(trained_run), "--quantize", "int8-smoothquant", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--quantize int8-smoothquant calibrates on the run's training inputs" in err and "file not found" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
    # the block scheme needs no data
    assert main(["-q", "export", str(trained_run), "--quantize", "int8", "-o", str(tmp_path / "x")]) == 0


def test_the_help_names_the_default_alpha(capsys):
    assert main(["export", "--help"]) == 0
    assert f"(default {smoothquant.DEFAULT_ALPHA})" in " ".join(capsys.readouterr().out.split())
