"""Alembic: up, down and up again on fresh databases; the models match the migrations."""

import uuid
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from service.cli import ROOT
from service.db.sessions import get_engine
from service.db.tables import Base, JSONType
from service.spec.job import JobSpec
from tests.conftest import PG_ADMIN

TABLES = {
    "alembic_version",
    *("jobs", "job_events", "artifacts", "models", "datasets", "projects", "api_keys"),
    *("webhooks", "webhook_deliveries", "webhook_events", "workers", "sweeps", "sweep_trials"),
}


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
    assert tables(url) == TABLES - {"models", "datasets", "projects", "api_keys"} - {
        "webhooks",
        "webhook_deliveries",
        "webhook_events",
        "workers",
        "sweeps",
        "sweep_trials",
    }
    with get_engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_events")).scalar() == 1


# A KDCL job's spec as the code before 0004 stored it (resolved, every default filled in).
OLD_KDCL_SPEC = {
    "name": "old-kdcl",
    "method": {
        "name": "kdcl",
        "peers": ["resnet8"],
        "ensemble": "linear",
        "naive_per": "batch",
        "temperature": 2.0,
        "kd_weight": 1.0,
        "linear_steps": 20,
        "general_eps": 0.001,
    },
    "teacher": None,
    "student": {"arch": "cnn_small", "num_classes": 10, "in_channels": 1},
    "data": {
        "dataset": "digits",
        "upload": None,
        "val_fraction": 0.1,
        "split_seed": 0,
        "augment": "auto",
        "synthetic": None,
    },
    "train": {
        "epochs": 2,
        "batch_size": 128,
        "precision": "auto",
        "device": "auto",
        "seed": 0,
        "optimizer": {
            "name": "adamw",
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 0.0005,
            "nesterov": False,
        },
        "schedule": {"name": "cosine", "milestones": [], "gamma": 0.1, "warmup_epochs": 0},
        "compile": False,
        "data_placement": "auto",
    },
    "resources": {"queue": "default", "max_runtime_s": 86400, "max_attempts": 3, "gpus": 1},
    "metadata": {},
    "exports": [],
}
JOBS = sa.table(
    "jobs",
    *(sa.column(c) for c in ("id", "name", "status", "method", "queue", "attempt")),
    sa.column("max_attempts"),
    sa.column("spec", JSONType),
    sa.column("progress", JSONType),
    sa.column("metrics", JSONType),
    sa.column("created_at"),
    sa.column("updated_at"),
)
ARTIFACTS = sa.table(
    "artifacts",
    *(sa.column(c) for c in ("job_id", "name", "kind", "path", "size", "sha256")),
    sa.column("epoch"),
    sa.column("created_at"),
)
OLD_ARTIFACTS = {  # name -> kind before 0004
    "checkpoints/resume.safetensors": "checkpoint",
    "checkpoints/route/epoch_0002.safetensors": "checkpoint",
    "student.safetensors": "student",
}


def artifact_kinds(url: str) -> dict[str, str]:
    with get_engine(url).connect() as conn:
        return dict(conn.execute(sa.select(ARTIFACTS.c.name, ARTIFACTS.c.kind)).all())


def stored_spec(url: str) -> dict:
    with get_engine(url).connect() as conn:
        return dict(conn.execute(sa.select(JOBS.c.spec)).scalar_one())


def test_0004_gives_route_checkpoints_their_kind_and_old_specs_still_load(url):
    cfg = config(url)
    command.upgrade(cfg, "0003")
    now = datetime(2026, 11, 30)
    with get_engine(url).begin() as conn:
        conn.execute(
            JOBS.insert().values(
                id="j1",
                name="old-kdcl",
                status="succeeded",
                method="kdcl",
                queue="q",
                attempt=1,
                max_attempts=3,
                spec=OLD_KDCL_SPEC,
                progress={},
                metrics={},
                created_at=now,
                updated_at=now,
            )
        )
        for epoch, (name, kind) in enumerate(OLD_ARTIFACTS.items(), start=1):
            conn.execute(
                ARTIFACTS.insert().values(
                    job_id="j1",
                    name=name,
                    kind=kind,
                    path=name,
                    size=1,
                    sha256="0" * 64,
                    epoch=epoch,
                    created_at=now,
                )
            )
    command.upgrade(cfg, "head")
    assert artifact_kinds(url) == OLD_ARTIFACTS | {
        "checkpoints/route/epoch_0002.safetensors": "route"
    }
    spec = stored_spec(url)
    assert "linear_steps" not in spec["method"]
    loaded = JobSpec.model_validate(spec).model_dump(mode="json")  # as the worker reads it
    # what the spec gained since, each at its default: KDCL's held-out part it chooses on
    # (None: none for the linear ensemble), the student's start, the data's normalisation and
    # training resolution, how admission derived its defaults, and the published recipe
    assert loaded["method"].pop("holdout_fraction") is None
    assert loaded.pop("derived") == {}
    assert loaded.pop("recipe") is None
    assert loaded["student"].pop("init") is None
    assert loaded["data"].pop("normalisation") == "auto"
    assert loaded["data"].pop("image_size") is None
    old = dict(OLD_KDCL_SPEC, method=dict(OLD_KDCL_SPEC["method"]))
    del old["method"]["linear_steps"]
    assert loaded == old == spec
    command.downgrade(cfg, "0003")
    assert artifact_kinds(url) == OLD_ARTIFACTS
    assert stored_spec(url) == OLD_KDCL_SPEC


DATASETS = sa.table(
    "datasets",
    *(sa.column(c) for c in ("id", "name", "format", "num_classes", "in_channels")),
    *(sa.column(c) for c in ("input_size", "num_train", "num_val", "sha256", "size")),
    *(sa.column(c) for c in ("upload_sha256", "upload_size", "path", "created_at")),
    sa.column("class_names", JSONType),
    sa.column("class_counts", JSONType),
)


def dataset_rows(url: str) -> dict[str, dict]:
    """Every dataset row, its columns as this revision has them (JSON read as values)."""
    with get_engine(url).connect() as conn:
        table = sa.Table("datasets", sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(table)).mappings().all()
    return {row["id"]: dict(row) for row in rows}


def test_0007_gives_old_datasets_their_splits_and_downgrades(url):
    cfg = config(url)
    command.upgrade(cfg, "0006")
    now = datetime(2026, 12, 1)
    old = {  # id -> (num_train, num_val, input_size)
        "ds_split": (1500, 297, 8),
        "ds_whole": (200, None, 28),
    }
    with get_engine(url).begin() as conn:
        for dataset_id, (num_train, num_val, size) in old.items():
            conn.execute(
                DATASETS.insert().values(
                    id=dataset_id,
                    name=dataset_id,
                    format="npz",
                    num_classes=2,
                    in_channels=1,
                    input_size=size,
                    num_train=num_train,
                    num_val=num_val,
                    class_names=["a", "b"],
                    class_counts=[num_train + (num_val or 0) - 1, 1],
                    sha256="0" * 64,
                    size=1,
                    upload_sha256="1" * 64,
                    upload_size=1,
                    path=f"datasets/{dataset_id}/data.npz",
                    created_at=now,
                )
            )
    before = dataset_rows(url)

    command.upgrade(cfg, "0007")
    rows = dataset_rows(url)
    side = {"min": 8, "median": 8, "max": 8}
    assert rows["ds_split"]["splits"] == {
        "train": {"count": 1500, "width": side, "height": side},
        "val": {"count": 297, "width": side, "height": side},
    }
    side = {"min": 28, "median": 28, "max": 28}
    assert rows["ds_whole"]["splits"] == {"train": {"count": 200, "width": side, "height": side}}
    assert {k: {c: v for c, v in r.items() if c != "splits"} for k, r in rows.items()} == before
    command.upgrade(cfg, "head")
    with get_engine(url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []

    command.downgrade(cfg, "0006")
    assert dataset_rows(url) == before
    command.upgrade(cfg, "head")
    assert dataset_rows(url)["ds_split"]["splits"]["val"]["count"] == 297
