"""Engine callbacks -> the job's row: progress, heartbeat, cancel flag, metrics, checkpoints.

A background thread extends the lease every few seconds whatever the engine is doing, and
reads the cancel flag; the engine only checks a boolean each step."""

import logging
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from service import jobs, store
from service.config import Settings
from service.db import session_scope

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The watchdog gave this job to another attempt: stop and write nothing."""


class JobReporter:
    def __init__(self, job_id: str, owner: str, settings: Settings, max_runtime_s: float):
        self.job_id, self.owner, self.settings = job_id, owner, settings
        self.deadline = time.monotonic() + max_runtime_s
        self.progress: dict[str, Any] = {}
        self.status: str | None = "running"
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat_forever, daemon=True, name=f"heartbeat-{job_id}"
        )

    def __enter__(self) -> "JobReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType]) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.beat()
            except Exception:  # a DB blip: the lease has slack, try again next beat
                log.exception("heartbeat for job %s failed", self.job_id)

    def beat(self) -> None:
        with session_scope() as s:
            self.status = jobs.heartbeat(
                s, self.job_id, self.owner, self.settings.lease_s, dict(self.progress)
            )

    # engine callbacks
    def on_step(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        self.progress.update(epoch=epoch, step=step, steps_per_epoch=steps_per_epoch)

    def should_stop(self) -> bool:
        if self.status is None:
            raise LeaseLost(self.job_id)
        return self.status == "cancelling" or time.monotonic() > self.deadline

    def stop_error(self) -> dict[str, Any] | None:
        """Why the loop stopped: None for a cancel, an error past max_runtime_s."""
        if self.status == "cancelling":
            return None
        return {
            "code": "max_runtime_exceeded",
            "retryable": False,
            "message": "job ran past resources.max_runtime_s",
        }

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.progress.update(epoch=epoch)
        with session_scope() as s:
            if not jobs.record_epoch(s, self.job_id, self.owner, {"epoch": epoch, **metrics}):
                self.status = None  # not ours any more

    def on_checkpoint(self, path: Path, epoch: int, kind: str) -> None:
        with session_scope() as s:
            art = store.register(s, self.job_id, path, kind="checkpoint", epoch=epoch)
            jobs.add_event(
                s,
                self.job_id,
                "checkpoint",
                f"{kind} checkpoint at epoch {epoch}",
                name=art.name,
                kind=kind,
                epoch=epoch,
                sha256=art.sha256,
            )

    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        if "phase" in data:
            self.progress["phase"] = data["phase"]
        self.event(type_, message, **data)

    def event(self, type_: str, message: str, **data: Any) -> None:
        with session_scope() as s:
            jobs.add_event(s, self.job_id, type_, message, **data)
