"""A search trial's epochs, as its training process records them (worker/task/context.py, in
the epoch's own transaction): each epoch's val_acc goes to its Optuna trial as an
intermediate value, and the sweep's pruner decides there and then whether the trial goes
on. A pruned trial's job is told to stop (lifecycle.prune); it stops at its next step and
ends "pruned". The decision is made as the epoch is recorded, so it does not depend on how
fast anything polls."""

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import SWEEP_ACTIVE, Sweep, SweepTrial
from service.jobs import lifecycle
from service.spec.sweep import SweepSpec
from service.sweeps import studies

log = logging.getLogger(__name__)


def on_epoch(s: Session, job_id: str, epoch: int, metrics: dict[str, Any], last: bool) -> bool:
    """Report a trial's epoch; True when its pruner stopped it (the job is now stopping).
    A job that is no search trial, or a sweep that prunes nothing, costs one query."""
    found = s.execute(
        select(SweepTrial.optuna_trial, Sweep)
        .join(Sweep, Sweep.id == SweepTrial.sweep_id)
        .where(SweepTrial.job_id == job_id, SweepTrial.kind == "search")
    ).first()
    value = metrics.get("val_acc")
    if found is None or value is None:
        return False
    trial_id, sweep = found
    if trial_id is None or sweep.status not in SWEEP_ACTIVE:
        return False
    spec = SweepSpec.model_validate(sweep.spec)
    if spec.pruner.name == "none":
        return False
    try:
        pruned = _report(sweep.id, spec, trial_id, epoch, float(value)) and not last
    except Exception:  # Optuna's storage failing costs this prune, never the epoch's record
        log.exception("sweep %s: reporting epoch %d of job %s failed", sweep.id, epoch, job_id)
        return False
    if not pruned:
        return False
    rule = spec.pruner.name
    why = f"val_acc {value:.4f} at epoch {epoch} is not among the best at this rung ({rule})"
    return lifecycle.prune(s, job_id, why)


def _report(sweep_id: str, spec: SweepSpec, trial_id: int, epoch: int, value: float) -> bool:
    """The value at this epoch recorded (again, for an epoch a resumed attempt retrained);
    whether the pruner would stop the trial here."""
    storage = studies.current()
    storage.set_trial_intermediate_value(trial_id, epoch, value)
    study = studies.open_study(sweep_id, spec)
    return bool(study.pruner.prune(study, storage.get_trial(trial_id)))
