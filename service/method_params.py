"""One params model per distillation method (see shared docs/methods.md). Defaults are
defaults, not constants; every weight is named for what it weighs."""

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from service.names import Arch, Strict

Weight = Annotated[float, Field(ge=0, le=1e4)]
Temperature = Annotated[float, Field(gt=0, le=100)]


class MethodBase(Strict):
    needs_teacher: ClassVar[bool] = False
    needs_stage_features: ClassVar[bool] = False  # the student's (and teacher's) stages
    needs_route: ClassVar[bool] = False  # the teacher's route checkpoints
    needs_same_stages: ClassVar[bool] = False  # teacher and student stage counts match


class SupervisedParams(MethodBase):
    """Plain cross-entropy from scratch: how a user trains a teacher."""

    name: Literal["supervised"]
    route_every: int = Field(0, ge=0, description="extra route checkpoint every N epochs (RCO)")


class KDParams(MethodBase):
    """Hinton et al. 2015: ce_weight * CE + kd_weight * T^2 * KL(p_t || p_s)."""

    needs_teacher: ClassVar[bool] = True
    name: Literal["kd"]
    temperature: Temperature = 4.0
    ce_weight: Weight = 0.1
    kd_weight: Weight = 0.9


class KDCLParams(MethodBase):
    """Guo et al. 2020: peers trained together against a detached ensemble teacher. The
    student is peer 0; `peers` lists the others (m = 1 + len(peers) >= 2)."""

    name: Literal["kdcl"]
    peers: list[Arch] = Field(min_length=1, max_length=7)
    ensemble: Literal["naive", "linear", "minlogit", "general"] = "minlogit"
    naive_per: Literal["batch", "sample"] = "batch"
    temperature: Temperature = 2.0
    kd_weight: Weight = 1.0
    linear_steps: int = Field(20, ge=1, le=1000, description="simplex solver steps per batch")
    general_eps: float = Field(1e-3, gt=0, le=1, description="C + eps*I before inverting")


class DDGSDParams(MethodBase):
    """Xu & Liu 2019: one network, two distorted views, symmetric KL + MMD on features."""

    name: Literal["ddgsd"]
    kl_weight: Weight = 1.0
    mmd_weight: Weight = 5e-4
    temperature: Temperature = 1.0
    detach_targets: bool = True
    mmd_kernel: Literal["linear", "gaussian"] = "linear"
    mmd_sigma: float | None = Field(None, gt=0, description="Gaussian width; None: median")


class RCOParams(MethodBase):
    """Jin et al. 2019: follow the teacher's route checkpoints, easy to hard, with KD."""

    needs_teacher: ClassVar[bool] = True
    needs_route: ClassVar[bool] = True
    name: Literal["rco"]
    anchors: Literal["lr_drops", "every_n", "greedy"] | list[int] = "lr_drops"
    every_n: int = Field(1, ge=1, description="every_n: each n-th route checkpoint")
    threshold: float = Field(2.0, gt=0, description="greedy: largest KL gap to accept")
    stage_epochs: list[int] | None = Field(None, description="student epochs per anchor")
    temperature: Temperature = 4.0
    ce_weight: Weight = 0.1
    kd_weight: Weight = 0.9


class IEKDParams(MethodBase):
    """Huang et al. 2021: inherit one half of the teacher's factor, explore away with the
    other."""

    needs_teacher: ClassVar[bool] = True
    needs_stage_features: ClassVar[bool] = True
    name: Literal["iekd"]
    ae_epochs: int = Field(30, ge=1, le=1000)
    ae_lr: float = Field(0.01, gt=0, le=10)
    rate: float = Field(0.5, gt=0, le=1, description="auto-encoder channel compression")
    split: Literal["natural", "random"] = "natural"
    exp_loss: Literal["l1", "cosine"] = "l1"
    ce_weight: Weight = 1.0
    inh_weight: Weight = 1.0
    exp_weight: Weight = 1.0


class ReviewKDParams(MethodBase):
    """Chen et al. 2021: ABF fusion of the student's stages, HCL against the teacher's."""

    needs_teacher: ClassVar[bool] = True
    needs_stage_features: ClassVar[bool] = True
    needs_same_stages: ClassVar[bool] = True
    name: Literal["reviewkd"]
    weight: Weight = 1.0
    warmup_epochs: int = Field(20, ge=0)
    mid_channels: int | None = Field(None, ge=1, le=4096, description="None: min(512, deepest)")
    ce_weight: Weight = 1.0


MethodParams = Annotated[
    SupervisedParams
    | KDParams
    | KDCLParams
    | DDGSDParams
    | RCOParams
    | IEKDParams
    | ReviewKDParams,
    Field(discriminator="name"),
]
METHODS = ("ddgsd", "iekd", "kd", "kdcl", "rco", "reviewkd", "supervised")
