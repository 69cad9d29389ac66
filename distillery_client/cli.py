"""`distillery`'s client commands: submit, list, show, events, cancel, watch, download,
compare, models ..., datasets ... (the server commands join them in service/cli.py).

Global options: --url ($DISTILLERY_URL), --api-key ($DISTILLERY_API_KEY), --json.
Exit codes:
  0  done; for watch and submit --wait: the job succeeded
  1  the job failed
  2  bad input: a usage error, an unreadable spec file, or a request the API refused as
     invalid (400, 422: each field at fault is printed)
  3  the job was cancelled
  4  any other API error (404, 409, 429 after retries, 5xx) or the API is unreachable
  5  a download's sha256 is not the one the API lists (nothing is kept)
"""

import functools
import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from distillery_client import display, specfile
from distillery_client.client import MAX_PAGE, Client, ConnectionFailed
from distillery_client.errors import ApiError, BadRequest, ChecksumMismatch, InvalidRequest
from distillery_client.models import Event, Job

EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED, EXIT_API, EXIT_CHECKSUM = 1, 2, 3, 4, 5
EXIT_BY_STATUS = {"succeeded": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
POLL_S = 1.0  # how often watch refreshes the progress inside an epoch

app = typer.Typer(
    help="Distillery: knowledge distillation as a service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
models_app = typer.Typer(help="Uploaded and registered models.", no_args_is_help=True)
datasets_app = typer.Typer(help="Uploaded datasets.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
out, err = Console(), Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

JobArg = Annotated[str, typer.Argument(help="a job id")]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


@dataclass
class Options:
    url: str | None = None
    api_key: str | None = None
    json: bool = False


OPTIONS = Options()


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


def client() -> Client:
    return Client(OPTIONS.url, OPTIONS.api_key)


def handled(fn: F) -> F:
    """A command whose API errors print as one red message and an exit code (module doc)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InvalidRequest, BadRequest) as exc:
            fail(str(exc), EXIT_INVALID, exc.errors)
        except ApiError as exc:
            fail(str(exc), EXIT_API)
        except ConnectionFailed as exc:
            fail(f"cannot reach the API: {exc}", EXIT_API)
        except ChecksumMismatch as exc:
            fail(str(exc), EXIT_CHECKSUM)

    return run  # type: ignore[return-value]


def fail(message: str, code: int, errors: Any = ()) -> None:
    err.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    for e in errors:
        err.print(f"  {e.field}: {e.message}", style="red", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def say(line: str) -> None:
    """A plain line on stdout: never wrapped, no markup (scripts parse it)."""
    out.print(line, markup=False, highlight=False, soft_wrap=True)


def emit(value: Any) -> None:
    """JSON on stdout: a model, or a list of them, as the API sent it."""
    plain = _plain(value)
    sys.stdout.write(json.dumps(plain, indent=2) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def wants_json(flag: bool) -> bool:
    return flag or OPTIONS.json


# -- jobs


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
    try:
        body, text = specfile.load(spec)
    except specfile.SpecFileError as exc:
        fail(str(exc), EXIT_INVALID)
    with client() as api:
        try:
            job = api.create_job(body, idempotency_key)
        except InvalidRequest as exc:
            fail(f"{spec}: {exc.title}: {exc.detail}", EXIT_INVALID, _with_lines(exc, text))
        emit(job) if wants_json(as_json) else say(job.id)
        if wait:
            raise typer.Exit(EXIT_BY_STATUS[follow(api, job.id).status])


@dataclass
class Located:
    field: str
    message: str


def _with_lines(exc: ApiError, text: str) -> list[Located]:
    """The API's field errors, each with the line of the spec file it points at."""
    located = []
    for e in exc.errors:
        line = specfile.line_of(text, e.field)
        located.append(Located(e.field, e.message + (f" (line {line})" if line else "")))
    return located


def newest(pages: Callable[[int], Iterator[T]], limit: int) -> list[T]:
    """The `limit` newest rows, read in pages as large as the API gives (MAX_PAGE)."""
    return list(islice(pages(min(limit, MAX_PAGE)), limit))


def print_rows(rows: list[Any], columns: tuple[str, ...], as_json: bool) -> None:
    emit(rows) if wants_json(as_json) else out.print(display.rows_table(columns, rows))


@app.command("list")
@handled
def list_jobs(
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
    as_json: AsJson = False,
) -> None:
    """Jobs, newest first (as many pages as --limit takes)."""
    with client() as api:
        jobs = newest(lambda n: api.iter_jobs(status, page_size=n), limit)
    emit(jobs) if wants_json(as_json) else out.print(display.jobs_table(jobs))


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
    """A job's events: transitions, per-epoch metrics, checkpoints, warnings."""
    with client() as api:
        found = api.wait(job_id, after) if live else api.iter_events(job_id, after)
        for event in found:
            if wants_json(as_json):
                sys.stdout.write(event.model_dump_json() + "\n")
            else:
                say(display.event_line(event))


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
    otherwise. Exits 0 if it succeeded, 1 if it failed, 3 if it was cancelled."""
    with client() as api:
        job = follow(api, job_id)
    raise typer.Exit(EXIT_BY_STATUS[job.status])


def follow(api: Client, job_id: str) -> Job:
    """Show the job's events (and, on a terminal, its live progress) until it ends."""
    watching = api.wait(job_id)
    if out.is_terminal:
        live_view(api, job_id, watching)
    else:
        for event in watching:
            say(display.event_line(event))
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


class transfer_bar:
    """A byte progress bar on a terminal (nothing otherwise), as a `progress(done, total)`
    callback."""

    def __init__(self, label: str) -> None:
        self.bar = Progress(
            "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            console=err, disable=not err.is_terminal,
        )  # fmt: skip
        self.task = self.bar.add_task(label, total=None)

    def __enter__(self) -> Callable[[int, int], None]:
        self.bar.start()
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *_: object) -> None:
        self.bar.stop()


@app.command()
@handled
def compare(
    job_ids: Annotated[list[str], typer.Argument(help="two or more job ids")],
    as_json: AsJson = False,
) -> None:
    """Jobs side by side: status, best and final metrics, and the spec fields that differ."""
    with client() as api:
        jobs = [api.get_job(j) for j in job_ids]
        best = [best_accuracy(api, j) for j in jobs]
    rows = display.comparison(jobs, best)
    if wants_json(as_json):
        emit({"jobs": [j.id for j in jobs], "rows": rows})
    else:
        out.print(display.comparison_table(jobs, rows))


def best_accuracy(api: Client, job: Job) -> tuple[Any, Any]:
    """(best val_acc, its epoch) from the job's metrics events."""
    scored = [
        (e.data["val_acc"], e.data.get("epoch"))
        for e in api.iter_events(job.id, page_size=1000)
        if e.type == "metrics" and e.data.get("val_acc") is not None
    ]
    return max(scored, key=lambda s: s[0]) if scored else (None, None)


# -- models and datasets


@models_app.command("upload")
@handled
def upload_model(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="safetensors")],
    arch: Annotated[str, typer.Option(help="its architecture, e.g. resnet8")],
    num_classes: Annotated[int, typer.Option()],
    in_channels: Annotated[int, typer.Option()],
    input_size: Annotated[int | None, typer.Option(help="image height = width")] = None,
    name: Annotated[str | None, typer.Option()] = None,
    metadata: Annotated[str | None, typer.Option(help="JSON: normalisation, class_names")] = None,
    as_json: AsJson = False,
) -> None:
    """Upload a teacher's weights (a safetensors file), with a byte progress bar."""
    meta = _json_option("--metadata", metadata)
    with client() as api, transfer_bar(file.name) as progress:
        model = api.upload_model(
            file,
            arch=arch,
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            name=name,
            metadata=meta,
            progress=progress,
        )
    emit(model) if wants_json(as_json) else say(model.id)


def _json_option(flag: str, value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError as exc:
        fail(f"{flag}: not JSON: {exc}", EXIT_INVALID)


@models_app.command("register")
@handled
def register_model(
    job_id: JobArg, name: Annotated[str, typer.Option()] = "", as_json: AsJson = False
) -> None:
    """Register a succeeded job's student as a model."""
    with client() as api:
        model = api.register_model(job_id, name)
    emit(model) if wants_json(as_json) else say(model.id)


@models_app.command("list")
@handled
def list_models(limit: Annotated[int, typer.Option(min=1)] = 20, as_json: AsJson = False) -> None:
    """Models, newest first."""
    with client() as api:
        models = newest(api.iter_models, limit)
    columns = ("id", "name", "arch", "num_classes", "in_channels", "status", "source", "size")
    print_rows(models, columns, as_json)


@models_app.command("show")
@handled
def show_model(model_id: str, as_json: AsJson = False) -> None:
    with client() as api:
        model = api.get_model(model_id)
    emit(model) if wants_json(as_json) else out.print(display.fields_table(dict(model)))


@models_app.command("delete")
@handled
def delete_model(model_id: str) -> None:
    with client() as api:
        api.delete_model(model_id)
    say(f"{model_id} deleted")


@datasets_app.command("upload")
@handled
def upload_dataset(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz, zip, tar")],
    name: Annotated[str | None, typer.Option()] = None,
    format: Annotated[str | None, typer.Option(help="npz, idx or imagefolder")] = None,
    num_classes: Annotated[int | None, typer.Option()] = None,
    class_name: Annotated[
        list[str] | None, typer.Option(help="IDX: each label's name, in order")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Upload labelled images, with a byte progress bar."""
    with client() as api, transfer_bar(file.name) as progress:
        dataset = api.upload_dataset(
            file,
            name=name,
            format=format,
            num_classes=num_classes,
            class_names=class_name,
            progress=progress,
        )
    emit(dataset) if wants_json(as_json) else say(dataset.id)


@datasets_app.command("list")
@handled
def list_datasets(limit: Annotated[int, typer.Option(min=1)] = 20, as_json: AsJson = False) -> None:
    """Datasets, newest first."""
    with client() as api:
        found = newest(api.iter_datasets, limit)
    columns = ("id", "name", "format", "num_classes", "input_size", "num_train", "size")
    print_rows(found, columns, as_json)


@datasets_app.command("show")
@handled
def show_dataset(dataset_id: str, as_json: AsJson = False) -> None:
    with client() as api:
        dataset = api.get_dataset(dataset_id)
    if wants_json(as_json):
        return emit(dataset)
    out.print(display.fields_table(dataset.model_dump(exclude={"splits"})))


@datasets_app.command("delete")
@handled
def delete_dataset(dataset_id: str) -> None:
    with client() as api:
        api.delete_dataset(dataset_id)
    say(f"{dataset_id} deleted")
