"""Batch prediction of every single-text head over a JSON Lines file of any size:
`mtbert predict RUN_DIR --all --input big.jsonl --output out.jsonl [--skip-existing]`.

The input is streamed in chunks; each chunk's answers are appended to the output as whole lines and
fsynced, so an interrupted run leaves a prefix of complete answers, and `--skip-existing` continues
after it (a line cut by a crash mid-write is dropped and predicted again). Answers keep the input's
order, so the n-th output line answers the n-th input.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from mtbert.data.example import Example
from mtbert.errors import UserError
from mtbert.inference.common import read_jsonl, unicode_problem


def read_texts(source: str) -> Iterator[tuple[int, dict, Example]]:
    """(line number, {"text": ..., other fields}, the text's words as an Example) per non-blank line of a
    JSON Lines file or stdin: the CLI's edge, where each line is checked and becomes an Example once."""
    for line_no, item in read_jsonl(source):
        record = {"text": item} if isinstance(item, str) else item
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].split():
            raise UserError(f"{source} line {line_no}: expected a non-empty text, as a JSON string or "
                            "{\"text\": \"...\"}")
        if problem := unicode_problem(record):  # the other fields too: they are written back out
            raise UserError(f"{source} line {line_no}: {problem}")
        yield line_no, record, Example(tokens=record["text"].split())


def answered(output: Path) -> list[str]:
    """The texts already answered in `output`, in order. A last line without its newline (a crash
    mid-write) is cut off the file, to be predicted again."""
    if not output.exists():
        return []
    data = output.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(output, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    texts = []
    for n, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
        try:
            texts.append(json.loads(line)["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"--output {output} line {n}: not an answer of `predict --all`; "
                            "give another --output, or drop --skip-existing to start it over") from None
    return texts


def _count_lines(source: str) -> int | None:
    if source == "-":
        return None
    try:
        with open(source, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError as err:  # a folder, a missing or unreadable file: said as read_jsonl says it
        raise UserError(f"--input {source}: cannot read ({err.strerror})") from None


def predict_all_file(predictor, source: str, output: str | None, skip_existing: bool = False,
                     return_probas: bool = False, chunk_size: int = 256, progress: bool = True) -> int:
    """Answer every input with every single-text head; returns how many were predicted now."""
    from tqdm import tqdm

    if skip_existing and not output:
        raise UserError("--skip-existing continues an --output file; give --output FILE")
    tasks = predictor.text_heads()
    if "text" in tasks:
        raise UserError("a task named 'text' would overwrite the input text in the output; rename the task")
    out_path = Path(output) if output else None
    done = answered(out_path) if skip_existing else []
    if out_path is not None and not skip_existing:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_bytes(b"")
    out = open(out_path, "a", encoding="utf-8") if out_path else sys.stdout
    total = _count_lines(source)
    skipped = len(done) if total is None else min(len(done), total)
    bar = tqdm(total=total, initial=skipped, unit="text", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    predicted = 0
    chunk: list[tuple[dict, Example]] = []

    def flush() -> None:
        nonlocal predicted
        answers = predictor.predict_all_examples([ex for _, ex in chunk], tasks, return_probas=return_probas)
        lines = "".join(json.dumps({**record, **answer}, ensure_ascii=False) + "\n"
                        for (record, _), answer in zip(chunk, answers, strict=True))
        out.write(lines)  # one write of whole lines, then to disk before the next chunk
        out.flush()
        if out is not sys.stdout:
            os.fsync(out.fileno())
        predicted += len(chunk)
        bar.update(len(chunk))
        chunk.clear()

    try:
        for n, (line_no, record, example) in enumerate(read_texts(source)):
            if n < len(done):
                if record["text"] != done[n]:
                    raise UserError(f"--skip-existing: {output} line {n + 1} answers {done[n][:40]!r}, but input "
                                    f"{source} line {line_no} is {record['text'][:40]!r}; it answers another input "
                                    "file: give another --output, or drop --skip-existing")
                continue
            chunk.append((record, example))
            if len(chunk) >= chunk_size:
                flush()
        if chunk:
            flush()
    except BaseException:
        bar.leave = False  # the bar is wiped off the terminal: the error is the one line left
        raise
    finally:
        bar.close()
        if out is not sys.stdout:
            out.close()
    return predicted
