"""Artifact store: files under the data dir, each recorded with its size and sha256."""

from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.db.tables import Artifact
from service.errors import NotFound
from service.files import CHUNK, safe_child, sha256_file

ROUTE = "route"  # a supervised run's weights-only checkpoints along its route (for RCO)
CHECKPOINT_KINDS = ("checkpoint", ROUTE)  # resume checkpoints, and route ones


def job_dir(job_id: str) -> Path:
    path = get_settings().artifacts_dir.resolve() / "jobs" / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def register(
    s: Session, job_id: str, path: Path, *, kind: str, epoch: int | None = None
) -> Artifact:
    """Record (or refresh) a file already written under the job's directory."""
    root = job_dir(job_id)
    name = path.resolve().relative_to(root).as_posix()
    art = s.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    if art is None:
        art = Artifact(job_id=job_id, name=name)
        s.add(art)
    art.kind, art.epoch, art.path = kind, epoch, name
    art.size, art.sha256 = path.stat().st_size, sha256_file(path)
    s.flush()
    return art


def list_artifacts(s: Session, job_id: str, kinds: tuple[str, ...] | None = None) -> list[Artifact]:
    q = select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
    if kinds:
        q = q.where(Artifact.kind.in_(kinds))
    return list(s.scalars(q))


def route_checkpoints(s: Session, job_id: str) -> dict[int, Path]:
    """{epoch: path} of a job's route checkpoints, ascending by epoch."""
    arts = sorted(list_artifacts(s, job_id, (ROUTE,)), key=lambda a: a.epoch or 0)
    return {a.epoch or 0: safe_child(job_dir(job_id), a.path) for a in arts}


def get_artifact(s: Session, job_id: str, name: str) -> tuple[Artifact, Path]:
    art = s.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    if art is None:
        raise NotFound("artifact", name)
    path = safe_child(job_dir(job_id), art.path)
    if not path.is_file():
        raise NotFound("artifact file", name)
    return art, path


def read_range(path: Path, start: int, end: int) -> Iterator[bytes]:
    """Bytes start..end inclusive, in chunks."""
    with path.open("rb") as f:
        f.seek(start)
        left = end - start + 1
        while left > 0 and (chunk := f.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk
