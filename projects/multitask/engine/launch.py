"""Start one process per device, as detectron2's ``launch``; also works under ``torchrun``.

Backends: NCCL when CUDA is available, gloo otherwise. On a machine without GPUs,
``--num-gpus N`` starts N CPU processes over gloo (useful to test distributed code on a laptop).
"""

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def get_local_rank() -> int:
    if os.environ.get("LOCAL_RANK") is not None:
        return int(os.environ["LOCAL_RANK"])
    return 0


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ
    )


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Tuple = (),
    timeout: timedelta = timedelta(minutes=30),
) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine * num_machines`` processes.

    ``dist_url`` is ``"auto"`` (single machine, a free local port) or ``tcp://host:port``.
    Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) the process group is set up
    from the environment and ``main_func`` runs in this process.
    """
    if launched_by_torchrun():
        backend = default_backend()
        if backend == "nccl":
            torch.cuda.set_device(get_local_rank())
        dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        try:
            main_func(*args)
        finally:
            dist.destroy_process_group()
        return

    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://host:port")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// init may be unreliable across machines")
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Tuple,
    timeout: timedelta,
) -> None:
    backend = default_backend()
    if backend == "nccl":
        if num_gpus_per_machine > torch.cuda.device_count():
            raise RuntimeError(
                f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs"
            )
        torch.cuda.set_device(local_rank)
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    os.environ["LOCAL_RANK"] = str(local_rank)
    try:
        dist.init_process_group(
            backend=backend,
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception as e:  # noqa: BLE001 -- re-raised with what to check
        raise RuntimeError(
            f"machine rank {machine_rank} (process rank {global_rank} of {world_size}) could not "
            f"join the process group at {dist_url} within {timeout.total_seconds():.0f} s: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Are all "
            f"--num-machines machines started with the same --dist-url, can this one reach that "
            f"address, and is the port free? (--dist-timeout sets the wait)"
        ) from e
    try:
        dist.barrier()
        main_func(*args)
    finally:
        dist.destroy_process_group()
