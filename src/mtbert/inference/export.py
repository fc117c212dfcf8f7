"""ONNX export: the encoder and every head as one graph, with what a predictor needs saved beside it.

    out_dir/
      model.onnx       inputs input_ids, attention_mask and, for encoders that read token types (BERT,
                       RoBERTa, ELECTRA; not DistilBERT, ModernBERT, DeBERTa-v2 without type embeddings),
                       token_type_ids: (batch, group, sequence) int64; one output per task, named after it
                       (see each task type's `onnx_output`); manifest.json lists the inputs the graph takes
      manifest.json    the graph's inputs and outputs, opset, quantisation, the parity measured at export
      tokenizer.json   the run's fast tokenizer (plus the Hugging Face tokenizer files)
      labels.json      label vocabularies per task
      config.yaml      the run's config: task types, input columns, max lengths

Export writes only where it loses nothing: a new or empty folder, or with `force` an earlier bundle whose
manifest lists every file in it; never a file, a folder of other files, a model folder or a folder that
holds the run.

Inputs come grouped so that one graph serves every task type: a single text or a cross-encoded pair is a
group of one sequence, a multiple-choice example a group of one sequence per choice, a separately
encoded pair a group of two. Every head runs on every call (heads are a linear layer each); a head's
output is meaningful for the layout of its own task's inputs.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtbert.errors import UserError
from mtbert.io import atomic_write_dir, is_within
from mtbert.rundir import load_model, model_dir
from mtbert.tasks import registry

log = logging.getLogger("mtbert")

OPSET = 17  # LayerNormalization is one op from 17 on; onnxruntime >= 1.14 runs it
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # every input a graph may take, in this order
FORMAT = "mtbert-onnx/1"
HF_FORMAT = "mtbert-hf/1"  # a task exported for transformers (hf_export.py): its folder follows the same rules
# int8: the block scheme, which keeps >= 99% of labels on the five-task example at 1.1x fp32's speed;
# int8-smoothquant: SmoothQuant and per-tensor dynamic int8 (smoothquant.py), 2x fp32's speed, but 97% of
# RTE's labels there (benchmarks/RESULTS.md, `int8_agreement`)
QUANTIZATIONS = ("int8", "int8-smoothquant")
# what the quantisation means in manifest.json, so that a bundle says which scheme made it
SMOOTHQUANT_SCHEME = ("SmoothQuant alpha {alpha} (scales from {examples} training inputs), then onnxruntime "
                      "dynamic int8: weights per output channel, activations one scale per call; the encoder "
                      "layers' projections ({sites}); embeddings, pooler and heads fp32")
INT8_SCHEME = ("onnxruntime MatMulNBits, 8 bits, blocks of 32, accuracy level 4 (int8 compute); "
               "feed-forward output projections and embeddings fp32")


class ExportGraph(nn.Module):
    """MultiTaskModel.forward_heads for every task at once, on grouped inputs, with the heads' own
    outputs (`Head.outputs`: softmax, the sigmoid of a `bce` classifier or of each label) so that a consumer
    needs no knowledge of how each head was trained.

    Its inputs are `graph_inputs(model)`, in that order: an encoder without token types gets none, so
    the graph has no input that nothing reads."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.inputs = graph_inputs(model)

    def forward(self, *tensors):
        named = dict(zip(self.inputs, tensors, strict=True))
        input_ids = named["input_ids"]
        batch, group = input_ids.shape[0], input_ids.shape[1]
        flat = {k: t.reshape(-1, t.shape[-1]) for k, t in named.items()}
        hidden, pooled = self.model.encode(flat["input_ids"], flat["attention_mask"], flat.get("token_type_ids"))
        mask = flat["attention_mask"]

        def first_and_last(t):
            # a separately encoded pair is (text, text_pair): the first and last member of a group of
            # two. Any other layout gets a harmless answer instead of a shape error, so one call can
            # serve every head whatever the group size.
            if t is None:
                return None
            t = t.reshape(batch, group, *t.shape[1:])
            return torch.stack([t[:, 0], t[:, -1]], dim=1).reshape(-1, *t.shape[2:])

        outputs = []
        for head in self.model.heads.values():
            if getattr(head, "pair_separate", False):
                out = head(first_and_last(hidden), first_and_last(pooled), first_and_last(mask))
            else:
                out = head(hidden, pooled, mask, group)
            outputs.append(head.outputs(out))
        return tuple(outputs)


def graph_inputs(model) -> tuple[str, ...]:
    """The inputs the exported graph takes: token_type_ids only for an encoder that reads them (its
    forward takes them and it has a token type embedding). DistilBERT and ModernBERT take none, and
    DeBERTa-v2 has no type embedding unless its config asks for one; the tracer would drop such an
    input from the graph, and a consumer feeding it would be refused."""
    encoder = model.encoder
    takes = "token_type_ids" in inspect.signature(encoder.forward).parameters
    has_embedding = getattr(encoder.config, "type_vocab_size", 0) > 0
    return INPUTS if takes and has_embedding else INPUTS[:2]


def sample_inputs(tokenizer, batch: int = 2, group: int = 2) -> dict[str, torch.Tensor]:
    """Grouped inputs of real tokens for tracing and for the parity check. No axis has size 1, so the
    tracer cannot take a dynamic axis for a constant; and the texts differ in length, so there is
    padding: transformers drops an all-ones attention mask, and a trace without padding would have
    no mask at all."""
    texts = ["the film was great fun", "a bad movie", "John lives in Paris", "terrible , awful acting and a dull story"]
    texts = (texts * batch * group)[:batch * group]
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=True)
    return {k: enc[k].reshape(batch, group, -1).long() for k in INPUTS}


def _export_graph(graph: ExportGraph, tokenizer, path: Path, tasks: list[str]) -> None:
    axes = {name: {0: "batch", 1: "group", 2: "sequence"} for name in graph.inputs}
    sample = sample_inputs(tokenizer)
    args = tuple(sample[name] for name in graph.inputs)
    # the TorchScript exporter (dynamo=False): one trace, no onnxscript, and it keeps the dynamic
    # axes that the heads' reshapes depend on. It is deprecated, not gone, in torch 2.13. Its other
    # warnings are about Python branches in transformers' mask code that are constant for an encoder
    # (no cache, mask given) and about how indexing is spelled in ONNX: silenced, with the parity
    # check on other shapes behind them.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(graph, args, str(path), dynamo=False, input_names=list(graph.inputs), output_names=tasks,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)


def _max_abs_diff(graph: ExportGraph, tokenizer, path: Path) -> float:
    """Largest difference between onnxruntime and PyTorch over every output, on inputs of other
    shapes than the traced ones (so a frozen axis would show)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, group in ((3, 1), (2, 3)):
        inputs = {k: v for k, v in sample_inputs(tokenizer, batch, group).items() if k in graph.inputs}
        with torch.no_grad():
            expected = graph(*inputs.values())
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        for e, g in zip(expected, got, strict=True):
            worst = max(worst, float(np.abs(e.float().numpy() - g).max()))
    return worst


def _kept_in_fp32(path: Path) -> list[str]:
    """The MatMuls left in fp32: every layer's feed-forward output projection. Its input is the GELU
    output, whose few large values make even per-block int8 lose the small ones; on the five-task
    example quantising it flipped RTE labels that keeping it saved (benchmarks/int8_agreement.py).
    Names as the export writes them: BERT's (and RoBERTa's, ELECTRA's, DeBERTa's) /layer.N/output/dense/,
    DistilBERT's /layer.N/ffn/lin2/, ModernBERT's /layers.N/mlp/Wo/, our minBERT's /layers.N/ffn_out/."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "MatMul" and re.search(
        r"/layers?\.\d+.*(/ffn_out/|/ffn/lin2/|/mlp/Wo/|(?<!/attention)/output/dense/)", node.name)]


def _quantize_int8(src: Path, dst: Path) -> None:
    """onnxruntime's block-wise int8 quantisation of the encoder's MatMuls (MatMulNBits with 8 bits):
    weights int8 with one scale per 32 weights, and at run time (accuracy level 4) activations
    quantised to int8 with one scale per 32 values, so the products run in int8. Per-tensor dynamic
    quantisation (`quantize_dynamic`, one activation scale per batch) agreed with fp32 on only
    97-99% of labels even with the outer layers in fp32; per block it is 99.3-100% on two trained
    five-task models. The word embeddings stay fp32: a lookup costs no compute, and int8 rows
    (per-tensor, or per row) or 4-bit blocks flipped labels."""
    root = logging.getLogger()
    guard = logging.NullHandler()
    # the quantiser's module calls logging.basicConfig(level=INFO) when imported: with a handler on
    # the root logger that is a no-op, so importing it does not reconfigure the user's logging
    root.addHandler(guard)
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    finally:
        root.removeHandler(guard)
    quiet = logging.getLogger(MatMulNBitsQuantizer.__module__)  # a line per node at INFO
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        quantizer = MatMulNBitsQuantizer(str(src), bits=8, block_size=32, is_symmetric=True, accuracy_level=4,
                                         nodes_to_exclude=_kept_in_fp32(src))
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    finally:
        quiet.setLevel(level)


def _quantize_dynamic(src: Path, dst: Path, nodes: list[str]) -> None:
    """onnxruntime's dynamic int8 quantisation of the MatMuls whose names end in `nodes`: weights int8 with a scale
    per output channel, activations uint8 with one scale per call, computed in the graph; onnxruntime
    runs each as one fused DynamicQuantizeMatMul, its fast int8 kernel (2.4-2.8x fp32 on MiniLM's shapes)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    matmuls = [n.name for n in _onnx_nodes(src) if n.op_type == "MatMul"]
    found = {end: [name for name in matmuls if name.endswith(end)] for end in nodes}
    if wrong := [end for end, names in found.items() if len(names) != 1]:
        # the exporter named a scope otherwise than smoothquant.onnx_scopes expects
        raise RuntimeError(f"int8 export: not one MatMul named ...{wrong[0]} in the graph: {found[wrong[0]]}")
    nodes = [names[0] for names in found.values()]
    root = logging.getLogger()
    # quantize_dynamic logs on the root logger (a warning that the model was not pre-processed, a line
    # per tensor it leaves alone at INFO): its notes to itself, kept out of the user's logs
    hush = _FromQuantizer()
    root.addFilter(hush)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes)
    finally:
        root.removeFilter(hush)


class _FromQuantizer(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" + os.sep + "quantization" not in record.pathname


def _onnx_nodes(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.node


def _smooth(cfg, model, graph: ExportGraph, tokenizer, alpha: float, sites: tuple[str, ...]) -> list[str]:
    """SmoothQuant the model in place (smoothquant.py); returns the MatMuls to quantise. The smoothed
    model must answer as before: a difference is a bug, and fails before anything is written."""
    from mtbert.inference import smoothquant

    found = smoothquant.sites(model.encoder, sites)
    if not found:
        raise UserError(f"--quantize int8-smoothquant: smoothquant.py does not know the layers of this encoder "
                        f"({type(model.encoder).__name__}; it knows BERT, RoBERTa, ELECTRA, DistilBERT and "
                        "minBERT); use --quantize int8")
    smoothquant.calibrate(model, cfg, tokenizer, smoothquant.calibration_examples(cfg), found)
    sample = sample_inputs(tokenizer)
    args = tuple(sample[name] for name in graph.inputs)
    with torch.no_grad():
        before = graph(*args)
        smoothquant.smooth(found, alpha)
        after = graph(*args)
    for b, a in zip(before, after, strict=True):
        if (a - b).abs().max() > 1e-4 * max(1.0, float(b.abs().max())):
            raise RuntimeError(f"SmoothQuant changed the fp32 model's outputs by {float((a - b).abs().max()):.2e}")
    return smoothquant.onnx_scopes(model.encoder, found)


def check_smoothquant_alpha(alpha: float | None, quantize: str | None) -> None:
    if alpha is None:
        return
    if quantize != "int8-smoothquant":
        raise UserError("--smoothquant-alpha applies to --quantize int8-smoothquant: add --quantize "
                        "int8-smoothquant, or drop it")
    if not 0 < alpha < 1:
        raise UserError(f"--smoothquant-alpha {alpha}: give a number between 0 and 1 (exclusive); 0.5 moves half "
                        "of the activations' range into the weights, more moves more (default "
                        f"{_default_alpha()})")


def _default_alpha() -> float:
    from mtbert.inference.smoothquant import DEFAULT_ALPHA

    return DEFAULT_ALPHA


def default_out_dir(run_dir: str | Path, quantize: str | None = None) -> Path:
    return Path(run_dir) / ("onnx" if quantize is None else f"onnx-{quantize}")


def _bundle_files(folder: Path, source: Path) -> set[str] | None:
    """The files an earlier export wrote into `folder`, by its manifest; None if no export wrote it.
    Manifests before the `files` list name no files: theirs are the bundle's fixed files and the
    tokenizer files, named as the run's own encoder folder names them."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, HF_FORMAT):
        return None
    if isinstance(manifest.get("files"), list):
        return {str(name) for name in manifest["files"]}
    tokenizer = {p.name for p in (source / "encoder").iterdir() if p.name not in ("config.json", "model.safetensors")}
    return {"model.onnx", "manifest.json", "labels.json", "config.yaml", *tokenizer}


def _model_folder_around(path: Path) -> Path | None:
    """The saved model (a folder with heads.safetensors) that `path` is or lies in, if any."""
    resolved = Path(os.path.realpath(path))
    return next((p for p in (resolved, *resolved.parents) if (p / "heads.safetensors").is_file()), None)


def check_out_dir(out_dir: Path, run_dir: Path, source: Path, force: bool, default: Path | None = None) -> None:
    """Refuse an export folder where writing the bundle would lose anything (see the module's docstring).
    `default`: the folder the messages suggest (the ONNX bundle's by default)."""
    default = default or default_out_dir(run_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: is a file; export writes a folder: give a new one with -o DIR")
    for model in (source, run_dir / "model"):
        if is_within(model, out_dir):
            raise UserError(f"{out_dir}: holds the run's model {model}; replacing it would lose the model: "
                            f"give a new folder with -o DIR (default {default})")
    if (inside := _model_folder_around(out_dir)) is not None:
        raise UserError(f"{out_dir}: inside the model folder {inside}; export never writes into a model: "
                        f"give a folder outside it with -o DIR (default {default})")
    found = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if not p.is_dir()) \
        if out_dir.is_dir() else []
    if not found:
        return
    bundle = _bundle_files(out_dir, source)
    if bundle is None:
        raise UserError(f"{out_dir}: holds files that mtbert export did not write ({_names(found)}); give a new "
                        "or empty folder with -o DIR")
    if not force:
        raise UserError(f"{out_dir}: holds an earlier export; pass --force to replace it, or -o DIR to write "
                        "another folder")
    if others := [name for name in found if name not in bundle]:
        raise UserError(f"{out_dir}: holds an earlier export and files it did not write ({_names(others)}); "
                        "--force replaces only an export's own files: move them, or give another -o DIR")


def _names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def export_onnx(run_dir: str | Path, out_dir: str | Path | None = None, quantize: str | None = None,
                force: bool = False, smoothquant_alpha: float | None = None,
                smoothquant_sites: tuple[str, ...] | None = None) -> Path:
    """Write the ONNX bundle of a run dir (default `RUN_DIR/onnx`, or `RUN_DIR/onnx-int8`); returns it.
    `force` replaces an earlier bundle there (and nothing else: see `check_out_dir`). `int8` is the block
    scheme; `int8-smoothquant` smooths the activations into the weights first (`smoothquant_alpha`, default
    smoothquant.DEFAULT_ALPHA), calibrated on the run's training inputs; `smoothquant_sites` (default smoothquant.SITES) names the projections
    smoothed and made int8, the others staying fp32 (benchmarks/int8_agreement.py compares choices).

    The fp32 graph is checked against PyTorch before anything is written: a difference above 1e-4 is
    a bug in the export, and it fails loudly rather than shipping a model that answers differently."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'mtbert[serve]'") from None
    if quantize not in (None, *QUANTIZATIONS):
        raise UserError(f"--quantize {quantize}: use one of {', '.join(QUANTIZATIONS)}")
    check_smoothquant_alpha(smoothquant_alpha, quantize)
    source = model_dir(run_dir)
    out_dir = Path(out_dir) if out_dir else default_out_dir(run_dir, quantize)
    check_out_dir(out_dir, Path(run_dir), source, force)
    cfg, model, tokenizer, labels = load_model(run_dir)
    model.float().eval()
    graph = ExportGraph(model).eval()
    tasks = list(model.heads)
    parity: dict[str, float] = {}
    scheme, smoothed = INT8_SCHEME, None
    if quantize == "int8-smoothquant":
        alpha = _default_alpha() if smoothquant_alpha is None else smoothquant_alpha
        from mtbert.inference.smoothquant import CALIBRATION_EXAMPLES, SITES

        sites = SITES if smoothquant_sites is None else tuple(smoothquant_sites)
        smoothed = _smooth(cfg, model, graph, tokenizer, alpha, sites)
        scheme = SMOOTHQUANT_SCHEME.format(alpha=alpha, examples=f"up to {CALIBRATION_EXAMPLES} per task's",
                                           sites=", ".join(s.replace("_", " ") for s in sites))

    def write(tmp: Path) -> None:
        fp32 = tmp / ("model.fp32.onnx" if quantize else "model.onnx")
        _export_graph(graph, tokenizer, fp32, tasks)
        diff = _max_abs_diff(graph, tokenizer, fp32)
        if diff > 1e-4:
            raise RuntimeError(f"ONNX export of {run_dir}: onnxruntime differs from PyTorch by {diff:.2e} (> 1e-4)")
        parity["fp32_max_abs_diff"] = diff
        if quantize:
            if smoothed is None:
                _quantize_int8(fp32, tmp / "model.onnx")
            else:
                _quantize_dynamic(fp32, tmp / "model.onnx", smoothed)
            fp32.unlink()
            parity["int8_max_abs_diff"] = _max_abs_diff(graph, tokenizer, tmp / "model.onnx")
        tokenizer.save_pretrained(tmp)
        shutil.copyfile(source / "labels.json", tmp / "labels.json")
        shutil.copyfile(source / "config.yaml", tmp / "config.yaml")
        manifest = {
            "format": FORMAT,
            "opset": OPSET,
            "quantization": quantize,
            "quantization_scheme": scheme if quantize else None,
            "pad_token_id": tokenizer.pad_token_id or 0,
            "inputs": {name: "int64 (batch, group, sequence)" for name in graph.inputs},
            "outputs": {t: {"type": cfg.tasks[t].type, "shape": registry.get(cfg.tasks[t].type).onnx_output[0],
                            "values": registry.get(cfg.tasks[t].type).onnx_output[1]} for t in tasks},
            "parity": parity,
            # what --force may replace later: exactly these files
            "files": sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
                            + ["manifest.json"]),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    atomic_write_dir(out_dir, write)
    log.info("exported %s to %s; max |onnxruntime - PyTorch|: %s", run_dir, out_dir,
             ", ".join(f"{k.split('_')[0]} {v:.1e}" for k, v in parity.items()))
    return out_dir
