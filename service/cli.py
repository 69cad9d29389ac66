"""`distillery`: the server commands (`up`, `api`, `worker`, `migrate`, `keys`) added to the
client's (distillery_client/cli.py: submit, list, show, watch, download, ...). The server
commands import their heavy modules when they run."""

import ctypes
import functools
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from distillery_client.cli import app
from service.config import get_settings

ROOT = Path(__file__).resolve().parent.parent
WORKER_STOP_S = 40.0
KEEP_ALIVE_S = 75
DEFAULT_QUEUES = "default"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def migrate(url: str | None = None) -> None:
    """Upgrade the database to the newest revision, with the Alembic scripts of the installed
    `migrations` package (it ships in the wheel: no source tree needed)."""
    from importlib.resources import files

    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("migrations")))
    cfg.attributes["url"] = url
    command.upgrade(cfg, "head")


def worker_command(queues: str, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.task.celery_app",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "--pool",
        "threads",  # tasks only wait on the processes they start (worker/task/tasks.py)
        "-l",
        get_settings().log_level,
        "-n",
        f"distillery-{os.getpid()}@%h",
    ]


def api(host: str, port: int) -> None:
    """The API under uvicorn: DISTILLERY_API_WORKERS processes, each with its watchdog (and
    with more than one, their metrics in one folder: service/metrics.py)."""
    import uvicorn

    from service.metrics import prepare_multiprocess

    prepare_multiprocess(get_settings().api_workers)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        workers=get_settings().api_workers,
        host=host,
        port=port,
        log_level=get_settings().log_level.lower(),
        # longer than clients keep an idle connection (httpx: 5 s, load balancers: 60 s): a
        # server closing one as a client reuses it fails that request (seen: ReadError)
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def declare_queues(names: list[str]) -> None:
    """The worker's queues, made in the broker before the worker and the API start. kombu's
    SQLite transport makes a queue's row on first use: a worker that starts consuming while
    the API sends its first job can both insert it, and the loser (the worker) dies."""
    from kombu import Connection

    with Connection(get_settings().queue_url) as conn:
        for name in names:
            conn.default_channel.queue_declare(queue=name)


def up(host: str, port: int, queues: str) -> None:
    """Everything on one machine: migrate the SQLite database, start a real Celery worker
    process, serve the API (with the watchdog) in this one."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate()
    declare_queues(queues.split(","))
    env = {**os.environ, "DISTILLERY_DATA_DIR": str(settings.data_dir.resolve())}
    worker = subprocess.Popen(
        worker_command(queues, settings.worker_concurrency),
        env=env,
        start_new_session=True,
        preexec_fn=dies_with_this_process(),
    )
    # uvicorn re-raises SIGTERM once it has shut down: let that unwind to the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        api(host, port)
    finally:
        stop_worker(worker)


def dies_with_this_process() -> Callable[[], None] | None:
    """For `up`'s worker, run in the child before exec: Linux sends it SIGTERM (a warm
    shutdown: its job saves and is requeued) when `up` dies, even by SIGKILL. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls it
    return functools.partial(_ask_for_sigterm, libc, os.getpid())


def _ask_for_sigterm(libc: ctypes.CDLL, parent: int) -> None:
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # `up` died before the request: nobody would send it
        os.kill(os.getpid(), signal.SIGTERM)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group: its job saves and is requeued (worker/task/supervisor.py,
    PREEMPT_GRACE_S), then it exits; killed if it has not after WORKER_STOP_S."""
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=WORKER_STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _logging() -> None:
    logging.basicConfig(
        level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


Host = Annotated[str | None, typer.Option(help="default: DISTILLERY_HOST, else 127.0.0.1")]
Port = Annotated[int | None, typer.Option(help="default: DISTILLERY_PORT, else 8000")]
Queues = Annotated[str, typer.Option(help="comma-separated")]


@app.command("up")
def up_command(host: Host = None, port: Port = None, queues: Queues = DEFAULT_QUEUES) -> None:
    """Server: migrate, start a worker process and serve the API, all on this machine."""
    _logging()
    settings = get_settings()
    up(host or settings.host, port or settings.port, queues)


@app.command("api")
def api_command(host: Host = None, port: Port = None) -> None:
    """Server: the API under uvicorn."""
    _logging()
    settings = get_settings()
    api(host or settings.host, port or settings.port)


@app.command("worker")
def worker(
    queues: Queues = DEFAULT_QUEUES,
    concurrency: Annotated[
        int | None, typer.Option(help="default: DISTILLERY_WORKER_CONCURRENCY")
    ] = None,
) -> None:
    """Server: a Celery worker (this process becomes it)."""
    concurrency = concurrency or get_settings().worker_concurrency
    os.execv(sys.executable, worker_command(queues, concurrency))


@app.command("migrate")
def migrate_command() -> None:
    """Server: upgrade the database to the newest revision."""
    _logging()
    migrate()


keys_app = typer.Typer(help="Server: API keys, straight on the database.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create_key(
    project: Annotated[str, typer.Option(help="its name; made if new")],
    name: Annotated[str, typer.Option(help="what the key is for")] = "",
) -> None:
    """Make a key; it is printed once."""
    from service import keys
    from service.db.sessions import session_scope

    with session_scope() as s:
        row, plaintext = keys.create_key(s, project, name)
        _print({"id": row.id, "project": project, "name": row.name, "key": plaintext})


@keys_app.command("list")
def list_keys() -> None:
    """Every key, revoked ones too (never their secrets)."""
    from service import keys
    from service.db.sessions import session_scope

    with session_scope() as s:
        _print([key_summary(key, project) for key, project in keys.list_keys(s)])


@keys_app.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke a key: requests with it are a 403 from now on."""
    from service import keys
    from service.db.sessions import session_scope

    with session_scope() as s:
        revoked = keys.revoke(s, key_id)
        if revoked is None:
            sys.exit(f"no API key {key_id!r}")
        _print(key_summary(revoked, revoked.project_id))


def key_summary(row: Any, project: str) -> dict[str, Any]:
    revoked = row.revoked_at.isoformat() if row.revoked_at else None
    created = row.created_at.isoformat()
    return {
        "id": row.id,
        "project": project,
        "name": row.name,
        "created_at": created,
        "revoked_at": revoked,
    }


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="distillery")


if __name__ == "__main__":
    main()
