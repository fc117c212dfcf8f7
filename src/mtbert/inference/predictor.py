"""Predictor: a trained run dir -> labels (and probabilities) for new inputs, from Python or the CLI."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from mtbert.data.features import encode
from mtbert.evaluation.evaluate import evaluate_split, predict_tasks
from mtbert.inference.common import PredictorBase
from mtbert.modeling.precision import autocast, inference_precision, resolve_device
from mtbert.rundir import load_model, recorded_precision


class Predictor(PredictorBase):
    """The PyTorch engine. `precision` 'auto' is the one the run's dev scores were computed with in training
    (see `modeling.precision.inference_precision`); fp32, bf16 or fp16 choose. `backbone_impl` loads the
    encoder with another implementation than it was trained with (hf <-> minbert)."""

    engine = "torch"

    def __init__(self, run_dir: str | Path, precision: str = "auto", batch_size: int = 64,
                 backbone_impl: str | None = None, device: str = "auto"):
        self.cfg, self.model, self.tokenizer, self.labels = load_model(run_dir, backbone_impl)
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.batch_size = batch_size
        self.precision = inference_precision(precision, recorded_precision(run_dir, self.cfg), self.device)
        self.amp = partial(autocast, self.precision, self.device)

    def _predict(self, tasks, examples, encode_as, max_length, pair_encoding, stride=None, stitched=()):
        feats = encode(encode_as, examples, self.tokenizer, max_length, with_labels=False, pair_encoding=pair_encoding,
                       stride=stride)
        return predict_tasks(self.model, tasks, feats, self.batch_size, self.tokenizer.pad_token_id or 0,
                             self.labels, self.amp, stitched=stitched)


def evaluate_run(run_dir, split: str = "dev", precision: str = "auto") -> tuple[dict, dict, str]:
    """Score a saved run on a split of its config's data as `mtbert evaluate` does: ({task: {metric: value}},
    {task: primary metric}, the precision it ran in). Tasks without that split are skipped; custom
    `module:function` metrics named by the run are not run."""
    predictor = Predictor(run_dir, precision=precision)
    tasks = [n for n in predictor.cfg.tasks if getattr(predictor.cfg.tasks[n], split) is not None]
    scores, primary = evaluate_split(predictor, split, tasks, {}, False)
    return scores, primary, predictor.precision
