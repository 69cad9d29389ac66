"""A job's artifacts: files made in the job's scratch folder, put to the store
(service/store.py, under jobs/<id>/), then recorded as rows with their size and sha256. A
row exists only for an object written whole; a download and a resume trust the row."""

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Artifact
from service.errors import NotFound
from service.files import sha256_file
from service.store import get_store, job_key, job_prefix, scratch_dir

ROUTE = "route"  # a supervised run's weights-only checkpoints along its route (for RCO)
CHECKPOINT = "checkpoint"  # resume checkpoints: the newest and the one before it
CHECKPOINT_KINDS = (CHECKPOINT, ROUTE)


@dataclass(frozen=True)
class Put:
    """An object written to the store, not yet recorded."""

    name: str  # under the job's prefix
    size: int
    sha256: str


def job_dir(job_id: str) -> Path:
    """The job's local folder, where its files are made before they are put (for the default
    folder store: its own folder in the store)."""
    path = scratch_dir(job_prefix(job_id))
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_name(job_id: str, path: Path) -> str:
    """A file's name in the job's folder: its artifact's name, its key under the job's prefix."""
    return path.resolve().relative_to(job_dir(job_id)).as_posix()


def put(job_id: str, path: Path) -> Put:
    """Write a file of the job's folder to the store, whole (StoreError: not at all)."""
    name = job_name(job_id, path)
    sha256 = sha256_file(path)
    meta = get_store().put_file(job_key(job_id, name), path)
    return Put(name, meta.size, sha256)


def record(s: Session, job_id: str, put: Put, *, kind: str, epoch: int | None = None) -> Artifact:
    """Record (or refresh) the row of an object written to the store."""
    art = find(s, job_id, put.name)
    if art is None:
        art = Artifact(job_id=job_id, name=put.name)
        s.add(art)
    art.kind, art.epoch, art.path = kind, epoch, put.name
    art.size, art.sha256 = put.size, put.sha256
    s.flush()
    return art


def register(
    s: Session, job_id: str, path: Path, *, kind: str, epoch: int | None = None
) -> Artifact:
    """Put a file of the job's folder and record it."""
    return record(s, job_id, put(job_id, path), kind=kind, epoch=epoch)


def key(art: Artifact) -> str:
    return job_key(art.job_id, art.path)


def list_artifacts(s: Session, job_id: str, kinds: tuple[str, ...] | None = None) -> list[Artifact]:
    q = select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
    if kinds:
        q = q.where(Artifact.kind.in_(kinds))
    return list(s.scalars(q))


def route_checkpoints(s: Session, job_id: str) -> dict[int, Artifact]:
    """{epoch: artifact} of a job's route checkpoints, ascending by epoch."""
    arts = sorted(list_artifacts(s, job_id, (ROUTE,)), key=lambda a: a.epoch or 0)
    return {a.epoch or 0: a for a in arts}


def find(s: Session, job_id: str, name: str) -> Artifact | None:
    return s.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def get_artifact(s: Session, job_id: str, name: str) -> Artifact:
    art = find(s, job_id, name)
    if art is None:
        raise NotFound("artifact", name)
    return art
