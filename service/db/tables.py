"""ORM tables. The database is the source of truth for every job."""

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")


DEFAULT_PROJECT = "prj_default"  # every row made before projects; the keyless embedded API's


def new_id(prefix: str) -> str:
    """A row id: `job_`, `mdl_`, `ds_`, `prj_`, `key_`, `wh_`, `whe_`, `msg_` or `swp_` and 24
    hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def utcnow() -> datetime:
    """Naive UTC: stored the same way on SQLite and PostgreSQL, compared in SQL."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, datetime: DateTime()}


class Project(Base):
    """A tenant: its keys see its jobs, models and datasets and nothing else."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # limits of its own; None: the settings' defaults (service/config.py)
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger)


class ApiKey(Base):
    """A project's key: `dk_<id hex>_<secret>`; only the secret's sha256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


def project_column() -> Mapped[str]:
    # no foreign key: SQLite cannot add one to a table in place (migrations/0009)
    return mapped_column(
        String(40), index=True, default=DEFAULT_PROJECT, server_default=DEFAULT_PROJECT
    )


# a job's status names (the state machine in service/jobs/lifecycle.py moves between them);
# "pruned": a sweep's trial its pruner stopped early (service/sweeps/trials.py)
TERMINAL = ("succeeded", "failed", "cancelled", "pruned")
ACTIVE = ("running", "cancelling")
STATUSES = ("queued", *ACTIVE, *TERMINAL)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    method: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]]
    queue: Mapped[str] = mapped_column(String(64))
    teacher_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    # no foreign key: a finished job keeps naming a model deleted after it
    teacher_model_id: Mapped[str | None] = mapped_column(String(40), index=True)
    init_model_id: Mapped[str | None] = mapped_column(String(40), index=True)  # likewise
    dataset_id: Mapped[str | None] = mapped_column(String(40), index=True)  # likewise
    # "<project id>:<key>": a key is the project's own (service/jobs/lifecycle.py: find_by_key)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None]
    progress: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    # a job across nodes (service/jobs/gangs.py): resources.nodes, the seats of the workers
    # that claim it together ({node: owner, lease, state}), a version every change of them
    # bumps, and the host:port of the rendezvous node 0 published for the running attempt
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    gang: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    gang_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rendezvous: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # the sweep it is a trial of (no foreign key: SQLite cannot add one to a table in place)
    sweep_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # what a cancelling job ends as: null for "cancelled", "pruned" for a trial its pruner stopped
    ends_as: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        Index("ix_jobs_status_lease", "status", "lease_until"),
        Index("ix_jobs_status_queue_created", "status", "queue", "created_at"),  # claims
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]]
    # the job's attempt when it was recorded (0 while first queued; a preempted attempt is
    # given back, so its resumed run has the same number)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)


class RegisteredModel(Base):
    """A model that can teach: uploaded safetensors, or a finished job's student."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(64))
    num_classes: Mapped[int] = mapped_column(Integer)
    in_channels: Mapped[int] = mapped_column(Integer)
    input_size: Mapped[int | None] = mapped_column(Integer)
    normalisation: Mapped[dict[str, Any] | None]  # {"mean": [...], "std": [...]}
    class_names: Mapped[list[str] | None] = mapped_column(JSONType)
    # None while a model registered by URI is being read by a worker
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(1024))  # relative to the artifacts dir
    source: Mapped[str] = mapped_column(String(16))  # "upload" | "job" | "uri"
    uri: Mapped[str | None] = mapped_column(String(1024))  # where a "uri" model was read from
    source_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # "ready" (it may teach), "validating" (a worker checks a timm model's weights), "invalid"
    status: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    problems: Mapped[list[str] | None] = mapped_column(JSONType)  # why it is invalid
    parameters: Mapped[int | None] = mapped_column(BigInteger)  # counted by the worker's check
    output_shape: Mapped[list[int] | None] = mapped_column(JSONType)  # of one image's logits
    # a validating model's check: how often a worker took it, and until when that one holds it
    check_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    check_lease_until: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_models_created_at_id", "created_at", "id"),
        Index("ix_models_status", "status"),
    )


class Dataset(Base):
    """Uploaded or registered (by URI) image classification data, validated
    (how it is stored: service/ingest/datasets.py, service/ingest/remote.py). A dataset
    registered by URI is `validating` until a worker has read it: what it holds is null
    until then."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(200))
    # "npz" | "idx" | "imagefolder" (uploaded or by URI) | "webdataset" (by URI)
    format: Mapped[str] = mapped_column(String(16))
    num_classes: Mapped[int | None] = mapped_column(Integer)
    in_channels: Mapped[int | None] = mapped_column(Integer)
    input_size: Mapped[int | None] = mapped_column(Integer)  # None: images of several sizes
    num_train: Mapped[int | None] = mapped_column(Integer)
    num_val: Mapped[int | None] = mapped_column(Integer)  # None: split by data.val_fraction
    class_names: Mapped[list[str] | None] = mapped_column(JSONType)
    class_counts: Mapped[list[int] | None] = mapped_column(JSONType)  # train and val together
    # per split: count, class_counts, width and height ({min, median, max})
    splits: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    sha256: Mapped[str | None] = mapped_column(
        String(64)
    )  # of the canonical file (data.npz, index)
    size: Mapped[int | None] = mapped_column(BigInteger)  # what the store holds of it
    upload_sha256: Mapped[str | None] = mapped_column(String(64))  # None: by URI
    upload_size: Mapped[int | None] = mapped_column(BigInteger)  # by URI: the bytes read there
    path: Mapped[str] = mapped_column(String(1024))  # relative to the artifacts dir
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    uri: Mapped[str | None] = mapped_column(String(1024))  # where a registered one lies
    # "ready" (jobs may train on it), "validating" (a worker reads it), "invalid" (problems)
    status: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    problems: Mapped[list[str] | None] = mapped_column(JSONType)  # why it is invalid
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # a worker's, while it reads
    # its check, held as a model's is (service/ingest/checks.py)
    check_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    check_lease_until: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_datasets_created_at_id", "created_at", "id"),
        Index("ix_datasets_status", "status"),
    )


class Webhook(Base):
    """A URL a project's job events are POSTed to (service/jobs/webhooks.py), signed with its
    secret as Standard Webhooks sign (`whsec_<base64>`, kept as given: signing needs it)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = project_column()
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(100))
    events: Mapped[list[str]] = mapped_column(JSONType)  # the event types it gets
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]  # deleted: gets nothing more, its deliveries stay
    # health: failed attempts in a row and since when; paused (sent only a probe now and then)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failing_since: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    next_probe_at: Mapped[datetime | None]  # paused: when its next probe is due
    last_turn_at: Mapped[datetime | None]  # when the sender last claimed for it (round robin)

    __table_args__ = (Index("ix_webhooks_created_at_id", "created_at", "id"),)

    @property
    def state(self) -> str:
        return "active" if self.paused_at is None else "paused"


class WebhookEvent(Base):
    """What happened to a webhook itself: paused (its receiver kept failing) or resumed."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"))
    project_id: Mapped[str] = project_column()
    type: Mapped[str] = mapped_column(String(32))  # webhook.paused | webhook.resumed
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_webhook_events_webhook", "webhook_id", "created_at", "id"),)


class WebhookDelivery(Base):
    """One event for one webhook, made in the transaction of the job event (an outbox) and
    sent by the API's sender until the receiver answers 2xx or the attempts run out. Its id
    is the Standard Webhooks message id (`webhook-id`), the same on every attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"))
    project_id: Mapped[str] = project_column()
    job_id: Mapped[str] = mapped_column(String(40), index=True)  # no foreign key: a record
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]  # due then (pending), or the sender's lease
    claim: Mapped[str | None] = mapped_column(String(40))  # the pass sending it now
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_attempt_at: Mapped[datetime | None]  # when its first attempt was claimed
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at", "id"),
    )


class Worker(Base):
    """A Celery worker and what it can hold, as it registered at start; `heartbeat_at` says
    it is still there (service/jobs/fleet.py: live within a lease)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # Celery's hostname
    queues: Mapped[list[str]] = mapped_column(JSONType)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)  # the host's
    cores: Mapped[int] = mapped_column(Integer)
    gpu_count: Mapped[int] = mapped_column(Integer)
    gpu_memory_bytes: Mapped[list[int]] = mapped_column(JSONType)  # per GPU it sees
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# a sweep's status names (service/sweeps/driver.py moves between them) and its phases
SWEEP_ACTIVE = ("queued", "running")
SWEEP_STATUSES = (*SWEEP_ACTIVE, "succeeded", "failed", "cancelled")
SEARCH, FINAL, DONE = "search", "final", "done"


class Sweep(Base):
    """A search over job specs (service/sweeps/): its trials are ordinary jobs, its Optuna
    study (named by its id) lives in Optuna's own storage (service/sweeps/studies.py)."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = project_column()
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    # search (asking trials), final (the confirm runs and the baseline), done
    phase: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]  # service/spec/sweep.py SweepSpec, its base as the user gave it
    error: Mapped[dict[str, Any] | None]
    # the API process driving it now, until when (a conditional UPDATE claims it: one driver)
    driver: Mapped[str | None] = mapped_column(String(255))
    driver_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_sweeps_created_at_id", "created_at", "id"),)


class SweepTrial(Base):
    """One run of a sweep: a search trial (an Optuna trial), a confirm run of a top
    configuration with one seed, or a scratch baseline run. `state`: planned (no job yet),
    running (its job's end not yet settled) or done."""

    __tablename__ = "sweep_trials"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # search | confirm | baseline
    number: Mapped[int] = mapped_column(Integer)  # Optuna's trial number; else in order made
    optuna_trial: Mapped[int | None] = mapped_column(Integer)  # Optuna's trial id
    params: Mapped[dict[str, Any]]  # {dotted spec field: value} the run took
    seed: Mapped[int] = mapped_column(Integer)  # its train.seed
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None]  # val_acc: the final one, or the last before it was pruned
    error: Mapped[str | None] = mapped_column(Text)  # why it has no job
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("sweep_id", "kind", "number", name="uq_sweep_trials_number"),
    )
