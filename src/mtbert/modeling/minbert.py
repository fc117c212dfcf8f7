"""minBERT: BERT written out in the paper's parts, one readable file.

    embeddings -> N x (self-attention -> add & norm -> feed-forward -> add & norm) -> pooler

It reads and writes Hugging Face BERT checkpoints (config.json + model.safetensors) by mapping
parameter names, so any BERT checkpoint (the packaged MiniLM included) loads here, and a run trained
with `backbone_impl: minbert` loads with `backbone_impl: hf` and back. In fp32 eval mode its outputs
equal transformers' BertModel within 1e-5 (tests/test_minbert.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn


@dataclass
class MinBertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, path: Path) -> MinBertConfig:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if raw.get("model_type", "bert") != "bert":
            raise ValueError(f"minbert reads BERT checkpoints; {path} is a '{raw.get('model_type')}' model")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"minbert implements the gelu activation; {path} uses {raw['hidden_act']}")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def to_hf_json(self) -> dict:
        return {"model_type": "bert", "architectures": ["BertModel"], **self.__dict__}


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


class Embeddings(nn.Module):
    """Sum of word, position and token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, c: MinBertConfig):
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None] + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention; padded keys are masked out."""

    def __init__(self, c: MinBertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.head_dim = c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = c.attention_probs_dropout_prob

    def split_heads(self, x):  # (B, L, H) -> (B, heads, L, head_dim)
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, key_mask):
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(x.shape)


class Layer(nn.Module):
    """One transformer block: attention and feed-forward, each with a residual connection and post-LayerNorm."""

    def __init__(self, c: MinBertConfig):
        super().__init__()
        self.attention = SelfAttention(c)
        self.attention_out = nn.Linear(c.hidden_size, c.hidden_size)
        self.attention_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ffn_in = nn.Linear(c.hidden_size, c.intermediate_size)
        self.ffn_out = nn.Linear(c.intermediate_size, c.hidden_size)
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, key_mask):
        x = self.attention_norm(x + self.dropout(self.attention_out(self.attention(x, key_mask))))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): BERT's next-sentence-prediction pooler."""

    def __init__(self, c: MinBertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class MinBert(nn.Module):
    def __init__(self, config: MinBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=True) -> EncoderOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        # (B, 1, 1, L) boolean: True where a key may be attended to
        key_mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, key_mask)
        return EncoderOutput(last_hidden_state=x, pooler_output=self.pooler(x))

    # ----------------------------------------------------- Hugging Face checkpoints

    @staticmethod
    def hf_names(num_layers: int) -> dict[str, str]:
        """minbert parameter name -> Hugging Face BertModel parameter name."""
        names = {
            "embeddings.word.weight": "embeddings.word_embeddings.weight",
            "embeddings.position.weight": "embeddings.position_embeddings.weight",
            "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
            "embeddings.norm.weight": "embeddings.LayerNorm.weight",
            "embeddings.norm.bias": "embeddings.LayerNorm.bias",
            "pooler.dense.weight": "pooler.dense.weight",
            "pooler.dense.bias": "pooler.dense.bias",
        }
        per_layer = {
            "attention.query": "attention.self.query", "attention.key": "attention.self.key",
            "attention.value": "attention.self.value", "attention_out": "attention.output.dense",
            "attention_norm": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
            "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm",
        }
        for i in range(num_layers):
            for ours, theirs in per_layer.items():
                for p in ("weight", "bias"):
                    names[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        return names

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MinBert:
        path = Path(path)
        model = cls(MinBertConfig.from_json(path / "config.json"))
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: minbert loads safetensors checkpoints only")
        state = load_file(weights)
        # checkpoints saved from BertFor* models prefix the encoder with "bert."
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        mapping = cls.hf_names(model.config.num_hidden_layers)
        missing = [theirs for theirs in mapping.values() if theirs not in state and not theirs.startswith("pooler.")]
        if missing:
            raise ValueError(f"{weights} is not a BERT checkpoint: missing {', '.join(missing[:5])}")
        ours = {mine: state[theirs] for mine, theirs in mapping.items() if theirs in state}
        model.load_state_dict(ours, strict=False)  # a checkpoint without a pooler keeps the initialised one
        return model

    def save_pretrained(self, path: str | Path, **_) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        mapping = self.hf_names(self.config.num_hidden_layers)
        state = {mapping[k]: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, path / "model.safetensors", metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(self.config.to_hf_json(), indent=2), encoding="utf-8")
