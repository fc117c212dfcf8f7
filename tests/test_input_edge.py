"""One road through inference: an input becomes an Example once, at the edge where it arrives (HTTP,
the command line, Python), and only Examples travel on through the micro-batcher and the predictors. A
wrong input is reported with its place in the batch as data (`InputError.index`, the HTTP body's
`errors[0].loc`), which the command line turns into the line of the file."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from serve_fixtures import onnx_dir, served_run  # noqa: F401 - fixtures

from mtbert.cli import main
from mtbert.data.readers import Example
from mtbert.errors import InputError
from mtbert.inference.onnx_predictor import OnnxPredictor
from mtbert.inference.predictor import Predictor
from mtbert.inference.server import Limits, create_app


@pytest.fixture(scope="module")
def predictor(served_run):  # noqa: F811
    return Predictor(served_run, precision="fp32")


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, Limits(max_chars=200))) as c:
        yield c


@pytest.fixture
def built(monkeypatch) -> list[Example]:
    """Every Example constructed while the test runs (dataclasses.replace included)."""
    made: list[Example] = []
    init = Example.__init__

    def counting(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Example, "__init__", counting)
    return made


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_python_edge_raises_the_index_of_the_wrong_input(engine, predictor, onnx_dir):  # noqa: F811
    p = predictor if engine == "torch" else OnnxPredictor(onnx_dir)
    with pytest.raises(InputError) as caught:
        p.predict("sent", ["fine", "good", {"text_pair": "no text"}, "bad"])
    assert caught.value.index == 2
    assert caught.value.reason.startswith("task sent (classification) needs text")
    assert str(caught.value) == f"input 3: {caught.value.reason}"  # the message counts from 1, as before
    with pytest.raises(InputError) as caught:
        p.predict_all(["fine", "  ", "good"])
    assert (caught.value.index, caught.value.reason) == (1, "expected a non-empty text")
    with pytest.raises(InputError) as caught:
        p.predict("ner", [{"tokens": ["a"]}, {"tokens": ["b", "\ud800"]}])
    assert caught.value.index == 1 and "lone surrogate" in caught.value.reason


BAD_AT_2 = [  # (path, body, the field, the message): the input at index 2 of 4 is wrong
    ("/predict", {"task": "sts", "inputs": [{"text": "a", "text_pair": "b"}] * 2 + [{"text": "a"}]
                  + [{"text": "a", "text_pair": "b"}]},
     "inputs", "input 3: task sts (regression) needs text, and text_pair"),
    ("/predict", {"task": "sent", "inputs": ["a", "b", "x" * 201, "c"]},
     "inputs", "input 3: 201 characters; the limit is 200 per input"),
    ("/predict/all", b'{"texts": ["a", "b", "c \\ud800", "d"]}',
     "texts", "input 3: not valid Unicode (a lone surrogate, U+D800, at character 2)"),
    ("/model", {"x_sts": [["a", "b"], ["a", "b"], ["only one"], ["a", "b"]]},
     "x_sts", "x_sts item 3: expected [text, text_pair]"),
    ("/model", {"x_sent": ["a", "b", "c", "d"], "x_ner": [["a"], ["b"], {"text": "   "}, ["d"]]},
     "x_ner", "x_ner item 3: task ner needs tokens as a non-empty list of strings"),
]


@pytest.mark.parametrize(("path", "body", "field", "message"), BAD_AT_2, ids=[f"{b[0]}-{b[2]}" for b in BAD_AT_2])
def test_http_names_the_wrong_input_and_gives_its_index(client, path, body, field, message):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    r = client.post(path, **kwargs)
    assert r.status_code == 422, r.text
    detail, errors = r.json()["detail"], r.json()["errors"]
    assert detail.startswith(message), detail
    assert [e["loc"] for e in errors] == [["body", field, 2]]
    assert detail == f"{message.split(':')[0]}: {errors[0]['msg']}"


def test_cli_names_the_line_of_the_wrong_input(served_run, tmp_path, capsys):  # noqa: F811
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    # blank lines are skipped, so the wrong input's index (2) and its line (5) differ
    src.write_text('{"text": "fine"}\n\n"good"\n\n{"text_pair": "no text"}\n{"text": "bad"}\n')
    assert main(["predict", str(served_run), "--task", "sent", "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src} line 5: task sent (classification) needs text" in err and "input 3" not in err
    assert not out.exists()
    src.write_text('{"text": "fine"}\n\n{"text": "a \\ud800"}\n')
    assert main(["predict", str(served_run), "--task", "sent", "--input", str(src)]) == 2
    assert f"{src} line 3: not valid Unicode (a lone surrogate, U+D800, at character 2)" in capsys.readouterr().err


def test_an_example_is_built_once_per_input(client, predictor, served_run, tmp_path, built, capsys):  # noqa: F811
    batched: list = []
    batcher = client.app.state.batcher
    run = batcher.run

    def recording(key, items):
        batched.extend(items)
        return run(key, items)

    batcher.run = recording
    try:
        r = client.post("/predict", json={"task": "sent", "inputs": ["fine", {"text": "good"}, "bad"]})
        assert r.status_code == 200 and len(built) == 3
        r = client.post("/predict/all", json={"texts": ["John lives in Paris", "terrible"]})
        assert r.status_code == 200 and len(built) == 5
        r = client.post("/model", json={"x_sent": ["fine", "bad"], "x_ner": [["John", "left"], "Mary came"]})
        assert r.status_code == 200 and len(built) == 9
    finally:
        batcher.run = run
    # only the Examples built at the edge went through the micro-batcher: no input was rebuilt after it
    assert batched == built and all(isinstance(x, Example) for x in batched)

    built.clear()
    predictor.predict("sts", [{"text": "a", "text_pair": "b"}] * 4)
    assert len(built) == 4
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(t) for t in ["fine", "good", "bad"]) + "\n")
    built.clear()
    assert main(["predict", str(served_run), "--task", "sent", "--input", str(src)]) == 0
    assert len(built) == 3 and len(capsys.readouterr().out.splitlines()) == 3
    built.clear()
    assert main(["-q", "predict", str(served_run), "--all", "--input", str(src)]) == 0
    assert len(built) == 3


def dp_config(run) -> dict:
    """A DeepPavlov chainer over the served run's multiple-choice and regression tasks."""
    return {"chainer": {"in": ["x_mc", "x_sts"], "out": ["y_mc_pred_probas", "y_sts_pred"], "pipe": [
        {"class_name": "multitask_pipeline_preprocessor", "in": ["x_mc", "x_sts"], "out": ["f_mc", "f_sts"],
         "preprocessors": ["TorchTransformersMultiplechoicePreprocessor", "TorchTransformersPreprocessor"]},
        {"class_name": "multitask_transformer", "return_probas": True, "load_path": str(run),
         "tasks": {"mc": {"type": "multiple_choice", "options": 2}, "sts": {"type": "regression", "options": 1}},
         "in": ["f_mc", "f_sts"], "out": ["y_mc_pred_probas", "y_sts_pred"]}]}}


def test_one_deeppavlov_translator_for_server_cli_and_build_model(
        client, predictor, served_run, tmp_path, monkeypatch, capsys):  # noqa: F811
    """DeepPavlov's COPA shape (the context repeated per choice, ending in the question) reaches the model
    as the same text through POST /model, `mtbert predict DP_CONFIG.json` and `build_model`, all three
    through common.deeppavlov_input."""
    from mtbert.compat.deeppavlov import DeepPavlovModel
    from mtbert.inference import common

    translated = []
    translate = common.deeppavlov_input
    monkeypatch.setattr(common, "deeppavlov_input", lambda spec, item, index: translated.append(item) or
                        translate(spec, item, index))
    choices = ["people liked it", "people left"]
    copa = [["the film was bad what happened?"] * 2, choices]
    explicit = predictor.predict("mc", [{"text": "the film was bad", "question": "what happened?",
                                         "choices": choices}], return_probas=True)[0]

    rise = client.post("/model", json={"x_mc": [copa]})
    assert rise.status_code == 200 and rise.json()[0][2] == explicit["label"]
    config = tmp_path / "dp.json"
    config.write_text(json.dumps(dp_config(served_run)))
    model = DeepPavlovModel(predictor, dp_config(served_run))
    probas, scores = model([copa], [None])
    assert scores == [] and probas[0] == pytest.approx(explicit["probas"], abs=1e-5)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(copa) + "\n")
    assert main(["predict", str(config), "--task", "mc", "--format", "deeppavlov", "--input", str(src)]) == 0
    assert json.loads(capsys.readouterr().out)[0] == pytest.approx(explicit["probas"], abs=1e-5)
    assert translated == [copa] * 3
    # a wrong item is named by each edge in its own words, from the same InputError
    assert client.post("/model", json={"x_mc": [copa, ["ctx", "no list"]]}).json()["detail"].startswith(
        "x_mc item 2: expected [context, [choice, ...]]")
    with pytest.raises(InputError, match=r"^task mc input 2: expected \[context"):
        model([copa, ["ctx", "no list"]], [None, None])
