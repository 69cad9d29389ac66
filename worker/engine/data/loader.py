"""Mini-batches over tensors that already sit on the training device."""

from collections.abc import Iterator

import torch
from torch import Tensor


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
    order = permutation(n, generator, x.device) if shuffle else None
    for start in range(0, num_batches(n, batch_size, shuffle) * batch_size, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]


def num_batches(n: int, batch_size: int, shuffle: bool) -> int:
    full, rest = divmod(n, batch_size)
    if rest == 0 or (shuffle and rest == 1):
        return full
    return full + 1


def permutation(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    source = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=source).to(device)
