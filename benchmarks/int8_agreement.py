"""How much int8 changes a trained model's answers: the run dir exported twice (fp32, and int8 with
`mtbert export --quantize int8`), both ONNX bundles run over every task's dev set, side by side.

Per task: how often int8 gives fp32's label (the class, the choice, or each word's tag), the dev metric of
each, the largest change in a regression score; and the time each bundle took for all the dev sets.

    python benchmarks/int8_agreement.py --run-dir RUN_DIR [RUN_DIR ...] [--data-dir ../shared/data]

Several run dirs (e.g. two trainings of one config) show whether agreement holds beyond one model.

Writes the 'int8_agreement' section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

from mtbert.data.readers import read_split  # noqa: E402
from mtbert.evaluation.evaluate import score_task  # noqa: E402
from mtbert.inference.export import export_onnx  # noqa: E402
from mtbert.inference.onnx_predictor import OnnxPredictor  # noqa: E402


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


def compare(run_dir: str, data_dir: str) -> tuple[list[str], float, dict, dict]:
    """One run dir: its table rows, lowest label agreement, seconds per bundle and model.onnx sizes (MB)."""
    out = Path(tempfile.mkdtemp(prefix="mtbert-int8-"))
    bundles = {"fp32": export_onnx(run_dir, out / "fp32"), "int8": export_onnx(run_dir, out / "int8", "int8")}
    engines = {name: OnnxPredictor(path) for name, path in bundles.items()}
    cfg = engines["fp32"].cfg.model_copy(update={"data_dir": data_dir})
    seconds = dict.fromkeys(engines, 0.0)
    rows = ["| task | type | labels compared | int8 agrees with fp32 | fp32 top probability where int8 differs: "
            "max / median | metric | fp32 | int8 |", "|---|---|---|---|---|---|---|---|"]
    worst = 1.0
    for task, spec in cfg.tasks.items():
        if not spec.dev:
            continue
        examples = read_split(cfg, task, "dev")
        preds = {}
        for name, engine in engines.items():
            start = time.perf_counter()
            preds[name] = engine.predict_examples(task, examples)
            seconds[name] += time.perf_counter() - start
        labels = engines["fp32"].labels.get(task)
        metric = spec.metrics[0]
        scores = {n: score_task(spec.type, [metric], examples, p, labels)[metric] for n, p in preds.items()}
        if spec.type == "regression":
            diff = np.abs(np.array(preds["fp32"].labels, dtype=float) - np.array(preds["int8"].labels, dtype=float))
            agree = f"(largest score change {diff.max():.3f})"
            compared, sure = str(len(examples)), ""
        else:
            share, n = agreement(spec.type, preds["fp32"], preds["int8"])
            worst = min(worst, share)
            agree, compared = f"**{share:.2%}**", f"{n} ({'words' if spec.type == 'sequence_labeling' else 'examples'})"
            sure = "" if spec.type == "sequence_labeling" else flipped_confidence(preds["fp32"], preds["int8"])
        rows.append(f"| {task} | {spec.type} | {compared} | {agree} | {sure} | {metric} | {scores['fp32']:.4f} | "
                    f"{scores['int8']:.4f} |")
        print(rows[-1], flush=True)
    sizes = {n: (p / "model.onnx").stat().st_size / 2**20 for n, p in bundles.items()}
    return rows, worst, seconds, sizes


def kernel_speed() -> list[str]:
    """One MatMul of MiniLM's shapes, alone in onnxruntime (2 threads): fp32, per-tensor dynamic int8 (what
    `quantize_dynamic` makes) and 8-bit blocks with int8 compute (what the export makes); GFLOP/s."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mtbert.inference.export import _quantize_int8

    rows = ["| MatMul (rows x in -> out) | fp32 | per-tensor dynamic int8 | 8-bit blocks of 32, int8 compute |",
            "|---|---|---|---|"]
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="mtbert-kernels-"))
    for k, n in ((384, 1536), (384, 384)):
        weight = numpy_helper.from_array((rng.normal(size=(k, n)) * 0.05).astype(np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/encoder/layer.0/q/MatMul")],
                                  "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        onnx.save(model, str(tmp / "fp32.onnx"))
        quantize_dynamic(str(tmp / "fp32.onnx"), str(tmp / "dynamic.onnx"), weight_type=QuantType.QInt8, per_channel=True)
        _quantize_int8(tmp / "fp32.onnx", tmp / "blocks.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        sessions = [ort.InferenceSession(str(tmp / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
                    for name in ("fp32", "dynamic", "blocks")]
        for m in (32, 512):
            x = rng.normal(size=(m, k)).astype(np.float32)
            cells = []
            for session in sessions:
                session.run(None, {"x": x})
                calls, start = 0, time.perf_counter()
                while time.perf_counter() - start < 1.0:
                    session.run(None, {"x": x})
                    calls += 1
                cells.append(2 * m * k * n * calls / (time.perf_counter() - start) / 1e9)
            rows.append(f"| {m} x {k} -> {n} | " + " | ".join(f"{c:.0f} GFLOP/s ({c / cells[0]:.2f}x)" for c in cells) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True, nargs="+")
    ap.add_argument("--data-dir", default=os.environ.get("MTBERT_DATA", "../shared/data"))
    args = ap.parse_args()
    parts = []
    for run_dir in args.run_dir:
        rows, worst, seconds, sizes = compare(run_dir, args.data_dir)
        parts.append(f"""### {run_dir}

- lowest label agreement over the classification, multiple-choice and tagging tasks: **{worst:.2%}** (bar: >= 99%)
- time for all dev sets: fp32 {seconds['fp32']:.1f} s, int8 {seconds['int8']:.1f} s
  (**{seconds['fp32'] / seconds['int8']:.2f}x**); model.onnx {sizes['fp32']:.0f} MB vs {sizes['int8']:.0f} MB

{chr(10).join(rows)}
""")
    kernels = kernel_speed()
    body = f"""## int8 against fp32: label agreement on every dev set (issue 5)

- command: `python benchmarks/int8_agreement.py --run-dir {' '.join(args.run_dir)}`
- machine: {machine()}
- date: {today()}
- each run's fp32 ONNX bundle and its int8 bundle (`mtbert export --quantize int8`: onnxruntime's
  block-wise int8 MatMuls, weights and activations with a scale per 32 values; each layer's feed-forward
  output projection and the word embeddings kept in fp32), both run by onnxruntime over each task's
  whole dev set

{chr(10).join(parts)}
### Why int8 is not faster here: one MatMul alone

{chr(10).join(kernels)}
"""
    write_section("int8_agreement", body)
    print(body)


if __name__ == "__main__":
    main()
