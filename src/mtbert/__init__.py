"""mtbert: one shared BERT-family encoder, a small head per task, trained together from one config."""

from mtbert.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
