"""Spawning a gloo process group for the tensor-parallel tests: the workers are functions of this test run's
modules, started by torch.multiprocessing (each process holds one CPU thread: the machines are small)."""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., None], world: int, *args: Any) -> None:
    """Runs fn(rank, world, *args) in `world` processes of one gloo group; a worker's exception fails the caller."""
    mp.spawn(_entry, args=(world, _free_port(), fn, args), nprocs=world, join=True)


def degree_groups(rank: int, world: int) -> dict[int, dist.ProcessGroup]:
    """Degree -> this rank's group of that degree: singletons, pairs (0,1), (2,3), ..., and the world. Every rank
    creates every group, in the same order, as torch.distributed requires."""
    groups: dict[int, dist.ProcessGroup] = {}
    d = 1
    while d <= world:
        for start in range(0, world, d):
            g = dist.new_group(list(range(start, start + d)))
            if start <= rank < start + d:
                groups[d] = g
        d *= 2
    return groups
