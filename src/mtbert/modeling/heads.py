"""One small head per task type. A head reads the shared encoder's output and owns its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtbert.data.features import IGNORE


def pool(kind: str, hidden: torch.Tensor, pooler_output: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    if kind == "pooler":
        if pooler_output is None:
            raise ValueError("pooling 'pooler' needs an encoder with a pooler layer")
        return pooler_output
    if kind == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    return hidden[:, 0]


class Head(nn.Module):
    def __init__(self, hidden_size: int, num_outputs: int, pooling: str = "cls", dropout: float = 0.1):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_outputs)

    def pooled(self, hidden, pooler_output, mask):
        return self.dropout(pool(self.pooling, hidden, pooler_output, mask))


class ClassificationHead(Head):
    def __init__(self, hidden_size, num_labels, pooling="cls", dropout=0.1, class_weights=None):
        super().__init__(hidden_size, num_labels, pooling, dropout)
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float))

    def forward(self, hidden, pooler_output, mask):
        return self.out(self.pooled(hidden, pooler_output, mask))

    def loss(self, logits, labels):
        return F.cross_entropy(logits.float(), labels, weight=self.class_weights)


class RegressionHead(Head):
    def __init__(self, hidden_size, pooling="cls", dropout=0.1):
        super().__init__(hidden_size, 1, pooling, dropout)

    def forward(self, hidden, pooler_output, mask):
        return self.out(self.pooled(hidden, pooler_output, mask)).squeeze(-1)

    def loss(self, scores, labels):
        return F.mse_loss(scores.float(), labels)


class MultipleChoiceHead(Head):
    """Scores each (context, choice) sequence; softmax over the choices of an example."""

    def __init__(self, hidden_size, pooling="cls", dropout=0.1):
        super().__init__(hidden_size, 1, pooling, dropout)

    def forward(self, hidden, pooler_output, mask, num_choices: int):
        return self.out(self.pooled(hidden, pooler_output, mask)).view(-1, num_choices)

    def loss(self, logits, labels):
        return F.cross_entropy(logits.float(), labels)


class SequenceLabelingHead(Head):
    def __init__(self, hidden_size, num_labels, dropout=0.1):
        super().__init__(hidden_size, num_labels, "cls", dropout)

    def forward(self, hidden, pooler_output, mask):
        return self.out(self.dropout(hidden))

    def loss(self, logits, labels):
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def build_head(task, hidden_size: int, labels: list[str] | None, class_weights=None) -> Head:
    """`task` is a TaskConfig; `labels` the task's label vocabulary (classification, sequence labeling)."""
    if task.type == "classification":
        return ClassificationHead(hidden_size, len(labels), task.pooling, task.dropout, class_weights)
    if task.type == "regression":
        return RegressionHead(hidden_size, task.pooling, task.dropout)
    if task.type == "multiple_choice":
        return MultipleChoiceHead(hidden_size, task.pooling, task.dropout)
    return SequenceLabelingHead(hidden_size, len(labels), task.dropout)
