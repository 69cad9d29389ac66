"""Artifact routes: list a job's files and download them (Range, ETag, digest)."""

import base64
import re
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from service import jobs, store
from service.api.deps import DB
from service.api.schemas import ArtifactList, ArtifactOut
from service.errors import DistilleryError

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["artifacts"])
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _list(s: Session, job_id: str, kinds: tuple[str, ...] | None) -> ArtifactList:
    jobs.get_job(s, job_id)
    arts = store.list_artifacts(s, job_id, kinds)
    return ArtifactList(data=[ArtifactOut.model_validate(a) for a in arts])


@router.get("/artifacts", response_model=ArtifactList)
def list_artifacts(s: DB, job_id: str) -> ArtifactList:
    return _list(s, job_id, None)


@router.get("/checkpoints", response_model=ArtifactList)
def list_checkpoints(s: DB, job_id: str) -> ArtifactList:
    return _list(s, job_id, store.CHECKPOINT_KINDS)


def parse_range(header: str, size: int) -> tuple[int, int]:
    """One byte range, inclusive; raises 416 when it cannot be served."""
    m = RANGE.match(header.strip())
    if not m or m.groups() == ("", ""):
        raise Unsatisfiable(size)
    first, last = m.groups()
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
    if start > end or start >= size:
        raise Unsatisfiable(size)
    return start, end


class Unsatisfiable(DistilleryError):
    def __init__(self, size: int) -> None:
        super().__init__(
            f"range not satisfiable for {size} bytes",
            status=416,
            code="range_not_satisfiable",
            title="Range not satisfiable",
            headers={"Content-Range": f"bytes */{size}"},
        )


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: W/"x" matches "x"; * matches anything."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


@router.get("/artifacts/{name:path}")
def download(
    s: DB,
    job_id: str,
    name: str,
    range_: Annotated[str | None, Header(alias="range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    art, path = store.get_artifact(s, job_id, name)
    sha, size = art.sha256, art.size
    etag = f'"{sha}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(sha)).decode()}:",
        "X-Checksum-Sha256": sha,
        "Content-Disposition": f'attachment; filename="{path.name}"',
    }
    if if_none_match and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    start, end, status = 0, size - 1, 200
    if range_:
        start, end = parse_range(range_, size)
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(
        store.read_range(path, start, end),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )
