"""Pick a prediction engine by name. Imports happen here, on demand, so choosing `onnx` never loads torch."""

from __future__ import annotations

from pathlib import Path

from mtbert.errors import UserError

ENGINES = ("torch", "onnx")


def load_predictor(path: str | Path, engine: str = "torch", batch_size: int = 64, precision: str = "auto"):
    """`torch`: `Predictor` on a run dir. `onnx`: `OnnxPredictor` on an exported bundle (or on a run dir
    with one in `onnx/`). Both answer `predict`, `predict_all`, `tasks`, `cfg` and `labels` alike.
    `precision` is the torch engine's, 'auto' the run's own (an ONNX bundle is fp32 or int8 as exported)."""
    if engine == "torch":
        from mtbert.inference.predictor import Predictor

        return Predictor(path, batch_size=batch_size, precision=precision)
    if engine == "onnx":
        if precision != "auto":
            raise UserError(f"--precision {precision}: the onnx engine runs the bundle as exported (fp32 or int8); "
                            "drop --precision, or use --engine torch")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("engine onnx needs onnxruntime: pip install 'mtbert[serve]'") from None
        from mtbert.inference.onnx_predictor import OnnxPredictor

        return OnnxPredictor(path, batch_size=batch_size)
    raise UserError(f"engine '{engine}': use one of {', '.join(ENGINES)}")
