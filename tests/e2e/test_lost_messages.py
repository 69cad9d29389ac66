"""Messages lost with the broker or with a killed worker delay nothing: workers claim from the
database, the watchdog wakes a queue whose jobs wait with no message. Real processes: the API,
Celery workers, PostgreSQL, and a redis-server of the test's own (no persistence), stopped and
started again mid-job."""

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from tests.conftest import Backend
from tests.e2e.conftest import Service, free_port, fresh_service
from tests.e2e.test_resilience import LONG_SPEC, SHORT_SPEC, status_events

MID_SPEC = {**LONG_SPEC, "train": {**LONG_SPEC["train"], "epochs": 8}}
SHORT = {**SHORT_SPEC, "train": {**SHORT_SPEC["train"], "epochs": 1}}
IDLE_S = 10  # the longest a free worker may leave a queued job waiting (wake_after_s is 2)


class RedisServer:
    """A redis-server on a free port, keeping nothing on disk: a restart loses every message."""

    def __init__(self, log: Path) -> None:
        self.port, self.log = free_port(), log
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert shutil.which("redis-server"), "redis-server is not installed"
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(["redis-server", *args], stdout=log, stderr=log)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, f"redis-server did not start; see {self.log}"
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path):
    server = RedisServer(tmp_path / "redis.log")
    server.start()
    yield server
    if server.proc is not None:
        server.kill()


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def runs(service: Service, job_id: str) -> list[tuple[float, float | None]]:
    """(start, end) of each attempt, from the job's status events."""
    spans: list[tuple[float, float | None]] = []
    for event in service.events(job_id):
        status, t = event["data"].get("status"), at(event["created_at"])
        if event["type"] != "status":
            continue
        if status == "running":
            spans.append((t, None))
        elif status in ("queued", "succeeded", "failed", "cancelled") and spans:
            spans[-1] = (spans[-1][0], spans[-1][1] or t)
    return spans


def idle_gaps(service: Service, job_ids: list[str], free_from: float) -> list[float]:
    """How long the one worker stood free while a job waited: before each attempt, the time
    since the worker was free (the previous attempt's end, or `free_from`) or since the job
    was submitted, whichever is later."""
    attempts = sorted(
        (start, end, job_id) for job_id in job_ids for start, end in runs(service, job_id)
    )
    submitted = {j: at(service.job(j)["created_at"]) for j in job_ids}
    gaps, free = [], free_from
    for start, end, job_id in attempts:
        if start > free_from:
            gaps.append(start - max(free, submitted[job_id]))
        free = max(free, end or start)
    return gaps


def ran_once(service: Service, job_id: str) -> bool:
    job = service.job(job_id)
    statuses = [e["status"] for e in status_events(service, job_id)]
    return job["attempt"] == 1 and statuses == ["queued", "running", "succeeded"]


@contextlib.contextmanager
def mid_job_with_two_queued(
    backend: Backend, redis_server: RedisServer, logs: Path
) -> Iterator[tuple[Service, list[str]]]:
    """A service on `redis_server`: a job training (past its first step) and two queued."""
    with fresh_service(backend, logs, {"DISTILLERY_BROKER_URL": redis_server.url}) as service:
        first = service.submit(MID_SPEC)["id"]
        queued = [service.submit(SHORT)["id"] for _ in range(2)]
        service.wait(first, lambda j: j["status"] == "running" and j["progress"].get("step"))
        yield service, [first, *queued]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_redis_restart_mid_job_loses_no_job_and_delays_none(
    backend: Backend, own_redis: RedisServer, tmp_path: Path
) -> None:
    with mid_job_with_two_queued(backend, own_redis, tmp_path) as (service, submitted):
        own_redis.kill()  # the queued jobs' messages go with it
        during = service.submit(SHORT)["id"]  # accepted while the broker is away
        time.sleep(3)
        own_redis.start()
        back = time.time()
        every = [*submitted, during]
        for job_id in every:
            service.wait_status(job_id, "succeeded", timeout=240)
        assert all(ran_once(service, j) for j in every)
        starts = [runs(service, j)[0][0] for j in every]
        assert starts == sorted(starts)  # submission order
        # the worker never stood free while a job waited: how long the jobs themselves take
        # on a loaded machine is not what this checks
        assert max(idle_gaps(service, every, back)) < IDLE_S


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_worker_killed_with_messages_in_flight_delays_no_queued_job(
    backend: Backend, own_redis: RedisServer, tmp_path: Path
) -> None:
    with mid_job_with_two_queued(backend, own_redis, tmp_path) as (service, every):
        service.kill_worker()  # holding the first's message and one reserved ahead
        service.start_worker()
        restarted = time.time()
        for job_id in every:
            service.wait_status(job_id, "succeeded", timeout=240)
        assert all(ran_once(service, j) for j in every[1:])
        assert service.job(every[0])["attempt"] == 2  # its lease expired; requeued, resumed
        gaps = idle_gaps(service, every, restarted)
        assert max(gaps) < IDLE_S + 4  # + the 4 s lease of the killed worker's job
