"""The Celery task's side of an uploaded model's check (torch-free): the check runs in a
process of its own (worker/check_model.py); its outcome lands on the model's row."""

import json
import logging
import subprocess
import sys

from service import teachers
from service.db import session_scope

log = logging.getLogger(__name__)
TIMEOUT_S = 600


def run(model_id: str) -> str:
    """Check a validating model; returns its status ("ready", "invalid", or as it was)."""
    with session_scope() as s:
        row = teachers.get_model(s, model_id)
        if row.status != "validating":  # a repeated message: already decided
            return row.status
        path = teachers.weights_path(row)
        args = [row.arch, row.num_classes, row.in_channels, row.input_size or "", path]
    cmd = [sys.executable, "-m", "worker.check_model", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode == 0:
        outcome = json.loads(done.stdout.strip().splitlines()[-1])
    else:  # the check itself failed (the architecture cannot be built, out of memory...)
        log.error("check of model %s exited %d: %s", model_id, done.returncode, done.stderr)
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        outcome = {"status": "invalid", "problems": [f"the check failed: {why}"[:500]]}
    with session_scope() as s:
        teachers.record_check(s, model_id, outcome)
    return str(outcome["status"])
