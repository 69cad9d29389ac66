"""jobs: resources.nodes, the gang of workers that claims a job across nodes (seats and the
version every change of them bumps) and the rendezvous address node 0 publishes

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 21:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COLUMNS = ("nodes", "gang", "gang_version", "rendezvous")


def upgrade() -> None:
    # in place (no batch copy): SQLite adds and drops a column itself
    op.add_column("jobs", sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("jobs", sa.Column("gang", JSON, nullable=False, server_default=sa.text("'{}'")))
    op.add_column(
        "jobs", sa.Column("gang_version", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("jobs", sa.Column("rendezvous", sa.String(255), nullable=True))


def downgrade() -> None:
    for name in reversed(COLUMNS):
        op.drop_column("jobs", name)
