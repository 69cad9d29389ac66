"""Mini-batches for training and evaluation, and where the training data lives.

A training split that fits on the device is moved there once and batched by indexing, with
no host round trip. A larger one stays in host memory and streams through a DataLoader
whose workers gather the batches (pinned, copied without blocking). Augmentation runs on
the device either way.
Both feeds draw the same shuffled order from the same generator, so they train identically.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

PLACEMENTS = ("auto", "device", "host")
# "auto" keeps the training split on a GPU when it takes at most this share of free memory.
DEVICE_SHARE = 0.4


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled batches for training, in-order batches (last one partial) for evaluation.

    Training drops a trailing batch of one sample: BatchNorm cannot normalise it.
    """
    n = x.shape[0]
    if not shuffle:
        for start in range(0, n, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    for idx in shuffled_batches(n, batch_size, generator, x.device):
        yield x[idx], y[idx]


def num_batches(n: int, batch_size: int, shuffle: bool, world: int = 1) -> int:
    """Batches per epoch. Across several processes every global batch is whole, so that each
    process gets the same number of samples and averaging their gradients is exact."""
    full, rest = divmod(n, batch_size)
    if world > 1 or rest == 0 or (shuffle and rest == 1):
        return full
    return full + 1


def shuffled_batches(
    n: int,
    batch_size: int,
    generator: torch.Generator | None,
    device: torch.device,
    world: int = 1,
) -> list[Tensor]:
    """One epoch's global batches as index tensors on `device`."""
    order = permutation(n, generator, device)
    steps = num_batches(n, batch_size, shuffle=True, world=world)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def permutation(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    source = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=source).to(device)


def shard_of(idx: Tensor, rank: int, world: int) -> Tensor:
    """The contiguous part of a global batch that process `rank` of `world` trains on."""
    size = len(idx) // world
    return idx[rank * size : (rank + 1) * size]


def choose_placement(requested: str, nbytes: int, device: torch.device) -> str:
    """ "device" (resident) or "host" (streamed) for a training split of `nbytes`."""
    if requested not in PLACEMENTS:
        raise ValueError(f"unknown data placement {requested!r}; known: {', '.join(PLACEMENTS)}")
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes <= DEVICE_SHARE * free else "host"


class _Rows(Dataset):
    """Fetching a tensor of row indices returns that whole batch: one gather per batch."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        return self.x[idx], self.y[idx]


@dataclass
class TrainFeed:
    """The training split and how its batches reach `device`."""

    x: Tensor
    y: Tensor
    device: torch.device
    placement: str  # "device" | "host"
    workers: int = 4

    @classmethod
    def build(
        cls, x: Tensor, y: Tensor, device: torch.device, requested: str, workers: int
    ) -> "TrainFeed":
        placement = choose_placement(requested, x.nbytes + y.nbytes, device)
        if placement == "device":
            return cls(x.to(device), y.to(device), device, placement, workers)
        return cls(x, y, device, placement, workers)  # the loader pins each batch

    def __len__(self) -> int:
        return len(self.y)

    def epoch(
        self,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """This process's part of each shuffled global batch, on the device."""
        order_device = self.device if self.placement == "device" else generator.device
        parts = [
            shard_of(idx, rank, world)
            for idx in shuffled_batches(len(self), batch_size, generator, order_device, world)
        ]
        if self.placement == "device":
            return ((self.x[idx], self.y[idx]) for idx in parts)
        return self._stream([idx.cpu() for idx in parts])

    def _stream(self, parts: list[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            _Rows(self.x, self.y),
            sampler=parts,
            batch_size=None,  # the sampler already yields whole batches of indices
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            multiprocessing_context="fork" if self.workers else None,
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
