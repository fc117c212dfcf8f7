"""`mtbert train | evaluate | predict`. User mistakes print one line and exit 2; bugs keep their traceback."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from mtbert import __version__
from mtbert.errors import UserError
from mtbert.modeling.encoder import quiet_transformers

log = logging.getLogger("mtbert")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    quiet_transformers()


def cmd_train(args) -> int:
    from mtbert.config import load_config
    from mtbert.training.trainer import train

    cfg = load_config(args.config, args.set)
    if args.run_dir:
        cfg.run_dir = args.run_dir
    run_dir = Path(cfg.run_dir)
    _fresh_run_dir(run_dir, args.overwrite)
    summary = train(cfg, run_dir)
    print((run_dir / "report.md").read_text(encoding="utf-8"))
    print(f"run dir: {summary['run_dir']}")
    return 0


def _fresh_run_dir(run_dir: Path, overwrite: bool) -> None:
    if (run_dir / "model").exists() or (run_dir / "metrics.jsonl").exists() or (run_dir / "compare.md").exists():
        if not overwrite:
            raise UserError(f"{run_dir}: already holds a run; pass --overwrite to replace it, "
                            "or --run-dir DIR to train into another directory")
        shutil.rmtree(run_dir)


def cmd_compare(args) -> int:
    from mtbert.config import finish, load_raw
    from mtbert.training.compare import compare

    raw = load_raw(args.config, args.set)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("pretrain", "finetune")]
    if bad or not modes:
        raise UserError(f"--modes {args.modes!r}: use pretrain, finetune or both, comma-separated")
    cfg = finish(raw, args.config)  # validate once up front: a typo fails now, not after the first run
    run_dir = Path(args.run_dir or f"{cfg.run_dir}-compare")
    _fresh_run_dir(run_dir, args.overwrite)
    compare(raw, args.config, modes, run_dir)
    print((run_dir / "compare.md").read_text(encoding="utf-8"))
    print(f"run dir: {run_dir}")
    return 0


def _parse_data(items: list[str], tasks) -> dict[str, str]:
    out = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--data {item!r}: expected TASK=PATH")
        if task not in tasks:
            raise UserError(f"--data {item!r}: unknown task '{task}'; this model has: {', '.join(tasks)}")
        out[task] = path
    return out


def cmd_evaluate(args) -> int:
    from mtbert.data.features import encode
    from mtbert.data.readers import read_split
    from mtbert.evaluation.evaluate import predict_task, score_task
    from mtbert.inference.predictor import Predictor
    from mtbert.training.report import results_table

    predictor = Predictor(args.run_dir, batch_size=args.batch_size)
    cfg = predictor.cfg
    overrides = _parse_data(args.data, cfg.tasks)
    tasks = args.task or list(cfg.tasks)
    scores, primary = {}, {}
    for name in tasks:
        task = predictor._task(name)
        if name not in overrides and getattr(task, args.split) is None:
            log.warning("task %s: no %s split in the config; skipped (pass --data %s=PATH)", name, args.split, name)
            continue
        examples = read_split(cfg, name, args.split, overrides.get(name))
        labels = predictor.labels.get(name)
        feats = encode(task.type, examples, predictor.tokenizer, cfg.max_length_for(name), labels, name,
                       pair_encoding=task.pair_encoding)
        preds = predict_task(predictor.model, name, feats, args.batch_size, predictor.tokenizer.pad_token_id or 0,
                             labels, predictor.amp)
        scores[name] = score_task(task.type, task.metrics, examples, preds, labels)
        primary[name] = task.metrics[0]
    if not scores:
        raise UserError(f"nothing to evaluate: no task has a {args.split} split; pass --data TASK=PATH")
    print(results_table(scores, primary, types={n: cfg.tasks[n].type for n in scores}))
    return 0


def _read_inputs(source: str):
    """Yield (line number, parsed JSON) from a JSON Lines file or stdin."""
    if source == "-":
        stream = sys.stdin
    else:
        try:
            stream = open(source, encoding="utf-8")
        except OSError as err:
            raise UserError(f"--input {source}: cannot read ({err.strerror})") from None
    with stream:
        for line_no, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{source} line {line_no}: not valid JSON ({err.msg}); "
                                "each line must be one JSON object, e.g. {\"text\": \"...\"}") from None


MINBERT_HEADERS = {"classification": "Predicted_Sentiment", "pair": "Predicted_Is_Paraphrase",
                   "regression": "Predicted_Similiary"}  # sic: the minBERT project's spelling


def predict_split(predictor, args) -> int:
    """Predict every task (or --task) on the config's dev/test files; minBERT csv or JSON Lines out."""
    from mtbert.data.readers import read_split
    from mtbert.io import atomic_write_text

    cfg = predictor.cfg
    out_dir = Path(args.output or ".")
    tasks = [args.task] if args.task else list(cfg.tasks)
    written = []
    for name in tasks:
        task = predictor._task(name)
        if getattr(task, args.split) is None:
            log.warning("task %s: no %s file in the config; skipped", name, args.split)
            continue
        examples = read_split(cfg, name, args.split, with_labels=False)
        inputs = [{"text": ex.text, "text_pair": ex.text_pair, "question": ex.question, "choices": ex.choices,
                   "tokens": ex.tokens} for ex in examples]
        results = predictor.predict(name, inputs, return_probas=args.probas)
        if args.format == "minbert":
            if task.type not in ("classification", "regression"):
                raise UserError(f"--format minbert writes classification and regression tasks; {name} is {task.type}")
            kind = "pair" if task.type == "classification" and task.columns.text_pair is not None else task.type
            lines = [f"id \t {MINBERT_HEADERS[kind]} "]
            for ex, r in zip(examples, results, strict=True):
                value = r["score"] if "score" in r else r["label"]
                lines.append(f"{ex.id if ex.id is not None else ex.line} , {value} ")
            path = out_dir / f"{name}-{args.split}-output.csv"
            atomic_write_text(path, "\n".join(lines) + "\n")
        else:
            rows = [{"id": ex.id, **inp, **r} for ex, inp, r in zip(examples, inputs, results, strict=True)]
            path = out_dir / f"{name}-{args.split}-predictions.jsonl"
            atomic_write_text(path, "".join(json.dumps({k: v for k, v in row.items() if v is not None},
                                                       ensure_ascii=False) + "\n" for row in rows))
        written.append(str(path))
    if not written:
        raise UserError(f"nothing to predict: no task has a {args.split} file in the config")
    print("\n".join(written))
    return 0


def cmd_predict(args) -> int:
    from mtbert.inference.predictor import Predictor
    from mtbert.io import atomic_write

    predictor = Predictor(args.run_dir, batch_size=args.batch_size)
    if args.split:
        return predict_split(predictor, args)
    if not args.task:
        raise UserError(f"predict: give --task TASK (one of {', '.join(predictor.cfg.tasks)}) for --input, "
                        "or --split dev|test to predict the config's files")
    if args.format != "jsonl":
        raise UserError("--format minbert goes with --split dev|test (it needs the ids of the minBERT files)")
    predictor._task(args.task)

    def run(out) -> None:
        chunk: list[tuple[int, object]] = []

        def flush():
            try:
                results = predictor.predict(args.task, [item for _, item in chunk], return_probas=args.probas)
            except UserError as err:
                # name the line of the file, not the position within the chunk
                msg = str(err)
                if msg.startswith("input "):
                    pos, _, rest = msg[len("input "):].partition(":")
                    msg = f"{args.input} line {chunk[int(pos) - 1][0]}:{rest}"
                raise UserError(msg) from None
            for (_, item), result in zip(chunk, results, strict=True):
                record = dict(item) if isinstance(item, dict) else {"text": item}
                record.update(result)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            chunk.clear()

        for line_no, item in _read_inputs(args.input):
            chunk.append((line_no, item))
            if len(chunk) >= 1024:
                flush()
        if chunk:
            flush()

    if args.output:
        atomic_write(args.output, lambda p: run(open(p, "w", encoding="utf-8")))
    else:
        run(sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtbert", description="Multi-task BERT: one shared encoder, a head per task.")
    p.add_argument("--version", action="version", version=f"mtbert {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a multi-task model from a YAML or JSON config")
    t.add_argument("config")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.lr=3e-5 (repeatable)")
    t.add_argument("--run-dir", help="where to write the run (default: the config's run_dir, or runs/<config name>)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in the run dir")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="score a trained run on dev or test data")
    e.add_argument("run_dir")
    e.add_argument("--split", choices=["dev", "test"], default="dev")
    e.add_argument("--data", action="append", default=[], metavar="TASK=PATH", help="evaluate TASK on this file")
    e.add_argument("--task", action="append", help="only this task (repeatable)")
    e.add_argument("--batch-size", type=int, default=64)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("predict", help="predict a task for JSON Lines inputs, or every task on the config's files")
    r.add_argument("run_dir")
    r.add_argument("--task", help="the task to predict (required with --input)")
    r.add_argument("--input", default="-", help="JSON Lines file, or - for stdin (default)")
    r.add_argument("--output", help="JSON Lines file (written atomically; default stdout), or with --split "
                   "the directory for the prediction files (default .)")
    r.add_argument("--split", choices=["dev", "test"], help="predict the config's dev or test files instead of --input")
    r.add_argument("--format", choices=["jsonl", "minbert"], default="jsonl",
                   help="with --split: JSON Lines, or the minBERT project's 'id , prediction' csv files")
    r.add_argument("--probas", action="store_true", help="add class probabilities (DeepPavlov's return_probas)")
    r.add_argument("--batch-size", type=int, default=64)
    r.set_defaults(func=cmd_predict)

    c = sub.add_parser("compare", help="train multi-task and single-task models per mode; write a comparison table")
    c.add_argument("config")
    c.add_argument("--modes", default="pretrain,finetune", help="comma-separated: pretrain, finetune (default both)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--run-dir", help="default: the config's run_dir + '-compare'")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(not args.quiet)
    try:
        return args.func(args)
    except UserError as err:
        print(f"mtbert: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtbert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
