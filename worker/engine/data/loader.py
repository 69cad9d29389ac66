"""Mini-batch index plans: shuffled global batches, each process's part of one, and where
a split's pixels are kept (worker/engine/data/images.py moves them)."""

import torch
from torch import Tensor

# device: the pixels held on the device; host: held in host memory, copied per batch;
# stream: read from the dataset's shards per batch (uploaded ImageFolder data only).
PLACEMENTS = ("auto", "device", "host", "stream")
# "auto" keeps a split on a GPU when it takes at most this share of free memory.
DEVICE_SHARE = 0.4


def num_batches(n: int, batch_size: int, shuffle: bool, world: int = 1, whole: bool = False) -> int:
    """Batches per epoch; evaluation keeps a partial last batch, training drops a trailing
    batch of one sample (BatchNorm cannot normalise it), or any partial one when `whole`
    (a method's loss needs full batches). Across several processes every global batch is
    whole, so that each process gets the same number of samples and averaging their
    gradients is exact."""
    full, rest = divmod(n, batch_size)
    if whole or world > 1 or rest == 0 or (shuffle and rest == 1):
        return full
    return full + 1


def shuffled_batches(
    n: int,
    batch_size: int,
    generator: torch.Generator | None,
    device: torch.device,
    world: int = 1,
    whole: bool = False,
) -> list[Tensor]:
    """One epoch's global batches as index tensors on `device`."""
    order = permutation(n, generator, device)
    steps = num_batches(n, batch_size, shuffle=True, world=world, whole=whole)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def permutation(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    source = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=source).to(device)


def shard_of(idx: Tensor, rank: int, world: int) -> Tensor:
    """The contiguous part of a global batch that process `rank` of `world` trains on."""
    size = len(idx) // world
    return idx[rank * size : (rank + 1) * size]


def choose_placement(requested: str, nbytes: int, device: torch.device) -> str:
    """Where a split holding `nbytes` in memory is kept: "device", or "host" (copied per
    batch), unless `requested` says ("stream" keeps held data on the host too)."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes <= DEVICE_SHARE * free else "host"
