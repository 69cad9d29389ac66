"""Mini-batches for training and evaluation, and where the training data lives.

A training split that fits on the device is moved there once and batched by indexing, with
no host round trip. A larger one stays in host memory: a background thread gathers each
batch straight into pinned memory, a few batches ahead, and the copy to the device does not
block. Augmentation runs on the device either way. Both feeds draw the same shuffled order
from the same generator, so they train identically.

Why a thread and not DataLoader worker processes: the data is already decoded tensors, so a
batch is one gather (torch releases the GIL for it), and a worker process would add two
copies (into shared memory, then into pinned memory). And a job runs inside Celery's prefork
pool child, a daemonic process, which Python forbids to start processes
("daemonic processes are not allowed to have children").
"""

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

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
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes <= DEVICE_SHARE * free else "host"


@dataclass
class TrainFeed:
    """The training split and how its batches reach `device`."""

    x: Tensor
    y: Tensor
    device: torch.device
    placement: str  # "device" | "host"
    prefetch: int = 4  # batches gathered ahead when streaming from the host

    @classmethod
    def build(
        cls, x: Tensor, y: Tensor, device: torch.device, requested: str, prefetch: int = 4
    ) -> "TrainFeed":
        placement = choose_placement(requested, x.nbytes + y.nbytes, device)
        if placement == "device":
            x, y = x.to(device), y.to(device)
        return cls(x, y, device, placement, prefetch)

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
        # the order is drawn where the generator lives and moved once, to where the data is
        order_device = self.device if self.placement == "device" else torch.device("cpu")
        parts = [
            shard_of(idx, rank, world)
            for idx in shuffled_batches(len(self), batch_size, generator, order_device, world)
        ]
        if self.placement == "device":
            return ((self.x[idx], self.y[idx]) for idx in parts)
        return self._stream(parts)

    def _stream(self, parts: list[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        ahead: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        done = threading.Event()
        gather = threading.Thread(
            target=self._gather, args=(parts, ahead, done), daemon=True, name="feed"
        )
        gather.start()
        try:
            for _ in parts:
                item = ahead.get()
                if isinstance(item, BaseException):
                    raise item
                x, y = item
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        finally:
            done.set()  # a consumer that stops early (a cancel) releases the thread
            gather.join()

    def _gather(self, parts: list[Tensor], ahead: queue.Queue, done: threading.Event) -> None:
        pin = self.device.type == "cuda"
        try:
            for idx in parts:
                x = torch.empty((len(idx), *self.x.shape[1:]), dtype=self.x.dtype, pin_memory=pin)
                y = torch.empty((len(idx),), dtype=self.y.dtype, pin_memory=pin)
                torch.index_select(self.x, 0, idx, out=x)
                torch.index_select(self.y, 0, idx, out=y)
                if not put_unless_done(ahead, (x, y), done):
                    return
        except Exception as exc:  # handed to the consumer, which raises it in the loop
            put_unless_done(ahead, exc, done)


def put_unless_done(ahead: queue.Queue, item: object, done: threading.Event) -> bool:
    while not done.is_set():
        try:
            ahead.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
