"""OnnxPredictor: `Predictor`'s interface on an exported ONNX bundle, run by onnxruntime.

Nothing on this path imports torch or transformers: the tokenizer is the `tokenizers` library's, set up
as transformers sets it (special tokens, `longest_first` truncation, no padding), and batches are
padded with numpy. See `inference/export.py` for the bundle's layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtbert.data.bucketing import length_batches
from mtbert.data.encoding import Feature, TokenizersTokens
from mtbert.errors import UserError
from mtbert.inference.common import PredictorBase, decode_rows
from mtbert.runfiles import BUNDLE_FIX, read_json, read_labels, read_saved_config
from mtbert.tasks import registry

FORMAT = "mtbert-onnx/1"  # manifest.json's "format", as inference/export.py writes it


def find_bundle(path: str | Path) -> Path:
    """An ONNX bundle folder, or a run dir holding one in `onnx/`."""
    path = Path(path)
    for candidate in (path, path / "onnx"):
        if (candidate / "model.onnx").is_file() and (candidate / "manifest.json").is_file():
            return candidate
    if not path.exists():
        raise UserError(f"{path}: no such directory")
    raise UserError(f"{path}: holds no ONNX model (model.onnx and manifest.json); export one with: "
                    f"mtbert export {path} --format onnx")


def read_manifest(file: Path) -> dict:
    manifest = read_json(file, BUNDLE_FIX)
    if manifest.get("format") != FORMAT:
        raise UserError(f"{file}: format {manifest.get('format')!r} is not {FORMAT!r}, the bundles this mtbert "
                        f"reads; {BUNDLE_FIX}")
    pad = manifest.get("pad_token_id", 0)
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise UserError(f"{file}: pad_token_id {pad!r} is not a token id; {BUNDLE_FIX}")
    return manifest


def _read_tokenizer(file: Path, tokenizer_class) -> str:
    if not file.is_file():
        raise UserError(f"{file}: missing; {BUNDLE_FIX}")
    try:
        return tokenizer_class.from_file(str(file)).to_str()
    except Exception as err:  # the tokenizers library raises a bare Exception for a file it cannot parse
        raise UserError(f"{file}: not a tokenizer the tokenizers library reads ({err}); {BUNDLE_FIX}") from None


def _session(file: Path, options):
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail, ort_errors.NoSuchFile,
            ort_errors.InvalidArgument, ort_errors.NotImplemented) as err:  # a cut-off or foreign model.onnx
        reason = str(err).split(" : ")[-1].splitlines()[0]
        raise UserError(f"{file}: onnxruntime cannot load it ({reason}); {BUNDLE_FIX}") from None


class OnnxPredictor(PredictorBase):
    engine = "onnx"

    def __init__(self, path: str | Path, batch_size: int = 64, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = find_bundle(path)
        self.manifest = read_manifest(self.path / "manifest.json")
        # the bundle's config names custom metrics by reference only: loading it never imports them
        self.cfg = read_saved_config(self.path / "config.yaml", BUNDLE_FIX)
        self.labels = read_labels(self.path / "labels.json", self.cfg, BUNDLE_FIX)
        self.batch_size = batch_size
        self.pad_id = self.manifest.get("pad_token_id", 0)
        self._tokenizer_json = _read_tokenizer(self.path / "tokenizer.json", Tokenizer)
        self._tokenizers: dict[int, Tokenizer] = {}
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # onnxruntime's threads spin after each run by default, waiting for the next; in a server the
        # cores are shared with the event loop, HTTP parsing and tokenising, which the spinning starves
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = _session(self.path / "model.onnx", options)
        self.outputs = [o.name for o in self.session.get_outputs()]
        # the graph's own inputs: token_type_ids only for an encoder that reads them (export.graph_inputs)
        self.inputs = [i.name for i in self.session.get_inputs()]
        missing = [t for t in self.cfg.tasks if t not in self.outputs]
        if missing:
            raise UserError(f"{self.path}: model.onnx has no output for task(s) {', '.join(missing)}; export it again")
        self._check_label_counts()

    def _check_label_counts(self) -> None:
        """A labelled task's output has one column per label: labels.json from another export would name
        the wrong classes without a word."""
        for out in self.session.get_outputs():
            task = self.cfg.tasks.get(out.name)
            width = out.shape[-1] if out.shape else None
            if task is None or not registry.get(task.type).label_names or not isinstance(width, int):
                continue
            if len(self.labels[out.name]) != width:
                raise UserError(f"{self.path / 'labels.json'}: task '{out.name}' lists {len(self.labels[out.name])} "
                                f"labels, but model.onnx gives {width} per input; {BUNDLE_FIX}")

    # --- tokenisation
    def _tokenizer(self, max_length: int, stride: int = 0):
        """A tokenizer per truncation length and window stride: its settings are state, so tasks with
        different max_length never share (or race on) one."""
        tok = self._tokenizers.get((max_length, stride))
        if tok is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._tokenizer_json)
            tok.no_padding()
            tok.enable_truncation(max_length, stride=stride, strategy="longest_first")
            self._tokenizers[(max_length, stride)] = tok
        return tok

    def _encode(self, task_type: str, examples, max_length: int, pair_encoding: str = "cross",
                stride: int | None = None) -> list[Feature]:
        """The task type's encoding (data/encoding.py), the torch engine's, by the tokenizers library."""
        return registry.get(task_type).encode(examples, TokenizersTokens(self._tokenizer), max_length,
                                              with_labels=False, pair_encoding=pair_encoding, stride=stride)

    # --- running the graph
    def _feed(self, feats: list[Feature]) -> dict[str, np.ndarray]:
        grouped = feats[0].grouped  # the graph takes (batch, group, sequence): one sequence is a group of one
        groups, width = len(feats[0].input_ids) if grouped else 1, max(f.length for f in feats)
        ids = np.full((len(feats), groups, width), self.pad_id, dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for i, f in enumerate(feats):
            rows = zip(f.input_ids, f.token_type_ids, strict=True) if grouped else [(f.input_ids, f.token_type_ids)]
            for g, (row, trow) in enumerate(rows):
                ids[i, g, :len(row)] = row
                types[i, g, :len(row)] = trow
                mask[i, g, :len(row)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: feed[name] for name in self.inputs}

    def _run(self, tasks: list[str], feats: list[Feature]) -> dict[str, list[np.ndarray]]:
        """Every task's output per input, in input order; batches sorted and cut by length (less padding)."""
        outputs: dict[str, list] = {t: [None] * len(feats) for t in tasks}
        for idx in length_batches([f.length for f in feats], self.batch_size):
            got = self.session.run(tasks, self._feed([feats[i] for i in idx]))
            for task, out in zip(tasks, got, strict=True):
                for i, row in zip(idx, out, strict=True):
                    outputs[task][i] = row
        return outputs

    def _predict(self, tasks, examples, encode_as, max_length, pair_encoding, stride=None, stitched=()):
        feats = self._encode(encode_as, examples, max_length, pair_encoding, stride)
        outs = self._run(tasks, feats)
        return {t: decode_rows(self.cfg.tasks[t], outs[t], feats, self.labels.get(t), t in stitched)
                for t in tasks}
