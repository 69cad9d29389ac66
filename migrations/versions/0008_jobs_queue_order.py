"""jobs: an index for workers claiming a queue's oldest queued job

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_queue_created", "jobs", ["status", "queue", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_queue_created", table_name="jobs")
