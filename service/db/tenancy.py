"""Every read of a request sees its caller's project only.

A request's session carries the caller's project (`scope`); each ORM statement it runs, a
`Session.get` included, gets `project_id = <it>` added for jobs, models, datasets, webhooks
and sweeps (with SQLAlchemy's `with_loader_criteria`), so another project's row is simply
not there: a 404, or "no such job" for a spec that names it. Sessions of the worker and of the
watchdog carry no project and see everything."""

from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from service.db.tables import (
    DEFAULT_PROJECT,
    Dataset,
    Job,
    RegisteredModel,
    Sweep,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
)

PROJECT = "project_id"  # the session.info key
OWNED = (Job, RegisteredModel, Dataset, Webhook, WebhookDelivery, WebhookEvent, Sweep)
# the caller's project while a request is served (service/api/deps.py sets it): each session
# opened then is scoped to it (service/db/sessions.py), on any thread the request runs on
CURRENT: ContextVar[str | None] = ContextVar("distillery_project", default=None)


def scope(s: Session, project_id: str | None) -> Session:
    if project_id is not None:
        s.info[PROJECT] = project_id
    return s


def current_project() -> str:
    """The project rows made now belong to."""
    return CURRENT.get() or DEFAULT_PROJECT


@event.listens_for(Session, "do_orm_execute")
def _only_the_callers_rows(state: ORMExecuteState) -> None:
    project = state.session.info.get(PROJECT)
    if project is None or state.is_column_load or state.is_relationship_load:
        return
    state.statement = state.statement.options(*criteria(project))


@lru_cache(maxsize=4096)
def criteria(project: str) -> tuple[Any, ...]:
    """The options a statement gets for `project`, made once per project: building them
    cost more than the query they join (SQLAlchemy caches a statement by its lambda's code,
    the project is a bound parameter)."""
    return tuple(
        with_loader_criteria(table, lambda t: t.project_id == project, include_aliases=True)
        for table in OWNED
    )
