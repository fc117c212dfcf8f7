"""Speed and memory of mtbert against the loops people write by hand, side by side in one run.

    python benchmarks/throughput.py [--steps 40] [--repeats 3] [--examples 512] [--only train,predict_all,...]

1. train:       training examples/s on the five-task mix (CoLA, RTE, STS-B, COPA, CoNLL-2003), packaged
                MiniLM: mtbert vs a plain transformers loop (one AutoModelFor... per task, tokenised per
                batch, padding="max_length" 128 as DeepPavlov does) and the same loop with dynamic padding.
2. predict_all: five single-text heads answering the same 1,000 sentences: one encoder pass for all
                (Predictor.predict_all) vs a loop of five single-task predictions.
3. inference:   sentences/s at batch 1 and 64, fp32 vs bf16, and the share of time outside the encoder.
4. mfu:         training model FLOPs/s (6 x non-embedding params x tokens + attention) over the measured
                bf16 matmul peak of this machine.
5. memory:      peak RSS of one process holding one model with 5 heads vs one single-task model
                (and vs 5 single-task models), each in a fresh subprocess.
compile:        (only when asked: --only compile) mtbert's training steps with the encoder compiled
                (training.compile) vs eager, after warm-up steps in which it compiles.

Each comparison alternates its contenders and reports medians of `--repeats` runs as ratios. The figures
go to benchmarks/RESULTS.md, one section per part ('throughput_train', ...), so a part can be measured again alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.config import load_config  # noqa: E402
from mtbert.data.features import collate, length_grouped_batches  # noqa: E402
from mtbert.data.schedule import TaskSchedule  # noqa: E402
from mtbert.modeling.encoder import load_tokenizer, resolve_backbone  # noqa: E402
from mtbert.modeling.precision import autocast, resolve_precision  # noqa: E402
from mtbert.training.trainer import make_optimizer, model_for_training, prepare_data, seed_everything  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/deeppavlov_example.yaml"
CPU = torch.device("cpu")


def median_runs(contenders: dict, repeats: int) -> dict[str, list[float]]:
    """Run each contender `repeats` times, alternating the order every repeat."""
    results = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(contenders[name]())
            print(f"  {name}: {results[name][-1]:.1f}", flush=True)
    return results


# ------------------------------------------------------------------ 1. training


def five_task_data(examples: int):
    cfg = load_config(CONFIG, [f"tasks.{t}.max_train_examples={examples}" for t in
                               ("cola", "rte", "stsb", "copa", "conll")] + ["training.progress=false"])
    tok = load_tokenizer(cfg.backbone)
    return cfg, tok, prepare_data(cfg, tok)


def task_sequence(cfg, data, steps: int) -> list[tuple[str, list[int]]]:
    """The same (task, example indices) sequence for every contender: proportional schedule, seeded."""
    rng = random.Random(0)
    pools = {n: length_grouped_batches(td.train_feats, cfg.batch_size(n), rng) for n, td in data.items()}
    schedule = TaskSchedule("proportional", {n: len(p) for n, p in pools.items()}, 1, 0)
    used = {n: 0 for n in data}
    seq = []
    for step in range(steps):
        task = schedule.task_for(step, 0)
        seq.append((task, pools[task][used[task] % len(pools[task])]))
        used[task] += 1
    return seq


def mtbert_train(cfg, tok, data, seq, compile: bool = False, warmup: int = 0, timings: dict | None = None,
                 prepare=None) -> float:
    """Examples/s over `seq` after `warmup` untimed steps (the steps a compiled encoder compiles in; their
    time goes to timings["warmup_s"]). `prepare(model)`, if given, changes the model before training."""
    seed_everything(0)
    model = model_for_training(cfg, data)
    model.train()
    if prepare is not None:
        prepare(model)
    if compile:
        model.encoder.compile(dynamic=True)  # as training.compile does
    opt = make_optimizer(model, cfg)
    amp = partial(autocast, resolve_precision("auto", CPU), CPU)

    def step(task, idx):
        td = data[task]
        batch = collate(td.type, [td.train_feats[i] for i in idx], tok.pad_token_id)
        with amp():
            loss = model.loss(task, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for task, idx in seq[:warmup]:
        step(task, idx)
    if timings is not None:
        timings["warmup_s"] = time.perf_counter() - start
    start, n = time.perf_counter(), 0
    for task, idx in seq[warmup:]:
        step(task, idx)
        n += len(idx)
    return n / (time.perf_counter() - start)


def plain_models(data):
    """One transformers model per task, each with its own copy of the encoder: the hand-written way."""
    from transformers import (
        AutoModelForMultipleChoice,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    path = resolve_backbone("minilm")
    models = {}
    for name, td in data.items():
        if td.type == "classification":
            models[name] = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(td.labels))
        elif td.type == "regression":
            models[name] = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        elif td.type == "multiple_choice":
            models[name] = AutoModelForMultipleChoice.from_pretrained(path)
        else:
            models[name] = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(td.labels))
    return models


def plain_batch(tok, td, idx, padding):
    """Tokenise the batch now, as a plain loop does; labels aligned like mtbert's."""
    exs = [td.train[i] for i in idx]
    kw = {"truncation": True, "max_length": 128, "padding": padding, "return_tensors": "pt"}
    if td.type == "sequence_labeling":
        enc = tok([e.tokens for e in exs], is_split_into_words=True, **kw)
        labels = []
        for b, e in enumerate(exs):
            prev, row = None, []
            for w in enc.word_ids(b):
                row.append(td.labels.index(e.label[w]) if w is not None and w != prev else -100)
                prev = w
            labels.append(row)
        enc["labels"] = torch.tensor(labels)
    elif td.type == "multiple_choice":
        firsts = [f"{e.text} {e.question}" for e in exs for _ in e.choices]
        enc = tok(firsts, [c for e in exs for c in e.choices], **kw)
        enc = {k: v.view(len(exs), len(exs[0].choices), -1) for k, v in enc.items()}
        enc["labels"] = torch.tensor([e.label for e in exs])
    else:
        enc = tok([e.text for e in exs], [e.text_pair for e in exs] if exs[0].text_pair else None, **kw)
        enc["labels"] = (torch.tensor([td.labels.index(e.label) for e in exs]) if td.type == "classification"
                         else torch.tensor([e.label for e in exs], dtype=torch.float))
    return enc


def plain_train(tok, data, seq, padding: str) -> float:
    seed_everything(0)
    models = plain_models(data)
    opts = {n: torch.optim.AdamW(m.parameters(), lr=5e-5) for n, m in models.items()}
    for m in models.values():
        m.train()
    start, n = time.perf_counter(), 0
    for task, idx in seq:
        batch = plain_batch(tok, data[task], idx, padding)
        models[task](**batch).loss.backward()
        opts[task].step()
        opts[task].zero_grad()
        n += len(idx)
    return n / (time.perf_counter() - start)


def bench_train(args) -> str:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    cfg, tok, data = five_task_data(args.examples)
    seq = task_sequence(cfg, data, args.steps)
    print("1. training examples/s", flush=True)
    r = median_runs({"mtbert": lambda: mtbert_train(cfg, tok, data, seq),
                     "plain max_length": lambda: plain_train(tok, data, seq, "max_length"),
                     "plain dynamic": lambda: plain_train(tok, data, seq, "longest")}, args.repeats)
    m = {k: statistics.median(v) for k, v in r.items()}
    return f"""### 1. Training throughput, five-task mix

{args.steps} optimiser steps on the same seeded task/batch sequence (proportional schedule, batch 32,
{args.examples} training examples per task), median of {args.repeats} alternating runs. mtbert: one shared
encoder, tokenised once, length-grouped batches, dynamic padding, bf16 autocast where supported. Plain
loops: one `AutoModelFor...` per task, tokenised per batch, fp32.

| contender | examples/s (median) | runs |
|---|---|---|
| mtbert | {m['mtbert']:.1f} | {', '.join(f'{x:.1f}' for x in r['mtbert'])} |
| plain loop, padding="max_length" (128) | {m['plain max_length']:.1f} | {', '.join(f'{x:.1f}' for x in r['plain max_length'])} |
| plain loop, dynamic padding | {m['plain dynamic']:.1f} | {', '.join(f'{x:.1f}' for x in r['plain dynamic'])} |

Ratios: mtbert / max_length loop = **{m['mtbert'] / m['plain max_length']:.2f}x** (bar >= 3x);
mtbert / dynamic-padding loop = **{m['mtbert'] / m['plain dynamic']:.2f}x** (bar >= 1.5x).
"""


def bench_compile(args) -> str:
    """training.compile: the same steps with the encoder compiled (inductor, dynamic shapes) and eager."""
    cfg, tok, data = five_task_data(args.examples)
    warmup = 20
    seq = task_sequence(cfg, data, warmup + args.steps)
    print("training examples/s, eager vs compiled encoder", flush=True)
    warm = {"eager": [], "compiled": []}

    def run(compiled: bool) -> float:
        timings = {}
        rate = mtbert_train(cfg, tok, data, seq, compile=compiled, warmup=warmup, timings=timings)
        warm["compiled" if compiled else "eager"].append(timings["warmup_s"])
        return rate

    r = median_runs({"eager": lambda: run(False), "compiled": lambda: run(True)}, args.repeats)
    m = {k: statistics.median(v) for k, v in r.items()}
    return f"""### torch.compile (training.compile)

{args.steps} optimiser steps timed after {warmup} untimed warm-up steps (in which the compiled encoder
compiles), the five-task mix as in part 1, bf16 autocast where supported, median of {args.repeats}
alternating runs.

| contender | examples/s after warm-up (median) | runs | warm-up steps took (median) |
|---|---|---|---|
| eager | {m['eager']:.1f} | {', '.join(f'{x:.1f}' for x in r['eager'])} | {statistics.median(warm['eager']):.0f} s |
| compiled | {m['compiled']:.1f} | {', '.join(f'{x:.1f}' for x in r['compiled'])} | {statistics.median(warm['compiled']):.0f} s |

compiled / eager after warm-up = **{m['compiled'] / m['eager']:.2f}x**.
"""


# ------------------------------------------------------------------ 2-4. inference and MFU


HEADS = ("cola", "sst2", "stsb1", "conll", "wnut")


def make_run(tmp: Path, tasks: tuple[str, ...] = HEADS) -> Path:
    """A run dir whose model has single-text heads (of CoLA, SST-2, STS-B's first sentences, CoNLL, WNUT),
    untrained, on the packaged MiniLM: speed and memory do not depend on what the heads learned."""
    from mtbert.config import validate
    from mtbert.rundir import save_model, write_config

    specs = [("cola", {"type": "classification", "columns": {"text": 3, "label": 1}, "header": False,
                       "train": "glue/cola/train.tsv"}),
             ("sst2", {"type": "classification", "columns": {"text": "sentence", "label": "label"},
                       "train": "glue/sst2/train.tsv"}),
             ("stsb1", {"type": "regression", "columns": {"text": "sentence1", "label": "score"},
                        "train": "glue/stsb/train.tsv"}),
             ("conll", {"type": "sequence_labeling", "format": "conll", "columns": {"tokens": 0, "tags": 3},
                        "train": "conll2003/train.txt"}),
             ("wnut", {"type": "sequence_labeling", "format": "conll", "columns": {"tokens": 0, "tags": 1},
                       "train": "wnut17/train.conll"})]
    specs = [(n, s) for n, s in specs if n in tasks]
    raw = {"backbone": "minilm", "data_dir": str(load_config(CONFIG).data_dir),
           "tasks": {n: {**s, "max_train_examples": 300} for n, s in specs}}
    cfg = validate(raw)
    tok = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tok)
    model = model_for_training(cfg, data)
    run = tmp / "-".join(tasks)
    run.mkdir(parents=True, exist_ok=True)
    write_config(run, cfg)
    save_model(run, model, tok, cfg, {n: td.labels for n, td in data.items() if td.labels})
    return run


def sentences(n: int) -> list[str]:
    path = Path(load_config(CONFIG).data_dir) / "glue/sst2/dev.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines][:n] * (n // 872 + 1)


def bench_predict_all(args, tmp: Path) -> str:
    from mtbert.inference.predictor import Predictor

    p = Predictor(make_run(tmp))
    texts = sentences(1000)[:1000]
    tasks = p.single_text_tasks()
    print("2. predict_all vs loop", flush=True)

    def all_at_once():
        start = time.perf_counter()
        p.predict_all(texts)
        return len(texts) / (time.perf_counter() - start)

    def loop():
        start = time.perf_counter()
        for t in tasks:
            p.predict(t, [{"text": x} if p.cfg.tasks[t].type != "sequence_labeling" else {"tokens": x.split()}
                          for x in texts])
        return len(texts) / (time.perf_counter() - start)

    r = median_runs({"predict_all": all_at_once, "loop of 5": loop}, args.repeats)
    a, b = statistics.median(r["predict_all"]), statistics.median(r["loop of 5"])
    return f"""### 2. One encoder pass for all heads

Five single-text heads ({', '.join(tasks)}) answering the same 1,000 SST-2 dev sentences (batch 64,
precision {resolve_precision('auto', CPU)}), median of {args.repeats} alternating runs.

| contender | sentences/s (all five answers each) |
|---|---|
| `Predictor.predict_all` | {a:.1f} |
| loop of five `Predictor.predict` | {b:.1f} |

Ratio: **{a / b:.2f}x** (bar >= 4x).
"""


def bench_inference(args, tmp: Path) -> str:
    from mtbert.inference.predictor import Predictor

    p = Predictor(make_run(tmp))
    texts = sentences(512)[:512]
    encoder = p.model.encoder
    spent = {"encoder": 0.0}
    inner = encoder.forward

    def timed(*a, **k):
        t0 = time.perf_counter()
        out = inner(*a, **k)
        spent["encoder"] += time.perf_counter() - t0
        return out

    encoder.forward = timed
    rows = []
    print("3. inference", flush=True)
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and resolve_precision("auto", CPU) != "bf16":
            rows.append("| bf16 | - | - | not supported on this CPU |")
            continue
        p.amp = partial(autocast, precision, CPU)
        for batch in (1, 64):
            p.batch_size = batch
            n = 64 if batch == 1 else len(texts)
            runs, shares = [], []
            for _ in range(args.repeats):
                spent["encoder"] = 0.0
                start = time.perf_counter()
                p.predict_all(texts[:n])
                total = time.perf_counter() - start
                runs.append(n / total)
                shares.append(1 - spent["encoder"] / total)
            rows.append(f"| {precision} | {batch} | {statistics.median(runs):.1f} | {100 * statistics.median(shares):.0f}% |")
    encoder.forward = inner
    return f"""### 3. Inference speed (predict_all, five heads)

| precision | batch | sentences/s (median of {args.repeats}) | time outside the encoder (tokenisation, collation, heads, Python) |
|---|---|---|---|
{chr(10).join(rows)}
"""


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def sequences(feature) -> list[list[int]]:
    """The token ids an example puts through the encoder: one sequence, or one per choice or pair member."""
    return feature.input_ids if isinstance(feature.input_ids[0], list) else [feature.input_ids]


def model_flops(model, data, seq) -> tuple[float, int]:
    """Model FLOPs of the training steps `seq` (padding not counted) and the encoder's non-embedding
    parameters: 6 per parameter per token for the weights, 12 * layers * hidden * length per token for
    attention's scores and values."""
    c = model.encoder.config
    non_embedding = sum(p.numel() for n, p in model.encoder.named_parameters() if "embeddings" not in n)
    flops = 0.0
    for task, idx in seq:
        for i in idx:
            for ids in sequences(data[task].train_feats[i]):
                flops += len(ids) * (6 * non_embedding + 12 * c.num_hidden_layers * c.hidden_size * len(ids))
    return flops, non_embedding


def bench_mfu(args) -> str:
    cfg, tok, data = five_task_data(args.examples)
    seq = task_sequence(cfg, data, args.steps)
    flops, non_embedding = model_flops(model_for_training(cfg, data), data, seq)
    print("4. MFU", flush=True)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        mtbert_train(cfg, tok, data, seq)
        rates.append(flops / (time.perf_counter() - start))
    peak = matmul_peak()
    achieved = statistics.median(rates)
    return f"""### 4. Training MFU

Model FLOPs of the {args.steps} training steps above ({flops / 1e12:.2f} TFLOP: 6 x {non_embedding / 1e6:.1f}M
non-embedding parameters x tokens, plus attention; padding not counted) over wall time, against the bf16
matmul peak measured here (2048 x 2048 x 2048, best of 5): {peak / 1e9:.0f} GFLOP/s.

Achieved {achieved / 1e9:.0f} GFLOP/s (median of {args.repeats}, optimiser and data handling included):
**MFU {100 * achieved / peak:.0f}%** (bar >= 30%).
"""


# ------------------------------------------------------------------ 5. memory

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec, so
# a child of this (large) process would report the parent's peak
MEMORY_CHILD = r"""
import json, re, sys
from pathlib import Path
from mtbert.inference.predictor import Predictor
runs = sys.argv[1:]
ps = [Predictor(r) for r in runs]
texts = ["The quick brown fox jumps over the lazy dog."] * 64
for p in ps:
    p.predict_all(texts)
hwm = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"peak_rss_mb": hwm / 1024}))
"""


def bench_memory(args, tmp: Path) -> str:
    five = str(make_run(tmp))
    singles = [str(make_run(tmp, (name,))) for name in HEADS]

    def peak(runs: list[str]) -> float:
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, *runs], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]

    print("5. memory", flush=True)
    r = median_runs({"one single-task model": lambda: peak(singles[:1]),
                     "one model, 5 heads": lambda: peak([five]),
                     "5 single-task models": lambda: peak(singles)}, args.repeats)
    m = {k: statistics.median(v) for k, v in r.items()}
    return f"""### 5. Memory

Peak RSS of a fresh process that loads the model(s) and answers 64 sentences (median of {args.repeats}).

| process holds | peak RSS (MB) |
|---|---|
| one single-task model | {m['one single-task model']:.0f} |
| one model with 5 heads | {m['one model, 5 heads']:.0f} |
| 5 single-task models | {m['5 single-task models']:.0f} |

Ratio 5-head model / single-task model: **{m['one model, 5 heads'] / m['one single-task model']:.2f}x**
(bar <= 1.3x); 5 single-task models would take {m['5 single-task models'] / m['one model, 5 heads']:.2f}x the
5-head model.
"""


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--only", default="train,predict_all,inference,mfu,memory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="mtbert-throughput-"))
    parts = {"train": lambda: bench_train(args), "compile": lambda: bench_compile(args),
             "predict_all": lambda: bench_predict_all(args, tmp),
             "inference": lambda: bench_inference(args, tmp), "mfu": lambda: bench_mfu(args),
             "memory": lambda: bench_memory(args, tmp)}
    for name in args.only.split(","):
        # one RESULTS.md section per part, so a part can be measured again alone
        body = f"""## Throughput and memory (issue 4): {name}

- command: `python benchmarks/throughput.py --steps {args.steps} --repeats {args.repeats} --examples {args.examples} --only {name}`
- machine: {machine()}
- date: {today()}

{parts[name]()}"""
        write_section(f"throughput_{name}", body)
        print(body, flush=True)


if __name__ == "__main__":
    main()
