"""Sweeps as the API sees them: made (checked at the door), read, listed and cancelled. A
sweep is refused, and nothing stored, unless each of its fields names a spec field its
trials' methods take and admission accepts its trials: every combination of its choices
with its ranges at their lows and at their highs, each enqueued configuration, the scratch
baseline. Its trials' job specs are made here too (the driver submits them)."""

import json
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db import paging
from service.db.sessions import get_or_404
from service.db.tables import SEARCH, SWEEP_ACTIVE, Job, Sweep, new_id, utcnow
from service.db.tenancy import current_project
from service.errors import Conflict, FieldError, InvalidRequest, InvalidSpec
from service.jobs import admission, lifecycle
from service.spec.fields import field_path
from service.spec.job import JobSpec
from service.spec.sweep import (
    MAX_CHECKED,
    SweepSpec,
    Value,
    base_body,
    combinations,
    corners,
    space_problems,
    trial_body,
)

MAX_ERRORS = 10  # trials a refusal names at most


def create(s: Session, spec: SweepSpec) -> Sweep:
    """A queued sweep of the caller's project; InvalidRequest naming each fault."""
    errors = space_problems(spec)
    if not errors and (count := combinations(spec)) > MAX_CHECKED:
        why = f"{count} combinations of choices; at most {MAX_CHECKED} are checked at submission"
        errors = [FieldError("space", why)]
    errors = errors or trial_problems(s, spec)
    if errors:
        raise InvalidRequest("invalid sweep: " + ", ".join(e.field for e in errors), errors)
    sweep = Sweep(
        id=new_id("swp"),
        project_id=current_project(),
        name=spec.name or spec.base.name or "sweep",
        status="queued",
        phase=SEARCH,
        spec=spec.stored(),
    )
    s.add(sweep)
    s.flush()
    return sweep


def trial_problems(s: Session, spec: SweepSpec) -> list[FieldError]:
    """Admission's faults with the trials checked at the door, each pointed at the space
    field that made it (else at the base) and naming the trial."""
    base = base_body(spec.base)
    runs = [(params, trial_body(base, params)) for params in corners(spec)]
    if spec.baseline:
        runs.append(({}, baseline_body(base, spec.base.train.seed)))
    errors: list[FieldError] = []
    for params, body in runs:
        for e in problems(s, body):
            where = f"space.{e.field}" if e.field in params else f"base.{e.field}"
            errors.append(FieldError(where, f"{e.message} (the trial {json.dumps(params)})"))
        if len(errors) >= MAX_ERRORS:
            break
    return errors[:MAX_ERRORS]


def problems(s: Session, body: dict[str, Any]) -> list[FieldError]:
    """Why admission would refuse a job with this spec; none when it would take it."""
    try:
        admission.admit(s, JobSpec.model_validate(body))
    except ValidationError as exc:
        return [FieldError(field_path(tuple(e["loc"]), e["type"]), e["msg"]) for e in exc.errors()]
    except InvalidSpec as exc:
        return exc.errors
    return []


def baseline_body(base: dict[str, Any], seed: int) -> dict[str, Any]:
    """The student trained alone: supervised, no teacher, the base's data and schedule."""
    return with_seed(trial_body(base, {"method.name": "supervised"}), seed)


def with_seed(body: dict[str, Any], seed: int) -> dict[str, Any]:
    return body | {"train": {**body.get("train", {}), "seed": seed}}


def run_body(
    sweep: Sweep, kind: str, number: int, params: dict[str, Value], seed: int | None
) -> dict[str, Any]:
    """The job spec of one run of the sweep (a search trial keeps the base's seed), named
    after the sweep."""
    base = sweep.spec["base"]
    if kind == "baseline":
        body = baseline_body(base, seed or 0)
    else:
        body = trial_body(base, params)
        body = body if seed is None else with_seed(body, seed)
    return body | {"name": f"{sweep.name}/{kind}-{number}"[:200]}


# -- reads and cancel


def get_sweep(s: Session, sweep_id: str) -> Sweep:
    return get_or_404(s, Sweep, "sweep", sweep_id)


def list_sweeps(
    s: Session, *, status: str | None = None, limit: int = 50, cursor: str | None = None
) -> tuple[list[Sweep], str | None]:
    """Newest first; the cursor names the last sweep of the previous page."""
    where = [Sweep.status == status] if status else []
    return paging.newest_first(s, Sweep, *where, limit=limit, cursor=cursor)


def cancel(s: Session, sweep_id: str) -> Sweep:
    """Queued or running: cancelled, with every unfinished job of it. Again: as it is; a
    sweep that ended otherwise: 409. The driver writes only while the sweep is unfinished
    (service/sweeps/driver.py guard), so no trial starts after this commits."""
    sweep = get_sweep(s, sweep_id)
    stop = update(Sweep).where(Sweep.id == sweep_id, Sweep.status.in_(SWEEP_ACTIVE))
    now = utcnow()
    stopped = s.execute(stop.values(status="cancelled", finished_at=now, updated_at=now))
    if stopped.rowcount:  # type: ignore[attr-defined]
        unfinished = Job.status.in_(("queued", "running"))
        for job_id in list(s.scalars(select(Job.id).where(Job.sweep_id == sweep_id, unfinished))):
            lifecycle.cancel(s, job_id, reason=f"its sweep {sweep_id} was cancelled")
    s.refresh(sweep)
    if sweep.status in ("succeeded", "failed"):
        raise Conflict(f"sweep {sweep_id!r} already {sweep.status}", code="sweep_finished")
    return sweep
