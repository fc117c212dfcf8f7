"""SmoothQuant (Xiao et al. 2022, arXiv:2211.10438) for the int8 ONNX export.

onnxruntime's fast int8 MatMul (`quantize_dynamic`: weights int8 per output channel, activations uint8 with
one scale per call) runs MiniLM's MatMuls at 2.4-2.8x fp32, but a few input channels of a transformer's
activations are 10-100x larger than the rest, so one scale per call leaves the other channels a handful
of levels, and 1-3% of labels flipped. SmoothQuant moves that range into the weights, which quantise per
output channel and do not mind: for each input channel j of a Linear,

    s_j = max|X_j| ** alpha / max|W_:,j| ** (1 - alpha),    X W^T = (X / s) (W s)^T,

with max|X_j| measured on a few hundred of the run's own training inputs (calibration). alpha 0.5
splits the range evenly; a larger alpha moves more of it into the weights.

Where 1/s goes. In the paper's pre-LN models it folds into the LayerNorm before the projections. BERT
is post-LN: the LayerNorm's output is also the residual that the next Add reads, so folding 1/s into it
would change the model. Here instead:
  - Q, K and V (and the attention's input after the embeddings' or the previous layer's LayerNorm):
    one Mul by 1/s on the attention's input, shared by the three (one quantisation of the input, not three);
  - the attention output projection: 1/s folds exactly into the value projection's output rows
    (attention mixes value rows position by position, never channel by channel): free;
  - the feed-forward input projection: one Mul on the attention block's output, before the projection
    only (the residual keeps the unscaled tensor);
  - the feed-forward output projection (whose GELU input has the largest outliers): one Mul after GELU.
A Mul is one pass over (tokens x hidden) values, small beside the (tokens x hidden x hidden) MatMul.
The smoothed fp32 model answers as the original within float rounding (`apply` checks it, tests too).

This module runs at export time only and needs torch; the bundle it helps write does not.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

import torch
from torch import nn

from mtbert.errors import UserError

# alpha measured on the five-task example (benchmarks/int8_agreement.py, RESULTS.md `int8_agreement`): the
# lowest label agreement with fp32 was 88.0% at 0.5, 97.0% at 0.75, 97.1% at 0.85 (95.0% without smoothing)
DEFAULT_ALPHA = 0.85
CALIBRATION_EXAMPLES = 128  # training inputs per task; the maxima settle after a few hundred in all
SITES = ("qkv", "attention_output", "ffn_input", "ffn_output")

# Where each encoder keeps a layer's parts, as attribute paths from the layer:
# (layers, attention module whose first input Q/K/V read, (q, k, v), attention output, ffn input, ffn output)
_LAYOUTS = {
    # transformers' BERT and the families that copy its layer (RoBERTa, ELECTRA, XLM-R, ...)
    "bert": ("encoder.layer", "attention.self", ("attention.self.query", "attention.self.key", "attention.self.value"),
             "attention.output.dense", "intermediate.dense", "output.dense"),
    "distilbert": ("transformer.layer", "attention", ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                   "attention.out_lin", "ffn.lin1", "ffn.lin2"),
    "minbert": ("layers", "attention", ("attention.query", "attention.key", "attention.value"),
                "attention_out", "ffn_in", "ffn_out"),
}


@dataclass
class Site:
    """One activation to smooth: `reads` is the module whose first input it is, `linears` the projections
    that read it, `fold_into` a Linear whose output rows can absorb 1/s exactly (no Mul needed)."""

    name: str
    reads: nn.Module
    linears: list[nn.Linear]
    fold_into: nn.Linear | None = None
    act_max: torch.Tensor | None = field(default=None, repr=False)


def _get(module: nn.Module, path: str):
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def layout(encoder: nn.Module) -> str | None:
    """The name of the encoder's layer layout in `_LAYOUTS`, or None for one this module does not know
    (DeBERTa-v2, whose relative positions go through the key and query projections too; ModernBERT's
    fused QKV): export refuses to smooth those."""
    for name, (layers, reads, qkv, *rest) in _LAYOUTS.items():
        blocks = _get(encoder, layers)
        if not isinstance(blocks, nn.ModuleList) or not len(blocks):
            continue
        if all(isinstance(_get(b, p), nn.Linear) for b in blocks for p in (*qkv, *rest)) and \
                all(isinstance(_get(b, reads), nn.Module) for b in blocks):
            return name
    return None


def sites(encoder: nn.Module, which=SITES) -> list[Site]:
    """Every activation to smooth in `encoder`, layer by layer; [] for an unknown layout."""
    name = layout(encoder)
    if name is None:
        return []
    layers, reads, qkv, attention_out, ffn_in, ffn_out = _LAYOUTS[name]
    found = []
    for i, block in enumerate(_get(encoder, layers)):
        candidates = {
            "qkv": Site(f"layer {i} qkv", _get(block, reads), [_get(block, p) for p in qkv]),
            "attention_output": Site(f"layer {i} attention output", _get(block, attention_out),
                                     [_get(block, attention_out)], fold_into=_get(block, qkv[2])),
            "ffn_input": Site(f"layer {i} ffn input", _get(block, ffn_in), [_get(block, ffn_in)]),
            "ffn_output": Site(f"layer {i} ffn output", _get(block, ffn_out), [_get(block, ffn_out)]),
        }
        found += [candidates[w] for w in which]
    return found


def calibration_examples(cfg, n: int = CALIBRATION_EXAMPLES) -> dict[str, list]:
    """Up to `n` inputs per task, drawn with the run's seed from its training split only (never dev or
    test, which the export's users score the model on). Tasks without a training split are skipped."""
    from mtbert.data.multiple_choice import phrase_questions
    from mtbert.data.readers import read_split

    drawn = {}
    for task, spec in cfg.tasks.items():
        if not spec.train:
            continue
        try:
            examples = read_split(cfg, task, "train", with_labels=False, from_run=True)
        except UserError as err:
            raise UserError(f"--quantize int8-smoothquant calibrates on the run's training inputs: {err}; export "
                            "where the run's data is (the run's config.yaml names it), or use --quantize int8, which "
                            "needs no data") from None
        rng = random.Random(f"{cfg.seed}:{task}")  # one stream per task: adding a task changes no other's
        picked = sorted(rng.sample(range(len(examples)), min(n, len(examples))))
        drawn[task] = phrase_questions([examples[i] for i in picked], spec.questions)
    if not any(drawn.values()):
        raise UserError("--quantize int8-smoothquant calibrates on the run's training inputs, and no task of the "
                        "run has a training file with examples (tasks.NAME.train in its config.yaml); use "
                        "--quantize int8, which needs no data")
    return drawn


@torch.no_grad()
def calibrate(model, cfg, tokenizer, examples: dict[str, list], found: list[Site], batch_size: int = 32) -> None:
    """Each site's largest |activation| per input channel over the calibration inputs, run the way the
    predictor runs them (features.encode, length-sorted batches, every head). Padding positions count:
    the int8 graph's per-call scale sees them too."""
    from mtbert.data.features import encode
    from mtbert.evaluation.evaluate import raw_outputs

    def record(site: Site):
        def hook(module, args):
            x = args[0].detach().abs().float()
            seen = x.reshape(-1, x.shape[-1]).amax(dim=0)
            site.act_max = seen if site.act_max is None else torch.maximum(site.act_max, seen)
        return hook

    hooks = [site.reads.register_forward_pre_hook(record(site)) for site in found]
    try:
        for task, chosen in examples.items():
            spec = cfg.tasks[task]
            feats = encode(spec.type, chosen, tokenizer, cfg.max_length_for(task), with_labels=False,
                           pair_encoding=spec.pair_encoding, stride=cfg.window_stride(task))
            raw_outputs(model, [task], feats, batch_size, tokenizer.pad_token_id or 0, contextlib.nullcontext)
    finally:
        for h in hooks:
            h.remove()


def smoothing_scales(site: Site, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max|W_:,j|^(1-alpha); 1 for a channel calibration never saw active."""
    w_max = torch.stack([lin.weight.detach().abs().amax(dim=0) for lin in site.linears]).amax(dim=0).float()
    a_max = site.act_max.to(w_max)
    s = a_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)
    return torch.where(a_max > 0, s, torch.ones_like(s)).clamp(min=1e-5)


class _ScaleInput:
    """A forward pre-hook that multiplies a module's first input by 1/s (a Mul in the traced graph)."""

    def __init__(self, inverse: torch.Tensor):
        self.inverse = inverse

    def __call__(self, module, args):
        return (args[0] * self.inverse.to(args[0].dtype), *args[1:])


@torch.no_grad()
def smooth(found: list[Site], alpha: float) -> None:
    """Migrate each site's scales into its weights (in place): weight columns times s, and the input
    divided by s, folded into `fold_into`'s rows where there is one, else by a Mul before the module."""
    for site in found:
        s = smoothing_scales(site, alpha)
        for lin in site.linears:
            lin.weight.mul_(s.to(lin.weight.dtype)[None, :])
        if site.fold_into is not None:
            site.fold_into.weight.div_(s.to(site.fold_into.weight.dtype)[:, None])
            if site.fold_into.bias is not None:
                site.fold_into.bias.div_(s.to(site.fold_into.bias.dtype))
        else:
            site.reads.register_buffer("smoothquant_inverse_scale", (1 / s).to(site.linears[0].weight.dtype))
            site.reads.register_forward_pre_hook(_ScaleInput(site.reads.smoothquant_inverse_scale))


def onnx_scopes(encoder: nn.Module, found: list[Site]) -> list[str]:
    """The ends of the names the TorchScript ONNX exporter gives the MatMuls of the sites' Linears: its
    scopes are the names of the modules called on the way, a ModuleList's child named with its index
    (`.../layer.0/attention/self/query/MatMul`). What comes before the encoder depends on who calls it."""
    wanted = {id(lin) for site in found for lin in site.linears}
    scopes = []
    for qualified, module in encoder.named_modules():
        if id(module) not in wanted:
            continue
        parts, scope = qualified.split("."), []
        for i, part in enumerate(parts):
            parent = _get(encoder, ".".join(parts[:i])) if i else encoder
            if isinstance(parent, (nn.ModuleList, nn.ModuleDict)):
                scope[-1] += f".{part}"
            else:
                scope.append(part)
        scopes.append("/" + "/".join(scope) + "/MatMul")
    return scopes
