"""The Celery task's side of a job (worker/task/runner.py)."""

import subprocess
import sys


def test_the_task_never_imports_torch() -> None:
    """A stale or duplicate delivery costs a conditional UPDATE, not a torch import; torch
    is imported by the job's own processes (worker/job/rank.py)."""
    modules = "worker.task.tasks, worker.task.runner"
    code = f"import sys, {modules}; print(sorted(sys.modules.keys() & {{'torch'}}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
