"""`distillery up | api | worker | migrate | keys | submit | watch | download`."""

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from service.config import get_settings

ROOT = Path(__file__).resolve().parent.parent
WORKER_STOP_S = 40.0
KEEP_ALIVE_S = 75


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
        "worker.celery_app",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "--pool",
        "threads",  # tasks only wait on the processes they start (worker/tasks.py)
        "-l",
        get_settings().log_level,
        "-n",
        f"distillery-{os.getpid()}@%h",
    ]


def api(host: str, port: int) -> None:
    """The API under uvicorn: DISTILLERY_API_WORKERS processes, each with its watchdog."""
    import uvicorn

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


def up(args: argparse.Namespace) -> None:
    """Everything on one machine: migrate the SQLite database, start a real Celery worker
    process, serve the API (with the watchdog) in this one."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate()
    declare_queues(args.queues.split(","))
    env = {**os.environ, "DISTILLERY_DATA_DIR": str(settings.data_dir.resolve())}
    worker = subprocess.Popen(
        worker_command(args.queues, settings.worker_concurrency), env=env, start_new_session=True
    )
    # uvicorn re-raises SIGTERM once it has shut down: let that unwind to the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        api(args.host, args.port)
    finally:
        stop_worker(worker)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group: its job saves and is requeued (worker/ranks.py,
    PREEMPT_GRACE_S), then it exits; killed if it has not after WORKER_STOP_S."""
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=WORKER_STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _headers(**extra: str) -> dict[str, str]:
    """The API key (DISTILLERY_API_KEY) on every request, when one is set."""
    key = os.environ.get("DISTILLERY_API_KEY")
    return extra | ({"Authorization": f"Bearer {key}"} if key else {})


def _request(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = _headers(**{"Content-Type": "application/json"})
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req) as resp:  # noqa: S310 (the user's own API URL)
        return json.load(resp)


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def submit(args: argparse.Namespace) -> None:
    _print(_request("POST", f"{args.url}/v1/jobs", json.loads(Path(args.spec).read_text())))


def watch(args: argparse.Namespace) -> None:
    """Follow a job's events until it finishes."""
    req = urllib.request.Request(
        f"{args.url}/v1/jobs/{args.job}/events", headers=_headers(Accept="text/event-stream")
    )
    with urllib.request.urlopen(req) as resp:  # noqa: S310
        for line in resp:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                sys.stdout.write(f"{event['created_at']} {event['type']}: {event['message']}\n")
                sys.stdout.flush()


def download(args: argparse.Namespace) -> None:
    url = f"{args.url}/v1/jobs/{args.job}/artifacts/{args.name}"
    out = Path(args.output or Path(args.name).name)
    req = urllib.request.Request(url, headers=_headers())
    with urllib.request.urlopen(req) as resp, out.open("wb") as f:  # noqa: S310
        while chunk := resp.read(1 << 20):
            f.write(chunk)
    sys.stdout.write(f"{out}\n")


def keys_command(args: argparse.Namespace) -> None:
    """`keys create --project P [--name N]` (the key is printed once), `keys list`,
    `keys revoke KEY_ID`: straight on the database, as `migrate` is."""
    from service import keys
    from service.db import session_scope

    with session_scope() as s:
        if args.action == "create":
            row, plaintext = keys.create_key(s, args.project, args.name)
            _print({"id": row.id, "project": args.project, "name": row.name, "key": plaintext})
        elif args.action == "list":
            _print([key_summary(key, project) for key, project in keys.list_keys(s)])
        elif (revoked := keys.revoke(s, args.key_id)) is not None:
            _print(key_summary(revoked, revoked.project_id))
        else:
            sys.exit(f"no API key {args.key_id!r}")


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


def parser() -> argparse.ArgumentParser:
    settings = get_settings()
    p = argparse.ArgumentParser(prog="distillery", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("up", "api"):
        sp = sub.add_parser(name)
        sp.add_argument("--host", default=settings.host)
        sp.add_argument("--port", type=int, default=settings.port)
    sub.choices["up"].add_argument("--queues", default="default")
    sp = sub.add_parser("worker")
    sp.add_argument("--queues", default="default")
    sp.add_argument("--concurrency", type=int, default=settings.worker_concurrency)
    sub.add_parser("migrate")
    url = f"http://{settings.host}:{settings.port}"
    for name, extra in (("submit", ["spec"]), ("watch", ["job"]), ("download", ["job", "name"])):
        sp = sub.add_parser(name)
        for arg in extra:
            sp.add_argument(arg)
        sp.add_argument("--url", default=url)
    sub.choices["download"].add_argument("-o", "--output")
    actions = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = actions.add_parser("create")
    create.add_argument("--project", required=True, help="its name; made if new")
    create.add_argument("--name", default="", help="what the key is for")
    actions.add_parser("list")
    actions.add_parser("revoke").add_argument("key_id")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "up":
        up(args)
    elif args.command == "api":
        api(args.host, args.port)
    elif args.command == "worker":
        os.execv(sys.executable, worker_command(args.queues, args.concurrency))
    elif args.command == "migrate":
        migrate()
    elif args.command == "keys":
        keys_command(args)
    else:
        {"submit": submit, "watch": watch, "download": download}[args.command](args)


if __name__ == "__main__":
    main()
