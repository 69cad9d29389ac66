"""Response bodies."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    @field_serializer("*", when_used="json")
    def _utc(self, value: Any) -> Any:
        # timestamps are stored as naive UTC
        return value.isoformat() + "Z" if isinstance(value, datetime) else value


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
    progress: dict[str, Any]
    metrics: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    spec: dict[str, Any]
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
    sha256: str
    size: int
    source: str
    source_job_id: str | None
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
    id: str
    object: str = "dataset"
    name: str
    format: str
    num_classes: int
    in_channels: int
    input_size: int | None = Field(
        description="height = width when every image has that one size; else null"
    )
    num_train: int
    num_val: int | None = Field(description="size of the predefined validation split, if any")
    class_names: list[str]
    class_counts: list[int] = Field(description="per class, train and val splits together")
    splits: dict[str, SplitOut] = Field(description="train, and val when predefined")
    sha256: str = Field(description="of the canonical file: data.npz, or the shards' index.json")
    size: int
    upload_sha256: str
    upload_size: int
    created_at: datetime


class DatasetList(BaseModel):
    object: str = "list"
    data: list[DatasetOut]
    next_cursor: str | None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelOut]
    next_cursor: str | None
