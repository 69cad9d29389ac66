"""Where the training split lives: resident on the device, or streamed from host memory."""

import threading

import pytest
import torch

from worker.engine.data import DataSplit, TrainFeed
from worker.engine.data.loader import choose_placement, shard_of, shuffled_batches
from worker.engine.loop import train

from .helpers import Recorder, make_plan


def test_placement_choice() -> None:
    cpu = torch.device("cpu")
    assert choose_placement("auto", 10**12, cpu) == "device"  # a CPU trains from memory
    assert choose_placement("host", 10, cpu) == "host"


def test_streamed_batches_are_the_resident_ones() -> None:
    x, y = torch.randn(50, 1, 4, 4), torch.arange(50)
    cpu = torch.device("cpu")
    resident = TrainFeed.build(x, y, cpu, "device")
    streamed = TrainFeed.build(x, y, cpu, "host", prefetch=2)
    got = [list(feed.epoch(16, torch.Generator().manual_seed(1))) for feed in (resident, streamed)]
    assert len(got[0]) == len(got[1]) == 4  # 50 = 3 * 16 + 2: the partial batch is kept
    for (xa, ya), (xb, yb) in zip(*got, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_shards_tile_each_global_batch_and_drop_the_partial_one() -> None:
    order = shuffled_batches(50, 16, torch.Generator().manual_seed(0), torch.device("cpu"), 2)
    assert len(order) == 3
    for idx in order:
        assert torch.equal(torch.cat([shard_of(idx, r, 2) for r in range(2)]), idx)


def test_a_streamed_run_trains_exactly_like_a_resident_one(digits: DataSplit, tmp_path) -> None:
    results = []
    for placement in ("device", "host"):
        plan = make_plan(
            digits, tmp_path / placement, epochs=2, data_placement=placement, prefetch=2
        )
        result = train(plan, Recorder())
        results.append((result.history, plan.method.student.state_dict()))
    (hist_a, weights_a), (hist_b, weights_b) = results
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    for name, value in weights_a.items():
        assert torch.equal(value, weights_b[name]), name


def test_a_consumer_that_stops_early_releases_the_gather_thread() -> None:
    cpu = torch.device("cpu")
    feed = TrainFeed.build(torch.randn(64, 1, 4, 4), torch.arange(64), cpu, "host", prefetch=1)
    batches = feed.epoch(4, torch.Generator().manual_seed(0))
    next(batches)
    batches.close()  # what a cancel does mid-epoch: the generator's finally joins the thread
    assert not [t for t in threading.enumerate() if t.name == "feed"]


def test_a_failing_gather_raises_in_the_training_loop() -> None:
    feed = TrainFeed.build(torch.randn(8, 1, 4, 4), torch.arange(8), torch.device("cpu"), "host")
    feed.x = feed.x[:2]  # the order points past its rows: index_select fails in the thread
    with pytest.raises(IndexError):
        list(feed.epoch(2, torch.Generator().manual_seed(0)))
