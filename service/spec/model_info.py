"""What a model says about itself: the metadata of an upload (query parameters and
X-Model-Metadata), and the bodies that register a job's student or a file by URI."""

from pydantic import Field, ValidationInfo, field_validator, model_validator

from service.spec.names import Arch, Strict
from service.spec.uris import DataUri


class Normalisation(Strict):
    mean: list[float] = Field(min_length=1, max_length=16)
    std: list[float] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _positive_std(self) -> "Normalisation":
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError("mean and std need one value per channel, std > 0")
        return self


class ModelInfo(Strict):
    """What an upload says about its weights (query parameters and X-Model-Metadata)."""

    name: str = Field("", max_length=200)
    arch: Arch  # a zoo architecture's are checked at upload, a timm one's by a worker
    num_classes: int = Field(ge=2, le=100_000)
    in_channels: int = Field(ge=1, le=16)
    input_size: int | None = Field(None, ge=4, le=4096, description="height = width")
    normalisation: Normalisation | None = None
    class_names: list[str] | None = Field(None, max_length=100_000)

    @field_validator("normalisation")
    @classmethod
    def _per_channel(cls, v: Normalisation | None, info: ValidationInfo) -> Normalisation | None:
        channels = info.data.get("in_channels")
        if v is not None and channels is not None and len(v.mean) != channels:
            raise ValueError(f"needs one mean and std per input channel ({channels})")
        return v

    @field_validator("class_names")
    @classmethod
    def _per_class(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        num_classes = info.data.get("num_classes")
        if v is not None and num_classes is not None and len(v) != num_classes:
            raise ValueError(f"needs one name per class ({num_classes})")
        return v


class FromJob(Strict):
    """POST /v1/models with JSON: register a succeeded job's student."""

    job: str = Field(min_length=1, max_length=64)
    name: str = Field("", max_length=200)


class FromUri(ModelInfo):
    """POST /v1/models with JSON: register a safetensors file already in an object store."""

    uri: DataUri = Field(description="s3://bucket/key of a safetensors file")

    @field_validator("uri")
    @classmethod
    def _an_object(cls, v: str) -> str:
        if v.endswith("/"):
            raise ValueError("must name a file (a safetensors object), not a folder")
        return v
