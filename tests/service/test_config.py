"""Settings fail fast where production would silently fall back to embedded stores."""

import pytest
from pydantic import ValidationError

from service.config import Settings

PG = "postgresql+psycopg://db/distillery"
REDIS = "redis://redis:6379/0"


@pytest.fixture
def prod(monkeypatch):
    monkeypatch.setenv("DISTILLERY_ENV", "prod")
    for name in ("DATABASE_URL", "BROKER_URL"):
        monkeypatch.delenv(f"DISTILLERY_{name}", raising=False)
    return monkeypatch


@pytest.mark.parametrize("env", [{}, {"DATABASE_URL": PG}, {"BROKER_URL": REDIS}])
def test_prod_without_servers_fails(prod, env):
    for name, value in env.items():
        prod.setenv(f"DISTILLERY_{name}", value)
    with pytest.raises(ValidationError, match="DISTILLERY_ENV=prod"):
        Settings()


def test_prod_with_servers(prod):
    prod.setenv("DISTILLERY_DATABASE_URL", PG)
    prod.setenv("DISTILLERY_BROKER_URL", REDIS)
    with pytest.raises(ValidationError, match="DISTILLERY_REQUIRE_KEYS=true"):
        Settings()  # production never serves without API keys
    prod.setenv("DISTILLERY_REQUIRE_KEYS", "true")
    settings = Settings()
    assert (settings.db_url, settings.queue_url) == (PG, REDIS)


def test_dev_defaults_to_embedded_sqlite(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path))
    for name in ("ENV", "DATABASE_URL", "BROKER_URL"):
        monkeypatch.delenv(f"DISTILLERY_{name}", raising=False)
    settings = Settings()
    assert settings.db_url == f"sqlite:///{tmp_path.resolve() / 'distillery.db'}"
    assert settings.queue_url == f"sqla+sqlite:///{tmp_path.resolve() / 'broker.db'}"


def test_unknown_env_is_refused(monkeypatch):
    monkeypatch.setenv("DISTILLERY_ENV", "staging")
    with pytest.raises(ValidationError):
        Settings()
