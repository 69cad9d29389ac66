"""jobs.init_model_id: the registered model a job's student starts from

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMN: a batch copy of jobs on SQLite would cascade-delete its events
    op.add_column("jobs", sa.Column("init_model_id", sa.String(length=40), nullable=True))
    op.create_index(op.f("ix_jobs_init_model_id"), "jobs", ["init_model_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_init_model_id"), table_name="jobs")
    op.drop_column("jobs", "init_model_id")
