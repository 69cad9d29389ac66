"""Alembic: up, down and up again on fresh databases; the models match the migrations."""

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.cli import ROOT
from service.db import get_engine
from service.models import Base
from tests.conftest import PG_ADMIN

TABLES = {"alembic_version", "jobs", "job_events", "artifacts"}


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
