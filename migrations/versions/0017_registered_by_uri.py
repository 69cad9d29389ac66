"""datasets and models registered by URI: read where they are by a worker, validating until
then (what a dataset holds, a model's sha256 and size, are null while it reads them); a
dataset's check is leased as a model's is, with its progress

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# what a dataset registered by URI does not know until a worker has read it
DATASET_FACTS = {
    "num_classes": sa.Integer(),
    "in_channels": sa.Integer(),
    "num_train": sa.Integer(),
    "class_names": JSON,
    "class_counts": JSON,
    "splits": JSON,
    "sha256": sa.String(64),
    "size": sa.BigInteger(),
    "upload_sha256": sa.String(64),
    "upload_size": sa.BigInteger(),
}
MODEL_FACTS = {"sha256": sa.String(64), "size": sa.BigInteger()}


def upgrade() -> None:
    # the datasets before this were uploaded and checked at upload: ready
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("uri", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="ready"))
        batch.add_column(sa.Column("problems", JSON, nullable=True))
        batch.add_column(sa.Column("progress", JSON, nullable=True))
        batch.add_column(
            sa.Column("check_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("check_lease_until", sa.DateTime(), nullable=True))
        for column, kind in DATASET_FACTS.items():
            batch.alter_column(column, existing_type=kind, nullable=True)
    op.create_index("ix_datasets_status", "datasets", ["status"])
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("uri", sa.String(1024), nullable=True))
        for column, kind in MODEL_FACTS.items():
            batch.alter_column(column, existing_type=kind, nullable=True)


def downgrade() -> None:
    # before 0017 nothing was registered by URI: those rows go (their objects stay in the store)
    op.execute("DELETE FROM datasets WHERE uri IS NOT NULL")
    op.execute("DELETE FROM models WHERE uri IS NOT NULL")
    with op.batch_alter_table("models") as batch:
        for column, kind in MODEL_FACTS.items():
            batch.alter_column(column, existing_type=kind, nullable=False)
        batch.drop_column("uri")
    op.drop_index("ix_datasets_status", table_name="datasets")
    with op.batch_alter_table("datasets") as batch:
        for column, kind in DATASET_FACTS.items():
            batch.alter_column(column, existing_type=kind, nullable=False)
        for column in ("check_lease_until", "check_attempts", "progress", "problems"):
            batch.drop_column(column)
        batch.drop_column("status")
        batch.drop_column("uri")
