"""Artifact routes: list a job's files and download them (Range, ETag, digest)."""

import base64
import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from service.api.deps import AUTHENTICATED, DB, KEYED
from service.api.schemas import ArtifactList, ArtifactOut, Responses, problems
from service.db import store
from service.errors import DistilleryError
from service.jobs import lifecycle
from service.spec.limits import Ident, Name

router = APIRouter(
    prefix="/v1/jobs/{job_id}", tags=["artifacts"], dependencies=AUTHENTICATED, responses=KEYED
)
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _list(s: Session, job_id: str, kinds: tuple[str, ...] | None) -> ArtifactList:
    lifecycle.get_job(s, job_id)
    arts = store.list_artifacts(s, job_id, kinds)
    return ArtifactList(data=[ArtifactOut.model_validate(a) for a in arts])


@router.get("/artifacts", response_model=ArtifactList, responses=problems(404, 422))
def list_artifacts(s: DB, job_id: Ident) -> ArtifactList:
    return _list(s, job_id, None)


@router.get("/checkpoints", response_model=ArtifactList, responses=problems(404, 422))
def list_checkpoints(s: DB, job_id: Ident) -> ArtifactList:
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


BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
DOWNLOAD: Responses = {
    200: {"description": "the file", "content": BYTES},
    206: {"description": "the range asked for", "content": BYTES},
    304: {"description": "If-None-Match names the file's ETag"},
}


@router.get(
    "/artifacts/{name:path}",
    response_class=Response,
    responses=DOWNLOAD | problems(404, 416, 422),
)
def download(
    s: DB,
    job_id: Ident,
    name: Annotated[Name, Path(max_length=255)],
    range_: Annotated[str | None, Header(alias="range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    lifecycle.get_job(s, job_id)  # the caller's, or a 404
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
