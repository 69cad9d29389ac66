"""The processes that train a job, seen from the Celery task that supervises them. The task
launches one per rank of its node (`resources.gpus`): `python -m worker.job.rank FOLDER RANK
WORLD`, each reading the job from a file in a new folder per attempt. Rank 0 reports through
its own JobContext and leaves its outcome in the folder; the task only watches the processes
and stops them all whatever happens. Not multiprocessing: a job has its own process tree
(DataLoader workers, CUDA state) that goes away with it, and the worker process never
imports torch. A worker shutting down asks rank 0 to save and give the job up. A job across
nodes (`resources.nodes`) has such a task on each node; node 0's has rank 0."""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from service.errors import JobError
from service.spec.job import JobSpec
from worker.engine.stop import Preempted, Stopped
from worker.task.context import JobContext, LeaseLost
from worker.task.inputs import JobInputs

log = logging.getLogger(__name__)

JOB_FILE = "job.json"  # the job id, the owner of its lease, the resolved spec, its inputs
RESULT_FILE = "result.json"  # rank 0's result summary, once the job's outputs are written
ERROR_FILE = "error.json"  # rank 0's JobError, when it failed with one
# rank 0's exit codes besides 0 (result written) and 1 (error written)
EXIT_STOPPED = 3  # cancelled, or past max_runtime_s
EXIT_LEASE_LOST = 4  # another attempt owns the job now
EXIT_PREEMPTED = 5  # asked to give the job up (SIGTERM): saved where it was, or could not
EXIT_NODE_LOST = 6  # any rank of a job across nodes: a collective failed, a peer went away
POLL_S = 0.2
STOP_GRACE_S = 30.0  # a rank 0 asked to stop (a cancel) that has not, is terminated after it
# a rank 0 asked to give the job up (the worker shutting down) that has not saved and left
# by then is ended: the job resumes from its last checkpoint
PREEMPT_GRACE_S = 20.0
# PyTorch's CPU allocator asks for transparent huge pages for blocks of 2 MiB or more (read
# once, at a process's first allocation; kernels whose THP mode is "madvise" or "always"):
# a batch of images is such a block, which glibc would otherwise map afresh, page by page,
# for every batch (measured: README, Data throughput)
TRAINING_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}


class Claimed(Protocol):
    """A worker's hold on a job (JobContext; on a node past 0, worker/task/nodes.py's
    Member): what its processes are told."""

    job_id: str
    owner: str
    spec: JobSpec


class Seated(Claimed, Protocol):
    """A node past 0 of a job across nodes, as its processes' supervisor sees it."""

    @property
    def holds(self) -> bool:
        """Whether this worker still has its seat in the job's running gang."""

    def leave(self) -> None:
        """Tell node 0 this worker shuts down (it saves and gives the job up)."""


class RankFailed(RuntimeError):
    """A process of the job exited without the job's outcome."""


class NodeLost(RuntimeError):
    """A node of a job across nodes went away: its worker stopped renewing its seat, or a
    rank lost its peers mid-collective (or was killed by a signal). The attempt ends; the
    job goes back to its queue, to resume from its last checkpoint on the next gang."""


@dataclass(frozen=True)
class Node:
    """This worker's part of a job: node `index` of `count`, `gpus` processes on each. The
    ranks of a job across nodes meet at `address` (host:port of rank 0's c10d store, a
    fresh one per attempt); those of a job on one node at a file in the attempt's folder."""

    index: int = 0
    count: int = 1
    gpus: int = 1
    address: str | None = None

    @property
    def world(self) -> int:
        return self.count * self.gpus

    def ranks(self) -> range:
        """The global ranks of this node's processes."""
        return range(self.index * self.gpus, (self.index + 1) * self.gpus)

    def local(self, rank: int) -> int:
        """Rank `rank`'s place on its node: the GPU it trains on."""
        return rank - self.index * self.gpus


def rendezvous(folder: Path) -> Path:
    """The file the ranks of a job on several processes meet at (it must not exist yet)."""
    return folder / "rendezvous"


def training_env() -> dict[str, str]:
    """This process's environment, with TRAINING_ENV's settings where it has none of its own."""
    return TRAINING_ENV | dict(os.environ)


def ready_path(folder: Path, rank: int) -> Path:
    """A rank touches it once it has built its plan, just before it joins the group."""
    return folder / f"rank{rank}.ready"


def log_path(folder: Path, rank: int) -> Path:
    return folder / f"rank{rank}.log"


@dataclass
class Ranks:
    """A job's processes, each with its own log in the attempt's folder."""

    folder: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    node: Node = Node()

    @classmethod
    @contextlib.contextmanager
    def started(cls, ctx: Claimed, inputs: JobInputs, node: Node = Node()) -> Iterator["Ranks"]:
        """This node's processes of the job, started; stopped on the way out (given a few
        seconds to finish when they have the outcome)."""
        ranks = cls(attempt_dir(inputs.job_dir), node=node)
        done = False
        try:
            ranks.spawn(job_file(ctx, inputs, node))
            yield ranks
            done = True
        finally:
            ranks.stop(grace_s=10 if done else 0)

    def spawn(self, job: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True)
        (self.folder / JOB_FILE).write_text(json.dumps(job))
        for rank in self.node.ranks():
            args = [str(self.folder), str(rank), str(self.node.world)]
            self.start(rank, [sys.executable, "-m", "worker.job.rank", *args])

    def start(self, rank: int, cmd: list[str]) -> None:
        """Rank `rank` as `cmd`, in the training processes' environment, output to its log."""
        with log_path(self.folder, rank).open("ab") as out:  # the child has its own fd
            self.procs[rank] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=training_env()
            )

    def outcome(self, ctx: JobContext, draining: threading.Event) -> dict[str, Any]:
        """Wait for rank 0's outcome, watching every process and the job: the job's result,
        or the exception that says how it ended. Once `draining` is set (the worker shuts
        down) rank 0 is asked to save and give the job up."""
        asked_to_stop: float | None = None
        asked_to_yield: float | None = None
        while (code := self.procs[0].poll()) is None:
            self.check(exclude_rank_0=True)
            if ctx.status is None:
                raise LeaseLost(ctx.job_id)
            if ctx.nodes_lost:
                raise NodeLost(f"node(s) {ctx.nodes_lost} lost: their worker stopped renewing")
            if ctx.status == "cancelling":
                asked_to_stop = asked_to_stop or time.monotonic()
                if time.monotonic() - asked_to_stop > STOP_GRACE_S:
                    raise Stopped("the job's processes did not stop when asked")
            # this worker shuts down, or another node's does (it marked its seat leaving)
            if (draining.is_set() or ctx.nodes_leaving) and asked_to_yield is None:
                self.procs[0].send_signal(signal.SIGTERM)
                asked_to_yield = time.monotonic()
            if asked_to_yield and time.monotonic() - asked_to_yield > PREEMPT_GRACE_S:
                raise Preempted()  # not saved in time: the last checkpoint stands
            time.sleep(POLL_S)
        if asked_to_yield and code < 0:  # a shutdown signal reached it before its handler
            raise Preempted()
        return self.read_outcome(code)

    def finished(self, member: Seated, draining: threading.Event) -> None:
        """Wait for the processes of a node past node 0 (the job's outcome is rank 0's):
        returns when they all finished training; NodeLost or RankFailed when they did not,
        LeaseLost when the seat was lost (the job ended or went back to its queue). Once
        `draining` is set the seat is marked leaving: node 0 saves and gives the job up."""
        asked_to_yield: float | None = None
        while any(proc.poll() is None for proc in self.procs.values()):
            if not member.holds:
                raise LeaseLost(member.job_id)
            if draining.is_set() and asked_to_yield is None:
                member.leave()
                asked_to_yield = time.monotonic()
            if asked_to_yield and time.monotonic() - asked_to_yield > PREEMPT_GRACE_S:
                raise Preempted()
            time.sleep(POLL_S)
        if asked_to_yield:
            raise Preempted()
        self.check()

    def read_outcome(self, code: int) -> dict[str, Any]:
        if code == 0:
            return dict(json.loads((self.folder / RESULT_FILE).read_text()))
        if code == EXIT_STOPPED:
            raise Stopped("rank 0 stopped")
        if code == EXIT_LEASE_LOST:
            raise LeaseLost(str(self.folder))
        if code == EXIT_PREEMPTED:
            raise Preempted()
        if self.node.count > 1 and (code == EXIT_NODE_LOST or code < 0):
            raise NodeLost(self.describe({0: code}))
        self.check(exclude_rank_0=True)  # another rank's death is the usual cause: name it
        error = self.folder / ERROR_FILE
        if error.exists():
            raise JobError(**json.loads(error.read_text()))
        raise RankFailed(self.describe({0: code}))

    def failed(self, exclude_rank_0: bool = False) -> dict[int, int]:
        """{rank: exit code} of the ranks that have exited with an error."""
        codes = {r: p.poll() for r, p in self.procs.items() if r or not exclude_rank_0}
        return {rank: code for rank, code in codes.items() if code}

    def check(self, exclude_rank_0: bool = False) -> None:
        """RankFailed for a process that exited with an error; across nodes NodeLost when
        it lost its peers or a signal killed it (an NCCL abort, a preempted host)."""
        if not (failed := self.failed(exclude_rank_0)):
            return
        lost = [code == EXIT_NODE_LOST or code < 0 for code in failed.values()]
        if self.node.count > 1 and all(lost):
            raise NodeLost(self.describe(failed))
        raise RankFailed(self.describe(failed))

    def describe(self, failed: dict[int, int]) -> str:
        return "\n".join(
            f"rank {rank} exited with code {code}; the end of its log "
            f"({log_path(self.folder, rank).name}):\n{_tail(log_path(self.folder, rank))}"
            for rank, code in sorted(failed.items())
        )

    def stop(self, grace_s: float) -> None:
        """Let the processes exit on their own for `grace_s`, then terminate, then kill; reap."""
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
            log.info("rank %d of %s exited with code %s", rank, self.folder, proc.returncode)


def job_file(ctx: Claimed, inputs: JobInputs, node: Node) -> dict[str, Any]:
    """What every rank reads: the job, the owner of its lease, its spec and inputs, and its
    node's part of the job."""
    return {
        "job_id": ctx.job_id,
        "owner": ctx.owner,
        "spec": ctx.spec.model_dump(mode="json"),
        "inputs": inputs.to_dict(),
        "node": asdict(node),
    }


@dataclass(frozen=True)
class JobFile:
    job_id: str
    owner: str
    spec: JobSpec
    inputs: JobInputs
    node: Node


def read_job(folder: Path) -> JobFile:
    job = json.loads((folder / JOB_FILE).read_text())
    spec = JobSpec.model_validate(job["spec"])
    inputs = JobInputs.from_dict(job["inputs"])
    return JobFile(job["job_id"], job["owner"], spec, inputs, Node(**job["node"]))


def attempt_dir(job_dir: Path) -> Path:
    """A new folder per attempt: the job file, the rendezvous, the ranks' logs, the outcome."""
    return job_dir / "ranks" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def _tail(path: Path, size: int = 2000) -> str:
    with contextlib.suppress(OSError), path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode(errors="replace").strip()
    return "(no log)"
