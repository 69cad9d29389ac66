"""Backends for the tests: SQLite (embedded) and PostgreSQL + Redis (production shape).

PostgreSQL and Redis must be reachable on 127.0.0.1 (they are on dev machines and CI):
when they are not, the tests that need them ERROR; nothing is silently skipped."""

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis

if TYPE_CHECKING:
    from tests.s3 import S3Server

PG_ADMIN = os.environ.get("TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
# every test under these folders starts real worker processes (or times them): `pytest -m
# "not slow"` leaves them out; other slow modules say `pytestmark = pytest.mark.slow`
SLOW_FOLDERS = ("e2e", "client", "bench")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test collected from SLOW_FOLDERS."""
    slow = {Path(__file__).parent / name for name in SLOW_FOLDERS}
    for item in items:
        if slow & set(item.path.parents):
            item.add_marker(pytest.mark.slow)


@dataclass
class Backend:
    name: str
    env: dict[str, str]
    data_dir: Path


def _reset_caches() -> None:
    from service import dispatch
    from service.config import get_settings
    from service.db import sessions

    get_settings.cache_clear()
    sessions.get_engine.cache_clear()
    sessions._factory.cache_clear()
    dispatch.producer.cache_clear()


def _postgres_db() -> Iterator[str]:
    name = f"distillery_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from service.db import sessions

        sessions.get_engine.cache_clear()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    client.flushdb()  # db 9 belongs to these tests
    return REDIS_URL


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A migrated database and a broker, with the settings pointing at them."""
    data_dir = tmp_path_factory.mktemp(f"data-{request.param}")
    env = {
        "DISTILLERY_DATA_DIR": str(data_dir),
        "DISTILLERY_DATABASE_URL": "",
        "DISTILLERY_BROKER_URL": "",
    }
    pg = None
    if request.param == "postgres":
        pg = _postgres_db()
        env["DISTILLERY_DATABASE_URL"] = next(pg)
        env["DISTILLERY_BROKER_URL"] = _redis_url()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reset_caches()
    from service.cli import migrate

    migrate()
    try:
        yield Backend(request.param, env, data_dir)
    finally:
        _reset_caches()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if pg is not None:
            pg.close()


def truncate() -> None:
    """Empty every table of the current backend."""
    from sqlalchemy import delete

    from service.db.sessions import session_scope
    from service.db.tables import (
        Artifact,
        Dataset,
        Job,
        JobEvent,
        RegisteredModel,
        Sweep,
        SweepTrial,
        Webhook,
        WebhookDelivery,
        WebhookEvent,
        Worker,
    )

    with session_scope() as s:
        s.execute(delete(Worker))
        s.execute(delete(SweepTrial))
        s.execute(delete(Sweep))
        for table in (
            WebhookDelivery,
            WebhookEvent,
            Webhook,
            Artifact,
            JobEvent,
            RegisteredModel,
            Dataset,
        ):
            s.execute(delete(table))
        s.execute(delete(Job).where(Job.teacher_job_id.is_not(None)))
        s.execute(delete(Job))


@pytest.fixture
def clean_db(backend: Backend) -> Backend:
    """Empty tables for one test."""
    truncate()
    return backend


@pytest.fixture(scope="session")
def s3_server() -> Iterator["S3Server"]:
    """One S3 server on loopback for the session (tests/s3.py); each test takes its own bucket."""
    from tests.s3 import S3Server

    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_server: "S3Server", monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This process's durable bytes in a new bucket of the S3 server; the env it set."""
    env = s3_server.store_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from service.config import get_settings

    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
