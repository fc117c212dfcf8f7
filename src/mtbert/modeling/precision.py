"""Mixed precision: bf16 autocast where the CPU (AVX512-BF16 / AMX) or GPU supports it, fp32 otherwise."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch

from mtbert.errors import UserError


def cpu_info() -> tuple[str | None, set[str]]:
    """The processor's model name and feature flags as /proc/cpuinfo gives them; (None, set()) without it."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None, set()
    name, flags = re.search(r"model name\s*:\s*(.+)", info), re.search(r"flags\s*:\s*(.+)", info)
    return name.group(1).strip() if name else None, set(flags.group(1).split()) if flags else set()


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device, where: str = "training.precision") -> str:
    """'auto': bf16 where supported; on a GPU without bf16 (before Ampere) fp16, which needs a grad scaler."""
    if precision == "auto":
        if bf16_supported(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"{where}: fp16 needs a CUDA GPU (this run is on the CPU); use bf16, fp32 or auto")
    return precision


def inference_precision(requested: str, recorded: str | None, device: torch.device,
                        where: str = "--precision") -> str:
    """The precision to evaluate or predict a trained run with. 'auto' is the one the run was evaluated with
    during training (`recorded`), so the scores are report.md's: a run trained in fp32 but evaluated in bf16
    can lose its regression scores to bf16's rounding. fp16 off a GPU falls back to fp32. A run dir too old
    to say (None) gets training's 'auto' on this device."""
    if requested != "auto":
        return resolve_precision(requested, device, where)
    if recorded is None:
        return resolve_precision("auto", device)
    if recorded == "fp16" and device.type != "cuda":
        return "fp32"
    return recorded


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """'auto' is CUDA when torch sees a GPU, else the CPU; each process of a multi-GPU run takes the GPU of its
    local rank."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device: cuda, but torch sees no GPU (a CPU-only torch, or no driver); "
                        "use device: cpu or auto")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def autocast(precision: str, device: torch.device):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch on the device. To a GPU it goes from pinned memory with non_blocking, so the copy
    overlaps the work still queued there instead of waiting for it; on the CPU `.to` is a no-op."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
