"""Helpers for torch.distributed that also work when it is not initialised (one process)."""
import functools
from typing import Any, List

import torch
import torch.distributed as dist


def get_world_size() -> int:
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size()


def get_rank() -> int:
    if not dist.is_available() or not dist.is_initialized():
        return 0
    return dist.get_rank()


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op with one process."""
    if get_world_size() > 1:
        dist.barrier()


@functools.lru_cache()
def _cpu_group():
    # Objects are gathered over gloo so that it works with NCCL (GPU) and gloo (CPU) alike.
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any) -> List[Any]:
    """Gather any picklable object from every process; returns a list (one entry per rank)."""
    if get_world_size() == 1:
        return [data]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, data, group=_cpu_group())
    return out


def gather(data: Any, dst: int = 0) -> List[Any]:
    """Gather picklable objects to rank ``dst``; other ranks get ``[]``."""
    if get_world_size() == 1:
        return [data]
    group = _cpu_group()
    if get_rank() == dst:
        out: List[Any] = [None] * get_world_size()
        dist.gather_object(data, out, dst=dst, group=group)
        return out
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def reduce_dict(input_dict: dict, average: bool = True) -> dict:
    """All-reduce a dict of scalar tensors (same keys on every rank); average by default."""
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k].detach().float() for k in names])
        dist.all_reduce(values)
        if average:
            values /= world_size
        return dict(zip(names, values))


def shared_random_seed() -> int:
    """A random int that is the same on all processes (rank 0's)."""
    import numpy as np

    ints = np.random.randint(2**31)
    return all_gather(ints)[0]


__all__ = [
    "get_world_size",
    "get_rank",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "reduce_dict",
    "shared_random_seed",
]
