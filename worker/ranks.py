"""The processes that train a job. This one is rank 0: the Celery task, which reports and
writes the outputs. A job with `resources.gpus: N` also has ranks 1..N-1, `python -m
worker.rank` children that read the job from a file rank 0 writes, watched and always
stopped. One sequence for one process and for N: a job of one has no other ranks.

Not multiprocessing: the job runs in Celery's prefork pool child, a daemonic process, and
those may not start processes of their own.
"""

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from service.errors import JobError
from service.spec import JobSpec
from worker.context import JobContext, LeaseLost
from worker.engine import loop
from worker.engine.distributed import TIMEOUT, process_group, rank_device
from worker.inputs import JobInputs

log = logging.getLogger(__name__)
JOB_FILE = "job.json"  # the resolved spec and the inputs, for ranks 1..N-1


def job_device(name: str, world: int) -> torch.device:
    """Rank 0's device; a CUDA job needs a GPU for each of its processes."""
    device = rank_device(name, 0)
    if device.type == "cuda" and (have := torch.cuda.device_count()) < world:
        raise JobError(
            "device_unavailable",
            f"resources.gpus is {world} but this worker sees {have} CUDA device(s); "
            f"run it on a worker with at least {world} GPUs",
            retryable=True,
        )
    return device


def share_cpu(device: torch.device, world: int) -> None:
    """N processes training on one machine's CPU share its cores instead of each taking all."""
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // world))


def _attempt_dir(job_dir: Path) -> Path:
    """A new folder per attempt for the rendezvous file (it must not exist beforehand), the
    job file, the ranks' logs and their ready files."""
    return job_dir / "ddp" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


class RankFailed(RuntimeError):
    """Another rank of the job exited on its own before rank 0 was done."""


def ready_path(rendezvous: Path, rank: int) -> Path:
    """A rank touches it once it has built its plan, just before it joins the group."""
    return rendezvous.with_name(f"rank{rank}.ready")


def log_path(rendezvous: Path, rank: int) -> Path:
    return rendezvous.with_name(f"rank{rank}.log")


@dataclass
class Ranks:
    """Ranks 1..N-1 of a job, each a child process with its own log, around rank 0."""

    rendezvous: Path  # in a new folder per attempt, with the job file and the ranks' logs
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")  # rank 0's
    layout: dict[str, Any] = field(default_factory=dict)  # devices and logs, for an event

    @property
    def world(self) -> int:
        return len(self.procs) + 1

    @classmethod
    @contextlib.contextmanager
    def started(cls, spec: JobSpec, inputs: JobInputs, device: torch.device) -> Iterator["Ranks"]:
        """The job's other ranks, started; stopped on the way out (given a few seconds to
        finish their last evaluation when the block succeeded)."""
        world = spec.resources.gpus
        ranks = cls(_attempt_dir(inputs.job_dir) / "rendezvous", device=device)
        threads, done = torch.get_num_threads(), False
        try:
            if world > 1:
                ranks.spawn(spec, inputs, world)
            share_cpu(device, world)
            yield ranks
            done = True
        finally:
            ranks.stop(grace_s=10 if done else 0)
            torch.set_num_threads(threads)

    def spawn(self, spec: JobSpec, inputs: JobInputs, world: int) -> None:
        self.rendezvous.parent.mkdir(parents=True)
        job_file = self.rendezvous.with_name(JOB_FILE)
        job = {"spec": spec.model_dump(mode="json"), "inputs": inputs.to_dict()}
        job_file.write_text(json.dumps(job))
        self.layout = {
            "devices": [str(rank_device(spec.train.device, r)) for r in range(world)],
            "logs": str(self.rendezvous.parent.relative_to(inputs.job_dir)),
        }
        for rank in range(1, world):
            cmd = [sys.executable, "-m", "worker.rank", str(job_file), str(rank), str(world)]
            with log_path(self.rendezvous, rank).open("ab") as out:  # the child has its own fd
                self.procs[rank] = subprocess.Popen(
                    [*cmd, str(self.rendezvous)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
                )

    def train(self, plan: loop.TrainPlan, ctx: JobContext) -> loop.TrainResult:
        """Rank 0's run: alone, or in the job's process group once every rank is ready."""
        if not self.procs:
            return loop.train(plan, ctx)
        self.wait_ready(ctx)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        ctx.event(
            "distributed",
            f"training on {self.world} processes ({backend})",
            world=self.world,
            backend=backend,
            **self.layout,
        )
        with process_group(0, self.world, self.rendezvous, self.device):
            try:
                return loop.train(plan, Watched(ctx, self))
            except (loop.Stopped, LeaseLost, RankFailed):
                raise
            except Exception as exc:  # another rank's death is the usual cause: say so
                self.note_failures(exc)
                raise

    def failed(self) -> dict[int, int]:
        """{rank: exit code} of the ranks that have exited with an error."""
        codes = {rank: proc.poll() for rank, proc in self.procs.items()}
        return {rank: code for rank, code in codes.items() if code}

    def check(self) -> None:
        if failed := self.failed():
            raise RankFailed(self.describe(failed))

    def describe(self, failed: dict[int, int]) -> str:
        return "\n".join(
            f"rank {rank} exited with code {code}; the end of its log "
            f"({log_path(self.rendezvous, rank).name}):\n{_tail(log_path(self.rendezvous, rank))}"
            for rank, code in sorted(failed.items())
        )

    def wait_ready(self, reporter: Any) -> None:
        """Until every rank has built its plan. Joining the group blocks until all ranks join,
        so a rank that died or a cancel would be noticed only after its 10-minute timeout."""
        deadline = time.monotonic() + TIMEOUT.total_seconds()
        waiting = set(self.procs)
        while waiting:
            self.check()
            if reporter.should_stop():
                raise loop.Stopped("stopped while the job's processes started")
            if time.monotonic() > deadline:
                raise RankFailed(f"ranks {sorted(waiting)} did not start within {TIMEOUT}")
            waiting = {r for r in waiting if not ready_path(self.rendezvous, r).exists()}
            time.sleep(0.1 if waiting else 0)

    def note_failures(self, exc: BaseException, grace_s: float = 2.0) -> None:
        """Add to `exc` the log of any rank that exited with an error (within `grace_s`)."""
        deadline = time.monotonic() + grace_s
        while not (failed := self.failed()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if failed:
            exc.add_note(self.describe(failed))

    def stop(self, grace_s: float) -> None:
        """Let the ranks exit on their own for `grace_s`, then terminate, then kill; reap."""
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for rank, proc in self.procs.items():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.info(
                "rank %d of %s exited with code %s", rank, self.rendezvous.parent, proc.returncode
            )


@dataclass
class Watched:
    """Rank 0's callbacks: the context's, and a rank that exited with an error stops the
    loop at its next step (before the next collective waits on it)."""

    reporter: JobContext
    ranks: Ranks

    def on_step(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        self.reporter.on_step(epoch, step, steps_per_epoch)

    def should_stop(self) -> bool:
        self.ranks.check()
        return self.reporter.should_stop()

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.reporter.on_epoch(epoch, metrics)

    def on_checkpoint(self, path: Path, epoch: int, kind: str) -> None:
        self.reporter.on_checkpoint(path, epoch, kind)

    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        self.reporter.on_event(type_, message, data)


def _tail(path: Path, size: int = 2000) -> str:
    with contextlib.suppress(OSError), path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode(errors="replace").strip()
    return "(no log)"
