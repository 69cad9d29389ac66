"""Job routes: parse, call service.jobs.lifecycle, return."""

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import dispatch
from service.api.deps import AUTHENTICATED, DB, JSON_BODY, KEYED, QUOTA, Cursor, Limit
from service.api.schemas import (
    BestEpoch,
    EventList,
    EventOut,
    JobList,
    JobOut,
    Responses,
    problems,
)
from service.db.sessions import session_scope
from service.db.tables import STATUSES, TERMINAL, Job
from service.jobs import admission, lifecycle, queries
from service.spec.job import JobSpec
from service.spec.limits import Ident, Int64, Name

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=AUTHENTICATED, responses=KEYED)
Status = Literal[STATUSES]  # type: ignore[valid-type]


REPLAYED: Responses = {
    200: {
        "model": JobOut,
        "description": "the job an earlier request with this Idempotency-Key made",
    }
}


def _out(s: Session, jobs: list[Job]) -> list[JobOut]:
    """The jobs as the API shows them, each with its best epoch (from its events)."""
    best = queries.best_epochs(s, [j.id for j in jobs])
    return [
        JobOut.model_validate(j).model_copy(
            update={"best": BestEpoch.model_validate(best[j.id]) if j.id in best else None}
        )
        for j in jobs
    ]


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses=REPLAYED | problems(400, 409, 413, 422) | QUOTA | JSON_BODY,
)
def create_job(
    s: DB,
    spec: JobSpec,
    response: Response,
    idempotency_key: Annotated[Name | None, Header(max_length=200)] = None,
) -> JobOut:
    digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    try:
        job, created = admission.submit(
            s, spec, idempotency_key=idempotency_key, request_hash=digest
        )
    except IntegrityError:
        # a concurrent retry with the same Idempotency-Key committed first: answer with it
        s.rollback()
        job, created = admission.submit(
            s, spec, idempotency_key=idempotency_key, request_hash=digest
        )
    if created:
        dispatch.send_after_commit(s, job.id, job.queue)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.model_validate(job)


@router.get("", response_model=JobList, responses=problems(422))
def list_jobs(
    s: DB,
    status: Status | None = None,
    sweep: Annotated[Ident | None, Query(description="a sweep's trials only")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JobList:
    page, next_cursor = queries.list_jobs(s, status=status, sweep=sweep, limit=limit, cursor=cursor)
    return JobList(data=_out(s, page), next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=problems(404, 422))
def get_job(s: DB, job_id: Ident) -> JobOut:
    return _out(s, [lifecycle.get_job(s, job_id)])[0]


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problems(404, 409, 422))
def cancel_job(s: DB, job_id: Ident) -> JobOut:
    return _out(s, [lifecycle.cancel(s, job_id)])[0]


def _events_page(s: Session, job_id: str, after: int, limit: int) -> tuple[list[EventOut], str]:
    # status first: a job finishing between the two reads still shows its last events
    status = lifecycle.get_job(s, job_id).status
    events = queries.list_events(s, job_id, after=after, limit=limit)
    return [EventOut.model_validate(e) for e in events], status


def _poll(job_id: str, after: int) -> tuple[list[EventOut], str]:
    """One page for a live stream: a stream outlives its request's unit of work."""
    with session_scope() as s:
        return _events_page(s, job_id, after, 500)


async def _sse(job_id: str, after: int) -> AsyncIterator[str]:
    while True:
        events, status = await asyncio.to_thread(_poll, job_id, after)
        for e in events:
            after = e.id
            yield f"id: {e.id}\nevent: {e.type}\ndata: {e.model_dump_json()}\n\n"
        if not events and status in TERMINAL:
            return
        if not events:
            yield ": keep-alive\n\n"
            await asyncio.sleep(1.0)


STREAM: Responses = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}


@router.get("/{job_id}/events", response_model=EventList, responses=STREAM | problems(404, 422))
def list_events(
    s: DB,
    job_id: Ident,
    request: Request,
    after: Annotated[Int64, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    last_event_id: Annotated[
        Int64 | None, Header(ge=0, description="a stream resumes after it, instead of after")
    ] = None,
) -> Response | EventList:
    """JSON page after a cursor; with Accept: text/event-stream, a live SSE stream."""
    events, _ = _events_page(s, job_id, after, limit)
    if "text/event-stream" in request.headers.get("accept", ""):
        start = after if last_event_id is None else last_event_id
        return StreamingResponse(_sse(job_id, start), media_type="text/event-stream")
    return EventList(data=events, next_after=events[-1].id if events else after)
