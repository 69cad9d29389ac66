"""models: teachers uploaded as safetensors or registered from a job; jobs.teacher_model_id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("arch", sa.String(length=64), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("in_channels", sa.Integer(), nullable=False),
        sa.Column("input_size", sa.Integer(), nullable=True),
        sa.Column("normalisation", JSON, nullable=True),
        sa.Column("class_names", JSON, nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_job_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["source_job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index("ix_models_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_models_source_job_id"), ["source_job_id"])
    # add_column and create_index only: SQLite alters in place, the jobs table is not copied
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("teacher_model_id", sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_teacher_model_id"), ["teacher_model_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_teacher_model_id"), table_name="jobs")
    # a plain DROP COLUMN (SQLite >= 3.35): a batch copy of jobs would drop the old table,
    # and with foreign keys on that cascades into job_events and artifacts
    op.drop_column("jobs", "teacher_model_id")
    op.drop_index(op.f("ix_models_source_job_id"), table_name="models")
    op.drop_index("ix_models_created_at_id", table_name="models")
    op.drop_table("models")
