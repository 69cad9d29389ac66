"""A job's one link to the database and the store while a worker runs it.

The runner claims the job through it; it reads what the job needs (JobInputs), records
progress, events, metrics, checkpoints and outputs, and ends the job. Every write first
extends this worker's lease in the same transaction (a conditional UPDATE): a worker that
lost the job to another attempt writes nothing and gets LeaseLost. A background thread
extends the lease every few seconds whatever the engine is doing, and reads the cancel flag;
the engine only checks a boolean each step."""

import contextlib
import json
import logging
import os
import shutil
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
from service.db import artifacts
from service.db.sessions import session_scope
from service.db.tables import Dataset
from service.errors import JobError
from service.ingest import datasets, models, shards
from service.jobs import gangs, lifecycle, queries
from service.jobs.gangs import Seat
from service.spec.job import JobSpec
from service.store import Corrupt, StoreError, get_store, job_key
from service.sweeps import trials
from worker.engine.resume_files import PREVIOUS, RESUME, record_digest
from worker.task.cache import Cache, CacheTooSmall
from worker.task.inputs import JobInputs, StartSource, TeacherSource
from worker.task.tracker import Tracker

log = logging.getLogger(__name__)

# the engine's checkpoint kinds -> artifact kinds
ARTIFACT_KINDS = {"resume": artifacts.CHECKPOINT, "route": artifacts.ROUTE}
SCRATCH_KEPT = "ranks"  # what a job's scratch folder keeps once the job has ended: the logs


class LeaseLost(Exception):
    """The watchdog gave this job to another attempt: stop and write nothing."""


def new_owner() -> str:
    """Who holds a claim: this host and process, and a fresh token for each claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobContext:
    def __init__(
        self,
        job_id: str,
        owner: str,
        spec: JobSpec,
        settings: Settings,
        watch_nodes: bool = False,
    ) -> None:
        self.job_id, self.owner, self.spec, self.settings = job_id, owner, spec, settings
        self.deadline = time.monotonic() + spec.resources.max_runtime_s
        self.tracker = Tracker(spec.train.epochs, spec.train.batch_size)
        self.status: str | None = "running"
        # node 0's task of a job across nodes: each beat also reads whether the other nodes
        # are there (lost: their worker stopped renewing its seat) or leaving (shutting down)
        self.watch_nodes = watch_nodes
        self.nodes_lost: list[int] = []
        self.nodes_leaving: list[int] = []
        self._stop = threading.Event()
        self.preempt = threading.Event()  # set by rank 0's SIGTERM: save and give the job up
        self._thread = threading.Thread(
            target=self._beat_forever, daemon=True, name=f"heartbeat-{job_id}"
        )

    @classmethod
    def claim(cls, queue: str, settings: Settings) -> "JobContext | Seat | None":
        """The queue's oldest queued job with room, now this worker's: its context, or a seat
        in the gang of a job across nodes (worker/task/nodes.py waits in it); None when
        nothing is queued."""
        owner = new_owner()
        with session_scope() as s:
            job = lifecycle.claim_next(s, queue, owner, settings.lease_s)
            if job is None or isinstance(job, Seat):
                return job
            return cls(job.id, owner, JobSpec.model_validate(job.spec), settings)

    def inputs(self) -> JobInputs:
        return job_inputs(self.job_id, self.spec)

    def drop_scratch(self) -> None:
        drop_scratch(self.job_id)

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
        with self._owned() as s:
            if self.watch_nodes:
                self.nodes_lost, self.nodes_leaving = gangs.trouble(s, self.job_id)

    def publish(self, address: str) -> None:
        """Node 0 names its attempt's rendezvous (host:port) for the other nodes."""
        with self._owned() as s:
            gangs.publish(s, self.job_id, self.owner, address)

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
        last = epoch == self.spec.train.epochs
        with self._owned() as s:
            lifecycle.record_epoch(s, self.job_id, self.owner, {"epoch": epoch, **metrics})
            if trials.on_epoch(s, self.job_id, epoch, metrics, last):
                self.status = "cancelling"  # its sweep pruned it: stop at the next step

    def on_checkpoint(self, path: Path, epoch: int, kind: str, step: int | None) -> None:
        """Put the checkpoint the engine wrote to the store, then record it. A resume
        checkpoint's predecessor is kept beside it first, in the store as the engine keeps
        it on disk (worker/engine/resume.py): a later attempt, on any host, resumes from the
        newest of the two that matches its row."""
        where = f"at the end of epoch {epoch}" if step is None else f"at epoch {epoch}, step {step}"
        self.beat()  # still this worker's: put nothing over another attempt's objects
        if kind == "resume":
            self._keep_previous(path)
        put = self._put(path)
        with self._owned() as s:
            art = artifacts.record(s, self.job_id, put, kind=ARTIFACT_KINDS[kind], epoch=epoch)
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

    def _keep_previous(self, resume: Path) -> None:
        """The recorded resume checkpoint becomes the previous one: copied in a bucket (the
        engine has moved its own file already), its row's facts under the previous name."""
        name = artifacts.job_name(self.job_id, resume)
        with self._owned() as s:
            old = artifacts.find(s, self.job_id, name)
            if old is None:
                return
            kept = artifacts.Put(str(Path(name).with_name(PREVIOUS)), old.size, old.sha256)
            epoch = old.epoch
        if not get_store().is_folder:
            try:
                get_store().copy(job_key(self.job_id, name), job_key(self.job_id, kept.name))
            except StoreError as exc:
                raise store_unavailable("saving a checkpoint") from exc
        with self._owned() as s:
            artifacts.record(s, self.job_id, kept, kind=artifacts.CHECKPOINT, epoch=epoch)

    def _put(self, path: Path) -> artifacts.Put:
        try:
            return artifacts.put(self.job_id, path)
        except StoreError as exc:
            log.error("job %s: putting %s failed: %s", self.job_id, path.name, exc)
            raise store_unavailable(f"saving {path.name}") from exc

    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        if "phase" in data:
            self.tracker.phase(data["phase"])
        self.event(type_, message, **data)

    # the job's record
    def event(self, type_: str, message: str, **data: Any) -> None:
        with self._owned() as s:
            lifecycle.add_event(s, self.job_id, type_, message, **data)

    def register(self, files: dict[str, str]) -> None:
        """Put files written under the job's folder to the store, then record them all:
        {name: artifact kind}."""
        self.beat()
        root = artifacts.job_dir(self.job_id)
        puts = {name: self._put(root / name) for name in files}
        with self._owned() as s:
            for name, kind in files.items():
                artifacts.record(s, self.job_id, puts[name], kind=kind)

    def scratch_runs(self) -> dict[str, float]:
        """The supervised runs of the same student and data this job's student should beat:
        {job id: final val_acc} (service/jobs/queries.py)."""
        with session_scope() as s:
            return queries.scratch_runs(s, self.job_id)

    def stop_error(self) -> JobError | None:
        """Why the loop stopped: None for a cancel, an error past max_runtime_s."""
        if self.status == "cancelling":
            return None
        return JobError("max_runtime_exceeded", "job ran past resources.max_runtime_s")

    def release(self) -> str:
        """Give the job back to its queue (saved where it stopped) and send its message."""
        with session_scope() as s:
            status = lifecycle.release(s, self.job_id, self.owner, progress=self._final(s))
            self._send_if_queued(s, status)
        return status or "lost"

    def retry(self, why: str) -> str:
        """A node of the job was lost: back to the queue, the attempt counted (failed when
        the job has none left)."""
        error = JobError("node_lost", why, retryable=True)
        with session_scope() as s:
            status = lifecycle.retry(s, self.job_id, self.owner, error, progress=self._final(s))
            self._send_if_queued(s, status)
        return status or "lost"

    def _send_if_queued(self, s: Session, status: str | None) -> None:
        """A requeued job's messages: one per node, to wake its gang."""
        if status == "queued":
            resources = self.spec.resources
            dispatch.send_after_commit(s, self.job_id, resources.queue, resources.nodes)

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


def job_inputs(job_id: str, spec: JobSpec) -> JobInputs:
    """The files and facts a job reads: its dataset, its teacher and that one's route, as
    local files in this host's cache (worker/task/cache.py), and from a bucket its own resume
    checkpoints (every node of a job across nodes reads them on its own host). A store that
    cannot be reached is a retryable JobError; an object that does not match its row, or
    that the cache cannot hold, one that is not."""
    try:
        return _inputs(job_id, spec, Cache.default())
    except Corrupt as exc:
        why = f"a stored input does not match its sha256: {exc}"
        raise JobError("input_corrupt", why) from exc
    except CacheTooSmall as exc:
        why = f"an input is larger than the worker's cache: {exc}"
        raise JobError("cache_too_small", why) from exc
    except StoreError as exc:
        log.error("job %s: reading its inputs from the store failed: %s", job_id, exc)
        raise store_unavailable("reading the job's inputs") from exc


def _inputs(job_id: str, spec: JobSpec, cache: Cache) -> JobInputs:
    upload, ref = spec.data.upload, spec.teacher
    route: dict[int, Path] = {}
    drops: list[int] = []
    teacher = None
    want = Wanted(cache)  # fetched once the rows are read: no transaction waits on them
    with session_scope() as s:
        if ref is not None and ref.model is not None:
            teacher = _model_source(s, ref.model, want)
        elif ref is not None and ref.job is not None:
            teacher, route, drops = _job_source(s, ref.job, want)
        start = _start_source(s, spec, want)
        dataset = s.get(Dataset, upload) if upload else None
        dataset_key = datasets.canonical_key(dataset) if dataset else None
        dataset_sha256 = dataset.sha256 if dataset else None
        checkpoints = artifacts.list_artifacts(s, job_id, (artifacts.CHECKPOINT,))
    want.fetch()
    job_dir = artifacts.job_dir(job_id)
    if not cache.store.is_folder:  # a folder store's are in place, with their digests
        restore_checkpoints(job_dir, checkpoints)
    return JobInputs(
        job_dir=job_dir,
        dataset_path=dataset_file(cache, dataset_key, dataset_sha256),
        dataset_key=None if cache.store.is_folder else dataset_key,
        teacher=teacher,
        route=route,
        teacher_lr_drops=drops,
        start=start,
    )


def drop_scratch(job_id: str) -> None:
    """Once a job (or a node's part of it) has ended: a bucket's copies in its scratch folder
    go (its processes' logs stay). A folder store's job folder is the store: it stays whole."""
    if get_store().is_folder:
        return
    job_dir = artifacts.job_dir(job_id)
    if not job_dir.is_dir():
        return
    for entry in job_dir.iterdir():
        if entry.name != SCRATCH_KEPT:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def store_unavailable(doing: str) -> JobError:
    """The job's error when the store fails it: retryable, and nothing half-written is kept
    (an object is whole or absent, and recorded only once it is whole)."""
    return JobError(
        "store_unavailable",
        f"the object store could not be reached while {doing}; what was recorded before "
        "stands and nothing half-written was kept: run the job again once the store is back",
        retryable=True,
    )


def restore_checkpoints(job_dir: Path, checkpoints: list[Any]) -> None:
    """A job's resume checkpoints copied from the store into its scratch folder, each with
    the sha256 its row recorded beside it: the engine resumes from the newest whose bytes
    match (a truncated or changed one is skipped for the one before it). What the folder
    held is dropped first: the store and its rows are the truth, whichever host ran last."""
    store = get_store()
    for name in (RESUME, PREVIOUS):
        for stale in job_dir.rglob(f"{name}*"):
            stale.unlink(missing_ok=True)
    for art in checkpoints:
        path = job_dir / art.path
        try:
            store.download(artifacts.key(art), path)  # as it is: the engine checks it
        except FileNotFoundError:
            continue
        record_digest(path, art.sha256)


def dataset_file(cache: Cache, key: str | None, sha256: str | None) -> Path | None:
    """The dataset's canonical file (data.npz, or the shards' index.json with its samples'
    table beside it: shards.read opens both); its shards are read as the job trains."""
    if key is None:
        return None
    path = cache.path(key, sha256)
    if path.name == shards.INDEX:
        index = json.loads(path.read_text())
        folder = key.rpartition("/")[0]
        cache.path(f"{folder}/{shards.SAMPLES}", index.get("samples_sha256"))
    return path


class Wanted:
    """The objects a job reads, gathered while their rows are read, fetched into the cache
    after (nothing is copied for a folder store)."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.objects: list[tuple[str, str, int | None]] = []

    def __call__(self, key: str, sha256: str, size: int | None) -> Path:
        """Where the object will be read from."""
        self.objects.append((key, sha256, size))
        return self.cache.file(key)

    def artifact(self, art: Any) -> Path:
        return self(artifacts.key(art), art.sha256, art.size)

    def fetch(self) -> None:
        for key, sha256, size in self.objects:
            self.cache.path(key, sha256, size)


def _model_source(s: Session, model_id: str, want: Wanted) -> TeacherSource:
    row = models.get_model(s, model_id)
    assert row.sha256 is not None  # a ready model's bytes were read
    return TeacherSource(
        arch=row.arch,
        num_classes=row.num_classes,
        in_channels=row.in_channels,
        path=want(models.weights_key(row), row.sha256, row.size),
        sha256=row.sha256,
        job_id=row.source_job_id or "",
        model_id=row.id,
    )


def _start_source(s: Session, spec: JobSpec, want: Wanted) -> StartSource | None:
    """The file student.init names (None for random or pretrained weights)."""
    init = spec.student.init
    if init is None or init.pretrained:
        return None
    if init.model is not None:
        row = models.get_model(s, init.model)
        assert row.sha256 is not None  # a ready model's bytes were read
        path = want(models.weights_key(row), row.sha256, row.size)
        return StartSource(path, row.sha256, model_id=row.id)
    art = artifacts.get_artifact(s, init.job or "", "student.safetensors")
    return StartSource(want.artifact(art), art.sha256, job_id=init.job)


def _job_source(
    s: Session, job_id: str, want: Wanted
) -> tuple[TeacherSource, dict[int, Path], list[int]]:
    """A succeeded job's student, its route checkpoints and the epochs its LR dropped after."""
    job = lifecycle.get_job(s, job_id)
    arch, num_classes, in_channels = models.job_student(job)
    art = artifacts.get_artifact(s, job_id, "student.safetensors")
    source = TeacherSource(arch, num_classes, in_channels, want.artifact(art), art.sha256, job_id)
    drops = JobSpec.model_validate(job.spec).train.schedule.lr_drops()
    route = {e: want.artifact(a) for e, a in artifacts.route_checkpoints(s, job_id).items()}
    return source, route, drops
