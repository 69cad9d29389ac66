"""The job spec, validated at the door: a bad value is a 422 at submission, not a crash an
hour into a GPU run."""

from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from service.method_params import MethodParams
from service.names import FEATURELESS, Arch, DatasetName, Strict


class SyntheticOptions(Strict):
    num_samples: int = Field(2048, ge=20, le=1_000_000)
    num_classes: int = Field(10, ge=2, le=1000)
    channels: int = Field(3, ge=1, le=4)
    size: int = Field(32, ge=4, le=256)
    data_seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds the images themselves")


class DataSpec(Strict):
    dataset: DatasetName
    upload: str | None = Field(
        None, min_length=1, max_length=64, description="an id from POST /v1/datasets"
    )
    val_fraction: float = Field(
        0.1, gt=0, le=0.5, description="unused when the data has its own validation split"
    )
    # apart from train.seed so a teacher and its students share one validation split
    split_seed: int = Field(0, ge=0, le=2**31 - 1)
    augment: Literal["auto", "none", "crop", "crop_flip"] = "auto"
    synthetic: SyntheticOptions | None = None
    # an upload's shape lives in its database row: service.jobs fills it in at submission
    _upload_shape: tuple[int, int, int] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _upload_named(self) -> "DataSpec":
        if (self.dataset == "upload") != (self.upload is not None):
            raise ValueError('data.upload names the dataset exactly when data.dataset is "upload"')
        return self

    def with_upload_shape(self, num_classes: int, channels: int, size: int) -> None:
        self._upload_shape = (num_classes, channels, size)

    def shape(self) -> tuple[int, int, int]:
        """(num_classes, in_channels, image size) of the dataset."""
        if self.dataset == "digits":
            return 10, 1, 8
        if self.dataset == "upload":
            if self._upload_shape is None:
                raise LookupError("an uploaded dataset's shape is read from its row first")
            return self._upload_shape
        opts = self.synthetic or SyntheticOptions()
        return opts.num_classes, opts.channels, opts.size


class TeacherRef(Strict):
    """Exactly one of a succeeded job (its student teaches) or a registered model."""

    job: str | None = Field(None, min_length=1, max_length=64, description="a succeeded job")
    model: str | None = Field(
        None, min_length=1, max_length=64, description="a model from POST /v1/models"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "TeacherRef":
        if (self.job is None) == (self.model is None):
            raise ValueError("give exactly one of teacher.job and teacher.model")
        return self


class StudentSpec(Strict):
    arch: Arch
    num_classes: int | None = Field(None, ge=2, le=100_000)
    in_channels: int | None = Field(None, ge=1, le=16)


class OptimizerSpec(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    nesterov: bool = False


class ScheduleSpec(Strict):
    name: Literal["multistep", "cosine", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=list, max_length=100)
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)


class TrainSpec(Strict):
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(128, ge=2, le=65_536)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    compile: bool = Field(
        False, description="torch.compile the student and teacher forward; pays on long GPU runs"
    )
    data_placement: Literal["auto", "device", "host"] = Field(
        "auto",
        description="auto keeps the training split on the GPU when it fits in 40% of free "
        "memory, else streams it from host memory (gathered into pinned memory ahead of the "
        "step); device/host force one",
    )


class ResourcesSpec(Strict):
    queue: str = Field("default", pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    max_runtime_s: int = Field(86_400, ge=1, le=30 * 86_400)
    max_attempts: int = Field(3, ge=1, le=20)
    gpus: int = Field(
        1,
        ge=1,
        le=16,
        description="processes that train the job together with DDP, one per GPU (on a CPU "
        "worker, that many gloo processes); each trains train.batch_size / gpus samples of "
        "every batch",
    )


class JobSpec(Strict):
    name: str = Field("", max_length=200)
    method: MethodParams
    teacher: TeacherRef | None = None
    student: StudentSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)
    exports: list[Literal["onnx", "torchscript"]] = Field(
        default_factory=list,
        max_length=2,
        description="extra formats of the student, each checked against PyTorch at export: "
        "onnx (student.onnx) and torchscript (student.torchscript.pt)",
    )

    def resolved(self) -> dict[str, Any]:
        """The spec with every default and dataset-derived field filled in."""
        num_classes, channels, _ = self.data.shape()
        student = self.student.model_copy(
            update={"num_classes": num_classes, "in_channels": channels}
        )
        return self.model_copy(update={"student": student}).model_dump(mode="json")


def spec_problems(spec: JobSpec) -> list[tuple[str, str]]:
    """Cross-field checks, as (field, message) pairs, so each error names its field."""
    problems = []
    method = spec.method
    if method.needs_teacher and spec.teacher is None:
        problems.append(("teacher", f"method {method.name!r} needs a teacher"))
    if not method.needs_teacher and spec.teacher is not None:
        problems.append(("teacher", f"method {method.name!r} takes no teacher"))
    num_classes, channels, _ = spec.data.shape()
    if spec.student.num_classes not in (None, num_classes):
        problems.append(("student.num_classes", f"must be {num_classes} for this dataset"))
    if spec.student.in_channels not in (None, channels):
        problems.append(("student.in_channels", f"must be {channels} for this dataset"))
    if method.needs_stage_features and spec.student.arch in FEATURELESS:
        problems.append(
            (
                "student.arch",
                f"{method.name} needs stage features, which {spec.student.arch} does not have",
            )
        )
    stage_epochs = getattr(method, "stage_epochs", None)
    if stage_epochs is not None and sum(stage_epochs) != spec.train.epochs:
        problems.append(("method.stage_epochs", "must add up to train.epochs"))
    train = spec.train
    ms = train.schedule.milestones
    if ms != sorted(set(ms)) or any(m < 1 or m >= train.epochs for m in ms):
        problems.append(("train.schedule.milestones", "must be increasing epochs in [1, epochs)"))
    if train.schedule.warmup_epochs >= train.epochs:
        problems.append(("train.schedule.warmup_epochs", "must be less than train.epochs"))
    problems += _ddp_problems(train.batch_size, spec.resources.gpus)
    return problems


def _ddp_problems(batch_size: int, gpus: int) -> list[tuple[str, str]]:
    """Each of `gpus` processes trains an equal share of every batch, of 2 samples or more
    (BatchNorm cannot normalise one)."""
    if gpus == 1:
        return []
    if batch_size % gpus:
        return [("train.batch_size", f"must be a multiple of resources.gpus ({gpus})")]
    if batch_size // gpus < 2:
        return [
            (
                "train.batch_size",
                f"must be at least {2 * gpus}: each of the {gpus} processes needs 2 samples "
                "or more of every batch",
            )
        ]
    return []
