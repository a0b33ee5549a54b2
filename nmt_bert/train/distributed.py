"""Data-parallel training under torchrun: gloo on CPU, nccl on GPU; a no-op otherwise."""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import torch
import torch.distributed as td
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return td.get_rank() if td.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_rank0() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if world_size() > 1 and not td.is_initialized():
        use_nccl = torch.cuda.is_available() and os.environ.get("NMT_BERT_BACKEND") != "gloo"
        td.init_process_group("nccl" if use_nccl else "gloo")


def cleanup() -> None:
    if td.is_initialized():
        td.destroy_process_group()


def barrier() -> None:
    if td.is_initialized():
        td.barrier()


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun on GPUs each process takes the GPU of its local rank."""
    if td.is_initialized() and device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP over the currently trainable parameters (rebuilt at each stage: the set changes)."""
    if not td.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def check_replicas(model: torch.nn.Module) -> str | None:
    """sha256 of this rank's weights; raises if any replica's differs (None when not DDP)."""
    if not td.is_initialized():
        return None
    from nmt_bert.hashing import state_sha256

    digests: list = [None] * world_size()
    td.all_gather_object(digests, state_sha256(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel replicas diverged: {digests}")
    return digests[0]


def broadcast(value: T) -> T:
    """Rank 0's `value` on every rank (a plan all replicas must follow); `value` otherwise."""
    if not td.is_initialized():
        return value
    box = [value]
    td.broadcast_object_list(box, src=0)
    return box[0]


def shard(batches: list[T]) -> list[T]:
    """Each rank takes every world_size-th batch; all ranks get the same count."""
    if not td.is_initialized():
        return batches
    n = world_size()
    usable = len(batches) - len(batches) % n
    return batches[rank():usable:n]


def on_rank0_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 first (e.g. building a shared cache), then on the others."""
    if is_rank0():
        result = fn()
        barrier()
        return result
    barrier()
    return fn()
