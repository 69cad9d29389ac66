"""The worker's one link to the database and the store for a job (worker/task/context.py), against
a real database on both backends: what it reads, and that it writes nothing once the job is
no longer its own."""

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import save_file
from sqlalchemy import func, select, update

from service.config import Settings
from service.db import artifacts
from service.db.sessions import session_scope
from service.db.tables import Artifact, Job, utcnow
from service.errors import JobError
from service.files import sha256_file
from service.jobs import admission, lifecycle, queries
from service.spec.job import JobSpec
from worker.task.context import JobContext, LeaseLost
from worker.task.inputs import JobInputs

SUPERVISED: dict[str, Any] = {
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 6, "schedule": {"name": "multistep", "milestones": [2, 4]}},
}
SETTINGS = Settings(lease_s=60, heartbeat_s=3600)  # no beat unless a test asks


def submit(body: dict[str, Any]) -> str:
    with session_scope() as s:
        job, _ = admission.submit(
            s, JobSpec.model_validate(body), idempotency_key=None, request_hash=""
        )
        return job.id


def claimed(body: dict[str, Any] = SUPERVISED) -> JobContext:
    job_id = submit(body)
    ctx = JobContext.claim("default", SETTINGS)
    assert ctx is not None and ctx.job_id == job_id  # nothing older waits in the queue
    return ctx


def write_file(job_id: str, name: str, data: bytes = b"weights") -> Path:
    path = artifacts.job_dir(job_id) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def succeeded_teacher() -> str:
    """A supervised job that finished with a student and two route checkpoints."""
    ctx = claimed()
    save_file({}, str(write_file(ctx.job_id, "student.safetensors")))
    for epoch in (2, 6):
        route = write_file(ctx.job_id, f"checkpoints/route/epoch_{epoch:04d}.safetensors")
        ctx.on_checkpoint(route, epoch, "route", None)
    ctx.register({"student.safetensors": "student"})
    assert ctx.finish(result={"architecture": "resnet8"}) == "succeeded"
    return ctx.job_id


def lose_the_lease(job_id: str) -> None:
    """The watchdog finds the lease expired and gives the job to another attempt."""
    with session_scope() as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(lease_until=utcnow() - timedelta(seconds=1))
        )
    with session_scope() as s:
        assert [j.id for j in lifecycle.watchdog(s)] == [job_id]


def counts(job_id: str) -> tuple[int, int]:
    with session_scope() as s:
        events = len(queries.list_events(s, job_id, limit=1000))
        arts = s.scalar(select(func.count()).where(Artifact.job_id == job_id))
        return events, arts or 0


def test_claim_gives_the_typed_spec_once(clean_db: Any) -> None:
    job_id = submit(SUPERVISED)
    ctx = JobContext.claim("default", SETTINGS)
    assert ctx is not None and ctx.job_id == job_id and isinstance(ctx.spec, JobSpec)
    assert ctx.spec.student_shape() == (10, 1)  # resolved at admission
    assert JobContext.claim("default", SETTINGS) is None  # nothing else queued


def test_inputs_of_a_job_teacher_name_its_student_route_and_lr_drops(clean_db: Any) -> None:
    teacher = succeeded_teacher()
    body = copy.deepcopy(SUPERVISED) | {"method": {"name": "rco"}, "teacher": {"job": teacher}}
    ctx = claimed(body)
    inputs = ctx.inputs()
    source = inputs.teacher
    assert source is not None and (source.arch, source.job_id) == ("resnet8", teacher)
    assert source.sha256 == sha256_file(source.path) and source.model_id is None
    route = artifacts.job_dir(teacher) / "checkpoints" / "route"
    assert inputs.route == {e: route / f"epoch_{e:04d}.safetensors" for e in (2, 6)}
    assert inputs.teacher_lr_drops == [2, 4] and inputs.job_dir == artifacts.job_dir(ctx.job_id)
    assert (
        JobInputs.from_dict(json.loads(json.dumps(inputs.to_dict()))) == inputs
    )  # what the other ranks read


def test_route_checkpoints_are_artifacts_of_kind_route(clean_db: Any) -> None:
    ctx = claimed()
    resume = write_file(ctx.job_id, "checkpoints/resume.safetensors")
    route = write_file(ctx.job_id, "checkpoints/route/epoch_0002.safetensors")
    ctx.on_checkpoint(resume, 2, "resume", None)
    ctx.on_checkpoint(route, 2, "route", None)
    with session_scope() as s:
        kinds = {a.name: a.kind for a in artifacts.list_artifacts(s, ctx.job_id)}
        routes = artifacts.route_checkpoints(s, ctx.job_id)
        assert {e: artifacts.job_dir(ctx.job_id) / a.path for e, a in routes.items()} == {2: route}
        events = [e.data for e in queries.list_events(s, ctx.job_id) if e.type == "checkpoint"]
    assert kinds == {
        "checkpoints/resume.safetensors": "checkpoint",
        "checkpoints/route/epoch_0002.safetensors": "route",
    }
    assert [e["kind"] for e in events] == ["resume", "route"]


def test_a_checkpoint_event_says_where_in_the_epoch_it_was_saved(clean_db: Any) -> None:
    ctx = claimed()
    resume = write_file(ctx.job_id, "checkpoints/resume.safetensors")
    ctx.on_checkpoint(resume, 2, "resume", 7)  # preempted after 7 steps of epoch 2
    ctx.on_checkpoint(resume, 2, "resume", None)
    with session_scope() as s:
        events = [e for e in queries.list_events(s, ctx.job_id) if e.type == "checkpoint"]
    assert [e.message for e in events] == [
        "resume checkpoint at epoch 2, step 7",
        "resume checkpoint at the end of epoch 2",
    ]
    assert [(e.data["epoch"], e.data["step"]) for e in events] == [(2, 7), (2, None)]


def test_a_worker_that_lost_the_job_writes_nothing(clean_db: Any) -> None:
    ctx = claimed()
    ctx.event("info", "before")
    lose_the_lease(ctx.job_id)
    before = counts(ctx.job_id)
    path = write_file(ctx.job_id, "checkpoints/resume.safetensors")
    for write in (
        lambda: ctx.event("info", "after"),
        lambda: ctx.on_epoch(1, {"val_acc": 0.5}),
        lambda: ctx.on_checkpoint(path, 1, "resume", None),
        lambda: ctx.register({"checkpoints/resume.safetensors": "checkpoint"}),
    ):
        with pytest.raises(LeaseLost):
            write()
    assert counts(ctx.job_id) == before
    with pytest.raises(LeaseLost):
        ctx.should_stop()
    assert ctx.finish(result={}) == "lost"
    with session_scope() as s:
        job = lifecycle.get_job(s, ctx.job_id)
        assert (job.status, job.metrics, job.result) == ("queued", {}, None)


def test_writes_extend_the_lease_and_save_progress(clean_db: Any) -> None:
    ctx = claimed()
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == ctx.job_id).values(lease_until=utcnow()))
    ctx.on_step(1, 3, 10)
    ctx.on_epoch(1, {"val_acc": 0.5})
    with session_scope() as s:
        job = lifecycle.get_job(s, ctx.job_id)
        assert job.lease_until > utcnow() + timedelta(seconds=50)
        assert job.progress == {
            "phase": "train",
            "epoch": 1,
            "epochs": 6,
            "step": 3,
            "steps_per_epoch": 10,
            "eta_s": None,  # one step: no pace yet
        }
        assert job.metrics == {"epoch": 1, "val_acc": 0.5}


def test_a_cancel_is_read_by_the_beat_and_ends_the_job_cancelled(clean_db: Any) -> None:
    ctx = claimed()
    assert not ctx.should_stop()
    with session_scope() as s:
        lifecycle.cancel(s, ctx.job_id)
    ctx.beat()
    assert ctx.should_stop() and ctx.stop_error() is None
    assert ctx.finish(error=ctx.stop_error()) == "cancelled"


def test_past_its_runtime_the_job_stops_with_a_reason(clean_db: Any) -> None:
    ctx = claimed()
    ctx.deadline = 0.0
    assert ctx.should_stop()
    error = ctx.stop_error()
    assert isinstance(error, JobError) and error.code == "max_runtime_exceeded"
    assert ctx.finish(error=error) == "failed"
    with session_scope() as s:
        assert lifecycle.get_job(s, ctx.job_id).error == error.as_dict()


def test_a_beat_without_progress_of_its_own_leaves_the_jobs(clean_db: Any) -> None:
    """The task's context beats too, while rank 0's saves the progress: it must not erase it."""
    trainer = claimed()
    task = JobContext(trainer.job_id, trainer.owner, trainer.spec, SETTINGS)
    trainer.on_step(2, 5, 10)
    trainer.beat()
    task.beat()
    with session_scope() as s:
        saved = lifecycle.get_job(s, trainer.job_id).progress
    assert (saved["epoch"], saved["step"], saved["steps_per_epoch"]) == (2, 5, 10)
