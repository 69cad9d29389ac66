"""What a job reads from the database and the store before it trains, as plain values: local
files (the folder store's own, or the worker's cache's: worker/task/cache.py). The worker's
context gathers them once; build, teachers and the other ranks of a job take these, never a
database session."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TeacherSource:
    """A teacher's weights file and what it is: a succeeded job's student or a model."""

    arch: str
    num_classes: int
    in_channels: int
    path: Path  # safetensors
    sha256: str  # what the file must hash to (the artifact store's or the model row's)
    job_id: str  # the job it came from; "" for an upload
    model_id: str | None = None  # the registered model (POST /v1/models), when it is one


@dataclass(frozen=True)
class StartSource:
    """Weights the student starts from: a registered model's or a succeeded job's file."""

    path: Path  # safetensors
    sha256: str
    model_id: str | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class JobInputs:
    job_dir: Path  # the job's local folder: its checkpoints and outputs are made here
    dataset_path: Path | None = None  # an uploaded dataset's canonical file
    # its key in a bucket: the shards not yet in the cache are read from there
    dataset_key: str | None = None
    teacher: TeacherSource | None = None
    route: dict[int, Path] = field(default_factory=dict)  # a teacher job's route, by epoch
    teacher_lr_drops: list[int] = field(default_factory=list)  # epochs its LR dropped after
    start: StartSource | None = None  # student.init's model or job (pretrained: the hub's)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (paths as strings): what rank 0 hands the job's other ranks."""
        return dict(json.loads(json.dumps(asdict(self), default=str)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "JobInputs":
        teacher, start = raw["teacher"], raw["start"]
        return cls(
            job_dir=Path(raw["job_dir"]),
            dataset_path=Path(raw["dataset_path"]) if raw["dataset_path"] else None,
            dataset_key=raw["dataset_key"],
            teacher=TeacherSource(**teacher | {"path": Path(teacher["path"])}) if teacher else None,
            route={int(epoch): Path(path) for epoch, path in raw["route"].items()},
            teacher_lr_drops=[int(e) for e in raw["teacher_lr_drops"]],
            start=StartSource(**start | {"path": Path(start["path"])}) if start else None,
        )
