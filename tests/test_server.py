"""The REST server: every endpoint and error case through FastAPI's test client, micro-batching under
concurrent requests, a real uvicorn on loopback, schemathesis on the app's own OpenAPI spec, and
`mtbert serve` itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from serve_fixtures import onnx_dir, served_run  # noqa: F401 - fixtures

from mtbert.inference.batching import MicroBatcher
from mtbert.inference.common import deeppavlov_input
from mtbert.inference.predictor import Predictor
from mtbert.inference.server import Limits, create_app, serve_in_thread

LIMITS = Limits(max_inputs=8, max_chars=200, max_body_bytes=20_000, batch_size=16, max_wait_ms=20)
TEXTS = ["John lives in Paris", "a great fine movie , really", "terrible", "Mary Smith likes London"]
INPUTS = {
    "sent": ["great fun", {"text": "a bad awful movie"}],
    "sts": [{"text": "great fun", "text_pair": "great fun"}, {"text": "a bad movie", "text_pair": "lovely story"}],
    "mc": [{"text": "the film was great", "question": "what happened?", "choices": ["people liked it", "people left"]}],
    "ner": [{"tokens": ["John", "lives", "in", "Paris"]}, {"text": "Mary Smith likes London"}],
    "polar": ["good and lovely"],
    "para": [{"text": "great fun", "text_pair": "terrible and bad"}],
    "len": ["boring bad story"],
}


@pytest.fixture(scope="module")
def predictor(served_run):  # noqa: F811
    return Predictor(served_run, precision="fp32")


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, LIMITS, run_name="served")) as c:
        yield c


def roundtrip(obj):
    return json.loads(json.dumps(obj))


def close(a, b, tol=1e-4) -> bool:
    """Equal labels, numbers within `tol`: answers batched with other inputs are padded differently."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tol
    return a == b


def test_health_and_tasks(client, predictor):
    assert client.get("/health").json() == {"status": "ok", "run": "served", "engine": "torch", "tasks": 7,
                                            "requests": 0, "model_calls": 0}
    tasks = {t["name"]: t for t in client.get("/tasks").json()}
    assert list(tasks) == ["sent", "sts", "mc", "ner", "polar", "para", "len"]
    assert tasks["sent"] == {"name": "sent", "type": "classification", "inputs": ["text"], "labels": ["neg", "pos"],
                             "single_text": True}
    assert tasks["sts"]["inputs"] == ["text", "text_pair"] and not tasks["sts"]["single_text"]
    assert tasks["mc"]["inputs"] == ["text", "question", "choices"] and tasks["mc"]["labels"] is None
    assert tasks["ner"]["labels"] == predictor.labels["ner"] and tasks["ner"]["single_text"]
    assert client.get("/docs").status_code == 200
    assert {"/predict", "/predict/all", "/model", "/tasks", "/health"} <= set(client.get("/openapi.json").json()["paths"])
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "/predict/all" in page.text


@pytest.mark.parametrize("task", list(INPUTS))
def test_predict_answers_as_the_predictor(client, predictor, task):
    r = client.post("/predict", json={"task": task, "inputs": INPUTS[task], "probas": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"task": task, "predictions": roundtrip(predictor.predict(task, INPUTS[task], return_probas=True))}
    plain = client.post("/predict", json={"task": task, "inputs": INPUTS[task]}).json()["predictions"]
    assert plain == roundtrip(predictor.predict(task, INPUTS[task]))
    assert all("probas" not in p for p in plain)


def test_predict_all_is_every_single_text_head(client, predictor):
    r = client.post("/predict/all", json={"texts": TEXTS, "probas": True}).json()
    assert r["tasks"] == ["sent", "ner", "polar", "len"]
    assert r["results"] == roundtrip(predictor.predict_all(TEXTS, return_probas=True))
    subset = client.post("/predict/all", json={"texts": TEXTS[:1], "tasks": ["len", "sent"]}).json()
    assert subset["tasks"] == ["len", "sent"]
    assert subset["results"] == roundtrip(predictor.predict_all(TEXTS[:1], tasks=["len", "sent"]))


def test_riseapi_model_endpoint(client, predictor):
    premise, question, choices = "the film was bad", "what happened?", ["people liked it", "people left"]
    body = {"x_sent": ["great fun", "terrible"],
            "x_sts": [["great fun", "great fun"], ["a bad movie", "lovely story"]],
            "x_mc": [[[f"{premise} {question}"] * 2, choices], [premise, question, choices]],
            "x_ner": [["John", "lives", "in", "Paris"], "Mary Smith likes London"]}
    rows = client.post("/model", json=body).json()
    expect = {"sent": predictor.predict("sent", ["great fun", "terrible"]),
              "sts": predictor.predict("sts", INPUTS["sts"]),
              "mc": predictor.predict("mc", [{"text": premise, "question": question, "choices": choices}] * 2),
              "ner": predictor.predict("ner", INPUTS["ner"])}
    assert len(rows) == 2
    for i, row in enumerate(rows):
        # one answer per task in the model's order, [] for the tasks not asked
        assert row[4:] == [[], [], []]
        assert row[0] == expect["sent"][i]["label"] and row[2] == expect["mc"][i]["label"]
        assert row[1] == pytest.approx(expect["sts"][i]["score"]) and row[3] == expect["ner"][i]["label"]
    assert client.get("/api").json() == [f"x_{t}" for t in predictor.cfg.tasks]


def test_riseapi_copa_context_gives_the_model_the_same_text(predictor):
    """DeepPavlov's COPA reader sends premise and question joined as one context; the model must see
    exactly what it sees for the separate fields."""
    spec = predictor.cfg.tasks["mc"]
    choices = ["people liked it", "people left"]
    joined = deeppavlov_input(spec, [["the film was bad what happened?"] * 2, choices], 0)
    explicit = {"text": "the film was bad", "question": "what happened?", "choices": choices}
    assert predictor.predict("mc", [joined], True) == predictor.predict("mc", [explicit], True)


ERRORS = [
    ("/predict", {"task": "nope", "inputs": ["x"]}, 404, "unknown task 'nope'; this model has: sent, sts, mc"),
    ("/predict/all", {"texts": ["x"], "tasks": ["sent", "nope"]}, 404, "unknown task 'nope'"),
    ("/model", {"x_sent": ["x"], "x_nope": ["x"]}, 404, "unknown argument x_nope; this model takes: x_sent"),
    ("/predict", b'{"task": "sent", "inputs": ["x"', 422, "malformed JSON at character"),
    ("/predict", b"", 422, "body: Field required"),
    ("/predict", {"task": "sent", "inputs": "great fun"}, 422, "inputs: Input should be a valid list"),
    ("/predict", {"task": "sent", "inputs": [{"txt": "great"}]}, 422, "txt: Extra inputs are not permitted"),
    ("/predict", {"task": "sent", "inputs": ["x"], "proba": True}, 422, "proba: Extra inputs are not permitted"),
    ("/predict", {"task": "sent", "inputs": []}, 422, "inputs: List should have at least 1 item"),
    ("/predict", {"inputs": ["x"]}, 422, "task: Field required"),
    ("/predict", {"task": "sts", "inputs": [{"text": "a"}]}, 422, "input 1: task sts (regression) needs text, and text_pair"),
    ("/predict", {"task": "sent", "inputs": ["ok", ""]}, 422, "inputs.1: expected a non-empty string"),
    ("/predict", {"task": "sent", "inputs": [{"text": ""}]}, 422, "inputs.0.text: expected a non-empty string"),
    ("/predict", {"task": "sent", "inputs": [{"text_pair": "a"}]}, 422, "input 1: task sent (classification) needs text"),
    ("/predict", {"task": "sent", "inputs": ["x"], "probas": "yes"}, 422, "probas: Input should be a valid boolean"),
    ("/predict", {"task": "sent", "inputs": ["x"], "probas": 1}, 422, "probas: Input should be a valid boolean"),
    ("/predict/all", {"texts": ["x"], "probas": "true"}, 422, "probas: Input should be a valid boolean"),
    ("/predict", {"task": "mc", "inputs": [{"text": "a", "question": "q", "choices": ["x", "y"]},
                                           {"text": "a", "question": "q", "choices": ["x", "y", "z"]}]}, 422,
     "the inputs have 2 and 3 choices; every input of task mc in one request needs the same number"),
    ("/predict", {"task": "ner", "inputs": [{"tokens": []}]}, 422, "inputs.0.tokens: List should have at least 1 item"),
    ("/predict", {"task": "ner", "inputs": ["   "]}, 422, "input 1: task ner needs tokens as a non-empty list"),
    ("/predict/all", {"texts": ["fine", "   "]}, 422, "texts.1: expected a non-empty text"),
    ("/predict/all", {"texts": ["\x1c"]}, 422, "texts.0: expected a non-empty text"),
    ("/predict/all", {"texts": ["x"], "tasks": ["sts"]}, 422, "task sts does not take a single text"),
    ("/predict", {"task": "sent", "inputs": ["x"] * 9}, 413, "9 inputs in one request; the limit is 8"),
    ("/predict/all", {"texts": ["x"] * 9}, 413, "9 texts in one request; the limit is 8"),
    ("/model", {"x_sent": ["x"] * 5, "x_polar": ["x"] * 5}, 413, "10 inputs in one request; the limit is 8"),
    ("/predict", {"task": "sent", "inputs": ["x" * 201]}, 422, "input 1: 201 characters; the limit is 200"),
    ("/predict", {"task": "sts", "inputs": [{"text": "x" * 100, "text_pair": "y" * 101}]}, 422, "201 characters"),
    ("/predict", b'{"task": "sent", "inputs": ["\\ud800 bad"]}', 422, "input 1: not valid Unicode (a lone surrogate, U+D800"),
    ("/model", {}, 422, "got an empty request"),
    ("/model", {"x_sent": []}, 422, "got an empty list"),
    ("/model", {"x_sent": ["a"], "x_polar": ["a", "b"]}, 422, "several different batch sizes"),
    ("/model", {"x_sts": [["only one text"]]}, 422, "x_sts item 1: expected [text, text_pair]"),
    ("/model", {"x_mc": [["a context", "not a list"]]}, 422, "x_mc item 1: expected [context, [choice, ...]]"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), ERRORS, ids=[f"{e[2]}-{e[3][:30]}" for e in ERRORS])
def test_errors_are_answered_with_a_message(client, path, body, status, message):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    if status == 404:
        assert r.json()["tasks"] == ["sent", "sts", "mc", "ner", "polar", "para", "len"]


# bodies at the edges of what the schema allows: (path, body, whether the schema accepts it)
EDGES = [
    ("/predict", {"task": "sent", "inputs": ["great"]}, True),
    ("/predict", {"task": "sent", "inputs": ["great"], "probas": True}, True),
    ("/predict", {"task": "sent", "inputs": ["   "]}, True),  # a classifier reads a blank text
    ("/predict", {"task": "sent", "inputs": ["great"], "probas": "yes"}, False),
    ("/predict", {"task": "sent", "inputs": ["great"], "probas": 1}, False),
    ("/predict", {"task": "sent", "inputs": ["great"], "probas": None}, False),
    ("/predict", {"task": "sent", "inputs": [""]}, False),
    ("/predict", {"task": "sent", "inputs": [{"text": ""}]}, False),
    ("/predict", {"task": "ner", "inputs": [{"tokens": []}]}, False),
    ("/predict", {"task": "mc", "inputs": [{"text": "a", "question": "q", "choices": []}]}, False),
    ("/predict/all", {"texts": ["a\x1cb"]}, True),
    ("/predict/all", {"texts": ["great"], "probas": False}, True),
    ("/predict/all", {"texts": ["   "]}, False),
    ("/predict/all", {"texts": ["\u00a0\u2003"]}, False),
    ("/predict/all", {"texts": ["\x1f"]}, False),
    ("/predict/all", {"texts": ["great"], "probas": "false"}, False),
]


@pytest.mark.parametrize(("path", "body", "valid"), EDGES, ids=[f"{e[0]}-{json.dumps(e[1])[:50]}" for e in EDGES])
def test_schema_says_what_the_server_accepts(client, path, body, valid):
    """The published request schema and the server agree: a body the schema refuses is refused with the
    request-validation 422 (every error listed), and these bodies that it accepts are answered."""
    import jsonschema_rs

    spec = client.get("/openapi.json").json()
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    validator = jsonschema_rs.Draft202012Validator({**spec, "$ref": ref})
    assert validator.is_valid(body) == valid
    r = client.post(path, json=body)
    if valid:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 422 and r.json()["errors"], r.text


def test_docs_pages_work_offline(client):
    """/docs and /redoc load their scripts, styles and icon from this server, never a CDN, and each
    of them is served."""
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        urls = set(re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html.text))
        urls |= set(re.findall(r"""url:\s*['"]([^'"]+)['"]""", html.text))  # the spec Swagger UI fetches
        assert urls and "/openapi.json" in urls, html.text
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url}"
            assert client.get(url).status_code == 200, url
        assert not re.search(r"https?://", html.text.replace("http://www.w3.org", "")), html.text


def send_partial_body(url: str) -> socket.socket:
    """Open a connection and send a request's headers and 10 of the 100 bytes its body declares."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"task\": \"")
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_a_stalled_body_is_answered_408_and_its_connection_closed(predictor):
    app = create_app(predictor, Limits(read_timeout_s=0.5))
    with serve_in_thread(app) as url:
        start = time.monotonic()
        socks = [send_partial_body(url) for _ in range(20)]
        answers = [read_until_closed(s) for s in socks]  # recv returns b"" once the server closes
        took = time.monotonic() - start
        for s in socks:
            s.close()
        assert all(a.startswith(b"HTTP/1.1 408 ") and b"within 0.5 s" in a for a in answers), answers[0]
        assert took < 10, took
        # a body that arrives in parts, in time, is still read whole
        r = httpx.post(f"{url}/predict", content=iter([b'{"task": "sent", ', b'"inputs": ["great"]}']),
                       headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


def test_body_limit_with_and_without_content_length(client):
    big = json.dumps({"task": "sent", "inputs": ["x" * 100] * 250}).encode()
    r = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"] == "request body over 20000 bytes"

    def chunked():  # no Content-Length: the limit counts what arrives
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]

    r = client.post("/predict", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    small = client.post("/predict", content=iter([b'{"task": "sent", ', b'"inputs": ["great"]}']),
                        headers={"content-type": "application/json"})
    assert small.status_code == 200, small.text


def test_concurrent_requests_are_batched_and_answered_to_their_senders(predictor):
    app = create_app(predictor, Limits(batch_size=64, max_wait_ms=100))
    sent_texts = [f"{w} movie number {i}" for i, w in enumerate(["great", "bad", "lovely", "awful"] * 3)]
    ner_texts = ["John lives in Paris", "Mary Smith likes London", "Paris"]

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mtbert") as c:
            jobs = [c.post("/predict", json={"task": "sent", "inputs": [t], "probas": True}) for t in sent_texts]
            jobs += [c.post("/predict", json={"task": "ner", "inputs": [t]}) for t in ner_texts]
            jobs += [c.post("/predict/all", json={"texts": [t], "probas": True}) for t in ner_texts]
            jobs.append(c.post("/predict", json={"task": "sent", "inputs": ["fine", {"text_pair": "x"}]}))  # a bad one among them
            return await asyncio.gather(*jobs)

    responses = asyncio.run(main())
    n = len(sent_texts)
    for t, r in zip(sent_texts, responses[:n], strict=True):
        assert close(r.json()["predictions"], predictor.predict("sent", [t], return_probas=True))
    assert len({json.dumps(r.json()) for r in responses[:n]}) == n  # distinct answers: none went astray
    for t, r in zip(ner_texts, responses[n:n + 3], strict=True):
        assert r.json()["predictions"] == predictor.predict("ner", [t])
    for t, r in zip(ner_texts, responses[n + 3:n + 6], strict=True):
        assert close(r.json()["results"], predictor.predict_all([t], return_probas=True))
    assert responses[-1].status_code == 422 and "input 2:" in responses[-1].json()["detail"]
    batcher = app.state.batcher
    assert batcher.requests == n + 6
    # one call per kind of input (sent, ner, all): the bad request was turned away before batching
    assert batcher.calls <= 4, batcher.calls


def test_micro_batcher_fills_batches_up_to_the_size_and_isolates_errors():
    calls = []

    def run(key, items):
        calls.append((key, list(items)))
        if "bad" in items:
            raise ValueError("bad item")
        return [f"{key}:{x}" for x in items]

    async def main():
        batcher = MicroBatcher(run, batch_size=4, max_wait=0.05)
        jobs = [batcher.submit("a", [i, i + 100]) for i in range(5)]  # 2 items each: 2 per call
        jobs.append(batcher.submit("a", list(range(200, 206))))  # larger than a batch: goes alone
        jobs.append(batcher.submit("b", ["x"]))
        jobs.append(batcher.submit("b", ["bad"]))
        out = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.close()
        return out

    out = asyncio.run(main())
    assert out[:5] == [[f"a:{i}", f"a:{i + 100}"] for i in range(5)]
    assert out[5] == [f"a:{i}" for i in range(200, 206)]
    assert out[6] == ["b:x"] and isinstance(out[7], ValueError)
    sizes = [len(items) for key, items in calls if key == "a"]
    assert sorted(sizes) == [2, 4, 4, 6]
    assert [items for key, items in calls if key == "b"] == [["x", "bad"], ["x"], ["bad"]]


@pytest.fixture(scope="module")
def live_server(onnx_dir):  # noqa: F811
    from mtbert.inference.onnx_predictor import OnnxPredictor

    with serve_in_thread(create_app(OnnxPredictor(onnx_dir), Limits(max_wait_ms=30))) as url:
        yield url


def test_real_uvicorn_on_loopback(live_server):
    assert live_server.startswith("http://127.0.0.1:")
    health = httpx.get(f"{live_server}/health").json()
    assert health["engine"] == "onnx"
    results = {}

    def ask(i):
        r = httpx.post(f"{live_server}/predict/all", json={"texts": [TEXTS[i % 4]], "tasks": ["sent"]}, timeout=30)
        results[i] = r.json()["results"][0]["sent"]["label"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all(results[i] == results[i % 4] for i in range(12))
    after = httpx.get(f"{live_server}/health").json()
    assert after["requests"] - health["requests"] == 12
    assert after["model_calls"] - health["model_calls"] < 12  # some of the 12 shared a call
    r = httpx.post(f"{live_server}/predict", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.json()["detail"]


def test_openapi_conformance(live_server):
    """schemathesis on the app's own spec, valid and invalid requests to every operation: never a 500,
    and every response, errors included, matches the published schema. Valid requests may still be
    refused (an unknown task name, an empty text, a limit), so `positive_data_acceptance` is off."""
    from schemathesis.checks import load_all_checks
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    load_all_checks()
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /predict", "POST /predict/all", "POST /model", "GET /tasks"}
    for operation in operations:
        # a GET here takes no parameters: there is no invalid request to make of it
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.method.upper() == "POST" else [])
        for mode in modes:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=30)

            check()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mtbert_serve_command(onnx_dir):  # noqa: F811
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mtbert", "serve", str(onnx_dir), "--engine", "onnx",
                             "--port", str(port), "--read-timeout", "1.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "mtbert serve did not come up"
                time.sleep(0.2)
        assert health["engine"] == "onnx"
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"task": "sent", "inputs": ["great fun"]})
        assert r.json()["predictions"][0]["label"] in ("neg", "pos")
        with send_partial_body(f"http://127.0.0.1:{port}") as sock:  # --read-timeout reaches the server
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in out  # bound to loopback, as the default says


def test_serve_command_errors(served_run, tmp_path, capsys):  # noqa: F811
    from mtbert.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["serve", str(served_run), "--engine", "onnx"]) == 2
    assert "holds no ONNX model" in capsys.readouterr().err


@pytest.mark.parametrize(("task", "item", "says", "http_says"), [
    ("mc", {"text": "a", "choices": ["x"]}, "1 choice(s); a multiple-choice input needs at least 2", None),
    ("mc", {"text": "a", "choices": ["x", ""]}, "choices[1] is empty", None),
    # over HTTP the request schema refuses a number first, naming where it is
    ("mc", {"text": "a", "choices": ["x", 3]}, "choices[1] is a JSON number, not a string",
     "inputs.1.choices.1: Input should be a valid string"),
])
def test_choices_training_refuses_are_refused_at_inference_too(client, predictor, task, item, says, http_says):
    """One choice (its softmax is 1 whatever the model says), an empty or a non-text choice: training calls
    these bad rows; over HTTP they get a 422 and from Python an InputError, naming the input, not an answer."""
    from mtbert.errors import InputError

    r = client.post("/predict", json={"task": task, "inputs": [INPUTS[task][0], item]})
    assert r.status_code == 422 and (http_says or f"input 2: {says}") in r.json()["detail"], r.text
    with pytest.raises(InputError, match=re.escape(says)):
        predictor.predict(task, [item])
