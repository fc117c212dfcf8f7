"""Sequence labeling answers one tag per word whatever the text: longer than max_length (read in
overlapping windows by default; `long_text: truncate` tags the words past the cut 'O'), or holding words
with no sub-token (zero-width characters, empty tokens), in both engines and every entry point (Python,
CLI, HTTP), with per-word tag probabilities on request; and evaluation scores every gold word, as
predict tags them."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
from conftest import write_toy_files
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtbert.cli import main
from mtbert.config import validate
from mtbert.data.features import encode
from mtbert.data.readers import Example, read_split
from mtbert.data.windows import per_input
from mtbert.errors import UserError
from mtbert.evaluation.metrics import ner_f1
from mtbert.inference.onnx_predictor import OnnxPredictor
from mtbert.inference.predictor import Predictor
from mtbert.inference.server import Limits, create_app

MAX_LENGTH = 32  # 30 sub-tokens between [CLS] and [SEP]; the default stride repeats 16, so a window moves 14
SENTENCE = "John lives in Paris and Mary Smith likes London".split()  # one sub-token a word in MiniLM's vocabulary
SIXTY = (SENTENCE * 7)[:60]
LONG = SENTENCE * 250  # 2250 words, 75 windows' worth of max_length
INVISIBLE = ["\u200b", "", " ", "\u200d\u200b"]  # words the tokenizer turns into no sub-token
ZERO = ["\u200b", "John", "", "lives", "in", " ", "Paris", "\u200d\u200b", "and", "\u200b"]
TAGS = {"John": "B-PER", "Mary": "B-PER", "Smith": "I-PER", "Paris": "B-LOC", "London": "B-LOC"}


def conll(words: list[str]) -> str:
    return "".join(f"{w} X X {TAGS.get(w, 'O')}\n" for w in words) + "\n"


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    """The tiny BERT trained on a sentence task and on tags, whose dev file holds a 60-word and a
    2250-word sentence besides short ones."""
    from mtbert.training.trainer import train

    root = tmp_path_factory.mktemp("long_text")
    data = write_toy_files(root / "data")
    (data / "ner_long_dev.txt").write_text(conll(SENTENCE) + conll(SIXTY) + conll(LONG) + conll(SENTENCE[:4]))
    tasks = {"sent": {"type": "classification", "train": "sent_train.tsv", "dev": "sent_dev.tsv",
                      "columns": {"text": "sentence", "label": "label"}},
             "ner": {"type": "sequence_labeling", "format": "conll", "train": "ner_train.txt",
                     "dev": "ner_long_dev.txt", "columns": {"tokens": 0, "tags": 3}}}
    cfg = {"backbone": tiny_bert, "data_dir": str(data), "seed": 1, "max_length": MAX_LENGTH, "tasks": tasks,
           "training": {"max_steps": 30, "batch_size": 4, "lr": 3e-3, "progress": False, "precision": "fp32"}}
    train(validate(cfg), root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory):
    from mtbert.inference.export import export_onnx

    return export_onnx(run, tmp_path_factory.mktemp("long_text_onnx") / "onnx")


@pytest.fixture(scope="module")
def torch_p(run):
    return Predictor(run, precision="fp32")


@pytest.fixture(scope="module")
def onnx_p(bundle):
    return OnnxPredictor(bundle)


@pytest.fixture(scope="module")
def truncating(run):
    """The same model with `long_text: truncate`."""
    p = Predictor(run, precision="fp32")
    p.cfg = copy.deepcopy(p.cfg)
    p.cfg.tasks["ner"].long_text = "truncate"
    return p


def word_probas(answer: dict) -> list:
    """Per word: its tag probabilities as a list in label order, or None."""
    return [None if p is None else list(p.values()) for p in answer["probas"]]


def same_probas(a: list, b: list, tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all((x is None) == (y is None) and (x is None or np.allclose(x, y, atol=tol))
                                    for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- the windows themselves


def test_the_model_has_learnt_tags(torch_p):
    """Otherwise every comparison below could pass on all-'O' answers."""
    (answer,) = torch_p.predict("ner", [{"tokens": SENTENCE}])
    assert set(answer["label"]) > {"O"}


@pytest.mark.parametrize("words", [SIXTY, LONG, ZERO], ids=["sixty", "long", "invisible"])
def test_one_tag_per_word_in_both_engines(torch_p, onnx_p, words):
    a, b = (p.predict("ner", [{"tokens": words}], return_probas=True)[0] for p in (torch_p, onnx_p))
    assert len(a["label"]) == len(words) == len(a["probas"])
    assert a["label"] == b["label"]
    assert same_probas(word_probas(a), word_probas(b))
    for word, tag, p in zip(words, a["label"], a["probas"], strict=True):
        if word in INVISIBLE:  # the model never saw it: 'O', and no probabilities
            assert tag == "O" and p is None
        else:
            assert p.keys() == set(torch_p.labels["ner"]) and abs(sum(p.values()) - 1) < 1e-4
            assert tag == max(p, key=p.get)


def test_words_without_sub_tokens_move_no_tag(torch_p, onnx_p):
    """The visible words of ZERO are tagged as the same text without the invisible ones."""
    visible = [w for w in ZERO if w not in INVISIBLE]
    for p in (torch_p, onnx_p):
        (with_invisible,), (without,) = p.predict("ner", [{"tokens": ZERO}]), p.predict("ner", [{"tokens": visible}])
        assert [t for w, t in zip(ZERO, with_invisible["label"], strict=True) if w not in INVISIBLE] == without["label"]


def central_window(j: int, n_words: int, content: int = MAX_LENGTH - 2, stride: int = MAX_LENGTH // 2) -> int:
    """The start of the window that holds word j (one sub-token a word) with the most context on its
    shorter side, worked out here from the windows' definition."""
    starts, start = [0], 0
    while start + content < n_words:  # the tokenizer's windows: the last one reaches the end
        start += content - stride
        starts.append(start)
    return max((s for s in starts if s <= j < s + content), key=lambda s: (min(j - s, s + content - 1 - j), -s))


def test_each_word_is_tagged_from_its_most_central_window(torch_p, onnx_p):
    """A word of LONG gets the probabilities the model gives it when it reads only that word's window."""
    words = SENTENCE * 8  # 72 words: six windows
    for p in (torch_p, onnx_p):
        (answer,) = p.predict("ner", [{"tokens": words}], return_probas=True)
        starts = sorted({central_window(j, len(words)) for j in range(len(words))})
        assert len(starts) > 3
        alone = dict(zip(starts, p.predict("ner", [{"tokens": words[s:s + MAX_LENGTH - 2]} for s in starts],
                                           return_probas=True), strict=True))
        for j in range(len(words)):
            s = central_window(j, len(words))
            assert answer["label"][j] == alone[s]["label"][j - s]
            assert same_probas([list(answer["probas"][j].values())], [list(alone[s]["probas"][j - s].values())])


def test_window_equals_truncate_within_max_length(torch_p, truncating):
    texts = [{"tokens": SENTENCE}, {"tokens": SIXTY[:MAX_LENGTH - 2]}, {"tokens": ZERO}, {"text": "Mary likes Paris"}]
    a, b = torch_p.predict("ner", texts, return_probas=True), truncating.predict("ner", texts, return_probas=True)
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert all(same_probas(word_probas(x), word_probas(y), 1e-6) for x, y in zip(a, b, strict=True))


def test_truncate_tags_the_words_past_max_length_o(torch_p, truncating):
    (cut,) = truncating.predict("ner", [{"tokens": SIXTY}], return_probas=True)
    (whole,) = torch_p.predict("ner", [{"tokens": SIXTY}])
    kept = MAX_LENGTH - 2
    assert len(cut["label"]) == len(SIXTY)
    assert cut["label"][kept:] == ["O"] * (len(SIXTY) - kept) and cut["probas"][kept:] == [None] * (len(SIXTY) - kept)
    assert cut["label"][:kept // 2] == whole["label"][:kept // 2]  # where window 0 is the most central
    assert set(whole["label"][kept:]) > {"O"}  # the windows tag what truncation cannot


def test_predict_all_tags_every_word_and_sentence_heads_read_the_first_window(torch_p, onnx_p):
    texts = [" ".join(SIXTY), " ".join(LONG), " ".join(w for w in ZERO if w.strip()), "John lives in Paris"]
    for p in (torch_p, onnx_p):
        answers = p.predict_all(texts, return_probas=True)
        assert [len(a["ner"]["label"]) for a in answers] == [len(t.split()) for t in texts]
        assert [a["ner"]["label"] for a in answers] == [x["label"] for x in p.predict("ner", texts)]
        # a sentence head reads the text truncated, as its own predict does
        assert [a["sent"]["label"] for a in answers] == [x["label"] for x in p.predict("sent", texts)]
    a, b = torch_p.predict_all(texts), onnx_p.predict_all(texts)
    assert [x["ner"]["label"] for x in a] == [x["ner"]["label"] for x in b]


WORD = st.one_of(st.text(min_size=0, max_size=12), st.sampled_from(INVISIBLE + SENTENCE + ["supercalifragilistic"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(WORD, min_size=1, max_size=120))
def test_len_tags_equals_len_words(torch_p, truncating, words):
    words = [w.encode("utf-8", "replace").decode("utf-8") for w in words]  # no lone surrogates
    for p in (torch_p, truncating):
        (answer,) = p.predict("ner", [{"tokens": words}], return_probas=True)
        assert len(answer["label"]) == len(words) == len(answer["probas"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(st.sampled_from(SENTENCE + INVISIBLE + ["supercalifragilistic", "Paris-London"]), min_size=1,
                      max_size=80),
       max_length=st.integers(9, 40), data=st.data())
def test_stitched_windows_are_the_whole_text(torch_p, words, max_length, data):
    """Windows put back together give each sub-token of the text once, in order, as read whole."""
    stride = data.draw(st.integers(1, max_length - 3))
    tokenizer = torch_p.tokenizer
    feats = encode("sequence_labeling", [Example(tokens=words)], tokenizer, max_length, with_labels=False,
                   stride=stride)
    # each output row says where it was read: (window, position in it)
    outputs = [np.array([[k, p] for p in range(len(f.input_ids))], dtype=float) for k, f in enumerate(feats)]
    (out,), (word_ids,), (n_words,) = per_input(feats, outputs, stitched=True)
    whole = tokenizer(words, is_split_into_words=True)
    assert n_words == len(words)
    assert word_ids == [w for w in whole.word_ids() if w is not None]
    # sub-token g of the text, read in the window where it has the most context on its shorter side
    content = [[p for p, w in enumerate(f.word_ids) if w is not None] for f in feats]
    step = len(content[0]) - stride

    def context(k: int, g: int) -> int:
        return min(g - k * step, len(content[k]) - 1 - (g - k * step))

    for g, (k, p) in enumerate(out.astype(int).tolist()):
        assert k * step + content[k].index(p) == g
        holders = [h for h in range(len(feats)) if 0 <= g - h * step < len(content[h])]
        best = max(context(h, g) for h in holders)
        assert k == min(h for h in holders if context(h, g) == best)


# ---------------------------------------------------------------- command line, HTTP, evaluation


def write_inputs(path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


INPUTS = [{"text": " ".join(SIXTY)}, {"tokens": LONG}, {"tokens": ZERO}]


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_cli_predict_tags_every_word_with_probabilities(run, bundle, torch_p, engine, tmp_path):
    source = write_inputs(tmp_path / "in.jsonl", INPUTS)
    model = str(bundle if engine == "onnx" else run)
    assert main(["--quiet", "predict", model, "--engine", engine, "--task", "ner", "--input", source,
                 "--output", str(tmp_path / "out.jsonl"), "--probas"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = torch_p.predict("ner", INPUTS, return_probas=True)
    for row, want in zip(rows, expected, strict=True):
        n = len(row["tokens"]) if "tokens" in row else len(row["text"].split())
        assert len(row["label"]) == n == len(row["probas"])
        assert row["label"] == want["label"] and same_probas(word_probas(row), word_probas(want))


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_cli_predict_all_and_split_tag_every_word(run, bundle, torch_p, engine, tmp_path):
    model = str(bundle if engine == "onnx" else run)
    source = write_inputs(tmp_path / "in.jsonl", [r["text"] if "text" in r else " ".join(w for w in r["tokens"] if w.strip())
                                                  for r in INPUTS])
    assert main(["--quiet", "predict", model, "--engine", engine, "--all", "--input", source, "--output",
                 str(tmp_path / "all.jsonl"), "--probas"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [len(r["ner"]["label"]) for r in rows] == [len(r["text"].split()) for r in rows]
    assert [len(r["ner"]["probas"]) for r in rows] == [len(r["text"].split()) for r in rows]
    assert [r["ner"]["label"] for r in rows] == [a["label"] for a in torch_p.predict("ner", [r["text"] for r in rows])]

    assert main(["--quiet", "predict", model, "--engine", engine, "--split", "dev", "--task", "ner", "--output",
                 str(tmp_path / "split")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "split" / "ner-dev-predictions.jsonl").read_text().splitlines()]
    assert [len(r["tokens"]) for r in rows] == [len(SENTENCE), len(SIXTY), len(LONG), 4]
    assert all(len(r["label"]) == len(r["tokens"]) for r in rows)
    assert [r["label"] for r in rows] == [a["label"] for a in torch_p.predict("ner", [{"tokens": r["tokens"]}
                                                                                      for r in rows])]


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_http_tags_every_word_with_probabilities(torch_p, onnx_p, engine):
    p = onnx_p if engine == "onnx" else torch_p
    with TestClient(create_app(p, Limits(max_chars=100_000, max_body_bytes=1_000_000))) as client:
        r = client.post("/predict", json={"task": "ner", "inputs": INPUTS, "probas": True})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        plain = client.post("/predict", json={"task": "ner", "inputs": INPUTS}).json()["predictions"]
        texts = [INPUTS[0]["text"], " ".join(LONG)]
        every = client.post("/predict/all", json={"texts": texts, "probas": True}).json()["results"]
    want = torch_p.predict("ner", INPUTS, return_probas=True)
    for answer, expected in zip(got, want, strict=True):
        assert answer["label"] == expected["label"] and same_probas(word_probas(answer), word_probas(expected))
    assert [a["label"] for a in plain] == [a["label"] for a in got] and all("probas" not in a for a in plain)
    assert [len(a["ner"]["label"]) for a in every] == [len(t.split()) for t in texts]
    assert [len(a["ner"]["probas"]) for a in every] == [len(t.split()) for t in texts]


def test_evaluate_scores_every_gold_word_as_predict_tags_it(run, torch_p, capsys):
    cfg = torch_p.cfg
    dev = read_split(cfg, "ner", "dev")
    tags = [a["label"] for a in torch_p.predict("ner", [{"tokens": ex.tokens} for ex in dev])]
    expected = ner_f1([ex.label for ex in dev], tags)
    assert main(["--quiet", "evaluate", str(run), "--task", "ner"]) == 0
    score = float(re.search(r"\| ner \| sequence_labeling \| ner_f1 \(primary\) \| ([\d.]+) \|", capsys.readouterr().out)[1])
    assert score == pytest.approx(expected, abs=5e-5)
    # the long sentences weigh: scored as truncated (their tails 'O'), the same tags score otherwise
    cut = [t[:MAX_LENGTH - 2] + ["O"] * (len(t) - MAX_LENGTH + 2) for t in tags]
    assert ner_f1([ex.label for ex in dev], cut) != pytest.approx(expected, abs=1e-3)


def test_training_dev_evaluation_scores_as_predict(torch_p):
    from mtbert.training.trainer import evaluate_all, prepare_data

    cfg = torch_p.cfg
    data = prepare_data(cfg, torch_p.tokenizer)
    scores, outputs = evaluate_all(torch_p.model, {"ner": data["ner"]}, cfg, torch_p.tokenizer.pad_token_id,
                                   torch_p.amp)
    tags = [a["label"] for a in torch_p.predict("ner", [{"tokens": ex.tokens} for ex in data["ner"].dev])]
    assert outputs["ner"].labels == tags
    assert scores["ner"]["ner_f1"] == pytest.approx(ner_f1([ex.label for ex in data["ner"].dev], tags))


# ---------------------------------------------------------------- the config key


def ner_config(tiny_bert, **task) -> dict:
    return {"backbone": tiny_bert, "max_length": MAX_LENGTH,
            "tasks": {"ner": {"type": "sequence_labeling", "format": "conll", "train": "x", "columns": {"tokens": 0},
                              **task},
                      "sent": {"type": "classification", "train": "x", "columns": {"text": 0, "label": 1}}}}


def test_config_long_text(tiny_bert):
    cfg = validate(ner_config(tiny_bert))
    assert cfg.tasks["ner"].long_text == "window" and cfg.window_stride("ner") == MAX_LENGTH // 2
    assert cfg.window_stride("sent") is None and cfg.tasks["sent"].long_text is None
    assert validate(ner_config(tiny_bert, long_text="truncate")).window_stride("ner") is None
    assert validate(ner_config(tiny_bert, window_stride=8)).window_stride("ner") == 8
    assert validate(cfg.dump()).dump() == cfg.dump()  # a run's saved config loads back
    for task, message in [
        ({"long_text": "slide"}, "tasks.ner.long_text: Input should be 'window' or 'truncate' (got 'slide')"),
        ({"window_stride": 30}, "tasks.ner.window_stride: 30 sub-tokens repeated per window, but a window holds "
                                "30 (max_length 32 less 2 special tokens); give a smaller stride, e.g. 16"),
        ({"window_stride": 0}, "tasks.ner.window_stride: Input should be greater than 0"),
        ({"long_text": "truncate", "window_stride": 8}, "tasks.ner: window_stride applies to long_text 'window', "
                                                        "not 'truncate'; remove one of them"),
    ]:
        with pytest.raises(UserError) as err:
            validate(ner_config(tiny_bert, **task))
        assert str(err.value) == f"config: {message}"
    raw = ner_config(tiny_bert)
    raw["tasks"]["sent"]["long_text"] = "window"
    with pytest.raises(UserError, match=re.escape("tasks.sent: long_text applies to sequence_labeling tasks, "
                                                  "not classification; remove it")):
        validate(raw)
