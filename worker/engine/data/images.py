"""A split's images and labels, and how their batches reach the training device. Two kinds,
one interface: Resident (one tensor at the split's base size, on the device when it fits,
else in host memory, gathered into pinned memory a few batches ahead by a thread) and
Streamed (the pixels stay in the dataset's shards; DataLoader processes read and decode each
batch, decode.py, so host memory stays flat whatever the dataset's size). Either way a batch
arrives as stored and each view is augmented and normalised on the device (augment.py);
evaluation batches are centre-cropped, then normalised. Both kinds draw each epoch's order
from the same generator, so they train alike."""

import dataclasses
import functools
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from worker.engine.data.augment import centre_crop
from worker.engine.data.decode import ShardSamples, collate
from worker.engine.data.loader import shard_of, shuffled_batches
from worker.engine.device import memory_format

Batches = Iterator[tuple[Tensor, Tensor]]


@dataclass
class Images:
    """What both kinds share: labels, normalisation, sizes."""

    labels: Tensor  # (N,) int64, on the host (on the device with pixels held there)
    mean: list[float]  # per channel, of pixels in [0, 1] (or of a float set's own values)
    std: list[float]
    size: int  # the training size; evaluation crops the base's centre to it
    device: torch.device

    def __len__(self) -> int:
        return len(self.labels)

    def epoch(
        self,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world: int = 1,
        first: int = 0,
        whole: bool = False,
    ) -> Batches:
        """This process's part of each shuffled global batch, as stored, at base size, from
        batch `first` on (the order is drawn whole either way: a resumed epoch's is the same);
        `whole`: no partial last batch."""
        order_device = self._order_device()
        everything = shuffled_batches(len(self), batch_size, generator, order_device, world, whole)
        return self._batches([shard_of(idx, rank, world) for idx in everything[first:]])

    def ordered(self, batch_size: int) -> Batches:
        """In order, the last batch partial, centre-cropped and normalised: for evaluation."""
        steps = torch.arange(len(self), device=self._order_device()).split(batch_size)
        norm = self.normalise
        return ((norm(centre_crop(x, self.size)), y) for x, y in self._batches(list(steps)))

    def with_stats(self, mean: list[float], std: list[float]) -> Self:
        return dataclasses.replace(self, mean=list(mean), std=list(std))

    @property
    def normalise(self) -> "Normalise":
        return Normalise(tuple(self.mean), tuple(self.std))

    # each kind's own
    @property
    def nbytes(self) -> int:
        """Bytes held in memory."""
        raise NotImplementedError

    @property
    def decoders(self) -> int:
        """Processes decoding its images while it trains (they need cores of their own)."""
        raise NotImplementedError

    def subset(self, idx: np.ndarray) -> "Images":
        raise NotImplementedError

    def place(self, device: torch.device, placement: str) -> "Images":
        raise NotImplementedError

    def fingerprint(self) -> list[Any]:
        """What identifies the split's data, for a hash."""
        raise NotImplementedError

    def _order_device(self) -> torch.device:
        raise NotImplementedError

    def _batches(self, parts: list[Tensor]) -> Batches:
        raise NotImplementedError


@dataclass
class Resident(Images):
    pixels: Tensor = dataclasses.field(default_factory=lambda: torch.empty(0))  # (N, C, B, B)
    on_device: bool = True  # False: in host memory, streamed to the device by a thread
    prefetch: int = 4

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes + self.labels.nbytes

    @property
    def decoders(self) -> int:
        return 0

    def subset(self, idx: np.ndarray) -> "Resident":
        index = torch.from_numpy(idx)
        return dataclasses.replace(self, labels=self.labels[index], pixels=self.pixels[index])

    def place(self, device: torch.device, placement: str) -> "Resident":
        on_device = placement == "device" or device.type != "cuda"
        held = (self.pixels.to(device), self.labels.to(device)) if on_device else ()
        pixels, labels = held or (self.pixels, self.labels)
        return dataclasses.replace(
            self, pixels=pixels, labels=labels, device=device, on_device=on_device
        )

    def fingerprint(self) -> list[Any]:
        return [self.pixels, self.labels, self.mean, self.std]

    def _order_device(self) -> torch.device:
        return self.pixels.device

    def _batches(self, parts: list[Tensor]) -> Batches:
        if self.on_device:
            return ((self.pixels[i], self.labels[i]) for i in parts)
        return self._stream(parts)

    def _stream(self, parts: list[Tensor]) -> Batches:
        ahead: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        done = threading.Event()
        gather = threading.Thread(target=self._gather, args=(parts, ahead, done), daemon=True)
        gather.start()
        try:
            for _ in parts:
                item = ahead.get()
                if isinstance(item, BaseException):
                    raise item
                x, y = (t.to(self.device, non_blocking=True) for t in item)
                yield x, y
        finally:
            done.set()  # a consumer that stops early (a cancel) releases the thread
            gather.join()

    def _gather(self, parts: list[Tensor], ahead: queue.Queue, done: threading.Event) -> None:
        pin = self.device.type == "cuda"
        try:
            for idx in parts:
                x = torch.empty(
                    (len(idx), *self.pixels.shape[1:]), dtype=self.pixels.dtype, pin_memory=pin
                )
                y = torch.empty((len(idx),), dtype=self.labels.dtype, pin_memory=pin)
                torch.index_select(self.pixels, 0, idx, out=x)
                torch.index_select(self.labels, 0, idx, out=y)
                if not put_unless_done(ahead, (x, y), done):
                    return
        except Exception as exc:  # handed to the consumer, which raises it in the loop
            put_unless_done(ahead, exc, done)


class EpochBatches(Sampler[list[int]]):
    """The batch sampler of a DataLoader kept for every epoch: each pass sets its batches
    before it iterates, so the loader's worker processes start once, not every epoch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class Streamed(Images):
    samples: ShardSamples | None = None
    workers: int = 2  # DataLoader worker processes
    # how they start (a multiprocessing context's name; None: the platform's default, fork):
    # "forkserver" for a reader whose client a fork would break (a bucket's: obstore)
    start: str | None = None
    prefetch: int = 4  # batches each worker prepares ahead
    # made on the first pass and kept (persistent workers); a copy (subset, place) makes its own
    _loader: DataLoader | None = dataclasses.field(default=None, init=False, repr=False)
    _plan: EpochBatches = dataclasses.field(default_factory=EpochBatches, init=False, repr=False)

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes  # the pixels stay in the shards

    @property
    def decoders(self) -> int:
        return self.workers

    def subset(self, idx: np.ndarray) -> "Streamed":
        assert self.samples is not None
        samples = self.samples.subset(idx)
        return dataclasses.replace(self, labels=samples.labels, samples=samples)

    def place(self, device: torch.device, placement: str) -> "Streamed":
        return dataclasses.replace(self, device=device)

    def fingerprint(self) -> list[Any]:
        assert self.samples is not None
        return [*self.samples.fingerprint(), self.labels, self.mean, self.std]

    def _order_device(self) -> torch.device:
        return torch.device("cpu")

    def _batches(self, parts: list[Tensor]) -> Batches:
        loader = self.loader([p.tolist() for p in parts])
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def loader(self, batches: list[list[int]]) -> DataLoader:
        """The split's one loader, set to give `batches` on its next pass (a pass must end,
        or be dropped, before the next begins)."""
        assert self.samples is not None
        if self._loader is None:
            self._loader = DataLoader(
                self.samples,
                batch_sampler=self._plan,
                num_workers=self.workers,
                collate_fn=collate,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=self.prefetch if self.workers else None,
                persistent_workers=self.workers > 0,
                multiprocessing_context=self.start if self.workers else None,
            )
        self._plan.batches = batches
        return self._loader

    def in_order(self, batch_size: int) -> DataLoader:
        """Every sample decoded, in order, as stored (uint8, base size, not normalised)."""
        n = len(self)
        steps = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        return self.loader(steps)

    def resident(self) -> Resident:
        """All of it decoded once, in order, into one uint8 tensor."""
        assert self.samples is not None
        base = self.samples.base
        pixels = torch.empty((len(self), self.samples.channels, base, base), dtype=torch.uint8)
        start = 0
        for x, _ in self.in_order(256):
            pixels[start : start + len(x)] = x
            start += len(x)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(Images)}
        return Resident(**fields, pixels=pixels)


@dataclass(frozen=True)
class Normalise:
    """(x * scale - mean) / std per channel, scale 1 / 255 for uint8 pixels (else 1): one
    multiply and one add in place on a float copy, laid out in the device's memory format
    (engine/device.py) so the step copies it no more."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: Tensor) -> Tensor:
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
        weight, bias = stats_on(self.mean, self.std, scale, x.device)
        out = torch.empty_like(x, dtype=torch.float32, memory_format=memory_format(x.device))
        return out.copy_(x).mul_(weight).add_(bias)


@functools.lru_cache(maxsize=64)
def stats_on(
    mean: tuple[float, ...], std: tuple[float, ...], scale: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Normalisation as a per-channel weight scale / std and bias -mean / std, (1, C, 1, 1)
    tensors on `device`, made once: a batch's normalisation copies nothing from the host."""
    m, s = (torch.tensor(v, dtype=torch.float64).view(1, -1, 1, 1) for v in (mean, std))
    return (scale / s).float().to(device), (-m / s).float().to(device)


def put_unless_done(ahead: queue.Queue, item: object, done: threading.Event) -> bool:
    while not done.is_set():
        try:
            ahead.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
