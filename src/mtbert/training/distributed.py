"""Several processes training one model with torch.distributed, launched by torchrun (or by
`mtbert train --nproc N`, which runs torchrun on this machine).

Every rank holds the whole model and reads the same data; the task schedule and each task's batch order
come from the config's seed, so all ranks train the same task in the same step and agree on the batch.
Each rank then takes its own shard of that batch, and DistributedDataParallel all-reduces the gradients.
The run dir, logs, progress bar and checkpoints are rank 0's; a checkpoint is the same as one process's,
so a run resumes with any number of processes.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mtbert.errors import UserError


class RankLost(UserError):
    """A collective failed: another rank died, or stopped answering within the timeout."""


@dataclass
class Dist:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def shard(self, batch: list) -> tuple[list, float]:
        """This rank's part of a batch every rank agrees on, and 1.0; a rank left without examples (a
        batch smaller than the number of ranks) still runs one, weighted 0, so every rank's backward
        reaches the same parameters and the all-reduce stays in step."""
        part = batch[self.rank::self.world]
        return (part, 1.0) if part else (batch[:1], 0.0)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            _collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool) -> bool:
        # NCCL (the backend on GPUs) reduces only tensors on the GPU
        device = torch.cuda.current_device() if self.enabled and dist.get_backend() == "nccl" else "cpu"
        return bool(self.sum(torch.tensor([float(flag)], device=device)).item())

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        _collective(dist.all_gather_object, out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            _collective(dist.barrier)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def touched_rows(token_ids, pad_id: int) -> torch.Tensor:
    """The vocabulary rows a batch's word-embedding gradient can be non-zero in: its token ids (lists, or
    lists of lists for grouped inputs) and the padding id, sorted."""
    ids = {pad_id}
    for seq in token_ids:
        for part in (seq if seq and isinstance(seq[0], list) else [seq]):
            ids.update(part)
    return torch.tensor(sorted(ids), dtype=torch.long)


def reduce_rows(weight: torch.nn.Parameter, rows: torch.Tensor, ranks: Dist) -> None:
    """Average `weight`'s gradient over the ranks in `rows` only. Every rank draws the same batch, so all
    know which rows any of them touched; the others are zero everywhere and stay so. For the word
    embeddings that is a few thousand of 30,522 rows: most of the all-reduce's bytes when DDP sends all."""
    grad = weight.grad
    if grad is None:
        return
    if grad.is_cuda:  # from pinned memory: a pageable copy would wait for the backward to finish
        rows = rows.pin_memory().to(grad.device, non_blocking=True)
    part = ranks.sum(grad.index_select(0, rows))
    grad.index_copy_(0, rows, part.div_(ranks.world))


def compression_hook(dtype: str):
    """PyTorch's DDP communication hook that sends the gradients as bf16 or fp16 (divided by the number
    of processes, summed, cast back)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    if dtype == "fp16":
        return default_hooks.fp16_compress_hook

    def bf16_compress(process_group, bucket):
        # DDP refuses bf16_compress_hook by its name unless the backend is NCCL; gloo sums bf16 as well
        return default_hooks.bf16_compress_hook(process_group, bucket)

    return bf16_compress


def _collective(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, dist.DistError) as err:  # gloo reports a lost peer as a plain RuntimeError
        # gloo's message starts with its source file and ends in banter: keep the sentence that says what
        reason = re.sub(r"^\[[^\]]*\]\s*", "", str(err).splitlines()[0]).split(". ")[0]
        raise RankLost(f"rank {dist.get_rank()}: another training process stopped or did not answer within "
                       f"the timeout ({reason}); see that rank's output for why") from None


def from_env(timeout_s: float, device: str = "auto") -> Dist:
    """Join the process group torchrun described in the environment (WORLD_SIZE, RANK, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): gloo on CPU, nccl on CUDA (`device` is training.device). Without those
    variables: one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
        try:
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError, dist.DistError) as err:
            raise UserError(f"rank {rank}: could not join the other {world - 1} training processes at "
                            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} ({err}); check "
                            "torchrun's --rdzv-endpoint / --master-addr and that every node can reach it") from None
    return Dist(rank, world, local_rank)


def launch(argv: list[str], nproc: int) -> int:
    """`mtbert ... --nproc N`: run the same command in N processes on this machine, with torchrun's own
    launcher (`torchrun --standalone --nproc-per-node N -m mtbert ...`). A process that fails has said why
    on stderr; the launcher's report of it would be a traceback, so this returns its exit code instead."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun would set one thread per process; share the cores instead unless the user chose
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "mtbert", *argv)
    except ChildFailedError as err:
        return max((f.exitcode for f in err.failures.values() if f.exitcode and f.exitcode > 0), default=1)
    return 0
