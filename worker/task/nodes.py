"""A worker's side of a job across nodes (`resources.nodes`; the gang's seats are
service/jobs/gangs.py). The worker holds its seat until the gang is complete; then node 0
runs the job as any job is run (worker/task/runner.py) once it has published its rendezvous
(this host and a fresh port), and every other node starts its ranks at that address and
holds its seat, a lease renewed every heartbeat, until they are done. Torch-free."""

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy.orm import Session

from service import logs
from service.config import Settings
from service.db.sessions import session_scope
from service.jobs import gangs, lifecycle
from service.jobs.gangs import Held, Seat
from service.spec.job import JobSpec
from worker.engine.stop import Preempted
from worker.task.context import JobContext, LeaseLost, job_inputs
from worker.task.supervisor import Node, NodeLost, RankFailed, Ranks

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a waiting worker looks whether its gang is complete


@dataclass(frozen=True)
class Moved:
    """The worker left its seat: an older job with room waits in `queue`."""

    queue: str


def gather(
    seat: Seat, queues: Sequence[str], settings: Settings, draining: threading.Event
) -> "JobContext | Member | Moved | None":
    """Hold `seat` until its gang is complete: node 0 then owns the job (its context), any
    other node is a Member. Moved when an older job has room (the seat given up), None when
    the job went away or this worker shuts down."""
    renewed = 0.0
    while True:
        with session_scope() as s:
            if draining.is_set():
                gangs.leave(s, seat)
                return None
            if due := time.monotonic() - renewed >= settings.heartbeat_s:
                renewed = time.monotonic()
            held = gangs.renew(s, seat, settings.lease_s) if due else gangs.look(s, seat)
            if held.started:
                return _started(s, seat, held, settings)
            if not held.mine or held.status != "queued":
                return None
            if (older := gangs.older_open(s, seat.job_id, queues)) and gangs.leave(s, seat):
                log.info("left job %s's gang for older job %s", seat.job_id, older.job_id)
                return Moved(older.queue)
        time.sleep(POLL_S)


def _started(s: Session, seat: Seat, held: Held, settings: Settings) -> "JobContext | Member":
    spec = JobSpec.model_validate(lifecycle.get_job(s, seat.job_id).spec)
    if seat.node == 0:
        return JobContext(seat.job_id, seat.owner, spec, settings, watch_nodes=True)
    return Member(seat, spec, held.attempt, settings)


def rendezvous(ctx: JobContext, host: str) -> Node:
    """Node 0's part: a fresh port on this host for rank 0's c10d store, published."""
    with socket.socket() as probe:  # the OS picks a free port; rank 0 binds it moments later
        probe.bind((host, 0))
        address = f"{host}:{probe.getsockname()[1]}"
    ctx.publish(address)
    resources = ctx.spec.resources
    return Node(0, resources.nodes, resources.gpus, address)


class Member:
    """A node past 0 of a running job across nodes. The job's record is node 0's: a member
    writes only its seat (renewed every heartbeat by a thread) and a warning when its own
    processes fail."""

    def __init__(self, seat: Seat, spec: JobSpec, attempt: int, settings: Settings) -> None:
        self.seat, self.spec, self.attempt, self.settings = seat, spec, attempt, settings
        self.job_id, self.owner = seat.job_id, seat.owner
        self.held: Held | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_forever, daemon=True)

    @property
    def holds(self) -> bool:
        """Still in this attempt's gang (a requeue, a cancel or the job's end ends it)."""
        return self.held is None or (self.held.started and self.held.attempt == self.attempt)

    def __enter__(self) -> "Member":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType]) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat_forever(self) -> None:
        logs.JOB_ID.set(self.job_id)
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.beat()
            except Exception:  # a DB blip: the lease has slack, try again next beat
                log.exception("seat %s of job %s not renewed", self.seat.node, self.job_id)

    def beat(self, state: str | None = None) -> None:
        with session_scope() as s:
            self.held = gangs.renew(s, self.seat, self.settings.lease_s, state)

    def leave(self) -> None:
        """This worker shuts down: node 0 sees the seat leaving, saves and gives the job up."""
        self.beat(gangs.LEAVING)

    def done(self) -> None:
        """This node's processes finished training: node 0 no longer needs its seat."""
        self.beat(gangs.DONE)

    def address(self) -> str | None:
        """The rendezvous node 0 publishes for this attempt; None once the seat is lost."""
        while self.holds:
            if self.held is not None and self.held.rendezvous:
                return self.held.rendezvous
            time.sleep(POLL_S)
            self.beat()
        return None

    def event(self, type_: str, message: str, **data: object) -> None:
        """An event of the job, while this attempt is still the job's."""
        with session_scope() as s:
            self.held = gangs.renew(s, self.seat, self.settings.lease_s)
            if self.holds:
                lifecycle.add_event(s, self.job_id, type_, message, node=self.seat.node, **data)


def run_member(member: Member, draining: threading.Event) -> str:
    """Train this node's share of the job; returns how this node's part ended."""
    with logs.job_context(member.job_id), member:
        if (address := member.address()) is None:
            return "lost"
        resources = member.spec.resources
        node = Node(member.seat.node, resources.nodes, resources.gpus, address)
        inputs = job_inputs(member.job_id, member.spec)
        try:
            with Ranks.started(member, inputs, node) as ranks:
                logs_at = str(ranks.folder.relative_to(inputs.job_dir))
                where = f"node {node.index} of {node.count} on {socket.gethostname()}"
                member.event("node", f"{where}: ranks {list(node.ranks())}", logs=logs_at)
                ranks.finished(member, draining)
        except LeaseLost:
            return "lost"
        except Preempted:
            return "preempted"
        except NodeLost as exc:
            log.warning("job %s: node %d lost its peers: %s", member.job_id, node.index, exc)
            return "node lost"
        except RankFailed as exc:
            with contextlib.suppress(Exception):
                member.event("warning", f"node {node.index} failed: {exc}"[:4000])
            return "failed"
        member.done()
        return "done"
