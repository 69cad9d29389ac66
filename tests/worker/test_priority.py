"""Training and check processes run at the batch priority (worker/priority.py): every rank a
job starts and a model's check process, at DISTILLERY_TRAIN_NICE, their children too; 0
leaves them at the worker's own. Real processes; each reports or is asked its niceness."""

import os
import sys
from pathlib import Path

import pytest

from service.config import get_settings
from worker import checks
from worker.ranks import Ranks

# a child process that prints its niceness and that of a child of its own
REPORTS_NICENESS = (
    "import os, subprocess, sys; "
    "inherited = subprocess.run([sys.executable, '-c', 'import os; print(os.nice(0))'], "
    "capture_output=True, text=True).stdout.strip(); "
    "print(os.nice(0), inherited)"
)


@pytest.fixture
def nice(monkeypatch: pytest.MonkeyPatch):
    def set_to(value: int) -> None:
        monkeypatch.setenv("DISTILLERY_TRAIN_NICE", str(value))
        get_settings.cache_clear()

    yield set_to
    get_settings.cache_clear()


@pytest.mark.parametrize("value", [10, 0])
def test_a_check_process_and_its_children_run_at_the_setting(nice, value):
    nice(value)
    cmd = [sys.executable, "-c", f"import time; time.sleep(0.3); {REPORTS_NICENESS}"]
    code, stdout, _ = checks._leased("mdl_x", cmd, get_settings())
    own = os.nice(0)
    assert code == 0 and stdout.split() == [str(own + value)] * 2


def test_every_rank_of_a_job_runs_at_the_setting(nice, tmp_path: Path, monkeypatch):
    nice(7)
    stand_in = tmp_path / "python"  # every rank's command starts with sys.executable
    stand_in.write_text("#!/bin/sh\nexec sleep 30\n")
    stand_in.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stand_in))
    ranks = Ranks(tmp_path / "attempt")
    ranks.spawn({"job_id": "job_x"}, world=2)
    try:
        got = [os.getpriority(os.PRIO_PROCESS, p.pid) for p in ranks.procs.values()]
    finally:
        ranks.stop(grace_s=0)
    assert got == [os.nice(0) + 7] * 2


def test_the_setting_is_a_niceness(nice):
    nice(20)
    with pytest.raises(ValueError, match="train_nice"):
        get_settings()
