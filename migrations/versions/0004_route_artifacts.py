"""route checkpoints are artifacts of kind "route"; KDCL specs drop method.linear_steps

Data only. Before, a route checkpoint was registered as kind "checkpoint" and recognised by
its name (checkpoints/route/...); now its kind says it. KDCL's linear ensemble is solved to
convergence, so the step count its specs stored is gone from the spec (they must still load).
A queued or running KDCL job made before 0004 trains (or resumes) with the held-out part of
the training split that KDCL now chooses its output on (method.holdout_fraction's default).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROUTE_NAMES = "checkpoints/route/%"
artifacts = sa.table("artifacts", sa.column("kind", sa.String), sa.column("name", sa.String))
jobs = sa.table(
    "jobs", sa.column("id", sa.String), sa.column("method", sa.String), sa.column("spec", JSON)
)
OLD_LINEAR_STEPS = 20  # the spec's default before 0004


def upgrade() -> None:
    _set_route_kind("checkpoint", "route")
    _edit_kdcl_specs(lambda method: method.pop("linear_steps", None))


def downgrade() -> None:
    _set_route_kind("route", "checkpoint")
    _edit_kdcl_specs(lambda method: method.setdefault("linear_steps", OLD_LINEAR_STEPS))


def _set_route_kind(old: str, new: str) -> None:
    where = sa.and_(artifacts.c.kind == old, artifacts.c.name.like(ROUTE_NAMES))
    op.execute(artifacts.update().where(where).values(kind=new))


def _edit_kdcl_specs(edit: Any) -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.spec).where(jobs.c.method == "kdcl")).all()
    for job_id, spec in rows:
        edit(spec["method"])
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(spec=spec))
