"""One job on several processes: DDP, one process per GPU (NCCL), or per CPU slot (gloo),
on one host or across several (their ranks meet at rank 0's c10d TCPStore).

Every rank builds the same method from the same seed, draws the same shuffled order and
augmentation from the same generator, and trains on its contiguous share of each global
batch; DDP averages the gradients, so N processes take the step one process would take on
the whole global batch. Rank 0 alone reports and writes checkpoints.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

# A collective that waits this long means another rank died: fail instead of hanging.
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_shard() -> Shard:
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def rank_device(device: str, rank: int) -> torch.device:
    """Rank r trains on GPU r of those visible to the job, or on the CPU."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", rank)


@contextlib.contextmanager
def process_group(
    rank: int, world: int, rendezvous: Path | str, device: torch.device
) -> Iterator[None]:
    """Join the job's group: through a file every rank can see (a Path: ranks on one host,
    no port to pick), or at "host:port", where rank 0 serves torch.distributed's TCPStore
    (ranks on several hosts)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    where = f"file://{rendezvous}" if isinstance(rendezvous, Path) else f"tcp://{rendezvous}"
    dist.init_process_group(
        backend,
        init_method=where,
        rank=rank,
        world_size=world,
        timeout=TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def lost_peer(exc: BaseException) -> bool:
    """Whether `exc` says another rank went away mid-collective: torch.distributed's own
    error types (NCCL, the store), or gloo's transport errors, which come as plain
    RuntimeErrors naming their source ("gloo/transport/tcp/pair.cc: ... Connection reset by
    peer", "... Timed out waiting ... for recv")."""
    return isinstance(exc, dist.DistError) or "gloo/transport/" in str(exc)


def wrap(model: nn.Module, device: torch.device, shard: Shard) -> nn.Module:
    """DDP over `model` when the job spans processes; `model` itself otherwise."""
    if shard.world == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def sum_across(t: Tensor, shard: Shard) -> Tensor:
    if shard.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_from_main(module: nn.Module) -> None:
    """Every rank takes rank 0's parameters and buffers of `module` (one that trains outside
    DDP, like IE-KD's auto-encoder, so GPU nondeterminism cannot let the ranks drift)."""
    if current_shard().world > 1:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)
