"""The state of an uploaded model's check (a timm model is `validating` until a worker has
loaded it). The database holds it, as it holds jobs: a worker takes a check with a lease it
extends while the check runs, so the watchdog can send a check again whose message was lost
(a broker restart, a broker away at upload) or whose worker died; one that keeps dying
makes the model invalid. Every change is one conditional UPDATE."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from service.db.tables import RegisteredModel, utcnow

MAX_ATTEMPTS = 3  # checks started and never finished before the model is invalid
M = RegisteredModel


def _set(s: Session, model_id: str, *where: Any, **values: Any) -> bool:
    stmt = (
        update(M)
        .where(M.id == model_id, M.status == "validating", *where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return s.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def _free(now: datetime) -> ColumnElement[bool]:
    return or_(M.check_lease_until.is_(None), M.check_lease_until < now)


def claim(s: Session, model_id: str, lease_s: float) -> RegisteredModel | None:
    """Take a validating model's check for `lease_s`: None when it is decided, another
    worker holds it, or it was started MAX_ATTEMPTS times already."""
    now = utcnow()
    taken = _set(
        s,
        model_id,
        _free(now),
        M.check_attempts < MAX_ATTEMPTS,
        check_lease_until=now + timedelta(seconds=lease_s),
        check_attempts=M.check_attempts + 1,
    )
    return s.get(M, model_id) if taken else None


def extend(s: Session, model_id: str, lease_s: float) -> bool:
    """Hold a check taken with `claim` `lease_s` longer; False once it is decided."""
    return _set(s, model_id, check_lease_until=utcnow() + timedelta(seconds=lease_s))


def record(s: Session, model_id: str, outcome: dict[str, Any]) -> bool:
    """A worker's check of a validating model: ready (with its parameter count and output
    shape) or invalid (with its problems). A repeated check of a model already decided
    changes nothing."""
    values = {k: outcome.get(k) for k in ("status", "problems", "parameters", "output_shape")}
    return _set(s, model_id, check_lease_until=None, **values)


def waiting(s: Session, longer_than_s: float) -> str | None:
    """The oldest validating model no worker holds: untaken `longer_than_s` after its upload,
    or its worker's lease ran out. Its message may be lost."""
    now = utcnow()
    since = now - timedelta(seconds=longer_than_s)
    unsent = and_(M.check_lease_until.is_(None), M.created_at < since)
    untaken = or_(unsent, M.check_lease_until < now)
    return s.scalar(
        select(M.id)
        .where(M.status == "validating", M.check_attempts < MAX_ATTEMPTS, untaken)
        .order_by(M.created_at, M.id)
        .limit(1)
    )


def expire(s: Session) -> list[str]:
    """Make invalid the models whose check was started MAX_ATTEMPTS times and never
    finished (each time its worker was lost); returns their ids."""
    now = utcnow()
    lost = s.scalars(
        select(M.id).where(
            M.status == "validating", M.check_attempts >= MAX_ATTEMPTS, M.check_lease_until < now
        )
    )
    why = f"the check was started {MAX_ATTEMPTS} times and never finished (its worker was lost)"
    invalid = {"status": "invalid", "problems": [why], "check_lease_until": None}
    return [model_id for model_id in list(lost) if _set(s, model_id, _free(now), **invalid)]
