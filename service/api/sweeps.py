"""Sweep routes: submit a sweep, list, show (its leaderboard), cancel; service/sweeps/."""

from typing import Literal

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from service.api.deps import AUTHENTICATED, DB, JSON_BODY, KEYED, Cursor, Limit
from service.api.schemas import SweepList, SweepOut, SweepSummary, problems
from service.db.tables import SWEEP_STATUSES, Sweep
from service.spec.limits import Ident
from service.spec.sweep import SweepSpec
from service.sweeps import board, sweeps

router = APIRouter(
    prefix="/v1/sweeps", tags=["sweeps"], dependencies=AUTHENTICATED, responses=KEYED
)
Status = Literal[SWEEP_STATUSES]  # type: ignore[valid-type]


def _out(s: Session, sweep: Sweep) -> SweepOut:
    return SweepOut.model_validate({**_fields(sweep), **board.view(s, sweep)})


def _fields(sweep: Sweep) -> dict[str, object]:
    return {c: getattr(sweep, c) for c in SweepOut.model_fields if hasattr(sweep, c)}


@router.post(
    "", status_code=201, response_model=SweepOut, responses=problems(400, 413, 422) | JSON_BODY
)
def create_sweep(s: DB, spec: SweepSpec, response: Response) -> SweepOut:
    """A search over job specs: each trial is a job of the base spec with the space's values
    set (a value its method does not take left out), pruned on its per-epoch val_acc; then
    the top configurations rerun with each confirm seed. The API's driver runs it."""
    sweep = sweeps.create(s, spec)
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return _out(s, sweep)


@router.get("", response_model=SweepList, responses=problems(422))
def list_sweeps(
    s: DB, status: Status | None = None, limit: Limit = 50, cursor: Cursor = None
) -> SweepList:
    page, next_cursor = sweeps.list_sweeps(s, status=status, limit=limit, cursor=cursor)
    data = [SweepSummary.model_validate(_out(s, sweep).model_dump()) for sweep in page]
    return SweepList(data=data, next_cursor=next_cursor)


@router.get("/{sweep_id}", response_model=SweepOut, responses=problems(404, 422))
def get_sweep(s: DB, sweep_id: Ident) -> SweepOut:
    return _out(s, sweeps.get_sweep(s, sweep_id))


@router.post("/{sweep_id}/cancel", response_model=SweepOut, responses=problems(404, 409, 422))
def cancel_sweep(s: DB, sweep_id: Ident) -> SweepOut:
    """Cancel the sweep and its unfinished jobs; repeating it is safe; 409 once it ended."""
    return _out(s, sweeps.cancel(s, sweep_id))
