"""webhooks: URLs a project's job events are POSTed to, and their deliveries (an outbox)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT = "prj_default"
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def project_id() -> sa.Column:
    return sa.Column("project_id", sa.String(length=40), nullable=False, server_default=DEFAULT)


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=40), primary_key=True),
        project_id(),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_webhooks_project_id", "webhooks", ["project_id"])
    op.create_index("ix_webhooks_created_at_id", "webhooks", ["created_at", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("webhook_id", sa.String(length=40), sa.ForeignKey("webhooks.id"), nullable=False),
        project_id(),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("claim", sa.String(length=40), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
    )
    deliveries = "webhook_deliveries"
    op.create_index("ix_webhook_deliveries_project_id", deliveries, ["project_id"])
    op.create_index("ix_webhook_deliveries_job_id", deliveries, ["job_id"])
    op.create_index("ix_webhook_deliveries_due", deliveries, ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_webhook", deliveries, ["webhook_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")  # its indexes go with it
    op.drop_table("webhooks")
