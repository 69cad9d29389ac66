"""Artifact routes: list a job's files and download them (Range, ETag, digest)."""

import base64
import re
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from service.api.deps import AUTHENTICATED, DB, KEYED, STORE
from service.api.schemas import ArtifactList, ArtifactOut, Responses, problems
from service.db import artifacts
from service.errors import DistilleryError, NotFound
from service.jobs import lifecycle
from service.spec.limits import Ident, Name
from service.store import get_store

router = APIRouter(
    prefix="/v1/jobs/{job_id}", tags=["artifacts"], dependencies=AUTHENTICATED, responses=KEYED
)
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _list(s: Session, job_id: str, kinds: tuple[str, ...] | None) -> ArtifactList:
    lifecycle.get_job(s, job_id)
    arts = artifacts.list_artifacts(s, job_id, kinds)
    return ArtifactList(data=[ArtifactOut.model_validate(a) for a in arts])


@router.get("/artifacts", response_model=ArtifactList, responses=problems(404, 422))
def list_artifacts(s: DB, job_id: Ident) -> ArtifactList:
    return _list(s, job_id, None)


@router.get("/checkpoints", response_model=ArtifactList, responses=problems(404, 422))
def list_checkpoints(s: DB, job_id: Ident) -> ArtifactList:
    return _list(s, job_id, artifacts.CHECKPOINT_KINDS)


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
    responses=DOWNLOAD | problems(404, 416, 422) | STORE,
)
def download(
    s: DB,
    job_id: Ident,
    name: Annotated[Name, Path(max_length=255)],
    range_: Annotated[str | None, Header(alias="range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The file's bytes from the store, as its row records them (ETag: its sha256)."""
    lifecycle.get_job(s, job_id)  # the caller's, or a 404
    art = artifacts.get_artifact(s, job_id, name)
    sha, size = art.sha256, art.size
    etag = f'"{sha}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(sha)).decode()}:",
        "X-Checksum-Sha256": sha,
        "Content-Disposition": f'attachment; filename="{PurePosixPath(art.name).name}"',
    }
    if if_none_match and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    start, end, status = 0, size - 1, 200
    if range_:
        start, end = parse_range(range_, size)
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    try:  # asked for before the response starts: a missing object is a 404, the store down a 503
        body = get_store().open_range(artifacts.key(art), start, end + 1) if size else iter(())
    except FileNotFoundError as exc:
        raise NotFound("artifact file", name) from exc
    return StreamingResponse(
        body,
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )
