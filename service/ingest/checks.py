"""The state of a worker's check of what was registered: an uploaded timm model (loaded by a
worker before it may teach), a model or a dataset by URI (read where it is). A row is
`validating` until its check is recorded. The database holds it, as it holds jobs: a worker
takes a check with a lease it extends while the check runs, so the watchdog can send a check
again whose message was lost (a broker restart, a broker away at registration) or whose
worker died; one that keeps dying makes the row invalid. Every change is one conditional
UPDATE. MODELS and DATASETS are the two tables' checks."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from service.db.tables import Dataset, RegisteredModel, utcnow

MAX_ATTEMPTS = 3  # checks started and never finished before the row is invalid


@dataclass(frozen=True)
class Checks:
    table: type[RegisteredModel] | type[Dataset]
    found: tuple[str, ...]  # the columns a check records besides status and problems

    def _set(self, s: Session, ident: str, *where: Any, **values: Any) -> bool:
        t = self.table
        stmt = (
            update(t)
            .where(t.id == ident, t.status == "validating", *where)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return s.execute(stmt).rowcount == 1  # type: ignore[attr-defined]

    def _free(self, now: datetime) -> ColumnElement[bool]:
        return or_(self.table.check_lease_until.is_(None), self.table.check_lease_until < now)

    def claim(self, s: Session, ident: str, lease_s: float) -> Any:
        """Take a validating row's check for `lease_s`: the row, or None when it is decided,
        another worker holds it, or it was started MAX_ATTEMPTS times already."""
        now = utcnow()
        taken = self._set(
            s,
            ident,
            self._free(now),
            self.table.check_attempts < MAX_ATTEMPTS,
            check_lease_until=now + timedelta(seconds=lease_s),
            check_attempts=self.table.check_attempts + 1,
        )
        return s.get(self.table, ident) if taken else None

    def extend(self, s: Session, ident: str, lease_s: float, **values: Any) -> bool:
        """Hold a check taken with `claim` `lease_s` longer (saving `values`, its progress);
        False once it is decided."""
        lease = utcnow() + timedelta(seconds=lease_s)
        return self._set(s, ident, check_lease_until=lease, **values)

    def record(self, s: Session, ident: str, outcome: dict[str, Any]) -> bool:
        """A worker's check of a validating row: `outcome` holds its new status ("ready" or
        "invalid") and the columns it found (a model's parameter count, a dataset's classes
        and counts) or its problems. A repeated check of a row already decided changes
        nothing; False then."""
        found = ("status", "problems", *self.found)
        values = {k: v for k, v in outcome.items() if k in found}
        return self._set(s, ident, check_lease_until=None, **values)

    def waiting(self, s: Session, longer_than_s: float) -> str | None:
        """The oldest validating row no worker holds: untaken `longer_than_s` after it was
        made, or its worker's lease ran out. Its message may be lost."""
        t, now = self.table, utcnow()
        since = now - timedelta(seconds=longer_than_s)
        unsent = and_(t.check_lease_until.is_(None), t.created_at < since)
        untaken = or_(unsent, t.check_lease_until < now)
        return s.scalar(
            select(t.id)
            .where(t.status == "validating", t.check_attempts < MAX_ATTEMPTS, untaken)
            .order_by(t.created_at, t.id)
            .limit(1)
        )

    def expire(self, s: Session) -> list[str]:
        """Make invalid the rows whose check was started MAX_ATTEMPTS times and never
        finished (each time its worker was lost); returns their ids."""
        t, now = self.table, utcnow()
        lost = s.scalars(
            select(t.id).where(
                t.status == "validating",
                t.check_attempts >= MAX_ATTEMPTS,
                t.check_lease_until < now,
            )
        )
        why = f"the check was started {MAX_ATTEMPTS} times and never finished (its worker was lost)"
        invalid = {"status": "invalid", "problems": [why], "check_lease_until": None}
        return [i for i in list(lost) if self._set(s, i, self._free(now), **invalid)]


MODELS = Checks(RegisteredModel, ("parameters", "output_shape", "sha256", "size"))
DATASETS = Checks(
    Dataset,
    (
        *("num_classes", "in_channels", "input_size", "num_train", "num_val"),
        *("class_names", "class_counts", "splits", "sha256", "size", "upload_size", "progress"),
    ),
)
