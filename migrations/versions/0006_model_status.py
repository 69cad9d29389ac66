"""models.status: a timm teacher's weights are checked by a worker before they can teach

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # the models before this were checked at upload: ready
    op.add_column(
        "models", sa.Column("status", sa.String(length=16), nullable=False, server_default="ready")
    )
    op.add_column("models", sa.Column("problems", JSON, nullable=True))
    op.add_column("models", sa.Column("parameters", sa.BigInteger(), nullable=True))
    op.add_column("models", sa.Column("output_shape", JSON, nullable=True))


def downgrade() -> None:
    for column in ("output_shape", "parameters", "problems", "status"):
        op.drop_column("models", column)
