"""sweeps: a search over job specs whose trials are jobs (sweeps, sweep_trials); each job's
sweep, and what a cancelling job ends as (a trial its pruner stopped ends "pruned")

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-08 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SWEEP = sa.ForeignKey("sweeps.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("project_id", sa.String(40), nullable=False, server_default="prj_default"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("error", JSON, nullable=True),
        sa.Column("driver", sa.String(255), nullable=True),
        sa.Column("driver_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_sweeps_project_id", "sweeps", ["project_id"])
    op.create_index("ix_sweeps_status", "sweeps", ["status"])
    op.create_index("ix_sweeps_created_at_id", "sweeps", ["created_at", "id"])
    op.create_table(
        "sweep_trials",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("sweep_id", sa.String(40), SWEEP, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("optuna_trial", sa.Integer(), nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("sweep_id", "kind", "number", name="uq_sweep_trials_number"),
    )
    op.create_index("ix_sweep_trials_job_id", "sweep_trials", ["job_id"])
    # in place (no batch copy): SQLite adds and drops a column itself
    op.add_column("jobs", sa.Column("sweep_id", sa.String(40), nullable=True))
    op.add_column("jobs", sa.Column("ends_as", sa.String(16), nullable=True))
    op.create_index("ix_jobs_sweep_id", "jobs", ["sweep_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_sweep_id", table_name="jobs")  # SQLite drops no indexed column
    op.drop_column("jobs", "ends_as")
    op.drop_column("jobs", "sweep_id")
    op.drop_index("ix_sweep_trials_job_id", table_name="sweep_trials")
    op.drop_table("sweep_trials")
    op.drop_index("ix_sweeps_created_at_id", table_name="sweeps")
    op.drop_index("ix_sweeps_status", table_name="sweeps")
    op.drop_index("ix_sweeps_project_id", table_name="sweeps")
    op.drop_table("sweeps")
