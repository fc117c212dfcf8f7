"""The REST server: a FastAPI app over a predictor of either engine, micro-batched, with a web page.

    GET  /             the web page (inference/static/index.html)
    GET  /health       status, engine, how many requests and model calls so far
    GET  /tasks        each task's name, type, input fields and labels
    POST /predict      one task, a list of inputs
    POST /predict/all  texts; every single-text head from one encoder pass
    POST /model        DeepPavlov's riseapi shape: {"x_<task>": [...], ...}; GET /api its argument names
    GET  /docs         OpenAPI (Swagger UI; /redoc ReDoc), its scripts served from here: works offline

Requests never name files, and nothing a client sends can make it answer 500: a wrong input is a 422
with the predictor's one-line message, an unknown task a 404 listing the tasks, a request over the
limits a 413 or 422 saying which limit, and a body that does not arrive in time a 408. What the OpenAPI
schema refuses, the server refuses (422); what it accepts is refused only for reasons a schema cannot
see (the task's fields, the limits).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time, and the
# riseapi body is a model class built inside create_app

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mtbert.data.example import Example
from mtbert.errors import InputError, UserError
from mtbert.inference.batching import MicroBatcher
from mtbert.inference.common import deeppavlov_example, input_fields, to_example, words_example
from mtbert.tasks import TASK_TYPES

log = logging.getLogger("mtbert")

PAGE = Path(__file__).with_name("static") / "index.html"


@dataclass(frozen=True)
class Limits:
    max_inputs: int = 64  # inputs per request (413 beyond)
    max_chars: int = 10_000  # characters per input, all its fields together (422 beyond)
    max_body_bytes: int = 1 << 20  # request body (413 beyond)
    batch_size: int = 32  # inputs per model call when requests are batched together
    max_wait_ms: float = 5.0  # how long a request waits for others to share its model call
    read_timeout_s: float = 10.0  # how long a request's body may take to arrive (408 and closed beyond)


# --- request and response models

# The schema says what the predictor refuses whatever the task, so a client (or schemathesis) learns
# it from the spec: a text field is never empty, predict_all's texts hold a word, probas is a JSON
# boolean (pydantic's lax mode would take "yes" or 1, which the schema calls invalid). The string
# rules are checks after pydantic's plain `str` plus their JSON Schema: pydantic's own string
# constraints refuse a lone surrogate with a message of their own, before to_example can say
# where it is.
# a character str.split() keeps: not Unicode white space, nor the ASCII separators \x1c-\x1f Python
# also splits on; predict_all splits its texts into words and refuses a text with none
HAS_WORD = r"[^\s\x1c-\x1f]"


def _not_empty(text: str) -> str:
    if not text:
        raise PydanticCustomError("empty_text", "expected a non-empty string")
    return text


def _has_word(text: str) -> str:
    if not text.split():  # the schema's pattern, said in the predictor's words
        raise PydanticCustomError("no_words", "expected a non-empty text")
    return text


Text = Annotated[str, AfterValidator(_not_empty), Field(json_schema_extra={"minLength": 1})]
Words = Annotated[str, AfterValidator(_has_word), Field(json_schema_extra={"pattern": HAS_WORD})]
Probas = Annotated[bool, Field(strict=True, description="add class (or choice) probabilities")]


class Input(BaseModel):
    """One input: the fields its task needs (see GET /tasks)."""

    model_config = ConfigDict(extra="forbid")
    text: Text | None = None
    text_pair: Text | None = None
    question: Text | None = None
    choices: list[str] | None = Field(None, min_length=1)
    tokens: list[str] | None = Field(None, min_length=1)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "sst2", "inputs": ["a gripping, funny film"], "probas": True},
        {"task": "rte", "inputs": [{"text": "A man is walking.", "text_pair": "A person moves."}]},
    ]})
    task: str
    inputs: list[Text | Input] = Field(min_length=1, description="a bare string is the text")
    probas: Probas = Field(False, description="add class, choice or per-word tag probabilities")


class Prediction(BaseModel):
    label: str | int | list[str] | None = Field(None, description="class, index of the choice, one tag per word, "
                                                        "or the labels of a multi-label task")
    score: float | None = Field(None, description="regression tasks")
    probas: dict[str, float] | list[float] | list[dict[str, float] | None] | None = Field(
        None, description="per class (or label of a multi-label task) {label: p}; per choice [p, ...]; per word [{tag: p}, ...] (null for a word "
                          "the model did not see: no sub-token, or cut by long_text: truncate)")


class PredictResponse(BaseModel):
    task: str
    predictions: list[Prediction]


class PredictAllRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"texts": ["John lives in Paris and loves it"], "probas": True}]})
    texts: list[Words] = Field(min_length=1, description="split on whitespace into words (at least one)")
    tasks: list[str] | None = Field(None, description="default: every task that takes a single text")
    probas: Probas = False


class PredictAllResponse(BaseModel):
    tasks: list[str]
    results: list[dict[str, Prediction]] = Field(description="per text: task -> prediction")


class TaskInfo(BaseModel):
    name: str
    type: Literal[TASK_TYPES]
    inputs: list[str] = Field(description="the fields one input needs")
    labels: list[str] | None
    single_text: bool = Field(description="answered by /predict/all")


class Health(BaseModel):
    status: Literal["ok"]
    run: str | None = Field(None, description="the name of the run dir (or bundle) being served")
    engine: str
    tasks: int
    requests: int = Field(description="requests the model has been asked to answer")
    model_calls: int = Field(description="model calls that answered them (fewer: micro-batching)")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorResponse(BaseModel):
    detail: str
    tasks: list[str] | None = Field(None, description="with 404: the tasks this model has")
    errors: list[FieldError] | None = Field(None, description="with 422: every request validation error, or the wrong "
                                            "input, its loc ending with its index in the list (from 0)")


ERRORS = {404: {"model": ErrorResponse, "description": "unknown task"},
          408: {"model": ErrorResponse, "description": "the body did not arrive within the read timeout"},
          413: {"model": ErrorResponse, "description": "too many inputs, or body too large"},
          422: {"model": ErrorResponse, "description": "malformed request or input"}}

RiseItem = Text | Input | list[str | list[str]]
# pydantic's names for the members of a union
UNION_TAGS = {"str", "function-after[_not_empty(), str]", "Input", "list[str]", "list[union[str,list[str]]]"}


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str, **extra):
        self.status, self.detail, self.extra = status, detail, extra


# --- the app

def describe_tasks(predictor) -> list[TaskInfo]:
    single = set(predictor.single_text_tasks())
    return [TaskInfo(name=name, type=spec.type, inputs=input_fields(spec), labels=predictor.labels.get(name),
                     single_text=name in single) for name, spec in predictor.cfg.tasks.items()]


def _chars(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


def _plain(item):
    return item.model_dump(exclude_none=True) if isinstance(item, BaseModel) else item


def _strip(rows: list[dict], probas: bool) -> list[dict]:
    return rows if probas else [{k: v for k, v in r.items() if k != "probas"} for r in rows]


def validation_error(raw: list[dict]) -> dict:
    """FastAPI's request validation errors -> {"detail": one line, "errors": [{loc, msg}]}."""
    # pydantic names the member of a union it tried (inputs.0.str, inputs.0.Input.text): not a place
    # in the request, so left out
    errors = [{"loc": [x if isinstance(x, int) else str(x) for x in e.get("loc", ()) if x not in UNION_TAGS],
               "msg": str(e.get("msg", ""))} for e in raw]
    if raw and raw[0].get("type") == "json_invalid":
        reason = (raw[0].get("ctx") or {}).get("error", "")
        detail = f"malformed JSON at character {raw[0]['loc'][-1]}" + (f": {reason}" if reason else "")
    elif errors:
        first = max(errors, key=lambda e: len(e["loc"]))  # the deepest says most: the union member that got furthest
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        detail = f"{where}: {first['msg']}{more}"
    else:
        detail = "invalid request"
    return {"detail": detail, "errors": errors}


class _Edge:
    """Where a request's inputs become Examples: each is checked once (the limits, its task's fields,
    Unicode) and built once, and only Examples go on to the micro-batcher and the predictor. A bad
    request fails here, alone, before it shares a model call with others. A wrong input is a 422 that
    names it in `detail` and gives its place in the request's list as data: `errors[0].loc` ends with
    its index (from 0, as request validation's locs)."""

    def __init__(self, predictor, limits: Limits):
        self.predictor, self.limits = predictor, limits
        self.tasks = list(predictor.cfg.tasks)
        self.batcher = MicroBatcher(self._run, limits.batch_size, limits.max_wait_ms / 1000)

    def _run(self, key: tuple, examples: list) -> list[dict]:
        if key[0] == "all":
            return self.predictor.predict_all_examples(examples, list(key[1]), return_probas=True)
        return self.predictor.answer_examples(key[1], examples, return_probas=True)

    def check_task(self, task: str) -> None:
        if task not in self.predictor.cfg.tasks:
            raise _HTTPError(404, f"unknown task '{task}'; this model has: {', '.join(self.tasks)}", tasks=self.tasks)

    def check_count(self, n: int, what: str = "inputs") -> None:
        if n > self.limits.max_inputs:
            raise _HTTPError(413, f"{n} {what} in one request; the limit is {self.limits.max_inputs}: "
                                  "split the request")

    def examples(self, field: str, items: list, build, name=None) -> list[Example]:
        """`build(item, index)` -> Example for each item of the request's `field`; `name(index)` says
        what the message calls an input (default "input N", N from 1)."""
        out = []
        for i, item in enumerate(items):
            try:
                item = _plain(item)
                n = _chars(item)
                if n > self.limits.max_chars:
                    raise InputError(i, f"{n} characters; the limit is {self.limits.max_chars} per input")
                out.append(build(item, i))
            except InputError as err:
                if name is not None:
                    err = err.at(name(i))
                raise _HTTPError(422, str(err), errors=[{"loc": ["body", field, err.index], "msg": err.reason}]) \
                    from None
        return out

    async def ask(self, task: str, examples: list[Example]) -> list[dict]:
        """Queue one task's Examples. Multiple-choice inputs share calls only with inputs of as many
        choices: one call encodes one number of choices."""
        key: tuple = ("task", task)
        if examples and examples[0].choices is not None:
            counts = sorted({len(ex.choices) for ex in examples})
            if len(counts) > 1:
                raise UserError(f"the inputs have {' and '.join(map(str, counts))} choices; every input of task "
                                f"{task} in one request needs the same number")
            key = ("task", task, counts[0])
        return await self.batcher.submit(key, examples)


def create_app(predictor, limits: Limits | None = None, run_name: str | None = None) -> FastAPI:
    """The app for one predictor (`Predictor` or `OnnxPredictor`); `run_name` names what it serves (the run dir's
    name only: a client need not learn the server's paths)."""
    edge = _Edge(predictor, limits or Limits())

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await edge.batcher.close()

    # FastAPI's own /docs and /redoc load their scripts from a CDN; fastapi-offline's serve the copies
    # it ships (Swagger UI 5, which reads OpenAPI 3.1), so the pages work without internet access
    app = FastAPIOffline(title="mtbert", version=_version(), lifespan=lifespan,
                         description="Multi-task BERT: every task of one trained model, from one encoder.")
    app.state.batcher = edge.batcher
    app.add_middleware(BodyLimit, max_bytes=edge.limits.max_body_bytes, read_timeout=edge.limits.read_timeout_s)
    _add_error_handlers(app)
    _add_routes(app, edge, run_name)
    _add_riseapi(app, edge)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(_HTTPError)
    async def http_error(_request: Request, err: _HTTPError):
        return JSONResponse({"detail": err.detail, **err.extra}, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(_request: Request, err: StarletteHTTPException):
        # FastAPI answers a body it cannot decode (not UTF-8) with 400; that is malformed JSON too
        if err.status_code == 400:
            return JSONResponse({"detail": f"malformed JSON: {err.detail}"}, status_code=422)
        return JSONResponse({"detail": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(UserError)
    async def user_error(_request: Request, err: UserError):
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError):
        return JSONResponse(validation_error(err.errors()), status_code=422)


def _add_routes(app: FastAPI, edge: _Edge, run_name: str | None) -> None:
    predictor = edge.predictor
    info = describe_tasks(predictor)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", run=run_name, engine=getattr(predictor, "engine", "torch"), tasks=len(edge.tasks),
                      requests=edge.batcher.requests, model_calls=edge.batcher.calls)

    @app.get("/tasks", response_model=list[TaskInfo])
    async def list_tasks() -> list[TaskInfo]:
        return info

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=ERRORS)
    async def predict(req: PredictRequest) -> PredictResponse:
        """Predict one task for a list of inputs (a bare string is `{"text": ...}`)."""
        edge.check_task(req.task)
        edge.check_count(len(req.inputs))
        spec = predictor.cfg.tasks[req.task]
        examples = edge.examples("inputs", req.inputs, lambda item, i: to_example(req.task, spec, item, i))
        rows = await edge.ask(req.task, examples)
        return PredictResponse(task=req.task, predictions=_strip(rows, req.probas))

    @app.post("/predict/all", response_model=PredictAllResponse, response_model_exclude_none=True, responses=ERRORS)
    async def predict_all(req: PredictAllRequest) -> PredictAllResponse:
        """Every head that reads a single text (or those in `tasks`), from one encoder pass per batch."""
        for t in req.tasks or []:
            edge.check_task(t)
        names = predictor.text_heads(list(dict.fromkeys(req.tasks or [])) or None)
        edge.check_count(len(req.texts), "texts")
        examples = edge.examples("texts", req.texts, words_example)
        rows = await edge.batcher.submit(("all", tuple(names)), examples)
        return PredictAllResponse(tasks=names, results=[{t: _strip([r[t]], req.probas)[0] for t in names} for r in rows])


def _add_riseapi(app: FastAPI, edge: _Edge) -> None:
    """DeepPavlov's riseapi: POST /model and GET /api."""
    predictor, tasks = edge.predictor, edge.tasks
    rise_names = {f"x_{t}": t for t in tasks}
    RiseBatch = create_model(  # noqa: N806 - a model class, DeepPavlov's name for it
        "RiseBatch", __config__=ConfigDict(extra="allow"),
        **{f"f{i}": (list[RiseItem] | None, Field(None, alias=arg)) for i, arg in enumerate(rise_names)})

    def examples(task: str, items: list) -> list[Example]:
        spec = predictor.cfg.tasks[task]
        return edge.examples(f"x_{task}", items, lambda item, i: deeppavlov_example(task, spec, item, i),
                             name=lambda i: f"x_{task} item {i + 1}")

    @app.post("/model", response_model=list[list[Any]], responses=ERRORS)
    async def rise_model(batch: RiseBatch) -> list[list[Any]]:  # type: ignore[valid-type]
        """DeepPavlov's riseapi: {"x_<task>": [inputs...]} for any of the tasks, all with the same number of
        inputs; one row per input, one answer per task in the model's order, [] for the tasks not sent."""
        unknown = sorted(batch.model_extra or {})
        if unknown:
            raise _HTTPError(404, f"unknown argument {unknown[0]}; this model takes: {', '.join(rise_names)}",
                             tasks=tasks)
        given = {rise_names[alias]: getattr(batch, f"f{i}") for i, alias in enumerate(rise_names)
                 if getattr(batch, f"f{i}") is not None}
        lengths = {len(v) for v in given.values()}
        if not given:
            raise _HTTPError(422, f"got an empty request; send one or more of {', '.join(rise_names)}")
        if 0 in lengths:
            raise _HTTPError(422, "got an empty list as a model argument")
        if len(lengths) > 1:
            raise _HTTPError(422, "got several different batch sizes: every x_<task> list needs the same length")
        edge.check_count(sum(len(v) for v in given.values()))
        inputs = {task: examples(task, items) for task, items in given.items()}
        answers = await asyncio.gather(*(edge.ask(t, x) for t, x in inputs.items()))
        rows = dict(zip(inputs, answers, strict=True))
        n = lengths.pop()
        return [[_answer(rows[t][i]) if t in rows else [] for t in tasks] for i in range(n)]

    @app.get("/api", response_model=list[str])
    async def rise_api() -> list[str]:
        """riseapi: the model's argument names."""
        return list(rise_names)


def _answer(row: dict):
    return row["score"] if "score" in row else row["label"]


def _version() -> str:
    from mtbert import __version__

    return __version__


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` is answered 413 before the app reads any of it, and one
    that has not arrived whole `read_timeout` seconds after its headers is answered 408 and its
    connection closed: uvicorn itself waits for a stalled body for ever, so a few clients that send
    half a body would each hold a connection open. The body is read here (it is small by definition)
    and handed on whole."""

    def __init__(self, app, max_bytes: int, read_timeout: float):
        self.app, self.max_bytes, self.read_timeout = app, max_bytes, read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, 413, f"request body over {self.max_bytes} bytes")
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await self._read(receive)
        except _TooLarge:
            return await self._refuse(send, 413, f"request body over {self.max_bytes} bytes")
        except TimeoutError:
            return await self._refuse(send, 408, f"the request body did not arrive within {self.read_timeout:g} s; "
                                                 "send it whole, without pauses")
        if body is None:  # the client went away
            return None
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # the disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _read(self, receive) -> bytes | None:
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                raise _TooLarge
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _refuse(self, send, status: int, detail: str):
        # Connection: close, since the rest of the body may still come: the server must not read it as
        # the next request
        response = JSONResponse({"detail": detail}, status_code=status, headers={"connection": "close"})
        await response({"type": "http"}, None, send)


class _TooLarge(Exception):
    pass


# --- running it

KEEP_ALIVE_S = 5  # uvicorn's default, said here so that it is not left to a version of uvicorn

def serve(predictor, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          run_name: str | None = None) -> None:
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: reachable from other machines, and the API has no authentication", host)
    # an idle keep-alive connection is closed after KEEP_ALIVE_S; a stalled body by BodyLimit
    uvicorn.run(create_app(predictor, limits, run_name), host=host, port=port, log_level="info",
                timeout_keep_alive=KEEP_ALIVE_S)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` on uvicorn in a background thread; yields its base URL (port 0: a free one)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting")
            threading.Event().wait(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

