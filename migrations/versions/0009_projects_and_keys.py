"""projects and API keys: jobs, models and datasets belong to a project (the rows before
this to the default one); idempotency keys are qualified by their project

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 16:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT = "prj_default"
OWNED = ("jobs", "models", "datasets")


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("max_active_jobs", sa.Integer(), nullable=True),
        sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    op.bulk_insert(projects, [{"id": DEFAULT, "name": "default", "created_at": now}])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("project_id", sa.String(length=40), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_project_id", "api_keys", ["project_id"])
    for table in OWNED:  # in place: a copy of jobs would cascade-delete its events on SQLite
        column = sa.Column(
            "project_id", sa.String(length=40), nullable=False, server_default=DEFAULT
        )
        op.add_column(table, column)
        op.create_index(f"ix_{table}_project_id", table, ["project_id"])
    op.execute(
        f"UPDATE jobs SET idempotency_key = '{DEFAULT}:' || idempotency_key "
        "WHERE idempotency_key IS NOT NULL"
    )


def downgrade() -> None:
    op.execute(
        f"UPDATE jobs SET idempotency_key = CASE WHEN project_id = '{DEFAULT}' "
        f"THEN substr(idempotency_key, {len(DEFAULT) + 2}) END "
        "WHERE idempotency_key IS NOT NULL"
    )
    for table in OWNED:
        op.drop_index(f"ix_{table}_project_id", table_name=table)
        op.drop_column(table, "project_id")
    op.drop_index("ix_api_keys_project_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("projects")
