"""datasets: uploaded image classification data; jobs.dataset_id

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("in_channels", sa.Integer(), nullable=False),
        sa.Column("input_size", sa.Integer(), nullable=False),
        sa.Column("num_train", sa.Integer(), nullable=False),
        sa.Column("num_val", sa.Integer(), nullable=True),
        sa.Column("class_names", JSON, nullable=False),
        sa.Column("class_counts", JSON, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("upload_sha256", sa.String(length=64), nullable=False),
        sa.Column("upload_size", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_datasets_created_at_id", "datasets", ["created_at", "id"])
    # plain ADD COLUMN: a batch copy of jobs on SQLite would cascade-delete its events
    op.add_column("jobs", sa.Column("dataset_id", sa.String(length=40), nullable=True))
    op.create_index(op.f("ix_jobs_dataset_id"), "jobs", ["dataset_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_dataset_id"), table_name="jobs")
    op.drop_column("jobs", "dataset_id")
    op.drop_index("ix_datasets_created_at_id", table_name="datasets")
    op.drop_table("datasets")
