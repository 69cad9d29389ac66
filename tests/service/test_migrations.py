"""Alembic: up, down and up again on fresh databases; the models match the migrations."""

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from service.cli import ROOT
from service.db import get_engine
from service.models import Base
from tests.conftest import PG_ADMIN

TABLES = {"alembic_version", "jobs", "job_events", "artifacts", "models", "datasets"}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """The URL of a fresh, empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        get_engine(f"sqlite:///{tmp_path / 'fresh.db'}").dispose()
        return
    name = f"distillery_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def tables(url: str) -> set[str]:
    return set(inspect(get_engine(url)).get_table_names())


def test_upgrade_downgrade_upgrade(url):
    cfg = config(url)
    command.upgrade(cfg, "head")
    assert tables(url) == TABLES
    command.downgrade(cfg, "base")
    assert tables(url) == {"alembic_version"}
    command.upgrade(cfg, "head")
    assert tables(url) == TABLES


def test_models_match_the_migrations(url):
    command.upgrade(config(url), "head")
    with get_engine(url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_downgrading_models_keeps_the_jobs_events(url):
    """0002's and 0003's downgrades drop a column of jobs in place: a batch copy of the table
    would cascade-delete every job's events on SQLite (foreign keys are on)."""
    cfg = config(url)
    command.upgrade(cfg, "head")
    with get_engine(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, name, status, method, spec, queue, attempt, max_attempts,"
                " progress, metrics, created_at, updated_at) VALUES ('j1', 'n', 'queued', 'kd',"
                " '{}', 'q', 0, 1, '{}', '{}', '2026-01-01', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO job_events (job_id, type, message, data, created_at)"
                " VALUES ('j1', 'status', '', '{}', '2026-01-01')"
            )
        )
    command.downgrade(cfg, "0001")
    assert tables(url) == TABLES - {"models", "datasets"}
    with get_engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_events")).scalar() == 1
