"""Where a split's pixels live: resident on the device, or in host memory and streamed to the
device by a thread (a Resident with on_device=False)."""

import dataclasses
import threading

import pytest
import torch

from tests.worker.engine.helpers import Recorder, make_plan
from worker.engine.data import DataSplit, Resident
from worker.engine.data.loader import choose_placement, shard_of, shuffled_batches
from worker.engine.loop import train

CPU = torch.device("cpu")


def resident(x: torch.Tensor, y: torch.Tensor, **fields: object) -> Resident:
    channels = x.shape[1]
    mean, std = [0.25] * channels, [0.5] * channels
    return Resident(y, mean, std, x.shape[-1], CPU, pixels=x, **fields)  # type: ignore[arg-type]


def test_placement_choice() -> None:
    assert choose_placement("auto", 10**12, CPU) == "device"  # a CPU trains from memory
    assert choose_placement("host", 10, CPU) == "host"
    assert choose_placement("device", 10**15, CPU) == "device"


def test_a_cpu_keeps_every_placement_in_memory() -> None:
    images = resident(torch.randn(8, 1, 4, 4), torch.arange(8))
    for placement in ("device", "host"):
        placed = images.place(CPU, placement)
        assert placed.on_device and placed.pixels is images.pixels  # nothing to stream to


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_streamed_batches_are_the_resident_ones(dtype: torch.dtype) -> None:
    x = torch.randint(0, 256, (50, 1, 4, 4)).to(dtype)
    y = torch.arange(50)
    on_device = resident(x, y)
    streamed = resident(x, y, on_device=False, prefetch=2)
    got = [list(imgs.epoch(16, torch.Generator().manual_seed(1))) for imgs in (on_device, streamed)]
    assert len(got[0]) == len(got[1]) == 4  # 50 = 3 * 16 + 2: the partial batch is kept
    for (xa, ya), (xb, yb) in zip(*got, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa, x[ya])  # as stored: each view is normalised (augment.py)
    # evaluation's in-order batches alike, normalised
    ordered = [list(imgs.ordered(16)) for imgs in (on_device, streamed)]
    scale = 1 / 255 if dtype == torch.uint8 else 1.0
    for (xa, ya), (xb, yb) in zip(*ordered, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.float32
        torch.testing.assert_close(xa, (x[ya].float() * scale - 0.25) / 0.5)
    assert torch.equal(torch.cat([b for _, b in ordered[1]]), y)


def test_shards_tile_each_global_batch_and_drop_the_partial_one() -> None:
    order = shuffled_batches(50, 16, torch.Generator().manual_seed(0), CPU, 2)
    assert len(order) == 3
    for idx in order:
        assert torch.equal(torch.cat([shard_of(idx, r, 2) for r in range(2)]), idx)


def test_each_rank_streams_its_share_of_the_same_global_batches() -> None:
    x, y = torch.randn(50, 1, 4, 4), torch.arange(50)
    whole = list(resident(x, y).epoch(16, torch.Generator().manual_seed(2), world=1))
    shares = [
        list(resident(x, y, on_device=False).epoch(16, torch.Generator().manual_seed(2), r, 2))
        for r in range(2)
    ]
    # a global batch of 16 is two shares of 8; the partial global batch is dropped
    assert len(shares[0]) == len(shares[1]) == 3
    for step in range(3):
        assert [len(shares[r][step][1]) for r in range(2)] == [8, 8]
        assert torch.equal(torch.cat([shares[r][step][1] for r in range(2)]), whole[step][1])
        assert torch.equal(torch.cat([shares[r][step][0] for r in range(2)]), whole[step][0])


def test_a_streamed_run_trains_exactly_like_a_resident_one(
    digits: DataSplit, tmp_path, monkeypatch
) -> None:
    # A CPU keeps "host" data in memory (Resident.place); here it is streamed as on a GPU.
    streams = []
    original = Resident._stream

    def place_as_asked(self: Resident, device: torch.device, placement: str) -> Resident:
        on_device = placement == "device"
        return dataclasses.replace(self, device=device, on_device=on_device)

    def counted(self: Resident, parts: list[torch.Tensor]):
        streams.append(len(parts))
        return original(self, parts)

    monkeypatch.setattr(Resident, "place", place_as_asked)
    monkeypatch.setattr(Resident, "_stream", counted)
    results = []
    for placement in ("device", "host"):
        plan = make_plan(digits, tmp_path / placement, epochs=2, data_placement=placement)
        result = train(plan, Recorder())
        results.append((result.history, plan.method.student.state_dict()))
        if placement == "device":
            assert not streams
    assert streams  # the second run's batches came through the gather thread
    (hist_a, weights_a), (hist_b, weights_b) = results
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    assert [h["val_acc"] for h in hist_a] == [h["val_acc"] for h in hist_b]
    for name, value in weights_a.items():
        assert torch.equal(value, weights_b[name]), name


def test_a_consumer_that_stops_early_releases_the_gather_thread() -> None:
    images = resident(torch.randn(64, 1, 4, 4), torch.arange(64), on_device=False, prefetch=1)
    before = set(threading.enumerate())
    batches = images.epoch(4, torch.Generator().manual_seed(0))
    next(batches)
    started = [t for t in threading.enumerate() if t not in before]
    assert len(started) == 1 and started[0].is_alive()  # the gather thread, blocked on a full queue
    batches.close()  # what a cancel does mid-epoch: the generator's finally joins the thread
    assert not started[0].is_alive()
    assert set(threading.enumerate()) <= before


def test_a_failing_gather_raises_in_the_training_loop() -> None:
    images = resident(torch.randn(8, 1, 4, 4), torch.arange(8), on_device=False)
    broken = dataclasses.replace(images, pixels=images.pixels[:2])
    # the order points past its rows: index_select fails in the thread
    before = set(threading.enumerate())
    with pytest.raises(IndexError):
        list(broken.epoch(2, torch.Generator().manual_seed(0)))
    assert set(threading.enumerate()) <= before
