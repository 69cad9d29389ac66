"""Data and models registered by URI (POST /v1/datasets and /v1/models with {"uri": ...}):
accepted only under the prefixes the deployment allows the caller's project
(DISTILLERY_DATA_URIS, read by service/spec/uris.py), recorded `validating`, and sent to a
worker that reads them where they lie (worker/task/check_runner.py). The API never reads
their bytes. A refusal says how many prefixes the project may read, never which: another
project's are not told."""

from sqlalchemy.orm import Session

from service import dispatch
from service.config import get_settings
from service.db.sessions import session_scope
from service.db.tables import DEFAULT_PROJECT, Dataset, Project, RegisteredModel, new_id
from service.db.tenancy import current_project
from service.errors import DistilleryError, FieldError
from service.ingest import models, shards
from service.spec import uris
from service.spec.model_info import FromUri, ModelInfo
from service.spec.uris import DatasetFromUri
from service.store import dataset_key


class UriNotAllowed(DistilleryError):
    def __init__(self, why: str) -> None:
        super().__init__(
            f"uri refused: {why}",
            [FieldError("uri", why)],
            status=422,
            code="uri_not_allowed",
            title="URI not allowed",
        )


def project_name(s: Session, project_id: str) -> str:
    row = s.get(Project, project_id)
    if row is not None:
        return row.name
    return "default" if project_id == DEFAULT_PROJECT else ""


def refused(s: Session, uri: str, project_id: str) -> str | None:
    """Why project `project_id` may not read `uri`; None when it may."""
    allowed = uris.allowed(get_settings().data_uris, project_name(s, project_id))
    if any(uris.is_under(uri, prefix) for prefix in allowed):
        return None
    if not allowed:
        return "this deployment reads no data by URI (DISTILLERY_DATA_URIS is empty)"
    count = f"{len(allowed)} prefix" + ("es" if len(allowed) > 1 else "")
    return f"not under the {count} this project may read (DISTILLERY_DATA_URIS)"


def _allowed(s: Session, uri: str) -> None:
    if why := refused(s, uri, current_project()):
        raise UriNotAllowed(why)


def register_dataset(body: DatasetFromUri) -> Dataset:
    """A dataset that a worker will read at `body.uri` (a folder), validating until then."""
    uri = uris.folder(body.uri)
    dataset_id = new_id("ds")
    with session_scope() as s:
        _allowed(s, uri)
        row = Dataset(
            id=dataset_id,
            project_id=current_project(),
            name=body.name or uri.rstrip("/").rsplit("/", 1)[-1][:200],  # its last folder
            format=body.format,
            uri=uri,
            status="validating",
            class_names=body.class_names,
            path=dataset_key(dataset_id, shards.INDEX),
        )
        s.add(row)
    # after the commit: a worker must find the row (a lost message is sent again by the watchdog)
    dispatch.send_dataset_check(dataset_id, get_settings().check_queue)
    return row


def register_model(body: FromUri) -> RegisteredModel:
    """A model whose weights a worker will copy from `body.uri` and check, validating until
    then."""
    models.refuse_pickle(body.uri)
    with session_scope() as s:
        _allowed(s, body.uri)
    info = ModelInfo.model_validate(body.model_dump(exclude={"uri"}))
    model = models.register_uri(info, body.uri)
    dispatch.send_check(model.id, get_settings().check_queue)
    return model
