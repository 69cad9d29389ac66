"""What GET /v1/sweeps/{id} shows of a sweep, read from its runs and their jobs: the search
trials counted by their jobs' status, the leaderboard (each configuration's mean and std of
val_acc over its seeds, best first), the scratch baseline, and the epochs the search trained
against those it would have trained unpruned."""

import json
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import SEARCH, Job, Sweep, SweepTrial


@dataclass(frozen=True)
class Run:
    """A run of the sweep with its job (None: admission refused its spec)."""

    row: SweepTrial
    job: Job | None

    @property
    def status(self) -> str:
        if self.job is not None:
            return self.job.status
        return "planned" if self.row.state == "planned" else "failed"

    @property
    def epochs(self) -> float:
        """Epochs its job trained: all of them once it succeeded, else up to where its
        progress stopped (a part epoch counted by its steps)."""
        if self.job is None:
            return 0.0
        if self.job.status == "succeeded":
            return float(self.job.spec["train"]["epochs"])
        p = self.job.progress
        steps = p.get("steps_per_epoch") or 0
        part = (p.get("step") or 0) / steps if steps else 0.0
        return max(0.0, p["epoch"] - 1 + part) if p.get("epoch") else 0.0


def runs(s: Session, sweep_id: str) -> list[Run]:
    """The sweep's runs, search trials first, each kind in its order."""
    q = (
        select(SweepTrial, Job)
        .outerjoin(Job, Job.id == SweepTrial.job_id)
        .where(SweepTrial.sweep_id == sweep_id)
    )
    order = {"search": 0, "confirm": 1, "baseline": 2}
    found = [Run(row, job) for row, job in s.execute(q)]
    return sorted(found, key=lambda r: (order.get(r.row.kind, 3), r.row.number))


def view(s: Session, sweep: Sweep) -> dict[str, Any]:
    """The fields of the sweep's answer that are read from its runs."""
    found = runs(s, sweep.id)
    search = [r for r in found if r.row.kind == "search"]
    confirmed = [r for r in found if r.row.kind == "confirm"]
    baseline = [r for r in found if r.row.kind == "baseline"]
    if sweep.phase != SEARCH and confirmed:
        board = leaderboard(confirmed)
    else:  # the search's configurations that finished, each once so far
        board = [row for row in leaderboard(search) if row["mean"] is not None]
    return {
        "counts": dict(Counter(r.status for r in search)),
        "leaderboard": board,
        "baseline": summary(baseline) if baseline else None,
        "compute": compute(search),
        "trials": [trial(r) for r in found],
    }


def leaderboard(chosen: list[Run]) -> list[dict[str, Any]]:
    """One row per configuration (its params), best mean first; a configuration with no
    finished run last."""
    groups: dict[str, list[Run]] = {}
    for run in chosen:
        groups.setdefault(json.dumps(run.row.params, sort_keys=True), []).append(run)
    rows = [{"params": g[0].row.params, **summary(g)} for g in groups.values()]
    return sorted(rows, key=lambda r: (r["mean"] is None, -(r["mean"] or 0.0)))


def summary(group: list[Run]) -> dict[str, Any]:
    """Mean and sample std of the val_acc of the group's succeeded runs, their seeds and
    values, and every run's job."""
    done = [r for r in group if r.status == "succeeded" and r.row.value is not None]
    values = [float(r.row.value or 0.0) for r in done]
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "seeds": [r.row.seed for r in done],
        "values": values,
        "jobs": [r.row.job_id for r in group if r.row.job_id],
    }


def compute(search: list[Run]) -> dict[str, float]:
    """Epochs the search trials trained, and what they would have trained unpruned."""
    full = sum(r.job.spec["train"]["epochs"] for r in search if r.job is not None)
    return {"epochs": round(sum(r.epochs for r in search), 2), "epochs_unpruned": float(full)}


def trial(run: Run) -> dict[str, Any]:
    row = run.row
    return {
        "kind": row.kind,
        "number": row.number,
        "job_id": row.job_id,
        "status": run.status,
        "params": row.params,
        "seed": row.seed,
        "value": row.value,
        "epochs": round(run.epochs, 2),
        "error": row.error,
    }
