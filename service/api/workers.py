"""The fleet: every registered worker, what it holds and whether it is live
(service/jobs/fleet.py)."""

from fastapi import APIRouter

from service.api.deps import AUTHENTICATED, DB, KEYED
from service.api.schemas import WorkerList, WorkerOut
from service.db.tables import Worker
from service.jobs import fleet

router = APIRouter(
    prefix="/v1/workers", tags=["workers"], dependencies=AUTHENTICATED, responses=KEYED
)


@router.get("", response_model=WorkerList)
def list_workers(s: DB) -> WorkerList:
    """Every worker that has registered, by name: what admission sizes jobs against."""
    return WorkerList(data=[worker_out(w) for w in fleet.workers(s)])


def worker_out(w: Worker) -> WorkerOut:
    stored = {name: getattr(w, name) for name in WorkerOut.model_fields if hasattr(w, name)}
    return WorkerOut.model_validate(stored | {"live": fleet.is_live(w)})
