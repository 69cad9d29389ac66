"""Per-project limits over HTTP: over one, a 429 with Retry-After, problem+json, nothing
stored; under it again, accepted."""

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, update

from service.db.sessions import session_scope
from service.db.tables import DEFAULT_PROJECT, Dataset, Job, Project
from tests.service.api.test_datasets import digits_npz
from tests.service.helpers import PROBLEM


@pytest.fixture
def limits(clean_db) -> Iterator[None]:
    """The default project (the keyless API's) allowed 2 unfinished jobs and 1 byte."""
    set_limits(max_active_jobs=2, max_stored_bytes=1)
    yield
    set_limits(max_active_jobs=None, max_stored_bytes=None)


def set_limits(**values: int | None) -> None:
    with session_scope() as s:
        s.execute(update(Project).where(Project.id == DEFAULT_PROJECT).values(**values))


def count(table: type) -> int:
    with session_scope() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def refused(r, retry_after: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == PROBLEM and r.headers["retry-after"] == retry_after
    assert r.json()["code"] == "quota_exceeded"


def test_unfinished_jobs_over_the_limit_are_refused(client, spec_body, limits):
    first, _ = (client.post("/v1/jobs", json=spec_body).json()["id"] for _ in range(2))
    refused(client.post("/v1/jobs", json=spec_body), "30")
    assert count(Job) == 2
    assert client.post(f"/v1/jobs/{first}/cancel").status_code == 200  # a slot frees
    assert client.post("/v1/jobs", json=spec_body).status_code == 201


def test_an_upload_over_the_stored_bytes_is_refused_unread(client, limits):
    upload = {"content": digits_npz(), "headers": {"Content-Type": "application/octet-stream"}}
    assert client.post("/v1/datasets", **upload).status_code == 201  # 0 bytes stored before
    refused(client.post("/v1/datasets", **upload), "3600")
    refused(client.post("/v1/models", **upload), "3600")
    assert count(Dataset) == 1
