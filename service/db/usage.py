"""Refusing to delete what unfinished jobs still use: a model or a dataset that a queued or
running job names is a 409 naming those jobs, checked and deleted under one row lock."""

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.db.sessions import get_or_404
from service.db.tables import ACTIVE, Job
from service.errors import Conflict


def unfinished_users(s: Session, columns: tuple[Any, ...], ident: str, limit: int = 5) -> list[str]:
    """Ids of queued or active jobs that name `ident` (a model, a dataset) in any of
    `columns`."""
    named = or_(*(column == ident for column in columns))
    q = select(Job.id).where(named, Job.status.in_(("queued", *ACTIVE))).limit(limit)
    return list(s.scalars(q))


def delete_unless_used(
    s: Session,
    table: type[Any],
    ident: str,
    what: str,
    columns: tuple[Any, ...],
    role: str,
    code: str,
) -> None:
    """Delete row `ident` of `table` (a model, a dataset) unless queued or running jobs
    name it in `columns`: then 409 `code`, "<what> <ident> <role> unfinished jobs [...]"."""
    row = get_or_404(s, table, what, ident, for_update=True)
    users = unfinished_users(s, columns, ident)
    if users:
        raise Conflict(
            f"{what} {ident!r} {role} unfinished jobs {users}; "
            "cancel them or wait for them to finish",
            code=code,
        )
    s.delete(row)
