"""Response bodies, errors' (problem+json) among them."""

from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    model_serializer,
)
from pydantic.json_schema import models_json_schema

from service.errors import PROBLEM
from service.spec import model_info, uris


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    @field_serializer("*", when_used="json")
    def _utc(self, value: Any) -> Any:
        # timestamps are stored as naive UTC
        return value.isoformat() + "Z" if isinstance(value, datetime) else value


class Progress(BaseModel):
    """Where a running job is (worker/task/tracker.py makes it); final when the job ends. A key
    is absent until the worker knows it; other keys may come."""

    model_config = ConfigDict(extra="allow")

    phase: str | None = Field(
        None, description='"setup", "teacher", "train", "export"; "done" once succeeded'
    )
    epoch: int | None = Field(None, description="1-based epoch in progress; == epochs at the end")
    epochs: int | None = Field(None, description="epochs in all (train.epochs)")
    step: int | None = Field(None, description="steps done in this epoch")
    steps_per_epoch: int | None = None
    images_per_s: float | None = Field(None, description="recent training throughput")
    eta_s: float | None = Field(
        None, description="seconds to the end; null when unknown, 0 when done"
    )
    gpu_mem_peak_bytes: int | None = Field(None, description="peak CUDA memory (absent on CPU)")

    # no return type: the schema stays the fields' (an annotated one would make it "object")
    @model_serializer(mode="wrap", when_used="json")
    def _as_saved(self, handler: SerializerFunctionWrapHandler):
        # the keys the worker saved, no more: an absent key is not a null one
        data = handler(self)
        kept = self.model_fields_set | set(self.model_extra or {})
        return {k: v for k, v in data.items() if k in kept}


class BestEpoch(BaseModel):
    val_acc: float
    epoch: int


class JobOut(Out):
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
    progress: Progress
    metrics: dict[str, Any]
    best: BestEpoch | None = Field(
        None,
        description="the epoch with the highest val_acc so far, from the metrics events "
        "(an epoch retrained by a later attempt counts as that attempt recorded it); "
        "null before the first epoch ends",
    )
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    spec: dict[str, Any]
    sweep_id: str | None = Field(description="the sweep it is a trial of")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    object: str = "list"
    data: list[JobOut]
    next_cursor: str | None


class EventOut(Out):
    id: int
    type: str
    message: str
    data: dict[str, Any]
    attempt: int = Field(
        description="the job's attempt when it was recorded; a later attempt's metrics for "
        "an epoch replace an earlier one's (it resumed from an older checkpoint)"
    )
    created_at: datetime


class EventList(BaseModel):
    object: str = "list"
    data: list[EventOut]
    next_after: int


class ArtifactOut(Out):
    name: str
    kind: str
    size: int
    sha256: str
    epoch: int | None
    created_at: datetime


class ArtifactList(BaseModel):
    object: str = "list"
    data: list[ArtifactOut]


class ModelOut(Out):
    id: str
    object: str = "model"
    name: str
    arch: str
    num_classes: int
    in_channels: int
    input_size: int | None
    normalisation: dict[str, Any] | None
    class_names: list[str] | None
    sha256: str | None = Field(description="null until a worker has read a model by URI")
    size: int | None
    source: str = Field(description="upload, job, or uri (read from an object store)")
    source_job_id: str | None
    uri: str | None = Field(description="where a model registered by URI was read from")
    status: str = Field(description="ready: it may teach; validating: a worker checks it")
    problems: list[str] | None = Field(description="why it is invalid")
    parameters: int | None
    output_shape: list[int] | None
    created_at: datetime


class SizeSummary(BaseModel):
    min: int
    median: int
    max: int


class SplitOut(BaseModel):
    count: int
    class_counts: list[int] | None = Field(
        None, description="per class, in class_names order (unknown for datasets stored before)"
    )
    width: SizeSummary
    height: SizeSummary


class DatasetOut(Out):
    """A dataset; one registered by URI is `validating` until a worker has read it, and
    what it holds (classes, counts, sha256...) is null until then."""

    id: str
    object: str = "dataset"
    name: str
    format: str = Field(description="npz, idx, imagefolder, or webdataset (by URI)")
    status: str = Field(
        description="ready: jobs may train on it; validating: a worker reads it; invalid"
    )
    problems: list[str] | None = Field(description="why it is invalid, naming the objects")
    uri: str | None = Field(description="where a dataset registered by URI lies")
    progress: dict[str, int] | None = Field(
        description="while a worker reads it: objects (images, or shards) in all, done, bytes"
    )
    num_classes: int | None
    in_channels: int | None
    input_size: int | None = Field(
        description="height = width when every image has that one size; else null"
    )
    num_train: int | None
    num_val: int | None = Field(description="size of the predefined validation split, if any")
    class_names: list[str] | None
    class_counts: list[int] | None = Field(description="per class, train and val splits together")
    splits: dict[str, SplitOut] | None = Field(description="train, and val when predefined")
    sha256: str | None = Field(
        description="of the canonical file: data.npz, or the shards' index.json"
    )
    size: int | None = Field(description="bytes the store holds of it")
    upload_sha256: str | None = Field(description="of the uploaded file (null by URI)")
    upload_size: int | None = Field(description="of the upload; by URI, the bytes read there")
    created_at: datetime


class DatasetList(BaseModel):
    object: str = "list"
    data: list[DatasetOut]
    next_cursor: str | None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelOut]
    next_cursor: str | None


class Readiness(BaseModel):
    status: str = Field(description="ok, or unavailable (503)")
    checks: dict[str, str] = Field(description='per dependency: "ok" or the error')


class WebhookOut(Out):
    id: str
    object: str = "webhook"
    url: str
    events: list[str]
    created_at: datetime
    state: Literal["active", "paused"] = Field(
        description="paused: its receiver kept failing; sent only a probe now and then until "
        "one is answered, or until POST /v1/webhooks/{id}/resume"
    )
    paused_at: datetime | None
    consecutive_failures: int = Field(description="failed attempts in a row")


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="whsec_<base64>: verify each request's webhook-signature with it; shown "
        "only in this answer"
    )


class WebhookList(BaseModel):
    object: str = "list"
    data: list[WebhookOut]
    next_cursor: str | None


class WebhookEventOut(Out):
    id: str
    object: str = "webhook.event"
    webhook_id: str
    type: str = Field(description="webhook.paused or webhook.resumed")
    message: str
    created_at: datetime


class WebhookEventList(BaseModel):
    object: str = "list"
    data: list[WebhookEventOut]
    next_cursor: str | None


class DeliveryOut(Out):
    id: str = Field(description="the webhook-id header, the same on every attempt")
    object: str = "webhook.delivery"
    webhook_id: str
    job_id: str
    event: str
    payload: dict[str, Any] = Field(description="the body sent")
    status: str = Field(description="pending, succeeded (a 2xx) or failed (attempts spent)")
    attempts: int
    last_status_code: int | None = Field(description="the last attempt's; null: no answer")
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    first_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryList(BaseModel):
    object: str = "list"
    data: list[DeliveryOut]
    next_cursor: str | None


class ProblemField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request's path")
    code: str = Field(description="what went wrong, for a program to act on")
    errors: list[ProblemField] | None = Field(None, description="the fields at fault")


Responses = dict[int | str, dict[str, Any]]  # a route's `responses`, as FastAPI takes them
REF = "#/components/schemas/{model}"
PROBLEM_SCHEMAS = models_json_schema([(Problem, "serialization")], ref_template=REF)[1]["$defs"]
# the JSON bodies of routes that also take raw bytes (they read the body themselves)
BODIES = (model_info.FromJob, model_info.FromUri, uris.DatasetFromUri)
BODY_SCHEMAS = models_json_schema([(m, "validation") for m in BODIES], ref_template=REF)[1]["$defs"]


def body_ref(model: type[BaseModel]) -> dict[str, str]:
    """A request body schema, as a reference to the document's components."""
    assert model in BODIES
    return {"$ref": REF.format(model=model.__name__)}


def problems(*statuses: int) -> Responses:
    """OpenAPI responses: each of `statuses` with a problem+json body."""
    content = {PROBLEM: {"schema": {"$ref": REF.format(model="Problem")}}}
    return {s: {"description": HTTPStatus(s).phrase, "content": content} for s in statuses}


def document_problems(app: FastAPI) -> None:
    """Adds the schemas `problems` and `body_ref` refer to to the app's OpenAPI document
    (FastAPI adds a response's model only under the route's own media type,
    application/json, and knows nothing of a body a route reads itself)."""
    document: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        doc = document()
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(PROBLEM_SCHEMAS | BODY_SCHEMAS)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


class WorkerOut(Out):
    name: str = Field(description="the Celery worker's hostname")
    object: str = "worker"
    queues: list[str]
    memory_bytes: int = Field(description="its host's memory")
    cores: int
    gpu_count: int
    gpu_memory_bytes: list[int] = Field(description="each GPU's memory")
    started_at: datetime
    heartbeat_at: datetime
    live: bool = Field(
        description="heartbeat within a lease (DISTILLERY_LEASE_S): admission "
        "sizes jobs against the live workers of their queue"
    )


class WorkerList(BaseModel):
    data: list[WorkerOut]


class PublishedOut(BaseModel):
    top1: float = Field(description="top-1 accuracy, percent, as its authors report it")
    source: str


class RecipeOut(BaseModel):
    name: str
    object: str = "recipe"
    title: str
    extends: str | None = Field(description="the recipe (a schedule) whose fields it starts from")
    teacher: str | None = Field(description="the teacher architecture it was published for")
    student: str | None
    spec: dict[str, Any] = Field(
        description="every spec field it fills (its base's too); a spec's \"recipe\" takes them "
        "where it leaves a field out"
    )
    sources: list[str] = Field(description="where each value is set: repository and path")
    published: PublishedOut | None


class RecipeList(BaseModel):
    object: str = "list"
    data: list[RecipeOut]


class RunsOut(BaseModel):
    """Runs of one configuration: val_acc over the seeds whose run succeeded."""

    mean: float | None
    std: float | None = Field(description="sample std (n - 1); null under two seeds")
    seeds: list[int] = Field(description="the train.seed of each succeeded run")
    values: list[float] = Field(description="their final val_acc, in the seeds' order")
    jobs: list[str] = Field(description="every run's job, unfinished ones too")


class LeaderboardRow(RunsOut):
    params: dict[str, Any] = Field(description="dotted spec field -> the value it ran with")


class ComputeOut(BaseModel):
    epochs: float = Field(
        description="epochs the search trials trained (a stopped one's last epoch counted by "
        "its steps)"
    )
    epochs_unpruned: float = Field(description="what they would have trained, none pruned")


class TrialOut(BaseModel):
    kind: str = Field(description="search (an Optuna trial), confirm or baseline")
    number: int = Field(description="Optuna's trial number; the order made, for the others")
    job_id: str | None
    status: str = Field(
        description="its job's; planned: no job yet; failed with no job: admission refused it"
    )
    params: dict[str, Any]
    seed: int
    value: float | None = Field(description="final val_acc; a pruned trial's last")
    epochs: float = Field(description="epochs its job trained")
    error: str | None = Field(description="why admission refused its spec")


class SweepSummary(Out):
    id: str
    object: str = "sweep"
    name: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    phase: str = Field(description="search, final (confirm runs and baseline), done")
    counts: dict[str, int] = Field(description="search trials by their job's status")
    leaderboard: list[LeaderboardRow] = Field(
        description="best mean first: the confirmed configurations once the search ended "
        "(with confirm), else the search's"
    )
    baseline: RunsOut | None = Field(description="the student trained alone, when asked")
    compute: ComputeOut
    error: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None


class SweepOut(SweepSummary):
    spec: dict[str, Any] = Field(description="the sweep as submitted, defaults filled in")
    trials: list[TrialOut] = Field(description="every run: search trials, then the others")


class SweepList(BaseModel):
    object: str = "list"
    data: list[SweepSummary]
    next_cursor: str | None
