"""torchrun helpers that do nothing in a single process.

Every function works unchanged without torchrun (world size 1): `init_from_env` returns
(0, 1) and initializes nothing, `gather_to_rank0` returns ``[obj]``, `barrier` and `cleanup`
are no-ops. Under ``torchrun --nproc_per_node K`` the process group is created from the
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT variables torchrun sets.

torch is imported only when a process group is to be joined: single-process runs of commands
that need no model (``mbsnet eval --enhanced-dir``, ``--onnx``) never load it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")


def _group() -> Any:
    """torch.distributed when a process group is initialized, else None.

    Without torch imported no group can exist, so the answer needs no import then.
    """
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_env(
    backend: str | None = None, timeout: timedelta | None = None
) -> tuple[int, int]:
    """Join the torchrun process group, if there is one.

    Args:
        backend: 'gloo' or 'nccl'; None picks nccl when CUDA is available, else gloo.
        timeout: how long collectives wait for the slowest rank (torch's default if None).

    Returns:
        (rank, world_size); (0, 1) without torchrun, with nothing initialized.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        # One GPU per local rank; also the device object collectives go through.
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
    dist.init_process_group(
        backend, rank=_env_int("RANK", 0), world_size=world, **kwargs
    )
    return dist.get_rank(), dist.get_world_size()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    dist = _group()
    return dist.get_rank() if dist is not None else 0


def world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    dist = _group()
    return dist.get_world_size() if dist is not None else 1


def is_main() -> bool:
    """True on rank 0, and always without a process group."""
    return rank() == 0


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Every `world`-th item from index `rank`: disjoint shards that together hold all items."""
    if not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    return list(items[rank::world])


def gather_to_rank0(obj: T) -> list[T] | None:
    """Collect a picklable object from every rank on rank 0.

    Returns:
        The objects in rank order on rank 0 (``[obj]`` without a process group), None on
        the other ranks.
    """
    if world_size() == 1:
        return [obj]
    gathered: list[Any] | None = [None] * world_size() if is_main() else None
    _group().gather_object(obj, gathered, dst=0)
    return gathered


def all_gather(obj: T) -> list[T]:
    """Collect a picklable object from every rank on every rank, in rank order."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    _group().all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    dist = _group()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    dist = _group()
    if dist is not None:
        dist.destroy_process_group()
