"""Other systems' configs in mtbert: DeepPavlov's multitask configs (see docs/deeppavlov.md)."""

from mtbert.compat.deeppavlov import build_model, convert, is_deeppavlov_config, predict_deeppavlov

__all__ = ["build_model", "convert", "is_deeppavlov_config", "predict_deeppavlov"]
