"""datasets.splits (per-split counts and image sizes); input_size may be unknown (images of
several sizes, stored as WebDataset shards)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 03:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("splits", JSON, nullable=True))
        batch.alter_column("input_size", existing_type=sa.Integer(), nullable=True)
    # the datasets before this: their split sizes are known, their per-split class counts not
    datasets = sa.table(
        "datasets",
        sa.column("id", sa.String),
        sa.column("num_train", sa.Integer),
        sa.column("num_val", sa.Integer),
        sa.column("input_size", sa.Integer),
        sa.column("splits", JSON),
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(datasets)).mappings():
        side = {"min": row["input_size"], "median": row["input_size"], "max": row["input_size"]}
        splits = {"train": {"count": row["num_train"], "width": side, "height": side}}
        if row["num_val"] is not None:
            splits["val"] = {"count": row["num_val"], "width": side, "height": side}
        bind.execute(datasets.update().where(datasets.c.id == row["id"]).values(splits=splits))
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("splits", existing_type=JSON, nullable=False)


def downgrade() -> None:
    # before 0007 every dataset had one size: a dataset of several sizes gets its largest side
    datasets = sa.table(
        "datasets", sa.column("id", sa.String), sa.column("input_size"), sa.column("splits", JSON)
    )
    bind = op.get_bind()
    query = sa.select(datasets).where(datasets.c.input_size.is_(None))
    for row in bind.execute(query).mappings():
        side = max(s[k]["max"] for s in row["splits"].values() for k in ("width", "height"))
        bind.execute(datasets.update().where(datasets.c.id == row["id"]).values(input_size=side))
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("splits")
        batch.alter_column("input_size", existing_type=sa.Integer(), nullable=False)
