"""Shipping a model: the ONNX export (one graph, every head, parity with PyTorch), int8 quantisation,
the torch-free ONNX engine, and batch prediction of every head over a file (`predict --all`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import SHARED_DATA
from serve_fixtures import onnx_dir, served_run  # noqa: F401 - fixtures

from mtbert.cli import main
from mtbert.config import validate
from mtbert.data.features import collate, encode
from mtbert.data.readers import read_split
from mtbert.errors import UserError
from mtbert.inference.batch import predict_all_file
from mtbert.inference.export import INPUTS, INT8_SCHEME, ExportGraph
from mtbert.inference.onnx_predictor import OnnxPredictor
from mtbert.inference.predictor import Predictor
from mtbert.rundir import load_model

TASKS = ["sent", "sts", "mc", "ner", "polar", "para", "len"]


def dev_inputs(cfg, task: str) -> list[dict]:
    fields = ("text", "text_pair", "question", "choices", "tokens")
    return [{k: getattr(ex, k) for k in fields if getattr(ex, k) is not None} for ex in read_split(cfg, task, "dev")]


def test_bundle_holds_one_graph_with_an_output_per_head(onnx_dir):  # noqa: F811
    assert {p.name for p in onnx_dir.iterdir()} >= {"model.onnx", "manifest.json", "tokenizer.json", "labels.json",
                                                    "config.yaml"}
    graph = onnx.load(str(onnx_dir / "model.onnx")).graph
    assert [i.name for i in graph.input] == list(INPUTS)
    for i in graph.input:  # batch, group and sequence are all free
        assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "group", "sequence"]
    assert [o.name for o in graph.output] == TASKS
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    assert manifest["quantization"] is None and manifest["parity"]["fp32_max_abs_diff"] <= 1e-4
    assert manifest["outputs"]["mc"] == {"type": "multiple_choice", "shape": "batch, group",
                                         "values": "probabilities over the choices"}


@pytest.mark.parametrize("task", TASKS)
def test_graph_matches_pytorch_on_dev_inputs(served_run, onnx_dir, task):  # noqa: F811
    """Every head's output on the task's dev inputs, batched and padded as predict does."""
    cfg, model, tokenizer, labels = load_model(served_run)
    spec = cfg.tasks[task]
    feats = encode(spec.type, read_split(cfg, task, "dev"), tokenizer, cfg.max_length_for(task), labels.get(task), task,
                   with_labels=False, pair_encoding=spec.pair_encoding)
    batch = collate(spec.type, feats, tokenizer.pad_token_id)
    grouped = {k: batch[k] if batch[k].dim() == 3 else batch[k].unsqueeze(1) for k in INPUTS}
    with torch.no_grad():
        expected = ExportGraph(model.eval())(*grouped.values())
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"))
    got = session.run(None, {k: v.numpy() for k, v in grouped.items()})
    i = TASKS.index(task)
    assert got[i].shape == tuple(expected[i].shape)
    assert np.abs(got[i] - expected[i].numpy()).max() <= 1e-4


def probability_values(probas) -> list[float]:
    """An answer's probabilities as one flat list: per class {label: p}, per choice [p], per word [{tag: p}]."""
    if isinstance(probas, dict):
        return list(probas.values())
    return [v for p in probas for v in (p.values() if isinstance(p, dict) else [p])]


def test_onnx_engine_answers_as_the_torch_predictor(served_run, onnx_dir):  # noqa: F811
    torch_p, onnx_p = Predictor(served_run, precision="fp32"), OnnxPredictor(onnx_dir)
    assert onnx_p.tasks == torch_p.tasks and onnx_p.labels == torch_p.labels
    assert onnx_p.single_text_tasks() == torch_p.single_text_tasks()
    for task in TASKS:
        inputs = dev_inputs(torch_p.cfg, task)
        a, b = torch_p.predict(task, inputs, return_probas=True), onnx_p.predict(task, inputs, return_probas=True)
        for x, y in zip(a, b, strict=True):
            assert x.keys() == y.keys()
            if "score" in x:
                assert abs(x["score"] - y["score"]) <= 1e-4
            else:
                assert x["label"] == y["label"]
            if "probas" in x:
                assert np.allclose(probability_values(x["probas"]), probability_values(y["probas"]), atol=1e-4)
    texts = ["John lives in Paris", "a great fine movie , really", "terrible"]
    a, b = torch_p.predict_all(texts, return_probas=True), onnx_p.predict_all(texts, return_probas=True)
    assert [{t: r[t]["label"] for t in ("sent", "ner", "polar")} for r in a] == \
           [{t: r[t]["label"] for t in ("sent", "ner", "polar")} for r in b]
    assert onnx_p.predict("sent", []) == [] and onnx_p.predict_all([]) == []
    for task, inputs, call in [("sts", [{"text": "a"}], "predict"), ("sent", [3], "predict"), ("ner", [{"tokens": []}], "predict"),
                               ("sent", ["ok", "  "], "predict_all"), ("sts", ["a"], "predict_all"), ("nope", ["a"], "predict")]:
        messages = []
        for p in (torch_p, onnx_p):
            with pytest.raises(UserError) as err:
                p.predict(task, inputs) if call == "predict" else p.predict_all(inputs, tasks=[task] if task != "sent" else None)
            messages.append(str(err.value))
        assert messages[0] == messages[1]


def test_onnx_engine_and_server_import_no_torch(onnx_dir):  # noqa: F811
    script = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from mtbert.inference.engines import load_predictor
        from mtbert.inference.server import create_app
        p = load_predictor({str(onnx_dir)!r}, "onnx")
        assert p.predict("sent", ["great fun"])[0]["label"] in ("neg", "pos")
        with TestClient(create_app(p)) as client:
            assert client.post("/predict/all", json={{"texts": ["John lives in Paris"]}}).status_code == 200
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory) -> Path:
    """The packaged MiniLM with heads set by hand, no training: mean-pooled u . v, the similarity the
    model was trained for, as an STS regression and (above a threshold inside its range) as a
    paraphrase classifier. Its answers spread like a trained model's, which a tiny random BERT's
    do not (there int8 noise is as large as the differences between inputs)."""
    from mtbert.modeling.encoder import load_encoder, load_tokenizer
    from mtbert.modeling.model import MultiTaskModel
    from mtbert.rundir import save_model
    from mtbert.tasks import build_head

    pair = {"dev": "glue/stsb/dev.tsv", "pair_encoding": "separate", "pair_combine": "sbert", "pooling": "mean",
            "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "score"}}
    cfg = validate({"backbone": "minilm", "data_dir": str(SHARED_DATA), "max_length": 48, "tasks": {
        "sim": {"type": "regression", **pair}, "para": {"type": "classification", "labels": ["diff", "same"], **pair}}})
    encoder, tokenizer = load_encoder("minilm"), load_tokenizer("minilm")
    hidden = encoder.config.hidden_size
    heads = {"sim": build_head(cfg.tasks["sim"], hidden, None), "para": build_head(cfg.tasks["para"], hidden, ["diff", "same"])}
    dot = torch.zeros(4 * hidden)
    dot[3 * hidden:] = 1.0  # the u * v block of [u; v; |u - v|; u * v]
    with torch.no_grad():
        heads["sim"].out.weight.copy_(dot[None])
        heads["sim"].out.bias.zero_()
        heads["para"].out.weight.copy_(torch.stack([torch.zeros(4 * hidden), dot]))
        heads["para"].out.bias.copy_(torch.tensor([0.0, -12.0]))
    run = tmp_path_factory.mktemp("minilm") / "run"
    save_model(run, MultiTaskModel(encoder, heads, {"sim": "regression", "para": "classification"}), tokenizer, cfg,
               {"para": ["diff", "same"]})
    return run


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"STS-B dev not found under {SHARED_DATA}")
def test_int8_parity_on_minilm(minilm_run, tmp_path):
    """int8 against fp32 on STS-B dev pairs, at the issue's bars: Pearson within 0.02 (it is within
    0.001) and 99% of labels the same (99.75% of these 400 pairs, 99.87% of all 1,500; per-tensor
    dynamic quantisation, which int8 export used before, agreed on 99.5% and 98.3%)."""
    assert main(["-q", "export", str(minilm_run), "-o", str(tmp_path / "fp32")]) == 0
    assert main(["-q", "export", str(minilm_run), "--quantize", "int8", "-o", str(tmp_path / "int8")]) == 0
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["quantization"] == "int8" and manifest["quantization_scheme"] == INT8_SCHEME
    # the encoder's weights are int8 but for the FFN output projections; the fp32 word embeddings are
    # half of the fp32 file
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < 0.8 * (tmp_path / "fp32" / "model.onnx").stat().st_size
    fp32, int8 = OnnxPredictor(tmp_path / "fp32"), OnnxPredictor(tmp_path / "int8")
    examples = read_split(fp32.cfg, "sim", "dev")[:400]
    inputs = [{"text": ex.text, "text_pair": ex.text_pair} for ex in examples]
    gold = np.array([ex.label for ex in examples])
    pearson = [np.corrcoef([r["score"] for r in p.predict("sim", inputs)], gold)[0, 1] for p in (fp32, int8)]
    assert pearson[0] > 0.7  # the hand-set model is a real similarity model
    assert abs(pearson[0] - pearson[1]) <= 0.02
    labels = [[r["label"] for r in p.predict("para", inputs)] for p in (fp32, int8)]
    assert 0.2 < np.mean([x == "same" for x in labels[0]]) < 0.8  # both labels well represented
    assert np.mean([x == y for x, y in zip(*labels, strict=True)]) >= 0.99


def test_export_command_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "not_a_run").mkdir()
    assert main(["predict", str(tmp_path / "not_a_run"), "--engine", "onnx", "--task", "x"]) == 2
    assert "holds no ONNX model" in capsys.readouterr().err


# --- predict --all

TEXTS = ["John lives in Paris", "a great fine movie , really", "terrible", "Mary Smith likes London",
         "boring bad story", "good and lovely", "Paris is lovely"]


def write_inputs(path: Path) -> Path:
    lines = [json.dumps(t) if i % 2 else json.dumps({"text": t, "id": i}) for i, t in enumerate(TEXTS)]
    path.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_predict_all_command_answers_every_single_text_head(served_run, onnx_dir, tmp_path, capsys):  # noqa: F811
    inputs, out = write_inputs(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    assert main(["predict", str(served_run), "--all", "--input", str(inputs), "--output", str(out), "--probas"]) == 0
    assert "7/7" in capsys.readouterr().err  # the progress bar
    rows = read_jsonl(out)
    expected = Predictor(served_run).predict_all(TEXTS, return_probas=True)
    assert [r["text"] for r in rows] == TEXTS and rows[0]["id"] == 0 and "id" not in rows[1]
    for row, exp in zip(rows, expected, strict=True):
        assert list(row) == ["text", *(["id"] if "id" in row else []), "sent", "ner", "polar", "len"]
        assert row["ner"]["label"] == exp["ner"]["label"] and row["sent"]["label"] == exp["sent"]["label"]
        assert row["len"]["score"] == pytest.approx(exp["len"]["score"], abs=1e-4)
    onnx_out = tmp_path / "onnx.jsonl"
    assert main(["-q", "predict", str(onnx_dir), "--engine", "onnx", "--all", "--input", str(inputs),
                 "--output", str(onnx_out)]) == 0
    onnx_expected = OnnxPredictor(onnx_dir).predict_all(TEXTS)
    assert [{k: v for k, v in r.items() if k not in ("text", "id")} for r in read_jsonl(onnx_out)] == onnx_expected
    assert main(["predict", str(served_run), "--all", "--task", "sent", "--input", str(inputs)]) == 2
    assert "--all predicts every task" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"text": "  "}\n')
    assert main(["predict", str(served_run), "--all", "--input", str(bad), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert f"{bad} line 2: expected a non-empty text" in capsys.readouterr().err


class Interrupted(Exception):
    pass


def test_skip_existing_resumes_after_a_crash_and_never_predicts_twice(served_run, tmp_path):  # noqa: F811
    predictor = Predictor(served_run)
    inputs, out = write_inputs(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    full = tmp_path / "full.jsonl"
    predict_all_file(predictor, str(inputs), str(full), chunk_size=2, progress=False)
    seen: list[str] = []  # the texts predicted, as the words predict_all_examples reads
    real = predictor.predict_all_examples

    def counting(examples, tasks, return_probas=False):
        if len(seen) >= 4:
            raise Interrupted  # a crash after two chunks
        seen.extend(" ".join(ex.tokens) for ex in examples)
        return real(examples, tasks, return_probas)

    predictor.predict_all_examples = counting
    with pytest.raises(Interrupted):
        predict_all_file(predictor, str(inputs), str(out), chunk_size=2, progress=False)
    assert read_jsonl(out) == read_jsonl(full)[:4]  # whole lines only, each chunk on disk before the next
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"text": "Mary Smith likes Lon')  # and a line cut mid-write by the crash
    seen.clear()
    predictor.predict_all_examples = lambda examples, tasks, return_probas=False: \
        seen.extend(" ".join(ex.tokens) for ex in examples) or real(examples, tasks, return_probas)
    assert predict_all_file(predictor, str(inputs), str(out), skip_existing=True, chunk_size=2, progress=False) == 3
    assert seen == [" ".join(t.split()) for t in TEXTS[4:]] and out.read_text() == full.read_text()
    seen.clear()
    assert predict_all_file(predictor, str(inputs), str(out), skip_existing=True, progress=False) == 0
    assert seen == [] and out.read_text() == full.read_text()
    other = tmp_path / "other.jsonl"
    other.write_text('"something else"\n')
    with pytest.raises(UserError, match="answers another input file"):
        predict_all_file(predictor, str(other), str(out), skip_existing=True, progress=False)
    with pytest.raises(UserError, match="give --output FILE"):
        predict_all_file(predictor, str(inputs), None, skip_existing=True, progress=False)


@pytest.mark.parametrize("impl", ["hf", "minbert"])
def test_int8_keeps_the_ffn_output_projections_in_fp32(impl, tmp_path):
    """The MatMuls left out of quantisation, found by their names in the exported graph of either
    encoder: each layer's feed-forward output projection, and nothing else."""
    from transformers import BertConfig, BertModel

    from mtbert.inference.export import _kept_in_fp32
    from mtbert.modeling.minbert import MinBert, MinBertConfig

    sizes = {"vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
             "intermediate_size": 32}
    encoder = BertModel(BertConfig(**sizes)) if impl == "hf" else MinBert(MinBertConfig(**sizes))

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, ids, mask):
            return self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    path = tmp_path / "enc.onnx"
    ids = torch.randint(0, 100, (2, 5))
    with torch.no_grad():
        torch.onnx.export(Wrapped(), (ids, torch.ones_like(ids)), str(path), dynamo=False,
                          input_names=["ids", "mask"], opset_version=17)
    matmuls = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"]
    kept = _kept_in_fp32(path)
    assert [sum(f".{i}/" in n for n in kept) for i in range(4)] == [1, 1, 1, 1]  # one per layer
    ffn_in = [n for n in matmuls if re.search(r"/(intermediate/dense|ffn_in)/", n)]
    attention = [n for n in matmuls if re.search(r"/(self/)?(key|query|value)/", n)]
    assert len(ffn_in) == 4 and len(attention) == 12 and not set(kept) & set(ffn_in + attention)


def test_int8_quantisation_leaves_the_users_logging_alone(tmp_path):
    """onnxruntime's block quantiser calls logging.basicConfig(level=INFO) when first imported and logs
    a line per node; in a fresh interpreter with no logging set up, quantising must add no handler to
    the root logger and print nothing, and the MatMul must become int8 (MatMulNBits)."""
    script = textwrap.dedent(f"""
        import logging
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
        from pathlib import Path
        from mtbert.inference.export import _quantize_int8

        weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/encoder/layer.0/q/MatMul")],
                                  "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [weight])
        src, dst = Path({str(tmp_path)!r}) / "a.onnx", Path({str(tmp_path)!r}) / "b.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
        _quantize_int8(src, dst)
        assert logging.getLogger().handlers == [], logging.getLogger().handlers
        print([n.op_type for n in onnx.load(str(dst)).graph.node])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MatMulNBits']" and done.stderr == ""


# --- every encoder family training accepts

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}
FAMILIES = {  # family: (config class, model class, its config beyond TINY)
    "bert": ("BertConfig", "BertModel", {}),
    # RoBERTa numbers positions from its pad id + 1: two more than the longest sequence
    "roberta": ("RobertaConfig", "RobertaModel", {"pad_token_id": 0, "max_position_embeddings": 66}),
    "distilbert": ("DistilBertConfig", "DistilBertModel", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),
    "electra": ("ElectraConfig", "ElectraModel", {"embedding_size": 16}),
    "deberta-v2": ("DebertaV2Config", "DebertaV2Model", {"relative_attention": True, "position_buckets": 16,
                                                         "pos_att_type": ["p2c", "c2p"]}),
    "modernbert": ("ModernBertConfig", "ModernBertModel", {"pad_token_id": 0, "global_attn_every_n_layers": 2,
                                                           "local_attention": 8}),
}
# the families whose encoder reads token types; the others' graphs take no token_type_ids input
# (DeBERTa-v2 has a type embedding only with type_vocab_size > 0, which its config leaves at 0)
READS_TOKEN_TYPES = {"bert", "roberta", "electra"}


def tiny_encoder(family: str, path: Path) -> str:
    """A randomly initialised encoder of `family` at tiny sizes, saved with MiniLM's WordPiece tokenizer
    (its 30,522 entries are the vocabulary size)."""
    import transformers
    from transformers import AutoTokenizer

    from mtbert.modeling.encoder import resolve_backbone

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    config_class, model_class, extra = FAMILIES[family]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), **{**TINY, **extra})
    getattr(transformers, model_class)(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def graph_feeds(cfg, tokenizer, labels, task: str) -> dict[str, torch.Tensor]:
    """The task's dev inputs as one grouped batch of every graph input, encoded as training does."""
    spec = cfg.tasks[task]
    feats = encode(spec.type, read_split(cfg, task, "dev"), tokenizer, cfg.max_length_for(task), labels.get(task), task,
                   with_labels=False, pair_encoding=spec.pair_encoding)
    batch = collate(spec.type, feats, tokenizer.pad_token_id)
    return {k: batch[k] if batch[k].dim() == 3 else batch[k].unsqueeze(1) for k in INPUTS}


def answers(task_type: str, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What a label is chosen from, one row per decision: class or choice probabilities, the softmax of
    each real sub-token's tag logits, or the score."""
    if task_type == "sequence_labeling":
        e = np.exp(out - out.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True))[mask[:, 0].astype(bool)]
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_encoder_family_exports_and_predicts(family, tmp_path):
    """Train each family a few steps on every kind of head, export fp32 and int8 through the CLI, and
    predict with the ONNX engine. fp32 is PyTorch within 1e-4 and gives its labels. int8 is held to
    bars that a tiny random model can be held to: every probability within 0.05 of fp32's, and the same
    label wherever fp32's two best are more than 0.1 apart (closer ones may fairly flip); scores
    within 0.05 of their range."""
    from serve_fixtures import serve_config, write_toy_data

    from mtbert.training.trainer import train

    write_toy_data(tmp_path / "data")
    run = tmp_path / "run"
    train(validate(serve_config(tiny_encoder(family, tmp_path / family), tmp_path / "data", max_steps=4)), run)
    for name, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
        assert main(["-q", "export", str(run), "-o", str(tmp_path / name), *extra]) == 0
    expected_inputs = list(INPUTS if family in READS_TOKEN_TYPES else INPUTS[:2])
    sessions = {}
    for name in ("fp32", "int8"):
        assert [i.name for i in onnx.load(str(tmp_path / name / "model.onnx")).graph.input] == expected_inputs
        assert list(json.loads((tmp_path / name / "manifest.json").read_text())["inputs"]) == expected_inputs
        sessions[name] = ort.InferenceSession(str(tmp_path / name / "model.onnx"))
    # int8 keeps each layer's feed-forward output projection in fp32, whatever the family names it
    from mtbert.inference.export import _kept_in_fp32

    assert len(_kept_in_fp32(tmp_path / "fp32" / "model.onnx")) == TINY["num_hidden_layers"]

    cfg, model, tokenizer, labels = load_model(run)
    graph = ExportGraph(model.eval())
    for i, task in enumerate(TASKS):
        feeds = graph_feeds(cfg, tokenizer, labels, task)
        with torch.no_grad():
            want = graph(*(feeds[k] for k in graph.inputs))[i].numpy()
        fp32, int8 = (sessions[n].run([task], {k: feeds[k].numpy() for k in expected_inputs})[0] for n in ("fp32", "int8"))
        assert np.abs(fp32 - want).max() <= 1e-4, task
        kind, mask = cfg.tasks[task].type, feeds["attention_mask"].numpy()
        exact, quantised = answers(kind, fp32, mask), answers(kind, int8, mask)
        if kind == "regression":
            assert np.abs(exact - quantised).max() <= 0.05 * max(1.0, np.ptp(exact)), task
            continue
        assert np.abs(exact - quantised).max() <= 0.05, task
        top2 = np.sort(exact, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 0.1
        assert (exact.argmax(-1) == quantised.argmax(-1))[clear].all(), task

    torch_p = Predictor(run, precision="fp32")
    engines = {name: OnnxPredictor(tmp_path / name) for name in ("fp32", "int8")}
    for task in TASKS:
        inputs = dev_inputs(torch_p.cfg, task)
        want, got = torch_p.predict(task, inputs), engines["fp32"].predict(task, inputs)
        assert [r.get("label") for r in got] == [r.get("label") for r in want], task
        assert np.allclose([r.get("score", 0.0) for r in got], [r.get("score", 0.0) for r in want], atol=1e-4), task
        assert [r.keys() for r in engines["int8"].predict(task, inputs)] == [r.keys() for r in want], task
    texts = ["John lives in Paris", "a great fine movie , really"]  # every single-text head from one pass
    want = torch_p.predict_all(texts)
    for name, engine in engines.items():
        got = engine.predict_all(texts)
        assert [list(r) for r in got] == [list(r) for r in want], name
        assert [len(r["ner"]["label"]) for r in got] == [4, 6], name
    assert [{t: r[t].get("label") for t in r} for r in engines["fp32"].predict_all(texts)] == \
           [{t: r[t].get("label") for t in r} for r in want]


def test_cosine_pair_head_exports_and_answers_as_torch(tiny_bert, tmp_path):
    """pair_combine: cosine (a regression score from two separately encoded texts) in the ONNX graph."""
    from conftest import write_toy_files

    from mtbert.inference.export import export_onnx
    from mtbert.training.trainer import train

    write_toy_files(tmp_path / "data")
    sim = {"type": "regression", "train": "sts_train.tsv", "dev": "sts_dev.tsv", "pair_encoding": "separate",
           "pair_combine": "cosine", "pooling": "mean", "columns": {"text": "s1", "text_pair": "s2", "label": "score"}}
    train(validate({"backbone": tiny_bert, "data_dir": str(tmp_path / "data"), "max_length": 32, "tasks": {"sim": sim},
                    "training": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "progress": False, "precision": "fp32"}}),
          tmp_path / "run")
    export_onnx(tmp_path / "run", tmp_path / "onnx")
    torch_p, onnx_p = Predictor(tmp_path / "run", precision="fp32"), OnnxPredictor(tmp_path / "onnx")
    inputs = dev_inputs(torch_p.cfg, "sim")
    a, b = [[r["score"] for r in p.predict("sim", inputs)] for p in (torch_p, onnx_p)]
    assert len(set(a)) > 1 and np.allclose(a, b, atol=1e-4)
