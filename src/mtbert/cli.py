"""`mtbert train | evaluate | predict | compare | convert`. User mistakes print one line and exit 2; bugs keep their traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
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
    from mtbert.training.checkpoint import Checkpointer, place_run
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
    run_dir = place_run(cfg, args.run_dir or args.resume)
    check_output_dir(run_dir, "--resume" if args.resume else "--run-dir" if args.run_dir else "run_dir",
                     "make it writable to resume" if args.resume else
                     "make it writable, or train into another folder with --run-dir DIR")
    # under torchrun every rank takes the same decision before rank 0 clears or writes anything
    ranks = from_env(cfg.training.dist_timeout, cfg.training.device)
    resume = Checkpointer(run_dir, cfg, ranks).start(bool(args.resume), args.overwrite, Path(args.config))
    try:
        summary = train(cfg, run_dir, resume=resume, ranks=ranks)
    except OSError as err:
        # a write the run dir refused after the start (full disk, folder made read-only): the machine's
        # doing, told with the one next step that works (any other file's refusal: main() tells it)
        # (a failed write names no file: training writes only into the run dir)
        inside = err.filename is None or Path(os.path.abspath(err.filename)).is_relative_to(run_dir.absolute())
        if (line := os_error_line(err, run_dir)) is None or not inside:
            raise
        from mtbert.rundir import after_write_failure

        raise UserError(f"{line}; {after_write_failure(run_dir)}") from None
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
            cmd_evaluate(argparse.Namespace(run_dir=str(run_dir), split="test", data=[], task=with_test, batch_size=None,
                                            precision="auto", custom_metrics=True))  # the config just trained with
        else:
            log.warning("evaluation_targets names test, but no task has a test split; evaluated on dev only")
    return 0


def _train_config(args):
    """The config to train, and the splits to evaluate afterwards: an mtbert config as it is, or a DeepPavlov
    config converted on the fly (`mtbert convert` writes the same conversion once)."""
    from mtbert.compat.deeppavlov import convert, evaluation_targets
    from mtbert.config import apply_overrides, finish, load_config

    raw = _read_deeppavlov(args)
    if raw is None:
        return load_config(args.config, args.set), []
    log.info("%s: a DeepPavlov config; converted to mtbert's (mtbert convert %s -o config.yaml writes it out)",
             args.config, args.config)
    converted = convert(raw, args.config, check_data=True)
    return finish(apply_overrides(converted, args.set), args.config), evaluation_targets(raw)


def _read_deeppavlov(args, path: str | None = None) -> dict | None:
    """The DeepPavlov config at `path` (default: the command's config) with --only-tasks / --skip-tasks
    applied; None for an mtbert config, which takes neither flag."""
    from mtbert.compat.deeppavlov import is_deeppavlov_config
    from mtbert.compat.dp_select import parse_task_list, select_tasks
    from mtbert.config import read_config_file

    path = path or args.config
    raw = read_config_file(path)
    only, skip = parse_task_list(args.only_tasks, "--only-tasks"), parse_task_list(args.skip_tasks, "--skip-tasks")
    if not is_deeppavlov_config(raw):
        if only is not None or skip is not None:
            raise UserError(f"{'--only-tasks' if only is not None else '--skip-tasks'}: applies to DeepPavlov "
                            f"configs; in an mtbert config such as {path}, remove the task from tasks:")
        return None
    return select_tasks(raw, only, skip, path)


def cmd_check(args) -> int:
    from mtbert.training.check import check

    cfg, _ = _train_config(args)
    if args.run_dir:
        cfg.run_dir = args.run_dir
    print(check(cfg, timing=not args.no_timing))
    return 0


def cmd_convert(args) -> int:
    from mtbert.compat.deeppavlov import convert, to_yaml
    from mtbert.config import finish
    from mtbert.io import atomic_write_text

    if args.output != "-":
        _refuse_writing_inputs("-o", Path(args.output), [("is the config being converted", Path(args.config))])
    raw = _read_deeppavlov(args)
    if raw is None:
        raise UserError(f"{args.config}: not a DeepPavlov config (no chainer or multitask dataset_reader); "
                        "mtbert reads its own configs as they are")
    converted = convert(raw, args.config, check_data=True)
    finish(converted, args.config, check_files=False)  # only write what mtbert accepts
    text = to_yaml(converted, args.config, raw)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)
        log.info("wrote %s; train it with: mtbert train %s", args.output, args.output)
    return 0


def check_output_dir(folder: Path, flag: str, fix: str, named: Path | None = None) -> None:
    """Refuse a folder mtbert is to write into that is a file, or cannot be written (read-only, not
    permitted), before any work is spent: its closest existing part is tried with a nameless temporary
    file, which leaves nothing behind. The message names `named` (the file to write in it), or the folder."""
    import tempfile

    where = f"{flag} {named or folder}" if flag else str(named or folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        part = "a file" if existing == folder else f"{existing} is a file"
        raise UserError(f"{where}: {part}, not a folder; give a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"{where}: cannot write in {existing} ({err.strerror}); {fix}") from None


def os_error_line(err: OSError, where: Path | str = "a file") -> str | None:
    """'<file>: <reason>' for what the machine refused (full disk, read-only or forbidden file), which is no
    bug of mtbert's; None for any other OSError."""
    import errno

    if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return None
    where = err.filename or where
    return f"{where}: cannot write ({err.strerror})" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) \
        else f"{where}: {err.strerror}"


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
    from mtbert.training.compare import compare, parse_methods, parse_seeds

    raw = load_raw(args.config, args.set)
    modes: list[str | None] = [None]
    if args.modes:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not modes or any(m not in ("pretrain", "finetune") for m in modes):
            raise UserError(f"--modes {args.modes!r}: use pretrain, finetune or both, comma-separated")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [finish(raw, args.config).seed]
    methods = parse_methods(args.methods)
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give 1 or more (trainings at once, one thread each)")
    cfg = finish(raw, args.config)  # validate once up front: a typo fails now, not after the first run
    run_dir = Path(args.run_dir or f"{cfg.run_dir}-compare")
    check_output_dir(run_dir, "--run-dir" if args.run_dir else "run_dir",
                     "make it writable, or write elsewhere with --run-dir DIR")
    if args.overwrite:  # without it, finished runs are reused and interrupted ones resumed
        from mtbert.training.checkpoint import fresh_run_dir

        fresh_run_dir(run_dir, True, Path(args.config))
    from concurrent.futures.process import BrokenProcessPool

    from mtbert.training.trainer import TrainingInterrupted

    again = "finished runs are kept and interrupted ones resume from their checkpoint: continue with " \
        f"mtbert {shlex.join(a for a in args.argv if a != '--overwrite')}"
    try:
        compare(raw, args.config, run_dir, seeds, methods, modes, args.jobs, args.rescore)
    except (TrainingInterrupted, KeyboardInterrupt) as stop:
        print(f"mtbert: compare interrupted; {again}", file=sys.stderr)
        return 128 + stop.signum if isinstance(stop, TrainingInterrupted) else 130
    except BrokenProcessPool:
        raise UserError(f"a training process of the comparison ended abruptly (killed, or out of memory); {again}") \
            from None
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


def _input_clash(output: Path, inputs: list[tuple[str, Path]]) -> str | None:
    """Which of `inputs` writing `output` would destroy: the same file (also through a symlink or a
    hard link), or a file inside an input folder (a model). None if it touches none of them."""
    from mtbert.io import is_within, same_file

    for what, source in inputs:
        if same_file(output, source) or (source.is_dir() and is_within(output, source)):
            return what
    return None


def _refuse_writing_inputs(flag: str, output: Path, inputs: list[tuple[str, Path]]) -> None:
    if (what := _input_clash(output, inputs)) is not None:
        raise UserError(f"{flag} {output}: {what}; mtbert never writes over its inputs: give another {flag}")


def _model_inputs(predictor, run_dir: str) -> list[tuple[str, Path]]:
    """The folder the predictor loaded (a run's model/ or an ONNX bundle) and the run's own files
    (its config, metrics, checkpoints: training rewrites or removes them): no output goes there."""
    from mtbert.io import resolve_dir
    from mtbert.rundir import run_files

    folder = getattr(predictor, "path", None) or resolve_dir(Path(run_dir) / "model")
    return [(f"is inside the model {folder}", Path(folder))] + [
        (f"is the run's own {path.name}, which training rewrites or removes", path)
        for path in run_files(Path(run_dir))]


def cmd_evaluate(args) -> int:
    from mtbert.evaluation.evaluate import evaluate_split, premise_checks
    from mtbert.evaluation.tables import results_table
    from mtbert.inference.predictor import Predictor

    predictor = Predictor(args.run_dir, precision=args.precision)
    cfg = predictor.cfg
    overrides = _parse_data(args.data, cfg.tasks)
    tasks = args.task or list(cfg.tasks)
    scores, primary = evaluate_split(predictor, args.split, tasks, overrides, args.custom_metrics, args.batch_size)
    print(results_table(scores, primary, types={n: cfg.tasks[n].type for n in scores}))
    for name, (real, shuffled) in premise_checks(predictor, args.split, list(scores), overrides,
                                                 args.batch_size).items():
        if shuffled is None:
            print(f"{name}: accuracy {real:.4f}; no premise check: it swaps premises between items, and this "
                  "split has fewer than two different premises")
            continue
        print(f"{name}: accuracy {real:.4f}; with every premise swapped for another item's {shuffled:.4f} "
              f"(a model that reads the premise falls toward chance there, {real - shuffled:+.4f} here)")
    return 0


def _split_output(out_dir: Path, task: str, split: str, fmt: str) -> Path:
    return out_dir / (f"{task}-{split}-output.csv" if fmt == "minbert" else f"{task}-{split}-predictions.jsonl")


def predict_split(predictor, args) -> int:
    """Predict every task (or --task) on the config's dev/test files; minBERT csv or JSON Lines out."""
    from mtbert.data.readers import read_split
    from mtbert.io import atomic_write_text
    from mtbert.tasks import registry

    cfg = predictor.cfg
    out_dir = Path(args.output or ".")
    tasks = [args.task] if args.task else list(cfg.tasks)
    inputs = _model_inputs(predictor, args.run_dir) + [
        (f"is tasks.{n}.{split}", cfg.data_path(getattr(t, split)))
        for n, t in cfg.tasks.items() for split in ("train", "dev", "test")
        if getattr(t, split) is not None and t.format != "hf"]
    for name in tasks:  # before any is written: all or nothing
        path = _split_output(out_dir, name, args.split, args.format)
        _refuse_writing_inputs("--output", path, inputs)
    written = []
    for name in tasks:
        task = predictor._task(name)
        if getattr(task, args.split) is None:
            log.warning("task %s: no %s file in the config; skipped", name, args.split)
            continue
        path = _split_output(out_dir, name, args.split, args.format)
        examples = read_split(cfg, name, args.split, with_labels=False, from_run=True)
        # the reader built and checked the Examples: predict them as they are, not via dicts parsed again
        results = predictor.answer_examples(name, examples, return_probas=args.probas)
        if args.format == "minbert":
            headers = registry.get(task.type).minbert_headers
            if not headers:
                writers = " and ".join(t.name for t in registry.all() if t.minbert_headers)
                raise UserError(f"--format minbert writes {writers} tasks; {name} is {task.type}")
            lines = [f"id \t {headers['pair' if task.columns.text_pair is not None else 'single']} "]
            for ex, r in zip(examples, results, strict=True):
                value = r["score"] if "score" in r else r["label"]
                lines.append(f"{ex.id if ex.id is not None else ex.line} , {value} ")
            atomic_write_text(path, "\n".join(lines) + "\n")
        else:
            rows = [{"id": ex.id, "text": ex.text, "text_pair": ex.text_pair, "question": ex.question,
                     "choices": ex.choices, "tokens": ex.tokens, **r} for ex, r in zip(examples, results, strict=True)]
            atomic_write_text(path, "".join(json.dumps({k: v for k, v in row.items() if v is not None},
                                                       ensure_ascii=False) + "\n" for row in rows))
        written.append(str(path))
    if not written:
        raise UserError(f"nothing to predict: no task has a {args.split} file in the config")
    print("\n".join(written))
    return 0


def _deeppavlov_run(args) -> dict | None:
    """`mtbert predict DP_CONFIG.json`: the DeepPavlov config (tasks selected) whose load_path (or save_path)
    holds the run, which becomes args.run_dir; None when RUN is a run dir or a bundle."""
    from mtbert.compat.deeppavlov import trained_run

    config = Path(args.run_dir)
    raw = _read_deeppavlov(args, args.run_dir) if config.is_file() and config.suffix in (".json", ".yaml", ".yml") \
        else None
    if raw is None:
        if args.only_tasks is not None or args.skip_tasks is not None:
            raise UserError("--only-tasks/--skip-tasks: apply when RUN is a DeepPavlov config (they pick its tasks "
                            "as training did); a run dir holds its tasks already")
        if args.format == "deeppavlov":
            raise UserError("--format deeppavlov: give the DeepPavlov config as RUN (mtbert predict DP_CONFIG.json "
                            "--task TASK); its chainer says what DeepPavlov returns")
        return None
    args.config_path, args.run_dir = str(config), trained_run(raw, str(config))
    return raw


def cmd_predict(args) -> int:
    from mtbert.inference.engines import load_predictor

    dp_raw = _deeppavlov_run(args)
    _check_predict_output(args)
    predictor = load_predictor(args.run_dir, args.engine, batch_size=args.batch_size, precision=args.precision)
    if args.output and not args.split:
        inputs = _model_inputs(predictor, args.run_dir)
        if args.input != "-":
            inputs.insert(0, ("is the --input file", Path(args.input)))
        _refuse_writing_inputs("--output", Path(args.output), inputs)
    if args.input == "-" and not args.split and sys.stdin.isatty():  # else it would seem to hang
        print("mtbert: reading JSON Lines from standard input (one input per line, Ctrl-D to end); "
              "give --input FILE to read a file", file=sys.stderr)
    if args.all:
        return cmd_predict_all(predictor, args)
    if args.split:
        return predict_split(predictor, args)
    if not args.task:
        raise UserError(f"predict: give --task TASK (one of {', '.join(predictor.cfg.tasks)}) for --input, "
                        "or --split dev|test to predict the config's files")
    if args.format == "minbert":
        raise UserError("--format minbert goes with --split dev|test (it needs the ids of the minBERT files)")
    return predict_inputs(predictor, args, dp_raw)


def read_inputs(args, spec, deeppavlov: bool):
    """(the input as mtbert reads it, its Example) per line of --input: the CLI's edge, where each input is
    checked and built once (from DeepPavlov's shapes first, for a DeepPavlov config: texts,
    [text, text_pair], tokens, [context, choices]). A wrong input names its line."""
    from mtbert.errors import InputError
    from mtbert.inference.common import deeppavlov_input, read_jsonl, to_example

    for index, (line_no, item) in enumerate(read_jsonl(args.input)):
        try:
            if deeppavlov:
                item = deeppavlov_input(spec, item, index)
            yield item, to_example(args.task, spec, item, index)
        except InputError as err:
            raise err.at(f"{args.input} line {line_no}") from None


def predict_inputs(predictor, args, dp_raw: dict | None, chunk_size: int = 1024) -> int:
    """--task T on --input: one JSON line out per input, the input's fields and its answer (with --format
    deeppavlov: the chainer's out values of T, as DeepPavlov's predict prints them)."""
    from mtbert.io import atomic_write

    spec = predictor._task(args.task)
    # a DeepPavlov config is checked against the run whatever the format
    answer = _deeppavlov_answers(predictor, dp_raw, args) if dp_raw is not None else None

    def run(out) -> None:
        chunk: list[tuple[object, object]] = []

        def flush():
            examples = [ex for _, ex in chunk]
            if args.format == "deeppavlov":
                results = answer([item for item, _ in chunk], examples)
            else:
                results = predictor.answer_examples(args.task, examples, return_probas=args.probas)
            for (item, _), result in zip(chunk, results, strict=True):
                if args.format == "deeppavlov":
                    out.write(json.dumps(result, ensure_ascii=False) + "\n")
                    continue
                record = dict(item) if isinstance(item, dict) else {"text": item}
                record.update(result)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            chunk.clear()

        for item, example in read_inputs(args, spec, deeppavlov=dp_raw is not None):
            chunk.append((item, example))
            if len(chunk) >= chunk_size:
                flush()
        if chunk:
            flush()

    if args.output:
        atomic_write(args.output, lambda p: run(open(p, "w", encoding="utf-8")))
    else:
        run(sys.stdout)
    return 0


def _deeppavlov_answers(predictor, dp_raw: dict, args):
    """--task T of a DeepPavlov config: a function from a batch of inputs (as sent, and as Examples) to,
    per input, what DeepPavlov's `predict` prints for it with --format deeppavlov: the values of the
    chainer's `out` variables that belong to T, in `out`'s order (with DeepPavlov's ids, probabilities,
    floats or tags). The chainer is read and checked against the run once, here."""
    from mtbert.compat.deeppavlov import DeepPavlovModel

    model = DeepPavlovModel(predictor, dp_raw, args.config_path)  # the config's tasks are the run's
    chain = model.chain
    outs = [name for name in chain.outputs if chain.vars[name].task == args.task]
    if args.format == "deeppavlov" and not outs:
        raise UserError(f"--task {args.task}: none of the chainer's out variables ({', '.join(chain.outputs)}) "
                        "holds its predictions")

    def answer(items: list, examples: list) -> list[list]:
        values = model.outputs({args.task: examples}, {chain.input_of[args.task]: items})
        return [[values[name][i] for name in outs] for i in range(len(examples))]

    return answer


def _check_predict_output(args) -> None:
    """--output names a file (--input, --all) or, with --split, a folder: the wrong kind, or a folder that
    cannot be written, is told before the model is loaded."""
    if not args.output:
        return
    out = Path(args.output)
    if args.split and not args.all:
        if out.exists() and not out.is_dir():
            raise UserError(f"--output {out}: a file; with --split, --output names the folder for the prediction "
                            "files (one per task)")
        check_output_dir(out, "--output", "make it writable, or give another folder")
        return
    if out.is_dir():
        raise UserError(f"--output {out}: a folder; give the path of the JSON Lines file to write")
    check_output_dir(out.parent, "--output", "make it writable, or give another file", named=out)


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
    if not 0 < args.read_timeout < float("inf"):
        raise UserError(f"--read-timeout {args.read_timeout:g}: give a number of seconds above 0")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: a TCP port is 0 to 65535 (0: any free port)")
    limits = Limits(max_inputs=args.max_inputs, max_chars=args.max_chars, batch_size=args.max_batch,
                    max_wait_ms=args.max_wait_ms, read_timeout_s=args.read_timeout)
    serve(load_predictor(args.run_dir, args.engine, precision=args.precision), host=args.host, port=args.port,
          limits=limits, run_name=Path(args.run_dir).resolve().name)
    return 0


def cmd_export(args) -> int:
    from mtbert.inference import export, hf_export
    from mtbert.rundir import model_dir

    model_dir(args.run_dir)  # no run there: say that first
    export.check_smoothquant_alpha(args.smoothquant_alpha, args.quantize)
    if args.format == "hf":
        if args.quantize:
            raise UserError("--quantize applies to --format onnx; a transformers model is saved in fp32 (quantise "
                            "it with transformers' own tools once loaded)")
        if not args.task:
            raise UserError("--format hf exports one task: add --task TASK")
        out = Path(args.output) if args.output else hf_export.default_out_dir(args.run_dir, args.task)
    else:
        if args.task:
            raise UserError("--task applies to --format hf; the ONNX bundle holds every task")
        out = Path(args.output) if args.output else export.default_out_dir(args.run_dir, args.quantize)
    check_output_dir(out.parent, "-o" if args.output else "", "make it writable, or give another -o FOLDER",
                     named=out)
    if args.format == "hf":
        print(hf_export.export_hf(args.run_dir, args.task, args.output, force=args.force))
    else:
        print(export.export_onnx(args.run_dir, args.output, args.quantize, force=args.force,
                                 smoothquant_alpha=args.smoothquant_alpha))
    return 0


PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
PRECISION_HELP = ("torch engine: auto (default) is the precision the run's dev scores were computed with in "
                  "training, so evaluate reproduces report.md; fp16 needs a GPU")


def _task_selection(parser, which: str = "the tasks to train") -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--only-tasks", metavar="A,B", help=f"DeepPavlov configs: {which}, the others left out "
                       "everywhere they appear (reader, iterator, chainer, metrics)")
    group.add_argument("--skip-tasks", metavar="A,B", help="DeepPavlov configs: leave these tasks out everywhere "
                       "they appear")


class _Parser(argparse.ArgumentParser):
    """argparse prints its usage and then `PROG: error:`; a mistake in the arguments gets the one line every
    other mistake gets (subcommand parsers are made of this class too)."""

    def error(self, message):
        command = self.prog.removeprefix("mtbert").strip()
        self.exit(2, f"mtbert: error: {command + ': ' if command else ''}{message}; see {self.prog} --help\n")


CONFIG_HELP = "a YAML or JSON config: mtbert's, or a DeepPavlov multitask config (converted on the fly)"
RUN_HELP = "a run dir written by mtbert train"


def _config_arguments(parser: argparse.ArgumentParser, set_help: str) -> None:
    """The config a command reads and its --set overrides (train, check and compare take both)."""
    parser.add_argument("config", help=CONFIG_HELP)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, {set_help} (repeatable)")


def _train_command(command) -> None:
    t = command("train", "train a multi-task model from a YAML or JSON config",
                "mtbert train configs/deeppavlov_example.yaml --set training.epochs=1")
    _config_arguments(t, "e.g. --set training.lr=3e-5")
    t.add_argument("--run-dir", help="where to write the run (default: the config's run_dir, or runs/<config name>)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in the run dir")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint "
                   "(a run dir holding a checkpoint of the same config is resumed without it)")
    t.add_argument("--nproc", type=int, metavar="N", help="train with N processes on this machine (runs "
                   "torchrun --standalone --nproc-per-node N); under torchrun itself, leave it out")
    _task_selection(t)
    t.set_defaults(func=cmd_train)


def _check_command(command) -> None:
    k = command("check", "what train would do with a config, without training: data sizes, labels, "
                "truncation, steps, the schedule's task mix, a time estimate",
                "mtbert check configs/deeppavlov_example.yaml")
    _config_arguments(k, "as train takes it")
    k.add_argument("--run-dir", help="the run dir train would write (default: the config's run_dir)")
    k.add_argument("--no-timing", action="store_true", help="skip the few timed training steps of the estimate")
    _task_selection(k)
    k.set_defaults(func=cmd_check)


def _evaluate_command(command) -> None:
    e = command("evaluate", "score a trained run on dev or test data",
                "mtbert evaluate runs/deeppavlov_example --split dev")
    e.add_argument("run_dir", help=RUN_HELP)
    e.add_argument("--split", choices=["dev", "test"], default="dev", help="the config's split to score (default dev)")
    e.add_argument("--data", action="append", default=[], metavar="TASK=PATH", help="evaluate TASK on this file")
    e.add_argument("--task", action="append", help="only this task (repeatable)")
    e.add_argument("--batch-size", type=int, help="default: training's eval_batch_size (the same batches, "
                   "so the same scores)")
    e.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    e.add_argument("--custom-metrics", action="store_true",
                   help="run the run dir's module:function metrics (they import and run code it names)")
    e.set_defaults(func=cmd_evaluate)


def _predict_command(command) -> None:
    r = command("predict", "predict a task for JSON Lines inputs, or every task on the config's files",
                'echo \'{"text": "The book was written."}\' | mtbert predict runs/deeppavlov_example --task cola')
    r.add_argument("run_dir", metavar="RUN", help=RUN_HELP + " (with --engine onnx: an exported bundle), or a "
                   "DeepPavlov config whose load_path holds one")
    r.add_argument("--task", help="the task to predict (required with --input)")
    r.add_argument("--input", default="-", help="JSON Lines file, or - for stdin (default)")
    r.add_argument("--output", help="JSON Lines file (written atomically; default stdout), or with --split "
                   "the directory for the prediction files (default .)")
    r.add_argument("--split", choices=["dev", "test"], help="predict the config's dev or test files instead of --input")
    r.add_argument("--format", choices=["jsonl", "minbert", "deeppavlov"], default="jsonl",
                   help="with --split: JSON Lines, or the minBERT project's 'id , prediction' csv files; "
                        "deeppavlov (RUN a DeepPavlov config, with --task): per input, the chainer's out values "
                        "of the task, as DeepPavlov's predict prints them")
    r.add_argument("--probas", action="store_true", help="add class probabilities (DeepPavlov's return_probas)")
    r.add_argument("--batch-size", type=int, default=64, help="inputs per model call (default 64)")
    r.add_argument("--all", action="store_true", help="every task that takes a single text, on each input text")
    r.add_argument("--skip-existing", action="store_true",
                   help="with --all: keep the answers already in --output and predict only the rest")
    r.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="onnx: run the bundle of mtbert export (RUN_DIR/onnx, or its folder) with onnxruntime")
    r.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    _task_selection(r, "the tasks the run was trained with")
    r.set_defaults(func=cmd_predict)


def _convert_command(command) -> None:
    v = command("convert", "convert a DeepPavlov multitask config to an mtbert config",
                "mtbert convert configs/deeppavlov/multitask_example.json -o example.yaml")
    v.add_argument("config", help="DeepPavlov config (JSON)")
    v.add_argument("-o", "--output", default="-", help="YAML file to write (atomically), or - for stdout (default)")
    _task_selection(v)
    v.set_defaults(func=cmd_convert)


def _compare_command(command) -> None:
    c = command("compare", "is one shared model as good as one model per task? trains both, writes "
                "a multi- vs single-task table",
                "mtbert compare configs/deeppavlov_example.yaml --seeds 42,7 --methods plain,temperature --jobs 2")
    _config_arguments(c, "for every run of the comparison")
    c.add_argument("--seeds", help="comma-separated seeds, every run once per seed (default: the config's seed)")
    c.add_argument("--methods", default="plain",
                   help="multi-task methods, comma-separated: plain, temperature, uncertainty, distill, long "
                        "(1.5x the training length), ema (the weights' moving average), or several joined by '+' (default plain)")
    c.add_argument("--modes", help="minBERT's modes, comma-separated: pretrain, finetune (their lr and frozen "
                                   "encoder presets); default: the config as it is")
    c.add_argument("--jobs", type=int, default=1, help="trainings at once, one thread each (default 1)")
    c.add_argument("--run-dir", help="default: the config's run_dir + '-compare'; finished runs there are reused")
    c.add_argument("--overwrite", action="store_true", help="start the comparison again from nothing")
    c.add_argument("--rescore", action="store_true",
                   help="score the runs finished earlier again on dev (after a change to evaluation)")
    c.set_defaults(func=cmd_compare)


def _serve_command(command) -> None:
    s = command("serve", "serve a trained model over HTTP: REST API, web page, OpenAPI at /docs",
                "mtbert serve runs/deeppavlov_example --port 8000")
    s.add_argument("run_dir", help="a run dir, or with --engine onnx an exported bundle")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="onnx: run the bundle of mtbert export (RUN_DIR/onnx, or its folder) with onnxruntime")
    s.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    s.add_argument("--max-batch", type=int, default=32, help="inputs per model call when requests are micro-batched")
    s.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its model call")
    s.add_argument("--max-inputs", type=int, default=64, help="inputs per request (413 beyond)")
    s.add_argument("--max-chars", type=int, default=10_000, help="characters per input (422 beyond)")
    s.add_argument("--read-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long a request's body may take to arrive (408 and the connection closed beyond; "
                        "default 10)")
    s.set_defaults(func=cmd_serve)


def _export_command(command) -> None:
    x = command("export", "export a trained model (encoder and every head) as one ONNX graph, or one task as "
                "a transformers model", "mtbert export runs/deeppavlov_example --format hf --task conll")
    x.add_argument("run_dir", help=RUN_HELP)
    x.add_argument("--format", choices=["onnx", "hf"], default="onnx",
                   help="onnx (default): every task in one graph; hf: the --task as a folder transformers' "
                        "AutoModelFor* classes and pipeline() load")
    x.add_argument("--task", help="with --format hf: the task to export")
    x.add_argument("--quantize", choices=["int8", "int8-smoothquant"],
                   help="int8: onnxruntime's block-wise int8 (keeps fp32's labels, a smaller file, little faster); "
                        "int8-smoothquant: SmoothQuant calibrated on a few hundred of the run's training inputs, "
                        "then per-tensor dynamic int8 (about 2x fp32's speed, changes more labels)")
    x.add_argument("--smoothquant-alpha", type=float, metavar="ALPHA",
                   help="with --quantize int8-smoothquant: how much of the activations' range SmoothQuant moves "
                        "into the weights, between 0 and 1 (default 0.85)")
    x.add_argument("-o", "--output", help="folder to write (default RUN_DIR/onnx, RUN_DIR/onnx-int8 or "
                   "RUN_DIR/hf-TASK): a new or empty one, or an earlier export with --force")
    x.add_argument("--force", action="store_true", help="replace an earlier export there (only a folder whose "
                   "manifest.json lists every file in it)")
    x.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtbert", description="Multi-task BERT: one shared encoder, a head per task.")
    p.add_argument("--version", action="version", version=f"mtbert {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    # -q after the subcommand too (`mtbert train CFG -q`); SUPPRESS keeps a subcommand from resetting a -q
    # given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary, epilog=f"example:\n  {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])

    for add in (_train_command, _check_command, _evaluate_command, _predict_command, _convert_command, _compare_command, _serve_command, _export_command):
        add(command)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a bad argument (its one line is printed): a code, as below
        return exit_.code if isinstance(exit_.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` relaunches the same command
    # a shell cannot pass a NUL byte, but main(argv) from Python can; no path or value may hold one
    if nul := next((a for a in args.argv if "\x00" in a), None):
        print(f"mtbert: error: argument {nul!r} contains a NUL byte; remove it", file=sys.stderr)
        return 2
    _setup_logging(not args.quiet)
    try:
        return args.func(args)
    except UserError as err:
        print(f"mtbert: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if (line := os_error_line(err)) is None:
            raise
        print(f"mtbert: error: {line}; free space or fix the permissions, then run the command again",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtbert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
