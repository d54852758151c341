"""Collectives the losses need when training runs in several processes."""
from typing import Tuple

import torch
import torch.distributed as dist
from detectron2.utils import comm

__all__ = ["sum_over_processes"]


def sum_over_processes(value: float, device: torch.device) -> Tuple[float, int]:
    """``(sum of value over all training processes, number of processes)``; with one process
    ``(value, 1)`` and no communication. Every process must call it (a collective)."""
    world_size = comm.get_world_size()
    if world_size == 1:
        return value, 1
    if dist.get_backend() != "nccl":
        device = torch.device("cpu")
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item(), world_size
