"""models: a validating model's check is leased to the worker that took it, so a check whose
message or worker was lost is sent again

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 22:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # in place (no batch copy): SQLite adds and drops these columns itself
    op.add_column(
        "models", sa.Column("check_attempts", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("models", sa.Column("check_lease_until", sa.DateTime(), nullable=True))
    op.create_index("ix_models_status", "models", ["status"])


def downgrade() -> None:
    op.drop_index("ix_models_status", table_name="models")
    op.drop_column("models", "check_lease_until")
    op.drop_column("models", "check_attempts")
