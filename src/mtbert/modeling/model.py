"""MultiTaskModel: one shared encoder, one head per task."""

from __future__ import annotations

import torch
from torch import nn

from mtbert.modeling.heads import build_head


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], task_types: dict[str, str]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.task_types = dict(task_types)

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           return_dict=True)
        return out.last_hidden_state, getattr(out, "pooler_output", None)

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_heads([task], batch)[task]

    def forward_heads(self, tasks: list[str], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One encoder pass, every head in `tasks` on its output (they must take the same kind of input)."""
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        groups = 1
        if ids.dim() == 3:
            # grouped sequences (choices, or separately encoded pairs): one encoder pass over all of them
            groups = ids.shape[1]
            flat = lambda t: None if t is None else t.reshape(-1, t.shape[-1])  # noqa: E731
            ids, mask, types = flat(ids), flat(mask), flat(types)
        hidden, pooled = self.encode(ids, mask, types)
        return {task: self.heads[task](hidden, pooled, mask, groups) for task in tasks}

    def loss(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.heads[task].loss(self(task, batch), batch["labels"])


def build_model(tasks: dict, encoder: nn.Module, labels: dict[str, list[str] | None],
                head_options: dict[str, dict] | None = None) -> MultiTaskModel:
    """The one model factory: `encoder` and a head per task of `tasks` (the config's TaskConfigs), used by
    training (training.trainer.model_for_training adds what only training needs) and by loading a run dir
    (rundir.load_model, whose saved weights then replace the initial ones). `head_options`: per task, what
    the training data sets in its head (build_head's class_weights, target_mean, tokens_per_example);
    none when loading."""
    hidden = encoder.config.hidden_size
    options = head_options or {}
    heads = {name: build_head(task, hidden, labels.get(name), **options.get(name, {})) for name, task in tasks.items()}
    return MultiTaskModel(encoder, heads, {name: task.type for name, task in tasks.items()})
