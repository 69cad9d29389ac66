"""What the API answers, as typed objects. They mirror service/api/schemas.py field for field
(tests/client/test_client_package.py ties them to the app's OpenAPI document); this package imports
nothing from the server, so a client installs without it."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

# a job in one of these never changes again ("pruned": a sweep's trial stopped early)
TERMINAL = ("succeeded", "failed", "cancelled", "pruned")
SWEEP_TERMINAL = ("succeeded", "failed", "cancelled")  # likewise, a sweep


class Body(BaseModel):
    # a newer server may add fields: an older client reads what it knows
    model_config = ConfigDict(extra="ignore", frozen=True)


class Job(Body):
    id: str
    object: str = "job"
    name: str
    status: str
    method: str
    queue: str
    teacher_job_id: str | None
    teacher_model_id: str | None
    init_model_id: str | None
    dataset_id: str | None
    attempt: int
    max_attempts: int
    progress: dict[str, Any]
    metrics: dict[str, Any]
    best: dict[str, Any] | None = None  # {"val_acc", "epoch"} of the best epoch so far
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    spec: dict[str, Any]
    sweep_id: str | None = None  # the sweep it is a trial of
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class JobList(Body):
    object: str = "list"
    data: list[Job]
    next_cursor: str | None


class Event(Body):
    id: int
    type: str
    message: str
    data: dict[str, Any]
    attempt: int = 0  # the job's attempt when it was recorded
    created_at: datetime


class EventList(Body):
    object: str = "list"
    data: list[Event]
    next_after: int


class Artifact(Body):
    name: str
    kind: str
    size: int
    sha256: str
    epoch: int | None
    created_at: datetime


class ArtifactList(Body):
    object: str = "list"
    data: list[Artifact]


class Model(Body):
    id: str
    object: str = "model"
    name: str
    arch: str
    num_classes: int
    in_channels: int
    input_size: int | None
    normalisation: dict[str, Any] | None
    class_names: list[str] | None
    sha256: str | None  # null until a worker has read a model registered by URI
    size: int | None
    source: str  # upload, job or uri
    source_job_id: str | None
    uri: str | None = None  # where a model registered by URI was read from
    status: str
    problems: list[str] | None
    parameters: int | None
    output_shape: list[int] | None
    created_at: datetime


class ModelList(Body):
    object: str = "list"
    data: list[Model]
    next_cursor: str | None


class SizeSummary(Body):
    min: int
    median: int
    max: int


class Split(Body):
    count: int
    class_counts: list[int] | None = None
    width: SizeSummary
    height: SizeSummary


class Dataset(Body):
    """A dataset; one registered by URI is `validating` until a worker has read it, and what
    it holds is null until then."""

    id: str
    object: str = "dataset"
    name: str
    format: str
    status: str = "ready"
    problems: list[str] | None = None  # why it is invalid, naming the objects
    uri: str | None = None
    progress: dict[str, int] | None = None  # objects, done, bytes: while a worker reads it
    num_classes: int | None
    in_channels: int | None
    input_size: int | None
    num_train: int | None
    num_val: int | None
    class_names: list[str] | None
    class_counts: list[int] | None
    splits: dict[str, Split] | None
    sha256: str | None
    size: int | None
    upload_sha256: str | None
    upload_size: int | None
    created_at: datetime


class DatasetList(Body):
    object: str = "list"
    data: list[Dataset]
    next_cursor: str | None


class Readiness(Body):
    status: str
    checks: dict[str, str]


class Webhook(Body):
    id: str
    object: str = "webhook"
    url: str
    events: list[str]
    created_at: datetime
    state: str = "active"  # paused: its receiver kept failing; `resume_webhook` resumes it
    paused_at: datetime | None = None
    consecutive_failures: int = 0


class WebhookCreated(Webhook):
    secret: str  # whsec_...: verifies each delivery's signature; shown only once


class WebhookList(Body):
    object: str = "list"
    data: list[Webhook]
    next_cursor: str | None


class WebhookEvent(Body):
    id: str
    object: str = "webhook.event"
    webhook_id: str
    type: str  # webhook.paused | webhook.resumed
    message: str
    created_at: datetime


class WebhookEventList(Body):
    object: str = "list"
    data: list[WebhookEvent]
    next_cursor: str | None


class Delivery(Body):
    id: str
    object: str = "webhook.delivery"
    webhook_id: str
    job_id: str
    event: str
    payload: dict[str, Any]
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    first_attempt_at: datetime | None = None
    delivered_at: datetime | None


class DeliveryList(Body):
    object: str = "list"
    data: list[Delivery]
    next_cursor: str | None


class ProblemField(Body):
    field: str
    message: str


class Problem(Body):
    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    errors: list[ProblemField] | None = None


class Worker(Body):
    name: str
    object: str = "worker"
    queues: list[str]
    memory_bytes: int
    cores: int
    gpu_count: int
    gpu_memory_bytes: list[int]
    started_at: datetime
    heartbeat_at: datetime
    live: bool


class WorkerList(Body):
    data: list[Worker]


class Published(Body):
    top1: float  # percent, as the recipe's authors report it
    source: str


class Recipe(Body):
    name: str
    object: str = "recipe"
    title: str
    extends: str | None
    teacher: str | None  # the pair it was published for
    student: str | None
    spec: dict[str, Any]  # every field it fills in a spec that names it as "recipe"
    sources: list[str]
    published: Published | None

    @property
    def method(self) -> str | None:
        return self.spec.get("method", {}).get("name")

    @property
    def top1(self) -> float | None:
        return self.published.top1 if self.published else None


class RecipeList(Body):
    object: str = "list"
    data: list[Recipe]


class Runs(Body):
    """Runs of one configuration: val_acc over the seeds whose run succeeded."""

    mean: float | None
    std: float | None  # sample std; None under two seeds
    seeds: list[int]
    values: list[float]
    jobs: list[str]  # every run's job, unfinished ones too


class LeaderboardRow(Runs):
    params: dict[str, Any]  # dotted spec field -> the value it ran with


class Compute(Body):
    epochs: float  # the search trials trained
    epochs_unpruned: float  # what they would have trained, none pruned


class Trial(Body):
    kind: str  # search | confirm | baseline
    number: int
    job_id: str | None
    status: str  # its job's; planned; failed without a job: admission refused it
    params: dict[str, Any]
    seed: int
    value: float | None
    epochs: float
    error: str | None


class SweepSummary(Body):
    id: str
    object: str = "sweep"
    name: str
    status: str
    phase: str  # search | final | done
    counts: dict[str, int]  # search trials by their job's status
    leaderboard: list[LeaderboardRow]  # best mean first
    baseline: Runs | None
    compute: Compute
    error: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status in SWEEP_TERMINAL


class Sweep(SweepSummary):
    spec: dict[str, Any]
    trials: list[Trial]


class SweepList(Body):
    object: str = "list"
    data: list[SweepSummary]
    next_cursor: str | None
