"""A job's training process (worker/job/rank.py): its device check, errors and peak memory."""

import errno
import inspect
import subprocess
import sys

import pytest
import torch

from service.errors import JobError
from worker.engine.data import Resident, Streamed
from worker.job import rank


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_more_gpus_than_the_worker_sees_fails_retryably(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(JobError) as failed:
        rank.job_device(device, 2)
    error = failed.value
    assert (error.code, error.retryable) == ("device_unavailable", True)
    assert "resources.gpus is 2" in error.message and "sees 1 CUDA" in error.message
    assert rank.job_device(device, 1) == torch.device("cuda", 0)


def test_a_cuda_job_on_a_worker_without_cuda_fails_retryably(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(JobError) as failed:
        rank.job_device("cuda", 1)
    assert (failed.value.code, failed.value.retryable) == ("device_unavailable", True)
    assert rank.job_device("auto", 1) == torch.device("cpu")


def test_a_full_disk_fails_the_job_as_disk_full():
    full = OSError(errno.ENOSPC, "No space left on device")
    error = rank.job_error(full)
    assert (error.code, error.retryable) == ("disk_full", True)
    assert rank.job_error(OSError(errno.EIO, "I/O error")).code == "training_error"


# A process holding 1 GiB starts a small one, which reports its own peak and getrusage's; the
# small one runs peak_rss's own source, without worker.job.rank's imports (seconds, and a GiB).
LARGE_PARENT = """
import subprocess, sys
ballast = b"x" * (1 << 30)
subprocess.run([sys.executable, "-c", sys.argv[1]], check=True)
"""
SMALL_CHILD = """
import resource
from pathlib import Path
{source}
print(peak_rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_the_peak_rss_is_the_processs_own_not_its_parents():
    child = SMALL_CHILD.format(source=inspect.getsource(rank.peak_rss))
    out = subprocess.run(
        [sys.executable, "-c", LARGE_PARENT, child], check=True, capture_output=True, text=True
    )
    own, inherited = (int(v) for v in out.stdout.split())
    assert inherited > 1 << 30  # getrusage keeps the parent's peak across exec
    assert 0 < own < 100 << 20  # the small process's own


def test_only_streamed_data_has_decoding_processes():
    labels, cpu = torch.arange(4), torch.device("cpu")
    assert Resident(labels, [0.0], [1.0], 8, cpu, pixels=torch.zeros(4, 1, 8, 8)).decoders == 0
    assert Streamed(labels, [0.0], [1.0], 8, cpu, workers=3).decoders == 3
