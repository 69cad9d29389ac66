"""A job's one link to the database and the artifact store while a worker runs it.

The runner claims the job through it; it reads what the job needs (JobInputs), records
progress, events, metrics, checkpoints and outputs, and ends the job. Every write first
extends this worker's lease in the same transaction (a conditional UPDATE): a worker that
lost the job to another attempt writes nothing and gets LeaseLost. A background thread
extends the lease every few seconds whatever the engine is doing, and reads the cancel flag;
the engine only checks a boolean each step."""

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy.orm import Session

from service import dispatch, logs
from service.config import Settings
from service.db import store
from service.db.sessions import session_scope
from service.db.tables import Dataset
from service.errors import JobError
from service.ingest import datasets, models, shards
from service.jobs import lifecycle
from service.spec.job import JobSpec
from service.store import StoreError, cached
from worker.task.inputs import JobInputs, StartSource, TeacherSource
from worker.task.tracker import Tracker

log = logging.getLogger(__name__)

# the engine's checkpoint kinds -> artifact kinds
ARTIFACT_KINDS = {"resume": "checkpoint", "route": store.ROUTE}


class LeaseLost(Exception):
    """The watchdog gave this job to another attempt: stop and write nothing."""


class JobContext:
    def __init__(self, job_id: str, owner: str, spec: JobSpec, settings: Settings) -> None:
        self.job_id, self.owner, self.spec, self.settings = job_id, owner, spec, settings
        self.deadline = time.monotonic() + spec.resources.max_runtime_s
        self.tracker = Tracker(spec.train.epochs, spec.train.batch_size)
        self.status: str | None = "running"
        self._stop = threading.Event()
        self.preempt = threading.Event()  # set by rank 0's SIGTERM: save and give the job up
        self._thread = threading.Thread(
            target=self._beat_forever, daemon=True, name=f"heartbeat-{job_id}"
        )

    @classmethod
    def claim(cls, queue: str, settings: Settings) -> "JobContext | None":
        """The queue's oldest queued job, now this worker's; None when nothing is queued."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        with session_scope() as s:
            job = lifecycle.claim_next(s, queue, owner, settings.lease_s)
            if job is None:
                return None
            return cls(job.id, owner, JobSpec.model_validate(job.spec), settings)

    def inputs(self) -> JobInputs:
        """The files and facts the job reads: its dataset, its teacher and that one's route."""
        upload, ref = self.spec.data.upload, self.spec.teacher
        route: dict[int, Path] = {}
        drops: list[int] = []
        teacher = None
        with session_scope() as s:
            if ref is not None and ref.model is not None:
                teacher = _model_source(s, ref.model)
            elif ref is not None and ref.job is not None:
                teacher, route, drops = _job_source(s, ref.job)
            start = _start_source(s, self.spec)
            dataset = s.get(Dataset, upload) if upload else None
            dataset_path = datasets.canonical_path(dataset) if dataset else None
        return JobInputs(
            job_dir=store.job_dir(self.job_id),
            dataset_path=dataset_path,
            dataset_shards=_fetched_shards(dataset_path),
            teacher=teacher,
            route=route,
            teacher_lr_drops=drops,
            start=start,
        )

    # the lease
    def __enter__(self) -> "JobContext":
        self._thread.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType]) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.progress:  # where training stopped, not where the last beat saw it
            with contextlib.suppress(Exception):
                self.beat()

    @property
    def progress(self) -> dict[str, Any]:
        """What the next write saves; empty in a context that trains nothing (the task's)."""
        return self.tracker.snapshot()

    def resume_progress(self) -> None:
        """Rank 0 starts from the progress an earlier attempt of the job saved."""
        with session_scope() as s:
            self.tracker.resume(lifecycle.get_job(s, self.job_id).progress)

    def set_phase(self, name: str) -> None:
        self.tracker.phase(name)

    def _beat_forever(self) -> None:
        logs.JOB_ID.set(self.job_id)  # this thread's own context
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.beat()
            except LeaseLost:
                return
            except Exception:  # a DB blip: the lease has slack, try again next beat
                log.exception("heartbeat for job %s failed", self.job_id)

    def beat(self) -> None:
        with self._owned():
            pass

    @contextlib.contextmanager
    def _owned(self) -> Iterator[Session]:
        """A transaction that starts by extending this worker's lease (and saving progress);
        LeaseLost, and nothing written, when the job is no longer this worker's."""
        # only the process that trains has progress to save (the task's beat leaves it)
        progress = self.progress or None
        with session_scope() as s:
            status = lifecycle.heartbeat(
                s, self.job_id, self.owner, self.settings.lease_s, progress
            )
            self.status = status
            if status is None:
                raise LeaseLost(self.job_id)
            yield s

    # engine callbacks (worker.engine.loop.Callbacks)
    def on_step(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        self.tracker.step(epoch, step, steps_per_epoch)

    def should_stop(self) -> bool:
        if self.status is None:
            raise LeaseLost(self.job_id)
        return self.status == "cancelling" or time.monotonic() > self.deadline

    def preempted(self) -> bool:
        return self.preempt.is_set()

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.tracker.epoch_end(epoch)
        with self._owned() as s:
            lifecycle.record_epoch(s, self.job_id, self.owner, {"epoch": epoch, **metrics})

    def on_checkpoint(self, path: Path, epoch: int, kind: str, step: int | None) -> None:
        where = f"at the end of epoch {epoch}" if step is None else f"at epoch {epoch}, step {step}"
        with self._owned() as s:
            art = store.register(s, self.job_id, path, kind=ARTIFACT_KINDS[kind], epoch=epoch)
            lifecycle.add_event(
                s,
                self.job_id,
                "checkpoint",
                f"{kind} checkpoint {where}",
                name=art.name,
                kind=kind,
                epoch=epoch,
                step=step,
                sha256=art.sha256,
            )

    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        if "phase" in data:
            self.tracker.phase(data["phase"])
        self.event(type_, message, **data)

    # the job's record
    def event(self, type_: str, message: str, **data: Any) -> None:
        with self._owned() as s:
            lifecycle.add_event(s, self.job_id, type_, message, **data)

    def register(self, files: dict[str, str]) -> None:
        """Record files written under the job's folder: {name: artifact kind}."""
        root = store.job_dir(self.job_id)
        with self._owned() as s:
            for name, kind in files.items():
                store.register(s, self.job_id, root / name, kind=kind)

    def stop_error(self) -> JobError | None:
        """Why the loop stopped: None for a cancel, an error past max_runtime_s."""
        if self.status == "cancelling":
            return None
        return JobError("max_runtime_exceeded", "job ran past resources.max_runtime_s")

    def release(self) -> str:
        """Give the job back to its queue (saved where it stopped) and send its message."""
        with session_scope() as s:
            status = lifecycle.release(s, self.job_id, self.owner, progress=self._final(s))
            if status == "queued":
                dispatch.send_after_commit(s, self.job_id, self.spec.resources.queue)
        return status or "lost"

    def finish(self, *, result: dict[str, Any] | None = None, error: JobError | None = None) -> str:
        """The job's end: its final status, or "lost" when it is no longer this worker's."""
        with session_scope() as s:
            progress = self._final(s)
            status = lifecycle.finish(
                s, self.job_id, self.owner, result=result, error=error, progress=progress
            )
        return status or "lost"

    def _final(self, s: Session) -> dict[str, Any]:
        """The progress the job ends with: this context's, or (the task's, which trains
        nothing) the one rank 0 saved before it exited."""
        saved = self.progress or lifecycle.get_job(s, self.job_id).progress
        return {"epochs": self.spec.train.epochs, **saved}


def _fetched_shards(index: Path | None) -> dict[str, str]:
    """{uri: local copy} of the shards a dataset registered by URI reads where they lie
    (none for others), fetched into this worker's cache and verified."""
    if index is None or index.name != shards.INDEX:
        return {}
    try:
        return {uri: str(cached(uri, sha)) for uri, sha in shards.remote(index).items()}
    except (StoreError, FileNotFoundError) as exc:
        raise JobError("store_unavailable", f"a shard could not be read: {exc}", True) from exc


def _model_source(s: Session, model_id: str) -> TeacherSource:
    row = models.get_model(s, model_id)
    assert row.sha256 is not None  # a ready model's bytes were read
    return TeacherSource(
        arch=row.arch,
        num_classes=row.num_classes,
        in_channels=row.in_channels,
        path=models.weights_path(row),
        sha256=row.sha256,
        job_id=row.source_job_id or "",
        model_id=row.id,
    )


def _start_source(s: Session, spec: JobSpec) -> StartSource | None:
    """The file student.init names (None for random or pretrained weights)."""
    init = spec.student.init
    if init is None or init.pretrained:
        return None
    if init.model is not None:
        row = models.get_model(s, init.model)
        assert row.sha256 is not None  # a ready model's bytes were read
        return StartSource(models.weights_path(row), row.sha256, model_id=row.id)
    art, path = store.get_artifact(s, init.job or "", "student.safetensors")
    return StartSource(path, art.sha256, job_id=init.job)


def _job_source(s: Session, job_id: str) -> tuple[TeacherSource, dict[int, Path], list[int]]:
    """A succeeded job's student, its route checkpoints and the epochs its LR dropped after."""
    job = lifecycle.get_job(s, job_id)
    arch, num_classes, in_channels = models.job_student(job)
    art, path = store.get_artifact(s, job_id, "student.safetensors")
    source = TeacherSource(arch, num_classes, in_channels, path, art.sha256, job_id)
    drops = JobSpec.model_validate(job.spec).train.schedule.lr_drops()
    return source, store.route_checkpoints(s, job_id), drops
