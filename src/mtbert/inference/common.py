"""What every prediction engine shares and none needs torch for: turning an input into an Example, once, at
the edge where it arrives (the server, the command line, `predict` in Python: `to_example`,
`deeppavlov_input`, `words_example`; a wrong input raises `InputError` with its index), turning model
outputs into labels, and shaping the answers. Past the edge only Examples travel (the `*_examples`
methods). The ONNX engine is built on these; they mirror `Predictor`'s methods and
`evaluation.evaluate.decode` one for one (tests hold the engines to the same answers and the same
messages)."""

from __future__ import annotations

import json
import reprlib
import sys
from collections.abc import Iterable, Iterator, Mapping

from mtbert.config import TaskConfig
from mtbert.data.example import Example, json_kind
from mtbert.data.multiple_choice import phrase_questions
from mtbert.errors import InputError, UserError
from mtbert.evaluation.decoding import TaskPredictions, decode, decode_rows  # noqa: F401  (re-exported for the engines)
from mtbert.tasks import registry
from mtbert.tasks.multiple_choice import COPA_QUESTIONS  # noqa: F401  (re-exported)


def input_fields(spec: TaskConfig) -> list[str]:
    """The fields one input of this task needs, in the order a form would ask for them."""
    return registry.get(spec.type).input_fields(spec)


def unicode_problem(value) -> str | None:
    """JSON can carry lone UTF-16 surrogates ("\\ud800") that no tokenizer can encode: what to say about the
    first one in `value` (a string, or a dict or list of them), or None if there is none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"not valid Unicode (a lone surrogate, U+{ord(value[err.start]):04X}, at character {err.start})"
    elif isinstance(value, dict | list):
        for v in value.values() if isinstance(value, dict) else value:
            if problem := unicode_problem(v):
                return problem
    return None


class _Field:
    """`field(key, kind)`: a request input's value under `key`, present, non-empty and of `kind`, or an
    InputError naming what the task needs. `item`, `index` and `task` serve the task types that read an
    input their own way."""

    def __init__(self, task: str, spec: TaskConfig, item: dict, index: int):
        self.task, self.spec, self.item, self.index = task, spec, item, index

    def __call__(self, key: str, kind: type = str):
        value = self.item.get(key)
        if not isinstance(value, kind) or not value:
            raise InputError(self.index, f"task {self.task} ({self.spec.type}) needs "
                                         f"{registry.get(self.spec.type).inputs}; '{key}' is missing or not a {kind.__name__}")
        return value

    def text(self, value, name: str) -> str:
        """`value` (one item of a list field) as a non-empty string, as `field` wants its strings, or an InputError."""
        if isinstance(value, str) and value:
            return value
        raise InputError(self.index, f"{name} is {'empty' if value == '' else json_kind(value) + ', not a string'}")


def to_example(task: str, spec: TaskConfig, item, index: int) -> Example:
    """One input (a JSON object, or a bare string for its text) -> Example: the one place an input is checked
    (shape and Unicode) and built, at the edge where it arrives. `index`: its place in the batch, from 0."""
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict):
        raise InputError(index, f"expected a JSON object or string, got {type(item).__name__}")
    if problem := unicode_problem(item):
        raise InputError(index, problem)
    return registry.get(spec.type).to_example(spec, _Field(task, spec, item, index))


def deeppavlov_input(spec: TaskConfig, item, index: int):
    """One input in DeepPavlov's shape -> mtbert's input: the one translation behind the server's riseapi
    (POST /model), `mtbert predict DP_CONFIG.json` and `compat.deeppavlov.build_model`. `index`: the
    input's place in its batch, from 0, for an `InputError`.

    DeepPavlov sends a text; a pair as [text, text_pair]; tokens as a list of words; a multiple-choice
    example as [context, choices] or [premise, question, choices] (each task type reads its own shape,
    TaskType.deeppavlov_input). An mtbert dict passes as it is."""
    if not isinstance(item, list | tuple):
        return item.model_dump(exclude_none=True) if hasattr(item, "model_dump") else item
    return registry.get(spec.type).deeppavlov_input(spec, item, index)


def deeppavlov_example(task: str, spec: TaskConfig, item, index: int) -> Example:
    """One input in DeepPavlov's shape (or mtbert's) -> Example: `deeppavlov_input`, then `to_example`."""
    return to_example(task, spec, deeppavlov_input(spec, item, index), index)


def words_example(text, index: int) -> Example:
    """predict_all's input: a text (or {"text": ...}) split on whitespace into words."""
    if isinstance(text, dict):
        text = text.get("text")
    if not isinstance(text, str) or not text.split():
        raise InputError(index, "expected a non-empty text")
    if problem := unicode_problem(text):
        raise InputError(index, problem)
    return Example(tokens=text.split())


def results(spec: TaskConfig, labels: list[str] | None, preds: TaskPredictions, return_probas: bool) -> list[dict]:
    """One dict per input: `label` (class, choice index, tag list or label list) or `score`; `probas` on
    request (for tags: per word, {tag: p}, or None for a word the model did not see)."""
    task_type = registry.get(spec.type)
    return [task_type.answer(label, None if preds.probas is None else preds.probas[i], labels, return_probas)
            for i, label in enumerate(preds.labels)]


def check_batch(inputs, call: str, as_list: str) -> None:
    """The Python API takes a list of inputs. A string, a dict or bytes would be iterated as characters or
    keys, each predicted as an input of its own: refuse them, naming the shape that was meant. `as_list`
    is the call with the value put in a list ({} stands for it)."""
    if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Iterable):
        raise TypeError(f"{call}: expected a list with one item per input, not a {type(inputs).__name__}; "
                        f"for one input, put it in a list: {as_list.format(reprlib.repr(inputs))}")


def read_jsonl(source: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) per non-blank line of a JSON Lines file, or stdin for '-'."""
    if source == "-":
        stream = sys.stdin
    else:
        try:
            stream = open(source, encoding="utf-8")
        except OSError as err:
            raise UserError(f"--input {source}: cannot read ({err.strerror})") from None
    with stream:
        line_no = 0
        while True:
            try:
                line = stream.readline()
            except UnicodeDecodeError as err:
                raise UserError(f"{source} line {line_no + 1}: not valid UTF-8 ({err.reason}); "
                                "re-save the file as UTF-8") from None
            if not line:
                return
            line_no += 1
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{source} line {line_no}: not valid JSON ({err.msg}); "
                                "each line must be one JSON object, e.g. {\"text\": \"...\"}") from None
            except RecursionError:  # json recurses per level of [ or {: no input is that deep
                raise UserError(f"{source} line {line_no}: nested too deeply to read; each line must be one "
                                "JSON object, e.g. {\"text\": \"...\"}") from None


class PredictorBase:
    """What every engine's predictor shares: the run's tasks, input checks, predict_all's grouping and the
    answers' shape. An engine sets `cfg` and `labels` and implements `_predict`."""

    cfg: object
    labels: dict

    @property
    def tasks(self) -> dict[str, str]:
        return {name: task.type for name, task in self.cfg.tasks.items()}

    def _task(self, task: str) -> TaskConfig:
        if task not in self.cfg.tasks:
            raise UserError(f"unknown task '{task}'; this model has: {', '.join(self.cfg.tasks)}")
        return self.cfg.tasks[task]

    def single_text_tasks(self) -> list[str]:
        """Tasks that read one text (TaskType.single_text, and no text_pair): single-text classification,
        regression and multi-label classification, and sequence labeling."""
        return [n for n, t in self.cfg.tasks.items()
                if registry.get(t.type).single_text and t.columns.text_pair is None]

    def _predict(self, tasks: list[str], examples: list[Example], encode_as: str, max_length: int,
                 pair_encoding: str, stride: int | None = None, stitched: tuple = ()) -> dict[str, TaskPredictions]:
        """Run the model once per batch for all `tasks` on `examples` tokenised as task type `encode_as`.
        With a `stride`, a text longer than max_length is read in windows (`data.windows`), put back
        together for the tagging tasks in `stitched`; the other tasks read its first window."""
        raise NotImplementedError

    # --- the Python edge: inputs become Examples here, once; the *_examples methods take Examples built
    # at any edge (the server's, the CLI's, a reader's)
    def predict_raw(self, task: str, inputs: list) -> TaskPredictions:
        check_batch(inputs, "predict(task, inputs)", f"predict({task!r}, [{{}}])")
        spec = self._task(task)
        return self.predict_examples(task, [to_example(task, spec, item, i) for i, item in enumerate(inputs)])

    def predict(self, task: str, inputs: list, return_probas: bool = False) -> list[dict]:
        """One dict per input: `label` (class, choice index or tag list) or `score`; `probas` on request.
        A wrong input raises `InputError`, its place in `inputs` in `index`."""
        return results(self._task(task), self.labels.get(task), self.predict_raw(task, inputs), return_probas)

    def predict_all(self, texts: list[str], tasks: list[str] | None = None,
                    return_probas: bool = False) -> list[dict[str, dict]]:
        """Every single-text head (or those in `tasks`) on each text, from one encoder pass per batch.

        The text is split on whitespace into words, which gives the sequence-labeling heads their word
        alignment and the sentence heads the same sub-tokens as plain tokenisation (BERT's pre-tokenizer
        splits on whitespace first), so the answers equal the per-task path."""
        check_batch(texts, "predict_all(texts)", "predict_all([{}])")
        if tasks is not None:
            check_batch(tasks, "predict_all(texts, tasks)", "predict_all(texts, tasks=[{}])")
        tasks = self.text_heads(tasks)
        return self.predict_all_examples([words_example(t, i) for i, t in enumerate(texts)], tasks, return_probas)

    def text_heads(self, tasks: list[str] | None = None) -> list[str]:
        """The tasks predict_all answers: `tasks`, checked to take a single text, or all that do."""
        shared = self.single_text_tasks()
        tasks = list(tasks) if tasks else shared
        for t in tasks:
            self._task(t)
            if t not in shared:
                raise UserError(f"task {t} does not take a single text; predict it with its own inputs "
                                f"(tasks answering a text: {', '.join(shared)})")
        if not tasks:
            raise UserError("this model has no task that takes a single text")
        return tasks

    def predict_examples(self, task: str, examples: list[Example]) -> TaskPredictions:
        """Predictions for Examples an edge (or a reader, e.g. of the config's own test file) built."""
        spec = self._task(task)
        if not examples:
            return TaskPredictions(labels=[])
        stride = self.cfg.window_stride(task)
        examples = phrase_questions(examples, spec.questions)  # both engines read the words training read
        return self._predict([task], examples, spec.type, self.cfg.max_length_for(task), spec.pair_encoding,
                             stride, (task,))[task]

    def answer_examples(self, task: str, examples: list[Example], return_probas: bool = False) -> list[dict]:
        """`predict`'s answers for Examples built at an edge."""
        return results(self._task(task), self.labels.get(task), self.predict_examples(task, examples), return_probas)

    def predict_all_examples(self, examples: list[Example], tasks: list[str], return_probas: bool = False
                             ) -> list[dict[str, dict]]:
        """`predict_all`'s answers for word Examples (`words_example`) and the heads `text_heads` gave."""
        if not examples:
            return []
        max_length = max(self.cfg.max_length_for(t) for t in tasks)
        # one encoding for every head: windows if a tagging head reads long texts whole (the smallest of
        # their strides); sentence heads and `long_text: truncate` heads read the first window
        windowed = tuple(t for t in tasks if self.cfg.window_stride(t) is not None)
        stride = min((self.cfg.window_stride(t, max_length) for t in windowed), default=None)
        # encoded as words, as a tagging task reads its input
        words = next(t.name for t in registry.all() if t.reads_words)
        preds = self._predict(tasks, examples, words, max_length, "cross", stride, windowed)
        per_task = {t: results(self.cfg.tasks[t], self.labels.get(t), preds[t], return_probas) for t in tasks}
        return [{t: per_task[t][i] for t in tasks} for i in range(len(examples))]
