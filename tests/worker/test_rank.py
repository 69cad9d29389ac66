"""A job's training process (worker/rank.py): its device check and thread count."""

import errno

import pytest
import torch

from service.config import get_settings
from service.errors import JobError
from worker import rank


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


def test_threads_come_from_the_setting_or_the_cores_shared_by_the_processes(monkeypatch):
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: None)  # once per process
    before = torch.get_num_threads()
    monkeypatch.setattr(rank.os, "sched_getaffinity", lambda pid: set(range(8)))
    try:
        rank.set_threads(world=2)
        assert torch.get_num_threads() == 4
        monkeypatch.setenv("DISTILLERY_TRAIN_THREADS", "1")
        get_settings.cache_clear()
        rank.set_threads(world=2)
        assert torch.get_num_threads() == 1
    finally:
        get_settings.cache_clear()
        torch.set_num_threads(before)


def test_a_full_disk_fails_the_job_as_disk_full():
    full = OSError(errno.ENOSPC, "No space left on device")
    error = rank.job_error(full)
    assert (error.code, error.retryable) == ("disk_full", True)
    assert rank.job_error(OSError(errno.EIO, "I/O error")).code == "training_error"
