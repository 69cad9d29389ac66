"""job_events: the attempt each event belongs to, so a feed's consumers can let a retrained
epoch's metrics replace those of the attempt that lost them (events recorded before this
revision read attempt 0)

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-07 17:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # in place (no batch copy): SQLite adds and drops a column itself
    op.add_column(
        "job_events", sa.Column("attempt", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("job_events", "attempt")
