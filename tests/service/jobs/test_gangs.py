"""Jobs across nodes (service/jobs/gangs.py) against a real database: a gang claims its job
all or none, one seat per worker; a seat whose lease ran out is free again; a worker waiting
in a gang moves to an older job with room, so two half-claimed jobs never wait on each other;
a requeue empties the gang; node 0 sees lost and leaving nodes. Admission wants as many live
workers as nodes."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from service.db.sessions import session_scope
from service.db.tables import Job, utcnow
from service.errors import JobError
from service.jobs import fleet, gangs, lifecycle
from service.jobs.gangs import Seat
from tests.service.jobs.test_jobs import age, events, expire_lease, load, watchdog

LEASE_S = 60
TWO_NODES = {"resources": {"queue": "q1", "nodes": 2}, "train": {"epochs": 2, "batch_size": 48}}


@pytest.fixture
def workers(clean_db: Any) -> None:
    """Four live workers of q1, each able to run the test jobs."""
    for n in range(4):
        with session_scope() as s:
            fleet.register(s, f"w{n}@host{n}", ["q1"], fleet.Capacity(64 << 30, 8))


@pytest.fixture
def gang_job(new_job, workers) -> Any:
    def make(nodes: int = 2) -> str:
        return new_job(**TWO_NODES | {"resources": {"queue": "q1", "nodes": nodes}})

    return make


def claim_next(owner: str, queue: str = "q1") -> Job | Seat | None:
    with session_scope() as s:
        return lifecycle.claim_next(s, queue, owner, LEASE_S)


def seats(job_id: str) -> dict[str, str]:
    return {node: seat["owner"] for node, seat in load(job_id).gang.items()}


def test_a_gang_claims_its_job_all_or_none(gang_job):
    job_id = gang_job(nodes=3)
    first, second = claim_next("a"), claim_next("b")
    assert (first, second) == (Seat(job_id, 0, "a"), Seat(job_id, 1, "b"))
    job = load(job_id)
    assert (job.status, job.owner, job.attempt, seats(job_id)) == (
        "queued",
        None,
        0,
        {"0": "a", "1": "b"},
    )
    with session_scope() as s:  # not by a claim of its own: only its gang runs it
        assert lifecycle.claim(s, job_id, "c", LEASE_S) is None
    assert claim_next("c") == Seat(job_id, 2, "c")
    job = load(job_id)
    assert (job.status, job.owner, job.attempt, job.nodes) == ("running", "a", 1, 3)
    assert job.lease_until is not None and job.started_at is not None
    started = events(job_id)[-1]
    assert started.data == {
        "status": "running",
        "attempt": 1,
        "owner": "a",
        "nodes": ["a", "b", "c"],
    }
    assert claim_next("d") is None  # no room left


def test_the_seat_holders_learn_the_gang_started(gang_job):
    job_id = gang_job()
    a, b = claim_next("a"), claim_next("b")
    with session_scope() as s:
        held = gangs.renew(s, a, LEASE_S)
        assert held.started and held.attempt == 1 and held.rendezvous is None
        assert gangs.publish(s, job_id, "b", "h:1") is False  # only node 0's worker
        assert gangs.publish(s, job_id, "a", "h:1") is True
    with session_scope() as s:
        assert gangs.look(s, b).rendezvous == "h:1"


def test_a_seat_whose_lease_ran_out_is_free_again(gang_job):
    job_id = gang_job()
    claim_next("a")
    with session_scope() as s:
        gang = load(job_id).gang
        gang["0"]["until"] = (utcnow() - timedelta(seconds=1)).isoformat()
        s.execute(update(Job).where(Job.id == job_id).values(gang=gang))
    assert claim_next("b") == Seat(job_id, 0, "b")  # a's seat, not a second one
    assert load(job_id).status == "queued"
    with session_scope() as s:
        assert gangs.renew(s, Seat(job_id, 0, "a"), LEASE_S).mine is False


def test_a_seat_left_is_free_again_and_only_its_holder_leaves_it(gang_job):
    job_id = gang_job()
    seat = claim_next("a")
    with session_scope() as s:
        assert gangs.leave(s, Seat(job_id, 0, "b")) is False
        assert gangs.leave(s, seat) is True
    assert seats(job_id) == {}
    assert claim_next("b") == Seat(job_id, 0, "b")


def test_a_waiting_worker_moves_to_an_older_job_with_room(gang_job):
    """Two 2-node jobs, three workers: the younger job took one worker while the older was
    running; the older is requeued (its node lost), two workers come free. Whoever waits in
    the younger job leaves for the older, which fills first; the younger then runs."""
    older, younger = gang_job(), gang_job()
    age(older, 60)
    claim_next("a"), claim_next("b")  # older runs on a and b
    assert load(older).status == "running"
    waiting = claim_next("c")
    assert waiting == Seat(younger, 0, "c")
    with session_scope() as s:  # node 1 lost: the older job is requeued
        assert lifecycle.retry(s, older, "a", JobError("node_lost", "node 1 lost")) == "queued"
    assert claim_next("a2") == Seat(older, 0, "a2")
    with session_scope() as s:
        moved = gangs.older_open(s, younger, ["q1"])
        assert moved is not None and moved.job_id == older
        assert gangs.leave(s, waiting)
    assert claim_next("c") == Seat(older, 1, "c")
    assert load(older).status == "running"
    with session_scope() as s:
        assert gangs.older_open(s, younger, ["q1"]) is None  # nothing older has room: stay
    assert [claim_next("b2"), claim_next("d")] == [Seat(younger, 0, "b2"), Seat(younger, 1, "d")]
    assert load(younger).status == "running"


def test_workers_racing_for_seats_fill_each_once_and_start_the_job_once(gang_job):
    job_id = gang_job(nodes=3)
    barrier = threading.Barrier(6, timeout=30)

    def race(n: int) -> Job | Seat | None:
        barrier.wait()
        return claim_next(f"w{n}")

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(race, range(6)))
    taken = [g for g in got if g is not None]
    assert sorted(seat.node for seat in taken) == [0, 1, 2]
    assert seats(job_id) == {str(seat.node): seat.owner for seat in taken}
    job = load(job_id)
    assert (job.status, job.attempt, job.owner) == ("running", 1, seats(job_id)["0"])
    assert [e.data.get("status") for e in events(job_id)] == ["queued", "running"]


def test_a_requeue_empties_the_gang(gang_job):
    job_id = gang_job()
    claim_next("a"), claim_next("b")
    with session_scope() as s:
        gangs.publish(s, job_id, "a", "h:1")
    expire_lease(job_id)
    assert watchdog() == [job_id]
    job = load(job_id)
    assert (job.status, job.gang, job.rendezvous) == ("queued", {}, None)
    with session_scope() as s:
        assert gangs.renew(s, Seat(job_id, 1, "b"), LEASE_S).mine is False


def test_a_lost_node_requeues_counting_the_attempt_until_none_are_left(gang_job):
    job_id = gang_job()
    lost = JobError("node_lost", "a node of the job was lost", retryable=True)
    for attempt in (1, 2, 3):
        a, b = f"a{attempt}", f"b{attempt}"
        claim_next(a), claim_next(b)
        with session_scope() as s:
            assert lifecycle.retry(s, job_id, "someone else", lost) is None
            status = lifecycle.retry(s, job_id, a, lost)
        assert (status, load(job_id).attempt) == ("queued" if attempt < 3 else "failed", attempt)
    job = load(job_id)
    assert job.error is not None and job.error["code"] == "attempts_exhausted"
    assert job.error["message"] == "a node of the job was lost (3 attempts)"
    requeues = [e for e in events(job_id) if e.data.get("status") == "queued"][1:]
    assert [e.data["error"]["code"] for e in requeues] == ["node_lost", "node_lost"]


def test_node_0_sees_nodes_lost_leaving_and_done(gang_job):
    job_id = gang_job(nodes=4)
    taken = [claim_next(name) for name in "abcd"]
    assert load(job_id).status == "running"
    with session_scope() as s:
        assert gangs.trouble(s, job_id) == ([], [])
        gangs.renew(s, taken[2], LEASE_S, gangs.LEAVING)
        gangs.renew(s, taken[3], 0.0, gangs.DONE)  # done, and its lease run out: fine
        gangs.renew(s, taken[1], 0.0)  # held, its lease run out: lost
    with session_scope() as s:
        assert gangs.trouble(s, job_id) == ([1], [2])


def test_a_gathering_job_cancelled_lets_its_workers_go(gang_job):
    job_id = gang_job()
    seat = claim_next("a")
    with session_scope() as s:
        lifecycle.cancel(s, job_id)
    with session_scope() as s:
        held = gangs.renew(s, seat, LEASE_S)
    assert (held.status, held.mine, held.started) == ("cancelled", False, False)


def test_a_job_across_nodes_wants_as_many_live_workers(client, spec_body):
    body = spec_body | {"resources": {"queue": "q1", "nodes": 2}}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {
            "field": "resources.nodes",
            "message": "needs 2 live workers of queue 'q1' able to run the job, it has 0",
        }
    ]
    with session_scope() as s:
        fleet.register(s, "w1@h1", ["q1"], fleet.Capacity(64 << 30, 8))
        fleet.register(s, "tiny@h2", ["q1"], fleet.Capacity(1 << 10, 8))  # holds nothing
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["message"].endswith("it has 1: worker w1@h1")
    with session_scope() as s:
        fleet.register(s, "w2@h2", ["q1"], fleet.Capacity(64 << 30, 8))
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["resources"]["nodes"] == 2
    assert load(r.json()["id"]).nodes == 2


@pytest.mark.parametrize(
    ("resources", "batch_size", "message"),
    [
        ({"nodes": 2, "gpus": 3}, 64, "must be a multiple of the job's 6 processes"),
        ({"nodes": 3}, 3, "must be at least 6: each of the 3 processes needs 2 samples"),
        ({"nodes": 65}, 128, "less than or equal to 64"),
    ],
)
def test_every_process_of_every_node_takes_a_share_of_each_batch(
    client, spec_body, resources, batch_size, message
):
    body = spec_body | {"resources": resources, "train": {"epochs": 2, "batch_size": batch_size}}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["errors"][0]["message"]
