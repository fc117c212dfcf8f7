"""How much int8 changes a trained model's answers, and how much faster it is: the run dir exported as
fp32 and as int8 variants (the shipped `mtbert export --quantize int8` and the ones measured to choose it),
every ONNX bundle run over every task's dev set, side by side.

Variants: `blocks` (`--quantize int8`: onnxruntime's 8-bit blocks of 32); `smoothquant a=A` (SmoothQuant
with alpha A, then per-tensor dynamic int8; `--quantize int8-smoothquant` at the default alpha, also with
the feed-forward output projections left in fp32, or only the paper's two sites, Q/K/V and the
feed-forward input, int8); `dynamic` (the same per-tensor int8 without smoothing).

Per variant: how often it gives fp32's label (the class, the choice, or each word's tag) on each dev set,
the dev metric, the largest change in a regression score; the time for all the dev sets; and model-call
throughput (all heads) at batch 32 and batch 1. Contenders alternate within each round (order rotated;
for model calls they take turns call by call), medians of 3 rounds, ratios to fp32; onnxruntime with
1 thread (run it under `nice`, as other jobs share the machine).

    python benchmarks/int8_agreement.py --run-dir RUN_DIR [RUN_DIR ...] [--data-dir ../shared/data]

Writes the 'int8_agreement' section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.data.readers import read_split  # noqa: E402
from mtbert.evaluation.evaluate import score_task  # noqa: E402
from mtbert.inference import smoothquant  # noqa: E402
from mtbert.inference.export import _quantize_dynamic, export_onnx  # noqa: E402
from mtbert.inference.onnx_predictor import OnnxPredictor  # noqa: E402
from mtbert.rundir import load_model  # noqa: E402

ROUNDS = 3
THROUGHPUT_TEXTS = 256  # dev sentences run through the graph per round and batch size


def flipped_confidence(a, b) -> str:
    """How sure fp32 was of the examples int8 answers differently: its largest and median top probability
    over them, beside the median over all examples."""
    top = np.array([p.max() for p in a.probas])
    flip = np.array([x != y for x, y in zip(a.labels, b.labels, strict=True)])
    if not flip.any():
        return "no flips"
    return f"{top[flip].max():.2f} / {np.median(top[flip]):.2f} (all: {np.median(top):.2f})"


def agreement(task_type: str, a, b) -> tuple[float, int]:
    """Share of labels int8 keeps, and over how many labels (words, for sequence labeling)."""
    if task_type == "sequence_labeling":
        pairs = [(x, y) for la, lb in zip(a.labels, b.labels, strict=True) for x, y in zip(la, lb, strict=True)]
    else:
        pairs = list(zip(a.labels, b.labels, strict=True))
    return float(np.mean([x == y for x, y in pairs])), len(pairs)


def derived(fp32: Path, out: Path, quantize) -> Path:
    """An int8 bundle made from the fp32 bundle's graph by `quantize(src, dst)`, the other files copied."""
    shutil.copytree(fp32, out)
    quantize(fp32 / "model.onnx", out / "model.onnx")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "quantization": "int8"}, indent=2))
    return out


SHIPPED = "blocks"  # `--quantize int8`
FAST = f"smoothquant a={smoothquant.DEFAULT_ALPHA}"  # `--quantize int8-smoothquant`


def build(run_dir: str, out: Path, alphas: list[float]) -> dict[str, Path]:
    """Every contender's bundle: fp32, the two shipped int8 schemes, then the variants measured beside them."""
    bundles = {"fp32": export_onnx(run_dir, out / "fp32")}
    bundles[SHIPPED] = export_onnx(run_dir, out / "int8", "int8")
    bundles[FAST] = export_onnx(run_dir, out / "int8-smoothquant", "int8-smoothquant")
    _, model, _, _ = load_model(run_dir)
    every = smoothquant.onnx_scopes(model.encoder, smoothquant.sites(model.encoder))
    bundles["dynamic"] = derived(bundles["fp32"], out / "dynamic", lambda s, d: _quantize_dynamic(s, d, every))
    for alpha in alphas:
        if f"smoothquant a={alpha}" not in bundles:
            bundles[f"smoothquant a={alpha}"] = export_onnx(run_dir, out / f"sq-{alpha}", "int8-smoothquant",
                                                            smoothquant_alpha=alpha)
    # the feed-forward output projection reads GELU's output, the largest outliers: int8 or fp32; and
    # the paper's two sites alone (the projections after a LayerNorm), the rest fp32
    for sites, suffix in ((("qkv", "attention_output", "ffn_input"), "ffn out fp32"),
                          (("qkv", "ffn_input"), "only q/k/v and ffn in int8")):
        bundles[f"{FAST}, {suffix}"] = export_onnx(run_dir, out / f"sq-{len(sites)}", "int8-smoothquant",
                                                   smoothquant_sites=sites)
    return bundles


def throughput_feeds(engine: OnnxPredictor, cfg, batch: int) -> list[dict]:
    """Model-call inputs for THROUGHPUT_TEXTS dev texts (every task's first text, spread evenly), as
    predict_all encodes them (words, one pass for every head), in batches of `batch` texts of similar
    length."""
    texts = []
    for task, spec in cfg.tasks.items():
        if spec.dev:
            texts += [ex.tokens or ex.text.split() for ex in read_split(cfg, task, "dev", with_labels=False)]
    step = max(1, len(texts) // THROUGHPUT_TEXTS)
    texts = [t for t in texts[::step] if t][:THROUGHPUT_TEXTS]
    from mtbert.data.readers import Example

    feats = engine._encode("sequence_labeling", [Example(tokens=t) for t in texts], cfg.max_length)
    feats.sort(key=lambda f: f.length)
    return [engine._feed(feats[i:i + batch]) for i in range(0, len(feats), batch)]


def throughput(engines: dict, feeds: dict, rounds: int) -> dict:
    """Texts per second of each contender's model calls, per batch size: the contenders take turns call
    by call (order rotated each round), so a swing in the machine's load falls on all of them alike;
    medians of the rounds."""
    names = list(engines)
    per_second = {(name, b): [] for name in names for b in feeds}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for b, batches in feeds.items():
            spent = dict.fromkeys(names, 0.0)
            for feed in batches:
                for name in order:
                    start = time.perf_counter()
                    engines[name].session.run(None, feed)
                    spent[name] += time.perf_counter() - start
            texts = sum(len(feed["input_ids"]) for feed in batches)
            for name in names:
                per_second[(name, b)].append(texts / spent[name])
        print(f"throughput round {r + 1}: " + ", ".join(
            f"{n} {per_second[(n, 32)][-1] / per_second[('fp32', 32)][-1]:.2f}x / "
            f"{per_second[(n, 1)][-1] / per_second[('fp32', 1)][-1]:.2f}x" for n in names), flush=True)
    return {k: statistics.median(v) for k, v in per_second.items()}


def bundles_in(folder: Path | None, run_dir: str, alphas: list[float]) -> tuple[dict, Path | None]:
    """The contenders' bundles: built in a temporary folder (removed after), or in `folder`, kept there with
    a variants.json and reused by a later call (e.g. to measure again on a quieter machine)."""
    if folder is None:
        out = Path(tempfile.mkdtemp(prefix="mtbert-int8-"))
        return build(run_dir, out, alphas), out
    index = folder / "variants.json"
    if index.is_file():
        return {name: folder / sub for name, sub in json.loads(index.read_text()).items()}, None
    bundles = build(run_dir, folder, alphas)
    index.write_text(json.dumps({name: path.name for name, path in bundles.items()}, indent=2))
    return bundles, None


def compare(run_dir: str, data_dir: str, alphas: list[float], rounds: int = ROUNDS,
            keep: Path | None = None) -> dict:
    """One run dir: every contender's agreement rows, dev-set times and throughputs."""
    bundles, temporary = bundles_in(keep, run_dir, alphas)
    engines = {name: OnnxPredictor(path, threads=1) for name, path in bundles.items()}
    cfg = engines["fp32"].cfg.model_copy(update={"data_dir": data_dir})
    dev = {task: read_split(cfg, task, "dev") for task, spec in cfg.tasks.items() if spec.dev}
    feeds = {b: throughput_feeds(engines["fp32"], cfg, b) for b in (32, 1)}
    seconds = {name: [] for name in engines}
    preds: dict[str, dict] = {}
    names = list(engines)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # each contender first in some round
        for name in order:
            if r == 0 or name in ("fp32", SHIPPED, FAST):  # every dev set once for agreement; timed for these
                start = time.perf_counter()
                got = {task: engines[name].predict_examples(task, examples) for task, examples in dev.items()}
                seconds[name].append(time.perf_counter() - start)
                preds.setdefault(name, got)
        print(f"round {r + 1}: dev sets " + ", ".join(f"{n} {seconds[n][-1]:.1f} s" for n in ("fp32", SHIPPED, FAST)),
              flush=True)
    per_second = throughput(engines, feeds, rounds)

    result = {"bundles": bundles, "names": names, "seconds": {n: statistics.median(v) for n, v in seconds.items()},
              "per_second": per_second, "rows": {}, "worst": {},
              "conll_words": {}, "score_change": {}, "sizes": {n: (p / "model.onnx").stat().st_size / 2**20 for n, p in bundles.items()}}
    for name in names[1:]:
        rows, worst = [], 1.0
        for task, examples in dev.items():
            spec = cfg.tasks[task]
            a, b = preds["fp32"][task], preds[name][task]
            labels = engines["fp32"].labels.get(task)
            metric = spec.metrics[0]
            scores = [score_task(spec.type, [metric], examples, p, labels)[metric] for p in (a, b)]
            if spec.type == "regression":
                diff = np.abs(np.array(a.labels, dtype=float) - np.array(b.labels, dtype=float))
                agree, compared, sure = f"(largest score change {diff.max():.3f})", str(len(examples)), ""
                result["score_change"][name] = max(result["score_change"].get(name, 0.0), float(diff.max()))
            else:
                share, n = agreement(spec.type, a, b)
                worst = min(worst, share)
                if spec.type == "sequence_labeling":
                    result["conll_words"][name] = min(result["conll_words"].get(name, 1.0), share)
                agree = f"**{share:.2%}**"
                compared = f"{n} ({'words' if spec.type == 'sequence_labeling' else 'examples'})"
                sure = "" if spec.type == "sequence_labeling" else flipped_confidence(a, b)
            rows.append(f"| {task} | {spec.type} | {compared} | {agree} | {sure} | {metric} | {scores[0]:.4f} | "
                        f"{scores[1]:.4f} |")
        result["rows"][name], result["worst"][name] = rows, worst
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)
    return result


def variants_table(res: dict) -> list[str]:
    rows = ["| variant | lowest label agreement | tagging: words agreeing | largest regression score change | "
            "batch 32: texts/s (vs fp32) | batch 1: texts/s (vs fp32) | model.onnx MB |",
            "|---|---|---|---|---|---|---|"]
    for name in res["names"]:
        fp32 = name == "fp32"
        shipped = {SHIPPED: " (`--quantize int8`)", FAST: " (`--quantize int8-smoothquant`)"}.get(name, "")
        cells = [f"{name}{shipped}",
                 "-" if fp32 else f"{res['worst'][name]:.2%}",
                 "-" if fp32 or name not in res["conll_words"] else f"{res['conll_words'][name]:.2%}",
                 "-" if fp32 or name not in res["score_change"] else f"{res['score_change'][name]:.3f}"]
        for b in (32, 1):
            v, base = res["per_second"][(name, b)], res["per_second"][("fp32", b)]
            cells.append(f"{v:.0f} (**{v / base:.2f}x**)")
        cells.append(f"{res['sizes'][name]:.0f}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def meeting(res: dict) -> str:
    """The variants that meet the issue's bars, or 'none'."""
    ok = [n for n in res["names"][1:] if res["worst"][n] >= 0.99 and res["conll_words"].get(n, 1.0) >= 0.999
          and all(res["per_second"][(n, b)] >= 1.5 * res["per_second"][("fp32", b)] for b in (32, 1))]
    return ", ".join(ok) or "none"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True, nargs="+")
    ap.add_argument("--data-dir", default=os.environ.get("MTBERT_DATA", "../shared/data"))
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.75, 0.85],
                    help="SmoothQuant alphas to measure beside the default")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="timing rounds (medians of them)")
    ap.add_argument("--keep", type=Path, help="build the bundles in this folder and keep them, or reuse those an "
                    "earlier call kept there (one run dir)")
    args = ap.parse_args()
    parts = []
    for run_dir in args.run_dir:
        res = compare(run_dir, args.data_dir, args.alphas, args.rounds, args.keep)
        s, mb = res["seconds"], res["sizes"]

        def speed(name, res=res):
            return " and ".join(f"**{res['per_second'][(name, b)] / res['per_second'][('fp32', b)]:.2f}x** at batch {b}"
                                for b in (32, 1))

        def per_task(name, res=res):
            return f"""| task | type | labels compared | agrees with fp32 | fp32 top probability where it differs: max / median | metric | fp32 | {name} |
|---|---|---|---|---|---|---|---|
{chr(10).join(res['rows'][name])}"""

        parts.append(f"""### {run_dir}

- lowest label agreement over the classification, multiple-choice and tagging tasks: **{res['worst'][SHIPPED]:.2%}** (bar: >= 99%)
- time for all dev sets: fp32 {s['fp32']:.1f} s, int8 {s[SHIPPED]:.1f} s
  (**{s['fp32'] / s[SHIPPED]:.2f}x**); model.onnx {mb['fp32']:.0f} MB vs {mb[SHIPPED]:.0f} MB
- model calls, all heads, int8 / fp32 throughput: {speed(SHIPPED)} (bar: >= 1.5x)
- `--quantize int8-smoothquant` ({FAST}): lowest label agreement **{res['worst'][FAST]:.2%}**; all dev sets
  {s[FAST]:.1f} s (**{s['fp32'] / s[FAST]:.2f}x**); model calls {speed(FAST)}; model.onnx {mb[FAST]:.0f} MB

Every variant measured (agreement with fp32's labels on every dev set; model-call throughput, medians of
{args.rounds} rounds, contenders taking turns call by call). Meeting both bars (>= 99% of every dev set's
labels, 99.9% of tagged words, >= 1.5x fp32 at batch 32 and 1): {meeting(res)}.

{chr(10).join(variants_table(res))}

`--quantize int8` ({SHIPPED}) per dev set:

{per_task(SHIPPED)}

`--quantize int8-smoothquant` ({FAST}) per dev set:

{per_task(FAST)}
""")
    body = f"""## int8 against fp32: label agreement on every dev set, and speed (issues 5 and 18)

- command: `python benchmarks/int8_agreement.py --run-dir {' '.join(args.run_dir)}`
- machine: {machine()}; onnxruntime with 1 thread per session
- date: {today()}
- each run's fp32 ONNX bundle and its int8 bundles, all run by onnxruntime over each task's whole dev set;
  the dev-set times of fp32 and the two shipped int8 schemes medians of {args.rounds} rounds, contenders alternating.
  `--quantize int8` (`blocks`): onnxruntime's 8-bit blocks of 32 (weights and activations), feed-forward
  output projections fp32. `--quantize int8-smoothquant`: SmoothQuant (alpha {smoothquant.DEFAULT_ALPHA}, scales
  from up to {smoothquant.CALIBRATION_EXAMPLES} training inputs per task) and onnxruntime's per-tensor dynamic int8
  of the encoder layers' projections. `dynamic`: the same per-tensor int8 without smoothing
- throughput: {THROUGHPUT_TEXTS} dev texts of all tasks (each example's first text), encoded as `predict_all`
  encodes them, model calls only (every head), batches of 32 texts of similar length and of 1 text

{chr(10).join(parts)}"""
    write_section("int8_agreement", body)
    print(body)


if __name__ == "__main__":
    main()
