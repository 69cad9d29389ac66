"""One params model per distillation method (the README's Methods section): its defaults, its
allowed values and its admission rules. A rule reads the rest of the job only as JobFacts
(a teacher or not, the student's architecture, the epochs) and the teacher as TeacherFacts.
The engine's method takes these fields as explicit keywords with no defaults of its own
(tests/worker/test_spec_matches_engine.py ties them). Every weight is named for what it
weighs."""

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import Field, model_validator

from service.errors import FieldError
from service.spec import schedule
from service.spec.limits import MAX_EPOCHS, Epoch, Epochs
from service.spec.names import Arch, Strict, stages
from service.spec.recipes import pair_values
from service.spec.schedule import PaperEpochs, Published

Weight = Annotated[float, Field(ge=0, le=1e4)]
Temperature = Annotated[float, Field(gt=0, le=100)]


@dataclass(frozen=True)
class JobFacts:
    """What a method's rules may read of the rest of a job's spec."""

    has_teacher: bool
    student_arch: str
    epochs: int


@dataclass(frozen=True)
class TeacherFacts:
    """What admission knows of a job's teacher: a succeeded job or a registered model."""

    field: str  # "teacher.job" or "teacher.model": where its errors point
    ident: str  # the job's or the model's id
    arch: str
    num_classes: int
    in_channels: int
    input_size: int | None  # None: any size (a job's student was trained at the data's)
    route: list[int] | None  # a teacher job's route checkpoint epochs; None for a model
    lr_drops: list[int]  # the epochs a teacher job's learning rate dropped after
    source_job_id: str | None = None  # the job a registered model came from


class MethodBase(Strict):
    name: str  # each method narrows it to its own literal, the union's discriminator
    needs_teacher: ClassVar[bool] = False
    needs_stage_features: ClassVar[bool] = False  # the student's (and teacher's) stages
    needs_same_stages: ClassVar[bool] = False  # teacher and student stage counts match
    min_classes: ClassVar[int] = 2  # the fewest classes its loss is defined for
    # fields None at submission that admission fills in (the engine takes them resolved)
    resolved_at_admission: ClassVar[tuple[str, ...]] = ()
    published: ClassVar[Published | None] = None  # the schedule its paper's figures used

    def problems(self, job: JobFacts) -> list[FieldError]:
        """Rules across this method and the rest of the spec, the teacher not yet read."""
        name, errors = self.name, []
        if self.needs_teacher and not job.has_teacher:
            errors.append(FieldError("teacher", f"method {name!r} needs a teacher"))
        if not self.needs_teacher and job.has_teacher:
            errors.append(FieldError("teacher", f"method {name!r} takes no teacher"))
        if self.needs_stage_features and not stages(job.student_arch):
            why = f"{name} needs stage features, which {job.student_arch} does not have"
            errors.append(FieldError("student.arch", why))
        return errors

    def teacher_problems(self, job: JobFacts, teacher: TeacherFacts) -> list[FieldError]:
        """Rules between this method and a teacher that fits the data."""
        name, counts = self.name, (stages(teacher.arch), stages(job.student_arch))
        if self.needs_stage_features and not counts[0]:
            why = f"{name} needs stage features, which the teacher's {teacher.arch} does not have"
            return [FieldError(teacher.field, why)]
        if self.needs_same_stages and 0 not in counts and counts[0] != counts[1]:
            why = (
                f"{name} pairs stage by stage: the teacher has {counts[0]} stages, "
                f"the student {counts[1]}"
            )
            return [FieldError(teacher.field, why)]
        return []

    def resolve(self, job: JobFacts, teacher: TeacherFacts | None) -> Self:
        """This params model with what admission fills in (see `resolved_at_admission`)."""
        return self

    def derivations(self, job: JobFacts) -> dict[str, str]:
        """{field: how `resolve` derives it from the job} for the fields left out of these
        params as submitted (e.g. a paper's epochs scaled to the job: service/spec/schedule.py);
        admission stores them in the spec's `derived` and the model card prints them."""
        return {}

    def holdout(self) -> float:
        """The share of the training split the method keeps aside to choose on (KDCL)."""
        return 0.0

    def peer_archs(self) -> list[str]:
        """The architectures it trains beside the student (KDCL's peers)."""
        return []


class SupervisedParams(MethodBase):
    """Plain cross-entropy from scratch: how a user trains a teacher."""

    name: Literal["supervised"]
    route_every: Epochs = Field(0, description="extra route checkpoint every N epochs (RCO)")


# Logit standardisation (Sun et al. 2024): the authors run KD and DKD with `--logit-stand
# --base-temp 2 --kd-weight 9` (sunshangquan/logit-standardization-KD, README.md and
# tools/train.py): KD's temperature becomes 2 and its weight 9, DKD's temperature 2 and its
# alpha and beta 9 times their own. A field the user gives is taken as it is.
LS_BASE_TEMPERATURE = 2.0
LS_WEIGHT = 9.0
LS_FLAG = Field(
    False,
    description="z-score each sample's teacher and student logits before the temperature "
    "(Sun et al. 2024); the temperature is then a base temperature; CE stays on raw logits",
)


M = TypeVar("M", bound=MethodBase)


def fill_none(params: M, defaults: dict[str, float]) -> M:
    """`params` with each of `defaults`' fields that was left out (None) set to its default."""
    for field, value in defaults.items():
        if getattr(params, field) is None:
            setattr(params, field, value)
            params.__pydantic_fields_set__.discard(field)  # still left out by the user
    return params


# mdistiller's CIFAR-100 KD (mdistiller/engine/cfg.py, configs/cifar100/kd.yaml): T 4, CE 0.1,
# KD 0.9, the recipe RepDistiller uses too
KD_DEFAULTS = {
    False: {"temperature": 4.0, "kd_weight": 0.9},
    True: {"temperature": LS_BASE_TEMPERATURE, "kd_weight": LS_WEIGHT},
}


class KDParams(MethodBase):
    """Hinton et al. 2015: ce_weight * CE + kd_weight * T^2 * KL(p_t || p_s), on z-scored
    logits with logit_standardisation."""

    needs_teacher: ClassVar[bool] = True
    # None at submission, then the default for the flag (filled as the spec is read)
    resolved_at_admission: ClassVar[tuple[str, ...]] = ("temperature", "kd_weight")
    name: Literal["kd"]
    logit_standardisation: bool = LS_FLAG
    temperature: Temperature | None = Field(
        None, description="None: 4, or the base temperature 2 with logit_standardisation"
    )
    ce_weight: Weight = 0.1
    kd_weight: Weight | None = Field(None, description="None: 0.9, or 9 with logit_standardisation")

    @model_validator(mode="after")
    def _defaults_for_the_flag(self) -> Self:
        return fill_none(self, KD_DEFAULTS[self.logit_standardisation])


# mdistiller's DKD (mdistiller/engine/cfg.py): CE 1, alpha 1, beta 8, T 4, a warm-up of 20 of
# its 240 CIFAR epochs (configs/cifar100/dkd/*.yaml); per-pair betas are recipes
DKD_DEFAULTS = {
    False: {"alpha": 1.0, "beta": 8.0, "temperature": 4.0},
    True: {"alpha": LS_WEIGHT, "beta": 8.0 * LS_WEIGHT, "temperature": LS_BASE_TEMPERATURE},
}
DKD_SOURCE = "megvii-research/mdistiller mdistiller/engine/cfg.py, configs/cifar100/dkd"
DKD_WARMUP = PaperEpochs(20, 240, DKD_SOURCE)
DKD_EPOCHS = {"warmup_epochs": DKD_WARMUP}


class DKDParams(MethodBase):
    """Zhao et al. 2022: CE + min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)."""

    needs_teacher: ClassVar[bool] = True
    min_classes: ClassVar[int] = 3  # NCKD over the non-target classes: none to compare with 2
    resolved_at_admission: ClassVar[tuple[str, ...]] = (
        "alpha",
        "beta",
        "temperature",
        "warmup_epochs",
    )
    published: ClassVar[Published | None] = Published(240, DKD_SOURCE)
    name: Literal["dkd"]
    logit_standardisation: bool = LS_FLAG
    alpha: Weight | None = Field(
        None, description="TCKD weight; None: 1, or 9 with logit_standardisation"
    )
    beta: Weight | None = Field(
        None, description="NCKD weight; None: 8, or 72 with logit_standardisation"
    )
    temperature: Temperature | None = Field(
        None, description="None: 4, or the base temperature 2 with logit_standardisation"
    )
    warmup_epochs: Epochs | None = Field(
        None,
        description="epochs over which the DKD terms ramp up, counted from 1 (0: none); "
        f"None: the paper's {DKD_WARMUP.epochs} of {DKD_WARMUP.schedule} scaled to "
        "train.epochs, at least 1",
    )
    ce_weight: Weight = 1.0

    @model_validator(mode="after")
    def _defaults_for_the_flag(self) -> Self:
        return fill_none(self, DKD_DEFAULTS[self.logit_standardisation])

    def resolve(self, job: JobFacts, teacher: TeacherFacts | None) -> Self:
        return self.model_copy(update=schedule.scaled_defaults(self, job.epochs, DKD_EPOCHS))

    def derivations(self, job: JobFacts) -> dict[str, str]:
        return schedule.derivations(self, job.epochs, DKD_EPOCHS)


class DISTParams(MethodBase):
    """Huang et al. 2022: CE + kd_weight * tau^2 * (inter_weight * inter-class + intra_weight
    * intra-class relation), the Pearson correlations of softmax(z / tau) across classes and
    across the batch. Defaults: hunto/image_classification_sota's CIFAR-100 config
    (configs/strategies/distill/dist_cifar.yaml: kd dist_t4, kd_loss_weight 2,
    ori_loss_weight 1) and DIST(beta=1, gamma=1) in lib/models/losses/kd_loss.py."""

    needs_teacher: ClassVar[bool] = True
    name: Literal["dist"]
    temperature: Temperature = Field(
        4.0,
        description="tau: 4 as the authors on CIFAR-100 (small images, the zoo's); 1 on "
        "ImageNet (the dist-imagenet recipe)",
    )
    inter_weight: Weight = Field(1.0, description="the paper's beta")
    intra_weight: Weight = Field(1.0, description="the paper's gamma")
    kd_weight: Weight = 2.0
    ce_weight: Weight = 1.0


KDCL_GENERAL_HOLDOUT = 0.1  # ours, no published value: general's covariance is fit on it


class KDCLParams(MethodBase):
    """Guo et al. 2020: peers trained together against a detached ensemble teacher. The
    student is peer 0; `peers` lists the others (m = 1 + len(peers) >= 2). Only the `general`
    ensemble needs data held out of the training split (its covariance), so by default only
    it takes any: `holdout_fraction` of it (stratified, seeded by data.split_seed), never the
    validation split the job reports. With a held-out part the output is the peer best on it;
    without one it is the student, the network `student.arch` names."""

    resolved_at_admission: ClassVar[tuple[str, ...]] = ("holdout_fraction",)
    name: Literal["kdcl"]
    peers: list[Arch] = Field(min_length=1, max_length=7)
    ensemble: Literal["naive", "linear", "minlogit", "general"] = "minlogit"
    naive_per: Literal["batch", "sample"] = "batch"
    temperature: Temperature = 2.0
    kd_weight: Weight = 1.0
    general_eps: float = Field(1e-3, gt=0, le=1, description="C + eps*I before inverting")
    holdout_fraction: float | None = Field(
        None,
        ge=0,
        le=0.5,
        description="share of the training split kept aside to choose the output peer on "
        f"(and `general`'s weights); None: {KDCL_GENERAL_HOLDOUT} for `general`, else 0 (the "
        "student is the output and trains on all the data)",
    )

    def problems(self, job: JobFacts) -> list[FieldError]:
        errors = super().problems(job)
        if self.ensemble == "general" and self.holdout_fraction == 0:
            why = "the general ensemble estimates its weights on held-out data: must be > 0"
            errors.append(FieldError("method.holdout_fraction", why))
        return errors

    def resolve(self, job: JobFacts, teacher: TeacherFacts | None) -> Self:
        return self.model_copy(update={"holdout_fraction": self.holdout()})

    def derivations(self, job: JobFacts) -> dict[str, str]:
        if self.holdout_fraction is not None:
            return {}
        if self.ensemble == "general":
            why = "the general ensemble estimates its weights on held-out data"
            return {"holdout_fraction": f"{KDCL_GENERAL_HOLDOUT}: {why}"}
        why = f"the {self.ensemble} ensemble needs no held-out data: the student is the output"
        return {"holdout_fraction": f"0: {why}"}

    def holdout(self) -> float:
        if self.holdout_fraction is not None:
            return self.holdout_fraction
        return KDCL_GENERAL_HOLDOUT if self.ensemble == "general" else 0.0

    def peer_archs(self) -> list[str]:
        return list(self.peers)


class DDGSDParams(MethodBase):
    """Xu & Liu 2019: one network, two distorted views, symmetric KL + MMD on features."""

    name: Literal["ddgsd"]
    kl_weight: Weight = 1.0
    mmd_weight: Weight = 5e-4
    temperature: Temperature = 1.0
    detach_targets: bool = True
    mmd_kernel: Literal["linear", "gaussian"] = "linear"
    mmd_sigma: float | None = Field(None, gt=0, description="Gaussian width; None: median")


# What RCO's student stages follow when left out. Jin et al. 2019 released no code; the
# equal-epoch-interval RCO of SforAiDl/KD_Lib (KD_Lib/KD/vision/RCO/rco.py) trains the
# student in step with the teacher's route (stage k for the epochs its anchor's interval
# took the teacher), which this keeps for any anchors and a student schedule of any length.
RCO_STAGES = (
    "in step with the teacher's route: stage k ends where anchor k stood in the teacher's "
    "epochs, scaled to this job's {epochs} (as SforAiDl/KD_Lib's RCO, "
    "KD_Lib/KD/vision/RCO/rco.py), the converged teacher's stage at least 1"
)


class RCOParams(MethodBase):
    """Jin et al. 2019: follow the teacher's route checkpoints, easy to hard, with KD."""

    needs_teacher: ClassVar[bool] = True
    resolved_at_admission: ClassVar[tuple[str, ...]] = ("stage_epochs",)
    name: Literal["rco"]
    anchors: (
        Literal["lr_drops", "every_n", "greedy"]
        | Annotated[list[Epoch], Field(min_length=1, max_length=100)]
    ) = "lr_drops"
    every_n: int = Field(1, ge=1, le=MAX_EPOCHS, description="every_n: each n-th route checkpoint")
    threshold: float = Field(2.0, gt=0, description="greedy: largest KL gap to accept")
    stage_epochs: list[Epochs] | None = Field(
        None,
        max_length=100,
        description="student epochs per anchor; None: " + RCO_STAGES.format(epochs="epochs"),
    )
    temperature: Temperature = 4.0
    ce_weight: Weight = 0.1
    kd_weight: Weight = 0.9

    def problems(self, job: JobFacts) -> list[FieldError]:
        errors = super().problems(job)
        if self.stage_epochs is not None and sum(self.stage_epochs) != job.epochs:
            errors.append(FieldError("method.stage_epochs", "must add up to train.epochs"))
        return errors

    def teacher_problems(self, job: JobFacts, teacher: TeacherFacts) -> list[FieldError]:
        if teacher.route is None:
            hint = f'; use {{"job": "{teacher.source_job_id}"}}' if teacher.source_job_id else ""
            why = (
                "rco follows the teacher's route checkpoints, which only a supervised job "
                f"saves, not a model{hint}"
            )
            return [FieldError(teacher.field, why)]
        if not teacher.route:
            why = "saved no route checkpoints; train the teacher with method supervised"
            return [FieldError(teacher.field, f"job {teacher.ident!r} {why}")]
        try:
            self.plan(teacher.route, teacher.lr_drops, job.epochs)
        except RouteError as exc:
            return [FieldError(exc.field, exc.message)]
        return []

    def resolve(self, job: JobFacts, teacher: TeacherFacts | None) -> Self:
        if self.stage_epochs is not None or teacher is None or not teacher.route:
            return self
        plan = self.plan(teacher.route, teacher.lr_drops, job.epochs)
        return self.model_copy(update={"stage_epochs": plan.stage_epochs})

    def derivations(self, job: JobFacts) -> dict[str, str]:
        if self.stage_epochs is not None:
            return {}
        return {"stage_epochs": RCO_STAGES.format(epochs=job.epochs)}

    def plan(self, route: list[int], lr_drops: list[int], epochs: int) -> "RoutePlan":
        """The anchor epochs and the student's epochs per stage, for a teacher whose route
        checkpoints are at `route` (ascending) and whose LR dropped after `lr_drops`."""
        if isinstance(self.anchors, list):
            if missing := sorted(set(self.anchors) - set(route)):
                why = f"no route checkpoint at epochs {missing}; the teacher has {route}"
                raise RouteError("method.anchors", why)
            chosen = self.anchors
        elif self.anchors == "every_n":
            chosen = route[self.every_n - 1 :: self.every_n]
        else:  # lr_drops; greedy picks its own, as many stages as lr_drops has anchors
            chosen = [m for m in lr_drops if m in route] if lr_drops else route
        anchors = sorted(set(chosen) | {route[-1]})  # the converged teacher always ends it
        if self.stage_epochs is None:
            return RoutePlan(anchors, in_step(epochs, anchors))
        if self.anchors != "greedy" and len(self.stage_epochs) != len(anchors):
            raise RouteError("method.stage_epochs", f"needs one entry per anchor ({len(anchors)})")
        return RoutePlan(anchors, list(self.stage_epochs))


@dataclass(frozen=True)
class RoutePlan:
    anchors: list[int]  # teacher epochs, easy to hard (greedy: only their count is used)
    stage_epochs: list[int]  # student epochs per stage


@dataclass
class RouteError(Exception):
    field: str
    message: str


def in_step(total: int, anchors: list[int]) -> list[int]:
    """`total` student epochs split in step with the teacher's route: stage k ends at
    round(total * anchors[k] / anchors[-1]), the last stage (the converged teacher) keeping
    at least one epoch. A stage that rounds to no epochs is skipped as the student trains."""
    ends = [min(round(total * a / anchors[-1]), total - 1) for a in anchors[:-1]] + [total]
    return [end - start for start, end in zip([0, *ends[:-1]], ends, strict=True)]


IEKD_REPO = "aliyun/Revisiting-Knowledge-Distillation-an-Inheritance-and-Exploration-Framework"
IEKD_EPOCHS = {
    "ae_epochs": PaperEpochs(30, 160, f"{IEKD_REPO} config/ie_kd.yaml, num_epoch_embedS 30"),
}


class IEKDParams(MethodBase):
    """Huang et al. 2021: inherit one half of the teacher's factor, explore away with the
    other."""

    needs_teacher: ClassVar[bool] = True
    needs_stage_features: ClassVar[bool] = True
    resolved_at_admission: ClassVar[tuple[str, ...]] = ("ae_epochs",)
    published: ClassVar[Published | None] = Published(
        160, f"{IEKD_REPO} config/ie_kd.yaml, num_epoch 160"
    )
    name: Literal["iekd"]
    ae_epochs: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="auto-encoder epochs before the student's; None: the paper's 30 of 160 "
        "epochs scaled to train.epochs, at least 1",
    )
    # the official config (config/ie_kd.yaml): 30 epochs of SGD, momentum 0.9, nesterov,
    # wd 5e-4, at a constant lr of 0.1 (lr_decayS base 0.1; main.py's --base-lr-embed 0.01
    # is never read)
    ae_lr: float = Field(0.1, gt=0, le=10)
    rate: float = Field(0.5, gt=0, le=1, description="auto-encoder channel compression")
    split: Literal["natural", "random"] = "natural"
    exp_loss: Literal["l1", "cosine"] = "l1"
    ce_weight: Weight = 1.0
    inh_weight: Weight = 1.0
    exp_weight: Weight = 1.0

    def resolve(self, job: JobFacts, teacher: TeacherFacts | None) -> Self:
        return self.model_copy(update=schedule.scaled_defaults(self, job.epochs, IEKD_EPOCHS))

    def derivations(self, job: JobFacts) -> dict[str, str]:
        return schedule.derivations(self, job.epochs, IEKD_EPOCHS)


# ReviewKD's published HCL weights by (teacher, student): its recipes (recipes.json, from the
# authors' CIFAR-100 commands, dvlab-research/ReviewKD CIFAR-100/script/reviewKD.sh; mdistiller's
# reviewkd.yaml agrees on resnet32x4 -> resnet8x4). Any other pair: train.py's default,
# --kd-loss-weight 1.0.
REVIEWKD_WEIGHTS: dict[tuple[str, str], float] = pair_values("reviewkd", "weight")
REVIEWKD_DEFAULT_WEIGHT = 1.0
REVIEWKD_TRAIN = "dvlab-research/ReviewKD CIFAR-100/train.py"
REVIEWKD_EPOCHS = {"warmup_epochs": PaperEpochs(20, 240, f"{REVIEWKD_TRAIN}, --kd-warm-up 20")}


class ReviewKDParams(MethodBase):
    """Chen et al. 2021: ABF fusion of the student's stages, HCL against the teacher's."""

    needs_teacher: ClassVar[bool] = True
    needs_stage_features: ClassVar[bool] = True
    needs_same_stages: ClassVar[bool] = True
    resolved_at_admission: ClassVar[tuple[str, ...]] = ("weight", "warmup_epochs")
    published: ClassVar[Published | None] = Published(240, f"{REVIEWKD_TRAIN}, --epochs 240")
    name: Literal["reviewkd"]
    weight: Weight | None = Field(
        None,
        description="HCL weight; None: the published value for this teacher/student pair "
        f"when there is one ({', '.join(f'{t}->{s} {w}' for (t, s), w in REVIEWKD_WEIGHTS.items())}"
        f"), else {REVIEWKD_DEFAULT_WEIGHT}",
    )
    warmup_epochs: Epochs | None = Field(
        None,
        description="epochs the HCL term ramps up over, from the first (0: none); None: the "
        "paper's 20 of 240 epochs scaled to train.epochs, at least 1",
    )
    mid_channels: int | None = Field(None, ge=1, le=4096, description="None: min(512, deepest)")
    ce_weight: Weight = 1.0

    def resolve(self, job: JobFacts, teacher: TeacherFacts | None) -> Self:
        update: dict[str, Any] = schedule.scaled_defaults(self, job.epochs, REVIEWKD_EPOCHS)
        if self.weight is None and teacher is not None:
            pair = (teacher.arch, job.student_arch)
            update["weight"] = REVIEWKD_WEIGHTS.get(pair, REVIEWKD_DEFAULT_WEIGHT)
        return self.model_copy(update=update)

    def derivations(self, job: JobFacts) -> dict[str, str]:
        return schedule.derivations(self, job.epochs, REVIEWKD_EPOCHS)


MethodParams = Annotated[
    SupervisedParams
    | KDParams
    | DKDParams
    | DISTParams
    | KDCLParams
    | DDGSDParams
    | RCOParams
    | IEKDParams
    | ReviewKDParams,
    Field(discriminator="name"),
]
PARAMS_MODELS: tuple[type[MethodBase], ...] = (
    SupervisedParams,
    KDParams,
    DKDParams,
    DISTParams,
    KDCLParams,
    DDGSDParams,
    RCOParams,
    IEKDParams,
    ReviewKDParams,
)


def method_name(model: type[MethodBase]) -> str:
    """The literal a params model answers to as `method.name`."""
    return str(model.model_fields["name"].annotation.__args__[0])  # type: ignore[union-attr]


METHODS = tuple(sorted(method_name(m) for m in PARAMS_MODELS))
