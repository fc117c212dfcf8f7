"""One small head per task type. A head reads the shared encoder's output and owns its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # a sub-token no loss reads: cross_entropy's ignore_index, as data.encoding labels it


def pool(kind: str, hidden: torch.Tensor, pooler_output: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    if kind in ("pooler", "dp_pooler"):  # dp_pooler is the encoder's pooler, re-initialised (build_model)
        if pooler_output is None:
            raise ValueError(f"pooling '{kind}' needs an encoder with a pooler layer")
        return pooler_output
    if kind == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    return hidden[:, 0]


class Head(nn.Module):
    """Pools the encoder output to one vector per example and maps it to `num_outputs`.

    Inputs come grouped when an example is several sequences (`groups` > 1): the choices of a
    multiple-choice example, or text and text_pair encoded apart (`pair_separate`), whose pooled
    vectors are concatenated, [u; v], as in minBERT's paraphrase and similarity heads.
    """

    def __init__(self, hidden_size: int, num_outputs: int, pooling: str = "cls", dropout: float = 0.1,
                 pair_separate: bool = False, pair_combine: str = "concat", mlp: bool = False):
        super().__init__()
        self.pooling = pooling
        self.pair_separate = pair_separate
        self.pair_combine = pair_combine
        width = {"concat": 2 * hidden_size, "sbert": 4 * hidden_size, "cosine": 1}[pair_combine] if pair_separate \
            else hidden_size
        # head 'mlp': tanh(dense(x)) before dropout and the output layer, BERT's pooler layout (so a BERT
        # export carries it in the pooler's place); a layer only this task's gradient moves
        self.dense = nn.Linear(width, hidden_size) if mlp else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size if mlp else width, num_outputs)

    def hidden_layer(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.dense is None else torch.tanh(self.dense(x))

    def pooled(self, hidden, pooler_output, mask, groups: int = 1):
        x = pool(self.pooling, hidden, pooler_output, mask)
        if self.pair_separate:
            pair = x.reshape(-1, 2, x.shape[-1])
            u, v = pair[:, 0], pair[:, 1]
            if self.pair_combine == "cosine":
                # Sentence-BERT's similarity score: the two vectors' cosine, which a regression head scales to
                # the target range; no dropout on a single number
                return F.cosine_similarity(u.float(), v.float(), dim=-1).unsqueeze(-1)
            # concat: minBERT's [u; v]. sbert: Sentence-BERT's [u; v; |u - v|; u * v], whose interaction
            # terms let a linear layer compare the two texts (with [u; v] alone the score is f(u) + g(v))
            x = torch.cat([u, v] if self.pair_combine == "concat" else [u, v, (u - v).abs(), u * v], dim=-1)
        return self.dropout(self.hidden_layer(x))

    def probas(self, out: torch.Tensor) -> torch.Tensor:
        return torch.softmax(out, dim=-1)

    def outputs(self, out: torch.Tensor) -> torch.Tensor:
        """What the head answers with, for prediction and the ONNX graph: its forward output unless the
        head turns it into probabilities (the task type's `decode` reads this)."""
        return out

    def loss_terms(self, out: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None,
                   gold_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss summed over the batch, and what its mean divides by (examples, gold-class weights or
        labelled tokens). Kept apart so several processes, each holding a shard of one batch, can divide
        their sums by the whole batch's count and get the single-process loss.

        With a teacher's `soft` targets (distillation), the target is gold_weight * gold +
        (1 - gold_weight) * teacher; for cross-entropy, which is linear in its target, that is the same
        mix of the two losses."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None,
             gold_weight: float = 1.0) -> torch.Tensor:
        total, count = self.loss_terms(out, labels, soft, gold_weight)
        return total / count


def _mix(gold: torch.Tensor, teacher, gold_weight: float) -> torch.Tensor:
    """gold_weight * gold + (1 - gold_weight) * teacher, skipping the teacher's term where it weighs 0."""
    if teacher is None or gold_weight >= 1.0:
        return gold
    return gold_weight * gold + (1.0 - gold_weight) * teacher()


def _count(labels: torch.Tensor) -> torch.Tensor:
    return torch.tensor(float(labels.numel()), device=labels.device)


class ClassificationHead(Head):
    """Cross-entropy over the classes, or (`bce`) one logit with a sigmoid and binary cross-entropy."""

    def __init__(self, hidden_size, num_labels, pooling="cls", dropout=0.1, class_weights=None,
                 pair_separate=False, bce=False, pair_combine="concat", mlp=False):
        if bce and num_labels != 2:
            raise ValueError(f"loss 'bce' needs exactly two classes, not {num_labels}")
        super().__init__(hidden_size, 1 if bce else num_labels, pooling, dropout, pair_separate, pair_combine, mlp)
        self.bce = bce
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float))

    def forward(self, hidden, pooler_output, mask, groups=1):
        logits = self.out(self.pooled(hidden, pooler_output, mask, groups))
        return logits.squeeze(-1) if self.bce else logits

    def loss_terms(self, logits, labels, soft=None, gold_weight=1.0):
        if self.bce:
            weight = None if self.class_weights is None else self.class_weights[labels]
            target = labels.float() if soft is None else _mix(labels.float(), lambda: soft[:, 1], gold_weight)
            total = F.binary_cross_entropy_with_logits(logits.float(), target, weight=weight, reduction="sum")
            return total, _count(labels)
        gold = F.cross_entropy(logits.float(), labels, weight=self.class_weights, reduction="sum")
        teacher = None if soft is None else (
            lambda: F.cross_entropy(logits.float(), soft, weight=self.class_weights, reduction="sum"))
        total = _mix(gold, teacher, gold_weight)
        # a weighted mean, as torch's: divided by the weights of the gold classes
        return total, (self.class_weights[labels].sum() if self.class_weights is not None
                       else _count(labels))

    def probas(self, out):
        if self.bce:
            p = torch.sigmoid(out)
            return torch.stack([1 - p, p], dim=-1)
        return torch.softmax(out, dim=-1)

    def outputs(self, out):
        return self.probas(out)


class RegressionHead(Head):
    def __init__(self, hidden_size, pooling="cls", dropout=0.1, pair_separate=False, relu=False,
                 target_mean: float | None = 0.0, pair_combine="concat", target_max: float = 1.0, mlp=False):
        super().__init__(hidden_size, 1, pooling, dropout, pair_separate, pair_combine, mlp)
        self.relu = relu
        if pair_separate and pair_combine == "cosine":
            # score = target_max * cosine, Sentence-BERT's training target (label / max against the cosine)
            # with the scale on the score instead: a scale learned from 1 at the encoder's lr would take
            # hundreds of thousands of steps to reach a 0-5 range
            nn.init.constant_(self.out.weight, target_max)
            nn.init.zeros_(self.out.bias)
        # start at the mean target: faster, and a ReLU output cannot start dead (all zeros, no gradient),
        # the failure the minBERT report saw as a NaN Pearson. None: torch's own draw, as DeepPavlov has it
        elif target_mean is not None:
            nn.init.constant_(self.out.bias, target_mean)

    def forward(self, hidden, pooler_output, mask, groups=1):
        x = self.pooled(hidden, pooler_output, mask, groups)
        # the score in fp32 under bf16/fp16 autocast too: bf16 steps by 0.016 between 2 and 4, so the scores
        # of a whole dev set, close together, could round to one value (and Pearson to 0)
        with torch.autocast(x.device.type, enabled=False):
            score = self.out(x.float()).squeeze(-1)
        return F.relu(score) if self.relu else score

    def loss_terms(self, scores, labels, soft=None, gold_weight=1.0):
        target = labels if soft is None else _mix(labels, lambda: soft, gold_weight)
        return F.mse_loss(scores.float(), target, reduction="sum"), _count(labels)

    def probas(self, out):
        return out


class MultipleChoiceHead(Head):
    """Scores each (context, choice) sequence; softmax over the choices of an example."""

    def __init__(self, hidden_size, pooling="cls", dropout=0.1, mlp=False):
        super().__init__(hidden_size, 1, pooling, dropout, mlp=mlp)

    def forward(self, hidden, pooler_output, mask, groups=1):
        return self.out(self.pooled(hidden, pooler_output, mask)).view(-1, groups)

    def loss_terms(self, logits, labels, soft=None, gold_weight=1.0):
        teacher = None if soft is None else (lambda: F.cross_entropy(logits.float(), soft, reduction="sum"))
        return _mix(F.cross_entropy(logits.float(), labels, reduction="sum"), teacher, gold_weight), _count(labels)

    def outputs(self, out):
        return self.probas(out)


class MultiLabelHead(Head):
    """One logit per label, each its own sigmoid and binary cross-entropy (BCEWithLogits), averaged over
    examples x labels as torch's BCEWithLogitsLoss does."""

    def __init__(self, hidden_size, num_labels, pooling="cls", dropout=0.1, pair_separate=False,
                 pair_combine="concat", mlp=False):
        super().__init__(hidden_size, num_labels, pooling, dropout, pair_separate, pair_combine, mlp)

    def forward(self, hidden, pooler_output, mask, groups=1):
        return self.out(self.pooled(hidden, pooler_output, mask, groups))

    def loss_terms(self, logits, labels, soft=None, gold_weight=1.0):
        # binary cross-entropy is linear in its target, so a teacher's probabilities mix into it
        target = labels.float() if soft is None else _mix(labels.float(), lambda: soft, gold_weight)
        return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum"), _count(labels)

    def probas(self, out):
        return torch.sigmoid(out)

    def outputs(self, out):
        return self.probas(out)


class SequenceLabelingHead(Head):
    """Token cross-entropy. With `tokens_per_example` (the training set's mean labelled tokens per
    example) the batch's sum is divided by its examples times that mean rather than by its own token
    count, so every token weighs the same whichever batch it lands in: in length-grouped batches a
    batch of short lines would otherwise give each of its tokens several times the weight of a token
    in a batch of long ones (that way, grouping cost CoNLL-2003 0.012 F1 after one epoch; this way
    0.008, and after three epochs nothing, benchmarks/quality_grouping.py)."""

    def __init__(self, hidden_size, num_labels, dropout=0.1, tokens_per_example: float | None = None, mlp=False):
        super().__init__(hidden_size, num_labels, "cls", dropout, mlp=mlp)
        self.tokens_per_example = tokens_per_example

    def forward(self, hidden, pooler_output, mask, groups=1):
        return self.out(self.dropout(self.hidden_layer(hidden)))

    def loss_terms(self, logits, labels, soft=None, gold_weight=1.0):
        flat = logits.float().flatten(0, 1)
        gold = F.cross_entropy(flat, labels.flatten(), ignore_index=IGNORE, reduction="sum")
        # the teacher's word distributions sit where the gold tags do: on each word's first sub-token
        tagged = labels.flatten() != IGNORE
        teacher = None if soft is None else (lambda: F.cross_entropy(flat[tagged], soft.flatten(0, 1)[tagged],
                                                                     reduction="sum"))
        total = _mix(gold, teacher, gold_weight)
        if self.tokens_per_example:
            return total, torch.tensor(labels.shape[0] * self.tokens_per_example, device=labels.device)
        return total, (labels != IGNORE).sum().float()
