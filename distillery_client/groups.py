"""`distillery models|datasets|webhooks|recipes ...`: the client commands of the API's other
resources (distillery_client/cli.py adds them to the app)."""

import json
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer

from distillery_client import display
from distillery_client.commands import (
    EXIT_FAILED,
    EXIT_INVALID,
    AsJson,
    client,
    emit,
    fail,
    handled,
    newest,
    out,
    print_rows,
    say,
    transfer_bar,
    wants_json,
)
from distillery_client.models import Dataset, Model

models_app = typer.Typer(help="Uploaded and registered models.", no_args_is_help=True)
datasets_app = typer.Typer(help="Uploaded and registered datasets.", no_args_is_help=True)
webhooks_app = typer.Typer(
    help="URLs the project's job events are POSTed to.", no_args_is_help=True
)
recipes_app = typer.Typer(
    help='Published per-pair settings; a spec\'s "recipe" fills what it leaves out.',
    no_args_is_help=True,
)


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


class _Problem(NamedTuple):
    """A problem printed as `fail` prints a field's."""

    message: str
    field: str = "problem"


def _json_option(flag: str, value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError as exc:
        fail(f"{flag}: not JSON: {exc}", EXIT_INVALID)


@models_app.command("register")
@handled
def register_model(
    job_id: Annotated[str | None, typer.Argument(help="a succeeded job: its student")] = None,
    uri: Annotated[
        str | None, typer.Option(help="s3://bucket/key of a safetensors file, instead of a job")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="--uri: its architecture")] = None,
    num_classes: Annotated[int | None, typer.Option(help="--uri")] = None,
    in_channels: Annotated[int | None, typer.Option(help="--uri")] = None,
    input_size: Annotated[int | None, typer.Option(help="--uri: image height = width")] = None,
    metadata: Annotated[str | None, typer.Option(help="JSON: normalisation, class_names")] = None,
    name: Annotated[str, typer.Option()] = "",
    wait: Annotated[bool, typer.Option(help="--uri: until a worker has checked it")] = False,
    as_json: AsJson = False,
) -> None:
    """Register a succeeded job's student as a model, or (--uri) a safetensors file in an
    object store, which a worker reads and checks: --wait exits 0 once it is ready, 1 if it is
    invalid (its problems printed)."""
    if (job_id is None) == (uri is None):
        fail("name a job, or a file with --uri (not both)", EXIT_INVALID)
    with client() as api:
        if uri is None:
            model = api.register_model(str(job_id), name)
        elif arch is None or num_classes is None or in_channels is None:
            fail("--uri needs --arch, --num-classes and --in-channels", EXIT_INVALID)
            return
        else:
            meta = _json_option("--metadata", metadata)
            shape = {"num_classes": num_classes, "in_channels": in_channels}
            model = api.register_model_uri(
                uri, arch=arch, **shape, input_size=input_size, name=name, metadata=meta
            )
            model = api.wait_model(model.id) if wait else model
    _registered(model, as_json)


def _registered(found: Model | Dataset, as_json: bool) -> None:
    """Its id (or JSON); an invalid one's problems, and exit 1."""
    emit(found) if wants_json(as_json) else say(found.id)
    if found.status == "invalid":
        fail(f"{found.id} is invalid", EXIT_FAILED, [_Problem(p) for p in found.problems or []])


@models_app.command("list")
@handled
def list_models(limit: Annotated[int, typer.Option(min=1)] = 20, as_json: AsJson = False) -> None:
    """Models, newest first."""
    with client() as api:
        models = newest(api.iter_models, limit)
    columns = ("id", "name", "arch", "num_classes", "in_channels", "status", "source", "size")
    print_rows(models, columns, as_json, soft=("name",))


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


@datasets_app.command("register")
@handled
def register_dataset(
    uri: Annotated[str, typer.Option(help="s3://bucket/prefix/ the images lie under")],
    format: Annotated[str, typer.Option(help="imagefolder or webdataset")],
    name: Annotated[str, typer.Option()] = "",
    class_name: Annotated[
        list[str] | None, typer.Option(help="webdataset: each label's name, in order")
    ] = None,
    wait: Annotated[bool, typer.Option(help="until a worker has read it")] = False,
    as_json: AsJson = False,
) -> None:
    """Register images already in an object store; a worker reads them where they lie (their
    bytes never pass through the API). --wait exits 0 once it is ready, 1 if it is invalid
    (its problems printed)."""
    with client() as api:
        dataset = api.register_dataset(uri, format=format, name=name, class_names=class_name)
        dataset = api.wait_dataset(dataset.id) if wait else dataset
    _registered(dataset, as_json)


@datasets_app.command("list")
@handled
def list_datasets(limit: Annotated[int, typer.Option(min=1)] = 20, as_json: AsJson = False) -> None:
    """Datasets, newest first."""
    with client() as api:
        found = newest(api.iter_datasets, limit)
    columns = ("id", "name", "format", "status", "num_classes", "input_size", "num_train", "size")
    print_rows(found, columns, as_json, soft=("name",))


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


@webhooks_app.command("create")
@handled
def create_webhook(
    url: Annotated[str, typer.Argument(help="http(s) URL the events are POSTed to")],
    event: Annotated[
        list[str] | None,
        typer.Option(help="an event to send, repeated (default: the terminal states)"),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Register a webhook; prints its id and its signing secret (shown only now)."""
    with client() as api:
        hook = api.create_webhook(url, event)
    emit(hook) if wants_json(as_json) else say(f"{hook.id}  {hook.secret}")


@webhooks_app.command("list")
@handled
def list_webhooks(limit: Annotated[int, typer.Option(min=1)] = 20, as_json: AsJson = False) -> None:
    """Webhooks, newest first."""
    with client() as api:
        hooks = newest(api.iter_webhooks, limit)
    print_rows(hooks, ("id", "url", "events", "state"), as_json, soft=("url", "events"))


@webhooks_app.command("resume")
@handled
def resume_webhook(webhook_id: str, as_json: AsJson = False) -> None:
    """Send to a paused webhook again now (its receiver kept failing)."""
    with client() as api:
        hook = api.resume_webhook(webhook_id)
    emit(hook) if wants_json(as_json) else say(f"{hook.id} {hook.state}")


@webhooks_app.command("events")
@handled
def list_webhook_events(
    webhook_id: str, limit: Annotated[int, typer.Option(min=1)] = 20, as_json: AsJson = False
) -> None:
    """When a webhook was paused (and why) and resumed, newest first."""
    with client() as api:
        found = newest(lambda n: api.iter_webhook_events(webhook_id, n), limit)
    print_rows(found, ("created_at", "type", "message"), as_json, soft=("message",))


@webhooks_app.command("delete")
@handled
def delete_webhook(webhook_id: str) -> None:
    with client() as api:
        api.delete_webhook(webhook_id)
    say(f"{webhook_id} deleted")


@webhooks_app.command("deliveries")
@handled
def list_deliveries(
    webhook_id: str, limit: Annotated[int, typer.Option(min=1)] = 20, as_json: AsJson = False
) -> None:
    """A webhook's deliveries, newest first: status, attempts, the receiver's last answer."""
    with client() as api:
        found = newest(lambda n: api.iter_deliveries(webhook_id, n), limit)
    columns = ("id", "event", "status", "attempts", "last_status_code", "last_error")
    print_rows(found, columns, as_json, soft=("last_error",))


@webhooks_app.command("retry")
@handled
def retry_delivery(webhook_id: str, delivery_id: str, as_json: AsJson = False) -> None:
    """Send a delivery that ended again, at once."""
    with client() as api:
        delivery = api.retry_delivery(webhook_id, delivery_id)
    emit(delivery) if wants_json(as_json) else say(f"{delivery.id} {delivery.status}")


@recipes_app.command("list")
@handled
def list_recipes(
    method: Annotated[str | None, typer.Option(help="only this method's")] = None,
    teacher: Annotated[str | None, typer.Option(help="only those for this teacher")] = None,
    student: Annotated[str | None, typer.Option(help="only those for this student")] = None,
    as_json: AsJson = False,
) -> None:
    """Recipes, schedules first: name, method, teacher, student, published top-1."""
    with client() as api:
        recipes = api.list_recipes(method, teacher, student).data
    print_rows(recipes, ("name", "method", "teacher", "student", "top1"), as_json)


@recipes_app.command("show")
@handled
def show_recipe(name: str, as_json: AsJson = False) -> None:
    """A recipe: what it is, the fields it fills, where each value comes from."""
    with client() as api:
        recipe = api.get_recipe(name)
    if wants_json(as_json):
        emit(recipe)
        return
    published = recipe.published
    fields = {
        "name": recipe.name,
        "title": recipe.title,
        "pair": f"{recipe.teacher} -> {recipe.student}" if recipe.teacher else "any",
        "extends": recipe.extends,
        "published": f"{published.top1} ({published.source})" if published else None,
        "sources": "\n".join(recipe.sources),
        "spec": json.dumps(recipe.spec, indent=2),
    }
    out.print(display.fields_table(fields))
