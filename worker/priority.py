"""A job's training processes and a model's check are batch work: they run at a lower CPU
priority than the API, the worker's own process and its lease heartbeats, which share the
machine's cores in the embedded set-up and on small hosts. On a host of their own nothing
else asks for the cores and they run at full speed."""

import contextlib
import os
import subprocess

from service.config import get_settings


def lower(proc: subprocess.Popen) -> None:
    """Make a process just started TRAIN_NICE steps nicer than this one, as `nice -n` does
    (never less nice: that would need privileges); its children inherit it (the DataLoader
    workers of a training process). A process gone already is left alone."""
    steps = get_settings().train_nice
    if steps:
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, 0) + steps)
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)
