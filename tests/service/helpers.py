"""Checks shared by the service tests: problem+json bodies and 'nothing was stored'."""

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from service.db.sessions import session_scope
from service.db.tables import RegisteredModel, new_id, utcnow

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


def validating(uploaded_s_ago: float) -> str:
    """A timm model row waiting for its check, uploaded `uploaded_s_ago` seconds ago."""
    with session_scope() as s:
        model = RegisteredModel(
            id=new_id("mdl"),
            name="unchecked",
            arch="timm/mobilenetv3_small_050",
            num_classes=10,
            in_channels=3,
            sha256="0" * 64,
            size=1,
            path="models/none/weights.safetensors",
            source="upload",
            status="validating",
        )
        s.add(model)
    waited_model(model.id, uploaded_s_ago)
    return model.id


def waited_model(model_id: str, seconds: float) -> None:
    """Move a model's upload `seconds` into the past."""
    with session_scope() as s:
        at = utcnow() - timedelta(seconds=seconds)
        moved = update(RegisteredModel).where(RegisteredModel.id == model_id)
        s.execute(moved.values(created_at=at))
