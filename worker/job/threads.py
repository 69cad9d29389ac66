"""A training process's CPU threads, chosen from the cores that other processes leave free.

An explicit DISTILLERY_TRAIN_THREADS (> 0) is used as is and never changes. Otherwise a first
look of FIRST_LOOK_S at the allowed cores counts those others take (their busy time less the
job's own, in whole cores), and the job's processes share the rest, less their streamed
data's decoders, at least one thread each. `Adapting` looks again about every LOOK_EVERY_S of
training, on every rank, and sets torch's threads when the choice changes: OpenMP threads that
spin on a core another process holds cost far more than they give.
"""

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from service.config import get_settings
from worker.engine import loop

log = logging.getLogger("worker.job.threads")

FIRST_LOOK_S = 0.5  # the look at the start, before any training
LOOK_EVERY_S = 1.0  # the shortest time between two looks while training
TAKEN = 0.5  # a core busier than this with other processes' work is theirs


@dataclass(frozen=True)
class Look:
    """What the cores and the job's processes had done by `at` (monotonic seconds)."""

    at: float
    cores: list[tuple[float, float]]  # (busy, total) CPU seconds of each allowed core
    own: dict[int, float]  # CPU seconds of each of the job's processes, by pid


def fractions(before: Look, after: Look) -> tuple[list[float], float]:
    """Each core's busy fraction between two looks, and the job's own CPU use in cores."""
    busy = [
        (b1 - b0) / max(t1 - t0, 1e-9)
        for (b0, t0), (b1, t1) in zip(before.cores, after.cores, strict=True)
    ]
    own_s = sum(s - before.own.get(pid, 0.0) for pid, s in after.own.items())
    return busy, max(own_s, 0.0) / max(after.at - before.at, 1e-9)


def taken_by_others(busy: list[float], own: float) -> int:
    """Cores that other processes' work fills: the allowed cores' busy time less the job's
    own, a core for each whole core of it and one more for a part over TAKEN. Summed, not
    core by core: a thread that moves between cores shares one with another process for a
    while, and its own use would hide that process's on that core."""
    others = max(sum(busy) - own, 0.0)
    return min(len(busy), max(0, math.ceil(others - TAKEN)))


def choose(cores: int, world: int, taken: int, decoders: int) -> int:
    """Threads of one of the job's `world` processes: the cores others leave, shared, less
    this process's `decoders` (the DataLoader processes of streamed data), at least one."""
    return max(1, (cores - taken) // world - decoders)


class Threads:
    """The torch threads of one training process: the setting, else chosen at each look."""

    def __init__(self, world: int) -> None:
        self.world, self.decoders, self.taken = world, 0, 0
        self.fixed = get_settings().train_threads
        self.last = look(world)

    @classmethod
    def first_look(cls, world: int) -> "Threads":
        """Threads chosen (and set) from a first look at the cores, or from the setting."""
        threads = cls(world)
        if not threads.fixed:
            time.sleep(FIRST_LOOK_S)
            threads.look_again()
        threads.apply()
        return threads

    def set_decoders(self, decoders: int) -> None:
        self.decoders = decoders
        self.apply()

    def due(self) -> bool:
        return not self.fixed and time.monotonic() - self.last.at >= LOOK_EVERY_S

    def look_again(self) -> None:
        now = look(self.world)
        busy, own = fractions(self.last, now)
        self.last, self.taken = now, taken_by_others(busy, own)

    def choice(self) -> int:
        cores = len(self.last.cores)
        return self.fixed or choose(cores, self.world, self.taken, self.decoders)

    def apply(self) -> int:
        """Set torch's threads to the choice; returns it."""
        chosen, before = self.choice(), torch.get_num_threads()
        if chosen != before:
            torch.set_num_threads(chosen)
            log.info(
                "CPU threads %d -> %d (%d of %d cores taken by other processes, %d decoders)",
                *(before, chosen, self.taken, len(self.last.cores), self.decoders),
            )
        return chosen


class Adapting:
    """A job's callbacks, with the threads chosen again about every LOOK_EVERY_S of training:
    between steps, on every rank (each asks should_stop before each step)."""

    def __init__(self, callbacks: loop.Callbacks, threads: Threads) -> None:
        self.callbacks, self.threads = callbacks, threads

    def should_stop(self) -> bool:
        if self.threads.due():
            self.threads.look_again()
            self.threads.apply()
        return self.callbacks.should_stop()

    def on_step(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        self.callbacks.on_step(epoch, step, steps_per_epoch)

    def preempted(self) -> bool:
        return self.callbacks.preempted()

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.callbacks.on_epoch(epoch, metrics)

    def on_checkpoint(self, path: Path, epoch: int, kind: str, step: int | None) -> None:
        self.callbacks.on_checkpoint(path, epoch, kind, step)

    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        self.callbacks.on_event(type_, message, data)


def look(world: int) -> Look:
    """The allowed cores' CPU times and the job's processes' now."""
    per_core = psutil.cpu_times(percpu=True)
    cores = [core_times(per_core[i]) for i in sorted(os.sched_getaffinity(0))]
    return Look(time.monotonic(), cores, job_cpu(world))


def core_times(times: Any) -> tuple[float, float]:
    """(busy, total) seconds of one core; Linux counts guest time inside user time."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def job_cpu(world: int) -> dict[int, float]:
    """CPU seconds of this process, the job's other ranks and all their children."""
    cpu: dict[int, float] = {}
    for proc in job_processes(world):
        with contextlib.suppress(psutil.Error):  # gone since it was listed
            t = proc.cpu_times()
            cpu[proc.pid] = t.user + t.system
    return cpu


def job_processes(world: int) -> list[psutil.Process]:
    """This process and, in a job on several processes, its sibling ranks (the same command
    but the rank), with every process they started."""
    me = psutil.Process()
    ranks = [me]
    if world > 1 and (parent := me.parent()) is not None:
        ranks = [p for p in parent.children() if command(p)[:-2] == me.cmdline()[:-2]]
    found = []
    for rank in ranks:
        with contextlib.suppress(psutil.Error):
            found += [rank, *rank.children(recursive=True)]
    return found


def command(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []
