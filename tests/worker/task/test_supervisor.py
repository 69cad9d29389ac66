"""The task's side of a job's processes (worker/task/supervisor.py), without a service or torch: how
it reads rank 0's outcome, watches every process and the job, and stops them all. Stand-in
child processes play the ranks."""

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.errors import JobError
from worker.engine.stop import Preempted, Stopped
from worker.task import supervisor
from worker.task.context import LeaseLost
from worker.task.supervisor import Ranks


@dataclass
class Job:
    """What the task knows of the job while it waits: its status as the last beat read."""

    status: str | None = "running"
    job_id: str = "job_x"
    nodes_lost: list[int] = field(default_factory=list)  # a job across nodes: node 0's view
    nodes_leaving: list[int] = field(default_factory=list)


def started(tmp_path: Path, **codes: str) -> Ranks:
    """Ranks whose rank N runs the Python code `codes["rN"]`, its output in its log."""
    children = Ranks(tmp_path)
    for name, code in codes.items():
        rank = int(name.removeprefix("r"))
        with supervisor.log_path(tmp_path, rank).open("ab") as out:
            children.procs[rank] = subprocess.Popen(
                [sys.executable, "-c", code], stdout=out, stderr=out, cwd=tmp_path
            )
    return children


SLEEP = "import time; time.sleep(60)"
RUNNING = threading.Event()  # the worker is not shutting down
DRAINING = threading.Event()
DRAINING.set()


def writes(name: str, obj: object, code: int) -> str:
    text = json.dumps(obj)
    return f"import pathlib, sys; pathlib.Path({name!r}).write_text({text!r}); sys.exit({code})"


def test_rank_0s_result_is_the_jobs(tmp_path):
    children = started(tmp_path, r0=writes(supervisor.RESULT_FILE, {"val_acc": 0.9}, 0))
    assert children.outcome(Job(), RUNNING) == {"val_acc": 0.9}  # type: ignore[arg-type]


def test_rank_0s_error_is_the_jobs(tmp_path):
    error = {"code": "diverged", "message": "loss is nan", "retryable": False}
    children = started(tmp_path, r0=writes(supervisor.ERROR_FILE, error, 1))
    with pytest.raises(JobError) as failed:
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]
    assert failed.value.as_dict() == error


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        (supervisor.EXIT_STOPPED, Stopped),
        (supervisor.EXIT_LEASE_LOST, LeaseLost),
        (supervisor.EXIT_PREEMPTED, Preempted),
    ],
)
def test_rank_0_stopped_or_lost(tmp_path, code, raised):
    children = started(tmp_path, r0=f"import sys; sys.exit({code})")
    with pytest.raises(raised):
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]


def test_rank_0_dead_without_an_outcome_is_named_with_its_log(tmp_path):
    children = started(tmp_path, r0="import os; print('killed by the OOM killer'); os._exit(9)")
    with pytest.raises(supervisor.RankFailed, match="(?s)rank 0 exited with code 9.*OOM killer"):
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]


def test_another_rank_that_dies_fails_the_job_with_its_log_and_all_stop(tmp_path):
    children = started(tmp_path, r0=SLEEP, r1="import sys; sys.exit('CUDA out of memory')")
    with pytest.raises(supervisor.RankFailed, match="(?s)rank 1 exited with code 1.*out of memory"):
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]
    children.stop(grace_s=0)
    assert children.procs[0].returncode == -signal.SIGTERM  # not SIGKILL: stopped when asked


def test_a_lost_lease_stops_the_wait(tmp_path):
    children = started(tmp_path, r0=SLEEP)
    with pytest.raises(LeaseLost):
        children.outcome(Job(status=None), RUNNING)  # type: ignore[arg-type]
    children.stop(grace_s=0)


def test_a_rank_0_that_ignores_a_cancel_is_stopped_after_a_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "STOP_GRACE_S", 0.5)
    children = started(tmp_path, r0=SLEEP)
    with pytest.raises(Stopped):
        children.outcome(Job(status="cancelling"), RUNNING)  # type: ignore[arg-type]
    children.stop(grace_s=0)
    assert children.procs[0].returncode == -signal.SIGTERM


def test_rank_0s_error_caused_by_another_ranks_death_names_that_rank(tmp_path):
    error = {"code": "training_error", "message": "Connection closed by peer", "retryable": False}
    children = started(
        tmp_path,
        r1="import sys; sys.exit('rank 1 ran out of memory')",
        r0="import time; time.sleep(1); " + writes(supervisor.ERROR_FILE, error, 1),
    )
    children.procs[1].wait()
    children.procs[0].wait()  # both gone before the task looks
    with pytest.raises(supervisor.RankFailed, match="(?s)rank 1 exited.*out of memory"):
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]


def handler_in_place(folder: Path, timeout: float = 60) -> None:
    """Until rank 0 says (its file `ready`) that its SIGTERM handler is in place."""
    deadline = time.monotonic() + timeout
    while not (folder / "ready").exists():
        assert time.monotonic() < deadline, "rank 0 never set its handler"
        time.sleep(0.05)


def test_a_worker_shutting_down_asks_rank_0_to_save_and_leave(tmp_path):
    saves_on_sigterm = (
        "import pathlib, signal, sys, time\n"
        "def leave(*_):\n"
        f"    pathlib.Path('saved').touch(); sys.exit({supervisor.EXIT_PREEMPTED})\n"
        "signal.signal(signal.SIGTERM, leave)\n"
        "pathlib.Path('ready').touch()\n"
        "time.sleep(60)\n"
    )
    children = started(tmp_path, r0=saves_on_sigterm, r1=SLEEP)
    handler_in_place(tmp_path)
    with pytest.raises(Preempted):
        children.outcome(Job(), DRAINING)  # type: ignore[arg-type]
    assert (tmp_path / "saved").exists()
    children.stop(grace_s=0)


def test_a_rank_0_that_does_not_leave_when_asked_is_given_up_after_a_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "PREEMPT_GRACE_S", 0.5)
    ignores = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path('ready').touch(); time.sleep(60)"
    )
    children = started(tmp_path, r0=ignores)
    handler_in_place(tmp_path)
    with pytest.raises(Preempted):
        children.outcome(Job(), DRAINING)  # type: ignore[arg-type]
    children.stop(grace_s=0)
    assert children.procs[0].returncode == -signal.SIGKILL


ACROSS_TWO = supervisor.Node(index=0, count=2, gpus=2)  # node 0 of a job on two nodes
LOST_PEERS = f"import sys; sys.exit({supervisor.EXIT_NODE_LOST})"
KILLED = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"


@pytest.mark.parametrize("rank_0", [LOST_PEERS, KILLED])
def test_across_nodes_rank_0_that_lost_its_peers_or_was_killed_is_a_lost_node(tmp_path, rank_0):
    children = started(tmp_path, r0=rank_0)
    children.node = ACROSS_TWO
    with pytest.raises(supervisor.NodeLost, match="rank 0 exited"):
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]


def test_across_nodes_another_rank_that_lost_its_peers_is_a_lost_node(tmp_path):
    children = started(tmp_path, r0=SLEEP, r1=LOST_PEERS)
    children.node = ACROSS_TWO
    with pytest.raises(supervisor.NodeLost, match="rank 1 exited with code 6"):
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]
    children.stop(grace_s=0)


def test_across_nodes_a_rank_that_crashed_on_its_own_fails_the_job(tmp_path):
    children = started(tmp_path, r0=SLEEP, r1="import sys; sys.exit('CUDA out of memory')")
    children.node = ACROSS_TWO
    with pytest.raises(supervisor.RankFailed, match="out of memory"):
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]
    children.stop(grace_s=0)


def test_on_one_node_a_lost_peer_is_no_lost_node(tmp_path):
    children = started(tmp_path, r0=SLEEP, r1=LOST_PEERS)
    with pytest.raises(supervisor.RankFailed):
        children.outcome(Job(), RUNNING)  # type: ignore[arg-type]
    children.stop(grace_s=0)


def test_a_node_whose_worker_stopped_renewing_its_seat_ends_the_attempt(tmp_path):
    children = started(tmp_path, r0=SLEEP)
    children.node = ACROSS_TWO
    with pytest.raises(supervisor.NodeLost, match=r"node\(s\) \[1\] lost"):
        children.outcome(Job(nodes_lost=[1]), RUNNING)  # type: ignore[arg-type]
    children.stop(grace_s=0)


SAVES_ON_SIGTERM = (
    "import pathlib, signal, sys, time\n"
    "def leave(*_):\n"
    f"    pathlib.Path('saved').touch(); sys.exit({supervisor.EXIT_PREEMPTED})\n"
    "signal.signal(signal.SIGTERM, leave)\n"
    "pathlib.Path('ready').touch()\n"
    "time.sleep(60)\n"
)


def test_a_node_leaving_asks_rank_0_to_save_and_give_the_job_up(tmp_path):
    children = started(tmp_path, r0=SAVES_ON_SIGTERM)
    children.node = ACROSS_TWO
    handler_in_place(tmp_path)
    with pytest.raises(Preempted):  # this worker is not shutting down: node 1's is
        children.outcome(Job(nodes_leaving=[1]), RUNNING)  # type: ignore[arg-type]
    assert (tmp_path / "saved").exists()


@dataclass
class Member:
    """A node past 0 as its supervisor sees it: whether it holds its seat, whether it said
    it leaves."""

    holds: bool = True
    left: bool = False
    job_id: str = "job_x"

    def leave(self) -> None:
        self.left = True


NODE_1 = supervisor.Node(index=1, count=2, gpus=2)


def test_a_members_processes_that_finish_training_end_its_part(tmp_path):
    children = started(tmp_path, r2="pass", r3="import time; time.sleep(0.5)")
    children.node = NODE_1
    children.finished(Member(), RUNNING)  # type: ignore[arg-type]
    assert children.failed() == {}


def test_a_member_that_lost_its_seat_stops_waiting(tmp_path):
    children = started(tmp_path, r2=SLEEP)
    children.node = NODE_1
    with pytest.raises(LeaseLost):
        children.finished(Member(holds=False), RUNNING)  # type: ignore[arg-type]
    children.stop(grace_s=0)


def test_a_member_shutting_down_says_so_and_waits_for_node_0_to_save(tmp_path):
    member = Member()
    # node 0 saves and leaves; this node's rank then loses its peers
    children = started(tmp_path, r2="import time; time.sleep(1); " + LOST_PEERS)
    children.node = NODE_1
    with pytest.raises(Preempted):
        children.finished(member, DRAINING)  # type: ignore[arg-type]
    assert member.left and children.procs[2].returncode == supervisor.EXIT_NODE_LOST


# ten 64 MiB tensors, each freed before the next is made: the minor page faults they cost
ALLOCATE = """
import os, resource, torch
print(os.environ.get("THP_MEM_ALLOC_ENABLE"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = (64 << 20) // 4096  # 4 KiB pages in 64 MiB
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_a_rank_allocates_in_huge_pages_where_the_kernel_allows(tmp_path):
    children = Ranks(tmp_path)
    children.start(0, [sys.executable, "-c", ALLOCATE])
    assert children.procs[0].wait(timeout=60) == 0
    setting, faults = supervisor.log_path(tmp_path, 0).read_text().split()
    assert setting == "1"
    plain = subprocess.run([sys.executable, "-c", ALLOCATE], capture_output=True, text=True)
    unset, plain_faults = plain.stdout.split()
    assert unset == "None" and int(plain_faults) >= 9 * PAGES  # torch's default: all fault
    if "[never]" not in THP.read_text():  # else the kernel gives 4 KiB pages whatever is asked
        assert int(faults) < PAGES  # 2 MiB pages: 32 faults a tensor, not 16,384
