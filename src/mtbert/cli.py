"""`mtbert train | evaluate | predict | compare | convert`. User mistakes print one line and exit 2; bugs keep their traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from mtbert import __version__
from mtbert.errors import UserError

log = logging.getLogger("mtbert")


def _setup_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    log.setLevel(level)
    # transformers' own logging module, not the models: `serve --engine onnx` must not import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def cmd_train(args) -> int:
    from mtbert.training.checkpoint import checkpoints, fingerprint, latest_fingerprint
    from mtbert.training.distributed import from_env, launch
    from mtbert.training.trainer import TrainingInterrupted, train

    if args.nproc is not None:
        if args.nproc < 1:
            raise UserError(f"--nproc {args.nproc}: give the number of processes, 1 or more")
        if "WORLD_SIZE" in os.environ:
            raise UserError("--nproc: this process was started by torchrun, which set the number of processes; "
                            "drop --nproc")
    cfg, targets = _train_config(args)  # a config mistake is told once, here, not by every process
    if args.nproc is not None and args.nproc > 1:
        return launch(_without_nproc(args.argv), args.nproc)
    if args.resume and args.run_dir and Path(args.resume) != Path(args.run_dir):
        raise UserError("--resume RUN_DIR names the run dir already; drop --run-dir")
    if args.run_dir or args.resume:
        cfg.run_dir = args.run_dir or args.resume
    run_dir = Path(cfg.run_dir)
    # under torchrun every rank takes the same decision before rank 0 clears or writes anything
    ranks = from_env(cfg.training.dist_timeout, cfg.training.device)
    resume = False
    if args.resume:
        if not checkpoints(run_dir):
            raise UserError(f"--resume {run_dir}: no checkpoint there to resume from")
        resume = True
    elif checkpoints(run_dir) and not args.overwrite and latest_fingerprint(run_dir) == fingerprint(cfg):
        log.info("%s holds a checkpoint of this config: resuming it (--overwrite starts again)", run_dir)
        resume = True
    else:
        ranks.barrier()
        _fresh_run_dir(run_dir, args.overwrite, clear=ranks.is_main)
    ranks.barrier()
    try:
        summary = train(cfg, run_dir, resume=resume)
    except TrainingInterrupted as stop:
        if stop.is_main:
            print(f"mtbert: interrupted at step {stop.step}; a checkpoint is saved. Resume with: "
                  f"mtbert train {args.config} --resume {stop.run_dir}", file=sys.stderr)
        return 128 + stop.signum
    if not ranks.is_main:
        return 0
    print((run_dir / "report.md").read_text(encoding="utf-8"))
    print(f"run dir: {summary['run_dir']}")
    if "test" in targets:  # DeepPavlov's evaluation_targets
        with_test = [name for name, task in cfg.tasks.items() if task.test is not None]
        if with_test:
            cmd_evaluate(argparse.Namespace(run_dir=str(run_dir), split="test", data=[], task=with_test, batch_size=64,
                                            custom_metrics=True))  # the config the user just trained with
        else:
            log.warning("evaluation_targets names test, but no task has a test split; evaluated on dev only")
    return 0


def _train_config(args):
    """The config to train, and the splits to evaluate afterwards: an mtbert config as it is, or a DeepPavlov
    config converted on the fly (`mtbert convert` writes the same conversion once)."""
    from mtbert.compat.deeppavlov import convert, evaluation_targets, is_deeppavlov_config
    from mtbert.config import apply_overrides, finish, load_config, read_config_file

    raw = read_config_file(args.config)
    if not is_deeppavlov_config(raw):
        return load_config(args.config, args.set), []
    log.info("%s: a DeepPavlov config; converted to mtbert's (mtbert convert %s -o config.yaml writes it out)",
             args.config, args.config)
    return finish(apply_overrides(convert(raw, args.config), args.set), args.config), evaluation_targets(raw)


def cmd_convert(args) -> int:
    from mtbert.compat.deeppavlov import convert, is_deeppavlov_config, to_yaml
    from mtbert.config import finish, read_config_file
    from mtbert.io import atomic_write_text

    if args.output != "-" and Path(args.output).resolve() == Path(args.config).resolve():
        raise UserError(f"-o {args.output}: is the config being converted; write the converted config to another "
                        "file (an output is never one of its inputs)")
    raw = read_config_file(args.config)
    if not is_deeppavlov_config(raw):
        raise UserError(f"{args.config}: not a DeepPavlov config (no chainer or multitask dataset_reader); "
                        "mtbert reads its own configs as they are")
    converted = convert(raw, args.config)
    finish(converted, args.config, check_files=False)  # only write what mtbert accepts
    text = to_yaml(converted, args.config, raw)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)
        log.info("wrote %s; train it with: mtbert train %s", args.output, args.output)
    return 0


def _fresh_run_dir(run_dir: Path, overwrite: bool, clear: bool = True) -> None:
    existing = next(p for p in [run_dir, *run_dir.absolute().parents] if p.exists())
    if not existing.is_dir():  # found by the fuzz: a traceback from mkdir after the config was read
        raise UserError(f"{run_dir}: {existing} is a file, not a folder; give a run dir that is a folder, "
                        "new or a run's")
    if (run_dir / "model").exists() or (run_dir / "metrics.jsonl").exists() or (run_dir / "compare.md").exists():
        if not overwrite:
            raise UserError(f"{run_dir}: already holds a run; pass --overwrite to replace it, "
                            "or --run-dir DIR to train into another directory")
        if clear:
            shutil.rmtree(run_dir)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


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


def _trusted_metrics(task: str, metrics: list[str], allow_custom: bool) -> list[str]:
    """A run dir's `module:function` metrics are code named by whoever trained it: run them only when asked."""
    custom = [m for m in metrics if ":" in m]
    if custom and not allow_custom:
        log.warning("task %s: custom metric(s) %s from the run dir not run; pass --custom-metrics to run them",
                    task, ", ".join(custom))
        metrics = [m for m in metrics if ":" not in m] or ["accuracy"]
    return metrics


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
        metrics = _trusted_metrics(name, task.metrics, args.custom_metrics)
        scores[name] = score_task(task.type, metrics, examples, preds, labels)
        primary[name] = metrics[0]
    if not scores:
        raise UserError(f"nothing to evaluate: no task has a {args.split} split; pass --data TASK=PATH")
    print(results_table(scores, primary, types={n: cfg.tasks[n].type for n in scores}))
    return 0


MINBERT_HEADERS = {"classification": "Predicted_Sentiment", "pair": "Predicted_Is_Paraphrase",
                   "regression": "Predicted_Similiary"}  # sic: the minBERT project's spelling


def predict_split(predictor, args) -> int:
    """Predict every task (or --task) on the config's dev/test files; minBERT csv or JSON Lines out."""
    from mtbert.data.readers import read_split
    from mtbert.inference.common import results as answers
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
        # the reader built and checked the Examples: predict them as they are, not via dicts parsed again
        results = answers(task, predictor.labels.get(name), predictor.predict_examples(name, examples), args.probas)
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
            rows = [{"id": ex.id, "text": ex.text, "text_pair": ex.text_pair, "question": ex.question,
                     "choices": ex.choices, "tokens": ex.tokens, **r} for ex, r in zip(examples, results, strict=True)]
            path = out_dir / f"{name}-{args.split}-predictions.jsonl"
            atomic_write_text(path, "".join(json.dumps({k: v for k, v in row.items() if v is not None},
                                                       ensure_ascii=False) + "\n" for row in rows))
        written.append(str(path))
    if not written:
        raise UserError(f"nothing to predict: no task has a {args.split} file in the config")
    print("\n".join(written))
    return 0


def cmd_predict(args) -> int:
    from mtbert.inference.common import read_jsonl
    from mtbert.inference.engines import load_predictor
    from mtbert.io import atomic_write

    predictor = load_predictor(args.run_dir, args.engine, batch_size=args.batch_size)
    if args.all:
        return cmd_predict_all(predictor, args)
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

        for line_no, item in read_jsonl(args.input):
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


def cmd_predict_all(predictor, args) -> int:
    """--all: every single-text head on each input text, streamed (inference/batch.py)."""
    from mtbert.inference.batch import predict_all_file

    if args.task or args.split or args.format != "jsonl":
        raise UserError("--all predicts every task that takes a single text on --input; drop --task, --split "
                        "and --format")
    n = predict_all_file(predictor, args.input, args.output, args.skip_existing, args.probas,
                         progress=not args.quiet)
    log.info("predicted %d texts%s", n, f" into {args.output}" if args.output else "")
    return 0


def cmd_serve(args) -> int:
    from mtbert.inference.engines import load_predictor

    try:
        from mtbert.inference.server import serve
    except ImportError:
        raise UserError("mtbert serve needs fastapi and uvicorn: pip install 'mtbert[serve]'") from None
    from mtbert.inference.server import Limits

    for flag, value in (("--max-batch", args.max_batch), ("--max-inputs", args.max_inputs),
                        ("--max-chars", args.max_chars)):
        if value < 1:
            raise UserError(f"{flag} {value}: give 1 or more")
    if args.max_wait_ms < 0:
        raise UserError(f"--max-wait-ms {args.max_wait_ms}: give 0 or more milliseconds")
    limits = Limits(max_inputs=args.max_inputs, max_chars=args.max_chars, batch_size=args.max_batch,
                    max_wait_ms=args.max_wait_ms)
    serve(load_predictor(args.run_dir, args.engine, precision=args.precision), host=args.host, port=args.port,
          limits=limits)
    return 0


def cmd_export(args) -> int:
    from mtbert.inference.export import export_onnx

    print(export_onnx(args.run_dir, args.output, args.quantize))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse prints its usage and then `PROG: error:`; a mistake in the arguments gets the one line every
    other mistake gets (subcommand parsers are made of this class too)."""

    def error(self, message):
        command = self.prog.removeprefix("mtbert").strip()
        self.exit(2, f"mtbert: error: {command + ': ' if command else ''}{message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtbert", description="Multi-task BERT: one shared encoder, a head per task.")
    p.add_argument("--version", action="version", version=f"mtbert {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a multi-task model from a YAML or JSON config")
    t.add_argument("config")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.lr=3e-5 (repeatable)")
    t.add_argument("--run-dir", help="where to write the run (default: the config's run_dir, or runs/<config name>)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in the run dir")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint "
                   "(a run dir holding a checkpoint of the same config is resumed without it)")
    t.add_argument("--nproc", type=int, metavar="N", help="train with N processes on this machine (runs "
                   "torchrun --standalone --nproc-per-node N); under torchrun itself, leave it out")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="score a trained run on dev or test data")
    e.add_argument("run_dir")
    e.add_argument("--split", choices=["dev", "test"], default="dev")
    e.add_argument("--data", action="append", default=[], metavar="TASK=PATH", help="evaluate TASK on this file")
    e.add_argument("--task", action="append", help="only this task (repeatable)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--custom-metrics", action="store_true",
                   help="run the run dir's module:function metrics (they import and run code it names)")
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
    r.add_argument("--all", action="store_true", help="every task that takes a single text, on each input text")
    r.add_argument("--skip-existing", action="store_true",
                   help="with --all: keep the answers already in --output and predict only the rest")
    r.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="onnx: run the bundle of mtbert export (RUN_DIR/onnx, or its folder) with onnxruntime")
    r.set_defaults(func=cmd_predict)

    v = sub.add_parser("convert", help="convert a DeepPavlov multitask config to an mtbert config")
    v.add_argument("config", help="DeepPavlov config (JSON)")
    v.add_argument("-o", "--output", default="-", help="YAML file to write (atomically), or - for stdout (default)")
    v.set_defaults(func=cmd_convert)

    c = sub.add_parser("compare", help="train multi-task and single-task models per mode; write a comparison table")
    c.add_argument("config")
    c.add_argument("--modes", default="pretrain,finetune", help="comma-separated: pretrain, finetune (default both)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--run-dir", help="default: the config's run_dir + '-compare'")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("serve", help="serve a trained model over HTTP: REST API, web page, OpenAPI at /docs")
    s.add_argument("run_dir", help="a run dir, or with --engine onnx an exported bundle")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="onnx: run the bundle of mtbert export (RUN_DIR/onnx, or its folder) with onnxruntime")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="torch engine: auto is bf16 where the CPU or GPU supports it")
    s.add_argument("--max-batch", type=int, default=32, help="inputs per model call when requests are micro-batched")
    s.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its model call")
    s.add_argument("--max-inputs", type=int, default=64, help="inputs per request (413 beyond)")
    s.add_argument("--max-chars", type=int, default=10_000, help="characters per input (422 beyond)")
    s.set_defaults(func=cmd_serve)

    x = sub.add_parser("export", help="export a trained model (encoder and every head) as one ONNX graph")
    x.add_argument("run_dir")
    x.add_argument("--format", choices=["onnx"], default="onnx")
    x.add_argument("--quantize", choices=["int8"], help="onnxruntime dynamic quantisation of the weights")
    x.add_argument("-o", "--output", help="folder to write (default RUN_DIR/onnx, or RUN_DIR/onnx-int8)")
    x.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a bad argument (its one line is printed): a code, as below
        return exit_.code if isinstance(exit_.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` relaunches the same command
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
