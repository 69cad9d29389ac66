"""Rank 0's side of a job on several processes, without a service: the GPU count check, and
how it waits for, watches and stops the other ranks (stand-in child processes here)."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service.errors import JobError
from worker import ranks
from worker.engine import loop
from worker.ranks import Ranks


class Reporter:
    def __init__(self, stop: bool = False) -> None:
        self.stop = stop

    def should_stop(self) -> bool:
        return self.stop


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_more_gpus_than_the_worker_sees_fails_retryably(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(JobError) as failed:
        ranks.job_device(device, 2)
    error = failed.value
    assert (error.code, error.retryable) == ("device_unavailable", True)
    assert "resources.gpus is 2" in error.message and "sees 1 CUDA" in error.message
    assert ranks.job_device(device, 1) == torch.device("cuda", 0)


def test_a_cuda_job_on_a_worker_without_cuda_fails_retryably(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(JobError) as failed:
        ranks.job_device("cuda", 1)
    assert (failed.value.code, failed.value.retryable) == ("device_unavailable", True)
    assert ranks.job_device("auto", 1) == torch.device("cpu")


def rank(tmp_path: Path, code: str) -> Ranks:
    """Ranks with one rank 1 running `code`, its output in rank1.log like the real ones."""
    rendezvous = tmp_path / "rendezvous"
    with ranks.log_path(rendezvous, 1).open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=out)
    return Ranks(rendezvous, {1: proc})


def ready_then_sleep(tmp_path: Path) -> str:
    ready = ranks.ready_path(tmp_path / "rendezvous", 1)
    return f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"


def test_rank_that_dies_while_starting_fails_rank_0_with_its_log(tmp_path):
    children = rank(tmp_path, "import sys; print('no such dataset'); sys.exit(3)")
    with pytest.raises(ranks.RankFailed, match="rank 1 exited with code 3") as failed:
        children.wait_ready(Reporter())  # type: ignore[arg-type]
    assert "no such dataset" in str(failed.value)
    children.stop(grace_s=0)


def test_ready_ranks_are_waited_for_then_terminated(tmp_path):
    children = rank(tmp_path, ready_then_sleep(tmp_path))
    children.wait_ready(Reporter())  # type: ignore[arg-type]
    assert children.procs[1].poll() is None
    children.stop(grace_s=0)
    assert children.procs[1].returncode == -signal.SIGTERM  # not SIGKILL: it stopped when asked


def test_cancel_while_ranks_start_stops_rank_0(tmp_path):
    children = rank(tmp_path, "import time; time.sleep(60)")
    with pytest.raises(loop.Stopped):
        children.wait_ready(Reporter(stop=True))  # type: ignore[arg-type]
    children.stop(grace_s=0)
    assert children.procs[1].returncode == -signal.SIGTERM


def test_a_rank_that_fails_mid_training_stops_rank_0_at_its_next_step(tmp_path):
    children = rank(tmp_path, "import sys; sys.exit('CUDA out of memory')")
    watched = ranks.Watched(Reporter(), children)  # type: ignore[arg-type]
    children.procs[1].wait()
    with pytest.raises(ranks.RankFailed, match="(?s)code 1.*CUDA out of memory"):
        watched.should_stop()


def test_rank_0_failure_carries_the_log_of_a_rank_that_failed(tmp_path):
    failed = rank(tmp_path, "import sys; sys.exit('peer died')")
    exc = RuntimeError("Connection closed by peer")
    failed.note_failures(exc, grace_s=10)
    assert "peer died" in "\n".join(exc.__notes__)

    (tmp_path / "other").mkdir()
    running = rank(tmp_path / "other", "import time; time.sleep(60)")  # still training
    exc = RuntimeError("rank 0's own failure")
    running.note_failures(exc, grace_s=0.2)
    assert not hasattr(exc, "__notes__")
    running.stop(grace_s=0)
