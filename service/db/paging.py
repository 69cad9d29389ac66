"""Newest-first cursor pagination, one mechanism for jobs, models and datasets."""

import base64
import json
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.errors import InvalidCursor
from service.spec import limits

Row = TypeVar("Row")


def encode_cursor(created_at: datetime, ident: str) -> str:
    """An opaque page cursor naming the last row of a page."""
    raw = json.dumps([created_at.isoformat(), ident]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ident = limits.loads(raw)
        return datetime.fromisoformat(created), limits.printable(str(ident))
    except (ValueError, TypeError) as exc:
        raise InvalidCursor from exc


def newest_first(
    s: Session, table: type[Row], *where: Any, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """One page of `table` rows (with `created_at` and `id`), newest first, and the cursor of
    the next page (None on the last)."""
    created_col, id_col = table.created_at, table.id  # type: ignore[attr-defined]
    q = select(table).where(*where).order_by(created_col.desc(), id_col.desc()).limit(limit + 1)
    if cursor:
        created, last = decode_cursor(cursor)
        q = q.where(or_(created_col < created, (created_col == created) & (id_col < last)))
    rows = list(s.scalars(q))
    more, rows = len(rows) > limit, rows[:limit]
    if not (more and rows):
        return rows, None
    last_row: Any = rows[-1]
    return rows, encode_cursor(last_row.created_at, last_row.id)
