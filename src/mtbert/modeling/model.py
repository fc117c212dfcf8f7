"""MultiTaskModel: one shared encoder, one head per task."""

from __future__ import annotations

import torch
from torch import nn

# encoders whose transformers code builds the SDPA mask with create_bidirectional_mask, which asks
# padding_mask.all() (to drop a mask that pads nothing): on a GPU a host sync in every forward. A ready
# 4D boolean mask (True = attend) it passes through untouched. ModernBERT is not here: its sliding-window
# layers build their own mask from the 2D one.
READY_MASK_FAMILIES = ("bert", "roberta", "electra", "distilbert")


def sdpa_ready_mask(config, attention_mask: torch.Tensor) -> torch.Tensor:
    """`attention_mask` as the 4D boolean mask SDPA takes, for the families above under SDPA; as it is for
    the others (eager attention adds its mask, so a boolean one would be wrong there)."""
    if (getattr(config, "model_type", None) in READY_MASK_FAMILIES
            and getattr(config, "_attn_implementation", None) == "sdpa"):
        return attention_mask.bool()[:, None, None, :]
    return attention_mask


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], tasks: dict):
        """`tasks`: {task: its config (anything with `.type`, e.g. a TaskConfig), or its type's name}. The
        configs travel with the model so that decoding its outputs reads the task's settings (a
        multi-label threshold)."""
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.task_types = {t: getattr(spec, "type", spec) for t, spec in tasks.items()}
        self.task_specs = dict(tasks)

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        if input_ids.is_cuda:  # the CPU runs ops as they come: nothing to wait for there
            attention_mask = sdpa_ready_mask(getattr(self.encoder, "config", None), attention_mask)
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
