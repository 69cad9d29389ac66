"""A worker's side of a job across nodes (worker/task/nodes.py) against a real database, on
both backends: workers waiting in one gang learn it started (node 0 owns the job and watches
the other nodes, the others are members that wait for its rendezvous); a waiting worker
moves to an older job with room; a worker shutting down gives its seat up."""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.config import Settings
from service.db.sessions import session_scope
from service.errors import JobError
from service.jobs import fleet, lifecycle
from service.jobs.gangs import Seat
from tests.service.jobs.test_jobs import age, load
from tests.worker.task.test_context import SUPERVISED, submit
from worker.task import nodes
from worker.task.context import JobContext

SETTINGS = Settings(lease_s=60, heartbeat_s=0.2)
ACROSS_TWO = SUPERVISED | {"resources": {"nodes": 2}, "train": {"epochs": 2, "batch_size": 64}}
RUNNING = threading.Event()  # never set: the worker is not shutting down


def live_workers(count: int) -> None:
    for n in range(count):
        with session_scope() as s:
            fleet.register(s, f"w{n}@h{n}", ["default"], fleet.Capacity(64 << 30, 8))


def seat() -> Seat:
    got = JobContext.claim("default", SETTINGS)
    assert isinstance(got, Seat)
    return got


def test_a_gang_once_complete_is_node_0s_to_run_and_the_others_wait_for_its_rendezvous(
    clean_db: Any,
) -> None:
    live_workers(2)
    job_id = submit(ACROSS_TWO)
    first = seat()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(nodes.gather, first, ["default"], SETTINGS, RUNNING)
        second = seat()  # the last seat: the job starts
        member = nodes.gather(second, ["default"], SETTINGS, RUNNING)
        node_0 = waiting.result(timeout=30)
    assert isinstance(node_0, JobContext) and isinstance(member, nodes.Member)
    assert (node_0.job_id, node_0.owner, node_0.watch_nodes) == (job_id, first.owner, True)
    assert (member.seat, member.attempt) == (second, 1)
    with member:
        with ThreadPoolExecutor(1) as pool:
            address = pool.submit(member.address)
            node_0.publish("127.0.0.1:29400")
            assert address.result(timeout=30) == "127.0.0.1:29400"
        node_0.beat()
        assert (node_0.nodes_lost, node_0.nodes_leaving) == ([], [])
        member.leave()  # its worker shuts down: node 0 will save and give the job up
        node_0.beat()
        assert node_0.nodes_leaving == [1]
        assert member.holds
        with session_scope() as s:
            lifecycle.finish(s, job_id, first.owner, result={})
        member.beat()
        assert not member.holds  # the job ended: nothing left to hold


def test_a_waiting_worker_moves_to_an_older_job_with_room(clean_db: Any) -> None:
    live_workers(3)
    older, younger = submit(ACROSS_TWO), submit(ACROSS_TWO)
    age(older, 60)
    a, _ = seat(), seat()  # the older job runs
    waiting = seat()
    assert waiting.job_id == younger
    with ThreadPoolExecutor(1) as pool:
        moved = pool.submit(nodes.gather, waiting, ["other", "default"], SETTINGS, RUNNING)
        with session_scope() as s:
            lifecycle.retry(s, older, a.owner, JobError("node_lost", "node 1 lost"))
        assert moved.result(timeout=30) == nodes.Moved("default")
    assert load(younger).gang == {}


def test_a_worker_shutting_down_gives_its_seat_up(clean_db: Any) -> None:
    live_workers(2)
    job_id = submit(ACROSS_TWO)
    draining = threading.Event()
    draining.set()
    assert nodes.gather(seat(), ["default"], SETTINGS, draining) is None
    assert load(job_id).gang == {}
