"""Where training runs: one CPU process, one GPU, or several ``torchrun`` processes.

``cxrkit train`` under ``torchrun --nproc_per_node N`` trains data-parallel
(gloo on CPU, nccl on GPU). Every process draws the same global batch and the
same augmentation from the shared seed and keeps its own slice, and the loss is
normalised by the *global* batch's class weights, so the averaged gradient is
the one a single process would compute: N processes reproduce one process
(up to BatchNorm statistics, which each process takes over its own slice).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
import torch.nn as nn


@dataclass(frozen=True)
class Placement:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes the run directory and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to PyTorch")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r} (auto | cpu | cuda)")
    return torch.device(device)


def setup(device: str = "auto") -> Placement:
    """A :class:`Placement`; joins the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world == 1:
        return Placement(dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Placement(dev, torch_dist.get_rank(), torch_dist.get_world_size())


def wrap(model: nn.Module, place: Placement) -> nn.Module:
    if not place.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [place.device.index] if place.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def my_slice(batch: torch.Tensor, place: Placement) -> torch.Tensor:
    return batch[place.rank::place.world] if place.distributed else batch


def total(value: float, place: Placement) -> float:
    """Sum a number over all processes."""
    if not place.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=place.device)
    torch_dist.all_reduce(t)
    return float(t.item())


def barrier(place: Placement) -> None:
    if place.distributed:
        torch_dist.barrier()


def teardown(place: Placement) -> None:
    if place.distributed and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
