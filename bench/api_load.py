"""API load: the production shape on this machine (PostgreSQL + Redis, the API under uvicorn
and ONE Celery worker, each its own process, loopback only), under concurrent submitters and
pollers, for a bounded time; then every accepted job is reconciled.

    python bench/api_load.py              # defaults: 2-3 min on 2 idle cores, 5 on busy ones
    python bench/api_load.py --submitters 20 --pollers 50 --duration 60 --jobs 30 --json out.json

Set-up: a database of its own (`distillery_bench_<random>` on the admin URL, migrated with
`distillery migrate`, dropped WITH (FORCE) at the end), a redis-server of its own on a free
port (no persistence; or --redis-url for a Redis db the caller owns), a temporary data dir;
DISTILLERY_ENV=prod with keys required, and one key (`distillery keys create`) every
request carries. Training uses --train-threads threads (1: a core stays the API's, as on
hosts of their own; 0: all the cores, the API starved by training).
Everything it starts is stopped and removed on exit, Ctrl-C included.

Measured, with one aiohttp ClientSession (a connection per client, so no client-side
queueing; aiohttp, not httpx, because the load generator shares the cores: httpx's
AsyncClient took 1.8 ms of CPU per request here, aiohttp 0.1 ms):
  load      for --duration s: S submitters POST tiny jobs (`supervised`, resnet8 on the built-in
            digits, 1 epoch, batch 256: they really run) back to back until --jobs are
            accepted; P pollers, each every --poll-interval s (jittered), GET /v1/jobs/{id} of
            a random accepted job, or (--list-fraction of the time) GET /v1/jobs?limit=20.
            Per request latency (ms: p50, p99, max) by kind; requests and errors (non-2xx by
            status code, transport errors by exception name); submissions/s = accepted /
            the time the submitters took.
  drain     up to --drain-timeout s for every accepted job to reach a terminal status (the
            one worker runs them one at a time: the jobs, not the API, set the bench's length).
  reconcile every accepted job: terminal, attempt == 1, and exactly one "running" among its
            status events (GET /v1/jobs/{id}/events?limit=1000); succeeded / failed counts;
            jobs in the database that no submitter was told about (`unknown_in_db`).
The client shares the machine's cores with the API, the worker and the training processes,
as a co-located load generator does; its latencies include its own scheduling.

Targets (from the issue; nothing is asserted): zero errors, zero lost (every accepted job
terminal, none ran twice), p99 of status polls < 50 ms with 50 pollers on 2 cores.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.cli import worker_command  # noqa: E402

QUEUE = "default"
TERMINAL = ("succeeded", "failed", "cancelled")
SPEC = {
    "name": "bench-api-load",
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 1, "batch_size": 256},
    "resources": {"queue": QUEUE},  # max_attempts 3: a job run again shows as attempt 2
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--submitters", type=int, default=20)
    p.add_argument("--pollers", type=int, default=50)
    p.add_argument("--duration", type=float, default=45.0, help="the load phase, seconds")
    p.add_argument("--jobs", type=int, default=20, help="accepted jobs at most (0: no cap)")
    p.add_argument("--poll-interval", type=float, default=0.5, help="each poller's, seconds")
    p.add_argument("--list-fraction", type=float, default=0.1, help="polls that list jobs")
    p.add_argument("--drain-timeout", type=float, default=300.0, help="seconds")
    p.add_argument("--api-workers", type=int, default=1, help="DISTILLERY_API_WORKERS")
    p.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="CPU threads of each training process (DISTILLERY_TRAIN_THREADS; 0: its cores)",
    )
    p.add_argument(
        "--pg-admin",
        default=os.environ.get("TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"),
        help="where the bench's database is created and dropped",
    )
    p.add_argument("--redis-url", help="a Redis db of the caller's (default: own redis-server)")
    p.add_argument("--logs", type=Path, help="keep the API, worker and redis logs here")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Stack:
    """What the bench starts, in order; close() undoes it in reverse, each step on its own."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.undo: list[Any] = []

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: Ctrl-C is ours to pass on
            )
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({proc.returncode}):\n{tail(self.logs / f'{name}.log')}"
                )

    def close(self) -> None:
        for _, proc in reversed(self.procs):  # worker before API before redis
            stop(proc)
        for undo in reversed(self.undo):
            try:
                undo()
            except Exception as exc:  # keep cleaning up
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """SIGTERM the process group, SIGKILL it when it outlives the grace."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            with contextlib.suppress(ProcessLookupError):  # pool children left behind
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def create_database(stack: Stack, admin: str, name: str) -> str:
    """A fresh database, dropped on close; its SQLAlchemy URL."""
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    stack.undo.append(drop)
    parts = urlsplit(admin)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg", path=f"/{name}"))


def start_redis(stack: Stack, env: dict[str, str]) -> str:
    """A redis-server of the bench's own on a free loopback port, no persistence."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(stack.logs)]
    stack.spawn("redis", cmd, env)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + 20
    while True:
        stack.check_alive()
        try:
            client.ping()
            return url
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_ready(stack: Stack, url: str, headers: dict[str, str]) -> None:
    """The API answers /readyz 200 and the worker has logged that it is ready."""
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
        while True:
            stack.check_alive()
            try:
                api_ok = http.get("/readyz").status_code == 200
            except httpx.TransportError:
                api_ok = False
            worker_ok = " ready." in (stack.logs / "worker.log").read_text(errors="replace")
            if api_ok and worker_ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready (api {api_ok}, worker {worker_ok}): {stack.logs}")
            time.sleep(0.2)


def start_service(stack: Stack, args: argparse.Namespace, data_dir: Path) -> str:
    """Database, broker, migration, API and one worker; the API's URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DISTILLERY_ENV": "prod"}
    env["DISTILLERY_DATABASE_URL"] = create_database(stack, args.pg_admin, args.database)
    env["DISTILLERY_BROKER_URL"] = args.redis_url or start_redis(stack, env)
    env["DISTILLERY_DATA_DIR"] = str(data_dir)
    env["DISTILLERY_REQUIRE_KEYS"] = "true"
    env["DISTILLERY_TRAIN_THREADS"] = str(args.train_threads)
    env["DISTILLERY_API_WORKERS"] = str(args.api_workers)
    cli(env, "migrate")
    args.key = json.loads(cli(env, "keys", "create", "--project", "bench"))["key"]
    port = free_port()
    stack.spawn("api", [sys.executable, "-m", "service.cli", "api", "--port", str(port)], env)
    stack.spawn("worker", worker_command(QUEUE, 1), env)
    return f"http://127.0.0.1:{port}"


def cli(env: dict[str, str], *command: str) -> str:
    """`distillery COMMAND` on the bench's database; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *command],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


class Load:
    """The shared state of the clients: accepted job ids, latencies and errors."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.accepted: list[str] = []
        self.reserved = 0  # submissions accepted or in flight: the --jobs cap counts these
        self.latency: dict[str, list[float]] = {"submit": [], "status": [], "list": []}
        self.errors: Counter[str] = Counter()
        self.errors_by_kind: Counter[str] = Counter()
        self.submit_started = self.submit_ended = 0.0

    async def request(
        self, http: aiohttp.ClientSession, kind: str, method: str, url: str, **kw: Any
    ) -> Any:
        """One timed request: its JSON body, or None (and an error counted) unless 2xx."""
        started = time.perf_counter()
        try:
            async with http.request(method, url, **kw) as r:
                body = await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.latency[kind].append((time.perf_counter() - started) * 1000)
            self.errors[type(exc).__name__] += 1
            self.errors_by_kind[kind] += 1
            return None
        self.latency[kind].append((time.perf_counter() - started) * 1000)
        if not 200 <= r.status < 300:
            self.errors[str(r.status)] += 1
            self.errors_by_kind[kind] += 1
            return None
        return json.loads(body)

    def may_submit(self) -> bool:
        return not self.args.jobs or self.reserved < self.args.jobs

    async def submitter(self, http: aiohttp.ClientSession, deadline: float) -> None:
        while time.monotonic() < deadline and self.may_submit():
            self.reserved += 1
            key = {"Idempotency-Key": uuid.uuid4().hex}
            job = await self.request(http, "submit", "POST", "/v1/jobs", json=SPEC, headers=key)
            if job is None:
                self.reserved -= 1
                await asyncio.sleep(0.1)  # a failing API is not hammered
            else:
                self.accepted.append(job["id"])
            self.submit_ended = time.perf_counter()

    async def poller(
        self, http: aiohttp.ClientSession, deadline: float, rng: random.Random
    ) -> None:
        interval = self.args.poll_interval
        await asyncio.sleep(rng.uniform(0, interval))  # not all at once
        while time.monotonic() < deadline:
            if not self.accepted or rng.random() < self.args.list_fraction:
                await self.request(http, "list", "GET", "/v1/jobs", params={"limit": 20})
            else:
                job_id = rng.choice(self.accepted)
                await self.request(http, "status", "GET", f"/v1/jobs/{job_id}")
            await asyncio.sleep(rng.uniform(0.5, 1.5) * interval)

    async def run(self, url: str, headers: dict[str, str]) -> float:
        """The load phase; its length in seconds."""
        args = self.args
        clients = args.submitters + args.pollers
        connector = aiohttp.TCPConnector(limit=clients)  # a connection per client
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            url, headers=headers, connector=connector, timeout=timeout
        ) as http:
            started = time.monotonic()
            deadline = started + args.duration
            self.submit_started = self.submit_ended = time.perf_counter()
            rng = random.Random(0)
            tasks = [self.submitter(http, deadline) for _ in range(args.submitters)]
            for _ in range(args.pollers):
                tasks.append(self.poller(http, deadline, random.Random(rng.random())))
            await asyncio.gather(*tasks)
            return time.monotonic() - started


def drain(http: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Each job as last read, after waiting up to `timeout` s for all to be terminal."""
    jobs: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while True:
        for job_id in pending:
            r = http.get(f"/v1/jobs/{job_id}")
            if r.status_code == 200:
                jobs[job_id] = r.json()
        pending = [i for i in ids if jobs.get(i, {}).get("status") not in TERMINAL]
        if not pending or time.monotonic() > deadline:
            return jobs
        time.sleep(1.0)


def reconcile(http: httpx.Client, jobs: dict[str, dict[str, Any]], ids: list[str]) -> dict:
    statuses = Counter(jobs.get(i, {}).get("status", "unreadable") for i in ids)
    ran_twice: list[str] = []
    never_ran: list[str] = []  # succeeded or failed with no "running" event: should not be
    runtimes: list[float] = []
    for job_id in ids:
        job = jobs.get(job_id, {})
        r = http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000})
        r.raise_for_status()
        running = sum(
            1
            for e in r.json()["data"]
            if e["type"] == "status" and e["data"].get("status") == "running"
        )
        if running > 1 or job.get("attempt", 0) > 1:
            ran_twice.append(job_id)
        elif running == 0 and job.get("status") in ("succeeded", "failed"):
            never_ran.append(job_id)
        if job.get("started_at") and job.get("finished_at"):
            runtimes.append(seconds(job["finished_at"]) - seconds(job["started_at"]))
    known, cursor = set(), None
    while True:  # every job the database holds: one no submitter was told about is unknown
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/jobs", params=params).json()
        known |= {j["id"] for j in page["data"]}
        if not (cursor := page["next_cursor"]):
            break
    terminal = sum(statuses[s] for s in TERMINAL)
    return {
        "accepted": len(ids),
        "terminal": terminal,
        "succeeded": statuses["succeeded"],
        "failed": statuses["failed"],
        "cancelled": statuses["cancelled"],
        "ran_twice": len(ran_twice),
        "terminal_without_running_event": len(never_ran),
        "not_terminal": len(ids) - terminal,
        "unknown_in_db": len(known - set(ids)),
        "job_run_s_p50": round(percentile(runtimes, 50), 2) if runtimes else None,
        "examples": {
            "ran_twice": ran_twice[:5],
            "not_terminal": [
                {"id": i, "status": jobs.get(i, {}).get("status")}
                for i in ids
                if jobs.get(i, {}).get("status") not in TERMINAL
            ][:5],
            "without_running_event": never_ran[:5],
            "failed": failed_examples(jobs, ids),
        },
    }


def failed_examples(jobs: dict[str, dict[str, Any]], ids: list[str]) -> list[Any]:
    return [
        {"id": i, "error": jobs[i].get("error")}
        for i in ids
        if jobs.get(i, {}).get("status") == "failed"
    ][:3]


def seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.rstrip("Z")).timestamp()


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
    }


def cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of a process and its children (uvicorn's workers)."""
    return sum(stat(p)[0] for p in [pid, *children(pid)])


def stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, parent pid) of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[1])


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and stat(int(entry.name))[1] == pid:
                found.append(int(entry.name))
    return found


def interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # SIGTERM cleans up as Ctrl-C does


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.database = f"distillery_bench_{uuid.uuid4().hex[:10]}"
    signal.signal(signal.SIGTERM, interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="distillery-bench-"))
    logs = args.logs or tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(logs)
    stack.undo.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        url = start_service(stack, args, tmp / "data")
        headers = {"Authorization": f"Bearer {args.key}"}  # a key of the bench's project
        wait_ready(stack, url, headers)
        load = Load(args)
        loadavg = os.getloadavg()  # others' work on the machine skews every figure
        api = dict(stack.procs)["api"].pid
        cpu = (cpu_s(api), time.process_time())
        started = time.monotonic()
        load_s = asyncio.run(load.run(url, headers))
        cpu = (cpu_s(api) - cpu[0], time.process_time() - cpu[1])
        stack.check_alive()
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            drain_started = time.monotonic()
            jobs = drain(http, load.accepted, args.drain_timeout)
            drain_s = time.monotonic() - drain_started
            reconciliation = reconcile(http, jobs, load.accepted)
        submit_s = max(load.submit_ended - load.submit_started, 1e-9)
        requests = {kind: len(v) for kind, v in load.latency.items()}
        requests["total"] = sum(requests.values())
        hidden = ("key", "json", "logs", "database")
        got: dict[str, Any] = {
            "cores": len(os.sched_getaffinity(0)),
            "loadavg_1m": {"before": loadavg[0], "after": os.getloadavg()[0]},
            "parameters": {k: v for k, v in vars(args).items() if k not in hidden} | {"spec": SPEC},
            "database": args.database,  # dropped by now
            "submissions_per_s": round(len(load.accepted) / submit_s, 1),
            "submit_phase_s": round(submit_s, 2),
            "accepted": len(load.accepted),
            "latency_ms": {kind: summary(v) for kind, v in load.latency.items()},
            "requests": requests,
            "errors": dict(load.errors) | {"total": sum(load.errors.values())},
            "errors_by_kind": dict(load.errors_by_kind),
            "reconciliation": reconciliation,
            "load_cpu_s": {"api": round(cpu[0], 1), "bench_client": round(cpu[1], 1)},
            "api_cpu_ms_per_request": round(cpu[0] * 1e3 / max(1, requests["total"]), 2),
            "load_s": round(load_s, 1),
            "drain_s": round(drain_s, 1),
            "wall_s": round(time.monotonic() - started, 1),
        }
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not stop the cleanup
            signal.signal(sig, signal.SIG_IGN)
        stack.close()
    print(json.dumps(got, indent=1))
    if args.json:
        args.json.write_text(json.dumps(got, indent=1))
    return got


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as exc:
        print(f"interrupted ({str(exc) or 'Ctrl-C'}): stopped, cleaned up", file=sys.stderr)
        sys.exit(130)
