"""A training process's CPU threads (worker/job/threads.py): the choice from given samples,
and real processes beside a real busy one."""

import contextlib
import inspect
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from service.config import get_settings
from worker.engine import loop
from worker.job import threads
from worker.job.threads import Adapting, Look, Threads, choose, fractions, taken_by_others


def test_fractions_are_each_cores_busy_share_and_the_jobs_own_cores():
    before = Look(at=10.0, cores=[(5.0, 20.0), (1.0, 20.0)], own={1: 3.0, 2: 1.0})
    # 2 s later: core 0 busy 1.5 s of 2, core 1 0.5 of 2; pid 1 used 1.2 s, pid 3 is new (0.4)
    after = Look(at=12.0, cores=[(6.5, 22.0), (1.5, 22.0)], own={1: 4.2, 3: 0.4})
    busy, own = fractions(before, after)
    assert busy == pytest.approx([0.75, 0.25])
    assert own == pytest.approx((1.2 + 0.4) / 2)


@pytest.mark.parametrize(
    ("busy", "own", "taken"),
    [
        ([1.0, 1.0], 2.0, 0),  # idle host, the job's two threads busy
        ([1.0, 0.02], 1.0, 0),  # idle host, the job on one thread
        ([1.0, 1.0], 1.0, 1),  # a busy process beside the job's one thread
        ([1.0, 1.0], 0.9, 1),  # ... or beside its two threads, sharing a core with it
        ([1.0, 0.5], 0.75, 1),  # the job's thread half the time on the busy process's core
        ([0.4, 0.1], 0.0, 0),  # others at half a core: not taken
        ([0.6, 0.55, 1.0, 0.0], 0.0, 2),  # others' 2.15 cores of work
        ([1.0, 1.0, 1.0], 0.0, 3),
        ([0.0, 0.0], 0.0, 0),
    ],
)
def test_cores_taken_by_others_leave_out_the_jobs_own_use(busy, own, taken):
    assert taken_by_others(busy, own) == taken


@pytest.mark.parametrize(
    ("cores", "world", "taken", "decoders", "threads"),
    [
        (8, 1, 0, 0, 8),
        (8, 2, 0, 0, 4),  # shared among the job's processes
        (8, 2, 0, 3, 1),  # less the streamed data's decoders
        (8, 1, 0, 8, 1),  # at least one
        (8, 2, 2, 0, 3),  # less the cores others take
        (2, 1, 1, 0, 1),
        (2, 1, 2, 0, 1),
        (2, 2, 1, 0, 1),
    ],
)
def test_threads_are_the_free_cores_shared_less_the_decoders(
    cores, world, taken, decoders, threads
):
    assert choose(cores, world, taken, decoders) == threads


@pytest.fixture
def kept_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    get_settings.cache_clear()
    torch.set_num_threads(before)


@pytest.mark.usefixtures("kept_threads")
def test_an_explicit_setting_wins_and_never_adapts(monkeypatch):
    monkeypatch.setenv("DISTILLERY_TRAIN_THREADS", "3")
    get_settings.cache_clear()
    chosen = Threads.first_look(world=2)
    chosen.set_decoders(5)
    assert torch.get_num_threads() == 3
    monkeypatch.setattr(threads, "LOOK_EVERY_S", 0.0)
    assert not chosen.due()
    assert Adapting(loop.Quiet(), chosen).should_stop() is False
    assert torch.get_num_threads() == 3


@contextlib.contextmanager
def spinning(core: int) -> Iterator[None]:
    """`while True: pass` pinned to `core` in another process's load: not this process's
    child (its shell exits), which the job would count as its own (a decoder)."""
    python = shlex.quote(sys.executable)
    started = subprocess.run(
        ["sh", "-c", f"{python} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(started.stdout)
    try:
        os.sched_setaffinity(pid, {core})
        yield
    finally:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def busy_core() -> Iterator[int]:
    """Another process spinning on one allowed core (pinned: one core taken)."""
    cores = sorted(os.sched_getaffinity(0))
    with spinning(cores[-1]):
        yield len(cores)


@pytest.mark.usefixtures("kept_threads")
def test_a_process_beside_a_busy_one_picks_fewer_threads(monkeypatch, busy_core):
    monkeypatch.delenv("DISTILLERY_TRAIN_THREADS", raising=False)
    get_settings.cache_clear()
    chosen = Threads.first_look(world=1)
    assert chosen.taken >= 1
    assert torch.get_num_threads() == chosen.choice() <= max(1, busy_core - 1)


@pytest.mark.usefixtures("kept_threads")
def test_adapting_looks_again_while_training(monkeypatch):
    monkeypatch.delenv("DISTILLERY_TRAIN_THREADS", raising=False)
    get_settings.cache_clear()
    chosen = Threads(world=1)  # no look yet: every allowed core counts as free
    cores = chosen.apply()
    assert cores == len(os.sched_getaffinity(0))
    adapting = Adapting(loop.Quiet(), chosen)
    with spinning(max(os.sched_getaffinity(0))):
        time.sleep(threads.LOOK_EVERY_S)  # the window the next look measures
        assert adapting.should_stop() is False
    assert chosen.taken >= 1
    assert torch.get_num_threads() == max(1, cores - chosen.taken)


# Rank 1 waits; rank 0 lists the job's processes: its sibling (the same command but the rank)
# is the job's own, another job's rank is not. They run job_processes's own source, without
# worker.job.threads's imports (torch: seconds each).
RANK = """
import contextlib, json, sys, time
if sys.argv[-2] == "1":
    time.sleep(120)
import psutil
{source}
print(json.dumps(sorted(p.pid for p in job_processes(int(sys.argv[-1])))))
"""


def test_the_other_ranks_of_a_job_count_as_its_own(tmp_path):
    source = inspect.getsource(threads.command) + inspect.getsource(threads.job_processes)
    code = RANK.format(source=source)

    def rank(folder: Path, r: int) -> list[str]:
        return [sys.executable, "-c", code, str(folder), str(r), "2"]

    other = subprocess.Popen(rank(tmp_path, 1))
    another_job = subprocess.Popen(rank(tmp_path / "another", 1))
    try:
        out = subprocess.run(rank(tmp_path, 0), check=True, capture_output=True, text=True)
    finally:
        for proc in (other, another_job):
            proc.kill()
            proc.wait()
    pids = json.loads(out.stdout)
    assert other.pid in pids and another_job.pid not in pids and len(pids) == 2
