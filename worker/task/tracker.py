"""Live progress of a job as rank 0 trains it: where it is, how fast, how long to go. The
engine calls `step` every training step (a clock read and a few assignments); `snapshot`
makes the saved dict (service/api/schemas.py Progress) at each heartbeat. images_per_s is
the batch size over the mean step time of the epoch's last WINDOW steps; eta_s the steps
left at that pace plus, for each epoch end left, what the last one took (0 until one has
ended). eta_s is null outside training: setting up, measuring the teacher, a method's own
phase (IE-KD's auto-encoder), writing outputs."""

import sys
import threading
import time
from collections import deque
from typing import Any

WINDOW = 64  # steps in the rate's window
TRAIN, SETUP, EXPORT = "train", "setup", "export"


def seconds_per_step(window: deque[tuple[float, int]]) -> float | None:
    """Mean seconds a step took over (time, global step) samples; None with fewer than 2."""
    if len(window) < 2:
        return None
    (t0, n0), (t1, n1) = window[0], window[-1]
    return (t1 - t0) / (n1 - n0) if n1 > n0 else None


def eta(
    *,
    epoch: int,
    step: int,
    epochs: int,
    steps_per_epoch: int,
    step_s: float,
    epoch_end_s: float,
) -> float:
    """Seconds to the end of training, at `step` steps into 1-based `epoch`: the steps left
    at `step_s` each, and each epoch end left (this one's included) at `epoch_end_s`."""
    steps_left = (epochs - epoch) * steps_per_epoch + (steps_per_epoch - step)
    return steps_left * step_s + (epochs - epoch + 1) * epoch_end_s


def gpu_peak_bytes() -> int | None:
    """This process's peak CUDA memory, when it uses CUDA. torch is read from the modules
    already imported: the worker's task process, which has the same context, never imports
    it (nor should it initialise CUDA to ask)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


class Tracker:
    """Progress fed by the engine's callbacks; thread-safe (the heartbeat thread reads it)."""

    def __init__(self, epochs: int, batch_size: int) -> None:
        self.epochs, self.batch_size = epochs, batch_size
        self.progress: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._window: deque[tuple[float, int]] = deque(maxlen=WINDOW)
        self._step_s: float | None = None
        self._epoch_end_s = 0.0
        self._last_step: float | None = None  # when the previous epoch's last step ended

    def resume(self, stored: dict[str, Any]) -> None:
        """Go on from what an earlier attempt saved; setting up again."""
        with self._lock:
            self.progress = {**stored, "epochs": self.epochs, "phase": SETUP, "eta_s": None}

    def phase(self, name: str) -> None:
        with self._lock:
            self.progress |= {"epochs": self.epochs, "phase": name}

    def step(self, epoch: int, step: int, steps_per_epoch: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.progress.get("epoch") != epoch or self.progress.get("phase") != TRAIN:
                self._new_epoch(now)
            self._window.append((now, (epoch - 1) * steps_per_epoch + step))
            if step == steps_per_epoch:
                self._last_step = now
            self.progress |= {
                "phase": TRAIN,
                "epoch": epoch,
                "epochs": self.epochs,
                "step": step,
                "steps_per_epoch": steps_per_epoch,
            }

    def _new_epoch(self, now: float) -> None:
        self._step_s = seconds_per_step(self._window) or self._step_s
        if self._last_step is not None and self._step_s is not None:
            self._epoch_end_s = max(0.0, now - self._last_step - self._step_s)
        self._window.clear()
        self._last_step = None

    def epoch_end(self, epoch: int) -> None:
        with self._lock:
            self.progress["epoch"] = epoch
            if epoch >= self.epochs:
                self.progress |= {"phase": EXPORT}

    def snapshot(self) -> dict[str, Any]:
        """The dict to save; empty until a callback came (the task's own context)."""
        with self._lock:
            if not self.progress:
                return {}
            self._step_s = seconds_per_step(self._window) or self._step_s
            out = {**self.progress, "eta_s": self._eta()}
        if self._step_s:
            out["images_per_s"] = self.batch_size / self._step_s
        if (peak := gpu_peak_bytes()) is not None:
            out["gpu_mem_peak_bytes"] = peak
        return out

    def _eta(self) -> float | None:
        p = self.progress
        if p.get("phase") != TRAIN or self._step_s is None:
            return None
        return eta(
            epoch=p["epoch"],
            step=p["step"],
            epochs=self.epochs,
            steps_per_epoch=p["steps_per_epoch"],
            step_s=self._step_s,
            epoch_end_s=self._epoch_end_s,
        )
