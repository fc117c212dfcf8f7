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
    if (run_dir / "model").exists() or (run_dir / "metrics.jsonl").exists():
        if not args.overwrite:
            raise UserError(f"{run_dir}: already holds a run; pass --overwrite to replace it, "
                            "or --run-dir DIR to train into another directory")
        shutil.rmtree(run_dir)
    summary = train(cfg, run_dir)
    print((run_dir / "report.md").read_text(encoding="utf-8"))
    print(f"run dir: {summary['run_dir']}")
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
        feats = encode(task.type, examples, predictor.tokenizer, cfg.max_length_for(name), labels, name)
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


def cmd_predict(args) -> int:
    from mtbert.inference.predictor import Predictor
    from mtbert.io import atomic_write

    predictor = Predictor(args.run_dir, batch_size=args.batch_size)
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

    r = sub.add_parser("predict", help="predict one task for JSON Lines inputs")
    r.add_argument("run_dir")
    r.add_argument("--task", required=True)
    r.add_argument("--input", default="-", help="JSON Lines file, or - for stdin (default)")
    r.add_argument("--output", help="JSON Lines file (written atomically); default stdout")
    r.add_argument("--probas", action="store_true", help="add class probabilities (DeepPavlov's return_probas)")
    r.add_argument("--batch-size", type=int, default=64)
    r.set_defaults(func=cmd_predict)
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
