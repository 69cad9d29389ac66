"""webhooks: each one's health (failures in a row, paused, probe, round-robin turn), its
events (paused, resumed), and each delivery's first attempt

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT = "prj_default"
HEALTH = ("failing_since", "paused_at", "next_probe_at", "last_turn_at")


def upgrade() -> None:
    # in place (no batch copy): SQLite adds and drops these columns itself
    op.add_column(
        "webhooks",
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
    )
    for name in HEALTH:
        op.add_column("webhooks", sa.Column(name, sa.DateTime(), nullable=True))
    op.add_column("webhook_deliveries", sa.Column("first_attempt_at", sa.DateTime(), nullable=True))
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("webhook_id", sa.String(length=40), sa.ForeignKey("webhooks.id"), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False, server_default=DEFAULT),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    events = "webhook_events"
    op.create_index("ix_webhook_events_project_id", events, ["project_id"])
    op.create_index("ix_webhook_events_webhook", events, ["webhook_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_table("webhook_events")  # its indexes go with it
    op.drop_column("webhook_deliveries", "first_attempt_at")
    for name in (*HEALTH, "consecutive_failures"):
        op.drop_column("webhooks", name)
