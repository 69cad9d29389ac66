"""Live progress arithmetic (worker/task/tracker.py) and the final shapes
(service/jobs/progress.py), against values worked out by hand."""

from collections import deque

import pytest

from service.jobs import progress as final
from worker.task.tracker import Tracker, eta, seconds_per_step


def test_seconds_per_step_is_the_window_mean():
    assert seconds_per_step(deque([(10.0, 4)])) is None
    # steps 4 -> 9 in 10.0 s -> 12.5 s: 5 steps in 2.5 s
    assert seconds_per_step(deque([(10.0, 4), (11.0, 6), (12.5, 9)])) == pytest.approx(0.5)


def test_eta_counts_the_steps_and_the_epoch_ends_left():
    # epoch 2 of 3, 4 of 10 steps done: 6 + 10 steps at 0.5 s, 2 epoch ends at 3 s
    assert eta(epoch=2, step=4, epochs=3, steps_per_epoch=10, step_s=0.5, epoch_end_s=3.0) == 14.0
    # the last step done: only the last epoch end is left
    assert eta(epoch=3, step=10, epochs=3, steps_per_epoch=10, step_s=0.5, epoch_end_s=3.0) == 3.0


def run_epoch(tracker: Tracker, epoch: int, start: float, steps: int, step_s: float) -> float:
    for k in range(1, steps + 1):
        tracker.step(epoch, k, steps, now=start + k * step_s)
    return start + steps * step_s


def test_a_tracker_measures_pace_and_the_time_between_epochs():
    tracker = Tracker(epochs=3, batch_size=32)
    assert tracker.snapshot() == {}  # nothing trained: the task's context saves nothing
    tracker.phase("teacher")
    assert tracker.snapshot() == {"epochs": 3, "phase": "teacher", "eta_s": None}
    end = run_epoch(tracker, 1, start=100.0, steps=4, step_s=0.25)  # last step at 101.0
    first = tracker.snapshot()
    assert first["images_per_s"] == pytest.approx(128.0)  # 32 images / 0.25 s
    # epoch 1 over; no epoch end seen yet: 2 epochs x 4 steps x 0.25 s, ends counted 0
    assert first["eta_s"] == pytest.approx(2.0)
    tracker.epoch_end(1)
    # evaluation takes 2 s: epoch 2's first step ends at 101.0 + 2.0 + 0.25
    tracker.step(2, 1, 4, now=end + 2.25)
    tracker.step(2, 2, 4, now=end + 2.75)  # this epoch's pace: 0.5 s a step
    snap = tracker.snapshot()
    assert snap["images_per_s"] == pytest.approx(64.0)
    # 2 + 4 steps at 0.5 s, epoch ends of epochs 2 and 3 at 2 s each
    assert snap["eta_s"] == pytest.approx(7.0)
    assert snap | {"images_per_s": 0, "eta_s": 0} == {
        "phase": "train",
        "epoch": 2,
        "epochs": 3,
        "step": 2,
        "steps_per_epoch": 4,
        "images_per_s": 0,
        "eta_s": 0,
    }


def test_after_the_last_epoch_the_job_exports_with_no_eta():
    tracker = Tracker(epochs=1, batch_size=8)
    run_epoch(tracker, 1, start=0.0, steps=3, step_s=1.0)
    tracker.epoch_end(1)
    snap = tracker.snapshot()
    assert (snap["phase"], snap["epoch"], snap["eta_s"], snap["images_per_s"]) == (
        "export",
        1,
        None,
        8.0,
    )


def test_a_resumed_attempt_goes_on_from_the_saved_progress():
    tracker = Tracker(epochs=4, batch_size=16)
    saved = {"phase": "train", "epoch": 3, "epochs": 4, "step": 7, "steps_per_epoch": 10}
    tracker.resume(saved | {"images_per_s": 99.0, "eta_s": 12.0})
    assert tracker.snapshot() == saved | {"phase": "setup", "images_per_s": 99.0, "eta_s": None}
    tracker.step(3, 8, 10, now=50.0)
    tracker.step(3, 9, 10, now=51.0)
    snap = tracker.snapshot()
    assert (snap["epoch"], snap["step"], snap["images_per_s"]) == (3, 9, 16.0)
    assert snap["eta_s"] == pytest.approx(11.0)  # 1 + 10 steps at 1 s


def test_the_final_shapes():
    running = {"phase": "train", "epoch": 2, "epochs": 3, "step": 5, "steps_per_epoch": 9}
    assert final.done(running | {"eta_s": 4.0, "images_per_s": 10.0}) == {
        "phase": "done",
        "epoch": 3,
        "epochs": 3,
        "step": 9,
        "steps_per_epoch": 9,
        "eta_s": 0.0,
        "images_per_s": 10.0,
    }
    assert final.stopped(running | {"eta_s": 4.0}) == running | {"eta_s": None}
