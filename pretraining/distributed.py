"""torchrun / DistributedDataParallel set-up: one process per device, gloo on CPU, nccl on GPU.

``torchrun --nproc_per_node N pre_training.py ...`` sets RANK, LOCAL_RANK and WORLD_SIZE; without
them the run is a single process and every helper here is a no-op.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from utils import UserError


@dataclasses.dataclass
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise float64 sum over ranks (every rank gets the same numbers, on the CPU)."""
        values = values.detach().to(torch.float64)
        if not self.enabled:
            return values.cpu()
        values = values.to(self.device).clone()
        dist.all_reduce(values)
        return values.cpu()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise mean over ranks (for logging: every rank gets the same numbers)."""
        if not self.enabled:
            return values
        values = values.detach().to(self.device, torch.float64).clone()
        dist.all_reduce(values)
        return (values / self.world_size).cpu()

    def gather(self, obj):
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if requested != "cpu":
        raise UserError(f"--device: expected auto, cpu or cuda, got {requested!r}")
    return torch.device("cpu")


def init_distributed(requested_device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                device_id=device if device.type == "cuda" else None)
    return DistContext(rank, local_rank, world_size, device)
