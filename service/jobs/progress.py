"""A job's `progress` when it ends (the shape: service/api/schemas.py Progress).

The worker saves progress with each heartbeat (worker/task/tracker.py makes it); the job's end
writes the final one in the same transaction as its terminal status (service/jobs/lifecycle.py)."""

from typing import Any

DONE = "done"  # the phase of a job that succeeded


def done(progress: dict[str, Any]) -> dict[str, Any]:
    """A job that succeeded: every epoch and step run, nothing left."""
    final = {**progress, "phase": DONE, "eta_s": 0.0}
    if "epochs" in final:
        final["epoch"] = final["epochs"]
    if "steps_per_epoch" in final:
        final["step"] = final["steps_per_epoch"]
    return final


def stopped(progress: dict[str, Any]) -> dict[str, Any]:
    """A job that failed, was cancelled or went back to its queue: where it stopped, no ETA."""
    return {**progress, "eta_s": None}
