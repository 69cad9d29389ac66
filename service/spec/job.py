"""The job spec, validated at the door: a bad value is a 422 at submission, not a crash an
hour into a GPU run. It is the one place a default or an allowed value is written."""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from service.errors import FieldError
from service.spec import recipes
from service.spec.limits import Epoch, Epochs, Ident, Name
from service.spec.methods import JobFacts, MethodParams, TeacherFacts
from service.spec.names import Arch, DatasetName, Strict

DEFAULT_IMAGE_SIZE = 224  # the training size of images of several sizes, unless given


@dataclass(frozen=True)
class DataShape:
    """What admission knows of the data: class count, channels, image height = width."""

    num_classes: int
    channels: int
    size: int


class SyntheticOptions(Strict):
    num_samples: int = Field(2048, ge=20, le=1_000_000)
    num_classes: int = Field(10, ge=2, le=1000)
    channels: int = Field(3, ge=1, le=4)
    size: int = Field(32, ge=4, le=256)
    data_seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds the images themselves")


class DataSpec(Strict):
    dataset: DatasetName
    upload: Ident | None = Field(None, description="an id from POST /v1/datasets")
    val_fraction: float = Field(
        0.1, gt=0, le=0.5, description="unused when the data has its own validation split"
    )
    # apart from train.seed so a teacher and its students share one validation split
    split_seed: int = Field(0, ge=0, le=2**31 - 1)
    image_size: int | None = Field(
        None,
        ge=4,
        le=1024,
        description="the training resolution (height = width); default: the dataset's own when "
        f"all its images have one size, else {DEFAULT_IMAGE_SIZE}",
    )
    augment: Literal["auto", "none", "crop", "crop_flip", "rrc_flip"] = Field(
        "auto",
        description="crop/crop_flip: pad and crop (the CIFAR recipe, for small images); "
        "rrc_flip: RandomResizedCrop and flip (the ImageNet recipe); none; validation takes "
        "the centre either way. auto: the dataset's own (rrc_flip for photos of several sizes)",
    )
    normalisation: Literal["auto", "dataset", "imagenet"] = Field(
        "auto",
        description="per-channel statistics the images are normalised with: the training "
        "split's own, or ImageNet's; auto: ImageNet's when the student starts from "
        "pretrained weights, else the dataset's",
    )
    synthetic: SyntheticOptions | None = None

    @model_validator(mode="after")
    def _upload_named(self) -> "DataSpec":
        if (self.dataset == "upload") != (self.upload is not None):
            raise ValueError('data.upload names the dataset exactly when data.dataset is "upload"')
        return self

    def normalisation_for(self, pretrained: bool) -> str:
        """The normalisation a job uses: "dataset" or "imagenet"."""
        if self.normalisation != "auto":
            return self.normalisation
        return "imagenet" if pretrained else "dataset"

    def synthetic_options(self) -> SyntheticOptions:
        return self.synthetic or SyntheticOptions()

    def builtin_shape(self) -> DataShape:
        """The shape of a built-in dataset (an upload's is in its database row)."""
        if self.dataset == "digits":
            return self.shape(10, 1, 8)
        if self.dataset == "upload":
            raise LookupError("an uploaded dataset's shape is read from its row")
        opts = self.synthetic_options()
        return self.shape(opts.num_classes, opts.channels, opts.size)

    def shape(self, num_classes: int, channels: int, own_size: int | None) -> DataShape:
        """The job's data shape: its image_size, else the data's own size, else the default."""
        return DataShape(num_classes, channels, self.image_size or own_size or DEFAULT_IMAGE_SIZE)


class TeacherRef(Strict):
    """Exactly one of a succeeded job (its student teaches) or a registered model."""

    job: Ident | None = Field(None, description="a succeeded job")
    model: Ident | None = Field(None, description="a model from POST /v1/models")

    @model_validator(mode="after")
    def _exactly_one(self) -> "TeacherRef":
        if (self.job is None) == (self.model is None):
            raise ValueError("give exactly one of teacher.job and teacher.model")
        return self


class InitRef(Strict):
    """Where the student's weights start, besides random: exactly one of timm's pretrained
    weights for its architecture, a registered model or a succeeded job's student, all of
    the student's architecture. A classifier for another class count is replaced."""

    pretrained: bool = Field(
        False, description="timm's default pretrained weights (the worker's Hugging Face cache)"
    )
    model: Ident | None = Field(None, description="a model's id")
    job: Ident | None = Field(None, description="a succeeded job")

    @model_validator(mode="after")
    def _exactly_one(self) -> "InitRef":
        if sum([self.pretrained, self.model is not None, self.job is not None]) != 1:
            raise ValueError("give exactly one of pretrained (true), model and job")
        return self


class StudentSpec(Strict):
    arch: Arch
    num_classes: int | None = Field(None, ge=2, le=100_000)
    in_channels: int | None = Field(None, ge=1, le=16)
    init: InitRef | None = Field(None, description="left out: random weights")


# what a field left out is for each optimizer: SGD the CIFAR recipe, AdamW torch's defaults
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.05, "weight_decay": 5e-4},
    "adamw": {"lr": 1e-3, "weight_decay": 0.01},
}


class OptimizerSpec(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, le=10, description="default: 0.05 for sgd, 1e-3 for adamw")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(
        5e-4, ge=0, le=1, description="default: 5e-4 for sgd, 0.01 for adamw (decoupled)"
    )
    nesterov: bool = Field(False, description="sgd only")

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name", "sgd"), str):
            return OPTIMIZER_DEFAULTS.get(data.get("name", "sgd"), {}) | data
        return data


class ScheduleSpec(Strict):
    name: Literal["multistep", "cosine", "constant"] = "cosine"
    milestones: list[Epoch] = Field(default_factory=list, max_length=100)
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: Epochs = 0

    def lr_drops(self) -> list[int]:
        """The epochs after which the learning rate drops (RCO's lr_drops anchors)."""
        return list(self.milestones) if self.name == "multistep" else []


class TrainSpec(Strict):
    epochs: Epoch = 30
    batch_size: int = Field(128, ge=2, le=65_536)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    compile: bool = Field(
        False, description="torch.compile the student and teacher forward; pays on long GPU runs"
    )
    data_placement: Literal["auto", "device", "host", "stream"] = Field(
        "auto",
        description="device: the images are decoded once and held on the GPU; host: held in "
        "host memory, copied per batch (pinned, ahead of the step); stream: an uploaded "
        "ImageFolder dataset is read and decoded from its shards every epoch by DataLoader "
        "processes (other data is held on the host). auto: uploaded images held when they "
        "fit the worker's DISTILLERY_RESIDENT_BYTES, else streamed; held data on the GPU when "
        "it fits in 40% of free memory",
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


EXAMPLE: dict[str, Any] = {
    "name": "digits-teacher",
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 4, "batch_size": 64},
}


class JobSpec(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    name: Name = Field("", max_length=200)
    recipe: Annotated[str, Field(max_length=200), AfterValidator(recipes.known)] | None = Field(
        None,
        description="a published recipe (GET /v1/recipes): fills every field the spec leaves "
        "out; what the spec gives wins",
    )
    method: MethodParams
    teacher: TeacherRef | None = None
    student: StudentSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    metadata: dict[Name, str] = Field(default_factory=dict, max_length=50)
    exports: list[Literal["onnx", "torchscript"]] = Field(
        default_factory=list,
        max_length=2,
        description="extra formats of the student, each checked against PyTorch at export: "
        "onnx (student.onnx) and torchscript (student.torchscript.pt)",
    )
    derived: dict[Name, str] = Field(
        default_factory=dict,
        max_length=50,
        description="filled in by admission: how each default that depends on the job (a "
        "paper's epochs scaled to train.epochs, ...) was derived, by field; what a submission "
        "gives here is replaced",
    )

    @model_validator(mode="before")
    @classmethod
    def _recipe_fills(cls, data: Any) -> Any:
        # on the raw JSON, so that a field the spec leaves out is exactly one it does not hold
        return recipes.fill(data)

    def student_shape(self) -> tuple[int, int]:
        """(num_classes, in_channels) of the student of a resolved spec."""
        if self.student.num_classes is None or self.student.in_channels is None:
            raise ValueError("the spec is not resolved: admission fills in the student's shape")
        return self.student.num_classes, self.student.in_channels

    def facts(self) -> JobFacts:
        """What the method's rules read of this spec."""
        return JobFacts(self.teacher is not None, self.student.arch, self.train.epochs)

    def resolved(self, shape: DataShape, teacher: TeacherFacts | None) -> "JobSpec":
        """A copy with every dataset- and teacher-derived field filled in: what is stored."""
        student = self.student.model_copy(
            update={"num_classes": shape.num_classes, "in_channels": shape.channels}
        )
        data = self.data.model_copy(update={"image_size": shape.size})
        facts = self.facts()
        derived = {f"method.{k}": how for k, how in self.method.derivations(facts).items()}
        method = self.method.resolve(facts, teacher)
        return self.model_copy(
            update={"student": student, "data": data, "method": method, "derived": derived}
        )

    def warnings(self) -> list[str]:
        """What a user should know before this job trains: a schedule far shorter than its
        method's published figures were trained with."""
        published = type(self.method).published
        warning = published.warning(self.method.name, self.train.epochs) if published else None
        return [warning] if warning else []


def spec_problems(spec: JobSpec, shape: DataShape) -> list[FieldError]:
    """Cross-field rules of the spec and its data, each naming its field."""
    problems = spec.method.problems(spec.facts())
    if shape.num_classes < (least := spec.method.min_classes):
        why = (
            f"{spec.method.name} needs at least {least} classes, this data has {shape.num_classes}"
        )
        problems.append(FieldError("method.name", why))
    if spec.student.num_classes not in (None, shape.num_classes):
        problems.append(
            FieldError("student.num_classes", f"must be {shape.num_classes} for this dataset")
        )
    if spec.student.in_channels not in (None, shape.channels):
        problems.append(
            FieldError("student.in_channels", f"must be {shape.channels} for this dataset")
        )
    train = spec.train
    ms = train.schedule.milestones
    if ms != sorted(set(ms)) or any(m < 1 or m >= train.epochs for m in ms):
        problems.append(
            FieldError("train.schedule.milestones", "must be increasing epochs in [1, epochs)")
        )
    if train.schedule.warmup_epochs >= train.epochs:
        problems.append(
            FieldError("train.schedule.warmup_epochs", "must be less than train.epochs")
        )
    return problems + _ddp_problems(train.batch_size, spec.resources.gpus)


def recipe_problems(spec: JobSpec, teacher: TeacherFacts | None) -> list[FieldError]:
    """A pair recipe's teacher and student against the job's (a recipe for another pair would
    apply settings published for that pair)."""
    if spec.recipe is None:
        return []
    arch, field = (teacher.arch, teacher.field) if teacher else (None, "teacher")
    return recipes.pair_problems(spec.recipe, spec.student.arch, arch, field)


def _ddp_problems(batch_size: int, gpus: int) -> list[FieldError]:
    """Each of `gpus` processes trains an equal share of every batch, of 2 samples or more
    (BatchNorm cannot normalise one)."""
    if gpus == 1:
        return []
    if batch_size % gpus:
        why = f"must be a multiple of resources.gpus ({gpus})"
        return [FieldError("train.batch_size", why)]
    if batch_size // gpus < 2:
        why = (
            f"must be at least {2 * gpus}: each of the {gpus} processes needs 2 samples "
            "or more of every batch"
        )
        return [FieldError("train.batch_size", why)]
    return []
