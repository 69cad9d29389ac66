"""The sweep driver: a pass every `watchdog_s` in each API process (service/app.py), beside
the watchdog. A pass takes each unfinished sweep it can claim (a conditional UPDATE: one
driver at a time), settles the runs whose jobs ended (telling Optuna a search trial's
value, or that it was pruned or failed), asks for trials while fewer than `parallel` run
and the budget lasts, then plans the final runs (the top configurations with each confirm
seed, the scratch baseline), starts them as slots free and finishes the sweep. Each write
renews the claim and re-reads the sweep's status in one UPDATE, so a cancel committed
meanwhile ends the pass with nothing started. Nothing lives in memory between passes: a
restarted API, or another replica, goes on from the rows."""

import asyncio
import json
import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from service import dispatch
from service.config import Settings, get_settings
from service.db import tenancy
from service.db.sessions import session_scope
from service.db.tables import (
    DONE,
    FINAL,
    SEARCH,
    SWEEP_ACTIVE,
    TERMINAL,
    Job,
    Sweep,
    SweepTrial,
    utcnow,
)
from service.errors import InvalidSpec
from service.jobs import admission, quotas
from service.spec.fields import field_path
from service.spec.job import JobSpec
from service.spec.sweep import SweepSpec
from service.sweeps import studies
from service.sweeps.sweeps import run_body

log = logging.getLogger(__name__)
# how a search trial's job ended -> what Optuna is told; any other end (or no val_acc): FAIL
ENDINGS = {"succeeded": TrialState.COMPLETE, "pruned": TrialState.PRUNED}


class Lost(Exception):
    """The sweep was cancelled, or another driver holds it now: write nothing more."""


def run_pass() -> int:
    """Drive each unfinished sweep this process can claim; returns how many it drove."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        unfinished = select(Sweep.id, Sweep.project_id).where(Sweep.status.in_(SWEEP_ACTIVE))
        found = list(s.execute(unfinished.order_by(Sweep.created_at)))
    driven = 0
    for sweep_id, project in found:
        token = tenancy.CURRENT.set(project)  # its jobs are its project's, in its quotas
        try:
            driven += drive(sweep_id, owner)
        except Exception:  # one sweep's fault must not stop the others; the next pass retries
            log.exception("sweep %s: the driver's pass failed", sweep_id)
        finally:
            tenancy.CURRENT.reset(token)
    return driven


def drive(sweep_id: str, owner: str) -> bool:
    """One pass over the sweep if this owner can claim it; False when another holds it."""
    if not claim(sweep_id, owner):
        return False
    try:
        Driver(sweep_id, owner).drive()
    except Lost:
        log.info("sweep %s: cancelled or claimed by another driver mid-pass", sweep_id)
    finally:
        release(sweep_id, owner)
    return True


async def run_loop(settings: Settings) -> None:
    """A pass every `watchdog_s` seconds, until cancelled."""
    while True:
        try:
            await asyncio.to_thread(run_pass)
        except Exception:  # a DB blip must not kill the loop; the next pass retries
            log.exception("sweep driver pass failed")
        await asyncio.sleep(settings.watchdog_s)


def claim(sweep_id: str, owner: str) -> bool:
    now = utcnow()
    free = or_(Sweep.driver_until.is_(None), Sweep.driver_until < now)
    with session_scope() as s:
        return _update(s, sweep_id, [Sweep.status.in_(SWEEP_ACTIVE), free], driver=owner)


def release(sweep_id: str, owner: str) -> None:
    with session_scope() as s:
        stmt = update(Sweep).where(Sweep.id == sweep_id, Sweep.driver == owner)
        s.execute(stmt.values(driver_until=None).execution_options(synchronize_session=False))


def _update(s: Session, sweep_id: str, where: list[Any], **values: Any) -> bool:
    """One conditional UPDATE of the sweep that renews the claim for a lease (a job's:
    an API killed mid-pass holds the sweep no longer); True when it matched."""
    now, lease = utcnow(), timedelta(seconds=get_settings().lease_s)
    stmt = update(Sweep).where(Sweep.id == sweep_id, *where)
    stmt = stmt.values(driver_until=now + lease, updated_at=now, **values)
    result = s.execute(stmt.execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


class Driver:
    """One pass over one claimed sweep."""

    def __init__(self, sweep_id: str, owner: str) -> None:
        with session_scope() as s:
            self.sweep = s.get_one(Sweep, sweep_id)
        self.id, self.owner = sweep_id, owner
        self.spec = SweepSpec.model_validate(self.sweep.spec)

    def drive(self) -> None:
        self.settle()
        if self.sweep.phase == SEARCH and self.search():
            self.plan_final()
        if self.sweep.phase == FINAL:
            self.final()

    def guard(self, s: Session, **values: Any) -> None:
        """In a write's transaction: the claim renewed (and `values` set), or Lost."""
        mine = [Sweep.driver == self.owner, Sweep.status.in_(SWEEP_ACTIVE)]
        if not _update(s, self.id, mine, **values):
            raise Lost(self.id)

    # -- settling what ended

    def settle(self) -> None:
        """Each run whose job ended: told to Optuna (search trials), then marked done."""
        ended = (
            select(SweepTrial.id, SweepTrial.kind, SweepTrial.number, Job.status, Job.metrics)
            .join(Job, Job.id == SweepTrial.job_id)
            .where(SweepTrial.sweep_id == self.id, SweepTrial.state == "running")
            .where(Job.status.in_(TERMINAL))
        )
        with session_scope() as s:
            found = list(s.execute(ended))
        study = studies.open_study(self.id, self.spec) if found else None
        for row_id, kind, number, status, metrics in found:
            value = metrics.get("val_acc") if status in ENDINGS else None
            if kind == "search" and study is not None:
                state = ENDINGS[status] if value is not None else TrialState.FAIL
                studies.tell(study, number, state, value)
            with session_scope() as s:
                self.guard(s)
                done = update(SweepTrial).where(SweepTrial.id == row_id)
                s.execute(done.values(state="done", value=value))

    # -- the search

    def search(self) -> bool:
        """Ask trials while slots and budget last; True once every trial has ended."""
        if self.sweep.status == "queued":
            studies.create(self.id, self.spec)
        self.fail_orphans()
        while True:
            asked, running = self.counts()
            if asked >= self.spec.trials:
                return running == 0
            if running >= self.spec.parallel or not self.ask(asked):
                return False

    def counts(self) -> tuple[int, int]:
        """(search trials asked, runs whose job has not been settled)."""
        mine = SweepTrial.sweep_id == self.id
        asked = func.count().filter(SweepTrial.kind == "search")
        running = func.count().filter(SweepTrial.state == "running")
        with session_scope() as s:
            row = s.execute(select(asked, running).where(mine)).one()
        return int(row[0]), int(row[1])

    def fail_orphans(self) -> None:
        with session_scope() as s:
            known = select(SweepTrial.number).where(
                SweepTrial.sweep_id == self.id, SweepTrial.kind == "search"
            )
            numbers = set(s.scalars(known))
        study = studies.open_study(self.id, self.spec)
        for number in studies.orphans(study, numbers):
            studies.tell(study, number, TrialState.FAIL, None)

    def ask(self, asked: int) -> bool:
        """One more search trial and its job; False when the project has no room (a slot
        frees when one of its jobs ends: the next pass tries again)."""
        if not self.room():
            return False
        study = studies.open_study(self.id, self.spec, asked)
        number, trial_id, params = studies.ask(study, self.spec)
        row = SweepTrial(
            sweep_id=self.id, kind="search", number=number, optuna_trial=trial_id, params=params
        )
        try:
            with session_scope() as s:
                self.guard(s)
                self.start(s, row, seed=None)
                if self.sweep.status == "queued":
                    self.guard(s, status="running")
                    self.sweep.status = "running"
        except (Lost, quotas.QuotaExceeded) as exc:
            studies.tell(study, number, TrialState.FAIL, None)  # nothing ran: not counted
            if isinstance(exc, Lost):
                raise
            return False
        if row.error:
            studies.tell(study, number, TrialState.FAIL, None)
        return True

    def room(self) -> bool:
        with session_scope() as s:
            try:
                quotas.check_jobs(s)
            except quotas.QuotaExceeded:
                return False
        return True

    def start(self, s: Session, row: SweepTrial, seed: int | None) -> None:
        """Submit the run's job in `s` (admission as for any job: its quota, its checks); a
        spec admission refuses leaves the run done, with why."""
        body = run_body(self.sweep, row.kind, row.number, row.params, seed)
        try:
            spec = JobSpec.model_validate(body)
            job, _ = admission.submit(
                s, spec, idempotency_key=None, request_hash="", sweep_id=self.id
            )
        except (ValidationError, InvalidSpec) as exc:
            row.state, row.error = "done", _why(exc)
            row.seed = self.spec.base.train.seed if seed is None else seed
        else:
            row.job_id, row.state, row.seed = job.id, "running", job.spec["train"]["seed"]
            dispatch.send_after_commit(s, job.id, job.queue)
        s.add(row)

    # -- the final runs

    def plan_final(self) -> None:
        """The top configurations with each confirm seed (a search trial with that seed
        counts as one) and the scratch baseline, planned; or the sweep's end."""
        with session_scope() as s:
            self.guard(s)
            finished = (
                select(SweepTrial)
                .join(Job, Job.id == SweepTrial.job_id)
                .where(SweepTrial.sweep_id == self.id, SweepTrial.kind == "search")
                .where(Job.status == "succeeded", SweepTrial.value.is_not(None))
            )
            best = sorted(s.scalars(finished), key=lambda r: (-(r.value or 0.0), r.number))
            if not best:
                why = f"none of its {self.spec.trials} trials succeeded"
                error = {"code": "no_trial_succeeded", "message": why}
                self.guard(s, status="failed", phase=DONE, error=error, finished_at=utcnow())
                self.sweep.phase = DONE
                return
            s.add_all(self.confirm_runs(best) + self.baseline_runs())
            self.guard(s, phase=FINAL)
        self.sweep.phase = FINAL

    def confirm_runs(self, best: list[SweepTrial]) -> list[SweepTrial]:
        confirm = self.spec.confirm
        if confirm is None:
            return []
        top: dict[str, SweepTrial] = {}
        for row in best:
            top.setdefault(json.dumps(row.params, sort_keys=True), row)
        runs: list[SweepTrial] = []
        for row in list(top.values())[: confirm.top]:
            for seed in confirm.seeds:
                reused = seed == row.seed  # that trial was this run
                runs.append(
                    SweepTrial(
                        sweep_id=self.id,
                        kind="confirm",
                        number=len(runs),
                        params=row.params,
                        seed=seed,
                        job_id=row.job_id if reused else None,
                        state="done" if reused else "planned",
                        value=row.value if reused else None,
                    )
                )
        return runs

    def baseline_runs(self) -> list[SweepTrial]:
        if not self.spec.baseline:
            return []
        confirm = self.spec.confirm
        seeds = confirm.seeds if confirm else [self.spec.base.train.seed]
        return [
            SweepTrial(
                sweep_id=self.id, kind="baseline", number=i, params={}, seed=seed, state="planned"
            )
            for i, seed in enumerate(seeds)
        ]

    def final(self) -> None:
        """Start planned runs while slots last; the sweep succeeds once all have ended."""
        while True:
            with session_scope() as s:
                planned = s.scalars(
                    select(SweepTrial)
                    .where(SweepTrial.sweep_id == self.id, SweepTrial.state == "planned")
                    .order_by(SweepTrial.kind.desc(), SweepTrial.number)  # confirm first
                    .limit(1)
                ).first()
            _, running = self.counts()
            if planned is None:
                if running == 0:
                    self.finish()
                return
            if running >= self.spec.parallel or not self.room():
                return
            with session_scope() as s:
                self.guard(s)
                row = s.get_one(SweepTrial, planned.id)
                self.start(s, row, seed=row.seed)

    def finish(self) -> None:
        with session_scope() as s:
            self.guard(s, status="succeeded", phase=DONE, finished_at=utcnow())


def _why(exc: ValidationError | InvalidSpec) -> str:
    if isinstance(exc, InvalidSpec):
        return "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    return "; ".join(f"{field_path(tuple(e['loc']), e['type'])}: {e['msg']}" for e in exc.errors())
