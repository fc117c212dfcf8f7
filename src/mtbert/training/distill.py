"""Distillation from single-task teachers with teacher annealing (Clark et al. 2019, "BAM! Born-Again
Multi-Task Networks for Natural Language Understanding").

A task with `teacher: RUN_DIR` learns from that run's model as well as from gold: the target is
lam * gold + (1 - lam) * teacher, with lam rising linearly from 0 to 1 over training, so the multi-task
student first imitates its single-task teachers and ends on the gold labels, free to pass them.

The teacher's outputs are computed once, before training, over the task's training examples and kept on
the tokenised features (`Feature.soft`); no teacher runs during training. They are computed at the word
and example level, so a teacher with another tokenizer (another backbone) works too:
classification and multiple choice give probabilities, regression a score, sequence labeling a tag
distribution per word (on the student's first sub-token of each word; a word the teacher's max_length
cut off keeps its gold tag as the target).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from mtbert.data.features import encode
from mtbert.errors import UserError
from mtbert.evaluation.evaluate import raw_outputs
from mtbert.modeling.precision import autocast
from mtbert.tasks import registry

log = logging.getLogger("mtbert")


def gold_weight(step: int, total_steps: int) -> float:
    """lam: 0 at the first step, 1 at the last (teacher annealing)."""
    return min(1.0, step / max(total_steps - 1, 1))


def _label_order(name: str, teacher_dir: Path, student: list[str], teacher: list[str]) -> list[int]:
    missing = [label for label in student if label not in teacher]
    if missing or len(teacher) != len(student):
        raise UserError(f"tasks.{name}.teacher: {teacher_dir} was trained with labels {', '.join(teacher[:20])}, "
                        f"this task has {', '.join(student[:20])}; name a teacher trained on the same labels")
    return [teacher.index(label) for label in student]


def attach_teacher_targets(td, teacher_dir: str | Path, batch_size: int, precision: str, device) -> None:
    """Set `soft` on every training feature of task `td` (a trainer.TaskData) from the teacher's model."""
    from mtbert.rundir import load_model

    teacher_dir = Path(teacher_dir)
    cfg, model, tokenizer, labels = load_model(teacher_dir)
    name = td.name
    if name not in cfg.tasks:
        raise UserError(f"tasks.{name}.teacher: {teacher_dir} has no task '{name}' (it has "
                        f"{', '.join(cfg.tasks)}); name a run trained on this task")
    spec = cfg.tasks[name]
    if spec.type != td.type:
        raise UserError(f"tasks.{name}.teacher: {teacher_dir} trained '{name}' as {spec.type}, this task is "
                        f"{td.type}; name a teacher of the same task type")
    order = _label_order(name, teacher_dir, td.labels, labels[name]) if td.labels else None
    model.to(device)
    feats = encode(td.type, td.train, tokenizer, cfg.max_length_for(name), with_labels=False,
                   pair_encoding=spec.pair_encoding, questions=spec.questions)
    outputs = raw_outputs(model, [name], feats, batch_size, tokenizer.pad_token_id or 0,
                          partial(autocast, precision, device))[name]
    task_type = registry.get(td.type)
    for student, teacher, out in zip(td.train_feats, feats, outputs, strict=True):
        student.soft = task_type.teacher_target(student, teacher, out, order)
    log.info("task %s: teacher outputs from %s for %d training examples", name, teacher_dir, len(outputs))


