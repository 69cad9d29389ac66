"""Models that can teach: safetensors uploads checked against their architecture, and
finished jobs' students registered as models. Each is a row in `models` and one object in
the store, models/<id>/weights.safetensors; a failed upload leaves neither."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.orm import Session

from service import dispatch
from service.config import get_settings
from service.db import artifacts, paging, usage
from service.db.sessions import get_or_404, session_scope
from service.db.tables import Job, RegisteredModel, new_id
from service.db.tenancy import current_project
from service.errors import BadJob, DistilleryError, FieldError, NotFound, PickleRefused
from service.ingest import uploads, weights
from service.spec.job import JobSpec
from service.spec.model_info import FromJob, ModelInfo, Normalisation
from service.spec.names import TIMM
from service.store import get_store, model_key, model_prefix, scratch_dir

WEIGHTS = "weights.safetensors"


class InvalidWeights(DistilleryError):
    def __init__(self, messages: list[str], code: str = "invalid_weights") -> None:
        super().__init__(
            "weights refused: " + "; ".join(messages),
            [FieldError("weights", m) for m in messages],
            status=422,
            code=code,
            title="Invalid weights",
        )


def refuse_pickle(filename: str | None) -> None:
    """Pickle files are refused by name too: nothing is ever unpickled."""
    if filename and filename.lower().endswith(weights.PICKLE_SUFFIXES):
        raise PickleRefused(filename)


def _check(info: ModelInfo, header: weights.Header) -> None:
    """A zoo architecture's weights against its signature; a timm one's are checked by a
    worker after the upload (the API has no torch to build it)."""
    if info.arch.startswith(TIMM):
        return
    problems = weights.signature_problems(header, info.arch, info.num_classes, info.in_channels)
    if problems:
        raise InvalidWeights(problems, code="weights_mismatch")


def weights_key(model: RegisteredModel) -> str:
    """The model's weights in the store."""
    return model.path


async def upload(chunks: AsyncIterator[bytes], info: ModelInfo) -> RegisteredModel:
    """Stream, check and store an uploaded safetensors file, then record it."""
    model_id = new_id("mdl")
    prefix = model_prefix(model_id)
    directory = scratch_dir(prefix)
    try:
        received = await uploads.receive_safetensors(
            chunks, directory / WEIGHTS, lambda header: _check(info, header)
        )
        await asyncio.to_thread(
            get_store().put_file, model_key(model_id, WEIGHTS), directory / WEIGHTS
        )
        model = await asyncio.to_thread(
            _insert, model_id, info, received.sha256, received.size, "upload", None
        )
    except (weights.NotSafetensors, InvalidWeights) as exc:
        await asyncio.shield(asyncio.to_thread(uploads.unstage, prefix, directory))
        await uploads.drain(chunks)  # so the client, still sending, gets to read the 422
        if isinstance(exc, InvalidWeights):
            raise
        raise InvalidWeights([str(exc)]) from exc
    except BaseException:
        await asyncio.shield(asyncio.to_thread(uploads.unstage, prefix, directory))
        raise
    finally:
        await asyncio.shield(asyncio.to_thread(uploads.clear_scratch, directory))
    if model.status == "validating":  # a worker checks it; the row is committed first
        await asyncio.to_thread(dispatch.send_check, model.id, get_settings().check_queue)
    return model


def _insert(
    model_id: str,
    info: ModelInfo,
    sha256: str | None,
    size: int | None,
    source: str,
    source_job_id: str | None,
    uri: str | None = None,
) -> RegisteredModel:
    checked = source == "uri" or (source == "upload" and info.arch.startswith(TIMM))
    model = RegisteredModel(
        id=model_id,
        project_id=current_project(),
        name=info.name or info.arch,
        arch=info.arch,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        input_size=info.input_size,
        normalisation=info.normalisation.model_dump() if info.normalisation else None,
        class_names=info.class_names,
        sha256=sha256,
        size=size,
        path=model_key(model_id, WEIGHTS),
        source=source,
        source_job_id=source_job_id,
        uri=uri,
        # a job's student is the worker's own output; a worker checks an uploaded timm model,
        # and reads a model by URI
        status="validating" if checked else "ready",
    )
    with session_scope() as s:
        s.add(model)
    return model


def register_job(request: FromJob) -> RegisteredModel:
    """A succeeded job's student as a model: its object copied in the store (a hard link in
    a folder store)."""
    with session_scope() as s:
        job = s.get(Job, request.job)
        if job is None or job.status != "succeeded":
            why = f"is {job.status}" if job else "does not exist"
            raise BadJob(
                f"job {request.job!r} {why}; only a succeeded job's student can be registered"
            )
        art = _job_file(s, job.id, "student.safetensors")
        student, card = artifacts.key(art), _model_card(s, job.id)
    info = _job_info(job, card, request.name)
    _check(info, _read_header(student, art.size))
    model_id = new_id("mdl")
    try:
        get_store().copy(student, model_key(model_id, WEIGHTS))
        return _insert(model_id, info, art.sha256, art.size, "job", job.id)
    except BaseException:
        uploads.unstage(model_prefix(model_id), scratch_dir(model_prefix(model_id)))
        raise


def _job_file(s: Session, job_id: str, name: str) -> Any:
    try:
        return artifacts.get_artifact(s, job_id, name)
    except NotFound as exc:
        raise BadJob(f"job {job_id!r} has no {name}") from exc


def _model_card(s: Session, job_id: str) -> dict[str, Any]:
    try:
        art = artifacts.get_artifact(s, job_id, "model.json")
    except NotFound:
        return {}
    return dict(json.loads(get_store().get_bytes(artifacts.key(art))))


def _job_info(job: Job, card: dict[str, Any], name: str) -> ModelInfo:
    """Architecture and shape from the model card when there is one (KDCL's output is its
    best peer, not always spec.student), else from the resolved spec."""
    arch, num_classes, in_channels = job_student(job)
    shape = card.get("input_shape") or []
    norm = card.get("normalisation")
    return ModelInfo(
        name=name or job.name,
        arch=card.get("architecture", arch),
        num_classes=card.get("num_classes", num_classes),
        in_channels=card.get("in_channels", in_channels),
        input_size=shape[1] if len(shape) == 3 and shape[1] == shape[2] else None,
        normalisation=Normalisation.model_validate(norm) if norm else None,
        class_names=card.get("class_names"),
    )


def job_student(job: Job) -> tuple[str, int, int]:
    """(architecture, num_classes, in_channels) of a succeeded job's student: the result
    names the architecture it output (KDCL's best peer), the resolved spec its shape."""
    spec = JobSpec.model_validate(job.spec)
    arch = str((job.result or {}).get("architecture", spec.student.arch))
    return arch, *spec.student_shape()


def _read_header(key: str, size: int) -> weights.Header:
    """The safetensors header of a stored file, read by two ranged requests."""
    store = get_store()
    try:
        length = weights.header_length(store.read_at(key, 0, 8))
        header = weights.parse_header(store.read_at(key, 8, length))
    except weights.NotSafetensors as exc:
        raise InvalidWeights([str(exc)]) from exc
    if header.file_size != size:
        raise InvalidWeights([f"{key.rpartition('/')[2]} is not the size its header says"])
    return header


def get_model(s: Session, model_id: str) -> RegisteredModel:
    return get_or_404(s, RegisteredModel, "model", model_id)


def list_models(
    s: Session, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[RegisteredModel], str | None]:
    """Newest first; the cursor names the last row of the previous page."""
    return paging.newest_first(s, RegisteredModel, limit=limit, cursor=cursor)


def delete_model(s: Session, model_id: str) -> None:
    """Refused (409) while a queued or running job learns from it; the row goes, and its
    object once that is committed."""
    usage.delete_unless_used(
        s,
        RegisteredModel,
        model_id,
        "model",
        (Job.teacher_model_id, Job.init_model_id),
        "is the teacher or the start of",
        "model_in_use",
    )
    uploads.delete_after_commit(s, model_prefix(model_id))


def not_ready(model: RegisteredModel) -> str | None:
    """Why a model cannot be used yet, if it cannot."""
    if model.status == "ready":
        return None
    if model.status == "validating":
        return f"model {model.id!r} is still being checked by a worker; try when it is ready"
    return f"model {model.id!r} is invalid: {'; '.join(model.problems or [])}"


def register_uri(info: ModelInfo, uri: str) -> RegisteredModel:
    """A model whose bytes a worker reads from `uri` (service/ingest/by_uri.py): validating,
    its sha256 and size unknown until then."""
    return _insert(new_id("mdl"), info, None, None, "uri", None, uri)
