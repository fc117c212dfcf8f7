"""Predictor: a trained run dir -> labels (and probabilities) for new inputs, from Python or the CLI."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from mtbert.data.features import encode
from mtbert.evaluation.evaluate import predict_tasks
from mtbert.inference.common import PredictorBase
from mtbert.modeling.precision import autocast, resolve_device, resolve_precision
from mtbert.rundir import load_model


class Predictor(PredictorBase):
    """The PyTorch engine. `backbone_impl` loads the encoder with another implementation than it was
    trained with (hf <-> minbert)."""

    engine = "torch"

    def __init__(self, run_dir: str | Path, precision: str = "auto", batch_size: int = 64,
                 backbone_impl: str | None = None, device: str = "auto"):
        self.cfg, self.model, self.tokenizer, self.labels = load_model(run_dir, backbone_impl)
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.batch_size = batch_size
        self.amp = partial(autocast, resolve_precision(precision, self.device), self.device)

    def _predict(self, tasks, examples, encode_as, max_length, pair_encoding, stride=None, stitched=()):
        feats = encode(encode_as, examples, self.tokenizer, max_length, with_labels=False, pair_encoding=pair_encoding,
                       stride=stride)
        return predict_tasks(self.model, tasks, feats, self.batch_size, self.tokenizer.pad_token_id or 0,
                             self.labels, self.amp, stitched=stitched)
