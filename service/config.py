"""Settings: the only place the environment is read (prefix DISTILLERY_)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

import psutil
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    data_dir: Path = Path(".distillery")
    database_url: str = ""  # empty: SQLite file in data_dir
    broker_url: str = ""  # empty: kombu's SQLAlchemy transport on a SQLite file in data_dir
    # where every durable byte lives (service/store.py): empty, the data dir's artifacts folder;
    # s3://bucket/prefix, any S3-compatible store (endpoint and keys from the AWS_* variables)
    store_url: str = ""
    # where data and models may be registered from by URI (POST /v1/datasets and /v1/models
    # with {"uri": ...}; read by a worker with the deployment's AWS_* credentials): comma
    # separated s3:// prefixes every project may read, and `name=s3://...` for project `name`'s
    # own (read by service/spec/uris.py; the API refuses to start on a bad one); empty, none
    data_uris: str = ""
    # how many times the store's client tries a failed request again (connection errors,
    # 5xx), backing off exponentially from 100 ms, within 3 minutes (obstore's defaults)
    store_retries: int = Field(10, ge=0)
    # what a worker's local cache of store objects (datasets, teachers) may hold in the data dir
    cache_bytes: int = Field(50 << 30, ge=0)
    env: str = Field("dev", pattern="^(dev|prod)$")
    host: str = "127.0.0.1"
    port: int = 8000
    api_workers: int = Field(1, ge=1)  # uvicorn processes serving the API
    max_body_bytes: int = 1_000_000  # JSON request bodies
    max_upload_bytes: int = 2 << 30  # streamed uploads (POST /v1/models, /v1/datasets)
    max_decompressed_bytes: int = 8 << 30  # what an uploaded dataset may unpack to
    max_archive_files: int = 200_000  # members of an uploaded dataset archive
    lease_s: float = 60.0  # a running job is requeued once its lease is this old
    heartbeat_s: float = 5.0  # how often the worker extends the lease and reads cancel
    # how often the API's watchdog requeues jobs whose lease expired and wakes queues (0: off)
    watchdog_s: float = 2.0
    # a job queued this long with no message in its broker queue gets one (a lost message)
    wake_after_s: float = 2.0
    default_max_attempts: int = 3
    worker_concurrency: int = 1
    check_queue: str = "default"  # where uploaded timm models are sent to be checked
    # how the other nodes of a job across nodes reach this worker's host when it is node 0
    # (the job's rendezvous, rank 0's c10d store on a fresh port); empty: the host's name
    node_host: str = ""
    # CPU threads of each training process; 0: chosen from the cores other processes leave
    # free, shared among the job's processes, looked at again while training (worker/job/threads.py)
    train_threads: int = Field(0, ge=0)
    # uploaded ImageFolder data: decoded once and held in memory when it takes at most this
    # (at the training resolution, uint8), else streamed from its shards every epoch
    resident_bytes: int = Field(4 << 30, ge=0)
    # what a job's data, or its models' training state, may take in a worker's memory when
    # no live worker of its queue has registered what it holds (service/jobs/admission.py
    # memory_problems); by default this host's memory
    worker_memory_bytes: int = Field(default_factory=lambda: psutil.virtual_memory().total, ge=0)
    # DataLoader processes decoding streamed data, per training process; 0: its cores
    data_workers: int = Field(0, ge=0)
    # every /v1 request needs `Authorization: Bearer <key>` (`distillery keys create`); off, a
    # request without one acts for the default project (the embedded API says so loudly)
    require_keys: bool = False
    # how long an API process trusts a key it has found valid without asking the database
    # again: a revoked key is refused within this many seconds (0: asked on every request)
    key_cache_s: float = Field(5.0, ge=0)
    # per project, unless the project has its own (projects.max_active_jobs, max_stored_bytes)
    max_active_jobs: int = Field(1000, ge=1)  # queued and running: a submit above it is a 429
    max_stored_bytes: int = Field(1 << 40, ge=0)  # its models and datasets: an upload, a 429
    log_level: str = "INFO"
    # "text" for a terminal (the embedded `distillery up`), "json" (one object a line, with
    # the job id) for a log shipper: service/logs.py
    log_format: Literal["text", "json"] = "text"
    # webhooks (service/jobs/webhook_sender.py), sent by each API process: how often its sender
    # looks for due deliveries (0: it sends none), how many it sends at once (in all, and to one
    # webhook), how long a receiver may take to connect and to answer, and how many attempts one
    # gets; the waits between attempts, the last repeated
    webhook_s: float = Field(1.0, ge=0)
    webhook_concurrency: int = Field(8, ge=1)
    webhook_endpoint_concurrency: int = Field(2, ge=1)
    webhook_connect_timeout_s: float = Field(3.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    webhook_retry_s: list[float] = [5, 30, 120, 600, 3600, 3 * 3600, 6 * 3600]
    # a webhook whose attempts failed this many times in a row, for at least this long, is
    # paused: sent one probe every webhook_probe_s until one is answered
    webhook_pause_failures: int = Field(10, ge=1)
    webhook_pause_s: float = Field(600.0, ge=0)
    webhook_probe_s: float = Field(60.0, gt=0)
    # where sweeps keep their Optuna studies (service/sweeps/studies.py): this schema of the
    # PostgreSQL database (a file beside SQLite's, embedded); Optuna's alembic_version table
    # would collide with ours in one schema
    sweeps_schema: str = Field("optuna", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    @model_validator(mode="after")
    def _production_needs_servers(self) -> "Settings":
        # Production must not silently fall back to the embedded SQLite stores.
        if self.env == "prod" and not (self.database_url and self.broker_url):
            raise ValueError("DISTILLERY_ENV=prod needs DISTILLERY_DATABASE_URL and BROKER_URL")
        if self.env == "prod" and not self.require_keys:
            raise ValueError("DISTILLERY_ENV=prod needs DISTILLERY_REQUIRE_KEYS=true")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'distillery.db').resolve()}"

    @property
    def queue_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def scratch_dir(self) -> Path:
        """Files being made before they are put to a bucket (service/store.py scratch_dir)."""
        return self.data_dir / "scratch"

    @property
    def cache_dir(self) -> Path:
        """A worker's copies of a bucket's objects, at most cache_bytes (worker/task/cache.py)."""
        return self.data_dir / "cache"


@lru_cache
def get_settings() -> Settings:
    return Settings()
