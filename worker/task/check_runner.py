"""The Celery task's side of an uploaded model's check (torch-free): the check runs in a
process of its own (worker/job/weights_check.py), under a lease on the model's row that this thread
extends while it waits (service/ingest/model_checks.py); its outcome lands on the row."""

import json
import logging
import subprocess
import sys
import time

from service.config import Settings, get_settings
from service.db.sessions import session_scope
from service.ingest import model_checks, models
from service.store import StoreError
from worker.task.cache import Cache, CacheTooSmall

log = logging.getLogger(__name__)
TIMEOUT_S = 600


def run(model_id: str) -> str:
    """Check a validating model; returns its status ("ready", "invalid", or as it was)."""
    settings = get_settings()
    with session_scope() as s:
        row = model_checks.claim(s, model_id, settings.lease_s)
        if row is None:  # decided, or another worker checks it
            return models.get_model(s, model_id).status
        args = [row.arch, row.num_classes, row.in_channels, row.input_size or ""]
        weights = (models.weights_key(row), row.sha256, row.size)
    try:
        args.append(Cache.default().path(*weights))
    except (StoreError, CacheTooSmall) as exc:  # not the weights' fault: checked again later
        log.error("check of model %s: its weights could not be read: %s", model_id, exc)
        return "validating"  # its lease runs out and the watchdog sends it again
    cmd = [sys.executable, "-m", "worker.job.weights_check", *map(str, args)]
    returncode, stdout, stderr = _leased(model_id, cmd, settings)
    if returncode == 0:
        outcome = json.loads(stdout.strip().splitlines()[-1])
    else:  # the check itself failed (the architecture cannot be built, out of memory...)
        log.error("check of model %s exited %s: %s", model_id, returncode, stderr)
        why = (stderr.strip().splitlines() or ["no output"])[-1]
        outcome = {"status": "invalid", "problems": [f"the check failed: {why}"[:500]]}
    with session_scope() as s:
        model_checks.record(s, model_id, outcome)
    return str(outcome["status"])


def _leased(model_id: str, cmd: list[str], settings: Settings) -> tuple[int | str, str, str]:
    """Run `cmd`, extending the model's lease every heartbeat until it exits (or TIMEOUT_S)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=settings.heartbeat_s)
            return proc.returncode, stdout, stderr
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                stdout, stderr = proc.communicate()
                return f"after {TIMEOUT_S} s (killed)", stdout, stderr
        try:
            with session_scope() as s:
                model_checks.extend(s, model_id, settings.lease_s)
        except Exception:  # a DB blip: the lease has slack, try again next beat
            log.exception("could not extend the check of model %s", model_id)
