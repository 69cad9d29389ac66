"""`distillery`'s client commands: submit, list, show, events, cancel, watch, download,
compare, workers, the models, datasets, webhooks and recipes groups (groups.py) and the sweep
group (sweeps.py); the server commands join them in service/cli.py.

Global options: --url ($DISTILLERY_URL), --api-key ($DISTILLERY_API_KEY), --json. Exit
codes: distillery_client/commands.py.
"""

import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from distillery_client import display
from distillery_client.client import Client, ConnectionFailed
from distillery_client.commands import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    OPTIONS,
    AsJson,
    JobArg,
    client,
    emit,
    handled,
    load_spec,
    newest,
    out,
    refused,
    say,
    transfer_bar,
    wants_json,
)
from distillery_client.errors import ApiError, InvalidRequest
from distillery_client.groups import datasets_app, models_app, recipes_app, webhooks_app
from distillery_client.models import Event, Job
from distillery_client.sweeps import sweeps_app

EXIT_BY_STATUS = {
    "succeeded": 0,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "pruned": EXIT_CANCELLED,  # a sweep's trial its pruner stopped
}
POLL_S = 1.0  # how often watch refreshes the progress inside an epoch

app = typer.Typer(
    help="Distillery: knowledge distillation as a service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(recipes_app, name="recipes")
app.add_typer(sweeps_app, name="sweep")


@app.callback()
def options(
    url: Annotated[
        str | None, typer.Option(envvar="DISTILLERY_URL", help="the API (default: local)")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="DISTILLERY_API_KEY", help="sent as a Bearer token")
    ] = None,
    as_json: AsJson = False,
) -> None:
    OPTIONS.url, OPTIONS.api_key, OPTIONS.json = url, api_key, as_json


@app.command()
@handled
def submit(
    spec: Annotated[Path, typer.Argument(help="the job spec, YAML or JSON")],
    wait: Annotated[bool, typer.Option("--wait", help="then watch it to its end")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="makes resubmitting safe")] = None,
    as_json: AsJson = False,
) -> None:
    """Submit a job spec; print its id. A refused spec prints each field at fault with its
    line in the file, and exits 2."""
    body, text = load_spec(spec)
    with client() as api:
        try:
            job = api.create_job(body, idempotency_key)
        except InvalidRequest as exc:
            refused(spec, exc, text)
        emit(job) if wants_json(as_json) else say(job.id)
        if wait:
            raise typer.Exit(EXIT_BY_STATUS[follow(api, job.id).status])


@app.command("list")
@handled
def list_jobs(
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
    as_json: AsJson = False,
) -> None:
    """Jobs, newest first (as many pages as --limit takes): a table fitted to the terminal;
    piped, one tab-separated line a job (id, name, status, method, student, epoch/epochs,
    best val_acc, created)."""
    with client() as api:
        jobs = newest(lambda n: api.iter_jobs(status, page_size=n), limit)
    if wants_json(as_json):
        emit(jobs)
    elif out.is_terminal:
        out.print(display.jobs_table(jobs, out.width))
    else:
        sys.stdout.write(display.tsv(display.job_row(j) for j in jobs))


@app.command()
@handled
def show(job_id: JobArg, as_json: AsJson = False) -> None:
    """A job: status, progress, metrics, error."""
    with client() as api:
        job = api.get_job(job_id)
    emit(job) if wants_json(as_json) else out.print(display.fields_table(display.job_fields(job)))


@app.command()
@handled
def events(
    job_id: JobArg,
    after: Annotated[int, typer.Option(min=0, help="events after this id")] = 0,
    live: Annotated[bool, typer.Option("--follow", "-f", help="until the job ends")] = False,
    as_json: AsJson = False,
) -> None:
    """A job's events: transitions, per-epoch metrics, checkpoints, warnings. An epoch a
    later attempt trained again shows that attempt's metrics (following, those recorded
    from now on are marked "again")."""
    feed = display.Feed()

    def show(event: Event) -> None:
        if wants_json(as_json):
            sys.stdout.write(event.model_dump_json() + "\n")
        else:
            say(feed.line(event))

    with client() as api:
        recorded = list(api.iter_events(job_id, after, page_size=1000))
        for event in display.latest_attempts(recorded):
            show(event)
        if live:
            for event in api.wait(job_id, recorded[-1].id if recorded else after):
                show(event)


@app.command()
@handled
def cancel(job_id: JobArg, as_json: AsJson = False) -> None:
    """Cancel a job (queued: at once; running: it stops at its next step)."""
    with client() as api:
        job = api.cancel_job(job_id)
    emit(job) if wants_json(as_json) else say(f"{job.id} {job.status}")


@app.command()
@handled
def watch(job_id: JobArg) -> None:
    """Follow a job to its end: a live progress view on a terminal, one line per event
    otherwise. Exits 0 if it succeeded, 1 if it failed, 3 if it was cancelled or pruned."""
    with client() as api:
        job = follow(api, job_id)
    raise typer.Exit(EXIT_BY_STATUS[job.status])


def follow(api: Client, job_id: str) -> Job:
    """Show the job's events (and, on a terminal, its live progress) until it ends."""
    watching = api.wait(job_id)
    if out.is_terminal:
        live_view(api, job_id, watching)
    else:
        feed = display.Feed()
        for event in watching:
            say(feed.line(event))
    assert watching.job is not None
    say(display.outcome_line(watching.job))
    return watching.job


def live_view(api: Client, job_id: str, events: Any) -> None:
    """The rich view, redrawn on each event and every POLL_S (progress within an epoch is
    not an event: a thread reads the job)."""
    state: dict[str, Any] = {"job": api.get_job(job_id), "metrics": {}, "last": None}
    stop = threading.Event()

    def view() -> Any:
        return display.watch_view(state["job"], state["metrics"], state["last"])

    with Live(view(), console=out, refresh_per_second=4) as live:

        def poll() -> None:
            while not stop.wait(POLL_S):
                try:
                    state["job"] = api.get_job(job_id)
                except (ApiError, ConnectionFailed):
                    continue  # the event stream reports a lasting failure
                live.update(view())

        threading.Thread(target=poll, daemon=True).start()
        try:
            for event in events:
                _note(state, event)
                live.update(view())
        finally:
            stop.set()
        state["job"] = events.job or state["job"]
        live.update(view())


def _note(state: dict[str, Any], event: Event) -> None:
    if event.type == "metrics":
        state["metrics"] = event.data
    state["last"] = event


@app.command()
@handled
def download(
    job_id: JobArg,
    name: Annotated[str, typer.Argument(help="the artifact, e.g. student.safetensors")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file or folder")] = None,
) -> None:
    """Download one of a job's files, verified against the sha256 the API lists (exit 5,
    nothing kept, on a mismatch)."""
    with client() as api, transfer_bar(f"{name}") as progress:
        path = api.download(job_id, name, output, progress)
    say(f"{path}  sha256 verified")


@app.command()
@handled
def compare(
    job_ids: Annotated[list[str], typer.Argument(help="two or more job ids")],
    as_json: AsJson = False,
) -> None:
    """Jobs side by side: status, best and final metrics, and the spec fields that differ."""
    with client() as api:
        jobs = [api.get_job(j) for j in job_ids]
    rows = display.comparison(jobs)
    if wants_json(as_json):
        emit({"jobs": [j.id for j in jobs], "rows": rows})
    else:
        out.print(display.comparison_table(jobs, rows))


@app.command()
@handled
def workers(as_json: AsJson = False) -> None:
    """The fleet: each registered worker's queues, memory, cores and GPUs, live or not."""
    with client() as api:
        fleet = api.list_workers().data
    if wants_json(as_json):
        emit(fleet)
        return
    table = Table("name", "queues", "memory", "cores", "gpus", "live")
    for w in fleet:
        memory, queues = gib(w.memory_bytes), ",".join(w.queues)
        table.add_row(w.name, queues, memory, str(w.cores), gpus(w.gpu_memory_bytes), str(w.live))
    out.print(table)


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def gpus(memory: list[int]) -> str:
    """`2 x 79.1 GiB`, or `0`."""
    return f"{len(memory)} x {gib(max(memory))}" if memory else "0"
