"""mtbert: one shared BERT-family encoder, a small head per task, trained together from one config."""

from mtbert.errors import InputError, UserError

__version__ = "0.1.0"
__all__ = ["Callback", "InputError", "RunResult", "UserError", "__version__", "evaluate", "load", "train"]
_API = ("Callback", "RunResult", "evaluate", "load", "train")


def __getattr__(name: str):
    # the API on first use: `import mtbert` stays light, and the torch-free ONNX engine (which imports the
    # package) never loads the config and training modules
    if name in _API:
        from mtbert import api

        return getattr(api, name)
    raise AttributeError(f"module 'mtbert' has no attribute {name!r}")
