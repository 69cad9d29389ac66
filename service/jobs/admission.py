"""Admission: a submitted spec checked against the database (its uploaded dataset, its
teacher) and resolved into the spec that is stored. A refused spec changes nothing."""

from collections.abc import Sequence

from sqlalchemy.orm import Session

from service.db import artifacts
from service.db.tables import Dataset, Job, RegisteredModel
from service.db.tenancy import current_project
from service.errors import Conflict, FieldError, InvalidSpec
from service.ingest import datasets, models
from service.jobs import lifecycle, quotas
from service.jobs.capacity import (
    Holder,
    configured,
    holders,
    input_size_problems,
    memory_problems,
    node_problems,
)
from service.spec.job import (
    DataShape,
    DataSpec,
    JobSpec,
    TeacherRef,
    recipe_problems,
    spec_problems,
)
from service.spec.methods import TeacherFacts
from service.spec.names import TIMM, has_pretrained


def submit(
    s: Session,
    spec: JobSpec,
    *,
    idempotency_key: str | None,
    request_hash: str,
    sweep_id: str | None = None,
) -> tuple[Job, bool]:
    """The queued job for `spec` (a trial of `sweep_id`), and whether it is new: a retry
    with the same Idempotency-Key and body gets the job it made (409 with another body)."""
    # qualified by the project: a key is the project's own (jobs.idempotency_key is unique)
    key = f"{current_project()}:{idempotency_key}" if idempotency_key else None
    if key and (existing := lifecycle.find_by_key(s, key)) is not None:
        if existing.request_hash != request_hash:
            raise Conflict(
                "Idempotency-Key was used with a different request body",
                code="idempotency_key_reused",
            )
        return existing, False
    quotas.check_jobs(s)
    resolved = admit(s, spec)
    job = lifecycle.create_job(
        s, resolved, idempotency_key=key, request_hash=request_hash, sweep_id=sweep_id
    )
    return job, True


def admit(s: Session, spec: JobSpec) -> JobSpec:
    """The resolved spec to store, or InvalidSpec naming every bad field."""
    shape = data_shape(s, spec.data)
    teacher = teacher_facts(s, spec.teacher) if spec.teacher is not None else None
    if spec.student.init is not None and (errors := init_problems(s, spec, shape)):
        raise InvalidSpec(errors)
    return resolve(spec, shape, teacher, holders(s, spec.resources.queue))


def resolve(
    spec: JobSpec,
    shape: DataShape,
    teacher: TeacherFacts | None,
    where: Sequence[Holder] = (),
) -> JobSpec:
    """`spec` on data of `shape` with this teacher, checked and resolved; InvalidSpec naming
    every bad field when it cannot run on any of `where` (default: the configured cap)."""
    errors = spec_problems(spec, shape) + input_size_problems(spec, shape, teacher)
    errors += recipe_problems(spec, teacher)
    if teacher is not None:
        errors += spec.method.teacher_problems(spec.facts(), teacher) or teacher_fit(teacher, shape)
    if not errors:  # sized once the models and the data are known to fit each other
        errors = memory_problems(spec, shape, teacher, where or [configured(spec)])
    if not errors:
        errors = node_problems(spec, shape, teacher, where)
    if errors:
        raise InvalidSpec(errors)
    return spec.resolved(shape, teacher)


def data_shape(s: Session, data: DataSpec) -> DataShape:
    if data.upload is None:
        return data.builtin_shape()
    # FOR SHARE: a DELETE of the dataset waits for this job's row, then sees it
    row = s.get(Dataset, data.upload, with_for_update={"read": True})
    if row is None:
        raise InvalidSpec([FieldError("data.upload", f"no dataset {data.upload!r}")])
    if why := datasets.not_ready(row):
        raise InvalidSpec([FieldError("data.upload", why)])
    assert row.num_classes is not None and row.in_channels is not None  # ready: known
    return data.shape(row.num_classes, row.in_channels, row.input_size)


def teacher_facts(s: Session, ref: TeacherRef) -> TeacherFacts:
    """What a teacher is, or InvalidSpec when it cannot teach anything."""
    if ref.model is not None:
        return _model_facts(s, ref.model)
    job_id = ref.job or ""
    job = s.get(Job, job_id)
    if job is None:
        raise InvalidSpec([FieldError("teacher.job", f"no job {job_id!r}")])
    if job.status != "succeeded":
        why = f"job {job.id!r} is {job.status}, a teacher must have succeeded"
        raise InvalidSpec([FieldError("teacher.job", why)])
    arch, num_classes, in_channels = models.job_student(job)
    return TeacherFacts(
        field="teacher.job",
        ident=job.id,
        arch=arch,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=None,
        route=list(artifacts.route_checkpoints(s, job.id)),
        lr_drops=JobSpec.model_validate(job.spec).train.schedule.lr_drops(),
    )


def _model_facts(s: Session, model_id: str) -> TeacherFacts:
    # FOR SHARE: a DELETE of the model waits for this job's row, then sees it
    model = s.get(RegisteredModel, model_id, with_for_update={"read": True})
    if model is None:
        raise InvalidSpec([FieldError("teacher.model", f"no model {model_id!r}")])
    if why := models.not_ready(model):
        raise InvalidSpec([FieldError("teacher.model", why)])
    return TeacherFacts(
        field="teacher.model",
        ident=model.id,
        arch=model.arch,
        num_classes=model.num_classes,
        in_channels=model.in_channels,
        input_size=model.input_size,
        route=None,
        lr_drops=[],
        source_job_id=model.source_job_id,
    )


def teacher_fit(teacher: TeacherFacts, shape: DataShape) -> list[FieldError]:
    """Whether the teacher takes this data's images and predicts its classes."""
    if teacher.input_size not in (None, shape.size):
        size = teacher.input_size
        why = f"takes {size}x{size} inputs, this data is {shape.size}x{shape.size}"
        return [FieldError(teacher.field, f"model {teacher.ident!r} {why}")]
    if (teacher.num_classes, teacher.in_channels) != (shape.num_classes, shape.channels):
        why = (
            f"teacher was trained for {teacher.num_classes} classes / {teacher.in_channels} "
            f"channels, this data has {shape.num_classes} / {shape.channels}"
        )
        return [FieldError(teacher.field, why)]
    return []


def init_problems(s: Session, spec: JobSpec, shape: DataShape) -> list[FieldError]:
    """Whether the student can start from the weights `student.init` names: the same
    architecture and input channels (a classifier for other classes is replaced)."""
    init, arch = spec.student.init, spec.student.arch
    assert init is not None
    if init.pretrained:
        if has_pretrained(arch):
            return []
        never = "pretrained weights come from timm: use a timm/<name> architecture"
        none = f"timm has no pretrained weights for {arch}"
        return [FieldError("student.init.pretrained", none if arch.startswith(TIMM) else never)]
    if init.model is not None:
        # FOR SHARE: a DELETE of the model waits for this job's row, then sees it
        row = s.get(RegisteredModel, init.model, with_for_update={"read": True})
        if row is None:
            return [FieldError("student.init.model", f"no model {init.model!r}")]
        if busy := models.not_ready(row):
            return [FieldError("student.init.model", busy)]
        return _start_fit("student.init.model", row.arch, row.in_channels, arch, shape)
    job = s.get(Job, init.job or "")
    if job is None or job.status != "succeeded":
        why = f"job {init.job!r} is {job.status}" if job else f"no job {init.job!r}"
        return [FieldError("student.init.job", f"{why}; a start must be a succeeded job")]
    start_arch, _, in_channels = models.job_student(job)
    return _start_fit("student.init.job", start_arch, in_channels, arch, shape)


def _start_fit(
    field: str, start_arch: str, in_channels: int, arch: str, shape: DataShape
) -> list[FieldError]:
    if start_arch != arch:
        return [FieldError(field, f"the weights are a {start_arch}, the student a {arch}")]
    if in_channels != shape.channels:
        why = f"the weights take {in_channels} channels, this data has {shape.channels}"
        return [FieldError(field, why)]
    return []
