"""Checks shared by the service tests: problem+json bodies and 'nothing was stored'."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import func, select

from service.db import session_scope

PROBLEM = "application/problem+json"


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status
    return body


def fields(body: dict) -> list[str]:
    return [e["field"] for e in body["errors"]]


def stored(table: type, root: Path) -> tuple[int, list[str]]:
    """Rows in `table` and entries (temp files included) under `root`."""
    with session_scope() as s:
        rows = s.scalar(select(func.count()).select_from(table)) or 0
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    return rows, files


@contextlib.contextmanager
def nothing_stored_in(table: type, root: Path) -> Iterator[None]:
    """Asserts the block left no row in `table` and no file under `root` behind."""
    before = stored(table, root)
    yield
    assert stored(table, root) == before
