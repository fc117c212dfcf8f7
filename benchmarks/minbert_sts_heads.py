"""Why the minBERT report's similarity head lags on MiniLM: single-task SemEval STS from
configs/minbert_report.yaml (each sentence encoded alone, the report's lr 1e-5), trained with three heads,
each with two seeds, and MiniLM's own sentence embeddings scored with no training at all.

    python benchmarks/minbert_sts_heads.py --run-dir runs/sts-heads [--seeds 11711,42] [--epochs 2]

Heads: `report` (CLS of each sentence, [u; v], linear, ReLU: the report's), `mean` (mean-pooled, [u; v]),
`sbert` (mean-pooled, [u; v; |u - v|; u * v]: Sentence-BERT's classifier input), `cosine` (mean-pooled, score
= 5 x cos(u, v): how all-MiniLM-L6-v2 was trained to compare sentences).
Finished runs in --run-dir are reused, so two calls with one seed each can train side by side and a third
with both seeds writes the table. Writes the section 'minbert_sts_heads' of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, train_once, write_section  # noqa: E402

import mtbert  # noqa: E402
from mtbert.config import finish, load_raw  # noqa: E402
from mtbert.data.readers import read_split  # noqa: E402
from mtbert.modeling.encoder import load_tokenizer, resolve_backbone  # noqa: E402
from mtbert.modeling.heads import pool  # noqa: E402

HEADS = {"report": {"pooling": "cls", "pair_combine": "concat", "output_activation": "relu"},
         "mean": {"pooling": "mean", "pair_combine": "concat", "output_activation": "relu"},
         "sbert": {"pooling": "mean", "pair_combine": "sbert", "output_activation": "relu"},
         "cosine": {"pooling": "mean", "pair_combine": "cosine", "output_activation": "none"}}

PAIRS = {"concat": "[u; v], linear", "sbert": "[u; v; \\|u-v\\|; u*v], linear", "cosine": "5 x cos(u, v)"}


def zero_shot(cfg, task: str) -> float:
    """Pearson of MiniLM's mean-pooled cosine on dev, before any training (the model as packaged)."""
    from transformers import AutoModel

    tok = load_tokenizer(cfg.backbone)
    model = AutoModel.from_pretrained(resolve_backbone(cfg.backbone)).eval()
    dev = read_split(cfg, task, "dev")
    cos = []
    with torch.no_grad():
        for i in range(0, len(dev), 64):
            chunk = dev[i:i + 64]
            vecs = []
            for texts in ([e.text for e in chunk], [e.text_pair for e in chunk]):
                enc = tok(texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
                vecs.append(pool("mean", model(**enc).last_hidden_state, None, enc["attention_mask"]))
            cos += torch.nn.functional.cosine_similarity(*vecs, dim=-1).tolist()
    return float(pearsonr(cos, [float(e.label) for e in dev])[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/minbert_report.yaml")
    ap.add_argument("--task", default="sts")
    ap.add_argument("--seeds", default="11711,42")
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--run-dir", required=True)
    args = ap.parse_args()
    base = load_raw(args.config, [])
    start = time.time()
    rows = {}
    for head, keys in HEADS.items():
        for seed in [int(s) for s in args.seeds.split(",")]:
            raw = copy.deepcopy(base)
            raw["tasks"] = {args.task: {**raw["tasks"][args.task], **keys}}  # load_raw applied task_defaults
            raw["seed"] = seed
            raw.setdefault("training", {}).update(threads=1, progress=False, epochs=args.epochs)
            run = Path(args.run_dir) / f"{head}-{seed}"
            train_once(raw, args.config, run)
            rows.setdefault(head, []).append((seed, mtbert.evaluate(run)[args.task]["pearson"]))
    cfg = finish(copy.deepcopy(base), args.config)
    untrained = zero_shot(cfg, args.task)
    lines = ["| head | pooling | pair | seeds | dev Pearson per seed | mean ± half range |", "|---|---|---|---|---|---|"]
    for head, runs in rows.items():
        k = HEADS[head]
        scores = [p for _, p in runs]
        lines.append(f"| {head} | {k['pooling']} | {PAIRS[k['pair_combine']]} | "
                     f"{', '.join(str(s) for s, _ in runs)} | {', '.join(f'{p:.3f}' for p in scores)} | "
                     f"**{np.mean(scores):.3f} ± {np.ptp(scores) / 2:.3f}** |")
    lines.append(f"| MiniLM as packaged, no training | mean | cos(u, v) | - | {untrained:.3f} | |")
    body = f"""## minBERT's similarity head on MiniLM: why the report's heads lag (issue 15)

- command: `python benchmarks/minbert_sts_heads.py --config {args.config} --seeds {args.seeds} --epochs {args.epochs:g} --run-dir {args.run_dir}`
- machine: {machine()}; one thread per run
- date: {today()}; this call took {(time.time() - start) / 60:.0f} min (runs finished earlier are reused)

Single-task SemEval STS ({args.config}'s `{args.task}` task alone: each sentence encoded apart, lr
{cfg.training.lr:g}, batch {cfg.batch_size(args.task)}, {args.epochs:g} epochs), dev Pearson of the saved model through `mtbert.evaluate`.

{chr(10).join(lines)}
"""
    write_section("minbert_sts_heads", body)
    print(body)


if __name__ == "__main__":
    main()
